//! Gemini `generateContent` ⇄ the Anthropic Messages hub: requests and responses both ways.
//!
//! Gemini has no tool-call ids and attaches `thoughtSignature`s to parts; both must survive a
//! round trip through clients that only keep Anthropic/OpenAI shapes. Thinking parts map to
//! thinking blocks (signature kept as the block's `signature`); a signature on a function call
//! travels inside the tool-use id (`…__ts__<signature>`), the one field every client echoes back.
//! Gemini's proto-JSON accepts snake_case field names as well as camelCase; requests are
//! normalised to camelCase ([`normalize_request`]) before they are read. Tool schemas are
//! converted between Gemini's OpenAPI subset and JSON Schema by [`super::schema`].

use super::openai::text_block;
use super::{into_text, obj, schema, take, take_str, Error, HubUsage, Loss};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Separator between a tool-use id and a Gemini thought signature carried inside it.
pub const SIGNATURE_MARK: &str = "__ts__";

/// Where the model is in `…/models/{model}:{action}` (a path, or a URL with a query).
pub fn path_model_span(path: &str) -> Option<std::ops::Range<usize>> {
    let start = path.find("/models/")? + "/models/".len();
    let end = path[start..]
        .find([':', '/', '?'])
        .map_or(path.len(), |e| start + e);
    (end > start).then_some(start..end)
}

