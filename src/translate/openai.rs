//! OpenAI Chat Completions ⇄ the Anthropic Messages hub: requests from OpenAI clients and
//! responses from OpenAI-compatible providers.

use super::{Error, Loss};
use serde_json::{json, Map, Value};

/// Default `max_tokens` when an OpenAI request has none (Anthropic requires it): the model's
/// output limit.
pub fn default_max_tokens(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    if m.contains("claude-3-haiku") || m.contains("claude-3-opus") || m.contains("claude-3-sonnet")
    {
        4096
    } else if m.contains("claude-3-5") {
        8192
    } else if m.contains("opus-4-0") || m.contains("opus-4-1") || m.contains("opus-4-2025") {
        32000
    } else {
        64000
    }
}

/// OpenAI content (string or parts) → Anthropic content blocks.
fn content_blocks(content: &Value, at: &str, loss: &mut Loss) -> Vec<Value> {
    match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| part_block(p, &format!("{at}[{i}]"), loss))
            .collect(),
        Value::Null => Vec::new(),
        _ => {
            loss.push(at.to_owned());
            Vec::new()
        }
    }
}

fn part_block(part: &Value, at: &str, loss: &mut Loss) -> Option<Value> {
    let mut block = match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            json!({"type": "text", "text": part.get("text").cloned().unwrap_or_default()})
        }
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)
                .unwrap_or_default();
            image_block(url)
        }
        _ => {
            loss.push(at.to_owned());
            return None;
        }
    };
    if let Some(cc) = part.get("cache_control") {
        block["cache_control"] = cc.clone();
    }
    Some(block)
}

