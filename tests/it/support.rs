//! Test support: mock upstreams ([`mock`]), a test CA ([`tls`]), and [`Gateway`], which runs a
//! real ccproxy (the library's `proxy::server::spawn`) on free ports with a given config.

#![allow(dead_code)]

pub mod mock;
pub mod tls;

use ccproxy::config::{Config, ConfigLocation};
use ccproxy::proxy::flow::FlowRecorder;
use ccproxy::proxy::server::{spawn_with, GatewayHandle, Options};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A port for a ccproxy listener: below the kernel's ephemeral range (32768+), so no mock
/// (bound to port 0) and no client socket can take it between this probe and the gateway's
/// own bind; a process-wide counter keeps this test process's gateways apart, and the probe
/// skips ports other processes hold.
pub fn gateway_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = if p >= 32_000 { 20_000 + p % 12_000 } else { p };
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A gateway running in this process.
pub struct Gateway {
    pub handle: Option<GatewayHandle>,
    pub base: String,
    pub metrics_url: String,
    pub dir: tempfile::TempDir,
}

/// Config YAML with listener/test defaults; `body` is the rest of the `ccproxy:` section,
/// indented by two spaces.
pub fn config_yaml(port: u16, metrics_port: u16, body: &str) -> String {
    let mut y = format!(
        "ccproxy:\n  host: 127.0.0.1\n  port: {port}\n  metrics: 127.0.0.1:{metrics_port}\n  log_file: null\n  threads: 2\n"
    );
    if !body.contains("timeouts:") {
        y.push_str("  timeouts:\n    shutdown_seconds: 0\n    connect_seconds: 2\n");
    }
    // Capture stays on (every test exercises it) but in memory and without the admin
    // listener, unless the test's own `inspector:` section says otherwise.
    let mut body = body.to_owned();
    let section = "  inspector:\n";
    let mut defaults = String::new();
    if !body.contains("    listen:") {
        defaults.push_str("    listen: null\n");
    }
    if !body.contains("    store:") {
        defaults.push_str("    store: null\n");
    }
    if !body.contains("    proxy_listen:") {
        defaults.push_str("    proxy_listen: null\n");
    }
    match body.find(section) {
        Some(i) => body.insert_str(i + section.len(), &defaults),
        None => {
            body.push_str(section);
            body.push_str(&defaults);
        }
    }
    y.push_str(&body);
    y
}

impl Gateway {
    /// Start a gateway whose `ccproxy:` section is `body` (plus listener defaults).
    pub fn start(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, body)
    }

    /// Start with a single provider entry (see [`provider`]) pointing at `mock`.
    pub fn with_provider(name: &str, family: &str, mock: &mock::MockUpstream, extra: &str) -> Self {
        Self::start(&providers(&[provider(name, family, mock, extra)]))
    }

    /// Start with the config written into `dir` (which may hold files the config names).
    pub fn start_in(dir: tempfile::TempDir, body: &str) -> Self {
        Self::start_full(dir, body, Options::default)
    }

    /// Start with a flow recorder.
    pub fn start_recording(body: &str, recorder: Arc<dyn FlowRecorder>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_full(dir, body, move || Options {
            recorder: Some(recorder.clone()),
        })
    }

    fn start_full(dir: tempfile::TempDir, body: &str, options: impl Fn() -> Options) -> Self {
        for _ in 0..5 {
            let (port, mport) = (gateway_port(), gateway_port());
            let file = dir.path().join("ccproxy.yaml");
            std::fs::write(&file, config_yaml(port, mport, body)).unwrap();
            let loc = ConfigLocation {
                dir: dir.path().to_path_buf(),
                file,
            };
            let config = Config::load(loc).unwrap_or_else(|e| panic!("config: {e}"));
            match spawn_with(config, options()) {
                Ok(handle) => {
                    return Self {
                        handle: Some(handle),
                        base: format!("http://127.0.0.1:{port}"),
                        metrics_url: format!("http://127.0.0.1:{mport}/metrics"),
                        dir,
                    }
                }
                // A free port can be taken between probing and binding: try again.
                Err(ccproxy::proxy::server::Error::Bind { .. }) => continue,
                Err(e) => panic!("gateway: {e}"),
            }
        }
        panic!("no free port for the gateway");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The metrics exposition text.
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Gateway {
    /// Stop the gateway (gracefully, waiting for it) and keep its config directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(h) = self.handle.take() {
            let _ = std::thread::spawn(move || h.shutdown()).join();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // Joining blocks; do it off the async runtime's worker.
            let _ = std::thread::spawn(move || h.shutdown()).join();
        }
    }
}

/// The admin API's base URL and token.
pub fn admin(gw: &Gateway) -> (String, String) {
    let i = gw.handle.as_ref().unwrap().inspector.as_ref().unwrap();
    (
        format!("http://{}", i.listen.as_ref().unwrap()),
        i.token.clone(),
    )
}

