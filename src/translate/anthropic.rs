//! The Anthropic Messages hub → OpenAI Chat Completions: requests for OpenAI-compatible
//! providers (Claude Code against an OpenAI-style upstream) and responses for OpenAI clients.

use super::{text_of, Error, HubUsage, Loss};
use serde_json::{json, Map, Value};

/// Anthropic blocks of a user turn → OpenAI content parts.
fn user_parts(blocks: &[Value], at: &str, loss: &mut Loss) -> Vec<Value> {
    let mut parts = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let here = format!("{at}[{i}]");
        if b.get("cache_control").is_some() {
            loss.push(format!("{here}.cache_control"));
        }
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts
                .push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()})),
            Some("image") => {
                let src = b.get("source").cloned().unwrap_or_default();
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src.get("media_type")
                            .and_then(Value::as_str)
                            .unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    _ => src
                        .get("url")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("tool_result") => {}
            _ => loss.push(here),
        }
    }
    parts
}

/// Anthropic Messages request → OpenAI Chat Completions request.
pub fn request_to_openai(body: &Value, loss: &mut Loss) -> Result<Value, Error> {
    let obj = body.as_object().ok_or(Error::NotJson)?;
    let mut messages = Vec::new();
    match obj.get("system") {
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("cache_control").is_some() {
                    loss.push(format!("system[{i}].cache_control"));
                }
            }
            messages
                .push(json!({"role": "system", "content": text_of(&Value::Array(blocks.clone()))}));
        }
        _ => {}
    }
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Invalid("`messages` must be an array".into()))?;
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}].content");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        let blocks: Vec<Value> = match &content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        if role == "assistant" {
            let mut text = Vec::new();
            let mut tool_calls = Vec::new();
            let mut reasoning = String::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(b.get("text").and_then(Value::as_str).unwrap_or("").to_owned()),
                    Some("tool_use") => tool_calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or_default(),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or_default(),
                            "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_else(|_| "{}".into()),
                        },
                    })),
                    Some("thinking") => {
                        reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
                        loss.push(format!("{at}[{j}].signature"));
                    }
                    _ => loss.push(format!("{at}[{j}]")),
                }
            }
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text.join("")) }});
            if !tool_calls.is_empty() {
                msg["tool_calls"] = Value::Array(tool_calls);
            }
            if !reasoning.is_empty() {
                msg["reasoning_content"] = Value::String(reasoning);
            }
            messages.push(msg);
        } else {
            // Tool results become `tool` messages, which must directly follow the assistant turn.
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                    if b.get("is_error") == Some(&Value::Bool(true)) {
                        loss.push(format!("{at}[{j}].is_error"));
                    }
                    messages.push(json!({
                        "role": "tool",
                        "tool_call_id": b.get("tool_use_id").cloned().unwrap_or_default(),
                        "content": text_of(b.get("content").unwrap_or(&Value::Null)),
                    }));
                }
            }
            let parts = user_parts(&blocks, &at, loss);
            if !parts.is_empty() {
                let content = if parts.iter().all(|p| p["type"] == "text") {
                    Value::String(
                        parts
                            .iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    )
                } else {
                    Value::Array(parts)
                };
                messages.push(json!({"role": "user", "content": content}));
            }
        }
    }

    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or_default(),
    );
    out.insert("messages".into(), Value::Array(messages));
    for (k, v) in obj {
        match k.as_str() {
            "model" | "messages" | "system" => {}
            "max_tokens" | "temperature" | "top_p" => {
                out.insert(k.clone(), v.clone());
            }
            "stream" => {
                out.insert("stream".into(), v.clone());
                if v == &Value::Bool(true) {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), v.clone());
            }
            "metadata" => {
                if let Some(u) = v.get("user_id") {
                    out.insert("user".into(), u.clone());
                }
            }
            "tools" => {
                let mut tools = Vec::new();
                for (i, t) in v.as_array().into_iter().flatten().enumerate() {
                    if t.get("input_schema").is_none() {
                        // Server tools (web_search, code execution…) have no OpenAI equivalent.
                        loss.push(format!("tools[{i}]"));
                        continue;
                    }
                    if t.get("cache_control").is_some() {
                        loss.push(format!("tools[{i}].cache_control"));
                    }
                    let mut f = json!({"name": t.get("name").cloned().unwrap_or_default(),
                                       "parameters": t.get("input_schema").cloned().unwrap_or_default()});
                    if let Some(d) = t.get("description") {
                        f["description"] = d.clone();
                    }
                    tools.push(json!({"type": "function", "function": f}));
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
            other => loss.push(other.to_owned()),
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
pub fn response_to_openai(body: &Value, loss: &mut Loss) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for (i, b) in body
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
                loss.push(format!("content[{i}].signature"));
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": b.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {"name": b.get("name").cloned().unwrap_or_default(),
                             "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_else(|_| "{}".into())},
            })),
            _ => loss.push(format!("content[{i}]")),
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    json!({
        "id": body.get("id").cloned().unwrap_or_else(|| json!("chatcmpl-ccproxy")),
        "object": "chat.completion",
        "created": now(),
        "model": body.get("model").cloned().unwrap_or_default(),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish_reason(body.get("stop_reason").and_then(Value::as_str))}],
        "usage": usage_to_openai(body.get("usage").unwrap_or(&Value::Null)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_6_verified_response_example() {
        let body = json!({"id": "msg_1", "model": "claude-haiku-4-5-20251001", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Hello!"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 12, "output_tokens": 7}});
        let out = response_to_openai(&body, &mut Loss::default());
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
        let out = request_to_openai(&body, &mut loss).unwrap();
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
