//! `ccproxy init [--force]`: install the shipped default `ccproxy.yaml` into the config directory.

use crate::config::ConfigLocation;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// The shipped default configuration (`conf/ccproxy.yaml`).
pub const TEMPLATE: &str = include_str!("../../conf/ccproxy.yaml");

pub fn run(location: &ConfigLocation, force: bool) -> ExitCode {
    let file = location.dir.join(crate::config::paths::FILE_NAME);
    if file.exists() && !force {
        println!("  Skipping ccproxy.yaml (already exists, use --force to overwrite)");
        return ExitCode::SUCCESS;
    }
    match write_atomically(&file, TEMPLATE.as_bytes()) {
        Ok(()) => {
            println!("  Installed ccproxy.yaml");
            println!("  -> {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ccproxy: cannot write {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Write via a temp file in the same directory and rename, so the target is never half-written.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
