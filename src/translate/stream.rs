//! Streaming translation, sans-IO. A [`StreamTranslator`] is held in the request context and
//! fed from `response_body_filter`: provider bytes → SSE events → Anthropic stream events (the
//! hub) → the client's event grammar. Every delta is forwarded as it arrives (tool-call argument
//! fragments included); nothing is buffered beyond an incomplete SSE event.

use super::anthropic::{finish_reason, now, usage_to_openai};
use super::openai::usage_to_anthropic;
use super::sse::{self, Decoder};
use super::{serialize, Format};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Turns a provider's SSE stream into the client's.
pub struct StreamTranslator {
    decoder: Decoder,
    source: Source,
    sink: Sink,
    finished: bool,
    /// An event outgrew the decoder's limit: the client got an error event; the rest of the
    /// provider's stream is dropped.
    failed: bool,
}

impl StreamTranslator {
    /// `None` when the pair is not supported.
    pub fn new(provider: Format, client: Format, model: &str) -> Option<Self> {
        let source = match provider {
            Format::Anthropic => Source::Anthropic,
            Format::OpenAi => Source::OpenAi(OpenAiSource::default()),
            Format::Gemini => Source::Gemini(GeminiSource::new(model)),
            Format::Responses => return None,
        };
        let sink = Sink::for_client(client, model);
        Some(Self {
            decoder: Decoder::new(),
            source,
            sink,
            finished: false,
            failed: false,
        })
    }

    /// Refuse provider events larger than `limit` bytes (the client gets an error event).
    pub fn with_event_limit(mut self, limit: usize) -> Self {
        self.decoder = Decoder::with_limit(limit);
        self
    }

    /// Feed provider bytes; returns client bytes (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.failed {
            return Vec::new();
        }
        let mut out = String::new();
        match self.decoder.push(chunk) {
            Ok(events) => {
                for ev in events {
                    self.event(&ev, &mut out);
                }
            }
            Err(e) => {
                self.failed = true;
                let error = json!({"type": "error", "error": {"type": "api_error",
                    "message": format!("ccproxy cannot translate this stream: {e} (max_response_buffer_bytes)")}});
                self.sink.emit(&error, &mut out);
            }
        }
        out.into_bytes()
    }

    /// End of the provider stream: flush and close the client stream exactly once.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = String::new();
        if let Some(ev) = self.decoder.finish().filter(|_| !self.failed) {
            self.event(&ev, &mut out);
        }
        if !self.finished {
            self.finished = true;
            let hub = self.source.finish();
            for h in hub {
                self.sink.emit(&h, &mut out);
            }
            self.sink.finish(&mut out);
        }
        out.into_bytes()
    }

    fn event(&mut self, ev: &sse::Event, out: &mut String) {
        for h in self.source.hub_events(ev) {
            self.sink.emit(&h, out);
        }
    }
}

/// A complete Anthropic `message` replayed as a stream in the client's grammar: for providers
/// that answer a streaming request with one JSON body.
pub fn stream_from_message(client: Format, message: &Value, model: &str) -> Vec<u8> {
    let mut events = vec![json!({"type": "message_start", "message": {
        "id": message.get("id").cloned().unwrap_or_else(|| json!("msg_ccproxy")),
        "type": "message", "role": "assistant",
        "model": message.get("model").cloned().unwrap_or_else(|| json!(model)),
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": message.pointer("/usage/input_tokens").cloned().unwrap_or(json!(0)), "output_tokens": 0}}})];
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, b) in blocks.iter().enumerate() {
        let delta = |d: Value| json!({"type": "content_block_delta", "index": i, "delta": d});
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                events.push(json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}));
                events.push(delta(json!({"type": "text_delta", "text": b.get("text").cloned().unwrap_or_default()})));
            }
            Some("thinking") => {
                events.push(json!({"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}));
                events.push(delta(json!({"type": "thinking_delta", "thinking": b.get("thinking").cloned().unwrap_or_default()})));
                if let Some(sig) = b
                    .get("signature")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    events.push(delta(json!({"type": "signature_delta", "signature": sig})));
                }
            }
            Some("tool_use") => {
                let mut start = b.clone();
                start["input"] = json!({});
                events.push(
                    json!({"type": "content_block_start", "index": i, "content_block": start}),
                );
                let args = b
                    .get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".into());
                events.push(delta(
                    json!({"type": "input_json_delta", "partial_json": args}),
                ));
            }
            _ => continue,
        }
        events.push(json!({"type": "content_block_stop", "index": i}));
    }
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason").cloned().unwrap_or(json!("end_turn")), "stop_sequence": null},
        "usage": message.get("usage").cloned().unwrap_or_else(|| json!({"output_tokens": 0}))}));
    events.push(json!({"type": "message_stop"}));
    let mut sink = Sink::for_client(client, model);
    let mut out = String::new();
    for e in &events {
        sink.emit(e, &mut out);
    }
    sink.finish(&mut out);
    out.into_bytes()
}

