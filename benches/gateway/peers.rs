//! Peers measured in the same run on the same mock: LiteLLM proxy and the original ccproxy v2,
//! each installed from PyPI into a venv under `~/.cache/ccproxy-bench/` on first use
//! (`CCPROXY_BENCH_INSTALL=0` forbids installs). A peer that cannot be installed or started is
//! reported as skipped with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".cache/ccproxy-bench")
}

/// A running peer process (and its temporary config directory).
pub struct Peer {
    child: Child,
    port: u16,
    pub version: String,
    /// Keeps the peer's config directory alive as long as the peer.
    _dir: tempfile::TempDir,
}

impl Peer {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Spawn `cmd` (stderr to `<dir>/peer.log`) and wait until `GET health_path` answers 200.
    fn spawn(
        mut cmd: Command,
        port: u16,
        dir: tempfile::TempDir,
        version: &str,
        health_path: &str,
        what: &str,
    ) -> Result<Self, String> {
        let log = dir.path().join("peer.log");
        let stderr = std::fs::File::create(&log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        // From here on, dropping the peer stops the process.
        let mut peer = Peer {
            child,
            port,
            version: version.to_owned(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = peer.child.try_wait() {
                return Err(format!(
                    "{what} exited ({status}) before it was ready: {}",
                    last_line(&log)
                ));
            }
            if super::http_get(port, health_path).starts_with("HTTP/1.1 200") {
                return Ok(peer);
            }
            if Instant::now() > deadline {
                return Err(format!("{what} did not become ready within 180 s"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Worker processes first (LiteLLM forks), then the parent.
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `<cache>/<venv>/bin/<bin>`, installing `packages` into a fresh venv made by `python` first
/// if it is missing.
fn ensure_venv(venv: &str, bin: &str, python: &Path, packages: &[&str]) -> Result<PathBuf, String> {
    let venv = cache_dir().join(venv);
    let bin = venv.join("bin").join(bin);
    if bin.exists() {
        return Ok(bin);
    }
    if std::env::var("CCPROXY_BENCH_INSTALL").as_deref() == Ok("0") {
        return Err(format!(
            "not installed at {} (CCPROXY_BENCH_INSTALL=0)",
            bin.display()
        ));
    }
    println!(
        "  installing {} into {} (one time)…",
        packages.join(" "),
        venv.display()
    );
    let ok = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    if ok && bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "pip install {} failed (no PyPI access?)",
            packages.join(" ")
        ))
    }
}

/// The original ccproxy v2 (PyPI `ai-ccproxy`, mitmproxy inside), on the sentinel-key
/// `/v1/messages` route. It always dials its upstream on https:443 without verifying, so the
/// harness gives it a TLS mock on `127.0.0.1:443` (needs root or CAP_NET_BIND_SERVICE).
pub mod ccproxy_v2 {
    use super::{ensure_venv, free_port, Peer};
    use std::path::PathBuf;
    use std::process::Command;

    pub const VERSION: &str = "2.0.0";

    fn python313() -> Option<PathBuf> {
        let home = std::env::var_os("HOME").map(PathBuf::from)?;
        let pyenv = home.join(".pyenv/versions/3.13.0/bin/python3");
        if pyenv.exists() {
            return Some(pyenv);
        }
        let ok = Command::new("python3.13")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| "python3.13".into())
    }

    /// Start v2 with one provider `anthropic` at `127.0.0.1` (it adds :443 and https itself).
    pub fn start() -> Result<Peer, String> {
        let py = python313().ok_or("needs Python 3.13 (pyenv 3.13.0 or python3.13 on PATH)")?;
        let package = format!("ai-ccproxy=={VERSION}");
        // Later versions break an import in ai-ccproxy 2.0.0.
        let packages = [
            package.as_str(),
            "pydantic-ai-slim==2.61.0",
            "pydantic-graph==2.61.0",
        ];
        let bin = ensure_venv("ccproxy-v2", "ccproxy", &py, &packages)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (port, web) = (free_port()?, free_port()?);
        let yaml = format!(
            "ccproxy:\n  host: 127.0.0.1\n  port: {port}\n  log_level: ERROR\n  hooks:\n    inbound: [ccproxy.hooks.inject_auth]\n    outbound: []\n  inspector:\n    port: {web}\n    transforms: []\n  mcp:\n    http:\n      enabled: false\n  shaping:\n    enabled: false\n  providers:\n    anthropic:\n      auth:\n        command: echo sk-bench\n        type: command\n      host: 127.0.0.1\n      path: /v1/messages\n      type: anthropic\n"
        );
        std::fs::write(dir.path().join("ccproxy.yaml"), yaml).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("start")
            .env("CCPROXY_CONFIG_DIR", dir.path())
            .env("CCPROXY_VERIFY_READINESS_ON_STARTUP", "false");
        Peer::spawn(cmd, port, dir, VERSION, "/health", "ccproxy v2")
    }
}

/// LiteLLM proxy (never 1.82.7/1.82.8), 2 workers, no database.
pub mod litellm {
    use super::{ensure_venv, free_port, Peer};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::Command;

    pub const VERSION: &str = "1.108.7";

    /// LiteLLM refuses to start without a master key; clients send it as their API key.
    pub const MASTER_KEY: &str = "sk-bench-master";

    /// Start LiteLLM routing `bench-model` to the mock's OpenAI endpoint and `bench-claude` to
    /// its Anthropic endpoint.
    pub fn start(mock: SocketAddr) -> Result<Peer, String> {
        let package = format!("litellm[proxy]=={VERSION}");
        let bin = ensure_venv("litellm", "litellm", Path::new("python3"), &[&package])?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cfg = dir.path().join("litellm.yaml");
        let yaml = format!(
            "model_list:\n  - model_name: bench-model\n    litellm_params:\n      model: openai/bench-model\n      api_base: http://{mock}/v1\n      api_key: sk-bench\n  - model_name: bench-claude\n    litellm_params:\n      model: anthropic/claude-haiku-4-5-20251001\n      api_base: http://{mock}\n      api_key: sk-bench\nlitellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {MASTER_KEY}\n"
        );
        std::fs::write(&cfg, yaml).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&cfg)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", "2"])
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MODE", "PRODUCTION")
            .env("NO_DOCS", "True")
            .env("DISABLE_ADMIN_UI", "True");
        Peer::spawn(cmd, port, dir, VERSION, "/health/liveliness", "litellm")
    }
}
