//! The Anthropic Messages hub → OpenAI Chat Completions: requests for OpenAI-compatible
//! providers (Claude Code against an OpenAI-style upstream) and responses for OpenAI clients.
//!
//! Translators consume their input; texts and images are moved, not copied.

use super::openai::text_block;
use super::{into_text, obj, take, take_str, Error, HubUsage, Loss};
use serde_json::{json, Map, Value};

/// An OpenAI `image_url` part for an Anthropic image block's source.
fn image_part(src: Value) -> Value {
    let mut src = super::object(src);
    let url = if src.get("type").and_then(Value::as_str) == Some("base64") {
        let media = take_str(&mut src, "media_type");
        let media = if media.is_empty() {
            "image/png".to_owned()
        } else {
            media
        };
        let data = take_str(&mut src, "data");
        let mut url = String::with_capacity(data.len() + media.len() + 13);
        url.push_str("data:");
        url.push_str(&media);
        url.push_str(";base64,");
        url.push_str(&data);
        url
    } else {
        take_str(&mut src, "url")
    };
    obj([
        ("type", "image_url".into()),
        ("image_url", obj([("url", url.into())])),
    ])
}

/// Anthropic blocks → the JSON text of tool-call arguments.
fn arguments(input: Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        v => super::serialize::to_string(&v),
    }
}

/// An OpenAI tool call for an Anthropic `tool_use` block.
fn tool_call(mut b: Map<String, Value>) -> Value {
    let function = obj([
        ("name", take(&mut b, "name")),
        ("arguments", arguments(take(&mut b, "input")).into()),
    ]);
    obj([
        ("id", take(&mut b, "id")),
        ("type", "function".into()),
        ("function", function),
    ])
}

/// Text values joined by newlines into one string value (a single one is moved as it is).
fn into_text_lines(texts: Vec<Value>) -> Value {
    let mut texts = texts.into_iter().map(|t| match t {
        Value::String(s) => s,
        _ => String::new(),
    });
    let Some(first) = texts.next() else {
        return Value::String(String::new());
    };
    Value::String(texts.fold(first, |mut acc, t| {
        acc.push('\n');
        acc.push_str(&t);
        acc
    }))
}