enum Source {
    Anthropic,
    OpenAi(OpenAiSource),
    Gemini(GeminiSource),
}

impl Source {
    fn hub_events(&mut self, ev: &sse::Event) -> Vec<Value> {
        match self {
            Source::Anthropic => match serde_json::from_str::<Value>(&ev.data) {
                Ok(v) if v.get("type").is_some() => vec![v],
                _ => Vec::new(),
            },
            Source::OpenAi(s) => s.hub_events(&ev.data),
            Source::Gemini(s) => s.hub_events(&ev.data),
        }
    }

    fn finish(&mut self) -> Vec<Value> {
        match self {
            Source::Anthropic => Vec::new(),
            Source::OpenAi(s) => s.close(),
            Source::Gemini(s) => s.close(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(u64),
}

/// The closing `message_delta` (stop reason, usage) and `message_stop` of a hub stream.
fn end_message(stop: &str, usage: Option<&Value>, out: &mut Vec<Value>) {
    let mut u = json!({"output_tokens": 0});
    if let Some(Value::Object(src)) = usage {
        for (k, v) in src {
            u[k] = v.clone();
        }
    }
    out.push(json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": u}));
    out.push(json!({"type": "message_stop"}));
}

/// The content block a source is writing, with indexes handed out contiguously.
#[derive(Default)]
struct Blocks {
    next: u64,
    open: Option<(Open, u64)>,
}

impl Blocks {
    /// Index of the open block if it is `kind`.
    fn current(&self, kind: Open) -> Option<u64> {
        self.open.filter(|(k, _)| *k == kind).map(|(_, i)| i)
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        if let Some((_, idx)) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": idx}));
        }
    }

    /// Make sure the open block is `kind`, closing another and starting it with `start` if
    /// needed; returns its index.
    fn ensure(&mut self, kind: Open, start: Value, out: &mut Vec<Value>) -> u64 {
        if let Some(idx) = self.current(kind) {
            return idx;
        }
        self.close(out);
        let idx = self.next;
        self.next += 1;
        self.open = Some((kind, idx));
        out.push(json!({"type": "content_block_start", "index": idx, "content_block": start}));
        idx
    }
}

/// OpenAI `chat.completion.chunk`s → Anthropic events with contiguous block indexes.
#[derive(Default)]
struct OpenAiSource {
    started: bool,
    closed: bool,
    blocks: Blocks,
    stop: Option<&'static str>,
    usage: Option<Value>,
}

impl OpenAiSource {
    fn start(&mut self, chunk: &Value, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(json!({"type": "message_start", "message": {
            "id": chunk.get("id").cloned().unwrap_or_else(|| json!("msg_ccproxy")),
            "type": "message", "role": "assistant",
            "model": chunk.get("model").cloned().unwrap_or_default(),
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}));
    }

    fn hub_events(&mut self, data: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if data.trim() == "[DONE]" {
            out.extend(self.close());
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        if let Some(err) = chunk.get("error") {
            out.push(json!({"type": "error", "error": {"type": "api_error",
                "message": err.get("message").cloned().unwrap_or_else(|| err.clone())}}));
            return out;
        }
        self.start(&chunk, &mut out);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage_to_anthropic(u));
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return out;
        };
        let delta = choice.get("delta").cloned().unwrap_or_default();
        if let Some(r) = delta
            .get("reasoning_content")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            let idx = self.blocks.ensure(
                Open::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                &mut out,
            );
            out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "thinking_delta", "thinking": r}}));
        }
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let idx = self
                .blocks
                .ensure(Open::Text, json!({"type": "text", "text": ""}), &mut out);
            out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": t}}));
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let oi = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = tc.get("function").cloned().unwrap_or_default();
            let idx = if let Some(i) = self.blocks.current(Open::Tool(oi)) {
                i
            } else {
                self.blocks.ensure(
                    Open::Tool(oi),
                    json!({"type": "tool_use", "id": tc.get("id").cloned().unwrap_or_default(),
                           "name": f.get("name").cloned().unwrap_or_default(), "input": {}}),
                    &mut out,
                )
            };
            if let Some(a) = f
                .get("arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "input_json_delta", "partial_json": a}}));
            }
        }
        if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(super::openai::stop_reason(Some(fr)));
        }
        out
    }

    fn close(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.closed || !self.started {
            return out;
        }
        self.closed = true;
        self.blocks.close(&mut out);
        end_message(
            self.stop.unwrap_or("end_turn"),
            self.usage.as_ref(),
            &mut out,
        );
        out
    }
}

