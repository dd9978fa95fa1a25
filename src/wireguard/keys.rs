//! WireGuard keys and the files that carry them, all in the config directory:
//! - `wireguard/server.key`: the gateway's private key (base64, 0600), made on first use;
//! - `wireguard/peers/<name>.key`: an external device's private key (0600), made by
//!   `ccproxy wg client-config --name <name>`; the gateway accepts the matching public key;
//! - `wireguard.json`: where the running gateway's listener is and its public key, written at
//!   start so `ccproxy run --inspect` and `ccproxy wg client-config` find it.
//!
//! Secrets are wrapped so they never appear in `Debug` output or logs.

use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// File name of the running gateway's listener record.
pub const STATE_FILE: &str = "wireguard.json";

/// A private key; `Debug` shows only the public half.
#[derive(Clone)]
pub struct Secret(pub StaticSecret);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(public {})", encode(&self.public()))
    }
}

impl Secret {
    pub fn generate() -> Self {
        Secret(StaticSecret::random_from_rng(rand_core::OsRng))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from(&self.0)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.to_bytes())
    }

    pub fn from_base64(text: &str) -> Option<Self> {
        key_bytes(text).map(|b| Secret(StaticSecret::from(b)))
    }

    /// The key in `path`, or a new one written there (0600, atomically) when the file is
    /// missing. A file that is not a key is an error naming it, never silently replaced.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Secret::from_base64(&text)
                .ok_or_else(|| format!("{}: not a WireGuard private key", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Secret::generate();
                crate::config::paths::write_atomically(
                    path,
                    format!("{}\n", key.to_base64()).as_bytes(),
                    0o600,
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// A key in base64 (as `wg` prints them).
pub fn encode(key: &PublicKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// 32 bytes from base64 text.
pub fn key_bytes(text: &str) -> Option<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?
        .try_into()
        .ok()
}

pub fn server_key_path(dir: &Path) -> PathBuf {
    dir.join("wireguard").join("server.key")
}

pub fn peers_dir(dir: &Path) -> PathBuf {
    dir.join("wireguard").join("peers")
}

/// The public keys of the external devices made by `ccproxy wg client-config`.
pub fn device_peers(dir: &Path) -> Vec<(String, [u8; 32])> {
    let Ok(entries) = std::fs::read_dir(peers_dir(dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let (Some(name), Some("key")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| Secret::from_base64(&t))
        {
            Some(k) => out.push((name.to_owned(), *k.public().as_bytes())),
            None => tracing::warn!(file = %path.display(), "not a WireGuard key; peer ignored"),
        }
    }
    out
}

/// Whether process `pid` is running: it exists and is not a zombie (a gateway killed under a
/// parent that does not reap, such as a container's init, stays a zombie).
fn running(pid: u32) -> bool {
    let exists = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
        None,
    )
    .map_or_else(|e| e == nix::errno::Errno::EPERM, |()| true);
    // `/proc/<pid>/stat`: "pid (comm) state …"; the command may hold spaces and parentheses.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    exists && !zombie
}

/// What the running gateway writes to `wireguard.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The UDP address the listener is bound to.
    pub endpoint: SocketAddr,
    /// The gateway's public key (base64).
    pub public_key: String,
    /// The gateway's process id (a record of a process that is gone is stale).
    pub pid: u32,
}

impl State {
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::config::paths::write_atomically(&dir.join(STATE_FILE), &text, 0o644)
    }

    /// The record of a gateway that is running now; an error saying why not otherwise.
    pub fn read_live(dir: &Path) -> Result<State, String> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "no gateway is running ({}: {e}); start one with `ccproxy start`",
                path.display()
            )
        })?;
        let state: State = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a gateway record: {e}", path.display()))?;
        if !running(state.pid) {
            return Err(format!(
                "no gateway is running (the one recorded in {} has exited); start one with `ccproxy start`",
                path.display()
            ));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_dead_or_zombie_gateway_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let record = |pid: u32| {
            State {
                endpoint: "127.0.0.1:1".parse().unwrap(),
                public_key: String::new(),
                pid,
            }
            .write(dir.path())
            .unwrap();
            State::read_live(dir.path())
        };
        assert!(
            record(std::process::id()).is_ok(),
            "this process is running"
        );
        // A child that has exited and is not reaped yet: a zombie.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(pid),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        let e = record(child.id()).unwrap_err();
        assert!(e.contains("has exited"), "{e}");
        let mut child = child;
        child.wait().unwrap();
    }

    #[test]
    fn a_key_is_created_once_with_mode_0600_and_never_printed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = server_key_path(dir.path());
        let a = Secret::load_or_create(&path).unwrap();
        let b = Secret::load_or_create(&path).unwrap();
        assert_eq!(a.to_base64(), b.to_base64());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!format!("{a:?}").contains(&a.to_base64()));
    }

    #[test]
    fn a_file_that_is_not_a_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        std::fs::write(&path, "hello").unwrap();
        let e = Secret::load_or_create(&path).unwrap_err();
        assert!(e.contains("server.key") && e.contains("not a WireGuard private key"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    }

    #[test]
    fn a_record_of_an_exited_gateway_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State {
            endpoint: "127.0.0.1:5555".parse().unwrap(),
            public_key: encode(&Secret::generate().public()),
            pid: std::process::id(),
        };
        state.write(dir.path()).unwrap();
        assert_eq!(State::read_live(dir.path()).unwrap().pid, state.pid);
        // pid_max is at most 2^22: this one cannot exist.
        state.pid = 4_194_304 + 7;
        state.write(dir.path()).unwrap();
        assert!(State::read_live(dir.path())
            .unwrap_err()
            .contains("has exited"));
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        assert!(State::read_live(dir.path())
            .unwrap_err()
            .contains("ccproxy start"));
    }
}
