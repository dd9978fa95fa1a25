//! Request and response bodies: whole-body buffering before routing (> 64 KiB, 5 MB),
//! keep-alive after a buffered request, HTTP/2 (h2c) clients, the size limit, and SSE streaming.

use crate::support::mock::{Gate, MockUpstream, Reply};
use crate::support::{
    client, json, provider, providers, raw, sentinel_bearer, sentinel_post, Gateway,
};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

fn one_provider(mock: &MockUpstream) -> String {
    providers(&[provider("a", "anthropic", mock, "      auth: echo tok\n")])
}

#[tokio::test(flavor = "multi_thread")]
async fn five_megabyte_body_arrives_intact() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&one_provider(&mock));
    let blob: String = (0..5 * 1024 * 1024 / 16)
        .map(|i| format!("{:015x},", i))
        .collect();
    let body = format!(r#"{{"model":"m","data":"{blob}"}}"#);
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = &mock.requests()[0];
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body.as_bytes(), "5 MB body changed in transit");
    assert_eq!(
        got.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_buffered_requests_share_one_keepalive_connection() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&one_provider(&mock));
    let mut conn = raw::Conn::open(&gw.addr()).await;
    let head = "POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: sk-ant-oat-ccproxy-a\r\ncontent-type: application/json";
    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "y".repeat(100 * 1024));
    let first = conn.exchange(head, big.as_bytes()).await;
    assert_eq!(first.status, 200);
    let second = conn.exchange(head, br#"{"model":"m2"}"#).await;
    assert_eq!(second.status, 200);
    let third = conn.exchange("GET /health HTTP/1.1\r\nhost: gw", b"").await;
    assert_eq!(third.status, 200);
    assert_eq!(third.body, b"ccproxy says hey!");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body.len(), big.len());
    assert_eq!(&reqs[1].body[..], br#"{"model":"m2"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_client_with_large_body_is_routed_and_answered() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&one_provider(&mock));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let body = format!(r#"{{"model":"m","pad":"{}"}}"#, "z".repeat(300 * 1024));
    for _ in 0..2 {
        let r = h2
            .post(gw.url("/v1/messages"))
            .header("x-api-key", "sk-ant-oat-ccproxy-a")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let v = json(r).await;
        assert_eq!(v["body_len"], body.len());
    }
    assert!(mock.requests().iter().all(|r| r.body == body.as_bytes()));
    let r = h2.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ccproxy says hey!");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_limit_gets_413_in_client_format() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&format!(
        "  max_request_body_bytes: 1000\n{}",
        one_provider(&mock)
    ));
    // Declared length over the limit.
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .body("x".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v = json(r).await;
    assert_eq!(v["error"]["type"], "request_too_large");
    assert!(v["error"]["message"].as_str().unwrap().contains("1000"));
    // Chunked body that grows past the limit.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from("y".repeat(400)))),
    );
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "a")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(json(r).await["error"]["code"], 413);
    // Exactly at the limit passes.
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .body("x".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodyless_and_empty_body_requests_pass_through() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&one_provider(&mock));
    let r = client()
        .get(gw.url("/v1/messages/batches"))
        .header("x-api-key", "sk-ant-oat-ccproxy-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reqs = mock.requests();
    assert_eq!(reqs[0].method, "GET");
    assert!(reqs[0].body.is_empty());
    assert!(reqs[1].body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_reaches_the_client_event_by_event() {
    let gate = Gate::new();
    let events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n".to_owned(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n".to_owned(),
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
    ];
    let mock = MockUpstream::start(Reply::Sse {
        events: events.clone(),
        gate: Some(gate.clone()),
    })
    .await;
    let gw = Gateway::start(&one_provider(&mock));
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .json(&json!({"model": "m", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = r.bytes_stream();
    // The upstream holds the stream open after the first event: it must arrive anyway.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first SSE event was buffered by the gateway")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], events[0].as_bytes());
    assert!(!gate.is_open());
    gate.open();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(rest).unwrap(), events[1..].concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_by_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&one_provider(&mock));
    let body = format!(r#"{{"model":"m","pad":"{}"}}"#, "e".repeat(4000));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: sk-ant-oat-ccproxy-a\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The client sends nothing more until it sees 100 Continue (bounded wait, not a sleep).
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no 100 Continue from the gateway")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let mut chunk = vec![0u8; 8192];
    while !String::from_utf8_lossy(&rest).contains("\"body_len\"") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed early");
        rest.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"));
    let got = &mock.requests()[0];
    assert_eq!(got.body.len(), body.len());
    assert!(!got.has_header("expect"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_over_an_h2_tls_upstream_streams_event_by_event() {
    let ca = crate::support::tls::TestCa::new();
    let gate = Gate::new();
    let events = vec![
        "data: {\"n\":1}\n\n".to_owned(),
        "data: {\"n\":2}\n\n".to_owned(),
    ];
    let mock = MockUpstream::start_tls(
        Reply::Sse {
            events: events.clone(),
            gate: Some(gate.clone()),
        },
        &ca,
    )
    .await;
    let gw = Gateway::start(&providers(&[format!(
        "    a:\n      host: localhost:{}\n      provider: anthropic\n      auth: echo t\n      ca_file: {}\n",
        mock.port(),
        ca.ca_file.display()
    )]));
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-oat-ccproxy-a")
        .json(&json!({"model": "m", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first event held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], events[0].as_bytes());
    gate.open();
    let mut rest = Vec::new();
    while let Some(c) = stream.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert_eq!(String::from_utf8(rest).unwrap(), events[1]);
    // ALPN chose HTTP/2 towards the upstream.
    assert_eq!(mock.requests()[0].version, http::Version::HTTP_2);
}

/// An upstream (with `ca`: TLS, h2 or HTTP/1.1 by ALPN, h2 preferred; else plain HTTP/1.1) that
/// answers `401` with a JSON error at
/// once, without reading the request body, unless the request carries `Bearer {accept}`: what an
/// API does with a large request and an expired token. Over h2, hyper then resets the stream
/// with `NO_ERROR` (RFC 9113 §8.1: stop sending, the answer is complete). An accepted request
/// has its body read and gets `200 {"body_len": n}`. Returns its port and the bodies it read
/// (`None` for the requests it refused unread).
async fn early_refusing_upstream(
    ca: Option<&crate::support::tls::TestCa>,
    accept: &'static str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Option<usize>>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = ca.map(|ca| std::sync::Arc::new(ca.acceptor()));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let good = format!("Bearer {accept}");
                            let (status, body) = if req
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v == good.as_str())
                            {
                                let n = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map_or(0, |b| b.to_bytes().len());
                                log.lock().unwrap().push(Some(n));
                                (200, format!(r#"{{"body_len":{n}}}"#))
                            } else {
                                log.lock().unwrap().push(None);
                                (401, r#"{"type":"error","error":{"type":"authentication_error","message":"token expired"}}"#.to_owned())
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = tokio_boring::accept(&acceptor, tcp).await else {
                            return;
                        };
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let _ = builder.serve_connection(io, service).await;
                    }
                    None => {
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = builder.serve_connection(io, service).await;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A request body well past h2's initial 64 KiB flow-control window, so it cannot all be sent
/// before an early answer arrives.
fn two_megabyte_request() -> serde_json::Value {
    let big = "x".repeat(2 * 1024 * 1024);
    json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": big}]})
}

/// A 2 MB request through `gw` to an [`early_refusing_upstream`] that refuses it: the client
/// gets the upstream's own `401`, and the upstream never read the body.
async fn refused_unread_reaches_the_client(
    gw: &Gateway,
    seen: &std::sync::Mutex<Vec<Option<usize>>>,
) {
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-oat-ccproxy-a")
        .json(&two_megabyte_request())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token expired"), "{body}");
    assert_eq!(*seen.lock().unwrap(), vec![None]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_answer_before_the_body_is_read_reaches_the_client_over_h2() {
    // It used to be a 502 "H2Error: cannot reserve capacity": Pingora gave up on the failed
    // body write before reading the answer.
    let ca = crate::support::tls::TestCa::new();
    let (port, seen) = early_refusing_upstream(Some(&ca), "never").await;
    let gw = Gateway::start(&providers(&[format!(
        "    a:\n      host: localhost:{port}\n      provider: anthropic\n      auth: echo t\n      ca_file: {}\n",
        ca.ca_file.display()
    )]));
    refused_unread_reaches_the_client(&gw, &seen).await;
}

/// A 2 MB request from `client` to an h2 upstream that refuses `tok1` unread and accepts `tok2`
/// (a credential command that changes once): the client sees only the replay's answer, and
/// the replay carried every byte.
async fn early_401_is_replayed_whole(client: reqwest::Client) {
    let ca = crate::support::tls::TestCa::new();
    let (port, seen) = early_refusing_upstream(Some(&ca), "tok2").await;
    let dir = tempfile::tempdir().unwrap();
    let cmd = crate::support::first_tok1_then_tok2(dir.path());
    let gw = Gateway::start(&providers(&[format!(
        "    a:\n      host: localhost:{port}\n      provider: anthropic\n      auth:\n        command: '{cmd}'\n      ca_file: {}\n",
        ca.ca_file.display()
    )]));
    let request = two_megabyte_request();
    let sent = serde_json::to_vec(&request).unwrap().len();
    let r = client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-oat-ccproxy-a")
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(*seen.lock().unwrap(), vec![None, Some(sent)]);
    assert_eq!(body["body_len"], sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_401_over_h2_is_replayed_with_the_new_credential_and_the_whole_body() {
    early_401_is_replayed_whole(client()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2c_client_gets_the_replay_with_the_whole_body_too() {
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    early_401_is_replayed_whole(h2c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_answer_over_http1_reaches_the_client_too() {
    let (port, seen) = early_refusing_upstream(None, "never").await;
    let gw = Gateway::start(&providers(&[format!(
        "    a:\n      host: 127.0.0.1:{port}\n      scheme: http\n      provider: anthropic\n      auth: echo t\n"
    )]));
    refused_unread_reaches_the_client(&gw, &seen).await;
}
