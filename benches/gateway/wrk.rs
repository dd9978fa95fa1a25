//! `wrk` as the load generator and `nginx` as the upstream, when both are installed (Debian
//! packages `wrk`, `nginx`): the S2 closed-loop comparison then measures the proxies, not the
//! in-repo client or mock. nginx answers every request with a fixed OpenAI chat completion.

use crate::load::Target;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Paths of `wrk` and `nginx`.
pub struct Tools {
    wrk: PathBuf,
    nginx: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A private nginx instance: one process (`master_process off`), so killing the child leaves
/// no orphaned worker behind.
pub struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tools {
    pub fn find() -> Option<Self> {
        Some(Self {
            wrk: which("wrk")?,
            nginx: which("nginx")?,
        })
    }

    /// Start nginx (one worker) pinned to `core`.
    pub fn nginx(&self, core: usize) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  keepalive_requests 1000000;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ default_type application/json; return 200 '{body}'; }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let child = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(&self.nginx)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("nginx: {e}"))?;
        let ok = (0..2000).any(|_| {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(5));
            }
            up
        });
        let n = Nginx {
            child,
            port,
            _dir: dir,
        };
        if ok {
            Ok(n)
        } else {
            Err("nginx did not start".into())
        }
    }

    /// Requests per second `wrk` (one thread, pinned to `core`) reaches against `t` with `conns`
    /// connections for `secs` seconds.
    pub fn run(&self, t: &Target, core: usize, conns: usize, secs: u64) -> f64 {
        let Ok(dir) = tempfile::tempdir() else {
            return 0.0;
        };
        let mut script = String::from("wrk.method = \"POST\"\n");
        script.push_str(&format!(
            "wrk.body = [[{}]]\n",
            String::from_utf8_lossy(&t.body)
        ));
        for (k, v) in &t.headers {
            script.push_str(&format!("wrk.headers[\"{k}\"] = \"{v}\"\n"));
        }
        let path = dir.path().join("post.lua");
        if std::fs::write(&path, script).is_err() {
            return 0.0;
        }
        let out = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(&self.wrk)
            .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "-s"])
            .arg(&path)
            .arg(format!("http://{}{}", t.addr, t.path))
            .output();
        let Ok(out) = out else {
            return 0.0;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let non2xx = text.contains("Non-2xx");
        assert!(!non2xx, "wrk saw error answers:\n{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}
