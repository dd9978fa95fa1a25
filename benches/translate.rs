//! Translator micro-benchmarks (divan): `cargo bench --bench translate`.
//!
//! Request translation on a 2 KB chat body and on a ~300 KB Claude-Code-like body with 40 tools
//! (OpenAI → Anthropic, Anthropic → OpenAI, Anthropic → Gemini), alone and from client bytes to
//! upstream bytes, plus response and stream translation. divan prints the
//! time per call (µs per request).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ccproxy::translate::stream::StreamTranslator;
use ccproxy::translate::{self, Format, Loss, RequestInfo};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The gateway binary's allocator, so the numbers are the shipped ones.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

fn tools_openai(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"type": "function", "function": {"name": format!("tool_{i}"),
            "description": "Performs an operation on the workspace. ".repeat(20),
            "parameters": {"type": "object", "properties": {
                "path": {"type": "string", "description": "Absolute path. ".repeat(10)},
                "content": {"type": "string", "description": "New content. ".repeat(10)}}, "required": ["path"]}}}))
        .collect()
}

/// ~2 KB OpenAI chat request.
fn small_openai() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| {
        json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 512, "messages": [
            {"role": "system", "content": "You are a helpful assistant. ".repeat(10)},
            {"role": "user", "content": "Explain the borrow checker in two paragraphs. ".repeat(20)}
        ], "tools": tools_openai(1)})
    })
}

/// ~300 KB OpenAI request shaped like a Claude Code session: 40 tools, long history with tool calls.
fn large_openai() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| {
        let mut messages = vec![json!({"role": "system", "content": "You are Claude Code. ".repeat(400)})];
        let mut i = 0;
        while serde_json::to_vec(&messages).map_or(0, |v| v.len()) < 250_000 {
            messages.push(json!({"role": "user", "content": "Please refactor the module and explain. ".repeat(40)}));
            messages.push(json!({"role": "assistant", "content": "Reading the file first.", "tool_calls": [
                {"id": format!("call_{i}"), "type": "function", "function": {"name": "tool_1", "arguments": json!({"path": "/src/lib.rs"}).to_string()}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "fn main() {}\n".repeat(60)}));
            i += 1;
        }
        json!({"model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": true, "messages": messages, "tools": tools_openai(40)})
    })
}

fn to_anthropic(v: &Value) -> Value {
    translate::request(
        Format::OpenAi,
        Format::Anthropic,
        v.clone(),
        &RequestInfo::default(),
    )
    .unwrap()
    .body
}

fn body(size: &str) -> &'static Value {
    if size == "2KB" {
        small_openai()
    } else {
        large_openai()
    }
}

/// The same request as an Anthropic body (Claude Code's own format).
fn anthropic_body(size: &str) -> &'static Value {
    static SMALL: OnceLock<Value> = OnceLock::new();
    static LARGE: OnceLock<Value> = OnceLock::new();
    let cell = if size == "2KB" { &SMALL } else { &LARGE };
    cell.get_or_init(|| to_anthropic(body(size)))
}

/// Translation alone: the tree in, the translated tree out (the input is consumed, so each
/// run gets a fresh copy made outside the timing).
#[divan::bench(args = ["2KB", "300KB"])]
fn openai_to_anthropic_request(bencher: divan::Bencher<'_, '_>, size: &str) {
    let v = body(size);
    bencher.with_inputs(|| v.clone()).bench_values(|v| {
        translate::request(
            Format::OpenAi,
            Format::Anthropic,
            v,
            &RequestInfo::default(),
        )
        .unwrap()
    });
}

#[divan::bench(args = ["2KB", "300KB"])]
fn anthropic_to_openai_request(bencher: divan::Bencher<'_, '_>, size: &str) {
    let hub = anthropic_body(size);
    bencher.with_inputs(|| hub.clone()).bench_values(|v| {
        translate::request(
            Format::Anthropic,
            Format::OpenAi,
            v,
            &RequestInfo::default(),
        )
        .unwrap()
    });
}

