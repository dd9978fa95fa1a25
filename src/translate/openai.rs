//! OpenAI Chat Completions ⇄ the Anthropic Messages hub: requests from OpenAI clients and
//! responses from OpenAI-compatible providers.
//!
//! Translators consume their input: message texts, base64 images and tool schemas are moved into
//! the output, never copied.

use super::{obj, take, take_str, Error, Loss};
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

/// OpenAI content (string or parts) → Anthropic content blocks. `at` names the content for
/// the loss report (built only when something is lost).
fn content_blocks(content: Value, at: &dyn Fn() -> String, loss: &mut Loss) -> Vec<Value> {
    match content {
        Value::String(s) => vec![text_block(s)],
        Value::Array(parts) => parts
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| part_block(p, &|| format!("{}[{i}]", at()), loss))
            .collect(),
        Value::Null => Vec::new(),
        _ => {
            loss.push(at());
            Vec::new()
        }
    }
}

/// `{"type": "text", "text": …}`.
pub(crate) fn text_block(text: impl Into<Value>) -> Value {
    obj([("type", "text".into()), ("text", text.into())])
}

fn part_block(part: Value, at: &dyn Fn() -> String, loss: &mut Loss) -> Option<Value> {
    let Value::Object(mut part) = part else {
        loss.push(at());
        return None;
    };
    let mut block = match part.get("type").and_then(Value::as_str) {
        Some("text") => text_block(take(&mut part, "text")),
        Some("image_url") => {
            let url = match take(&mut part, "image_url") {
                Value::Object(mut u) => take_str(&mut u, "url"),
                Value::String(s) => s,
                _ => String::new(),
            };
            image_block(url)
        }
        _ => {
            loss.push(at());
            return None;
        }
    };
    if let (Some(cc), Value::Object(b)) = (part.shift_remove("cache_control"), &mut block) {
        b.insert("cache_control".into(), cc);
    }
    Some(block)
}

/// An Anthropic image block for an OpenAI image URL (a `data:` URL becomes a base64 source).
pub(crate) fn image_block(url: String) -> Value {
    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
        let media_type = meta.trim_end_matches(";base64").to_owned();
        let skip = url.len() - data.len();
        let mut data = url;
        // Keep the (possibly megabytes of) base64 in place: drop the `data:…,` prefix.
        data.drain(..skip);
        let source = obj([
            ("type", "base64".into()),
            ("media_type", media_type.into()),
            ("data", data.into()),
        ]);
        return obj([("type", "image".into()), ("source", source)]);
    }
    let source = obj([("type", "url".into()), ("url", url.into())]);
    obj([("type", "image".into()), ("source", source)])
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
    out.push(obj([
        ("role", role.into()),
        ("content", Value::Array(blocks)),
    ]));
}

/// Parse tool-call arguments (a JSON text; empty means `{}`); `at` names them in the error.
pub(crate) fn parse_arguments(args: &str, at: &dyn Fn() -> String) -> Result<Value, Error> {
    let text = if args.trim().is_empty() { "{}" } else { args };
    serde_json::from_str(text).map_err(|_| Error::Invalid(format!("{} is not valid JSON", at())))
}

/// `{"type": "tool_use", "id", "name", "input"}`.
pub(crate) fn tool_use_block(id: Value, name: Value, input: Value) -> Value {
    obj([
        ("type", "tool_use".into()),
        ("id", id),
        ("name", name),
        ("input", input),
    ])
}