enum Sink {
    Anthropic,
    OpenAi(OpenAiSink),
    Gemini(GeminiSink),
    Responses(Box<super::responses::ResponsesSink>),
}

impl Sink {
    fn for_client(client: Format, model: &str) -> Self {
        match client {
            Format::Anthropic => Sink::Anthropic,
            Format::OpenAi => Sink::OpenAi(OpenAiSink::new(model)),
            Format::Gemini => Sink::Gemini(GeminiSink::default()),
            Format::Responses => Sink::Responses(Box::default()),
        }
    }

    fn emit(&mut self, ev: &Value, out: &mut String) {
        match self {
            Sink::Anthropic => {
                let name = ev.get("type").and_then(Value::as_str);
                out.push_str(&sse::encode(name, &serialize::to_string(ev)));
            }
            Sink::OpenAi(s) => s.emit(ev, out),
            Sink::Gemini(s) => s.emit(ev, out),
            Sink::Responses(s) => s.emit(ev, out),
        }
    }

    fn finish(&mut self, out: &mut String) {
        match self {
            Sink::OpenAi(s) => s.finish(out),
            Sink::Responses(s) => s.finish(out),
            _ => {}
        }
    }
}

/// Anthropic events → OpenAI `chat.completion.chunk`s, ending with `data: [DONE]`.
struct OpenAiSink {
    id: String,
    model: String,
    created: u64,
    /// Anthropic block index → OpenAI tool_calls index.
    tools: HashMap<u64, u64>,
    usage: Value,
    done: bool,
}