/// Action in a Gemini-style path (`…:generateContent` → `generateContent`).
pub fn path_action(path: &str) -> Option<&str> {
    let (_, a) = path.rsplit_once(':')?;
    (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(a)
}

/// A tool-use id carrying `signature` (base64 made id-safe: `+`→`-`, `/`→`_`, no `=`).
pub fn id_with_signature(base: &str, signature: &str) -> String {
    let safe: String = signature
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    format!("{base}{SIGNATURE_MARK}{safe}")
}

/// The Gemini signature inside a tool-use id, restored to standard base64.
pub fn signature_from_id(id: &str) -> Option<String> {
    let (_, safe) = id.split_once(SIGNATURE_MARK)?;
    let mut s: String = safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while s.len() % 4 != 0 {
        s.push('=');
    }
    Some(s)
}

/// snake_case → camelCase for one proto field name.
fn camel(key: String) -> String {
    if !key.contains('_') {
        return key;
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The object's own keys in camelCase; values untouched.
fn camel_keys(o: Map<String, Value>) -> Map<String, Value> {
    if !o.keys().any(|k| k.contains('_')) {
        return o;
    }
    o.into_iter().map(|(k, v)| (camel(k), v)).collect()
}

/// Apply `f` to an object member (an object itself).
fn map_member(
    o: &mut Map<String, Value>,
    key: &str,
    f: impl Fn(Map<String, Value>) -> Map<String, Value>,
) {
    if let Some(v) = o.get_mut(key) {
        if let Value::Object(inner) = std::mem::take(v) {
            *v = Value::Object(f(inner));
        }
    }
}

/// Apply `f` to each object of an array member.
fn map_each(
    o: &mut Map<String, Value>,
    key: &str,
    f: impl Fn(Map<String, Value>) -> Map<String, Value>,
) {
    if let Some(Value::Array(items)) = o.get_mut(key) {
        for item in items.iter_mut() {
            if let Value::Object(inner) = std::mem::take(item) {
                *item = Value::Object(f(inner));
            }
        }
    }
}

fn normalize_part(p: Map<String, Value>) -> Map<String, Value> {
    let mut p = camel_keys(p);
    // Only the field names of these messages, never `args`/`response` payloads.
    for k in ["inlineData", "fileData", "functionCall", "functionResponse"] {
        map_member(&mut p, k, camel_keys);
    }
    p
}

fn normalize_content(c: Map<String, Value>) -> Map<String, Value> {
    let mut c = camel_keys(c);
    map_each(&mut c, "parts", normalize_part);
    c
}

fn normalize_tool(t: Map<String, Value>) -> Map<String, Value> {
    let mut t = camel_keys(t);
    map_each(&mut t, "functionDeclarations", camel_keys);
    t
}

/// A Gemini request with every proto field name in camelCase (`system_instruction` →
/// `systemInstruction`, `function_declarations` → `functionDeclarations`, …). Payloads that are
/// the user's data (function `args`, `response`, schema property names) are left alone.
pub fn normalize_request(req: Map<String, Value>) -> Map<String, Value> {
    let mut req = camel_keys(req);
    map_each(&mut req, "contents", normalize_content);
    map_member(&mut req, "systemInstruction", normalize_content);
    map_member(&mut req, "generationConfig", |g| {
        let mut g = camel_keys(g);
        map_member(&mut g, "thinkingConfig", camel_keys);
        g
    });
    map_each(&mut req, "tools", normalize_tool);
    map_member(&mut req, "toolConfig", |t| {
        let mut t = camel_keys(t);
        map_member(&mut t, "functionCallingConfig", camel_keys);
        t
    });
    req
}

/// The `generationConfig` of a Gemini request, in either spelling.
pub fn generation_config(req: &Map<String, Value>) -> Option<&Map<String, Value>> {
    req.get("generationConfig")
        .or_else(|| req.get("generation_config"))
        .and_then(Value::as_object)
}

/// One Anthropic block (`messages[i].content[j]`) → a Gemini part; `tool_names` maps tool-use
/// ids to names for results.
fn hub_block_to_part(
    mut b: Map<String, Value>,
    (i, j): (usize, usize),
    tool_names: &mut HashMap<String, String>,
    loss: &mut Loss,
) -> Option<Value> {
    if b.contains_key("cache_control") {
        loss.push(format!("messages[{i}].content[{j}].cache_control"));
    }
    match b.get("type").and_then(Value::as_str) {
        Some("text") => Some(obj([("text", take(&mut b, "text"))])),
        Some("image") => {
            let mut src = super::object(take(&mut b, "source"));
            if src.get("type").and_then(Value::as_str) == Some("base64") {
                Some(obj([(
                    "inlineData",
                    obj([
                        ("mimeType", take(&mut src, "media_type")),
                        ("data", take(&mut src, "data")),
                    ]),
                )]))
            } else {
                Some(obj([(
                    "fileData",
                    obj([("fileUri", take(&mut src, "url"))]),
                )]))
            }
        }
        Some("thinking") => {
            let mut p = obj([("text", take(&mut b, "thinking")), ("thought", true.into())]);
            let sig = take_str(&mut b, "signature");
            if !sig.is_empty() {
                p["thoughtSignature"] = Value::String(sig);
            }
            Some(p)
        }
        Some("tool_use") => {
            let id = take_str(&mut b, "id");
            let name = take_str(&mut b, "name");
            let args = match take(&mut b, "input") {
                Value::Null => json!({}),
                v => v,
            };
            let mut p = obj([(
                "functionCall",
                obj([("name", name.clone().into()), ("args", args)]),
            )]);
            if let Some(sig) = signature_from_id(&id) {
                p["thoughtSignature"] = json!(sig);
            }
            tool_names.insert(id, name);
            Some(p)
        }
        Some("tool_result") => {
            let id = take_str(&mut b, "tool_use_id");
            let name = tool_names.get(&id).cloned().unwrap_or_default();
            let text = into_text(take(&mut b, "content"));
            let response = if b.get("is_error") == Some(&Value::Bool(true)) {
                obj([("error", text.into())])
            } else {
                obj([("content", text.into())])
            };
            Some(obj([(
                "functionResponse",
                obj([("name", name.into()), ("response", response)]),
            )]))
        }
        _ => {
            loss.push(format!("messages[{i}].content[{j}]"));
            None
        }
    }
}

/// Anthropic Messages request → Gemini `generateContent` body.
pub fn request_from_anthropic(
    mut req: Map<String, Value>,
    loss: &mut Loss,
) -> Result<Value, Error> {
    let Value::Array(msgs) = take(&mut req, "messages") else {
        return Err(Error::Invalid("`messages` must be an array".into()));
    };
    let mut tool_names: HashMap<String, String> = HashMap::new();
    let mut contents = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.into_iter().enumerate() {
        let mut m = super::object(m);
        let role = if m.get("role").and_then(Value::as_str) == Some("assistant") {
            "model"
        } else {
            "user"
        };
        let blocks: Vec<Value> = match take(&mut m, "content") {
            Value::String(s) => vec![text_block(s)],
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        let parts: Vec<Value> = blocks
            .into_iter()
            .enumerate()
            .filter_map(|(j, b)| hub_block_to_part(super::object(b), (i, j), &mut tool_names, loss))
            .collect();
        if !parts.is_empty() {
            contents.push(obj([("role", role.into()), ("parts", Value::Array(parts))]));
        }
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    match take(&mut req, "system") {
        Value::String(s) => {
            out.insert(
                "systemInstruction".into(),
                obj([("parts", Value::Array(vec![obj([("text", s.into())])]))]),
            );
        }
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.into_iter().enumerate() {
                let mut b = super::object(b);
                if b.contains_key("cache_control") {
                    loss.push(format!("system[{i}].cache_control"));
                }
                if let Some(t) = b.shift_remove("text") {
                    parts.push(obj([("text", t)]));
                }
            }
            out.insert(
                "systemInstruction".into(),
                obj([("parts", Value::Array(parts))]),
            );
        }
        _ => {}
    }
    let mut gen = Map::new();
    for (k, v) in req {
        match k.as_str() {
            "model" | "stream" => {}
            "max_tokens" => {
                gen.insert("maxOutputTokens".into(), v);
            }
            "temperature" => {
                gen.insert("temperature".into(), v);
            }
            "top_p" => {
                gen.insert("topP".into(), v);
            }
            "top_k" => {
                gen.insert("topK".into(), v);
            }
            "stop_sequences" => {
                gen.insert("stopSequences".into(), v);
            }
            "thinking" => {
                if v.get("type").and_then(Value::as_str) == Some("enabled") {
                    let budget = v.get("budget_tokens").cloned().unwrap_or(json!(-1));
                    gen.insert(
                        "thinkingConfig".into(),
                        json!({"thinkingBudget": budget, "includeThoughts": true}),
                    );
                }
            }
            "tools" => {
                let mut decls = Vec::new();
                if let Value::Array(list) = v {
                    for (i, t) in list.into_iter().enumerate() {
                        let mut t = super::object(t);
                        let Some(input_schema) = t.shift_remove("input_schema") else {
                            loss.push(format!("tools[{i}]"));
                            continue;
                        };
                        let mut d = obj([("name", take(&mut t, "name"))]);
                        if let Some(desc) = t.shift_remove("description") {
                            d["description"] = desc;
                        }
                        if let Some(params) = schema::to_gemini(
                            input_schema,
                            &format!("tools[{i}].input_schema"),
                            loss,
                        ) {
                            d["parameters"] = params;
                        }
                        if t.contains_key("cache_control") {
                            loss.push(format!("tools[{i}].cache_control"));
                        }
                        decls.push(d);
                    }
                }
                out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
            }
            "tool_choice" => {
                let cfg = match v.get("type").and_then(Value::as_str) {
                    Some("auto") => json!({"mode": "AUTO"}),
                    Some("any") => json!({"mode": "ANY"}),
                    Some("none") => json!({"mode": "NONE"}),
                    Some("tool") => {
                        json!({"mode": "ANY", "allowedFunctionNames": [v.get("name").cloned().unwrap_or_default()]})
                    }
                    _ => {
                        loss.push("tool_choice");
                        continue;
                    }
                };
                if v.get("disable_parallel_tool_use").is_some() {
                    loss.push("tool_choice.disable_parallel_tool_use");
                }
                out.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
            }
            _ => loss.push(k),
        }
    }
    if !gen.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gen));
    }
    Ok(Value::Object(out))
}

/// The Anthropic tool for a Gemini function declaration.
fn declaration_to_tool(d: Value, at: &str, loss: &mut Loss) -> Option<Value> {
    let Value::Object(d) = d else {
        loss.push(at.to_owned());
        return None;
    };
    let mut name = Value::Null;
    let mut description = None;
    let mut input_schema = None;
    for (k, v) in d {
        match k.as_str() {
            "name" => name = v,
            "description" => description = Some(v),
            // Already JSON Schema: carried as is.
            "parametersJsonSchema" => input_schema = Some(v),
            "parameters" if input_schema.is_none() => {
                input_schema = Some(schema::to_json_schema(v, &format!("{at}.parameters"), loss));
            }
            _ => loss.push(format!("{at}.{k}")),
        }
    }
    let mut tool = json!({"name": name, "input_schema": input_schema.unwrap_or_else(|| json!({"type": "object"}))});
    if let Some(desc) = description {
        tool["description"] = desc;
    }
    Some(tool)
}

/// Gemini `generateContent` body → Anthropic Messages request (`model` comes from the path).
pub fn request_to_anthropic(
    req: Map<String, Value>,
    model: &str,
    loss: &mut Loss,
) -> Result<Map<String, Value>, Error> {
    let mut req = normalize_request(req);
    let Value::Array(contents) = take(&mut req, "contents") else {
        return Err(Error::Invalid("`contents` must be an array".into()));
    };
    let mut messages: Vec<Value> = Vec::with_capacity(contents.len());
    let mut pending_ids: Vec<(String, String)> = Vec::new();
    let mut n = 0usize;
    for (i, c) in contents.into_iter().enumerate() {
        let mut c = super::object(c);
        let role = if c.get("role").and_then(Value::as_str) == Some("model") {
            "assistant"
        } else {
            "user"
        };
        let parts = match take(&mut c, "parts") {
            Value::Array(p) => p,
            _ => Vec::new(),
        };
        let mut blocks = Vec::with_capacity(parts.len());
        for (j, p) in parts.into_iter().enumerate() {
            let at = format!("contents[{i}].parts[{j}]");
            let mut p = super::object(p);
            if let Some(Value::Object(mut fc)) = p.shift_remove("functionCall") {
                let name = take_str(&mut fc, "name");
                let base = match take(&mut fc, "id") {
                    Value::String(s) => s,
                    _ => {
                        n += 1;
                        format!("toolu_gemini_{i}_{n}")
                    }
                };
                let id = match p.get("thoughtSignature").and_then(Value::as_str) {
                    Some(sig) => id_with_signature(&base, sig),
                    None => base,
                };
                pending_ids.push((name.clone(), id.clone()));
                let args = match take(&mut fc, "args") {
                    Value::Null => json!({}),
                    a => a,
                };
                blocks.push(obj([
                    ("type", "tool_use".into()),
                    ("id", id.into()),
                    ("name", name.into()),
                    ("input", args),
                ]));
            } else if let Some(Value::Object(mut fr)) = p.shift_remove("functionResponse") {
                let name = take_str(&mut fr, "name");
                let id = match pending_ids.iter().position(|(n, _)| *n == name) {
                    Some(k) => pending_ids.remove(k).1,
                    None => format!("toolu_gemini_unmatched_{name}"),
                };
                let mut resp = take(&mut fr, "response");
                let text = match resp.as_object_mut().and_then(|r| {
                    r.shift_remove("content")
                        .or_else(|| r.shift_remove("output"))
                }) {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => resp.to_string(),
                };
                blocks.push(obj([
                    ("type", "tool_result".into()),
                    ("tool_use_id", id.into()),
                    ("content", text.into()),
                ]));
            } else if p.get("thought") == Some(&Value::Bool(true)) {
                let sig = match take(&mut p, "thoughtSignature") {
                    Value::Null => json!(""),
                    s => s,
                };
                blocks.push(thinking_block(take(&mut p, "text"), sig));
            } else if let Some(t) = p.shift_remove("text") {
                blocks.push(text_block(t));
            } else if let Some(Value::Object(mut d)) = p.shift_remove("inlineData") {
                let source = obj([
                    ("type", "base64".into()),
                    ("media_type", take(&mut d, "mimeType")),
                    ("data", take(&mut d, "data")),
                ]);
                blocks.push(obj([("type", "image".into()), ("source", source)]));
            } else {
                loss.push(at);
            }
        }
        if !blocks.is_empty() {
            messages.push(obj([
                ("role", role.into()),
                ("content", Value::Array(blocks)),
            ]));
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    let gen = match take(&mut req, "generationConfig") {
        Value::Object(g) => g,
        _ => Map::new(),
    };
    let max = gen
        .get("maxOutputTokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| super::openai::default_max_tokens(model));
    out.insert("max_tokens".into(), json!(max));
    if let Value::Object(mut sys) = take(&mut req, "systemInstruction") {
        let parts: Vec<Value> = match take(&mut sys, "parts") {
            Value::Array(p) => p
                .into_iter()
                .filter_map(|p| super::object(p).shift_remove("text"))
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
            _ => Vec::new(),
        };
        out.insert("system".into(), Value::Array(parts));
    }
    for (k, v) in gen {
        match k.as_str() {
            "maxOutputTokens" => {}
            "temperature" => {
                out.insert("temperature".into(), v);
            }
            "topP" => {
                out.insert("top_p".into(), v);
            }
            "topK" => {
                out.insert("top_k".into(), v);
            }
            "stopSequences" => {
                out.insert("stop_sequences".into(), v);
            }
            "thinkingConfig" => {
                if let Some(b) = v
                    .get("thinkingBudget")
                    .and_then(Value::as_u64)
                    .filter(|b| *b > 0)
                {
                    out.insert(
                        "thinking".into(),
                        json!({"type": "enabled", "budget_tokens": b.max(1024)}),
                    );
                }
            }
            _ => loss.push(format!("generationConfig.{k}")),
        }
    }
    let mut tools = Vec::new();
    if let Value::Array(list) = take(&mut req, "tools") {
        for (i, t) in list.into_iter().enumerate() {
            let mut t = super::object(t);
            match t.shift_remove("functionDeclarations") {
                Some(Value::Array(decls)) => {
                    for (j, d) in decls.into_iter().enumerate() {
                        let at = format!("tools[{i}].functionDeclarations[{j}]");
                        tools.extend(declaration_to_tool(d, &at, loss));
                    }
                    for k in t.keys() {
                        loss.push(format!("tools[{i}].{k}"));
                    }
                }
                _ => loss.push(format!("tools[{i}]")),
            }
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Value::Object(mut tc) = take(&mut req, "toolConfig") {
        if let Value::Object(cfg) = take(&mut tc, "functionCallingConfig") {
            let choice = match cfg.get("mode").and_then(Value::as_str) {
                Some("ANY") => match cfg
                    .get("allowedFunctionNames")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                {
                    Some([one]) => json!({"type": "tool", "name": one}),
                    _ => json!({"type": "any"}),
                },
                Some("NONE") => json!({"type": "none"}),
                _ => json!({"type": "auto"}),
            };
            out.insert("tool_choice".into(), choice);
        }
    }
    for k in req.keys() {
        loss.push(k.clone());
    }
    Ok(out)
}

/// Anthropic `stop_reason` for a Gemini `finishReason`.
pub(crate) fn stop_reason(finish: Option<&str>, has_tool: bool) -> &'static str {
    match finish {
        Some("MAX_TOKENS") => "max_tokens",
        Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII") => "refusal",
        _ if has_tool => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic usage from Gemini `usageMetadata`.
pub fn usage_to_anthropic(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cachedContentTokenCount");
    let mut out = json!({
        "input_tokens": n("promptTokenCount").saturating_sub(cached),
        "output_tokens": n("candidatesTokenCount") + n("thoughtsTokenCount"),
    });
    if cached > 0 {
        out["cache_read_input_tokens"] = json!(cached);
    }
    out
}

/// Gemini parts → Anthropic blocks (shared by responses and streams).
pub fn parts_to_blocks(parts: Vec<Value>, counter: &mut usize) -> Vec<Value> {
    let mut blocks = Vec::with_capacity(parts.len());
    for p in parts {
        let mut p = super::object(p);
        if let Some(Value::Object(mut fc)) = p.shift_remove("functionCall") {
            *counter += 1;
            let base = match take(&mut fc, "id") {
                Value::String(s) => s,
                _ => format!("toolu_gemini_{counter}"),
            };
            let id = match p.get("thoughtSignature").and_then(Value::as_str) {
                Some(sig) => id_with_signature(&base, sig),
                None => base,
            };
            let args = match take(&mut fc, "args") {
                Value::Null => json!({}),
                a => a,
            };
            blocks.push(obj([
                ("type", "tool_use".into()),
                ("id", id.into()),
                ("name", take(&mut fc, "name")),
                ("input", args),
            ]));
        } else if p.get("thought") == Some(&Value::Bool(true)) {
            let sig = match take(&mut p, "thoughtSignature") {
                Value::Null => json!(""),
                s => s,
            };
            blocks.push(thinking_block(take(&mut p, "text"), sig));
        } else if let Some(t) = p.shift_remove("text") {
            if let Some(sig) = p.shift_remove("thoughtSignature") {
                // A signature on a plain text part: keep it in an empty thinking block.
                blocks.push(thinking_block("".into(), sig));
            }
            blocks.push(text_block(t));
        }
    }
    blocks
}

/// An Anthropic thinking block.
fn thinking_block(thinking: Value, signature: Value) -> Value {
    obj([
        ("type", "thinking".into()),
        ("thinking", thinking),
        ("signature", signature),
    ])
}

/// Gemini response → Anthropic `message`.
pub fn response_to_anthropic(body: Value, model: &str, loss: &mut Loss) -> Result<Value, Error> {
    let mut body = super::object(body);
    // Code Assist wraps the response in {"response": …}.
    if body.get("response").is_some_and(Value::is_object) {
        body = super::object(take(&mut body, "response"));
    }
    let Value::Array(candidates) = take(&mut body, "candidates") else {
        return Err(Error::Invalid("response has no candidates".into()));
    };
    if candidates.len() > 1 {
        loss.push("candidates[1..]");
    }
    let Some(Value::Object(mut cand)) = candidates.into_iter().next() else {
        return Err(Error::Invalid("response has no candidates".into()));
    };
    let parts = match take(&mut cand, "content") {
        Value::Object(mut c) => match take(&mut c, "parts") {
            Value::Array(p) => p,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let content = parts_to_blocks(parts, &mut 0);
    let has_tool = content.iter().any(|b| b["type"] == "tool_use");
    let id = match take(&mut body, "responseId") {
        Value::Null => json!("msg_gemini"),
        id => id,
    };
    let model = match take(&mut body, "modelVersion") {
        Value::Null => json!(model),
        m => m,
    };
    let stop = stop_reason(cand.get("finishReason").and_then(Value::as_str), has_tool);
    Ok(obj([
        ("id", id),
        ("type", "message".into()),
        ("role", "assistant".into()),
        ("model", model),
        ("content", Value::Array(content)),
        ("stop_reason", stop.into()),
        ("stop_sequence", Value::Null),
        (
            "usage",
            usage_to_anthropic(body.get("usageMetadata").unwrap_or(&Value::Null)),
        ),
    ]))
}

/// Gemini `finishReason` for an Anthropic stop reason.
pub fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") => "MAX_TOKENS",
        Some("refusal") => "SAFETY",
        _ => "STOP",
    }
}

/// Gemini `usageMetadata` from Anthropic usage.
pub fn usage_from_anthropic(u: &Value) -> Value {
    let h = HubUsage::of(u);
    let mut m = json!({"promptTokenCount": h.prompt(), "candidatesTokenCount": h.output,
                       "totalTokenCount": h.prompt() + h.output});
    if h.cache_read > 0 {
        m["cachedContentTokenCount"] = json!(h.cache_read);
    }
    m
}

/// One Anthropic block → a Gemini part (responses and streams).
pub fn block_to_part(b: Value) -> Option<Value> {
    let mut b = super::object(b);
    match b.get("type").and_then(Value::as_str) {
        Some("text") => Some(obj([("text", take(&mut b, "text"))])),
        Some("thinking") => {
            let mut p = obj([("text", take(&mut b, "thinking")), ("thought", true.into())]);
            let sig = take_str(&mut b, "signature");
            if !sig.is_empty() {
                p["thoughtSignature"] = Value::String(sig);
            }
            Some(p)
        }
        Some("tool_use") => {
            let id = take_str(&mut b, "id");
            let args = match take(&mut b, "input") {
                Value::Null => json!({}),
                a => a,
            };
            let call = obj([("name", take(&mut b, "name")), ("args", args)]);
            let mut p = obj([("functionCall", call)]);
            if let Some(sig) = signature_from_id(&id) {
                p["thoughtSignature"] = json!(sig);
            }
            Some(p)
        }
        _ => None,
    }
}

/// Anthropic `message` → Gemini response.
pub fn response_from_anthropic(body: Value, loss: &mut Loss) -> Value {
    let mut body = super::object(body);
    let mut parts = Vec::new();
    if let Value::Array(blocks) = take(&mut body, "content") {
        for (i, b) in blocks.into_iter().enumerate() {
            match block_to_part(b) {
                Some(p) => parts.push(p),
                None => loss.push(format!("content[{i}]")),
            }
        }
    }
    let finish = finish_reason(body.get("stop_reason").and_then(Value::as_str));
    let content = obj([("role", "model".into()), ("parts", Value::Array(parts))]);
    let candidate = obj([
        ("content", content),
        ("index", 0.into()),
        ("finishReason", finish.into()),
    ]);
    obj([
        ("candidates", Value::Array(vec![candidate])),
        (
            "usageMetadata",
            usage_from_anthropic(body.get("usage").unwrap_or(&Value::Null)),
        ),
        ("modelVersion", take(&mut body, "model")),
        ("responseId", take(&mut body, "id")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::object;

    #[test]
    fn signature_survives_the_tool_use_id_round_trip() {
        let sig = "Ab+/cd==";
        let id = id_with_signature("toolu_1", sig);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        assert_eq!(signature_from_id(&id).as_deref(), Some(sig));
        assert_eq!(signature_from_id("toolu_plain"), None);
    }

    #[test]
    fn gemini_response_to_anthropic_and_back_keeps_thought_signatures() {
        let g = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "plan", "thought": true, "thoughtSignature": "c2lnMQ=="},
            {"functionCall": {"name": "ls", "args": {"p": "."}}, "thoughtSignature": "c2lnMg=="}
        ]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}});
        let mut loss = Loss::default();
        let a = response_to_anthropic(g, "gemini-2.5-pro", &mut loss).unwrap();
        assert_eq!(a["stop_reason"], "tool_use");
        assert_eq!(a["content"][0]["signature"], "c2lnMQ==");
        assert_eq!(a["usage"]["output_tokens"], 5);
        // The client sends the assistant turn back; the next Gemini request carries both signatures.
        let next = json!({"model": "gemini-2.5-pro", "max_tokens": 100, "messages": [
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": a["content"].clone()},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": a["content"][1]["id"].clone(), "content": "x y"}]}
        ]});
        let req = request_from_anthropic(object(next), &mut loss).unwrap();
        let model_parts = &req["contents"][1]["parts"];
        assert_eq!(model_parts[0]["thoughtSignature"], "c2lnMQ==");
        assert_eq!(model_parts[1]["thoughtSignature"], "c2lnMg==");
        assert_eq!(
            req["contents"][2]["parts"][0]["functionResponse"]["name"],
            "ls"
        );
        assert_eq!(req["generationConfig"]["maxOutputTokens"], 100);
    }

    #[test]
    fn gemini_request_to_anthropic_pairs_function_responses_by_name() {
        let g = json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"content": "ok"}}}]}
        ], "systemInstruction": {"parts": [{"text": "Be brief."}]}, "generationConfig": {"temperature": 0.1, "maxOutputTokens": 50},
           "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}}]}]});
        let mut loss = Loss::default();
        let a = request_to_anthropic(object(g), "claude-x", &mut loss).unwrap();
        let id = a["messages"][1]["content"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(a["messages"][2]["content"][0]["tool_use_id"], id.as_str());
        assert_eq!(a["system"], json!([{"type": "text", "text": "Be brief."}]));
        assert_eq!(a["max_tokens"], 50);
        assert_eq!(a["temperature"], 0.1);
        assert_eq!(a["tools"][0]["name"], "f");
        assert!(loss.is_empty(), "{loss:?}");
    }

    #[test]
    fn spec_6_system_and_temperature_example() {
        let hub = json!({"model": "gemini-2.5-flash", "max_tokens": 64000, "temperature": 0.1,
                         "system": [{"type": "text", "text": "Be brief."}], "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        let g = request_from_anthropic(object(hub), &mut Loss::default()).unwrap();
        assert_eq!(
            g["contents"],
            json!([{"role": "user", "parts": [{"text": "hi"}]}])
        );
        assert_eq!(
            g["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(g["generationConfig"]["temperature"], 0.1);
    }

    #[test]
    fn snake_case_requests_and_both_schema_spellings_are_read() {
        // What google-genai sends: snake_case field names, an OpenAPI schema with upper-case
        // types, and a JSON-Schema declaration under `parameters_json_schema`.
        let g = json!({
            "contents": [{"role": "user", "parts": [{"text": "hi"}, {"inline_data": {"mime_type": "image/png", "data": "AAAA"}}]}],
            "system_instruction": {"parts": [{"text": "Be brief."}]},
            "generation_config": {"max_output_tokens": 64, "stop_sequences": ["X"], "thinking_config": {"thinking_budget": 2048}},
            "tools": [{"function_declarations": [
                {"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT",
                    "properties": {"city": {"type": "STRING"}, "unit": {"type": "STRING", "format": "enum", "enum": ["C", "F"], "nullable": true}},
                    "required": ["city"]}},
                {"name": "search", "parameters_json_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}},
                {"name": "later", "behavior": "NON_BLOCKING"}
            ]}],
            "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["search"]}}
        });
        let mut loss = Loss::default();
        let a = Value::Object(request_to_anthropic(object(g), "claude-x", &mut loss).unwrap());
        assert_eq!(a["system"], json!([{"type": "text", "text": "Be brief."}]));
        assert_eq!(a["max_tokens"], 64);
        assert_eq!(a["stop_sequences"], json!(["X"]));
        assert_eq!(a["thinking"]["budget_tokens"], 2048);
        assert_eq!(
            a["messages"][0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(
            a["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {"city": {"type": "string"},
                "unit": {"type": ["string", "null"], "enum": ["C", "F", null]}}, "required": ["city"]})
        );
        assert_eq!(
            a["tools"][1]["input_schema"],
            json!({"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false})
        );
        assert_eq!(a["tool_choice"], json!({"type": "tool", "name": "search"}));
        // Nothing unmapped goes unreported.
        assert_eq!(loss.0, vec!["tools[0].functionDeclarations[2].behavior"]);
    }

    #[test]
    fn anthropic_tool_schemas_reach_gemini_in_its_schema_form() {
        let hub = json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"name": "Edit", "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"file_path": {"type": "string"}, "replace_all": {"type": "boolean", "default": false}},
                "required": ["file_path"], "additionalProperties": false}},
            {"name": "Noop", "input_schema": {"type": "object", "properties": {}}}
        ]});
        let mut loss = Loss::default();
        let g = request_from_anthropic(object(hub), &mut loss).unwrap();
        let decls = &g["tools"][0]["functionDeclarations"];
        assert_eq!(
            decls[0]["parameters"],
            json!({"type": "OBJECT", "properties": {"file_path": {"type": "STRING"},
                "replace_all": {"type": "BOOLEAN", "default": false}}, "required": ["file_path"]})
        );
        assert!(decls[1].get("parameters").is_none(), "{decls}");
        assert_eq!(loss.0, vec!["tools[0].input_schema.additionalProperties"]);
    }
}
