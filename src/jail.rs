//! `ccproxy run --inspect -- cmd…`: run a command in a jail whose every connection goes
//! through the running gateway, with no base-URL variables and no proxy settings, so native
//! binaries are captured too.
//!
//! Three processes: this one stays on the host (it forwards the jail's listening ports and
//! relays `SIGTERM`/`SIGHUP`); the keeper ([`keeper`]) builds the namespaces, the TUN device and
//! the WireGuard peer that carries the jail's packets to the gateway's listener
//! ([`crate::wireguard`]); init ([`init`]) runs the command as pid 1 of the jail without
//! capabilities. The gateway answers the jail's DNS, intercepts its TLS with the local CA, whose
//! bundle the command finds through `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `REQUESTS_CA_BUNDLE`
//! and `CURL_CA_BUNDLE`.

pub mod control;
pub mod init;
pub mod keeper;
mod ports;
mod tun;

use crate::config::Config;
use crate::wireguard::keys;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Variables pointing the command at the CA bundle (system roots + the ccproxy CA).
pub const CA_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
];

/// Where distributions keep their root bundle, most common first.
const SYSTEM_ROOTS: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub fn run_inspect(config: &Config, command: &[String]) -> ExitCode {
    match start(config, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ccproxy run --inspect: {e}");
            ExitCode::from(keeper::SETUP_FAILED)
        }
    }
}

fn start(config: &Config, command: &[String]) -> Result<ExitCode, String> {
    let dir = &config.location.dir;
    let state = keys::State::read_live(dir)?;
    let bundle = ca_bundle(dir)?;
    let listener = control::Listener::bind()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find ccproxy itself: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("__jail-keeper")
        .arg("--control")
        .arg(&listener.name)
        .arg("--")
        .args(command)
        .spawn()
        .map_err(|e| format!("cannot start the jail: {e}"))?;
    let channel = match listener.accept(child.id(), Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    drop(listener);
    let bundle = bundle.to_string_lossy().into_owned();
    let setup = control::Setup {
        secret: keys::Secret::generate().to_base64(),
        server_public: state.public_key,
        endpoint: state.endpoint,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        parent: std::process::id(),
        env: CA_VARS
            .iter()
            .map(|v| ((*v).to_owned(), bundle.clone()))
            .collect(),
    };
    channel.send(&setup, None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::from(rt.block_on(supervise(channel, child))))
}

/// Until the keeper exits: forward the jail's ports, relay signals; the command's status.
async fn supervise(channel: control::Channel, mut child: std::process::Child) -> u8 {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    tokio::spawn(forward_signals(pid));
    let waited = tokio::task::spawn_blocking(move || child.wait());
    let channel = std::sync::Arc::new(channel);
    let messages = async {
        let mut forwards = ports::HostForwards::default();
        if let Ok(incoming) = channel.incoming() {
            while let Some((msg, _)) = incoming.next::<control::Message>().await {
                match msg {
                    control::Message::Listen(p) => forwards.listen(p, &channel),
                    control::Message::Unlisten(p) => forwards.unlisten(p),
                    control::Message::Ready | control::Message::Connection(_) => {}
                }
            }
        }
        // The keeper has gone: wait for its status below.
        std::future::pending::<()>().await
    };
    tokio::select! {
        status = waited => match status {
            Ok(Ok(s)) => exit_code(s),
            _ => keeper::SETUP_FAILED,
        },
        () = messages => keeper::SETUP_FAILED,
    }
}

/// Relay `SIGTERM`, `SIGHUP`, `SIGUSR1` and `SIGUSR2` to `pid`. `SIGINT` and `SIGQUIT` are
/// caught and dropped: the terminal sends them to the whole process group, the command
/// included, and this process must outlive them to report the command's exit status.
pub(crate) async fn forward_signals(pid: nix::unistd::Pid) {
    use nix::sys::signal::Signal;
    use tokio::signal::unix::{signal, SignalKind};
    let relayed = [
        (SignalKind::terminate(), Signal::SIGTERM),
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
    ];
    for (kind, sig) in relayed {
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            });
        }
    }
    for kind in [SignalKind::interrupt(), SignalKind::quit()] {
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move { while s.recv().await.is_some() {} });
        }
    }
}

/// `fd` registered with the tokio reactor.
pub(crate) fn register_fd(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an `OwnedFd` is open, valid and refers to the same file description until it is
    // dropped, which happens only when the `AsyncFd` that owns it is dropped.
    #[allow(unsafe_code)]
    unsafe {
        tokio::io::unix::AsyncFd::register(fd).map_err(std::io::Error::from)
    }
}

/// A child's status as an exit code (`128 + signal` for a signal, as shells do).
pub(crate) fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        (None, None) => 1,
    }
}

/// `<config dir>/ca-bundle.pem`: the system's roots followed by the ccproxy CA (created if
/// needed), rewritten atomically each run, so programs that replace the default roots with
/// the file (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`) still trust the internet.
pub fn ca_bundle(dir: &Path) -> Result<PathBuf, String> {
    let ca = crate::local_ca::LocalCa::load_or_create(dir).map_err(|e| e.to_string())?;
    let ours =
        std::fs::read(ca.cert_path()).map_err(|e| format!("{}: {e}", ca.cert_path().display()))?;
    let mut bundle = SYSTEM_ROOTS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(b"# ccproxy local CA\n");
    bundle.extend_from_slice(&ours);
    let path = dir.join("ca-bundle.pem");
    crate::config::paths::write_atomically(&path, &bundle, 0o644)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
