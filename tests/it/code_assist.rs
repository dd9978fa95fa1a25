//! Gemini Code Assist through the `gemini_cli` hook against a cloudcode-pa mock: the
//! `loadCodeAssist` prewarm, the `/v1internal:{action}` rewrite, the envelope and its UUID5
//! session id, the SDK user-agent masquerade, and the `{"response": …}` unwrap for buffered
//! answers, SSE streams and translated routes (Claude Code → Gemini).

use crate::support::mock::{MockUpstream, Recorded, Reply};
use crate::support::{client, provider, providers, sentinel_post, Gateway};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::SystemTime;

const MODEL: &str = "gemini-2.5-flash";

pub fn candidates(text: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
           "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}, "modelVersion": MODEL})
}

/// cloudcode-pa: `loadCodeAssist` answers with `project` (or 500 when `None`); generate calls
/// answer in the envelope, as JSON or as an event stream.
pub fn cloudcode(project: Option<&'static str>) -> Reply {
    Reply::script(move |r: &Recorded, _| {
        if r.path.starts_with("/v1internal:loadCodeAssist") {
            return match project {
                Some(p) => Reply::Json {
                    status: 200,
                    body: json!({"currentTier": {"id": "free-tier"}, "cloudaicompanionProject": p}),
                },
                None => Reply::Status(500),
            };
        }
        if r.path.starts_with("/v1internal:streamGenerateContent") {
            return Reply::Sse {
                events: vec![
                    format!(
                        "data: {}\r\n\r\n",
                        json!({"response": candidates("Hel"), "traceId": "t1"})
                    ),
                    format!(
                        "data: {}\r\n\r\n",
                        json!({"response": candidates("lo"), "traceId": "t1"})
                    ),
                ],
                gate: None,
            };
        }
        Reply::Json {
            status: 200,
            body: json!({"response": candidates("Hello"), "traceId": "t1"}),
        }
    })
}

fn creds_file(dir: &Path) -> std::path::PathBuf {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let path = dir.join("oauth_creds.json");
    std::fs::write(
        &path,
        json!({"access_token": "ya29.valid", "refresh_token": "1//r", "expiry_date": now + 3_600_000}).to_string(),
    )
    .unwrap();
    path
}

pub fn gateway(mock: &MockUpstream, dir: &tempfile::TempDir) -> Gateway {
    gateway_with(mock, dir, "")
}

/// A gateway with one Code Assist provider `gemini` at `mock` (credentials in `dir`), the
/// `gemini_cli` hook, and `extra` appended to the `ccproxy:` section.
fn gateway_with(mock: &MockUpstream, dir: &tempfile::TempDir, extra: &str) -> Gateway {
    let file = creds_file(dir.path());
    let yaml = format!(
        "{}  hooks:\n    inbound: [forward_oauth, extract_session_id]\n    outbound: [gemini_cli]\n{extra}",
        providers(&[provider(
            "gemini",
            "gemini",
            mock,
            &format!(
                "      auth:\n        type: google_oauth\n        file_path: {}\n        client_id: cid\n        client_secret: s\n",
                file.display()
            ),
        )])
    );
    Gateway::start(&yaml)
}

fn sha12(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..12].to_owned()
}

/// `POST /v1beta/models/{MODEL}:{action}` with the `gemini` sentinel key (google-genai style).
fn gemini_post(gw: &Gateway, action: &str) -> reqwest::RequestBuilder {
    client()
        .post(gw.url(&format!("/v1beta/models/{MODEL}:{action}")))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-gemini")
}

pub fn generate_calls(mock: &MockUpstream) -> Vec<Recorded> {
    mock.requests()
        .into_iter()
        .filter(|r| !r.path.contains("loadCodeAssist"))
        .collect()
}

