//! The inspector end to end: capture of buffered, streamed and translated flows into the store,
//! truncation, retention, persistence across a restart, redaction (the DB file never holds a
//! credential), every admin route with and without the token, the live feed, HAR, and the
//! `ccproxy flows` command against a running gateway.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The provider credential the gateway injects; it must never reach the store.
const SECRET: &str = "sk-ant-api03-SECRETVALUE0123456789abcdefghijklmnop";

/// A gateway with the inspector's admin API on a free port and its store in the temp dir.
fn inspected(mock: &MockUpstream, family: &str, extra_inspector: &str) -> Gateway {
    let iport = gateway_port();
    let body = format!(
        "{}  inspector:\n    listen: 127.0.0.1:{iport}\n    store: flows.db\n{extra_inspector}",
        providers(&[provider(
            "p",
            family,
            mock,
            &format!("      auth: echo {SECRET}\n")
        )])
    );
    Gateway::start(&body)
}

/// Wait (bounded) until flow `id` is stored as done, polling the API. The store writes off the
/// request path, so a response can reach the client before its flow is written.
async fn done(gw: &Gateway, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api(gw, &format!("/api/flows/{id}")).await;
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["state"] == "done" {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "flow {id} not stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn body(gw: &Gateway, id: &str, part: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = api(gw, &format!("/api/flows/{id}/{part}/body")).await;
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, ctype, r.bytes().await.unwrap().to_vec())
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-ccproxy-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn anthropic_reply() -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "4"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 11, "output_tokens": 2, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}}),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn buffered_flow_is_captured_byte_exact_with_usage_and_enrichment() {
    let mock = MockUpstream::start(anthropic_reply()).await;
    let gw = inspected(&mock, "anthropic", "");
    let req = br#"{"model":"claude-x","max_tokens":16,"system":"You are terse.","messages":[{"role":"user","content":"what is 2+2"}]}"#;
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .header("content-type", "application/json")
        .header("user-agent", "claude-cli/test")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "redact-thinking-2025,foo")
        .body(req.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let client_got = resp.bytes().await.unwrap();
    let flow = done(&gw, &id).await;

    assert_eq!(flow["status"], 200);
    assert_eq!(flow["provider"], "p");
    assert_eq!(flow["client_format"], "anthropic");
    assert_eq!(flow["model"], "claude-x");
    assert_eq!(flow["user_agent"], "claude-cli/test");
    // Spec §10.1's example values.
    assert_eq!(flow["conversation_id"], "e49cf1b969ff");
    assert_eq!(flow["system_prompt_sha"], "5b132848be2a");
    assert_eq!(
        flow["usage"],
        json!({"input_tokens": 11, "output_tokens": 2, "cache_read_tokens": 100, "cache_write_tokens": 5})
    );
    assert!(flow["timings"]["done_ms"].as_f64().unwrap() > 0.0);
    // verbose_mode ran and stripped a beta; the forwarded headers show it.
    assert!(
        flow["hooks"]
            .as_array()
            .unwrap()
            .contains(&json!({"stage": "outbound", "name": "verbose_mode", "changed": true})),
        "{}",
        flow["hooks"]
    );
    // The sentinel stays readable; the injected credential only as a prefix.
    let client_key = flow["client_request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-api-key")
        .unwrap()[1]
        .clone();
    assert_eq!(client_key, "sk-ant-oat-ccproxy-p");
    let fwd = flow["forwarded_request"].to_string();
    assert!(!fwd.contains(SECRET), "{fwd}");
    assert!(fwd.contains("sk-ant-api03-…"), "{fwd}");
    assert_eq!(
        flow["forwarded_request"]["url"],
        format!("http://{}/v1/messages", mock.host_port())
    );
    // Pass-through: the client got the provider's bytes, stored once.
    assert!(flow["client_response"].is_null());

    let (s, ctype, b) = body(&gw, &id, "client_request").await;
    assert_eq!((s, ctype.as_deref()), (200, Some("application/json")));
    assert_eq!(b, req);
    let (_, _, b) = body(&gw, &id, "forwarded_request").await;
    assert_eq!(b, req);
    let (_, _, b) = body(&gw, &id, "provider_response").await;
    assert_eq!(b, client_got);
    let (s, _, _) = body(&gw, &id, "client_response").await;
    assert_eq!(s, 404);

    // The id's unique prefix works; the token counter moved.
    let short: String = id.chars().take(8).collect();
    let v = api_json(&gw, &format!("/api/flows/{short}")).await;
    assert_eq!(v["id"], id);
    let m = gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            "ccproxy_tokens_total{kind=\"cache_read\",model=\"claude-x\",provider=\"p\"}"
        ),
        Some(100.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_flow_keeps_the_whole_stream_and_its_usage() {
    let events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n".to_owned(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n".to_owned(),
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n".to_owned(),
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
    ];
    let mock = MockUpstream::start(Reply::Sse {
        events: events.clone(),
        gate: None,
    })
    .await;
    let gw = inspected(&mock, "anthropic", "");
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-x","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got, events.concat().as_bytes());
    let flow = done(&gw, &id).await;
    assert_eq!(flow["streamed"], true);
    assert!(flow["ttft_ms"].as_f64().is_some());
    assert_eq!(flow["usage"]["input_tokens"], 7);
    assert_eq!(flow["usage"]["output_tokens"], 9);
    let (_, ctype, b) = body(&gw, &id, "provider_response").await;
    assert_eq!(ctype.as_deref(), Some("text/event-stream"));
    assert_eq!(b, events.concat().as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_flow_keeps_provider_and_client_responses() {
    let mock = MockUpstream::start(anthropic_reply()).await;
    let gw = inspected(&mock, "anthropic", "");
    let resp = sentinel_bearer(&gw, "/v1/chat/completions", "p")
        .json(
            &json!({"model": "claude-x", "messages": [{"role": "user", "content": "what is 2+2"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let client_got = resp.bytes().await.unwrap();
    let flow = done(&gw, &id).await;
    assert_eq!(flow["client_format"], "openai");
    assert_eq!(flow["provider_format"], "anthropic");
    assert!(flow["client_response"].is_object());
    let (_, _, provider) = body(&gw, &id, "provider_response").await;
    let provider: Value = serde_json::from_slice(&provider).unwrap();
    assert_eq!(provider["type"], "message");
    let (_, _, client) = body(&gw, &id, "client_response").await;
    assert_eq!(client, client_got);
    let client: Value = serde_json::from_slice(&client).unwrap();
    assert_eq!(client["object"], "chat.completion");
    let (_, _, fwd) = body(&gw, &id, "forwarded_request").await;
    let fwd: Value = serde_json::from_slice(&fwd).unwrap();
    assert!(fwd["max_tokens"].is_number(), "Anthropic body sent: {fwd}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_are_cut_at_the_cap_and_marked() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = inspected(&mock, "anthropic", "    max_body_bytes: 100\n");
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(1000)
    );
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    let flow = done(&gw, &id).await;
    let info = &flow["client_request"]["body"];
    assert_eq!(info["truncated"], true);
    assert_eq!(info["size"], 100);
    assert_eq!(info["total"], big.len());
    let (_, _, b) = body(&gw, &id, "client_request").await;
    assert_eq!(b, big.as_bytes()[..100]);
    // The upstream still got all of it.
    assert_eq!(mock.requests()[0].body.len(), big.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_flows() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = inspected(&mock, "anthropic", "    retention:\n      max_flows: 3\n");
    let mut ids = Vec::new();
    for i in 0..6 {
        let resp = sentinel_post(&gw, "/v1/messages", "p")
            .body(format!(r#"{{"model":"m{i}"}}"#))
            .send()
            .await
            .unwrap();
        ids.push(request_id(&resp));
        done(&gw, ids.last().unwrap()).await;
    }
    // Retention runs after a burst of flows or a quiet second, off the request path.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = api_json(&gw, "/api/flows").await;
        if v["total"] == 3 {
            break v;
        }
        assert!(Instant::now() < deadline, "retention did not run: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed: Vec<&str> = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    // Newest first; the three oldest are gone.
    let newest: Vec<&str> = ids[3..].iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest);
    assert_eq!(v["total"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_survive_a_restart_and_no_credential_reaches_the_database() {
    let mock = MockUpstream::start(anthropic_reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let iport = gateway_port();
    let body = format!(
        "{}  inspector:\n    listen: 127.0.0.1:{iport}\n    store: flows.db\n",
        providers(&[provider(
            "p",
            "anthropic",
            &mock,
            &format!("      auth: echo {SECRET}\n")
        )])
    );
    let gw = Gateway::start_in(dir, &body);
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-ant-oat-ccproxy-p")
        .header("cookie", "session=cookie-secret-value")
        .body(r#"{"model":"claude-x","messages":[]}"#)
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    done(&gw, &id).await;
    let db = gw.path("flows.db");
    let dir = gw.stop();

    // Every file of the database (main, WAL) is free of the credential and the cookie.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("flows.db") {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [SECRET, "SECRETVALUE", "cookie-secret-value"] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} found in {name}"
                );
            }
        }
    }
    assert!(db.exists());

    let gw = Gateway::start_in(dir, &body);
    let v = api_json(&gw, "/api/flows").await;
    assert_eq!(v["flows"][0]["id"], id, "{v}");
    assert_eq!(v["flows"][0]["state"], "done");
    // New flows continue the sequence.
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    let id2 = request_id(&resp);
    let f2 = done(&gw, &id2).await;
    assert!(f2["seq"].as_u64().unwrap() > v["flows"][0]["seq"].as_u64().unwrap());
}

/// Write `file` as a config with the inspector's store at `flows.db` beside it, run
/// `ccproxy start` on it, and return how it ended (the tests below expect a startup error).
fn start_with_file_store(file: &std::path::Path) -> std::process::Output {
    std::fs::write(
        file,
        config_yaml(
            gateway_port(),
            gateway_port(),
            &format!(
                "  inspector:\n    listen: 127.0.0.1:{}\n    store: flows.db\n",
                gateway_port()
            ),
        ),
    )
    .unwrap();
    std::process::Command::new(bin())
        .arg("--config")
        .arg(file)
        .arg("start")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_store_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flows.db"), vec![0x42u8; 8192]).unwrap();
    let out = start_with_file_store(&dir.path().join("ccproxy.yaml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flow store")
            && err.contains("flows.db")
            && err.contains("not a ccproxy flow database"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_need_the_token_and_work_with_it() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = inspected(&mock, "anthropic", "");
    let (base, token) = admin(&gw);
    // The token was generated and written 0600 in the config dir.
    let file = gw.path("inspector.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);

    for (method, path) in [
        ("GET", "/api/flows"),
        ("GET", "/api/flows/x"),
        ("DELETE", "/api/flows/x"),
        ("POST", "/api/clear"),
        ("GET", "/api/har"),
        ("GET", "/api/events"),
        ("GET", "/api/status"),
        ("GET", "/api/flows/x/client_request/body"),
    ] {
        for auth in [None, Some("wrong-token")] {
            let mut req = client().request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(t) = auth {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} {auth:?}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["type"], "unauthorized");
        }
    }
    // The viewer page holds no data and loads without a token.
    let page = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    // Live feed (token in the query, as EventSource sends it) sees the next flow.
    let mut feed = client()
        .get(format!("{base}/api/events?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: updated") && seen.contains(&id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, feed.chunk())
            .await
            .expect("live feed event")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: created"), "{seen}");

    let st = api_json(&gw, "/api/status").await;
    assert_eq!(st["flows"], 1);
    // Filters.
    assert_eq!(api_json(&gw, "/api/flows?provider=p").await["total"], 1);
    assert_eq!(api_json(&gw, "/api/flows?provider=q").await["total"], 0);
    assert_eq!(api_json(&gw, "/api/flows?status=200").await["total"], 1);
    assert_eq!(api_json(&gw, "/api/flows?q=%7B%7D").await["total"], 1);
    let bad = api(&gw, "/api/flows?status=abc").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(api(&gw, "/api/flows/nope").await.status(), 404);
    assert_eq!(api(&gw, "/api/nothing").await.status(), 404);

    // HAR of the flow.
    let har = api_json(&gw, &format!("/api/har?ids={id}")).await;
    check_har(&har, 1);

    // Delete, then clear.
    let r = client()
        .delete(format!("{base}/api/flows/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], 1);
    assert_eq!(api(&gw, &format!("/api/flows/{id}")).await.status(), 404);
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    done(&gw, &request_id(&resp)).await;
    let r = client()
        .post(format!("{base}/api/clear"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], 1);
    assert_eq!(api_json(&gw, "/api/flows").await["total"], 0);
}

/// The fields HAR 1.2 requires, for `flows` flows (two entries each).
fn check_har(har: &Value, flows: usize) {
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "ccproxy");
    assert_eq!(log["pages"].as_array().unwrap().len(), flows);
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), flows * 2);
    for e in entries {
        for k in [
            "startedDateTime",
            "time",
            "request",
            "response",
            "cache",
            "timings",
            "pageref",
        ] {
            assert!(!e[k].is_null(), "entry lacks {k}: {e}");
        }
        for k in [
            "method",
            "url",
            "httpVersion",
            "cookies",
            "headers",
            "queryString",
            "headersSize",
            "bodySize",
        ] {
            assert!(!e["request"][k].is_null(), "request lacks {k}");
        }
        for k in [
            "status",
            "statusText",
            "httpVersion",
            "cookies",
            "headers",
            "content",
            "redirectURL",
            "headersSize",
            "bodySize",
        ] {
            assert!(!e["response"][k].is_null(), "response lacks {k}");
        }
        assert!(e["response"]["content"]["mimeType"].is_string());
        for k in ["send", "wait", "receive"] {
            assert!(e["timings"][k].is_number());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn har_encodes_binary_bodies_as_base64() {
    let mock = MockUpstream::start(Reply::Raw {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body: bytes::Bytes::from_static(&[0, 159, 146, 150, 255]),
    })
    .await;
    let gw = inspected(&mock, "anthropic", "");
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    done(&gw, &id).await;
    let har = api_json(&gw, &format!("/api/har?ids={id}")).await;
    check_har(&har, 1);
    let content = &har["log"]["entries"][0]["response"]["content"];
    assert_eq!(content["encoding"], "base64");
    assert_eq!(content["text"], "AJ+Slv8=");
}

fn flows_cmd(gw: &Gateway, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .arg("--config")
        .arg(gw.dir.path())
        .arg("flows")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stdout of a command that must have succeeded (its stderr otherwise).
fn ok_stdout(o: &std::process::Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_command_lists_shows_dumps_diffs_compares_and_clears() {
    let mock = MockUpstream::start(anthropic_reply()).await;
    let gw = inspected(&mock, "anthropic", "");
    let empty = flows_cmd(&gw, &["list"]);
    assert_eq!(empty.status.code(), Some(0));
    assert_eq!(stdout(&empty).trim(), "No flows.");
    let dump_empty = flows_cmd(&gw, &["dump"]);
    assert_eq!(dump_empty.status.code(), Some(1));

    let mut ids = Vec::new();
    for text in ["first question", "second question"] {
        let resp = sentinel_post(&gw, "/v1/messages", "p")
            .header("content-type", "application/json")
            .json(&json!({"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        ids.push(request_id(&resp));
        done(&gw, ids.last().unwrap()).await;
    }
    let translated = sentinel_bearer(&gw, "/v1/chat/completions", "p")
        .json(&json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let tid = request_id(&translated);
    done(&gw, &tid).await;

    let out = flows_cmd(&gw, &["list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for id in ids.iter().chain([&tid]) {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(
        text.contains("claude-x") && text.contains("/v1/messages"),
        "{text}"
    );

    let out = flows_cmd(
        &gw,
        &[
            "list",
            "--json",
            "--jq",
            "map(select(.client_format == \"openai\"))",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], tid.as_str());

    let out = flows_cmd(&gw, &["list", "--jq", ".[0]"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("jq filter must produce a JSON array, got object"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flows_cmd(&gw, &["list", "--jq", "map("]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jq filter failed"));

    // show with an abbreviated id.
    let short: String = ids[0].chars().take(8).collect();
    let out = flows_cmd(&gw, &["show", &short]);
    let text = ok_stdout(&out);
    assert!(
        text.contains("=== Client-Request ===") && text.contains("first question"),
        "{text}"
    );
    assert!(text.contains("cache hit"), "{text}");
    assert!(!text.contains(SECRET));

    let out = flows_cmd(&gw, &["dump", &ids[0], &ids[1]]);
    assert_eq!(out.status.code(), Some(0));
    let har: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_har(&har, 2);

    let out = flows_cmd(&gw, &["diff", &ids[0], &ids[1]]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("--- flow:{}", ids[0]))
            && text.contains("-      \"content\": \"first question\"")
            && text.contains("+      \"content\": \"second question\""),
        "{text}"
    );
    let out = flows_cmd(&gw, &["diff", &ids[0]]);
    assert_eq!(out.status.code(), Some(1));

    let out = flows_cmd(&gw, &["compare", &tid]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("--- client:request") && text.contains("+++ forwarded:request"),
        "{text}"
    );
    assert!(
        text.contains("--- provider:response") && text.contains("chat.completion"),
        "{text}"
    );

    let out = flows_cmd(&gw, &["usage", "--by", "model"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let row = text.lines().find(|l| l.starts_with("claude-x")).unwrap();
    // 3 requests, cache hit 300 / (33 + 300 + 15) = 86.2 %.
    assert!(row.contains(" 3 ") && row.contains("86.2%"), "{text}");

    let out = flows_cmd(
        &gw,
        &["clear", "--jq", "map(select(.client_format == \"openai\"))"],
    );
    assert_eq!(stdout(&out).trim(), "Cleared 1 flow(s).");
    let out = flows_cmd(&gw, &["clear", "--all"]);
    assert_eq!(stdout(&out).trim(), "All flows cleared.");
    assert_eq!(api_json(&gw, "/api/flows").await["total"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_command_says_when_the_gateway_is_down_or_the_token_is_wrong() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = inspected(&mock, "anthropic", "");
    std::fs::write(gw.path("inspector.token"), "not-the-token").unwrap();
    let out = flows_cmd(&gw, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    let dir = gw.stop();
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(dir.path())
        .args(["flows", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Is ccproxy running?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_resends_to_another_provider_and_links_the_flows() {
    let anthropic = MockUpstream::start(anthropic_reply()).await;
    let openai = MockUpstream::start(Reply::Json {
        status: 200,
        body: json!({"id": "c1", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "four"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1}}),
    })
    .await;
    let iport = gateway_port();
    let body = format!(
        "{}  inspector:\n    listen: 127.0.0.1:{iport}\n    store: flows.db\n",
        providers(&[
            provider(
                "p",
                "anthropic",
                &anthropic,
                &format!("      auth: echo {SECRET}\n")
            ),
            provider(
                "q",
                "openai",
                &openai,
                "      auth: echo sk-openai-secret-0123456789\n"
            ),
        ])
    );
    let gw = Gateway::start(&body);
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .header("content-type", "application/json")
        .json(&json!({"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "what is 2+2"}]}))
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    done(&gw, &id).await;

    let out = flows_cmd(
        &gw,
        &["replay", &id[..8], "--provider", "q", "--model", "gpt-x"],
    );
    let text = ok_stdout(&out);
    assert!(
        text.contains("ORIGINAL") && text.contains("REPLAY"),
        "{text}"
    );
    let line = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        line("text").contains('4') && line("text").contains("four"),
        "{text}"
    );
    assert!(
        line("model").contains("claude-x") && line("model").contains("gpt-x"),
        "{text}"
    );
    assert!(line("usage").contains("in 9 out 1"), "{text}");

    // The upstream got a translated OpenAI request for the new model, with q's credential.
    let got = openai.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["model"], "gpt-x");
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer sk-openai-secret-0123456789")
    );
    let v = api_json(&gw, "/api/flows").await;
    let newest = &v["flows"][0];
    assert_eq!(newest["replay_of"], id.as_str());
    assert_eq!(newest["provider"], "q");

    // Without --provider the captured (readable) sentinel goes again, to the same provider.
    let out = flows_cmd(&gw, &["replay", &id]);
    ok_stdout(&out);
    assert_eq!(anthropic.requests().len(), 2);
    let out = flows_cmd(&gw, &["replay", &id, "--provider", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no provider named nope"));
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_exports_one_span_per_flow_with_genai_attributes() {
    let upstream = MockUpstream::start(Reply::Json {
        status: 500,
        body: json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
    })
    .await;
    let ok = MockUpstream::start(anthropic_reply()).await;
    let collector = MockUpstream::start(Reply::Status(200)).await;
    let body =
        format!(
        "{}  otel:\n    enabled: true\n    endpoint: http://{}\n    service_name: ccproxy-test\n",
        providers(&[
            provider("p", "anthropic", &ok, &format!("      auth: echo {SECRET}\n")),
            provider("bad", "anthropic", &upstream, "      auth: echo k\n"),
        ]),
        collector.host_port()
    );
    let gw = Gateway::start(&body);
    for p in ["p", "bad"] {
        sentinel_post(&gw, "/v1/messages", p)
            .header("content-type", "application/json")
            .json(&json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
    }
    // Spans go out in batches (at most every 2 s); wait for both.
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<Value> = collector
            .requests()
            .iter()
            .flat_map(|r| {
                assert_eq!(r.path, "/v1/traces");
                let v = r.json();
                assert_eq!(
                    v["resourceSpans"][0]["resource"]["attributes"][0],
                    json!({"key": "service.name", "value": {"stringValue": "ccproxy-test"}})
                );
                v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if spans.len() >= 2 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "collector got {} spans",
            spans.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attr = |s: &Value, k: &str| -> Value {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"].clone())
            .unwrap_or(Value::Null)
    };
    let good = spans
        .iter()
        .find(|s| attr(s, "ccproxy.provider")["stringValue"] == "p")
        .unwrap();
    assert_eq!(attr(good, "gen_ai.system")["stringValue"], "anthropic");
    assert_eq!(attr(good, "gen_ai.operation.name")["stringValue"], "chat");
    assert_eq!(
        attr(good, "gen_ai.request.model")["stringValue"],
        "claude-x"
    );
    assert_eq!(attr(good, "gen_ai.usage.output_tokens")["intValue"], "2");
    assert_eq!(attr(good, "http.response.status_code")["intValue"], "200");
    assert_eq!(good["status"]["code"], 0);
    assert_eq!(good["traceId"].as_str().unwrap().len(), 32);
    let failed = spans
        .iter()
        .find(|s| attr(s, "ccproxy.provider")["stringValue"] == "bad")
        .unwrap();
    assert_eq!(failed["status"]["code"], 2);
    assert_eq!(failed["status"]["message"], "HTTP 500");
}

/// Headless Chromium, or the reason to skip.
fn chromium() -> Option<&'static str> {
    for c in ["chromium", "chromium-browser"] {
        if std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    eprintln!("SKIP: headless Chromium not found (Debian package `chromium`; .ci/run installs it)");
    None
}

fn chromium_cmd(bin: &str, out: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", out.join("profile").display()))
    .stderr(std::process::Stdio::null());
    c
}

/// The text of the element with `data-testid="id"` in a DOM dump.
fn testid(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("data-testid=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn web_viewer_shows_live_flows_and_the_context_view_in_chromium() {
    let Some(bin) = chromium() else { return };
    let mock = MockUpstream::start(anthropic_reply()).await;
    let gw = inspected(&mock, "anthropic", "");
    let (base, token) = admin(&gw);
    let tmp = tempfile::tempdir().unwrap();

    // 1. A page open on the list sees a flow arrive (created, then updated).
    let live = chromium_cmd(bin, tmp.path())
        .arg("--dump-dom")
        .arg(format!("{base}/#token={token}&live=2"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_json(&gw, "/api/status").await["live_clients"] == 0 {
        assert!(
            Instant::now() < deadline,
            "the page never opened the live feed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tools: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("tool{i}"), "description": "d", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}))
        .collect();
    let request = json!({
        "model": "claude-x", "max_tokens": 16,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "tools": tools,
        "messages": [
            {"role": "user", "content": "what is 2+2"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": [{"type": "text", "text": "and 3+3?", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "6"}
        ]
    });
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .header("content-type", "application/json")
        .json(&request)
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    done(&gw, &id).await;
    let out = tokio::task::spawn_blocking(move || live.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(&format!("data-id=\"{id}\"")),
        "the live list does not show {id}"
    );

    // 2. The flow page: the context view's numbers, and no horizontal overflow.
    let out = chromium_cmd(bin, tmp.path())
        .arg("--dump-dom")
        .arg(format!(
            "{base}/#token={token}&live=0&flow={id}&tab=context"
        ))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(&format!("data-flow-loaded=\"{id}\"")),
        "flow page did not load"
    );
    assert!(dom.contains("data-overflow=\"no\""), "layout overflows");
    assert_eq!(testid(&dom, "ctx-tools-count").as_deref(), Some("3"));
    assert_eq!(testid(&dom, "ctx-messages-count").as_deref(), Some("4"));
    assert_eq!(testid(&dom, "ctx-system-bytes").as_deref(), Some("14"));
    assert_eq!(testid(&dom, "ctx-cache-breakpoints").as_deref(), Some("2"));
    assert_eq!(testid(&dom, "ctx-input-tokens").as_deref(), Some("11"));
    assert_eq!(testid(&dom, "ctx-output-tokens").as_deref(), Some("2"));
    assert_eq!(testid(&dom, "ctx-cache-read").as_deref(), Some("100"));
    assert_eq!(testid(&dom, "ctx-cache-write").as_deref(), Some("5"));
    // 100 / (11 + 100 + 5)
    assert_eq!(testid(&dom, "ctx-cache-hit").as_deref(), Some("86.2%"));

    // 3. A screenshot for a human to look at.
    let shot = tmp.path().join("viewer.png");
    let status = chromium_cmd(bin, tmp.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "{base}/#token={token}&live=0&flow={id}&tab=context"
        ))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    eprintln!("viewer screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_in_use_by_another_gateway_is_a_clear_startup_error() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = inspected(&mock, "anthropic", "");
    // A second gateway on the same directory (same flows.db) while the first runs.
    let out = start_with_file_store(&gw.path("second.yaml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flows.db") && err.contains("locked"), "{err}");
    // The first one still records.
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    done(&gw, &request_id(&resp)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probes_are_not_recorded_but_model_lists_are() {
    let mock = MockUpstream::start(Reply::Echo).await;
    let gw = inspected(&mock, "anthropic", "");
    for _ in 0..3 {
        client().get(gw.url("/health")).send().await.unwrap();
    }
    let models = client().get(gw.url("/v1/models")).send().await.unwrap();
    let id = request_id(&models);
    let flow = done(&gw, &id).await;
    assert_eq!(flow["action"], "synthetic");
    assert_eq!(api_json(&gw, "/api/flows").await["total"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_by_bytes_and_by_age() {
    let mock = MockUpstream::start(Reply::Echo).await;
    // Every flow is larger than 1 KB: none may stay.
    let gw = inspected(
        &mock,
        "anthropic",
        "    retention:\n      max_bytes: 1024\n",
    );
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    done(&gw, &request_id(&resp)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_json(&gw, "/api/flows").await["total"] != 0 {
        assert!(Instant::now() < deadline, "byte retention did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An age limit of about 1 s: the flow is stored, then removed once it is older.
    let gw = inspected(
        &mock,
        "anthropic",
        "    retention:\n      max_age_hours: 0.0003\n",
    );
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .body("{}")
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    done(&gw, &id).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api(&gw, &format!("/api/flows/{id}")).await.status() != 404 {
        assert!(Instant::now() < deadline, "age retention did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api_json(&gw, "/api/flows").await["total"], 0);
}

#[tokio::test]
async fn a_retried_flow_records_its_attempts_and_why() {
    use crate::support::mock::Recorded;
    // 401 for the first credential, 200 for the renewed one.
    let mock = MockUpstream::start(Reply::script(|r: &Recorded, _| {
        if r.header("authorization") == Some("Bearer tok2") {
            anthropic_reply()
        } else {
            Reply::Status(401)
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cmd = crate::support::first_tok1_then_tok2(dir.path());
    let iport = gateway_port();
    let gw = Gateway::start(&format!(
        "{}  inspector:\n    listen: 127.0.0.1:{iport}\n    store: null\n",
        providers(&[provider(
            "p",
            "anthropic",
            &mock,
            &format!("      auth:\n        command: '{cmd}'\n")
        )])
    ));
    let resp = sentinel_post(&gw, "/v1/messages", "p")
        .json(&json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let flow = done(&gw, &id).await;
    assert_eq!(flow["attempts"], 2);
    assert_eq!(flow["retries"], json!(["auth_refresh"]));
    assert_eq!(
        flow["provider_response"]["status"], 200,
        "the final attempt's answer"
    );
}
