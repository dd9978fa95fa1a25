//! The explicit proxy listener (`inspector.proxy_listen`): a real client (`curl` with
//! `--proxy`) sends `CONNECT`, the gateway decrypts with a leaf from its local CA and sends the
//! request on to the host it named (verified against its trust roots), or to a provider when
//! the request carries a sentinel key.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::tls::TestCa;
use crate::support::{gateway_port, provider, Gateway};
use serde_json::Value;
use std::process::Command;

fn curl() -> Option<&'static str> {
    Command::new("curl")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "curl")
}

/// `curl --proxy` to `url` trusting the gateway's CA at `ca` (run off the async runtime).
async fn through_proxy(
    ca: std::path::PathBuf,
    proxy_port: u16,
    url: String,
    key: &'static str,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || curl_once(&ca, proxy_port, &url, key))
        .await
        .unwrap()
}

/// `curl <http_flag> --proxy` POSTing `{}` with the client's own key to `url`, trusting the
/// gateway's CA at `ca`, with curl's own key log at `keylog`; prints "<HTTP version> <status>".
async fn version_and_status(
    proxy_port: u16,
    ca: std::path::PathBuf,
    url: String,
    http_flag: &'static str,
    keylog: Option<std::path::PathBuf>,
) -> String {
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", http_flag, "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_version} %{http_code}", "--proxy"])
            .arg(format!("http://127.0.0.1:{proxy_port}"))
            .arg("--cacert")
            .arg(ca)
            .args(["-H", "x-api-key: sk-own", "-d", "{}"])
            .arg(url);
        if let Some(path) = keylog {
            cmd.env("SSLKEYLOGFILE", path);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `ccproxy start` process trusting `ca` upstream, with its proxy listener and
/// `inspector_extra` lines, logging to `log_file` in its config dir when given: the dir, the
/// process and the proxy listener's port.
fn gateway_process(
    ca: &TestCa,
    inspector_extra: &str,
    log_file: Option<&str>,
) -> (tempfile::TempDir, std::process::Child, u16) {
    let dir = tempfile::tempdir().unwrap();
    let (port, pport) = (gateway_port(), gateway_port());
    let yaml = crate::support::config_yaml(
        port,
        gateway_port(),
        &format!(
            "  ca_file: {}\n  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n{inspector_extra}",
            ca.ca_file.display()
        ),
    );
    let yaml = match log_file {
        Some(f) => yaml.replace("log_file: null", &format!("log_file: {f}")),
        None => yaml,
    };
    std::fs::write(dir.path().join("ccproxy.yaml"), yaml).unwrap();
    let gw = crate::support::start_binary(dir.path(), pport, &[]);
    (dir, gw, pport)
}

fn curl_once(ca: &std::path::Path, proxy_port: u16, url: &str, key: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--proxy")
        .arg(format!("http://127.0.0.1:{proxy_port}"))
        .arg("--cacert")
        .arg(ca)
        .args(["-H", "content-type: application/json", "-H"])
        .arg(format!("x-api-key: {key}"))
        .args(["-d", r#"{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#])
        .arg(url)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_is_decrypted_and_sent_on_to_the_named_host_or_a_provider() {
    let Some(_) = curl() else {
        println!("skipped: curl is not installed");
        return;
    };
    let ca = TestCa::new();
    let original = MockUpstream::start_tls(Reply::Echo, &ca).await;
    let provider_mock = MockUpstream::start(Reply::Echo).await;
    let pport = gateway_port();
    let gw = Gateway::start(&format!(
        "  ca_file: {}\n  providers:\n{}  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n",
        ca.ca_file.display(),
        provider(
            "anthropic",
            "anthropic",
            &provider_mock,
            "      auth: echo sk-provider\n"
        )
    ));
    let url = format!("https://localhost:{}/v1/messages", original.port());

    // No sentinel: on to the host the client named, with the client's own key.
    let ca_pem = gw.path("ccproxy-ca.pem");
    let (status, body) = through_proxy(ca_pem.clone(), pport, url.clone(), "sk-client-own").await;
    assert_eq!(status, 200, "{body}");
    let seen = &original.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-client-own"));
    assert_eq!(seen.json()["model"], "claude-sonnet-4-6");
    assert!(
        body["headers"].is_object(),
        "the echo came back through the tunnel: {body}"
    );

    // A sentinel key: routed to the provider with its credential, like the reverse listener.
    let (status, _) = through_proxy(ca_pem, pport, url, "sk-ant-oat-ccproxy-anthropic").await;
    assert_eq!(status, 200);
    let routed = &provider_mock.requests()[0];
    assert_eq!(routed.header("authorization"), Some("Bearer sk-provider"));
    assert_eq!(
        original.request_count(),
        1,
        "the named host saw only the first request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_through_the_proxy_goes_to_the_named_host() {
    let Some(_) = curl() else {
        println!("skipped: curl is not installed");
        return;
    };
    let original = MockUpstream::start(Reply::Echo).await;
    let pport = gateway_port();
    let gw = Gateway::start(&format!(
        "  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n"
    ));
    let url = format!("http://127.0.0.1:{}/v1/messages?beta=true", original.port());
    let (status, body) =
        through_proxy(gw.path("ccproxy-ca.pem"), pport, url, "sk-client-own").await;
    assert_eq!(status, 200, "{body}");
    let seen = &original.requests()[0];
    assert_eq!(seen.path, "/v1/messages?beta=true");
    assert_eq!(
        seen.authority, None,
        "the origin gets an origin-form target, not the proxy form the client sent"
    );
    assert_eq!(seen.header("x-api-key"), Some("sk-client-own"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_hosts_are_relayed_without_decryption() {
    let Some(_) = curl() else {
        println!("skipped: curl is not installed");
        return;
    };
    let ca = TestCa::new();
    let original = MockUpstream::start_tls(Reply::Echo, &ca).await;
    let pport = gateway_port();
    let gw = Gateway::start(&format!(
        "  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n    ignore_hosts: ['^localhost$']\n"
    ));
    let url = format!("https://localhost:{}/v1/messages", original.port());
    // The client sees the upstream's own certificate (it trusts only the test CA, not the
    // gateway's): the tunnel was not decrypted.
    let (status, _) = through_proxy(ca.ca_file.clone(), pport, url.clone(), "sk-client-own").await;
    assert_eq!(status, 200);
    assert_eq!(original.request_count(), 1);
    // The gateway's CA alone does not verify it.
    let gw_ca = gw.path("ccproxy-ca.pem");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--proxy"])
            .arg(format!("http://127.0.0.1:{pport}"))
            .arg("--cacert")
            .arg(gw_ca)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "verified with the gateway CA: the tunnel was decrypted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_http_version_is_kept_upstream_and_non_tls_tunnels_are_relayed() {
    let Some(_) = curl() else {
        println!("skipped: curl is not installed");
        return;
    };
    let ca = TestCa::new();
    let original = MockUpstream::start_tls(Reply::Echo, &ca).await;
    let pport = gateway_port();
    let gw = Gateway::start(&format!(
        "  ca_file: {}\n  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n",
        ca.ca_file.display()
    ));
    // HTTP/2 between the client and the gateway (ALPN on the intercepting leaf), and the
    // client's HTTP version kept on the way to the original host, which offers both: an
    // HTTP/1.1 client is not turned into an HTTP/2 one.
    let gw_ca = gw.path("ccproxy-ca.pem");
    let url = format!("https://localhost:{}/v1/messages", original.port());
    for (flag, seen) in [("--http2", "2 200"), ("--http1.1", "1.1 200")] {
        let answer = version_and_status(pport, gw_ca.clone(), url.clone(), flag, None).await;
        assert_eq!(answer, seen);
    }
    let upstream = original.requests();
    assert_eq!(upstream[0].header("x-api-key"), Some("sk-own"));
    assert_eq!(upstream[0].version, http::Version::HTTP_2);
    assert_eq!(upstream[1].version, http::Version::HTTP_11);

    // Something that is not TLS inside a tunnel (here an SSH-like banner exchange) is relayed
    // byte for byte, not treated as a failed handshake.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(b"echo:").await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", pport))
        .await
        .unwrap();
    c.write_all(format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 39];
    c.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    c.write_all(b"SSH-2.0-test\r\n").await.unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"echo:SSH-2.0-test\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_log_has_both_legs_of_an_intercepted_request() {
    // `ccproxy start` as a process: Pingora's upstream connector finds the key log through the
    // environment, which only `start` sets (before its first thread).
    let Some(_) = curl() else {
        println!("skipped: curl is not installed");
        return;
    };
    let ca = TestCa::new();
    let original = MockUpstream::start_tls(Reply::Echo, &ca).await;
    let (dir, mut gw, pport) = gateway_process(&ca, "    keylog: true\n", None);
    // curl logs its own (client-side) secrets too: what is left in the gateway's log beside
    // curl's session is the upstream leg.
    let curl_log = dir.path().join("curl.keylog");
    let (ca_pem, url) = (
        dir.path().join("ccproxy-ca.pem"),
        format!("https://localhost:{}/v1/messages", original.port()),
    );
    let answer = version_and_status(pport, ca_pem, url, "--http1.1", Some(curl_log.clone())).await;
    let _ = gw.kill();
    let _ = gw.wait();
    assert_eq!(answer, "1.1 200");

    let sessions = |text: &str| -> std::collections::HashSet<String> {
        text.lines()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
            .collect()
    };
    let keylog = dir.path().join("tls.keylog");
    let text = std::fs::read_to_string(&keylog).unwrap();
    assert!(
        text.lines()
            .all(|l| l.split(' ').count() == 3 && l.split(' ').all(|f| !f.is_empty())),
        "NSS key log lines: {text}"
    );
    let ours = sessions(&text);
    let client_side = sessions(&std::fs::read_to_string(&curl_log).unwrap_or_default());
    assert_eq!(ours.len(), 2, "{text}");
    if !client_side.is_empty() {
        // (curl built without key log support writes nothing.)
        assert_eq!(ours.intersection(&client_side).count(), 1, "{text}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keylog).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_not_a_proxy_request_gets_a_json_error_naming_it() {
    use crate::support::raw::Conn;
    let original = MockUpstream::start(Reply::Echo).await;
    let pport = gateway_port();
    let _gw = Gateway::start(&format!(
        "  timeouts:\n    client_read_seconds: 0.5\n  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n"
    ));
    let proxy = format!("127.0.0.1:{pport}");
    let refused = |status: u16, needle: &'static str| {
        let proxy = proxy.clone();
        move |bytes: Vec<u8>| {
            let proxy = proxy.clone();
            async move {
                let mut c = Conn::open(&proxy).await;
                c.send(&bytes).await;
                let r = c.read_response().await;
                let message = r.json()["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert_eq!(r.status, status, "{message}");
                assert!(message.contains(needle), "{needle:?} not in {message:?}");
                assert_eq!(r.json()["error"]["type"], "invalid_request_error");
                assert!(c.closed().await, "the connection is closed after the error");
            }
        }
    };

    // A CONNECT target without a usable port or host (it used to go to port 443).
    refused(400, "example.test:https")(b"CONNECT example.test:https HTTP/1.1\r\n\r\n".to_vec())
        .await;
    refused(400, "host:port")(b"CONNECT :443 HTTP/1.1\r\n\r\n".to_vec()).await;
    // TLS spoken to the HTTP listener (HTTPS_PROXY=https://…): the hint says what to change.
    refused(400, "http://")(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()).await;
    refused(400, "expected an HTTP proxy request")(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()).await;
    // A CONNECT head over 8 KiB.
    let mut big = b"CONNECT example.test:443 HTTP/1.1\r\nx-pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9 * 1024));
    refused(431, "over 8192 bytes")(big).await;
    // A head that stops coming: 408 after client_read_seconds.
    refused(408, "timed out")(b"CONNECT example.test:443 HTTP/1.1\r\n".to_vec()).await;
    // Nothing at all: closed without an answer.
    assert!(Conn::open(&proxy).await.closed().await);

    // A plain request through the proxy is not held to the CONNECT head limit: 12 KiB of
    // headers reach the named host.
    let pad = "b".repeat(12 * 1024);
    let mut c = Conn::open(&proxy).await;
    let r = c
        .exchange(
            &format!(
                "POST http://127.0.0.1:{port}/v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-pad: {pad}",
                port = original.port()
            ),
            b"{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(original.requests()[0].header("x-pad"), Some(pad.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_ca_gets_its_user_a_warning_saying_how() {
    let Some(_) = curl() else {
        println!("skipped: curl is not installed");
        return;
    };
    let ca = TestCa::new();
    let original = MockUpstream::start_tls(Reply::Echo, &ca).await;
    let (dir, mut gw, pport) = gateway_process(&ca, "", Some("gw.log"));
    let proxy = format!("http://127.0.0.1:{pport}");
    let url = format!("https://localhost:{}/v1/messages", original.port());
    // curl (OpenSSL) trusting only the mock's test CA, not ccproxy's, twice: it refuses the
    // certificate with an alert.
    for _ in 0..2 {
        let out = tokio::task::spawn_blocking({
            let (url, test_ca, proxy) = (url.clone(), ca.ca_file.clone(), proxy.clone());
            move || {
                Command::new("curl")
                    .args(["-sS", "--max-time", "20", "-o", "/dev/null", "--proxy"])
                    .arg(proxy)
                    .arg("--cacert")
                    .arg(test_ca)
                    .arg(url)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(60), "curl: certificate problem");
    }
    // Node (Claude Code's runtime) just closes the connection; to 127.0.0.1, a host of its own.
    let mock_port = original.port();
    let node = tokio::task::spawn_blocking(move || {
        let script = format!(
            "const net=require('net'),tls=require('tls');\
             const s=net.connect({pport},'127.0.0.1',()=>{{\
               s.write('CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n');\
               s.once('data',()=>{{const t=tls.connect({{socket:s}});\
                 t.on('error',e=>{{console.log(e.code);process.exit(0)}});\
                 t.on('secureConnect',()=>{{console.log('trusted');process.exit(0)}})}})}});",
            port = mock_port
        );
        Command::new("node").args(["-e", &script]).output().ok()
    })
    .await
    .unwrap();
    let node_ran = match node {
        Some(out) if out.status.success() => {
            let said = String::from_utf8_lossy(&out.stdout);
            assert_ne!(
                said.trim(),
                "trusted",
                "node must not trust ccproxy's CA here"
            );
            true
        }
        _ => {
            println!("node not run (not installed): only curl's refusal is checked");
            false
        }
    };
    // Stopped gracefully, the gateway has logged every handshake.
    crate::support::sigterm(&mut gw);
    let log = std::fs::read_to_string(dir.path().join("gw.log")).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not trust ccproxy's CA"))
        .collect();
    assert_eq!(
        warnings.len(),
        1 + usize::from(node_ran),
        "one warning per host: {log}"
    );
    assert!(warnings[0].contains("refused the certificate ccproxy made for localhost"));
    assert!(warnings[0].contains("ccproxy ca"));
    if node_ran {
        assert!(
            warnings[1]
                .contains("closed the connection on the certificate ccproxy made for 127.0.0.1"),
            "{}",
            warnings[1]
        );
    }
    assert_eq!(original.request_count(), 0);
}

/// The bytes of a real ClientHello for `localhost` (BoringSSL's client, stopped after its first
/// flight).
fn client_hello() -> Vec<u8> {
    use std::io::Read;
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let connector = boring::ssl::SslConnector::builder(boring::ssl::SslMethod::tls())
        .unwrap()
        .build();
    let pending = connector.configure().unwrap().connect("localhost", a);
    assert!(matches!(
        pending,
        Err(boring::ssl::HandshakeError::WouldBlock(_))
    ));
    b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut hello = vec![0u8; 16 * 1024];
    let n = b.read(&mut hello).unwrap();
    hello.truncate(n);
    assert_eq!(hello[0], 0x16, "a TLS handshake record");
    hello
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_in_the_tls_handshake_is_closed() {
    use crate::support::raw::Conn;
    let pport = gateway_port();
    let _gw = Gateway::start(&format!(
        "  timeouts:\n    client_read_seconds: 0.5\n  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n"
    ));
    // A ClientHello, then nothing: the gateway answers it and gives up on the rest after
    // client_read_seconds (it used to wait forever).
    let mut c = Conn::open(&format!("127.0.0.1:{pport}")).await;
    c.send(b"CONNECT localhost:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(c.read_response().await.status, 200);
    c.send(&client_hello()).await;
    let mut server_flight = vec![0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut c.0, &mut server_flight)
        .await
        .unwrap();
    assert_eq!(server_flight[0], 0x16, "the server's handshake flight");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut c.0, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "closed, not held open");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_routed_back_to_the_gateway_itself_is_refused_not_looped() {
    use crate::support::raw::Conn;
    // Through the proxy listener, naming the proxy listener itself: each pass used to open
    // another connection to itself until the process ran out of file descriptors.
    let pport = gateway_port();
    let gw = Gateway::start(&format!(
        "  inspector:\n    proxy_listen: 127.0.0.1:{pport}\n"
    ));
    let mut c = Conn::open(&format!("127.0.0.1:{pport}")).await;
    let r = c
        .exchange(
            &format!(
                "POST http://127.0.0.1:{pport}/v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{pport}"
            ),
            b"{}",
        )
        .await;
    assert_eq!(r.status, 400);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("own proxy listener"), "{message}");
    // The usual cause, a base URL pointed at the proxy listener (origin-form), gets the hint.
    let mut c = Conn::open(&format!("127.0.0.1:{pport}")).await;
    let r = c
        .exchange(
            &format!("POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{pport}"),
            b"{}",
        )
        .await;
    assert_eq!(r.status, 400);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(&gw.url("")), "{message}");
    // On to the reverse listener is a second pass, not a loop: routed there (no provider: 501).
    let reverse = gw.url("").trim_start_matches("http://").to_owned();
    let mut c = Conn::open(&format!("127.0.0.1:{pport}")).await;
    let r = c
        .exchange(
            &format!("POST http://{reverse}/v1/messages HTTP/1.1\r\nhost: {reverse}"),
            b"{}",
        )
        .await;
    assert_eq!(r.status, 501, "{}", String::from_utf8_lossy(&r.body));

    // The reverse listener, with a rule that sends requests to a provider that is the gateway.
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (gateway_port(), gateway_port());
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        crate::support::config_yaml(
            port,
            mport,
            &format!(
                "  providers:\n    itself:\n      host: 127.0.0.1:{port}\n      scheme: http\n      provider: anthropic\n      auth: echo k\n  inspector:\n    transforms:\n      - match_path: \"^/v1/messages\"\n        dest_provider: itself\n"
            ),
        ),
    )
    .unwrap();
    let mut child = crate::support::start_binary(dir.path(), port, &[]);
    let mut c = Conn::open(&format!("127.0.0.1:{port}")).await;
    let r = c
        .exchange("POST /v1/messages HTTP/1.1\r\nhost: gw", b"{}")
        .await;
    crate::support::sigterm(&mut child);
    assert_eq!(r.status, 508, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("own listener"));
}
