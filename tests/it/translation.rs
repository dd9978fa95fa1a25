//! Cross-format translation end to end through the gateway: OpenAI clients on an Anthropic
//! provider and Anthropic clients (Claude Code) on an OpenAI-compatible provider, buffered and
//! streamed, plus count_tokens, error bodies and the loss report.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::{
    client, event_types, json, provider, providers, sample, sentinel_bearer, sentinel_post, Gateway,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

fn anthropic_message() -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "Hello!"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3}}),
    }
}

/// An Anthropic SSE stream with one text block made of `pieces`.
fn anthropic_text_events(
    id: &str,
    model: &str,
    pieces: &[&str],
    input: u64,
    output: u64,
) -> Vec<String> {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
            "model": model, "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for p in pieces {
        out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn sse_events(s: &str) -> Vec<Value> {
    s.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_client_on_anthropic_provider_spec_case_4() {
    let mock = MockUpstream::start(anthropic_message()).await;
    let gw = Gateway::with_provider(
        "anthropic",
        "anthropic",
        &mock,
        "      path: /v1/messages\n      auth: echo sk-ant-oat01-tok\n",
    );
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "anthropic")
        .json(&json!({"model":"claude-haiku-4-5-20251001","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hello"}],"max_tokens":100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-ccproxy-translation-loss").is_none());
    let v = json(r).await;
    let got = &mock.requests()[0];
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(
        got.json(),
        json!({"model":"claude-haiku-4-5-20251001","messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}],"max_tokens":100,"system":[{"type":"text","text":"You are terse."}]})
    );
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(got.header("authorization"), Some("Bearer sk-ant-oat01-tok"));
    assert_eq!(got.header("anthropic-beta"), Some("oauth-2025-04-20"));
    assert_eq!(v["object"], "chat.completion");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["content"], "Hello!");
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        c["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(v["usage"]["prompt_tokens"], 15);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_client_streams_from_anthropic_provider_and_ends_with_done() {
    let events = anthropic_text_events("msg_s", "claude-x", &["Hi"], 5, 2);
    let mock = MockUpstream::start(Reply::Sse { events, gate: None }).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "a")
        .json(&json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = String::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        body.push_str(&String::from_utf8_lossy(&c.unwrap()));
    }
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let ev = sse_events(&body);
    assert!(ev.iter().all(|e| e["object"] == "chat.completion.chunk"));
    assert_eq!(ev[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(ev[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[3]["usage"]["completion_tokens"], 2);
    assert_eq!(mock.requests()[0].json()["stream"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_on_openai_compatible_provider_buffered_and_streamed() {
    let mock = MockUpstream::start(Reply::Json {
        status: 200,
        body: json!({"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-x", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "done"}}], "usage": {"prompt_tokens": 4, "completion_tokens": 1}}),
    })
    .await;
    let gw = Gateway::with_provider("oai", "openai", &mock, "      auth: echo sk-oai\n");
    let r = sentinel_post(&gw, "/v1/messages", "oai")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&json!({"model": "gpt-x", "max_tokens": 50, "top_k": 3,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let loss = r.headers()["x-ccproxy-translation-loss"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(loss, "system[0].cache_control,top_k");
    let v = json(r).await;
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "done"}));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 4);
    let got = &mock.requests()[0];
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.header("authorization"), Some("Bearer sk-oai"));
    assert!(!got.has_header("anthropic-version") && !got.has_header("anthropic-beta"));
    assert_eq!(
        got.json()["messages"][0],
        json!({"role": "system", "content": "sys"})
    );
    let m = gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            "ccproxy_translation_loss_total{field=\"top_k\",from=\"anthropic\",to=\"openai\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_stream_from_openai_provider_has_anthropic_grammar() {
    let chunks = [
        "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"p\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    ];
    let mock = MockUpstream::start(Reply::Sse {
        events: chunks.iter().map(|s| s.to_string()).collect(),
        gate: None,
    })
    .await;
    let gw = Gateway::with_provider("oai", "openai", &mock, "      auth: echo sk-oai\n");
    let r = sentinel_post(&gw, "/v1/messages", "oai")
        .json(&json!({"model": "gpt", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let ev = sse_events(&text);
    let types = event_types(&ev);
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(ev[4]["content_block"]["id"], "call_1");
    assert_eq!(ev[8]["delta"]["stop_reason"], "tool_use");
    assert!(text.contains("event: content_block_delta\n"));
    assert_eq!(
        mock.requests()[0].json()["stream_options"],
        json!({"include_usage": true})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn count_tokens_is_native_for_anthropic_and_estimated_otherwise() {
    let native = MockUpstream::start(Reply::Json {
        status: 200,
        body: json!({"input_tokens": 42}),
    })
    .await;
    let oai = MockUpstream::start(Reply::Status(500)).await;
    let gw = Gateway::start(&providers(&[
        provider(
            "a",
            "anthropic",
            &native,
            "      path: /v1/messages\n      auth: echo k\n",
        ),
        provider("oai", "openai", &oai, "      auth: echo k\n"),
    ]));
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hello world ".repeat(40)}]});
    let r = sentinel_post(&gw, "/v1/messages/count_tokens", "a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["input_tokens"], 42);
    assert_eq!(native.requests()[0].path, "/v1/messages/count_tokens");
    let r = sentinel_post(&gw, "/v1/messages/count_tokens", "oai")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ccproxy-token-estimate"], "local");
    let n = json(r).await["input_tokens"].as_u64().unwrap();
    assert!((80..200).contains(&n), "{n}");
    assert_eq!(oai.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_errors_keep_status_and_take_the_client_format() {
    let mock = MockUpstream::start(Reply::Json {
        status: 401,
        body: json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}),
    })
    .await;
    let gw = Gateway::with_provider("oai", "openai", &mock, "      auth: echo bad\n");
    let r = sentinel_post(&gw, "/v1/messages", "oai")
        .json(&json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v = json(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["message"], "Incorrect API key provided");
}

#[tokio::test(flavor = "multi_thread")]
async fn untranslatable_request_is_a_clear_400_not_a_truncation() {
    let mock = MockUpstream::start(anthropic_message()).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "a")
        .json(&json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v = json(r).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("arguments is not valid JSON"),
        "{v}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_client_on_gemini_provider_buffered_and_streamed() {
    let reply = Reply::Json {
        status: 200,
        body: json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Bonjour"}]}, "finishReason": "STOP"}],
                     "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 2}, "modelVersion": "gemini-2.5-flash"}),
    };
    let mock = MockUpstream::start(reply).await;
    let gw = Gateway::with_provider(
        "g",
        "gemini",
        &mock,
        "      auth:\n        command: echo AIza-key\n        header: x-goog-api-key\n",
    );
    let r = sentinel_bearer(&gw, "/v1/chat/completions", "g")
        .json(&json!({"model": "gemini-2.5-flash", "temperature": 0.1, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["usage"]["total_tokens"], 8);
    let got = &mock.requests()[0];
    assert_eq!(got.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(got.header("x-goog-api-key"), Some("AIza-key"));
    let b = got.json();
    assert_eq!(
        b["contents"],
        json!([{"role": "user", "parts": [{"text": "hi"}]}])
    );
    assert_eq!(
        b["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(b["generationConfig"]["temperature"], 0.1);

    let sse = MockUpstream::start(Reply::Sse {
        events: vec![
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Bon\"}]}}]}\n\n".into(),
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"jour\"}]},\"finishReason\":\"STOP\"}]}\n\n".into(),
        ],
        gate: None,
    })
    .await;
    let gw = Gateway::with_provider("g", "gemini", &sse, "      auth: echo ya29.tok\n");
    let text = sentinel_bearer(&gw, "/v1/chat/completions", "g")
        .json(&json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let joined: String = sse_events(&text)
        .iter()
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(joined, "Bonjour");
    let got = &sse.requests()[0];
    assert_eq!(
        got.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(got.header("authorization"), Some("Bearer ya29.tok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_sdk_client_on_anthropic_provider() {
    let mock = MockUpstream::start(anthropic_message()).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let r = client()
        .post(gw.url("/v1beta/models/claude-haiku-4-5-20251001:generateContent"))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-a")
        .json(
            &json!({"contents": [{"role": "user", "parts": [{"text": "weather in Paris?"}]}],
                      "generationConfig": {"maxOutputTokens": 200}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    let parts = &v["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0]["text"], "Hello!");
    assert_eq!(
        parts[1]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris"}})
    );
    let got = mock.requests()[0].json();
    assert_eq!(got["model"], "claude-haiku-4-5-20251001");
    assert_eq!(got["max_tokens"], 200);
    assert_eq!(
        got["messages"][0]["content"][0]["text"],
        "weather in Paris?"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_api_client_on_anthropic_provider_buffered_and_streamed() {
    let mock = MockUpstream::start(anthropic_message()).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let r = sentinel_bearer(&gw, "/v1/responses", "a")
        .json(&json!({"model": "claude-haiku-4-5-20251001", "instructions": "Be terse.", "input": "weather in Paris?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["object"], "response");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "toolu_1");
    let got = mock.requests()[0].json();
    assert_eq!(
        got["system"],
        json!([{"type": "text", "text": "Be terse."}])
    );
    assert_eq!(mock.requests()[0].path, "/v1/messages");

    let events = anthropic_text_events("msg_r", "claude-x", &["Sunny"], 3, 1);
    let sse = MockUpstream::start(Reply::Sse { events, gate: None }).await;
    let gw = Gateway::with_provider("a", "anthropic", &sse, "      auth: echo k\n");
    let text = sentinel_bearer(&gw, "/v1/responses", "a")
        .json(&json!({"model": "claude-x", "stream": true, "input": [{"role": "user", "content": "weather?"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ev = sse_events(&text);
    let types = event_types(&ev);
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(ev[4]["delta"], "Sunny");
    assert_eq!(
        ev[8]["response"]["output"][0]["content"][0]["text"],
        "Sunny"
    );
    assert_eq!(ev[8]["response"]["usage"]["total_tokens"], 4);
    let seqs: Vec<u64> = ev
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..9).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_on_gemini_provider_buffered_and_streamed_with_key_detection() {
    let mock = MockUpstream::start(Reply::Json {
        status: 200,
        body: json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "plan", "thought": true, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": "c2lnMg=="}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4}}),
    })
    .await;
    let gw = Gateway::with_provider("g", "gemini", &mock, "      auth: echo AIza-plain-key\n");
    let r = sentinel_post(&gw, "/v1/messages", "g")
        .json(&json!({"model": "gemini-2.5-pro", "max_tokens": 1000, "messages": [{"role": "user", "content": "ls please"}],
                      "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(
        v["content"][0],
        json!({"type": "thinking", "thinking": "plan", "signature": "c2ln"})
    );
    assert_eq!(v["content"][1]["name"], "Bash");
    assert_eq!(v["stop_reason"], "tool_use");
    let got = &mock.requests()[0];
    // An API key (not ya29.) goes in x-goog-api-key without any auth.header setting.
    assert_eq!(got.header("x-goog-api-key"), Some("AIza-plain-key"));
    assert!(!got.has_header("authorization"));
    assert_eq!(got.path, "/v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(got.json()["generationConfig"]["maxOutputTokens"], 1000);

    let sse = MockUpstream::start(Reply::Sse {
        events: vec![
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi \"}]}}]}\n\n".into(),
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"there\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":2}}\n\n".into(),
        ],
        gate: None,
    })
    .await;
    let gw = Gateway::with_provider("g", "gemini", &sse, "      auth: echo ya29.oauth\n");
    let text = sentinel_post(&gw, "/v1/messages", "g")
        .json(&json!({"model": "gemini-2.5-pro", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ev = sse_events(&text);
    let types = event_types(&ev);
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let got = &sse.requests()[0];
    assert_eq!(got.header("authorization"), Some("Bearer ya29.oauth"));
    assert_eq!(
        got.path,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_sdk_stream_from_anthropic_provider() {
    let events = anthropic_text_events("msg_g", "claude-x", &["Ciao"], 4, 1);
    let mock = MockUpstream::start(Reply::Sse { events, gate: None }).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let text = client()
        .post(gw.url("/v1beta/models/claude-x:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", "sk-ant-oat-ccproxy-a")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ev = sse_events(&text);
    assert_eq!(
        ev[0]["candidates"][0]["content"]["parts"][0]["text"],
        "Ciao"
    );
    assert_eq!(ev[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(ev[1]["usageMetadata"]["totalTokenCount"], 5);
    let got = mock.requests()[0].json();
    assert_eq!(got["stream"], true);
    assert_eq!(got["model"], "claude-x");
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_provider_reply_is_forwarded_intact_not_mangled() {
    let gz: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x02, 0x03,
    ];
    let mock = MockUpstream::start(Reply::Raw {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("content-encoding".into(), "gzip".into()),
        ],
        body: bytes::Bytes::from_static(gz),
    })
    .await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = raw
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-ant-oat-ccproxy-a")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        mock.requests()[0].header("accept-encoding"),
        Some("identity")
    );
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(&r.bytes().await.unwrap()[..], gz);
}

#[tokio::test(flavor = "multi_thread")]
async fn transform_rule_translates_to_its_provider_and_dest_model() {
    let mock = MockUpstream::start(anthropic_message()).await;
    let cfg = format!(
        "{}  inspector:\n    transforms:\n      - match_model: \"^gpt-4o\"\n        action: transform\n        dest_provider: claude\n        dest_model: claude-haiku-4-5-20251001\n",
        providers(&[provider("claude", "anthropic", &mock, "      auth:\n        command: echo sk-ant-api03-k\n        header: x-api-key\n")])
    );
    let gw = Gateway::start(&cfg);
    // No sentinel: the rule alone routes, translates and supplies the credential.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-client-own-key")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["choices"][0]["message"]["content"], "Hello!");
    let got = &mock.requests()[0];
    assert_eq!(got.json()["model"], "claude-haiku-4-5-20251001");
    assert_eq!(got.header("x-api-key"), Some("sk-ant-api03-k"));
    assert!(
        !got.has_header("authorization"),
        "client's own key must not leak: {:?}",
        got.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_responses_work_for_http2_clients() {
    let mock = MockUpstream::start(anthropic_message()).await;
    let gw = Gateway::with_provider("a", "anthropic", &mock, "      auth: echo k\n");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-ant-oat-ccproxy-a")
        .json(&json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["choices"][0]["message"]["content"], "Hello!");
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_answering_a_stream_request_with_json_still_streams_to_the_client() {
    // Some OpenAI-compatible servers ignore `stream: true` and answer with one JSON body.
    let mock = MockUpstream::start(Reply::Json {
        status: 200,
        body: json!({"id": "chatcmpl-j", "object": "chat.completion", "model": "local", "choices": [{"index": 0,
            "finish_reason": "stop", "message": {"role": "assistant", "content": "whole answer"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    })
    .await;
    let gw = Gateway::with_provider("oai", "openai", &mock, "      auth: echo k\n");
    let r = sentinel_post(&gw, "/v1/messages", "oai")
        .json(&json!({"model": "local", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = sse_events(&r.text().await.unwrap());
    let types = event_types(&ev);
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(ev[2]["delta"]["text"], "whole answer");
    assert_eq!(ev[4]["usage"]["output_tokens"], 2);
}

/// A Gemini API mock with `cachedContents`: entries created are listed afterwards; with
/// `broken`, listing fails.
fn gemini_with_caches(broken: bool) -> (Reply, Arc<Mutex<Vec<Value>>>) {
    let created: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = created.clone();
    let reply = Reply::script(move |r: &crate::support::mock::Recorded, _| {
        if r.path.starts_with("/v1beta/cachedContents") {
            if broken {
                return Reply::Status(500);
            }
            if r.method == "GET" {
                let items: Vec<Value> = store.lock().unwrap().clone();
                return Reply::Json {
                    status: 200,
                    body: json!({"cachedContents": items}),
                };
            }
            let mut entry = r.json();
            let n = store.lock().unwrap().len();
            entry["name"] = json!(format!("cachedContents/c{n}"));
            store.lock().unwrap().push(entry.clone());
            return Reply::Json {
                status: 200,
                body: entry,
            };
        }
        Reply::Json {
            status: 200,
            body: json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
                         "usageMetadata": {"promptTokenCount": 2000, "candidatesTokenCount": 1, "cachedContentTokenCount": 1900}}),
        }
    });
    (reply, created)
}

fn cacheable_request() -> Value {
    json!({"model": "gemini-2.5-flash", "max_tokens": 20,
           "system": [{"type": "text", "text": "You answer questions about the document.", "cache_control": {"type": "ephemeral"}}],
           "messages": [
             {"role": "user", "content": [{"type": "text", "text": "The document: ".to_owned() + &"lorem ipsum dolor sit amet ".repeat(400), "cache_control": {"type": "ephemeral"}}]},
             {"role": "assistant", "content": "Read it."},
             {"role": "user", "content": "What is it about?"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_context_cache_is_created_then_reused_for_a_marked_prefix() {
    let (reply, created) = gemini_with_caches(false);
    let mock = MockUpstream::start(reply).await;
    let gw = Gateway::with_provider(
        "g",
        "gemini",
        &mock,
        "      auth:\n        command: echo AIza-key\n        header: x-goog-api-key\n",
    );
    for round in 0..2 {
        let r = sentinel_post(&gw, "/v1/messages", "g")
            .json(&cacheable_request())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
    }
    let reqs = mock.requests();
    let generate: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.contains(":generateContent"))
        .collect();
    let cache_calls: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/v1beta/cachedContents"))
        .collect();
    // Round 1: list (miss), create; round 2: list (hit).
    let methods: Vec<&str> = cache_calls.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "GET"]);
    assert_eq!(cache_calls[0].header("x-goog-api-key"), Some("AIza-key"));
    let entry = &created.lock().unwrap()[0];
    assert_eq!(entry["model"], "models/gemini-2.5-flash");
    assert_eq!(entry["contents"].as_array().unwrap().len(), 1);
    assert!(entry["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("document"));
    for g in generate {
        let b = g.json();
        assert_eq!(b["cachedContent"], "cachedContents/c0");
        assert!(b.get("systemInstruction").is_none());
        let contents = b["contents"].as_array().unwrap();
        assert_eq!(
            contents.len(),
            2,
            "only the messages after the cached prefix"
        );
        assert_eq!(contents[1]["parts"][0]["text"], "What is it about?");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_context_cache_failure_sends_the_request_unchanged() {
    let (reply, _) = gemini_with_caches(true);
    let mock = MockUpstream::start(reply).await;
    let gw = Gateway::with_provider(
        "g",
        "gemini",
        &mock,
        "      auth:\n        command: echo AIza-key\n        header: x-goog-api-key\n",
    );
    let r = sentinel_post(&gw, "/v1/messages", "g")
        .json(&cacheable_request())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let generate = mock
        .requests()
        .into_iter()
        .find(|r| r.path.contains(":generateContent"))
        .unwrap();
    let b = generate.json();
    assert!(b.get("cachedContent").is_none());
    assert_eq!(b["contents"].as_array().unwrap().len(), 3);
    assert!(b.get("systemInstruction").is_some());
}