#[tokio::test]
async fn a_google_genai_request_goes_to_code_assist_in_the_envelope_and_comes_back_unwrapped() {
    let mock = MockUpstream::start(cloudcode(Some("p1"))).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&mock, &dir);
    let resp = gemini_post(&gw, "generateContent")
        .header("user-agent", "google-genai-sdk/1.0 gl-python/3.11")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "metadata": {"x": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, candidates("Hello"), "the envelope is taken off");

    let load = &mock.requests()[0];
    assert_eq!(load.path, "/v1internal:loadCodeAssist");
    assert_eq!(load.header("authorization"), Some("Bearer ya29.valid"));
    let calls = generate_calls(&mock);
    assert_eq!(calls.len(), 1);
    let up = &calls[0];
    assert_eq!(up.path, "/v1internal:generateContent");
    assert_eq!(up.header("authorization"), Some("Bearer ya29.valid"));
    assert!(!up.has_header("x-goog-api-key"));
    assert_eq!(
        up.header("user-agent"),
        Some("GeminiCLI/0.36.0/gemini-2.5-flash (linux; x64; terminal) google-api-nodejs-client/9.15.1")
    );
    assert_eq!(up.header("x-goog-api-client"), Some("gl-node/22.22.2"));
    let env = up.json();
    let keys: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["model", "request", "project", "user_prompt_id"]);
    assert_eq!(env["model"], MODEL);
    assert_eq!(
        env["project"], "p1",
        "the prewarm's project (the first request waits for it)"
    );
    assert_eq!(env["request"]["contents"][0]["parts"][0]["text"], "hi");
    assert!(env["request"].get("metadata").is_none());
    let expected = ccproxy::code_assist::session_id(MODEL, Some("p1"), &sha12("hi"));
    assert_eq!(env["request"]["session_id"], expected.as_str());
    assert!(uuid_like(env["user_prompt_id"].as_str().unwrap()));

    // Same conversation, same session id; the user prompt id is new each time.
    let resp = gemini_post(&gw, "generateContent")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]}, {"role": "user", "parts": [{"text": "more"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let second = generate_calls(&mock)[1].json();
    assert_eq!(second["request"]["session_id"], expected.as_str());
    assert_ne!(second["user_prompt_id"], env["user_prompt_id"]);
    // No SDK user agent: no masquerade.
    assert!(generate_calls(&mock)[1]
        .header("x-goog-api-client")
        .is_none());
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .flat_map(|e| e.split("\r\n\r\n"))
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn a_gemini_cli_stream_is_unwrapped_event_by_event() {
    let mock = MockUpstream::start(cloudcode(Some("p1"))).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&mock, &dir);
    let resp = gemini_post(&gw, "streamGenerateContent?alt=sse")
        .header(
            "user-agent",
            "GeminiCLI/0.36.0/gemini-2.5-flash (linux; x64)",
        )
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert_eq!(sse_data(&text), [candidates("Hel"), candidates("lo")]);
    let up = &generate_calls(&mock)[0];
    assert_eq!(up.path, "/v1internal:streamGenerateContent?alt=sse");
    assert_eq!(
        up.header("user-agent"),
        Some("GeminiCLI/0.36.0/gemini-2.5-flash (linux; x64)"),
        "Gemini CLI keeps its own user agent"
    );
}

#[tokio::test]
async fn claude_code_through_code_assist_is_translated_after_the_unwrap() {
    let mock = MockUpstream::start(cloudcode(Some("p1"))).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&mock, &dir);
    let ask = |stream: bool| {
        sentinel_post(&gw, "/v1/messages", "gemini")
            .json(&json!({"model": MODEL, "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let resp = ask(false).await.unwrap();
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["content"][0]["text"], "Hello");
    let up = &generate_calls(&mock)[0];
    assert_eq!(up.path, "/v1internal:generateContent");
    assert_eq!(
        up.json()["request"]["contents"][0]["parts"][0]["text"],
        "hi"
    );

    let resp = ask(true).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let deltas: String = sse_data(&text)
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(deltas, "Hello", "{text}");
    assert_eq!(
        generate_calls(&mock)[1].path,
        "/v1internal:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn a_failed_prewarm_leaves_the_project_out() {
    let mock = MockUpstream::start(cloudcode(None)).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&mock, &dir);
    let resp = gemini_post(&gw, "generateContent")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let env = generate_calls(&mock)[0].json();
    assert!(env.get("project").is_none());
    assert_eq!(
        env["request"]["session_id"],
        ccproxy::code_assist::session_id(MODEL, None, &sha12("hi")).as_str()
    );
}

#[tokio::test]
async fn an_already_wrapped_body_only_gets_its_session_id() {
    let mock = MockUpstream::start(cloudcode(Some("p1"))).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&mock, &dir);
    let resp = gemini_post(&gw, "generateContent")
        .json(&json!({"model": MODEL, "project": "mine", "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "session_id": "client-chosen"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let env = generate_calls(&mock)[0].json();
    assert_eq!(env["project"], "mine");
    assert!(env.get("user_prompt_id").is_none());
    assert_eq!(
        env["request"]["session_id"],
        ccproxy::code_assist::session_id(MODEL, Some("p1"), &sha12("hi")).as_str()
    );
}

/// cloudcode-pa without capacity for `busy` models: 429 RESOURCE_EXHAUSTED (with a short
/// `retryDelay` when `delay` is set, naming the attempt), the envelope otherwise.
fn busy(
    models: &'static [&'static str],
    delay: Option<&'static str>,
    status: &'static str,
) -> Reply {
    Reply::script(move |r: &Recorded, n| {
        if r.path.starts_with("/v1internal:loadCodeAssist") {
            return Reply::Json {
                status: 200,
                body: json!({"cloudaicompanionProject": "p1"}),
            };
        }
        let model = r.json()["model"].as_str().unwrap_or("").to_owned();
        if models.contains(&model.as_str()) {
            let mut details = vec![];
            if let Some(d) = delay {
                details.push(
                    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d}),
                );
            }
            return Reply::Json {
                status: 429,
                body: json!({"error": {"code": 429, "status": status, "message": format!("no capacity (request {n})"), "details": details}}),
            };
        }
        if r.path.starts_with("/v1internal:streamGenerateContent") {
            return Reply::Sse {
                events: vec![format!(
                    "data: {}\n\n",
                    json!({"response": candidates(&model)})
                )],
                gate: None,
            };
        }
        Reply::Json {
            status: 200,
            body: json!({"response": candidates(&model)}),
        }
    })
}

fn capacity_gateway(mock: &MockUpstream, dir: &tempfile::TempDir, sticky: u32) -> Gateway {
    gateway_with(
        mock,
        dir,
        &format!("  gemini_capacity:\n    enabled: true\n    sticky_retry_attempts: {sticky}\n    fallback_models: [gemini-2.5-pro, {MODEL}]\n"),
    )
}

fn models_sent(mock: &MockUpstream) -> Vec<String> {
    generate_calls(mock)
        .iter()
        .map(|r| r.json()["model"].as_str().unwrap().to_owned())
        .collect()
}

async fn generate(gw: &Gateway, stream: bool) -> reqwest::Response {
    let action = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    gemini_post(gw, action)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn capacity_errors_retry_the_model_then_fall_back_and_the_client_sees_the_success() {
    let mock = MockUpstream::start(busy(&[MODEL], Some("0.05s"), "RESOURCE_EXHAUSTED")).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = capacity_gateway(&mock, &dir, 2);
    let resp = generate(&gw, false).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        candidates("gemini-2.5-pro"),
        "the fallback's answer, unwrapped"
    );
    // The original, two sticky retries, then the fallback (the client's own model is not a
    // fallback of itself).
    assert_eq!(models_sent(&mock), [MODEL, MODEL, MODEL, "gemini-2.5-pro"]);
    let metrics = gw.metrics().await;
    assert_eq!(
        crate::support::sample(
            &metrics,
            "ccproxy_upstream_retries_total{provider=\"gemini\",reason=\"capacity\"}"
        ),
        Some(3.0)
    );

    // A stream: the fallback's events reach the client unwrapped.
    let resp = generate(&gw, true).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(sse_data(&text), [candidates("gemini-2.5-pro")]);
}

#[tokio::test]
async fn when_every_retry_fails_the_client_gets_the_original_error() {
    let mock =
        MockUpstream::start(busy(&[MODEL, "gemini-2.5-pro"], None, "RESOURCE_EXHAUSTED")).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = capacity_gateway(&mock, &dir, 1);
    let resp = generate(&gw, false).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    // Request 0 was loadCodeAssist; request 1 the original generate call.
    assert_eq!(body["error"]["message"], "no capacity (request 1)");
    assert_eq!(models_sent(&mock), [MODEL, MODEL, "gemini-2.5-pro"]);
}

#[tokio::test]
async fn an_error_that_is_not_about_capacity_is_not_retried() {
    let mock = MockUpstream::start(busy(&[MODEL], None, "PERMISSION_DENIED")).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = capacity_gateway(&mock, &dir, 3);
    let resp = generate(&gw, false).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(models_sent(&mock), [MODEL]);
}

/// The original request gets a capacity error; every later call for a model in `hang`
/// stalls past the gateway's read timeout (a transport failure), others succeed.
fn capacity_then_stalls(hang: &'static [&'static str]) -> Reply {
    Reply::script(move |r: &Recorded, n| {
        if r.path.starts_with("/v1internal:loadCodeAssist") {
            return Reply::Json {
                status: 200,
                body: json!({"cloudaicompanionProject": "p1"}),
            };
        }
        let model = r.json()["model"].as_str().unwrap_or("").to_owned();
        if n == 1 {
            return Reply::Json {
                status: 429,
                body: json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "original"}}),
            };
        }
        let ok = Reply::Json {
            status: 200,
            body: json!({"response": candidates(&model)}),
        };
        if hang.contains(&model.as_str()) {
            Reply::Delay {
                after: std::time::Duration::from_secs(3),
                reply: Box::new(ok),
            }
        } else {
            ok
        }
    })
}

fn stalling_gateway(mock: &MockUpstream, dir: &tempfile::TempDir) -> Gateway {
    gateway_with(
        mock,
        dir,
        "  timeouts:\n    read_seconds: 0.3\n  gemini_capacity:\n    enabled: true\n    sticky_retry_attempts: 1\n    fallback_models: [gemini-2.5-pro]\n",
    )
}

#[tokio::test]
async fn a_transport_failure_during_capacity_retries_moves_on_to_the_next_model() {
    let mock = MockUpstream::start(capacity_then_stalls(&[MODEL])).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = stalling_gateway(&mock, &dir);
    let resp = generate(&gw, false).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, candidates("gemini-2.5-pro"));
    assert_eq!(models_sent(&mock), [MODEL, MODEL, "gemini-2.5-pro"]);
}

#[tokio::test]
async fn capacity_retries_that_end_in_a_transport_failure_give_the_original_error() {
    let mock = MockUpstream::start(capacity_then_stalls(&[MODEL, "gemini-2.5-pro"])).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = stalling_gateway(&mock, &dir);
    let resp = generate(&gw, false).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "original");
    assert_eq!(models_sent(&mock), [MODEL, MODEL, "gemini-2.5-pro"]);
}
