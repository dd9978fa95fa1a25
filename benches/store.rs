//! Flow store writer cost: `cargo bench --bench store [-- --flows N]`.
//!
//! Queues flows shaped like S1's (a small OpenAI chat request and its answer, a handful of
//! headers per message) into a store on disk with the shipped settings and retention (10,000
//! flows kept), and prints the writer thread's CPU time per stored flow, read from
//! `/proc/self/task/<writer>/schedstat`. The store is filled first, so every measured flow also
//! pays a retention delete. Nothing else runs meanwhile, so this is the writer's own cost, not
//! its competition with a gateway (S9 in the gateway benchmark measures that).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use ccproxy::inspector::store::{
    self, Captured, CapturedBody, CapturedHeaders, CapturedMessage, Retention, StoreMsg,
};
use ccproxy::telemetry::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast::error::RecvError;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUEST: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;
const RESPONSE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
/// What the queue takes at once (its cap is 8,192 flows).
const ROUND: usize = 4000;

fn headers(pairs: &[(&'static str, &str)]) -> CapturedHeaders {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, v.parse().unwrap());
    }
    CapturedHeaders::copy(&map)
}

fn flow(seq: u64, n: u64) -> Captured {
    let request = Bytes::from_static(REQUEST.as_bytes());
    let response = Bytes::from_static(RESPONSE.as_bytes());
    let len = request.len().to_string();
    let mut provider_body = CapturedBody::default();
    provider_body.push(&response, 1 << 20);
    let mut client_body = CapturedBody::default();
    client_body.total = response.len() as u64;
    let request_headers = |host: &str| {
        headers(&[
            ("content-type", "application/json"),
            ("content-length", &len),
            ("authorization", "Bearer sk-ant-oat-ccproxy-openai"),
            ("host", host),
        ])
    };
    let response_headers = || {
        headers(&[
            ("server", "nginx"),
            ("date", "Thu, 03 Dec 2026 21:02:58 GMT"),
            ("content-type", "application/json"),
            ("content-length", "240"),
            ("connection", "keep-alive"),
        ])
    };
    Captured {
        id: format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        seq,
        started_wall: SystemTime::now(),
        host: "127.0.0.1:8080".into(),
        path: "/v1/chat/completions".into(),
        url: "http://127.0.0.1:8080/v1/chat/completions".into(),
        client_format: Some("openai"),
        client_model: Some("gpt-4o-mini".into()),
        client_request: Some(CapturedMessage {
            method: Some("POST".into()),
            url: Some("http://127.0.0.1:8080/v1/chat/completions".into()),
            status: None,
            headers: request_headers("127.0.0.1:8080"),
            body: Some(CapturedBody::whole(&request, 1 << 20)),
        }),
        forwarded_request: Some(CapturedMessage {
            method: Some("POST".into()),
            url: Some("http://127.0.0.1:9000/v1/chat/completions".into()),
            status: None,
            headers: request_headers("127.0.0.1:9000"),
            body: Some(CapturedBody::whole(&request, 1 << 20)),
        }),
        provider_response: Some(CapturedMessage {
            status: Some(200),
            headers: response_headers(),
            body: Some(provider_body),
            ..CapturedMessage::default()
        }),
        client_response: Some(CapturedMessage {
            status: Some(200),
            headers: response_headers(),
            body: Some(client_body),
            ..CapturedMessage::default()
        }),
        client_same_as_provider: true,
        attempts: 1,
        status: 200,
        provider: "openai".into(),
        action: "redirect",
        provider_format: Some("openai"),
        ..Captured::default()
    }
}

/// CPU nanoseconds the thread named `name` has run (schedstat's first field).
fn thread_cpu_ns(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap();
            return stat.split_whitespace().next().unwrap().parse().unwrap();
        }
    }
    panic!("no thread named {name}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flows: usize = args
        .iter()
        .position(|a| a == "--flows")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(40_000);
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_flows: 10_000,
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: 1 << 30,
    };
    let (store, writer) = store::open(
        Some(&dir.path().join("flows.db")),
        retention,
        Arc::new(Metrics::new().unwrap()),
        None,
    )
    .unwrap();
    let mut events = store.subscribe();
    let mut n = 0u64;
    // Queue `count` flows (in rounds the queue can hold) and wait until all are stored.
    let mut run = |count: usize| {
        let mut stored = 0usize;
        let mut sent = 0usize;
        while stored < count {
            if sent == stored {
                for _ in 0..ROUND.min(count - sent) {
                    n += 1;
                    writer.send(StoreMsg::Finish(Box::new(flow(writer.next_seq(), n))));
                    sent += 1;
                }
            }
            match events.blocking_recv() {
                Ok(_) => stored += 1,
                Err(RecvError::Lagged(k)) => stored += k as usize,
                Err(RecvError::Closed) => panic!("writer gone"),
            }
        }
    };
    run(12_000);
    let cpu0 = thread_cpu_ns("ccproxy-flows");
    let t0 = Instant::now();
    run(flows);
    let wall = t0.elapsed();
    let cpu = thread_cpu_ns("ccproxy-flows") - cpu0;
    let size = std::fs::metadata(dir.path().join("flows.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("flows.db-wal")).map_or(0, |m| m.len());
    println!("flow store writer, S1-shaped flows, 10,000 kept (every flow also evicts one)");
    println!(
        "  {flows} flows: writer CPU {:.1} µs/flow, wall {:.1} µs/flow, {} flows kept, files {:.1} MB",
        cpu as f64 / 1e3 / flows as f64,
        wall.as_secs_f64() * 1e6 / flows as f64,
        store.count().unwrap(),
        size as f64 / 1e6
    );
}
