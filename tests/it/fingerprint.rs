//! Browser TLS fingerprints: a local TLS listener records the raw ClientHello of every
//! connection and then answers normally. `ccproxy fingerprint` with the Chrome profile must
//! produce the JA4 that headless Chromium (Debian's `chromium`) produces against the same
//! listener in the same run (the expected value comes from the browser, not a constant); without
//! a profile the default stack's differs.

use crate::support::tls::TestCa;
use crate::support::*;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A TLS listener (the test CA's `localhost` leaf, ALPN h2/http1.1) that keeps every
/// ClientHello it receives and answers `200 ok`.
struct Recorder {
    port: u16,
    hellos: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Per HTTP/2 connection: its SETTINGS (id, value) and its first connection WINDOW_UPDATE.
    h2_settings: Arc<Mutex<Vec<H2Start>>>,
    /// Per request: the JA4 of its connection, its HTTP version and its credential.
    requests: Arc<Mutex<Vec<(String, http::Version, String)>>>,
}

/// An HTTP/2 client's SETTINGS (id, value) and its first connection WINDOW_UPDATE increment.
type H2Start = (Vec<(u16, u32)>, Option<u32>);

/// The recorder refuses this credential with 401 (a stale token).
const STALE: &str = "Bearer tok1";

impl Recorder {
    async fn start(ca: &TestCa) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = Arc::new(ca.acceptor());
        let h2_settings = Arc::new(Mutex::new(Vec::new()));
        let (seen, served, settings) = (hellos.clone(), requests.clone(), h2_settings.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (seen, acceptor, served) = (seen.clone(), acceptor.clone(), served.clone());
                let settings = settings.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while ccproxy::tls_hello::client_hello(&buf).is_err() && buf.len() < 65536 {
                        match tcp.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    seen.lock().unwrap().push(buf.clone());
                    let ja4 =
                        ccproxy::fingerprint::ja4(&ccproxy::tls_hello::client_hello(&buf).unwrap());
                    let replayed = Replayed {
                        head: buf,
                        inner: tcp,
                    };
                    let Ok(mut tls) = tokio_boring::accept(&acceptor, replayed).await else {
                        return;
                    };
                    // HTTP/2: keep the client's first frames (preface, SETTINGS, WINDOW_UPDATE).
                    let mut head = Vec::new();
                    if tls.ssl().selected_alpn_protocol() == Some(b"h2") {
                        let mut chunk = [0u8; 4096];
                        while h2_frames(&head).is_none() && head.len() < 4096 {
                            match tls.read(&mut chunk).await {
                                Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
                                _ => return,
                            }
                        }
                        if let Some(frames) = h2_frames(&head) {
                            settings.lock().unwrap().push(frames);
                        }
                    }
                    let tls = Replayed { head, inner: tls };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let status = if auth == STALE { 401 } else { 200 };
                            served
                                .lock()
                                .unwrap()
                                .push((ja4.clone(), req.version(), auth));
                            async move {
                                // Read the whole request before answering, as real APIs do (an
                                // HTTP/2 answer before the body makes the server reset the
                                // stream under the client's body write).
                                use http_body_util::BodyExt;
                                let _ = req.into_body().collect().await;
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                            br#"{"ok":true}"#,
                                        )))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Recorder {
            port,
            hellos,
            requests,
            h2_settings,
        }
    }

    /// JA4 of each hello received so far.
    fn ja4s(&self) -> Vec<String> {
        self.hellos
            .lock()
            .unwrap()
            .iter()
            .map(|b| ccproxy::fingerprint::ja4(&ccproxy::tls_hello::client_hello(b).unwrap()))
            .collect()
    }
}

/// The client's SETTINGS and first connection-level WINDOW_UPDATE, once the preface and both
/// frames are in `b` (a client that sends no WINDOW_UPDATE has `None` there once a later frame
/// shows it).
fn h2_frames(b: &[u8]) -> Option<H2Start> {
    let rest = b.strip_prefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")?;
    let mut at = 0;
    let mut settings = None;
    while let Some(h) = rest.get(at..at + 9) {
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let payload = rest.get(at + 9..at + 9 + len)?;
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        match h[3] {
            4 if settings.is_none() => {
                settings = Some(
                    payload
                        .chunks_exact(6)
                        .map(|c| {
                            (
                                u16::from_be_bytes([c[0], c[1]]),
                                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                            )
                        })
                        .collect(),
                );
            }
            8 if stream == 0 => {
                let inc = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) & 0x7fff_ffff;
                return Some((settings?, Some(inc)));
            }
            _ if settings.is_some() => return Some((settings?, None)),
            _ => {}
        }
        at += 9 + len;
    }
    None
}

