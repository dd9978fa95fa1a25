//! Self-refreshing OAuth credentials (`anthropic_oauth`, `google_oauth`) against a mock token
//! endpoint, and the 401 → renew → replay retry: refresh at the expiry edge, write-back that
//! keeps sibling fields (mode 0600), refresh-token rotation and fallback, single flight under
//! concurrency, a failing token endpoint, and one replay only when the credential changed.

use crate::support::mock::{MockUpstream, Recorded, Reply};
use crate::support::{bin, client, provider, providers, sample, sentinel_post, Gateway};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Claude Code's credentials file with a token that has `left_s` seconds to live.
fn claude_file(dir: &Path, access: &str, left_s: i64) -> std::path::PathBuf {
    let path = dir.join(".credentials.json");
    std::fs::write(
        &path,
        json!({"claudeAiOauth": {"accessToken": access, "refreshToken": "r", "expiresAt": now_ms() + left_s * 1000, "scopes": ["user:inference"], "subscriptionType": "max"}, "mcpOAuth": {"x": 1}})
            .to_string(),
    )
    .unwrap();
    path
}

fn token_reply(body: Value) -> Reply {
    Reply::Json { status: 200, body }
}

/// An Anthropic provider at `upstream` whose credential is Claude Code's file at `file`,
/// refreshed at `token`.
fn anthropic_oauth(upstream: &MockUpstream, token: &MockUpstream, file: &Path) -> String {
    providers(&[provider(
        "anthropic",
        "anthropic",
        upstream,
        &format!(
            "      auth:\n        type: anthropic_oauth\n        file_path: {}\n        endpoint: http://{}/v1/oauth/token\n",
            file.display(),
            token.host_port()
        ),
    )])
}