/// Anthropic Messages request → OpenAI Chat Completions request.
pub fn request_to_openai(mut obj_in: Map<String, Value>, loss: &mut Loss) -> Result<Value, Error> {
    let mut messages = Vec::new();
    match take(&mut obj_in, "system") {
        s @ Value::String(_) => messages.push(obj([("role", "system".into()), ("content", s)])),
        Value::Array(blocks) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("cache_control").is_some() {
                    loss.push(format!("system[{i}].cache_control"));
                }
            }
            messages.push(obj([
                ("role", "system".into()),
                ("content", into_text(Value::Array(blocks)).into()),
            ]));
        }
        _ => {}
    }
    let Value::Array(msgs) = take(&mut obj_in, "messages") else {
        return Err(Error::Invalid("`messages` must be an array".into()));
    };
    messages.reserve(msgs.len());
    for (i, m) in msgs.into_iter().enumerate() {
        let at = |j: usize| format!("messages[{i}].content[{j}]");
        let mut m = super::object(m);
        let role = take_str(&mut m, "role");
        let blocks: Vec<Value> = match take(&mut m, "content") {
            Value::String(s) => vec![text_block(s)],
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        if role == "assistant" {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            let mut reasoning = String::new();
            for (j, b) in blocks.into_iter().enumerate() {
                let mut b = super::object(b);
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = take_str(&mut b, "text");
                        if text.is_empty() {
                            text = t;
                        } else {
                            text.push_str(&t);
                        }
                    }
                    Some("tool_use") => tool_calls.push(tool_call(b)),
                    Some("thinking") => {
                        reasoning.push_str(&take_str(&mut b, "thinking"));
                        loss.push(format!("{}.signature", at(j)));
                    }
                    _ => loss.push(at(j)),
                }
            }
            let content = if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            };
            let mut msg = Map::with_capacity(4);
            msg.insert("role".into(), "assistant".into());
            msg.insert("content".into(), content);
            if !tool_calls.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(tool_calls));
            }
            if !reasoning.is_empty() {
                msg.insert("reasoning_content".into(), Value::String(reasoning));
            }
            messages.push(Value::Object(msg));
        } else {
            // Tool results become `tool` messages, which must directly follow the assistant turn;
            // the rest of the turn follows them as one user message.
            let mut parts = Vec::new();
            for (j, b) in blocks.into_iter().enumerate() {
                let mut b = super::object(b);
                let kind = b.get("type").and_then(Value::as_str);
                if kind != Some("tool_result") && b.contains_key("cache_control") {
                    loss.push(format!("{}.cache_control", at(j)));
                }
                match kind {
                    Some("tool_result") => {
                        if b.get("is_error") == Some(&Value::Bool(true)) {
                            loss.push(format!("{}.is_error", at(j)));
                        }
                        if b.contains_key("cache_control") {
                            loss.push(format!("{}.cache_control", at(j)));
                        }
                        messages.push(obj([
                            ("role", "tool".into()),
                            ("tool_call_id", take(&mut b, "tool_use_id")),
                            ("content", into_text(take(&mut b, "content")).into()),
                        ]));
                    }
                    Some("text") => parts.push(text_block(take(&mut b, "text"))),
                    Some("image") => parts.push(image_part(take(&mut b, "source"))),
                    _ => loss.push(at(j)),
                }
            }
            if !parts.is_empty() {
                let content = if parts.iter().all(|p| p["type"] == "text") {
                    let texts: Vec<Value> = parts
                        .into_iter()
                        .map(|p| super::object(p).shift_remove("text").unwrap_or_default())
                        .collect();
                    into_text_lines(texts)
                } else {
                    Value::Array(parts)
                };
                messages.push(obj([("role", "user".into()), ("content", content)]));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), take(&mut obj_in, "model"));
    out.insert("messages".into(), Value::Array(messages));
    for (k, v) in obj_in {
        match k.as_str() {
            "max_tokens" | "temperature" | "top_p" => {
                out.insert(k, v);
            }
            "stream" => {
                let on = v == Value::Bool(true);
                out.insert("stream".into(), v);
                if on {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), v);
            }
            "metadata" => {
                if let Some(u) = super::object(v).shift_remove("user_id") {
                    out.insert("user".into(), u);
                }
            }
            "tools" => {
                let mut tools = Vec::new();
                if let Value::Array(list) = v {
                    for (i, t) in list.into_iter().enumerate() {
                        let mut t = super::object(t);
                        let Some(schema) = t.shift_remove("input_schema") else {
                            // Server tools (web_search, code execution…) have no OpenAI equivalent.
                            loss.push(format!("tools[{i}]"));
                            continue;
                        };
                        if t.contains_key("cache_control") {
                            loss.push(format!("tools[{i}].cache_control"));
                        }
                        let mut f = obj([("name", take(&mut t, "name")), ("parameters", schema)]);
                        if let Some(d) = t.shift_remove("description") {
                            f["description"] = d;
                        }
                        tools.push(obj([("type", "function".into()), ("function", f)]));
                    }
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let tc = match v.get("type").and_then(Value::as_str) {
                    Some("auto") => json!("auto"),
                    Some("any") => json!("required"),
                    Some("none") => json!("none"),
                    Some("tool") => {
                        json!({"type": "function", "function": {"name": v.get("name").cloned().unwrap_or_default()}})
                    }
                    _ => {
                        loss.push("tool_choice");
                        continue;
                    }
                };
                if v.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                    out.insert("parallel_tool_calls".into(), Value::Bool(false));
                }
                out.insert("tool_choice".into(), tc);
            }
            "thinking" => {
                let budget = v.get("budget_tokens").and_then(Value::as_u64);
                match (v.get("type").and_then(Value::as_str), budget) {
                    (Some("enabled"), Some(b)) => {
                        let effort = if b < 4096 {
                            "low"
                        } else if b < 16384 {
                            "medium"
                        } else {
                            "high"
                        };
                        out.insert("reasoning_effort".into(), json!(effort));
                    }
                    (Some("disabled"), _) => {}
                    _ => loss.push("thinking"),
                }
            }
            _ => loss.push(k),
        }
    }
    Ok(Value::Object(out))
}

