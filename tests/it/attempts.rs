//! The request model: every upstream attempt is rebuilt from the frozen client request (a
//! retry on a stale pooled connection resends a complete, correctly translated request with one
//! credential), and the flow-recording seam sees the bytes of every phase.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::{client, provider, providers, sample, sentinel_bearer, Gateway};
use bytes::Bytes;
use ccproxy::hooks::RequestMeta;
use ccproxy::proxy::flow::{FlowCapture, FlowRecorder, FlowSummary};
use ccproxy::proxy::ingress::Ingress;
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Every request a raw upstream read: head and body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An upstream that answers the first request on each connection (keeping it alive) and
/// closes the connection when a second request arrives on it, as a server does when its idle
/// timeout races a client's reuse. Returns its address and every request it read (head, body).
async fn closes_reused_connections() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(sock);
                for n in 0.. {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    log.lock().unwrap().push((head, body));
                    if n == 1 {
                        return; // close instead of answering the reused connection
                    }
                    let answer =
                        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                        "usage": {"input_tokens": 1, "output_tokens": 1}})
                        .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_pooled_connection_is_retried_with_a_rebuilt_attempt() {
    let (addr, seen) = closes_reused_connections().await;
    let gw = Gateway::start(&format!(
        "  providers:\n    a:\n      host: {addr}\n      scheme: http\n      provider: anthropic\n      auth: echo tok-a\n"
    ));
    let body = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10});
    for _ in 0..2 {
        let r = sentinel_bearer(&gw, "/v1/chat/completions", "a")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "the client must not see the stale connection"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
    }
    let seen = seen.lock().unwrap().clone();
    // First request; the second on the reused connection (dropped); the retry on a new one.
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (dropped, retried) = (&seen[1], &seen[2]);
    assert_eq!(
        dropped.1, retried.1,
        "the retry must send the same translated body"
    );
    let sent: serde_json::Value = serde_json::from_slice(&retried.1).unwrap();
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hello");
    for (head, body) in [dropped, retried] {
        let lower = head.to_ascii_lowercase();
        assert_eq!(
            lower.matches("authorization: bearer tok-a").count(),
            1,
            "{head}"
        );
        assert!(
            lower.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(lower.starts_with("post /v1/messages "), "{head}");
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "ccproxy_upstream_retries_total{provider=\"a\",reason=\"stale_connection\"}"
        ),
        Some(1.0)
    );
}

/// Everything a capture was told, as lines.
#[derive(Default)]
struct Tape(Arc<Mutex<Vec<String>>>);

struct TapeCapture {
    log: Arc<Mutex<Vec<String>>>,
    upstream_body: Vec<u8>,
    client_body: Vec<u8>,
}

impl TapeCapture {
    fn push(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

impl FlowRecorder for Tape {
    fn start(&self, request_id: &str, ingress: Ingress) -> Option<Box<dyn FlowCapture>> {
        self.0
            .lock()
            .unwrap()
            .push(format!("start {} {}", request_id.len(), ingress.as_str()));
        Some(Box::new(TapeCapture {
            log: self.0.clone(),
            upstream_body: Vec::new(),
            client_body: Vec::new(),
        }))
    }
}

impl FlowCapture for TapeCapture {
    fn client_request(&mut self, head: &RequestHeader, body: &Bytes, meta: &RequestMeta) {
        self.push(format!(
            "client_request {} {} {}",
            head.method,
            head.uri,
            String::from_utf8_lossy(body)
        ));
        self.push(format!(
            "meta {:?} {:?}",
            meta.client_format.map(|f| f.as_str()),
            meta.sentinel_provider
        ));
    }

    fn upstream_request(
        &mut self,
        attempt: u32,
        _origin: &str,
        head: &RequestHeader,
        body: &Bytes,
    ) {
        let auth = head
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.push(format!(
            "upstream_request {attempt} {} {auth} {}",
            head.uri,
            String::from_utf8_lossy(body)
        ));
    }

    fn upstream_response(&mut self, attempt: u32, head: &ResponseHeader) {
        self.push(format!(
            "upstream_response {attempt} {}",
            head.status.as_u16()
        ));
    }

    fn upstream_body(&mut self, chunk: &bytes::Bytes, end: bool) {
        self.upstream_body.extend_from_slice(chunk);
        if end {
            self.push(format!(
                "upstream_body {}",
                String::from_utf8_lossy(&self.upstream_body)
            ));
        }
    }

    fn client_response(&mut self, head: &ResponseHeader) {
        let ctype = head
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.push(format!("client_response {} {ctype}", head.status.as_u16()));
    }

    fn client_body(&mut self, chunk: &bytes::Bytes, end: bool) {
        self.client_body.extend_from_slice(chunk);
        if end {
            self.push(format!(
                "client_body {}",
                String::from_utf8_lossy(&self.client_body)
            ));
        }
    }

    fn finish(self: Box<Self>, s: &FlowSummary<'_>) {
        self.push(format!(
            "finish {} {} {} {} {}",
            s.status,
            s.provider,
            s.action,
            s.attempts,
            s.error.map_or("-", |e| e.kind)
        ));
    }
}

fn tape_lines(tape: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *tape.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flow_seam_sees_every_phases_bytes() {
    let events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":3}}}\n\n".to_owned(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n".to_owned(),
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n".to_owned(),
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
    ];
    let mock = MockUpstream::start(Reply::Sse {
        events: events.clone(),
        gate: None,
    })
    .await;
    let tape = Tape::default();
    let log = tape.0.clone();
    let gw = Gateway::start_recording(
        &providers(&[provider(
            "a",
            "anthropic",
            &mock,
            "      auth: echo tok-a\n",
        )]),
        Arc::new(tape),
    );
    let body =
        r#"{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "a")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let got = r.text().await.unwrap();
    // `finish` runs in logging, after the last byte: wait for it (bounded) without sleeping.
    let lines = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if log.lock().unwrap().iter().any(|l| l.starts_with("finish")) {
                return tape_lines(&log);
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let find = |p: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p} in {lines:#?}"))
            .clone()
    };
    assert_eq!(lines[0], "start 16 reverse");
    assert_eq!(
        find("client_request"),
        format!("client_request POST /v1/chat/completions {body}")
    );
    assert_eq!(find("meta"), "meta Some(\"openai\") Some(\"a\")");
    let up = find("upstream_request");
    assert!(
        up.starts_with("upstream_request 1 /v1/messages Bearer tok-a {"),
        "{up}"
    );
    assert!(up.contains("\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hello\"}]}]"), "{up}");
    assert_eq!(find("upstream_response"), "upstream_response 1 200");
    assert_eq!(
        find("upstream_body"),
        format!("upstream_body {}", events.concat())
    );
    assert_eq!(
        find("client_response"),
        "client_response 200 text/event-stream"
    );
    assert_eq!(find("client_body"), format!("client_body {got}"));
    assert!(got.ends_with("data: [DONE]\n\n"));
    assert_eq!(find("finish"), "finish 200 a transform 1 -");

    // The gateway's own answers and errors are flows too.
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    let err = r.text().await.unwrap();
    let lines = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("finish"))
                .count()
                == 2
            {
                return tape_lines(&log);
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(
        lines.contains(&"client_body ccproxy says hey!".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"finish 200 none synthetic 0 -".to_owned()),
        "{lines:#?}"
    );
    assert!(lines.contains(&format!("client_body {err}")), "{lines:#?}");
    assert!(
        lines.contains(&"finish 501 none none 1 no_route".to_owned()),
        "{lines:#?}"
    );
}