impl OpenAiSink {
    fn new(model: &str) -> Self {
        Self {
            id: "chatcmpl-ccproxy".into(),
            model: model.to_owned(),
            created: now(),
            tools: HashMap::new(),
            usage: json!({}),
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut String) {
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        out.push_str(&sse::encode(None, &serialize::to_string(&c)));
    }

    fn merge_usage(&mut self, u: &Value) {
        if let (Value::Object(dst), Value::Object(src)) = (&mut self.usage, u) {
            for (k, v) in src {
                if !v.is_null() {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn emit(&mut self, ev: &Value, out: &mut String) {
        let idx = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = ev.get("message").cloned().unwrap_or_default();
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(model) = m
                    .get("model")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    self.model = model.to_owned();
                }
                if let Some(u) = m.get("usage") {
                    self.merge_usage(u);
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            Some("content_block_start") => {
                let b = ev.get("content_block").cloned().unwrap_or_default();
                if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let ti = self.tools.len() as u64;
                    self.tools.insert(idx, ti);
                    self.chunk(json!({"tool_calls": [{"index": ti, "id": b.get("id").cloned().unwrap_or_default(), "type": "function",
                        "function": {"name": b.get("name").cloned().unwrap_or_default(), "arguments": ""}}]}), None, out);
                }
            }
            Some("content_block_delta") => {
                let d = ev.get("delta").cloned().unwrap_or_default();
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(json!({"content": d.get("text").cloned().unwrap_or_default()}), None, out),
                    Some("thinking_delta") => {
                        self.chunk(json!({"reasoning_content": d.get("thinking").cloned().unwrap_or_default()}), None, out)
                    }
                    Some("input_json_delta") => {
                        let ti = self.tools.get(&idx).copied().unwrap_or(0);
                        self.chunk(json!({"tool_calls": [{"index": ti, "function": {"arguments": d.get("partial_json").cloned().unwrap_or_default()}}]}), None, out);
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = ev.get("usage") {
                    self.merge_usage(u);
                }
                let stop = ev
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                self.chunk(json!({}), Some(finish_reason(stop)), out);
            }
            Some("error") => {
                let e = ev.get("error").cloned().unwrap_or_default();
                let body = json!({"error": {"message": e.get("message").cloned().unwrap_or_default(),
                                            "type": e.get("type").cloned().unwrap_or_else(|| json!("api_error"))}});
                out.push_str(&sse::encode(None, &serialize::to_string(&body)));
            }
            Some("message_stop") => self.finish(out),
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut String) {
        if self.done {
            return;
        }
        self.done = true;
        let usage = usage_to_openai(&self.usage);
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [], "usage": usage});
        out.push_str(&sse::encode(None, &serialize::to_string(&c)));
        out.push_str("data: [DONE]\n\n");
    }
}

/// Gemini `streamGenerateContent?alt=sse` chunks → Anthropic events. Gemini sends whole
/// function calls (no partial arguments); each becomes a complete tool_use block.
struct GeminiSource {
    model: String,
    started: bool,
    closed: bool,
    blocks: Blocks,
    tools: usize,
    saw_tool: bool,
    stop: Option<&'static str>,
    usage: Option<Value>,
}

impl GeminiSource {
    fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            closed: false,
            blocks: Blocks::default(),
            tools: 0,
            saw_tool: false,
            stop: None,
            usage: None,
        }
    }

    fn hub_events(&mut self, data: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        // Code Assist wraps chunks in {"response": …}.
        let chunk = chunk
            .get("response")
            .filter(|r| r.is_object())
            .cloned()
            .unwrap_or(chunk);
        if let Some(err) = chunk.get("error") {
            out.push(json!({"type": "error", "error": {"type": "api_error", "message": err.get("message").cloned().unwrap_or_default()}}));
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(json!({"type": "message_start", "message": {
                "id": chunk.get("responseId").cloned().unwrap_or_else(|| json!("msg_gemini")),
                "type": "message", "role": "assistant",
                "model": chunk.get("modelVersion").cloned().unwrap_or_else(|| json!(self.model)),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}));
        }
        if let Some(u) = chunk.get("usageMetadata") {
            self.usage = Some(super::gemini::usage_to_anthropic(u));
        }
        let Some(cand) = chunk.get("candidates").and_then(|c| c.get(0)) else {
            return out;
        };
        let parts = cand
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for block in super::gemini::parts_to_blocks(parts, &mut self.tools) {
            match block.get("type").and_then(Value::as_str) {
                Some("thinking") => {
                    let idx = self.blocks.ensure(
                        Open::Thinking,
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                        &mut out,
                    );
                    if let Some(t) = block
                        .get("thinking")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "thinking_delta", "thinking": t}}));
                    }
                    if let Some(sig) = block
                        .get("signature")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                    {
                        out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "signature_delta", "signature": sig}}));
                    }
                }
                Some("text") => {
                    let idx = self.blocks.ensure(
                        Open::Text,
                        json!({"type": "text", "text": ""}),
                        &mut out,
                    );
                    out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": block.get("text").cloned().unwrap_or_default()}}));
                }
                Some("tool_use") => {
                    self.saw_tool = true;
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    let mut start = block.clone();
                    start["input"] = json!({});
                    let idx = self
                        .blocks
                        .ensure(Open::Tool(self.tools as u64), start, &mut out);
                    out.push(json!({"type": "content_block_delta", "index": idx, "delta": {"type": "input_json_delta", "partial_json": serialize::to_string(&input)}}));
                    self.blocks.close(&mut out);
                }
                _ => {}
            }
        }
        if let Some(fr) = cand.get("finishReason").and_then(Value::as_str) {
            self.stop = Some(super::gemini::stop_reason(Some(fr), self.saw_tool));
        }
        out
    }

    fn close(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.closed || !self.started {
            return out;
        }
        self.closed = true;
        self.blocks.close(&mut out);
        let stop = self.stop.unwrap_or(if self.saw_tool {
            "tool_use"
        } else {
            "end_turn"
        });
        end_message(stop, self.usage.as_ref(), &mut out);
        out
    }
}

