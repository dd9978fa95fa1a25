//! `ccproxy init [--force]`: install the shipped default `ccproxy.yaml` into the config directory.

use crate::config::ConfigLocation;
use std::process::ExitCode;

/// The shipped default configuration (`conf/ccproxy.yaml`).
pub const TEMPLATE: &str = include_str!("../../conf/ccproxy.yaml");

pub fn run(location: &ConfigLocation, force: bool) -> ExitCode {
    // The local CA for TLS interception, with the config (`ccproxy ca` says how to trust it).
    match crate::local_ca::LocalCa::load_or_create(&location.dir) {
        Ok(ca) => println!("  Local CA: {}", ca.cert_path().display()),
        Err(e) => eprintln!("ccproxy: {e}"),
    }
    let file = location.dir.join(crate::config::paths::FILE_NAME);
    if file.exists() && !force {
        println!("  Skipping ccproxy.yaml (already exists, use --force to overwrite)");
        return ExitCode::SUCCESS;
    }
    match crate::config::paths::write_atomically(&file, TEMPLATE.as_bytes(), 0o644) {
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
