//! Hostile and broken clients, over raw sockets: framing errors never leave a connection that
//! serves another request (no request desync), errors after `100 Continue` still reach the
//! client, malformed / truncated / slow bodies are the client's fault (400 / 408, JSON in its
//! format), an oversized upload reads its 413 instead of a reset, the body budget answers 503,
//! short or silent h2c-listener connections are answered or closed, `CONNECT` is refused, and a
//! failing credential never shows the client the command's output.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::{provider, providers, raw, sample, Gateway};
use std::time::Duration;

fn one_provider(mock: &MockUpstream) -> String {
    providers(&[provider("a", "anthropic", mock, "      auth: echo tok\n")])
}

const SENTINEL_HEAD: &str =
    "POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: sk-ant-oat-ccproxy-a\r\ncontent-type: application/json";

#[tokio::test(flavor = "multi_thread")]
async fn malformed_chunked_body_closes_the_connection_and_the_next_request_is_never_forwarded() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&one_provider(&mock));
    let mut c = raw::Conn::open(&gw.addr()).await;
    // A bad chunk size, then a complete second request smuggled behind it.
    let smuggled = format!("{SENTINEL_HEAD}\r\ncontent-length: 2\r\n\r\n{{}}");
    c.send(
        format!(
            "{SENTINEL_HEAD}\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\nzz\r\n\r\n{smuggled}"
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("x-ccproxy-request-id").is_some());
    let v = r.json();
    assert_eq!(v["type"], "error", "Anthropic shape: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed"),
        "{v}"
    );
    assert!(
        c.closed().await,
        "connection must be closed after a framing error"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "the smuggled request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_after_100_continue_reach_the_client() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  max_request_body_bytes: 1000\n{}",
        one_provider(&mock)
    ));
    // No route: the 100 goes out, the body is read, then the 501 must follow it.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        .await;
    let interim = c.read_response().await;
    assert_eq!(interim.status, 100);
    c.send(b"{}").await;
    let r = c.read_response().await;
    assert_eq!(r.status, 501);
    assert_eq!(r.json()["error"]["code"], 501);

    // A chunked body that grows past the limit after the 100.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(
        format!("{SENTINEL_HEAD}\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(c.read_response().await.status, 100);
    c.send_lossy(
        format!(
            "800\r\n{}\r\n800\r\n{}\r\n0\r\n\r\n",
            "x".repeat(0x800),
            "y".repeat(0x800)
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "request_too_large");

    // An unknown provider after the 100.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: sk-ant-oat-ccproxy-ghost\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        .await;
    assert_eq!(c.read_response().await.status, 100);
    c.send(b"{}").await;
    assert_eq!(c.read_response().await.status, 501);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_body_is_400_and_a_silent_one_408_not_500() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  timeouts:\n    shutdown_seconds: 0\n    client_read_seconds: 0.5\n{}",
        one_provider(&mock)
    ));
    // The client declares 100 bytes, sends 10 and closes its sending half.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(format!("{SENTINEL_HEAD}\r\ncontent-length: 100\r\n\r\n{{\"model\":1").as_bytes())
        .await;
    c.shutdown_write().await;
    let r = c.read_response().await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ended early"));

    // The client declares 100 bytes, sends 10 and goes quiet.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(format!("{SENTINEL_HEAD}\r\ncontent-length: 100\r\n\r\n{{\"model\":1").as_bytes())
        .await;
    let r = c.read_response().await;
    assert_eq!(r.status, 408);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert!(c.closed().await);

    // An OpenAI client gets the OpenAI shape.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-ant-oat-ccproxy-a\r\ntransfer-encoding: chunked\r\n\r\n4\r\nab")
        .await;
    c.shutdown_write().await;
    let r = c.read_response().await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], 400);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_upload_reads_its_413_instead_of_a_reset() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  max_request_body_bytes: 100000\n{}",
        one_provider(&mock)
    ));
    for framing in ["content-length: 8000000", "transfer-encoding: chunked"] {
        let mut c = raw::Conn::open(&gw.addr()).await;
        c.send(format!("{SENTINEL_HEAD}\r\n{framing}\r\n\r\n").as_bytes())
            .await;
        let chunked = framing.starts_with("transfer");
        // Upload 8 MB as a client would (it does not read until it has sent everything), then
        // read the answer: it must be the 413, not a connection reset.
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..(8_000_000 / piece.len()) {
            let ok = if chunked {
                c.send_lossy(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    && c.send_lossy(&piece).await
                    && c.send_lossy(b"\r\n").await
            } else {
                c.send_lossy(&piece).await
            };
            assert!(
                ok,
                "{framing}: the gateway reset the upload instead of draining it"
            );
        }
        let r = c.read_response().await;
        assert_eq!(r.status, 413, "{framing}");
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.json()["error"]["type"], "request_too_large");
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_body_budget_answers_503_and_recovers() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  max_request_body_bytes: 100000\n  max_buffered_body_bytes: 150000\n{}",
        one_provider(&mock)
    ));
    // One upload holds 100 kB of the budget while it trickles in.
    let mut slow = raw::Conn::open(&gw.addr()).await;
    slow.send(
        format!("{SENTINEL_HEAD}\r\ncontent-length: 100000\r\n\r\n{{\"model\":\"m\",\"p\":\"")
            .as_bytes(),
    )
    .await;
    let metrics = gw.metrics_url.clone();
    let held = async {
        loop {
            let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
            if sample(&text, "ccproxy_buffered_body_bytes") == Some(100000.0) {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the first body never held the budget");
    // A second 60 kB body does not fit: 503 with retry-after, nothing forwarded.
    let mut c = raw::Conn::open(&gw.addr()).await;
    let body = format!("{{\"model\":\"m\",\"p\":\"{}\"}}", "q".repeat(60000));
    let r = c.exchange(SENTINEL_HEAD, body.as_bytes()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    let text = gw.metrics().await;
    assert_eq!(
        sample(&text, "ccproxy_body_budget_rejections_total"),
        Some(1.0)
    );
    // The first upload completes and is forwarded; its share is released.
    let rest = 100000 - "{\"model\":\"m\",\"p\":\"".len() - 2;
    slow.send(format!("{}\"}}", "p".repeat(rest)).as_bytes())
        .await;
    assert_eq!(slow.read_response().await.status, 200);
    // The rejected connection is closed (its body was never read); a new one gets through.
    assert!(c.closed().await);
    let mut c = raw::Conn::open(&gw.addr()).await;
    assert_eq!(c.exchange(SENTINEL_HEAD, body.as_bytes()).await.status, 200);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_is_released_after_a_request() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  max_request_body_bytes: 100000\n  max_buffered_body_bytes: 100000\n{}",
        one_provider(&mock)
    ));
    let body = format!("{{\"model\":\"m\",\"p\":\"{}\"}}", "q".repeat(90000));
    let mut c = raw::Conn::open(&gw.addr()).await;
    for _ in 0..3 {
        assert_eq!(c.exchange(SENTINEL_HEAD, body.as_bytes()).await.status, 200);
    }
    assert_eq!(
        sample(&gw.metrics().await, "ccproxy_buffered_body_bytes"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn short_http1_requests_are_answered_and_silent_connections_closed() {
    let gw = Gateway::start("  timeouts:\n    shutdown_seconds: 0\n    client_read_seconds: 0.5\n");
    // 18 bytes: shorter than the HTTP/2 preface the h2c listener could be waiting for.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ccproxy says hey!");
    // The start of the preface, then nothing: closed after client_read_seconds.
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"PRI *").await;
    assert!(c.closed().await);
    // Nothing at all.
    let mut c = raw::Conn::open(&gw.addr()).await;
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_is_refused_with_json() {
    let gw = Gateway::start("");
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nhost: api.anthropic.com:443\r\n\r\n")
        .await;
    let r = c.read_response().await;
    assert_eq!(r.status, 405);
    assert!(r.header("x-ccproxy-request-id").is_some());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CONNECT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unparsable_request_head_gets_pingoras_400_and_a_closed_connection() {
    // Pingora answers these before ccproxy's code runs (README: "Answered by Pingora").
    let gw = Gateway::start("");
    let mut c = raw::Conn::open(&gw.addr()).await;
    c.send(b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab")
        .await;
    let r = c.read_response().await;
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_credential_failure_tells_the_client_only_the_summary() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "{}  inspector:\n    transforms:\n      - match_path: \"^/v1/messages\"\n        dest_provider: bad\n",
        providers(&[provider(
            "bad",
            "anthropic",
            &mock,
            "      auth: \"echo '/home/me/.secret-path leaked' >&2; exit 4\"\n",
        )])
    ));
    let mut c = raw::Conn::open(&gw.addr()).await;
    let r = c
        .exchange(
            "POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: sk-client",
            b"{\"model\":\"m\"}",
        )
        .await;
    assert_eq!(r.status, 502);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("provider 'bad'") && msg.contains("exit status: 4"),
        "{msg}"
    );
    assert!(
        !msg.contains("secret-path"),
        "log detail leaked to the client: {msg}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2c_connection_is_closed_after_the_client_read_timeout() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  timeouts:\n    shutdown_seconds: 0\n    client_read_seconds: 0.5\n{}",
        one_provider(&mock)
    ));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{}/v1/messages", gw.addr()))
        .header("x-api-key", "sk-ant-oat-ccproxy-a")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"m","max_tokens":1,"messages":[]}"#,
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    // Nothing more is sent: the gateway ends the connection (it used to stay open for good).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "the idle h2c connection is still open");
}
