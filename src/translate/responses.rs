//! OpenAI Responses API (`/v1/responses`) as an ingress format: requests to the Anthropic
//! Messages hub, and hub responses (complete and streamed) back to Responses objects and events.
//!
//! The gateway keeps no conversation state, so `previous_response_id` is refused with a clear
//! error instead of silently losing the history it points to.

use super::anthropic::now;
use super::openai::{
    effort_budget, finish_hub, image_block, parse_arguments, push_message, text_block,
    tool_choice_to_anthropic,
};
use super::{obj, take, take_str, Error, HubUsage, Loss};
use super::{serialize, sse};
use serde_json::{json, Map, Value};

fn content_blocks(content: Value, at: &str, loss: &mut Loss) -> Vec<Value> {
    match content {
        s @ Value::String(_) => vec![text_block(s)],
        Value::Array(parts) => parts
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let mut p = super::object(p);
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        Some(text_block(take(&mut p, "text")))
                    }
                    Some("input_image") => match take(&mut p, "image_url") {
                        Value::String(url) => Some(image_block(url)),
                        _ => {
                            loss.push(format!("{at}[{i}]"));
                            None
                        }
                    },
                    _ => {
                        loss.push(format!("{at}[{i}]"));
                        None
                    }
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Responses API request → Anthropic Messages request.
pub fn request_to_anthropic(
    mut req: Map<String, Value>,
    loss: &mut Loss,
) -> Result<Map<String, Value>, Error> {
    if req
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(Error::Invalid(
            "previous_response_id needs server-side conversation state, which ccproxy does not keep; send the full input instead".into(),
        ));
    }
    let mut system = Vec::new();
    if let Value::String(i) = take(&mut req, "instructions") {
        system.push(text_block(Value::String(i)));
    }
    let mut messages = Vec::new();
    match take(&mut req, "input") {
        s @ Value::String(_) => push_message(&mut messages, "user", vec![text_block(s)]),
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("input[{i}]");
                let mut item = super::object(item);
                let kind = match item.get("type").and_then(Value::as_str) {
                    Some(k) => k.to_owned(),
                    None => "message".to_owned(),
                };
                match kind.as_str() {
                    "message" => {
                        let role = take_str(&mut item, "role");
                        let blocks = content_blocks(
                            take(&mut item, "content"),
                            &format!("{at}.content"),
                            loss,
                        );
                        match role.as_str() {
                            "system" | "developer" => system.extend(blocks),
                            "assistant" => push_message(&mut messages, "assistant", blocks),
                            _ => push_message(&mut messages, "user", blocks),
                        }
                    }
                    "function_call" => {
                        let args = take_str(&mut item, "arguments");
                        let input = parse_arguments(&args, &|| format!("{at}.arguments"))?;
                        push_message(
                            &mut messages,
                            "assistant",
                            vec![obj([
                                ("type", "tool_use".into()),
                                ("id", take(&mut item, "call_id")),
                                ("name", take(&mut item, "name")),
                                ("input", input),
                            ])],
                        );
                    }
                    "function_call_output" => {
                        let output = match take(&mut item, "output") {
                            Value::String(s) => s,
                            Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        push_message(
                            &mut messages,
                            "user",
                            vec![obj([
                                ("type", "tool_result".into()),
                                ("tool_use_id", take(&mut item, "call_id")),
                                ("content", output.into()),
                            ])],
                        );
                    }
                    _ => loss.push(at),
                }
            }
        }
        _ => {
            return Err(Error::Invalid(
                "`input` must be a string or an array".into(),
            ))
        }
    }
    let model = take_str(&mut req, "model");
    let max_tokens = req
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| super::openai::default_max_tokens(&model));
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    let parallel_off = req.get("parallel_tool_calls") == Some(&Value::Bool(false));
    for (k, v) in req {
        match k.as_str() {
            "max_output_tokens" | "previous_response_id" | "parallel_tool_calls" => {}
            "temperature" | "top_p" | "stream" => {
                out.insert(k, v);
            }
            "user" => {
                out.insert("metadata".into(), json!({"user_id": v}));
            }
            "tools" => {
                let mut tools = Vec::new();
                if let Value::Array(list) = v {
                    for (i, t) in list.into_iter().enumerate() {
                        let mut t = super::object(t);
                        if t.get("type").and_then(Value::as_str) != Some("function") {
                            loss.push(format!("tools[{i}]"));
                            continue;
                        }
                        let schema = match take(&mut t, "parameters") {
                            Value::Null => json!({"type": "object"}),
                            p => p,
                        };
                        let mut tool =
                            json!({"name": take(&mut t, "name"), "input_schema": schema});
                        if let Some(d) = t.shift_remove("description") {
                            tool["description"] = d;
                        }
                        if t.get("strict") == Some(&Value::Bool(true)) {
                            loss.push(format!("tools[{i}].strict"));
                        }
                        tools.push(tool);
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
            "reasoning" => match v
                .get("effort")
                .and_then(Value::as_str)
                .and_then(effort_budget)
            {
                Some(b) => {
                    out.insert(
                        "thinking".into(),
                        json!({"type": "enabled", "budget_tokens": b}),
                    );
                }
                None => loss.push("reasoning"),
            },
            // No effect on a stateless gateway.
            "store" | "include" => {}
            _ => loss.push(k),
        }
    }
    Ok(finish_hub(out, parallel_off, system))
}

fn usage(u: &Value) -> Value {
    let h = HubUsage::of(u);
    json!({"input_tokens": h.prompt(), "input_tokens_details": {"cached_tokens": h.cache_read},
           "output_tokens": h.output, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": h.prompt() + h.output})
}

fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_owned()
    } else {
        format!("resp_{id}")
    }
}

/// One hub content block → a Responses output item.
fn output_item(b: Value, i: usize, id: &str) -> Option<Value> {
    let mut b = super::object(b);
    let kind = b.get("type").and_then(Value::as_str)?;
    match kind {
        "text" => {
            let part = obj([
                ("type", "output_text".into()),
                ("text", take_str(&mut b, "text").into()),
                ("annotations", Value::Array(Vec::new())),
            ]);
            Some(obj([
                ("type", "message".into()),
                ("id", format!("msg_{id}_{i}").into()),
                ("status", "completed".into()),
                ("role", "assistant".into()),
                ("content", Value::Array(vec![part])),
            ]))
        }
        "tool_use" => {
            let arguments = match b.get("input") {
                Some(input) => input.to_string(),
                None => "{}".into(),
            };
            Some(obj([
                ("type", "function_call".into()),
                ("id", format!("fc_{id}_{i}").into()),
                ("status", "completed".into()),
                ("call_id", take_str(&mut b, "id").into()),
                ("name", take_str(&mut b, "name").into()),
                ("arguments", arguments.into()),
            ]))
        }
        "thinking" => {
            let summary = obj([
                ("type", "summary_text".into()),
                ("text", take_str(&mut b, "thinking").into()),
            ]);
            Some(obj([
                ("type", "reasoning".into()),
                ("id", format!("rs_{id}_{i}").into()),
                ("summary", Value::Array(vec![summary])),
            ]))
        }
        _ => None,
    }
}

/// Anthropic `message` → Responses `response` object.
pub fn response_from_anthropic(body: Value, loss: &mut Loss) -> Value {
    let mut body = super::object(body);
    let content = take(&mut body, "content");
    let raw_id = body.get("id").and_then(Value::as_str).unwrap_or("ccproxy");
    let mut output = Vec::new();
    let blocks = match content {
        Value::Array(blocks) => blocks,
        _ => Vec::new(),
    };
    for (i, b) in blocks.into_iter().enumerate() {
        match output_item(b, i, raw_id) {
            Some(item) => output.push(item),
            None => loss.push(format!("content[{i}]")),
        }
    }
    let incomplete = body.get("stop_reason").and_then(Value::as_str) == Some("max_tokens");
    json!({
        "id": response_id(raw_id), "object": "response", "created_at": now(),
        "status": if incomplete { "incomplete" } else { "completed" },
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "model": take(&mut body, "model"),
        "output": output,
        "usage": usage(body.get("usage").unwrap_or(&Value::Null)),
    })
}

/// Anthropic stream events → Responses API stream events.
#[derive(Default)]
pub struct ResponsesSink {
    seq: u64,
    id: String,
    model: String,
    created: u64,
    usage: Value,
    stop: Option<String>,
    output: Vec<Value>,
    /// Hub block index → (output index, item, accumulated text or arguments).
    open: std::collections::HashMap<u64, (usize, Value, String)>,
    done: bool,
}

impl ResponsesSink {
    fn send(&mut self, name: &str, mut data: Value, out: &mut String) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push_str(&sse::encode(Some(name), &serialize::to_string(&data)));
    }

    fn snapshot(&self, status: &str) -> Value {
        json!({"id": self.id, "object": "response", "created_at": self.created, "status": status,
               "model": self.model, "output": self.output, "usage": if status == "in_progress" { Value::Null } else { usage(&self.usage) }})
    }

    pub fn emit(&mut self, ev: &Value, out: &mut String) {
        let idx = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = ev.get("message").cloned().unwrap_or_default();
                self.id = response_id(m.get("id").and_then(Value::as_str).unwrap_or("ccproxy"));
                self.model = m
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                self.created = now();
                self.usage = m.get("usage").cloned().unwrap_or_else(|| json!({}));
                let snap = self.snapshot("in_progress");
                self.send("response.created", json!({"response": snap}), out);
                let snap = self.snapshot("in_progress");
                self.send("response.in_progress", json!({"response": snap}), out);
            }
            Some("content_block_start") => {
                let b = ev.get("content_block").cloned().unwrap_or_default();
                let oi = self.output.len() + self.open.len();
                let raw = self.id.trim_start_matches("resp_").to_owned();
                let Some(mut item) = output_item(b, oi, &raw) else {
                    return;
                };
                item["status"] = json!("in_progress");
                let kind = item["type"].as_str().unwrap_or("").to_owned();
                match kind.as_str() {
                    "message" => item["content"] = json!([]),
                    "function_call" => item["arguments"] = json!(""),
                    _ => item["summary"] = json!([]),
                }
                self.send(
                    "response.output_item.added",
                    json!({"output_index": oi, "item": item.clone()}),
                    out,
                );
                if kind == "message" {
                    self.send(
                        "response.content_part.added",
                        json!({"item_id": item["id"], "output_index": oi, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                        out,
                    );
                }
                self.open.insert(idx, (oi, item, String::new()));
            }
            Some("content_block_delta") => {
                let d = ev.get("delta").cloned().unwrap_or_default();
                let Some((oi, item, acc)) = self.open.get_mut(&idx) else {
                    return;
                };
                let (oi, item_id) = (*oi, item["id"].clone());
                let (name, payload) = match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").and_then(Value::as_str).unwrap_or("");
                        acc.push_str(t);
                        (
                            "response.output_text.delta",
                            json!({"item_id": item_id, "output_index": oi, "content_index": 0, "delta": t}),
                        )
                    }
                    Some("input_json_delta") => {
                        let t = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        acc.push_str(t);
                        (
                            "response.function_call_arguments.delta",
                            json!({"item_id": item_id, "output_index": oi, "delta": t}),
                        )
                    }
                    Some("thinking_delta") => {
                        let t = d.get("thinking").and_then(Value::as_str).unwrap_or("");
                        acc.push_str(t);
                        (
                            "response.reasoning_summary_text.delta",
                            json!({"item_id": item_id, "output_index": oi, "summary_index": 0, "delta": t}),
                        )
                    }
                    _ => return,
                };
                self.send(name, payload, out);
            }
            Some("content_block_stop") => {
                let Some((oi, mut item, acc)) = self.open.remove(&idx) else {
                    return;
                };
                item["status"] = json!("completed");
                match item["type"].as_str() {
                    Some("message") => {
                        let part = json!({"type": "output_text", "text": acc, "annotations": []});
                        self.send("response.output_text.done", json!({"item_id": item["id"], "output_index": oi, "content_index": 0, "text": acc}), out);
                        self.send("response.content_part.done", json!({"item_id": item["id"], "output_index": oi, "content_index": 0, "part": part.clone()}), out);
                        item["content"] = json!([part]);
                    }
                    Some("function_call") => {
                        let args = if acc.is_empty() { "{}".to_owned() } else { acc };
                        self.send(
                            "response.function_call_arguments.done",
                            json!({"item_id": item["id"], "output_index": oi, "arguments": args}),
                            out,
                        );
                        item["arguments"] = json!(args);
                    }
                    _ => {
                        item["summary"] = json!([{"type": "summary_text", "text": acc}]);
                    }
                }
                self.send(
                    "response.output_item.done",
                    json!({"output_index": oi, "item": item.clone()}),
                    out,
                );
                self.output.push(item);
            }
            Some("message_delta") => {
                if let (Some(Value::Object(u)), Value::Object(dst)) =
                    (ev.get("usage"), &mut self.usage)
                {
                    for (k, v) in u {
                        dst.insert(k.clone(), v.clone());
                    }
                }
                self.stop = ev
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            Some("message_stop") => self.finish(out),
            Some("error") => {
                let e = ev.get("error").cloned().unwrap_or_default();
                self.send("error", json!({"code": e.get("type").cloned().unwrap_or_default(), "message": e.get("message").cloned().unwrap_or_default()}), out);
            }
            _ => {}
        }
    }

    pub fn finish(&mut self, out: &mut String) {
        if self.done || self.id.is_empty() {
            return;
        }
        self.done = true;
        let incomplete = self.stop.as_deref() == Some("max_tokens");
        let mut snap = self.snapshot(if incomplete {
            "incomplete"
        } else {
            "completed"
        });
        if incomplete {
            snap["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        let name = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.send(name, json!({"response": snap}), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_request_with_tools_and_outputs() {
        let body = json!({"model": "claude-sonnet-4-6", "instructions": "Be brief.", "max_output_tokens": 300, "stream": true,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
            ],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}, {"type": "web_search"}],
            "reasoning": {"effort": "low"}, "store": false});
        let mut loss = Loss::default();
        let a = Value::Object(request_to_anthropic(super::super::object(body), &mut loss).unwrap());
        assert_eq!(a["system"], json!([{"type": "text", "text": "Be brief."}]));
        assert_eq!(a["max_tokens"], 300);
        assert_eq!(
            a["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(a["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(a["thinking"]["budget_tokens"], 1024);
        assert_eq!(loss.0, vec!["tools[1]"]);
    }

    #[test]
    fn previous_response_id_is_refused() {
        let body = json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"});
        assert!(request_to_anthropic(super::super::object(body), &mut Loss::default()).is_err());
    }

    #[test]
    fn anthropic_message_to_response_object() {
        let m = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "usage": {"input_tokens": 10, "output_tokens": 4}});
        let r = response_from_anthropic(m, &mut Loss::default());
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(r["output"][1]["call_id"], "toolu_1");
        assert_eq!(r["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(r["usage"]["total_tokens"], 14);
    }
}
