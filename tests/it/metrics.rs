//! The Prometheus scrape endpoint: every metric the gateway exports is counted by a test here.

use crate::support::mock::{Gate, MockUpstream, Reply};
use crate::support::{
    client, provider, providers, sample, sentinel_bearer, sentinel_post, Gateway,
};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn requests_latency_overhead_and_in_flight_are_exported() {
    let gate = Gate::new();
    let sse = MockUpstream::start(Reply::Sse {
        events: vec!["data: {}\n\n".to_owned(), "data: [DONE]\n\n".to_owned()],
        gate: Some(gate.clone()),
    })
    .await;
    let plain = MockUpstream::start(Reply::Echo).await;
    let gw = Gateway::start(&providers(&[
        provider("streamer", "anthropic", &sse, "      auth: echo t\n"),
        provider("plain", "openai", &plain, "      auth: echo t\n"),
    ]));

    for _ in 0..3 {
        let r = sentinel_bearer(&gw, "/v1/chat/completions", "plain")
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    client().get(gw.url("/health")).send().await.unwrap();
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();

    // Hold one stream open: it is in flight until the upstream finishes.
    let r = sentinel_post(&gw, "/v1/messages", "streamer")
        .json(&json!({"model": "m", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let m = gw.metrics().await;
    assert_eq!(sample(&m, "ccproxy_requests_in_flight "), Some(1.0), "{m}");
    gate.open();
    while stream.next().await.is_some() {}

    // `logging` runs right after the last byte, possibly just after the client saw it: poll
    // the scrape (bounded) until the stream is no longer in flight, then check everything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut m = gw.metrics().await;
    while sample(&m, "ccproxy_requests_in_flight ") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "stream still in flight:\n{m}"
        );
        tokio::task::yield_now().await;
        m = gw.metrics().await;
    }
    let count = |p: &str| sample(&m, p).unwrap_or_else(|| panic!("missing {p} in\n{m}"));
    assert_eq!(
        count("ccproxy_requests_total{action=\"redirect\",provider=\"plain\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        count("ccproxy_requests_total{action=\"redirect\",provider=\"streamer\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        count("ccproxy_requests_total{action=\"synthetic\",provider=\"none\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        count("ccproxy_requests_total{action=\"none\",provider=\"none\",status=\"501\"}"),
        1.0
    );
    assert_eq!(
        count("ccproxy_upstream_latency_seconds_count{provider=\"plain\"}"),
        3.0
    );
    assert_eq!(
        count("ccproxy_upstream_latency_seconds_count{provider=\"streamer\"}"),
        1.0
    );
    // Every proxied or failed request (not the synthetic one) records its overhead.
    assert_eq!(count("ccproxy_overhead_seconds_count"), 5.0);
    assert!(count("ccproxy_overhead_seconds_sum") > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn scrape_endpoint_only_serves_metrics() {
    let gw = Gateway::start("");
    let r = reqwest::get(&gw.metrics_url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let r = reqwest::get(gw.metrics_url.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