/// OpenAI `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage from Anthropic usage (cache reads and writes are part of the prompt).
pub fn usage_to_openai(u: &Value) -> Value {
    let h = HubUsage::of(u);
    let mut out = json!({
        "prompt_tokens": h.prompt(),
        "completion_tokens": h.output,
        "total_tokens": h.prompt() + h.output,
        "prompt_tokens_details": {"cached_tokens": h.cache_read},
    });
    if h.cache_write > 0 {
        out["cache_creation_input_tokens"] = json!(h.cache_write);
    }
    if h.cache_read > 0 {
        out["cache_read_input_tokens"] = json!(h.cache_read);
    }
    out
}

/// Seconds since the epoch, for `created`.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Anthropic `message` → OpenAI `chat.completion`.
pub fn response_to_openai(body: Value, loss: &mut Loss) -> Value {
    let mut body = super::object(body);
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    if let Value::Array(blocks) = take(&mut body, "content") {
        for (i, b) in blocks.into_iter().enumerate() {
            let mut b = super::object(b);
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(&take_str(&mut b, "text")),
                Some("thinking") => {
                    reasoning.push_str(&take_str(&mut b, "thinking"));
                    loss.push(format!("content[{i}].signature"));
                }
                Some("tool_use") => tool_calls.push(tool_call(b)),
                _ => loss.push(format!("content[{i}]")),
            }
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    let mut message = obj([("role", "assistant".into()), ("content", content)]);
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    let id = match take(&mut body, "id") {
        Value::Null => json!("chatcmpl-ccproxy"),
        id => id,
    };
    let finish = finish_reason(body.get("stop_reason").and_then(Value::as_str));
    let usage = usage_to_openai(body.get("usage").unwrap_or(&Value::Null));
    let choice = obj([
        ("index", 0.into()),
        ("message", message),
        ("finish_reason", finish.into()),
    ]);
    obj([
        ("id", id),
        ("object", "chat.completion".into()),
        ("created", now().into()),
        ("model", take(&mut body, "model")),
        ("choices", Value::Array(vec![choice])),
        ("usage", usage),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_6_verified_response_example() {
        let body = json!({"id": "msg_1", "model": "claude-haiku-4-5-20251001", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Hello!"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 12, "output_tokens": 7}});
        let out = response_to_openai(body, &mut Loss::default());
        let c = &out["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "Hello!");
        assert_eq!(c["message"]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            c["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(out["usage"]["prompt_tokens"], 12);
        assert_eq!(out["usage"]["total_tokens"], 19);
    }

    #[test]
    fn claude_code_request_to_openai_keeps_tool_ids_and_reports_cache_control() {
        let body = json!({"model": "m", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": [{"type": "text", "text": "Sure."}, {"type": "tool_use", "id": "toolu_7", "name": "ls", "input": {"path": "."}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_7", "content": [{"type": "text", "text": "a b"}]}, {"type": "text", "text": "and?"}]}
            ],
            "tools": [{"name": "ls", "description": "list", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "auto"}, "top_k": 5});
        let mut loss = Loss::default();
        let out = request_to_openai(crate::translate::object(body), &mut loss).unwrap();
        let m = out["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "You are Claude Code."})
        );
        assert_eq!(m[2]["tool_calls"][0]["id"], "toolu_7");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\".\"}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_7", "content": "a b"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "and?"}));
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
        assert_eq!(out["tools"].as_array().unwrap().len(), 1);
        assert_eq!(loss.0, vec!["system[0].cache_control", "tools[1]", "top_k"]);
    }
}