#[divan::bench(args = ["2KB", "300KB"])]
fn anthropic_to_gemini_request(bencher: divan::Bencher<'_, '_>, size: &str) {
    let hub = anthropic_body(size);
    bencher.with_inputs(|| hub.clone()).bench_values(|v| {
        translate::request(
            Format::Anthropic,
            Format::Gemini,
            v,
            &RequestInfo::default(),
        )
        .unwrap()
    });
}

/// What the gateway does per translated request: parse the client's bytes, translate,
/// serialize the upstream bytes.
fn bytes_to_bytes(bencher: divan::Bencher<'_, '_>, from: Format, to: Format, v: &Value) {
    let bytes = serde_json::to_vec(v).unwrap();
    bencher.bench(|| {
        let v: Value = serde_json::from_slice(divan::black_box(&bytes)).unwrap();
        let t = translate::request(from, to, v, &RequestInfo::default()).unwrap();
        translate::serialize::to_vec(&t.body)
    });
}

#[divan::bench(args = ["2KB", "300KB"])]
fn openai_to_anthropic_request_from_bytes(bencher: divan::Bencher<'_, '_>, size: &str) {
    bytes_to_bytes(bencher, Format::OpenAi, Format::Anthropic, body(size));
}

#[divan::bench(args = ["2KB", "300KB"])]
fn anthropic_to_openai_request_from_bytes(bencher: divan::Bencher<'_, '_>, size: &str) {
    bytes_to_bytes(
        bencher,
        Format::Anthropic,
        Format::OpenAi,
        anthropic_body(size),
    );
}

#[divan::bench(args = ["2KB", "300KB"])]
fn anthropic_to_gemini_request_from_bytes(bencher: divan::Bencher<'_, '_>, size: &str) {
    bytes_to_bytes(
        bencher,
        Format::Anthropic,
        Format::Gemini,
        anthropic_body(size),
    );
}

/// The floor under the three above: parsing and serializing the body without translating it.
#[divan::bench(args = ["2KB", "300KB"])]
fn parse_and_serialize_only(bencher: divan::Bencher<'_, '_>, size: &str) {
    let bytes = serde_json::to_vec(anthropic_body(size)).unwrap();
    bencher.bench(|| {
        let v: Value = serde_json::from_slice(divan::black_box(&bytes)).unwrap();
        translate::serialize::to_vec(&v)
    });
}

/// The parse half of the floor (`serde_json::from_slice` into a `Value`).
#[divan::bench(args = ["2KB", "300KB"])]
fn parse_only(bencher: divan::Bencher<'_, '_>, size: &str) {
    let bytes = serde_json::to_vec(anthropic_body(size)).unwrap();
    bencher.bench(|| serde_json::from_slice::<Value>(divan::black_box(&bytes)).unwrap());
}

/// The serialize half: ccproxy's writer (what the gateway sends) and `serde_json::to_vec`.
#[divan::bench(args = ["ccproxy", "serde_json"])]
fn serialize_300kb(bencher: divan::Bencher<'_, '_>, writer: &str) {
    let v = anthropic_body("300KB");
    if writer == "ccproxy" {
        bencher.bench(|| translate::serialize::to_vec(divan::black_box(v)));
    } else {
        bencher.bench(|| serde_json::to_vec(divan::black_box(v)).unwrap());
    }
}

#[divan::bench]
fn anthropic_to_openai_response() {
    let body = json!({"id": "msg_1", "model": "claude-haiku-4-5-20251001", "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "Hello! ".repeat(50)}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        "usage": {"input_tokens": 12, "output_tokens": 7}});
    divan::black_box(
        translate::response(
            Format::Anthropic,
            Format::OpenAi,
            body,
            "m",
            &mut Loss::default(),
        )
        .unwrap(),
    );
}

#[divan::bench]
fn anthropic_to_openai_stream_64_events(bencher: divan::Bencher<'_, '_>) {
    let mut s = String::new();
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":5}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..64 {
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {i} \"}}}}\n\n"));
    }
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":64}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    let bytes = s.into_bytes();
    bencher.bench(|| {
        let mut t = StreamTranslator::new(Format::Anthropic, Format::OpenAi, "m").unwrap();
        let mut out = Vec::with_capacity(bytes.len() * 2);
        for chunk in bytes.chunks(512) {
            out.extend(t.push(chunk));
        }
        out.extend(t.finish());
        out
    });
}
