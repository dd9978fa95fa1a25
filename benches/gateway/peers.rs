//! Peers measured in the same run on the same mock: LiteLLM proxy (installed into
//! `~/.cache/ccproxy-bench/litellm` from PyPI on first use; never 1.82.7/1.82.8). ccproxy v2 is
//! reported as skipped with the reason.

use std::path::PathBuf;

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".cache/ccproxy-bench")
}

fn wait_health(
    port: u16,
    child: &mut std::process::Child,
    log: &std::path::Path,
    what: &str,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!(
                "{what} exited ({status}) before it was ready: {last}"
            ));
        }
        let resp = super::http_get(port, "/health");
        if resp.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{what} did not become ready within 180 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The original ccproxy v2 (PyPI `ai-ccproxy`, mitmproxy inside), on the sentinel-key
/// `/v1/messages` route. It always dials its upstream on https:443 without verifying, so the
/// harness gives it a TLS mock on `127.0.0.1:443` (needs root or CAP_NET_BIND_SERVICE).
pub mod ccproxy_v2 {
    use super::cache_dir;
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};

    pub const VERSION: &str = "2.0.0";

    pub struct Peer {
        child: Child,
        port: u16,
        pub version: String,
        _dir: tempfile::TempDir,
    }

    impl Peer {
        pub fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.port))
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn python313() -> Option<std::path::PathBuf> {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from)?;
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

    fn ensure_installed() -> Result<std::path::PathBuf, String> {
        let venv = cache_dir().join("ccproxy-v2");
        let bin = venv.join("bin/ccproxy");
        if bin.exists() {
            return Ok(bin);
        }
        if std::env::var("CCPROXY_BENCH_INSTALL").as_deref() == Ok("0") {
            return Err(format!(
                "not installed at {} (CCPROXY_BENCH_INSTALL=0)",
                bin.display()
            ));
        }
        let py = python313().ok_or("needs Python 3.13 (pyenv 3.13.0 or python3.13 on PATH)")?;
        println!(
            "  installing ai-ccproxy=={VERSION} into {} (one time)…",
            venv.display()
        );
        let ok = Command::new(&py)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    &format!("ai-ccproxy=={VERSION}"),
                    // Later versions break an import in ai-ccproxy 2.0.0.
                    "pydantic-ai-slim==2.61.0",
                    "pydantic-graph==2.61.0",
                ])
                .status()
                .is_ok_and(|s| s.success());
        if ok && bin.exists() {
            Ok(bin)
        } else {
            Err("pip install ai-ccproxy failed (no PyPI access?)".to_owned())
        }
    }

    /// Start v2 with one provider `anthropic` at `127.0.0.1` (it adds :443 and https itself).
    pub fn start() -> Result<Peer, String> {
        let bin = ensure_installed()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| e.to_string())
        };
        let (port, web) = (free()?, free()?);
        let yaml = format!(
            "ccproxy:\n  host: 127.0.0.1\n  port: {port}\n  log_level: ERROR\n  hooks:\n    inbound: [ccproxy.hooks.inject_auth]\n    outbound: []\n  inspector:\n    port: {web}\n    transforms: []\n  mcp:\n    http:\n      enabled: false\n  shaping:\n    enabled: false\n  providers:\n    anthropic:\n      auth:\n        command: echo sk-bench\n        type: command\n      host: 127.0.0.1\n      path: /v1/messages\n      type: anthropic\n"
        );
        std::fs::write(dir.path().join("ccproxy.yaml"), yaml).map_err(|e| e.to_string())?;
        let log = dir.path().join("v2.log");
        let mut child = Command::new(&bin)
            .arg("start")
            .env("CCPROXY_CONFIG_DIR", dir.path())
            .env("CCPROXY_VERIFY_READINESS_ON_STARTUP", "false")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .map_err(|e| format!("cannot start ccproxy v2: {e}"))?;
        if let Err(e) = super::wait_health(port, &mut child, &log, "ccproxy v2") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Peer {
            child,
            port,
            version: VERSION.to_owned(),
            _dir: dir,
        })
    }
}

pub mod litellm {
    use super::cache_dir;
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub const VERSION: &str = "1.108.7";

    /// LiteLLM refuses to start without a master key; clients send it as their API key.
    pub const MASTER_KEY: &str = "sk-bench-master";

    pub struct Peer {
        child: Child,
        port: u16,
        pub version: String,
        _dir: tempfile::TempDir,
    }

    impl Peer {
        pub fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.port))
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = Command::new("pkill")
                .args(["-TERM", "-P", &self.child.id().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn ensure_installed() -> Result<std::path::PathBuf, String> {
        let venv = cache_dir().join("litellm");
        let bin = venv.join("bin/litellm");
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
            "  installing litellm[proxy]=={VERSION} into {} (one time)…",
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", &format!("litellm[proxy]=={VERSION}")])
                .status()
                .is_ok_and(|s| s.success());
        if ok && bin.exists() {
            Ok(bin)
        } else {
            Err("pip install litellm[proxy] failed (no PyPI access?)".to_owned())
        }
    }

    /// Start LiteLLM (2 workers, no DB) routing `bench-model` to the mock's OpenAI endpoint.
    pub fn start(mock: SocketAddr) -> Result<Peer, String> {
        let bin = ensure_installed()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cfg = dir.path().join("litellm.yaml");
        let yaml = format!(
            "model_list:\n  - model_name: bench-model\n    litellm_params:\n      model: openai/bench-model\n      api_base: http://{mock}/v1\n      api_key: sk-bench\n  - model_name: bench-claude\n    litellm_params:\n      model: anthropic/claude-haiku-4-5-20251001\n      api_base: http://{mock}\n      api_key: sk-bench\nlitellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {MASTER_KEY}\n"
        );
        std::fs::write(&cfg, yaml).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&cfg)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--num_workers",
                "2",
            ])
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MODE", "PRODUCTION")
            .env("NO_DOCS", "True")
            .env("DISABLE_ADMIN_UI", "True")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("litellm.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .map_err(|e| format!("cannot start litellm: {e}"))?;
        let peer = Peer {
            child,
            port,
            version: VERSION.to_owned(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut peer = peer;
        loop {
            if let Ok(Some(status)) = peer.child.try_wait() {
                let log = std::fs::read_to_string(peer._dir.path().join("litellm.log"))
                    .unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(format!(
                    "litellm exited ({status}) before it was ready: {last}"
                ));
            }
            let resp = super::super::http_get(port, "/health/liveliness");
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
            if Instant::now() > deadline {
                return Err("litellm did not become ready within 180 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(peer)
    }
}