/// OpenAI Chat Completions request → Anthropic Messages request.
pub fn request_to_anthropic(
    mut obj_in: Map<String, Value>,
    loss: &mut Loss,
) -> Result<Map<String, Value>, Error> {
    let Value::Array(msgs) = take(&mut obj_in, "messages") else {
        return Err(Error::Invalid("`messages` must be an array".into()));
    };
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.into_iter().enumerate() {
        let at = || format!("messages[{i}]");
        let content_at = || format!("messages[{i}].content");
        let Value::Object(mut m) = m else {
            loss.push(at());
            continue;
        };
        if m.contains_key("name") {
            loss.push(format!("{}.name", at()));
        }
        let role = take_str(&mut m, "role");
        match role.as_str() {
            "system" | "developer" => {
                system.extend(content_blocks(take(&mut m, "content"), &content_at, loss));
            }
            "user" => {
                let blocks = content_blocks(take(&mut m, "content"), &content_at, loss);
                push_message(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let reasoning = take_str(&mut m, "reasoning_content");
                if !reasoning.is_empty() {
                    // Anthropic rejects thinking blocks without their signature; OpenAI-shaped
                    // history has none unless a client kept `reasoning_signature`.
                    let sig = take_str(&mut m, "reasoning_signature");
                    if sig.is_empty() {
                        loss.push(format!("{}.reasoning_content", at()));
                    } else {
                        blocks.push(obj([
                            ("type", "thinking".into()),
                            ("thinking", reasoning.into()),
                            ("signature", sig.into()),
                        ]));
                    }
                }
                blocks.extend(content_blocks(take(&mut m, "content"), &content_at, loss));
                if let Value::Array(calls) = take(&mut m, "tool_calls") {
                    for (j, tc) in calls.into_iter().enumerate() {
                        let Value::Object(mut tc) = tc else {
                            loss.push(format!("{}.tool_calls[{j}]", at()));
                            continue;
                        };
                        let mut f = match take(&mut tc, "function") {
                            Value::Object(f) => f,
                            _ => Map::new(),
                        };
                        let args = take_str(&mut f, "arguments");
                        let input = parse_arguments(&args, &|| {
                            format!("{}.tool_calls[{j}].function.arguments", at())
                        })?;
                        blocks.push(tool_use_block(
                            take(&mut tc, "id"),
                            take(&mut f, "name"),
                            input,
                        ));
                    }
                }
                if m.contains_key("function_call") {
                    loss.push(format!("{}.function_call", at()));
                }
                push_message(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let content = match take(&mut m, "content") {
                    s @ Value::String(_) => s,
                    c @ Value::Array(_) => Value::Array(content_blocks(c, &content_at, loss)),
                    _ => Value::String(String::new()),
                };
                let block = obj([
                    ("type", "tool_result".into()),
                    ("tool_use_id", take(&mut m, "tool_call_id")),
                    ("content", content),
                ]);
                push_message(&mut messages, "user", vec![block]);
            }
            _ => loss.push(at()),
        }
    }

    let mut out = Map::new();
    let model = match take(&mut obj_in, "model") {
        Value::String(s) => s,
        _ => String::new(),
    };
    let max_tokens = obj_in
        .get("max_completion_tokens")
        .or_else(|| obj_in.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| default_max_tokens(&model));
    out.insert("model".into(), Value::String(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), max_tokens.into());
    let parallel_off = obj_in.get("parallel_tool_calls") == Some(&Value::Bool(false));
    for (k, v) in obj_in {
        match k.as_str() {
            "max_tokens" | "max_completion_tokens" | "parallel_tool_calls" => {}
            "temperature" | "top_p" | "top_k" | "stream" | "thinking" => {
                out.insert(k, v);
            }
            // OpenAI `metadata` is for stored completions; Anthropic's has user_id only.
            "metadata" => loss.push("metadata"),
            "stop" => {
                let seqs = match v {
                    Value::String(s) => vec![Value::String(s)],
                    Value::Array(a) => a,
                    _ => Vec::new(),
                };
                if !seqs.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(seqs));
                }
            }
            "tools" => {
                let mut tools = Vec::new();
                if let Value::Array(list) = v {
                    for (i, t) in list.into_iter().enumerate() {
                        let Value::Object(mut t) = t else {
                            loss.push(format!("tools[{i}]"));
                            continue;
                        };
                        let Value::Object(mut f) = take(&mut t, "function") else {
                            loss.push(format!("tools[{i}]"));
                            continue;
                        };
                        let schema = match take(&mut f, "parameters") {
                            Value::Null => json!({"type": "object"}),
                            p => p,
                        };
                        let mut tool = Map::with_capacity(4);
                        tool.insert("name".into(), take(&mut f, "name"));
                        tool.insert("input_schema".into(), schema);
                        if let Some(d) = f.shift_remove("description") {
                            tool.insert("description".into(), d);
                        }
                        if let Some(cc) = t
                            .shift_remove("cache_control")
                            .or_else(|| f.shift_remove("cache_control"))
                        {
                            tool.insert("cache_control".into(), cc);
                        }
                        if f.contains_key("strict") {
                            loss.push(format!("tools[{i}].function.strict"));
                        }
                        tools.push(Value::Object(tool));
                    }
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => match tool_choice_to_anthropic(v) {
                Some(tc) => {
                    out.insert("tool_choice".into(), tc);
                }
                None => loss.push("tool_choice"),
            },
            "user" => {
                out.insert("metadata".into(), obj([("user_id", v)]));
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
            _ => loss.push(k),
        }
    }
    Ok(finish_hub(out, parallel_off, system))
}

/// Anthropic `tool_choice` for an OpenAI one: `auto` / `required` / `none`, or a named
/// function (`{"function": {"name"}}` in Chat, `{"name"}` in Responses).
pub(crate) fn tool_choice_to_anthropic(v: Value) -> Option<Value> {
    match v {
        Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
        Value::String(s) if s == "required" => Some(json!({"type": "any"})),
        Value::String(s) if s == "none" => Some(json!({"type": "none"})),
        Value::Object(mut o) => {
            let name = match o.remove("function") {
                Some(Value::Object(mut f)) => f.remove("name"),
                _ => o.remove("name"),
            }?;
            Some(obj([("type", "tool".into()), ("name", name)]))
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
    parallel_off: bool,
    system: Vec<Value>,
) -> Map<String, Value> {
    if parallel_off {
        let tc = out
            .entry("tool_choice")
            .or_insert_with(|| json!({"type": "auto"}));
        tc["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out
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
pub fn response_to_anthropic(body: Value, loss: &mut Loss) -> Result<Value, Error> {
    let Value::Object(mut body) = body else {
        return Err(Error::Invalid("response is not a JSON object".into()));
    };
    let Value::Array(choices) = take(&mut body, "choices") else {
        return Err(Error::Invalid("response has no choices".into()));
    };
    if choices.len() > 1 {
        loss.push("choices[1..]");
    }
    let Some(Value::Object(mut choice)) = choices.into_iter().next() else {
        return Err(Error::Invalid("response has no choices".into()));
    };
    let mut msg = match take(&mut choice, "message") {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut content = Vec::new();
    let reasoning = take_str(&mut msg, "reasoning_content");
    if !reasoning.is_empty() {
        content.push(obj([
            ("type", "thinking".into()),
            ("thinking", reasoning.into()),
            ("signature", "".into()),
        ]));
    }
    let text = take_str(&mut msg, "content");
    if !text.is_empty() {
        content.push(text_block(text));
    }
    if let Value::Array(calls) = take(&mut msg, "tool_calls") {
        for tc in calls {
            let Value::Object(mut tc) = tc else { continue };
            let mut f = match take(&mut tc, "function") {
                Value::Object(f) => f,
                _ => Map::new(),
            };
            let args = take_str(&mut f, "arguments");
            let args = if args.trim().is_empty() {
                "{}".to_owned()
            } else {
                args
            };
            let input =
                serde_json::from_str(&args).unwrap_or_else(|_| json!({"_raw_arguments": args}));
            content.push(tool_use_block(
                take(&mut tc, "id"),
                take(&mut f, "name"),
                input,
            ));
        }
    }
    let id = match take(&mut body, "id") {
        Value::Null => json!("msg_ccproxy"),
        id => id,
    };
    let stop = stop_reason(choice.get("finish_reason").and_then(Value::as_str));
    let usage = usage_to_anthropic(body.get("usage").unwrap_or(&Value::Null));
    Ok(obj([
        ("id", id),
        ("type", "message".into()),
        ("role", "assistant".into()),
        ("model", take(&mut body, "model")),
        ("content", Value::Array(content)),
        ("stop_reason", stop.into()),
        ("stop_sequence", Value::Null),
        ("usage", usage),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::object;

    #[test]
    fn spec_16_1_case_4_request() {
        let body = json!({"model":"claude-haiku-4-5-20251001","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hello"}],"max_tokens":100});
        let mut loss = Loss::default();
        let out = Value::Object(request_to_anthropic(object(body), &mut loss).unwrap());
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
        let out = Value::Object(request_to_anthropic(object(body), &mut loss).unwrap());
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
        let out = Value::Object(request_to_anthropic(object(body), &mut Loss::default()).unwrap());
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
        assert!(request_to_anthropic(object(body), &mut Loss::default()).is_err());
    }

    #[test]
    fn openai_response_to_anthropic_message() {
        let body = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Hi", "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2}}});
        let out = response_to_anthropic(body, &mut Loss::default()).unwrap();
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
