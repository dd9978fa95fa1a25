//! The TLS key log (`inspector.keylog: true`): `<config dir>/tls.keylog`, append-only, mode 0600,
//! NSS key log format, so Wireshark can decrypt both legs of what the gateway carries.
//!
//! Three kinds of TLS session write to it:
//! - the client side of intercepted connections (the acceptor in `proxy::intercept`) and the
//!   browser-profile bridges' upstream connections (`fingerprint`): through [`attach`], which
//!   writes each line with one `write` on one shared handle;
//! - Pingora's own upstream connector, which has no callback to hand over: it opens the file
//!   named by `SSLKEYLOGFILE` when `upstream_debug_ssl_keylog` is on, so [`export_env`] names
//!   the file there. Commands the gateway runs (credential commands) get that variable removed.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The environment variable Pingora's upstream connector reads.
pub const ENV: &str = "SSLKEYLOGFILE";

static FILE: OnceLock<Mutex<File>> = OnceLock::new();

/// Create (0600) or open `path` for appending; from now on every attached session writes to it.
/// A second call keeps the first file.
pub fn open(path: &Path) -> Result<(), String> {
    if FILE.get().is_some() {
        return Ok(());
    }
    let file = create(path)?;
    let _ = FILE.set(Mutex::new(file));
    Ok(())
}

fn create(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("TLS key log {}: {e}", path.display()))
}

/// Name `path` in `SSLKEYLOGFILE` for Pingora's upstream connector, creating it 0600 first (so
/// Pingora, which creates it with the default mode, only ever appends).
///
/// Changing the environment is only sound while the process has one thread: call it before
/// logging, the runtimes or anything else starts a thread (`ccproxy start` does).
pub fn export_env(path: &Path) -> Result<(), String> {
    create(path)?;
    std::env::set_var(ENV, path);
    Ok(())
}

/// Append one key log line (a no-op until [`open`]).
pub fn record(line: &str) {
    if let Some(file) = FILE.get() {
        let mut entry = String::with_capacity(line.len() + 1);
        entry.push_str(line);
        entry.push('\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line: with O_APPEND, lines from other handles never land inside it.
        let _ = f.write_all(entry.as_bytes());
    }
}

/// Log the secrets of every session made from `builder`'s context (when the key log is open).
pub fn attach(builder: &mut boring::ssl::SslContextBuilder) {
    builder.set_keylog_callback(|_, line| record(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_log_is_private_and_takes_whole_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.keylog");
        open(&path).unwrap();
        // A second file is refused quietly: the first one stays in use.
        open(&dir.path().join("other.keylog")).unwrap();
        record("CLIENT_RANDOM 00 11");
        record("CLIENT_RANDOM 22 33");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "CLIENT_RANDOM 00 11\nCLIENT_RANDOM 22 33\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("other.keylog").exists());
    }
}