/// GET an admin API path with the token.
pub async fn api(gw: &Gateway, path: &str) -> reqwest::Response {
    let (base, token) = admin(gw);
    client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// GET an admin API path, expecting 200 JSON.
pub async fn api_json(gw: &Gateway, path: &str) -> serde_json::Value {
    let r = api(gw, path).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// A provider entry pointing at a plain-HTTP mock.
pub fn provider(name: &str, family: &str, mock: &mock::MockUpstream, extra: &str) -> String {
    format!(
        "    {name}:\n      host: {}\n      scheme: http\n      provider: {family}\n{extra}",
        mock.host_port()
    )
}

/// `providers:` section with entries.
pub fn providers(entries: &[String]) -> String {
    format!("  providers:\n{}", entries.concat())
}

/// A credential command (`auth: {command: …}`) that prints `tok1` the first time and `tok2`
/// every time after (a counter file in `dir`): a credential that changes once.
pub fn first_tok1_then_tok2(dir: &std::path::Path) -> String {
    format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; if [ $n -eq 0 ]; then echo tok1; else echo tok2; fi",
        c = dir.join("n").display()
    )
}

/// A plain HTTP client (HTTP/1.1).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST path` with the sentinel key for `provider` in `x-api-key` (Anthropic style).
pub fn sentinel_post(gw: &Gateway, path: &str, provider: &str) -> reqwest::RequestBuilder {
    client()
        .post(gw.url(path))
        .header("x-api-key", format!("sk-ant-oat-ccproxy-{provider}"))
}

/// `POST path` with the sentinel key for `provider` as a Bearer token (OpenAI style).
pub fn sentinel_bearer(gw: &Gateway, path: &str, provider: &str) -> reqwest::RequestBuilder {
    client()
        .post(gw.url(path))
        .bearer_auth(format!("sk-ant-oat-ccproxy-{provider}"))
}

/// The `type` of each event (Anthropic and Responses streams).
pub fn event_types(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect()
}

/// Parse a JSON response body.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The value of a Prometheus sample line `name{labels} value` whose text starts with `prefix`.
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Path of the built `ccproxy` binary.
/// A `ccproxy start` child on `port` with `envs`, returned once it accepts connections.
pub fn start_binary(
    dir: &std::path::Path,
    port: u16,
    envs: &[(&str, &str)],
) -> std::process::Child {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--config")
        .arg(dir)
        .arg("start")
        .env_remove("SSL_CERT_FILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // Readiness: poll until the listener answers (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let addr = format!("127.0.0.1:{port}");
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not start"
        );
        assert!(child.try_wait().unwrap().is_none(), "gateway exited early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

/// SIGTERM a gateway process and wait for it to stop.
pub fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    child.wait().unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ccproxy")
}

/// Minimal raw HTTP/1.1 exchange over one TCP connection, to observe keep-alive.
pub mod raw {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    pub struct Conn(pub BufReader<TcpStream>);

    pub struct Response {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Response {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    impl Conn {
        pub async fn open(addr: &str) -> Self {
            Self(BufReader::new(TcpStream::connect(addr).await.unwrap()))
        }

        /// Send one request with a body; read one Content-Length-framed response.
        pub async fn exchange(&mut self, head: &str, body: &[u8]) -> Response {
            let req = format!("{head}\r\ncontent-length: {}\r\n\r\n", body.len());
            self.send(req.as_bytes()).await;
            self.send(body).await;
            self.read_response().await
        }

        /// Write raw bytes.
        pub async fn send(&mut self, bytes: &[u8]) {
            self.0.get_mut().write_all(bytes).await.unwrap();
        }

        /// Write raw bytes, ignoring a peer that already closed (for uploads the gateway may
        /// cut short).
        pub async fn send_lossy(&mut self, bytes: &[u8]) -> bool {
            self.0.get_mut().write_all(bytes).await.is_ok()
        }

        /// Close the sending half (the gateway sees end of input).
        pub async fn shutdown_write(&mut self) {
            let _ = self.0.get_mut().shutdown().await;
        }

        /// Read one response head (an interim `100 Continue` is a response too) and its
        /// Content-Length body, within 20 s.
        pub async fn read_response(&mut self) -> Response {
            tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.read_response_inner(),
            )
            .await
            .expect("no response within 20 s")
        }

        async fn read_response_inner(&mut self) -> Response {
            let mut line = String::new();
            self.0.read_line(&mut line).await.unwrap();
            let status = line
                .split(' ')
                .nth(1)
                .unwrap_or_else(|| panic!("not a status line: {line:?}"))
                .parse()
                .unwrap();
            let mut headers = Vec::new();
            loop {
                line.clear();
                self.0.read_line(&mut line).await.unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            self.0.read_exact(&mut body).await.unwrap();
            Response {
                status,
                headers,
                body,
            }
        }

        /// Whether the gateway closes the connection (EOF, or a reset after everything was
        /// read) within 20 s, with no further bytes.
        pub async fn closed(&mut self) -> bool {
            let mut b = [0u8; 1];
            match tokio::time::timeout(std::time::Duration::from_secs(20), self.0.read(&mut b))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(_)) => false,
                Err(_) => false,
            }
        }
    }
}