/// An Anthropic image block for an OpenAI image URL (a `data:` URL becomes a base64 source).
pub(crate) fn image_block(url: &str) -> Value {
    match url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
        Some((meta, data)) => json!({"type": "image", "source": {"type": "base64",
            "media_type": meta.trim_end_matches(";base64"), "data": data}}),
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// Append blocks as a turn of `role`, merging into the previous turn of the same role.
pub(crate) fn push_message(out: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    // Consecutive turns of one role merge: tool results and the user text that follows them
    // must share one user turn.
    if let Some(last) = out.last_mut() {
        if last["role"] == role {
            if let Some(Value::Array(c)) = last.get_mut("content") {
                c.append(&mut blocks);
                return;
            }
        }
    }
    out.push(json!({"role": role, "content": blocks}));
}

/// OpenAI Chat Completions request → Anthropic Messages request.
pub fn request_to_anthropic(body: &Value, loss: &mut Loss) -> Result<Value, Error> {
    let obj = body.as_object().ok_or(Error::NotJson)?;
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Invalid("`messages` must be an array".into()))?;
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if m.get("name").is_some() {
            loss.push(format!("{at}.name"));
        }
        match role {
            "system" | "developer" => {
                system.extend(content_blocks(
                    m.get("content").unwrap_or(&Value::Null),
                    &format!("{at}.content"),
                    loss,
                ));
            }
            "user" => {
                let blocks = content_blocks(
                    m.get("content").unwrap_or(&Value::Null),
                    &format!("{at}.content"),
                    loss,
                );
                push_message(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                if let Some(r) = m
                    .get("reasoning_content")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    // Anthropic rejects thinking blocks without their signature; OpenAI-shaped
                    // history has none unless a client kept `reasoning_signature`.
                    match m
                        .get("reasoning_signature")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                    {
                        Some(sig) => blocks
                            .push(json!({"type": "thinking", "thinking": r, "signature": sig})),
                        None => loss.push(format!("{at}.reasoning_content")),
                    }
                }
                blocks.extend(content_blocks(
                    m.get("content").unwrap_or(&Value::Null),
                    &format!("{at}.content"),
                    loss,
                ));
                for (j, tc) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let f = tc.get("function").cloned().unwrap_or_default();
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = match serde_json::from_str(if args.trim().is_empty() {
                        "{}"
                    } else {
                        args
                    }) {
                        Ok(v) => v,
                        Err(_) => {
                            return Err(Error::Invalid(format!(
                                "{at}.tool_calls[{j}].function.arguments is not valid JSON"
                            )))
                        }
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tc.get("id").cloned().unwrap_or_default(),
                        "name": f.get("name").cloned().unwrap_or_default(),
                        "input": input,
                    }));
                }
                if m.get("function_call").is_some() {
                    loss.push(format!("{at}.function_call"));
                }
                push_message(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let content = match m.get("content") {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    Some(c @ Value::Array(_)) => {
                        Value::Array(content_blocks(c, &format!("{at}.content"), loss))
                    }
                    _ => Value::String(String::new()),
                };
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or_default(),
                    "content": content,
                });
                push_message(&mut messages, "user", vec![block]);
            }
            _ => loss.push(at),
        }
    }

    let mut out = Map::new();
    let model = obj.get("model").and_then(Value::as_str).unwrap_or_default();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| default_max_tokens(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    for (k, v) in obj {
        match k.as_str() {
            "model" | "messages" | "max_tokens" | "max_completion_tokens" => {}
            "temperature" | "top_p" | "top_k" | "stream" | "metadata" | "thinking" => {
                if k == "metadata" {
                    // OpenAI `metadata` is for stored completions; Anthropic's has user_id only.
                    loss.push("metadata");
                } else {
                    out.insert(k.clone(), v.clone());
                }
            }
            "stop" => {
                let seqs = match v {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    _ => Vec::new(),
                };
                if !seqs.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(seqs));
                }
            }
            "tools" => {
                let mut tools = Vec::new();
                for (i, t) in v.as_array().into_iter().flatten().enumerate() {
                    let Some(f) = t.get("function") else {
                        loss.push(format!("tools[{i}]"));
                        continue;
                    };
                    let mut tool = json!({
                        "name": f.get("name").cloned().unwrap_or_default(),
                        "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                    });
                    if let Some(d) = f.get("description") {
                        tool["description"] = d.clone();
                    }
                    if let Some(cc) = t.get("cache_control").or_else(|| f.get("cache_control")) {
                        tool["cache_control"] = cc.clone();
                    }
                    if f.get("strict").is_some() {
                        loss.push(format!("tools[{i}].function.strict"));
                    }
                    tools.push(tool);
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => match tool_choice_to_anthropic(v) {
                Some(tc) => {
                    out.insert("tool_choice".into(), tc);
                }
                None => loss.push("tool_choice"),
            },
            // Applied after the loop: it amends tool_choice, whatever the key order.
            "parallel_tool_calls" => {}
            "user" => {
                out.insert("metadata".into(), json!({"user_id": v}));
            }
            "reasoning_effort" => match v.as_str().and_then(effort_budget) {
                Some(b) => {
                    out.insert(
                        "thinking".into(),
                        json!({"type": "enabled", "budget_tokens": b}),
                    );
                }
                None => loss.push("reasoning_effort"),
            },
            // Shapes the stream, which the gateway honours itself.
            "stream_options" => {}
            other => loss.push(other.to_owned()),
        }
    }
    Ok(finish_hub(out, obj, system))
}

/// Anthropic `tool_choice` for an OpenAI one: `auto` / `required` / `none`, or a named
/// function (`{"function": {"name"}}` in Chat, `{"name"}` in Responses).
pub(crate) fn tool_choice_to_anthropic(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
        Value::String(s) if s == "required" => Some(json!({"type": "any"})),
        Value::String(s) if s == "none" => Some(json!({"type": "none"})),
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        _ => None,
    }
}

/// Thinking budget for an OpenAI reasoning effort.
pub(crate) fn effort_budget(effort: &str) -> Option<u64> {
    match effort {
        "minimal" | "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

/// The last touches on a hub request built from an OpenAI-style one: `parallel_tool_calls:
/// false` amends `tool_choice` (whatever the key order was) and system blocks go in.
pub(crate) fn finish_hub(
    mut out: Map<String, Value>,
    obj: &Map<String, Value>,
    system: Vec<Value>,
) -> Value {
    if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let tc = out
            .entry("tool_choice")
            .or_insert_with(|| json!({"type": "auto"}));
        tc["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    Value::Object(out)
}

/// Anthropic `stop_reason` for an OpenAI `finish_reason`.
pub(crate) fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage from OpenAI usage.
pub fn usage_to_anthropic(u: &Value) -> Value {
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut out = json!({
        "input_tokens": prompt.saturating_sub(cached),
        "output_tokens": u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
    });
    if cached > 0 {
        out["cache_read_input_tokens"] = json!(cached);
    }
    out
}

/// OpenAI `chat.completion` → Anthropic `message`.
pub fn response_to_anthropic(body: &Value, loss: &mut Loss) -> Result<Value, Error> {
    let choice = body
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| Error::Invalid("response has no choices".into()))?;
    if body
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.len() > 1)
    {
        loss.push("choices[1..]");
    }
    let msg = choice.get("message").cloned().unwrap_or_default();
    let mut content = Vec::new();
    if let Some(r) = msg
        .get("reasoning_content")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = tc.get("function").cloned().unwrap_or_default();
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        let input = serde_json::from_str(args).unwrap_or_else(|_| json!({"_raw_arguments": args}));
        content.push(
            json!({"type": "tool_use", "id": tc.get("id").cloned().unwrap_or_default(),
                            "name": f.get("name").cloned().unwrap_or_default(), "input": input}),
        );
    }
    Ok(json!({
        "id": body.get("id").cloned().unwrap_or_else(|| json!("msg_ccproxy")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model").cloned().unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": usage_to_anthropic(body.get("usage").unwrap_or(&Value::Null)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_16_1_case_4_request() {
        let body = json!({"model":"claude-haiku-4-5-20251001","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hello"}],"max_tokens":100});
        let mut loss = Loss::default();
        let out = request_to_anthropic(&body, &mut loss).unwrap();
        assert_eq!(
            out,
            json!({"model":"claude-haiku-4-5-20251001","messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}],"max_tokens":100,"system":[{"type":"text","text":"You are terse."}]})
        );
        assert!(loss.is_empty());
    }

    #[test]
    fn tools_calls_and_results_keep_ids() {
        let body = json!({"model": "claude-sonnet-4-6", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "thanks"}
        ], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
           "tool_choice": "required", "parallel_tool_calls": false, "stop": "END", "frequency_penalty": 1});
        let mut loss = Loss::default();
        let out = request_to_anthropic(&body, &mut loss).unwrap();
        assert_eq!(out["max_tokens"], 64000);
        assert_eq!(
            out["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(
            out["messages"][2]["content"][1],
            json!({"type": "text", "text": "thanks"})
        );
        assert_eq!(
            out["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(loss.0, vec!["frequency_penalty"]);
    }

    #[test]
    fn cache_control_and_images_survive() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}]});
        let out = request_to_anthropic(&body, &mut Loss::default()).unwrap();
        let c = &out["messages"][0]["content"];
        assert_eq!(
            c[0]["cache_control"],
            json!({"type": "ephemeral", "ttl": "1h"})
        );
        assert_eq!(
            c[1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
    }

    #[test]
    fn invalid_tool_arguments_are_an_error_not_a_silent_drop() {
        let body = json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{nope"}}]}]});
        assert!(request_to_anthropic(&body, &mut Loss::default()).is_err());
    }

    #[test]
    fn openai_response_to_anthropic_message() {
        let body = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Hi", "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2}}});
        let out = response_to_anthropic(&body, &mut Loss::default()).unwrap();
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(
            out["content"][1],
            json!({"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 2})
        );
    }
}