async fn ask(gw: &Gateway) -> reqwest::Response {
    sentinel_post(gw, "/v1/messages", "anthropic")
        .json(&json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn an_expiring_claude_token_is_refreshed_written_back_and_used() {
    let upstream = MockUpstream::start(Reply::Echo).await;
    let token = MockUpstream::start(token_reply(
        json!({"access_token": "new", "expires_in": 3600}),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // 30 s left: inside the one-minute margin (spec §16.1 case 10).
    let file = claude_file(dir.path(), "old", 30);
    let gw = Gateway::start(&anthropic_oauth(&upstream, &token, &file));
    let before = now_ms();
    let resp = ask(&gw).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.requests();
    assert_eq!(seen[0].header("authorization"), Some("Bearer new"));
    let t = token.requests();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].method, "POST");
    assert_eq!(t[0].path, "/v1/oauth/token");
    assert_eq!(
        t[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        t[0].body_text(),
        "grant_type=refresh_token&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e&refresh_token=r"
    );
    let doc = read_json(&file);
    let o = &doc["claudeAiOauth"];
    assert_eq!(o["accessToken"], "new");
    assert_eq!(
        o["refreshToken"], "r",
        "no refresh token in the reply: the old one stays"
    );
    assert_eq!(o["scopes"], json!(["user:inference"]));
    assert_eq!(o["subscriptionType"], "max");
    assert_eq!(doc["mcpOAuth"], json!({"x": 1}), "sibling fields survive");
    let expires = o["expiresAt"].as_i64().unwrap();
    assert!(
        (before + 3_600_000..=now_ms() + 3_600_000).contains(&expires),
        "expiresAt {expires} is now + 3600 s"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Nothing left behind in the directory but the file itself.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "ccproxy.yaml")
        .collect();
    assert_eq!(names, [".credentials.json"]);

    // The next request uses the new token from cache: no second token request.
    assert_eq!(ask(&gw).await.status(), 200);
    assert_eq!(token.request_count(), 1);
    assert_eq!(
        upstream.requests()[1].header("authorization"),
        Some("Bearer new")
    );
}

#[tokio::test]
async fn the_expiry_edge_is_one_minute() {
    let upstream = MockUpstream::start(Reply::Echo).await;
    let token = MockUpstream::start(token_reply(
        json!({"access_token": "new", "expires_in": 3600}),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = claude_file(dir.path(), "still-good", 61);
    let gw = Gateway::start(&anthropic_oauth(&upstream, &token, &file));
    assert_eq!(ask(&gw).await.status(), 200);
    assert_eq!(token.request_count(), 0, "61 s left: used as is");
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer still-good")
    );
    // Another writer (the host CLI) puts a token with 59 s left: the change is seen at once
    // and the token refreshed.
    claude_file(dir.path(), "nearly-gone", 59);
    assert_eq!(ask(&gw).await.status(), 200);
    assert_eq!(token.request_count(), 1, "59 s left: refreshed");
    assert_eq!(
        upstream.requests()[1].header("authorization"),
        Some("Bearer new")
    );
}

#[tokio::test]
async fn google_credentials_send_the_secret_and_keep_a_rotated_refresh_token() {
    let upstream = MockUpstream::start(Reply::Echo).await;
    let token = MockUpstream::start(token_reply(
        json!({"access_token": "ya29.fresh", "refresh_token": "1//rotated", "expires_in": 3599, "token_type": "Bearer"}),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oauth_creds.json");
    std::fs::write(
        &file,
        json!({"access_token": "ya29.old", "refresh_token": "1//old", "expiry_date": now_ms() - 1000, "scope": "cloud-platform", "token_type": "Bearer"}).to_string(),
    )
    .unwrap();
    let yaml = providers(&[provider(
        "gemini",
        "gemini",
        &upstream,
        &format!(
            "      auth:\n        type: google_oauth\n        file_path: {}\n        endpoint: http://{}/token\n        client_id: cid.apps.googleusercontent.com\n        client_secret: shh\n",
            file.display(),
            token.host_port()
        ),
    )]);
    let gw = Gateway::start(&yaml);
    let resp = client()
        .post(gw.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-gemini")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer ya29.fresh")
    );
    assert_eq!(
        token.requests()[0].body_text(),
        "grant_type=refresh_token&client_id=cid.apps.googleusercontent.com&client_secret=shh&refresh_token=1%2F%2Fold"
    );
    let doc = read_json(&file);
    assert_eq!(doc["access_token"], "ya29.fresh");
    assert_eq!(doc["refresh_token"], "1//rotated");
    assert_eq!(doc["scope"], "cloud-platform");
    assert!(doc["expiry_date"].as_i64().unwrap() > now_ms() + 3_500_000);
}

#[tokio::test]
async fn twenty_concurrent_requests_with_an_expired_token_make_one_token_request() {
    let upstream = MockUpstream::start(Reply::Echo).await;
    let token = MockUpstream::start(Reply::Delay {
        after: Duration::from_millis(300),
        reply: Box::new(token_reply(
            json!({"access_token": "new", "expires_in": 3600}),
        )),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = claude_file(dir.path(), "old", -10);
    let gw = Gateway::start(&anthropic_oauth(&upstream, &token, &file));
    let all = futures::future::join_all((0..20).map(|_| ask(&gw))).await;
    for r in &all {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(token.request_count(), 1, "single flight");
    assert!(upstream
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer new")));
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_502_naming_the_provider_and_the_file_stays() {
    let upstream = MockUpstream::start(Reply::Echo).await;
    let token = MockUpstream::start(Reply::Json {
        status: 400,
        body: json!({"error": "invalid_grant", "error_description": "Refresh token expired"}),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = claude_file(dir.path(), "old", -10);
    let original = std::fs::read(&file).unwrap();
    let gw = Gateway::start(&anthropic_oauth(&upstream, &token, &file));
    let resp = ask(&gw).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'anthropic'"), "{message}");
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(
        !message.contains("\"r\""),
        "no refresh token in the message: {message}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), original, "file untouched");
    assert_eq!(upstream.request_count(), 0);
    // Retried on the next request (not in a loop, not never).
    assert_eq!(token.request_count(), 1);
    assert_eq!(ask(&gw).await.status(), 502);
    assert_eq!(token.request_count(), 2);
}

/// A provider that accepts only `Bearer <good>` and answers 401 otherwise.
fn accepts_only(good: &'static str) -> Reply {
    Reply::script(move |r: &Recorded, _| {
        if r.header("authorization") == Some(&format!("Bearer {good}")) {
            Reply::Json {
                status: 200,
                body: json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}),
            }
        } else {
            Reply::Json {
                status: 401,
                body: json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
            }
        }
    })
}

#[tokio::test]
async fn a_401_refreshes_an_oauth_token_that_looked_valid_and_replays_once() {
    let upstream = MockUpstream::start(accepts_only("new")).await;
    let token = MockUpstream::start(token_reply(
        json!({"access_token": "new", "expires_in": 3600}),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Valid for an hour by its expiry, but revoked upstream.
    let file = claude_file(dir.path(), "revoked", 3600);
    let gw = Gateway::start(&anthropic_oauth(&upstream, &token, &file));
    let resp = ask(&gw).await;
    assert_eq!(
        resp.status(),
        200,
        "the client sees only the replay's answer"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "ok");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("authorization"), Some("Bearer revoked"));
    assert_eq!(seen[1].header("authorization"), Some("Bearer new"));
    assert_eq!(seen[0].body, seen[1].body, "the same request, sent again");
    assert_eq!(token.request_count(), 1);
    assert_eq!(read_json(&file)["claudeAiOauth"]["accessToken"], "new");
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "ccproxy_upstream_retries_total{provider=\"anthropic\",reason=\"auth_refresh\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_401_replays_once_with_a_changed_command_credential_and_never_twice() {
    // Spec §16.1 case 9: the source returns tok1, then tok2.
    let upstream = MockUpstream::start(accepts_only("tok2")).await;
    let dir = tempfile::tempdir().unwrap();
    let cmd = crate::support::first_tok1_then_tok2(dir.path());
    let yaml = providers(&[provider(
        "anthropic",
        "anthropic",
        &upstream,
        &format!("      auth:\n        command: '{cmd}'\n"),
    )]);
    let gw = Gateway::start(&yaml);
    assert_eq!(ask(&gw).await.status(), 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok1"));
    assert_eq!(seen[1].header("authorization"), Some("Bearer tok2"));
}

#[tokio::test]
async fn a_401_with_an_unchanged_credential_reaches_the_client() {
    let upstream = MockUpstream::start(accepts_only("never")).await;
    let yaml = providers(&[provider(
        "anthropic",
        "anthropic",
        &upstream,
        "      auth:\n        command: echo same\n",
    )]);
    let gw = Gateway::start(&yaml);
    let resp = ask(&gw).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        upstream.request_count(),
        1,
        "no replay with the same credential"
    );
}

#[tokio::test]
async fn status_shows_the_auth_type_and_token_lifetime_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = claude_file(dir.path(), "sk-ant-oat01-secret-value", 7200);
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        format!(
            "ccproxy:\n  port: {}\n  metrics: null\n  inspector:\n    listen: null\n  providers:\n    anthropic:\n      host: api.anthropic.com\n      provider: anthropic\n      auth:\n        type: anthropic_oauth\n        file_path: {}\n",
            crate::support::gateway_port(),
            file.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .arg("--config")
            .arg(dir.path())
            .args(args)
            .env_remove("CCPROXY_CONFIG_DIR")
            .output()
            .unwrap()
    };
    let out = run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["providers"][0];
    assert_eq!(p["auth"], "anthropic_oauth");
    let left = p["token"]["expires_in_s"].as_i64().unwrap();
    assert!((7100..=7200).contains(&left), "{left}");
    let out = run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("anthropic_oauth, token valid for 1h 59m"),
        "{text}"
    );
    for o in [&out.stdout, &run(&["status", "--json"]).stdout] {
        assert!(!String::from_utf8_lossy(o).contains("secret-value"));
    }
}
