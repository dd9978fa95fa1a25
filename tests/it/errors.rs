//! Upstream failures become JSON errors in the client's API format with 502/504.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::{
    gateway_port, json, provider, providers, sentinel_bearer, sentinel_post, Gateway,
};
use serde_json::json;
use std::time::Duration;

fn dead_provider(port: u16) -> String {
    providers(&[format!(
        "    dead:\n      host: 127.0.0.1:{port}\n      scheme: http\n      provider: anthropic\n      auth: echo t\n    deadai:\n      host: 127.0.0.1:{port}\n      scheme: http\n      provider: openai\n      auth: echo t\n"
    )])
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_502_in_anthropic_shape() {
    // Nobody listens there, and no other test will (see gateway_port).
    let port = gateway_port();
    let gw = Gateway::start(&dead_provider(port));
    let r = sentinel_post(&gw, "/v1/messages", "dead")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v = json(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("refused") && msg.contains(&port.to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_502_in_openai_shape() {
    // Nobody listens there, and no other test will (see gateway_port).
    let port = gateway_port();
    let gw = Gateway::start(&dead_provider(port));
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "deadai")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v = json(r).await;
    assert_eq!(v["error"]["code"], 502);
    assert_eq!(v["error"]["type"], "api_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_504() {
    let mock = MockUpstream::start(Reply::Delay {
        after: Duration::from_secs(5),
        reply: Box::new(Reply::Status(200)),
    })
    .await;
    let gw = Gateway::start(&format!(
        "  timeouts:\n    shutdown_seconds: 0\n    read_seconds: 0.3\n{}",
        providers(&[provider("slow", "anthropic", &mock, "      auth: echo t\n")])
    ));
    let r = sentinel_post(&gw, "/v1/messages", "slow")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let v = json(r).await;
    assert_eq!(v["error"]["type"], "timeout_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_error_status_and_body_pass_through_untouched() {
    let mock = MockUpstream::start(Reply::Json {
        status: 429,
        body: json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
    })
    .await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo t\n");
    let r = sentinel_post(&gw, "/v1/messages", "a")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(json(r).await["error"]["message"], "slow down");
}