/// A stream that first gives back bytes already read from it.
struct Replayed<S> {
    head: Vec<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A Messages request to `provider` through the gateway, which must end 200.
async fn ask(gw: &Gateway, provider: &str) {
    let r = sentinel_post(gw, "/v1/messages", provider)
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{provider}: {}", r.text().await.unwrap());
}

/// `ccproxy fingerprint` output as (key, value) lines.
async fn fingerprint(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("fingerprint").args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chrome_profile_has_chromiums_ja4_and_the_command_reports_what_it_sent() {
    let ca = TestCa::new();
    let rec = Recorder::start(&ca).await;
    let url = format!("https://localhost:{}/", rec.port);

    let (ok, chrome) = fingerprint(&["--profile", "chrome", "--insecure", &url]).await;
    assert!(ok, "{chrome}");
    let (ok, plain) = fingerprint(&["--insecure", &url]).await;
    assert!(ok, "{plain}");
    // What the command computed from the bytes it wrote is what the listener received.
    let seen = rec.ja4s();
    assert_eq!(seen.len(), 2);
    assert_eq!(field(&chrome, "JA4"), seen[0]);
    assert_eq!(field(&plain, "JA4"), seen[1]);
    assert_ne!(seen[0], seen[1], "the default stack looks different");
    assert!(seen[0].starts_with("t13d1517h2_8daaf6152771_"), "{chrome}");
    assert_eq!(field(&chrome, "status"), "200");
    assert!(field(&chrome, "TLS").ends_with("ALPN h2"), "{chrome}");
    assert_eq!(field(&chrome, "profile"), "chrome156");

    // An unknown profile is refused with the list.
    let (ok, err) = fingerprint(&["--profile", "firefox133", &url]).await;
    assert!(!ok && err.contains("valid: chrome156"), "{err}");

    // The browser itself, against the same listener.
    if Command::new("chromium").arg("--version").output().is_err() {
        println!("skipped the Chromium comparison: chromium is not installed");
        return;
    }
    let profile_dir = tempfile::tempdir().unwrap();
    let port = rec.port;
    let dir = profile_dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "-s",
                "KILL",
                "60",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
            ])
            .args([
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
            ])
            .args([
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg("--host-resolver-rules=MAP api.example.test 127.0.0.1")
            .args(["--dump-dom", &format!("https://api.example.test:{port}/")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let seen = rec.ja4s();
    let browser: Vec<&String> = seen.iter().skip(2).collect();
    assert!(!browser.is_empty(), "Chromium sent no ClientHello");
    for ja4 in browser {
        assert_eq!(ja4, &seen[0], "Chromium vs the chrome profile");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_a_profile_connects_as_chrome_over_h2_pooled_apart() {
    let ca = TestCa::new();
    let rec = Recorder::start(&ca).await;
    // Two providers on the same host: one with the profile, one without.
    let body = format!(
        "  ca_file: {}\n  providers:\n    chromey:\n      host: localhost:{port}\n      provider: anthropic\n      fingerprint_profile: chrome131\n      auth: echo sk-a\n    plain:\n      host: localhost:{port}\n      provider: anthropic\n      auth: echo sk-b\n",
        ca.ca_file.display(),
        port = rec.port
    );
    let gw = Gateway::start(&body);
    for provider in ["chromey", "plain", "chromey", "plain"] {
        ask(&gw, provider).await;
    }
    let requests = rec.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    let chrome_ja4 = "t13d1517h2_8daaf6152771_cb7bf5808d99";
    // Alternating providers, each on its own pooled connection with its own hello.
    assert_eq!(requests[0].0, chrome_ja4);
    assert_eq!(requests[0].1, http::Version::HTTP_2);
    assert_eq!(requests[2], requests[0]);
    assert_ne!(
        requests[1].0, chrome_ja4,
        "the provider without a profile uses the default stack"
    );
    assert_eq!(requests[3].0, requests[1].0);
    // Chrome's HTTP/2 flow-control windows on the profiled connection (the other SETTINGS are
    // Pingora's, see the README): SETTINGS_INITIAL_WINDOW_SIZE (4) and the WINDOW_UPDATE.
    let h2 = rec.h2_settings.lock().unwrap().clone();
    assert!(
        h2.iter()
            .any(|(settings, update)| settings.contains(&(4, 6_291_456))
                && *update == Some(15_663_105)),
        "{h2:?}"
    );
    // Each provider's connection was pooled and reused (the profile's first use learns the
    // protocol with the handshake its first connection then uses), and never shared.
    let ja4s = rec.ja4s();
    assert_eq!(
        ja4s.iter().filter(|j| *j == chrome_ja4).count(),
        1,
        "{ja4s:?}"
    );
    assert_eq!(
        ja4s.iter().filter(|j| *j != chrome_ja4).count(),
        1,
        "{ja4s:?}"
    );
}

#[test]
fn an_unknown_profile_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        "ccproxy:\n  providers:\n    a:\n      host: example.com\n      provider: anthropic\n      fingerprint_profile: safari17_0\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers.a.fingerprint_profile") && err.contains("valid: chrome156"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_replay_goes_out_with_the_providers_own_profile_or_none() {
    let ca = TestCa::new();
    let rec = Recorder::start(&ca).await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let body = format!(
        "  ca_file: {}\n  providers:\n    chromey:\n      host: localhost:{port}\n      provider: anthropic\n      fingerprint_profile: chrome156\n      auth:\n        command: '{c1}'\n        cache_seconds: 0\n    plain:\n      host: localhost:{port}\n      provider: anthropic\n      auth:\n        command: '{c2}'\n        cache_seconds: 0\n",
        ca.ca_file.display(),
        port = rec.port,
        c1 = first_tok1_then_tok2(d1.path()),
        c2 = first_tok1_then_tok2(d2.path()),
    );
    let gw = Gateway::start(&body);
    // Each first answer is 401 (tok1): the gateway replays with tok2.
    for provider in ["chromey", "plain"] {
        ask(&gw, provider).await;
    }
    let chrome_ja4 = "t13d1517h2_8daaf6152771_cb7bf5808d99";
    let requests = rec.requests.lock().unwrap().clone();
    let auths: Vec<&str> = requests.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        auths,
        ["Bearer tok1", "Bearer tok2", "Bearer tok1", "Bearer tok2"]
    );
    // The replay used the profile of its own provider: Chrome for one, never for the other.
    assert!(
        requests[..2].iter().all(|r| r.0 == chrome_ja4),
        "{requests:?}"
    );
    assert!(
        requests[2..].iter().all(|r| r.0 != chrome_ja4),
        "{requests:?}"
    );
}
