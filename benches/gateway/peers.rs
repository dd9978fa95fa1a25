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

/// Why ccproxy v2 is not in this run.
pub fn ccproxy_v2_unavailable() -> String {
    "not automated yet: ai-ccproxy 2.0.0 needs Python 3.13 and a TLS upstream on 127.0.0.1:443 \
     (it always dials https:443); see benches/RESULTS.md"
        .to_owned()
}

pub mod litellm {
    use super::cache_dir;
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub const VERSION: &str = "1.108.7";

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
            "model_list:\n  - model_name: bench-model\n    litellm_params:\n      model: openai/bench-model\n      api_base: http://{mock}/v1\n      api_key: sk-bench\nlitellm_settings:\n  telemetry: false\n"
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
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start litellm: {e}"))?;
        let peer = Peer {
            child,
            port,
            version: VERSION.to_owned(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
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
