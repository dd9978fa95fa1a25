//! Where the configuration lives.
//!
//! Precedence (spec §2, with the §1 latent bug fixed on purpose: an explicit `--config` always
//! wins over `$CCPROXY_CONFIG_DIR`): `--config DIR` > `$CCPROXY_CONFIG_DIR` >
//! `$XDG_CONFIG_HOME/ccproxy` > `~/.config/ccproxy`. `--config` may also name the YAML file itself.
//! Files ccproxy writes into the config directory (the config by `init`, the admin token) go
//! through [`write_atomically`].

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the config file inside the config directory.
pub const FILE_NAME: &str = "ccproxy.yaml";

/// The resolved config directory and file.
#[derive(Debug, Clone)]
pub struct ConfigLocation {
    pub dir: PathBuf,
    pub file: PathBuf,
}

/// Resolve the config location from an optional `--config` argument and the environment.
pub fn locate(cli: Option<&Path>) -> ConfigLocation {
    locate_with(cli, |k| std::env::var_os(k).filter(|v| !v.is_empty()))
}

/// [`locate`] with an injectable environment, for tests.
pub fn locate_with(
    cli: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> ConfigLocation {
    if let Some(p) = cli {
        let is_yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if p.is_file() || (is_yaml && !p.is_dir()) {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            return ConfigLocation {
                dir,
                file: p.to_path_buf(),
            };
        }
        return from_dir(p.to_path_buf());
    }
    if let Some(d) = env("CCPROXY_CONFIG_DIR") {
        return from_dir(PathBuf::from(d));
    }
    if let Some(x) = env("XDG_CONFIG_HOME") {
        return from_dir(PathBuf::from(x).join("ccproxy"));
    }
    let home = env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    from_dir(home.join(".config").join("ccproxy"))
}

fn from_dir(dir: PathBuf) -> ConfigLocation {
    let file = dir.join(FILE_NAME);
    ConfigLocation { dir, file }
}

/// Expand a leading `~/` to `$HOME`.
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    PathBuf::from(p)
}

/// Resolve `p` (with `~` expanded) relative to `base` when it is not absolute.
pub fn relative_to(base: &Path, p: &str) -> PathBuf {
    let expanded = expand_home(p);
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// Write `data` to `path` with permission `mode`: a temp file in the same directory, synced,
/// renamed over the target, and the directory synced; the target is never half-written.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomically_with(path, data, mode, |_| Ok(()))
}

/// [`write_atomically`] with a step between the synced temp file and the rename (tests use it
/// to stop there, as a crash would).
fn write_atomically_with(
    path: &Path,
    data: &[u8],
    mode: u32,
    before_rename: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // A temp file left by an earlier crash keeps its old mode; set it either way.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        before_rename(&tmp)?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_file_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(&path, br#"{"token":"old"}"#).unwrap();
        let crash = write_atomically_with(&path, br#"{"token":"new"}"#, 0o600, |tmp| {
            // The new content is complete and synced in the temp file; stop here.
            assert_eq!(std::fs::read(tmp).unwrap(), br#"{"token":"new"}"#);
            Err(std::io::Error::other("simulated crash"))
        });
        assert!(crash.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"token":"old"}"#);
        // A temp file a real crash leaves behind (wrong mode, stale bytes) does not get in
        // the way of the next write.
        let stale = dir
            .path()
            .join(format!(".creds.json.{}.tmp", std::process::id()));
        std::fs::write(&stale, b"garbage garbage garbage").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, br#"{"token":"new"}"#, 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"token":"new"}"#);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!stale.exists());
    }
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn cli_flag_beats_env_fixing_spec_latent_bug() {
        let loc = locate_with(
            Some(Path::new("/tmp/explicit")),
            env(&[("CCPROXY_CONFIG_DIR", "/tmp/env")]),
        );
        assert_eq!(loc.dir, PathBuf::from("/tmp/explicit"));
        assert_eq!(loc.file, PathBuf::from("/tmp/explicit/ccproxy.yaml"));
    }

    #[test]
    fn env_then_xdg_then_home() {
        let e = [
            ("CCPROXY_CONFIG_DIR", "/a"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(locate_with(None, env(&e)).dir, PathBuf::from("/a"));
        assert_eq!(
            locate_with(None, env(&e[1..])).dir,
            PathBuf::from("/x/ccproxy")
        );
        assert_eq!(
            locate_with(None, env(&e[2..])).dir,
            PathBuf::from("/h/.config/ccproxy")
        );
    }

    #[test]
    fn cli_may_name_the_yaml_file() {
        let loc = locate_with(Some(Path::new("/nowhere/custom.yaml")), env(&[]));
        assert_eq!(loc.dir, PathBuf::from("/nowhere"));
        assert_eq!(loc.file, PathBuf::from("/nowhere/custom.yaml"));
    }
}