/// Anthropic events → Gemini `GenerateContentResponse` chunks (SSE `data:` lines; Gemini has no
/// end marker). Tool calls are emitted whole when their block closes (Gemini has no partial
/// arguments); text and thoughts stream as they arrive.
#[derive(Default)]
struct GeminiSink {
    model: String,
    id: String,
    tools: HashMap<u64, (Value, String)>,
    usage: Value,
}

impl GeminiSink {
    fn chunk(&self, parts: Vec<Value>, finish: Option<&str>, out: &mut String) {
        let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        let mut c =
            json!({"candidates": [cand], "modelVersion": self.model, "responseId": self.id});
        if finish.is_some() {
            c["usageMetadata"] = super::gemini::usage_from_anthropic(&self.usage);
        }
        out.push_str(&sse::encode(None, &serialize::to_string(&c)));
    }

    fn emit(&mut self, ev: &Value, out: &mut String) {
        let idx = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = ev.get("message").cloned().unwrap_or_default();
                self.model = m
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                self.id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                self.usage = m.get("usage").cloned().unwrap_or_else(|| json!({}));
            }
            Some("content_block_start") => {
                let b = ev.get("content_block").cloned().unwrap_or_default();
                if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                    self.tools.insert(idx, (b, String::new()));
                }
            }
            Some("content_block_delta") => {
                let d = ev.get("delta").cloned().unwrap_or_default();
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(vec![json!({"text": d.get("text").cloned().unwrap_or_default()})], None, out),
                    Some("thinking_delta") => self.chunk(
                        vec![json!({"text": d.get("thinking").cloned().unwrap_or_default(), "thought": true})],
                        None,
                        out,
                    ),
                    Some("signature_delta") => self.chunk(
                        vec![json!({"text": "", "thought": true, "thoughtSignature": d.get("signature").cloned().unwrap_or_default()})],
                        None,
                        out,
                    ),
                    Some("input_json_delta") => {
                        if let Some((_, args)) = self.tools.get_mut(&idx) {
                            args.push_str(d.get("partial_json").and_then(Value::as_str).unwrap_or(""));
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                if let Some((mut b, args)) = self.tools.remove(&idx) {
                    b["input"] =
                        serde_json::from_str(if args.trim().is_empty() { "{}" } else { &args })
                            .unwrap_or_else(|_| json!({}));
                    if let Some(p) = super::gemini::block_to_part(b) {
                        self.chunk(vec![p], None, out);
                    }
                }
            }
            Some("message_delta") => {
                if let (Some(Value::Object(u)), Value::Object(dst)) =
                    (ev.get("usage"), &mut self.usage)
                {
                    for (k, v) in u {
                        dst.insert(k.clone(), v.clone());
                    }
                }
                let stop = ev
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                self.chunk(Vec::new(), Some(super::gemini::finish_reason(stop)), out);
            }
            Some("error") => {
                let e = ev.get("error").cloned().unwrap_or_default();
                let body = json!({"error": {"code": 500, "message": e.get("message").cloned().unwrap_or_default(), "status": "INTERNAL"}});
                out.push_str(&sse::encode(None, &serialize::to_string(&body)));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut StreamTranslator, input: &[u8], split: usize) -> String {
        let mut out = Vec::new();
        for c in input.chunks(split.max(1)) {
            out.extend(t.push(c));
        }
        out.extend(t.finish());
        String::from_utf8(out).unwrap()
    }

    fn data_events(s: &str) -> Vec<Value> {
        let mut d = Decoder::new();
        d.push(s.as_bytes())
            .unwrap()
            .into_iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn anthropic_stream_to_openai_streams_tool_args_incrementally_and_ends_with_done() {
        for split in [1, 7, 64, 10_000] {
            let mut t = StreamTranslator::new(Format::Anthropic, Format::OpenAi, "m").unwrap();
            let out = run(&mut t, ANTHROPIC_STREAM.as_bytes(), split);
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
            assert_eq!(out.matches("[DONE]").count(), 1);
            let ev = data_events(&out);
            assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(ev[0]["id"], "msg_1");
            assert_eq!(ev[1]["choices"][0]["delta"]["content"], "Hel");
            assert_eq!(
                ev[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
                "toolu_1"
            );
            // Two argument fragments arrive as two chunks, not one buffered blob.
            assert_eq!(
                ev[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
                "{\"city\":"
            );
            assert_eq!(
                ev[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
                "\"Paris\"}"
            );
            assert_eq!(ev[5]["choices"][0]["finish_reason"], "tool_calls");
            assert_eq!(ev[6]["usage"]["prompt_tokens"], 12);
            assert_eq!(ev[6]["usage"]["completion_tokens"], 7);
        }
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn openai_stream_to_anthropic_has_contiguous_indexes_and_grammar() {
        for split in [1, 5, 100_000] {
            let mut t = StreamTranslator::new(Format::OpenAi, Format::Anthropic, "m").unwrap();
            let out = run(&mut t, OPENAI_STREAM.as_bytes(), split);
            let ev = data_events(&out);
            let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
            assert_eq!(
                types,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]
            );
            let starts: Vec<u64> = ev
                .iter()
                .filter(|e| e["type"] == "content_block_start")
                .map(|e| e["index"].as_u64().unwrap())
                .collect();
            assert_eq!(starts, [0, 1, 2, 3]);
            assert_eq!(ev[1]["content_block"]["type"], "thinking");
            assert_eq!(ev[7]["content_block"]["id"], "call_1");
            assert_eq!(ev[8]["delta"]["partial_json"], "{\"a\"");
            assert_eq!(ev[14]["delta"]["stop_reason"], "tool_use");
            assert_eq!(ev[14]["usage"]["output_tokens"], 4);
            assert!(out.contains("event: message_stop\n"));
        }
    }

    #[test]
    fn stream_translation_matches_the_buffered_response_translation() {
        // Joining the translated OpenAI stream gives the same content as translating the whole
        // Anthropic message at once.
        let mut t = StreamTranslator::new(Format::Anthropic, Format::OpenAi, "m").unwrap();
        let out = run(&mut t, ANTHROPIC_STREAM.as_bytes(), 3);
        let mut text = String::new();
        let mut args = String::new();
        let mut finish = String::new();
        for e in data_events(&out) {
            let d = &e["choices"][0]["delta"];
            text.push_str(d["content"].as_str().unwrap_or(""));
            if let Some(a) = d["tool_calls"][0]["function"]["arguments"].as_str() {
                args.push_str(a);
            }
            if let Some(f) = e["choices"][0]["finish_reason"].as_str() {
                finish = f.to_owned();
            }
        }
        let whole = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Hel"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 12, "output_tokens": 7}});
        let buffered =
            super::super::anthropic::response_to_openai(whole.clone(), &mut Default::default());
        let m = &buffered["choices"][0]["message"];
        assert_eq!(text, m["content"].as_str().unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            serde_json::from_str::<Value>(
                m["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            )
            .unwrap()
        );
        assert_eq!(finish, buffered["choices"][0]["finish_reason"]);
    }

    #[test]
    fn gemini_stream_to_anthropic_keeps_signatures_and_whole_tool_calls() {
        let g = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"hmm\",\"thought\":true,\"thoughtSignature\":\"c2ln\"}]}}],\"responseId\":\"r1\",\"modelVersion\":\"gemini-2.5-pro\"}\n\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"lo\"}]}}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"ls\",\"args\":{\"p\":1}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":3}}\n\n",
        );
        for split in [1, 9, 4096] {
            let mut t =
                StreamTranslator::new(Format::Gemini, Format::Anthropic, "gemini-2.5-pro").unwrap();
            let ev = data_events(&run(&mut t, g.as_bytes(), split));
            let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
            assert_eq!(
                types,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]
            );
            assert_eq!(ev[3]["delta"]["signature"], "c2ln");
            assert_eq!(ev[9]["content_block"]["name"], "ls");
            assert_eq!(ev[10]["delta"]["partial_json"], "{\"p\":1}");
            assert_eq!(ev[12]["delta"]["stop_reason"], "tool_use");
            assert_eq!(ev[12]["usage"]["input_tokens"], 7);
        }
    }

    #[test]
    fn anthropic_stream_to_gemini_chunks() {
        let mut t = StreamTranslator::new(Format::Anthropic, Format::Gemini, "m").unwrap();
        let ev = data_events(&run(&mut t, ANTHROPIC_STREAM.as_bytes(), 11));
        assert_eq!(ev[0]["candidates"][0]["content"]["parts"][0]["text"], "Hel");
        assert_eq!(
            ev[1]["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Paris"}})
        );
        assert_eq!(ev[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(ev[2]["usageMetadata"]["candidatesTokenCount"], 7);
    }

    #[test]
    fn a_complete_message_replays_as_a_client_stream() {
        let m = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Hel"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 12, "output_tokens": 7}});
        let out = String::from_utf8(stream_from_message(Format::OpenAi, &m, "m")).unwrap();
        let mut t = StreamTranslator::new(Format::Anthropic, Format::OpenAi, "m").unwrap();
        let streamed = run(&mut t, ANTHROPIC_STREAM.as_bytes(), 64);
        let strip = |s: &str| -> Vec<Value> {
            data_events(s)
                .into_iter()
                .map(|mut e| {
                    e["created"] = json!(0);
                    e
                })
                .collect()
        };
        // The same content as the provider's own stream of that message, chunk for chunk
        // (the real stream just splits the tool arguments into two fragments).
        let (a, b) = (strip(&out), strip(&streamed));
        assert_eq!(a.len() + 1, b.len());
        assert_eq!(a[1], b[1]);
        assert_eq!(a.last(), b.last());
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn truncated_provider_stream_still_closes_the_client_stream_once() {
        let mut t = StreamTranslator::new(Format::OpenAi, Format::Anthropic, "m").unwrap();
        let cut = &OPENAI_STREAM.as_bytes()[..OPENAI_STREAM.find("finish_reason").unwrap()];
        let out = run(&mut t, cut, 50);
        assert_eq!(out.matches("event: message_stop").count(), 1);
        let mut t = StreamTranslator::new(Format::Anthropic, Format::OpenAi, "m").unwrap();
        let out = run(&mut t, b"", 1);
        assert_eq!(out.matches("[DONE]").count(), 1);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn split_at_points(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for c in cuts {
            out.push(bytes[last..c].to_vec());
            last = c;
        }
        out.push(bytes[last..].to_vec());
        out
    }

    /// An Anthropic stream with the given text pieces and tool-argument pieces.
    fn anthropic_stream(text: &[String], args: &[String]) -> (String, Value) {
        let mut s = String::new();
        let mut push = |name: &str, v: Value| s.push_str(&sse::encode(Some(name), &v.to_string()));
        push(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_p", "model": "m", "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}}),
        );
        push(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        for t in text {
            push(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            );
        }
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        push(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_p", "name": "f", "input": {}}}),
        );
        for a in args {
            push(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": a}}),
            );
        }
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        );
        push(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
        );
        push("message_stop", json!({"type": "message_stop"}));
        let input: Value = serde_json::from_str(&args.concat()).unwrap_or(json!({}));
        let whole = json!({"id": "msg_p", "model": "m", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": text.concat()}, {"type": "tool_use", "id": "toolu_p", "name": "f", "input": input}],
            "usage": {"input_tokens": 3, "output_tokens": 5}});
        (s, whole)
    }

    /// Split a JSON text into pieces at the given points (arguments arrive as fragments).
    fn fragments(text: &str, points: &[usize]) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut cuts: Vec<usize> = points.iter().map(|p| p % (chars.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain(std::iter::once(chars.len())) {
            out.push(chars[last..c].iter().collect());
            last = c;
        }
        out
    }

    proptest! {
        #[test]
        fn sse_decoding_is_invariant_under_arbitrary_chunk_splits(
            datas in proptest::collection::vec("[a-z {}\":,\\[\\]é]{0,24}", 1..8),
            crlf in proptest::collection::vec(any::<bool>(), 8),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut wire = String::new();
            for (i, d) in datas.iter().enumerate() {
                let nl = if crlf[i % crlf.len()] { "\r\n" } else { "\n" };
                wire.push_str(&format!("event: e{i}{nl}data: {d}{nl}{nl}"));
            }
            let bytes = wire.as_bytes();
            let mut whole = Decoder::new();
            let expected = whole.push(bytes).unwrap();
            prop_assert_eq!(expected.len(), datas.len());
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for part in split_at_points(bytes, &points) {
                got.extend(d.push(&part).unwrap());
            }
            got.extend(d.finish());
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn translated_stream_joins_to_the_translated_buffered_response(
            text in proptest::collection::vec("[a-zA-Z .!é\"\\\\]{0,12}", 0..6),
            city in "[a-zA-Z é]{0,16}",
            arg_points in proptest::collection::vec(any::<usize>(), 0..6),
            split in 1usize..97,
        ) {
            let args_json = json!({"city": city, "n": 3}).to_string();
            let args = fragments(&args_json, &arg_points);
            let (stream, whole) = anthropic_stream(&text, &args);
            let mut t = StreamTranslator::new(Format::Anthropic, Format::OpenAi, "m").unwrap_or_else(|| unreachable!());
            let mut out = Vec::new();
            for c in stream.as_bytes().chunks(split) {
                out.extend(t.push(c));
            }
            out.extend(t.finish());
            let mut d = Decoder::new();
            let (mut joined_text, mut joined_args, mut finish) = (String::new(), String::new(), String::new());
            for e in d.push(&out).unwrap() {
                if e.data == "[DONE]" { continue; }
                let v: Value = serde_json::from_str(&e.data).unwrap_or_default();
                let delta = &v["choices"][0]["delta"];
                joined_text.push_str(delta["content"].as_str().unwrap_or(""));
                joined_args.push_str(delta["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or(""));
                if let Some(f) = v["choices"][0]["finish_reason"].as_str() { finish = f.to_owned(); }
            }
            let buffered = super::super::anthropic::response_to_openai(whole.clone(), &mut Default::default());
            let m = &buffered["choices"][0]["message"];
            prop_assert_eq!(joined_text, m["content"].as_str().unwrap_or("").to_owned());
            let a: Value = serde_json::from_str(&joined_args).unwrap_or_default();
            let b: Value = serde_json::from_str(m["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or("")).unwrap_or_default();
            prop_assert_eq!(a, b);
            prop_assert_eq!(finish, buffered["choices"][0]["finish_reason"].as_str().unwrap_or("").to_owned());
        }
    }
}
