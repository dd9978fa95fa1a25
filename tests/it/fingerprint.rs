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
}

impl Recorder {
    async fn start(ca: &TestCa) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let acceptor = Arc::new(ca.acceptor());
        let seen = hellos.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (seen, acceptor) = (seen.clone(), acceptor.clone());
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
                    let replayed = Replayed {
                        head: buf,
                        inner: tcp,
                    };
                    let Ok(tls) = tokio_boring::accept(&acceptor, replayed).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Recorder { port, hellos }
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
