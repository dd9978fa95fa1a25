//! Gemini `generateContent` ⇄ the Anthropic Messages hub: requests and responses both ways.
//!
//! Gemini has no tool-call ids and attaches `thoughtSignature`s to parts; both must survive a
//! round trip through clients that only keep Anthropic/OpenAI shapes. Thinking parts map to
//! thinking blocks (signature kept as the block's `signature`); a signature on a function call
//! travels inside the tool-use id (`…__ts__<signature>`), the one field every client echoes back.

use super::{text_of, Error, HubUsage, Loss};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Separator between a tool-use id and a Gemini thought signature carried inside it.
pub const SIGNATURE_MARK: &str = "__ts__";

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

fn strip_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| k.as_str() != "$schema")
                .map(|(k, v)| (k.clone(), strip_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_schema).collect()),
        other => other.clone(),
    }
}

/// Anthropic Messages request → Gemini `generateContent` body.
pub fn request_from_anthropic(body: &Value, loss: &mut Loss) -> Result<Value, Error> {
    let obj = body.as_object().ok_or(Error::NotJson)?;
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Invalid("`messages` must be an array".into()))?;
    let mut tool_names: HashMap<String, String> = HashMap::new();
    let mut contents = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}].content");
        let role = if m.get("role").and_then(Value::as_str) == Some("assistant") {
            "model"
        } else {
            "user"
        };
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let mut parts = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            if b.get("cache_control").is_some() {
                loss.push(format!("{at}[{j}].cache_control"));
            }
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    parts.push(json!({"text": b.get("text").cloned().unwrap_or_default()}))
                }
                Some("image") => {
                    let src = b.get("source").cloned().unwrap_or_default();
                    if src.get("type").and_then(Value::as_str) == Some("base64") {
                        parts.push(json!({"inlineData": {"mimeType": src.get("media_type").cloned().unwrap_or_default(),
                                                         "data": src.get("data").cloned().unwrap_or_default()}}));
                    } else {
                        parts.push(json!({"fileData": {"fileUri": src.get("url").cloned().unwrap_or_default()}}));
                    }
                }
                Some("thinking") => {
                    let mut p = json!({"text": b.get("thinking").cloned().unwrap_or_default(), "thought": true});
                    if let Some(sig) = b
                        .get("signature")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                    {
                        p["thoughtSignature"] = json!(sig);
                    }
                    parts.push(p);
                }
                Some("tool_use") => {
                    let id = b.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                    let name = b
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    tool_names.insert(id.clone(), name.clone());
                    let mut p = json!({"functionCall": {"name": name, "args": b.get("input").cloned().unwrap_or_else(|| json!({}))}});
                    if let Some(sig) = signature_from_id(&id) {
                        p["thoughtSignature"] = json!(sig);
                    }
                    parts.push(p);
                }
                Some("tool_result") => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    let name = tool_names.get(id).cloned().unwrap_or_default();
                    let mut response =
                        json!({"content": text_of(b.get("content").unwrap_or(&Value::Null))});
                    if b.get("is_error") == Some(&Value::Bool(true)) {
                        response = json!({"error": response["content"]});
                    }
                    parts.push(json!({"functionResponse": {"name": name, "response": response}}));
                }
                _ => loss.push(format!("{at}[{j}]")),
            }
        }
        if !parts.is_empty() {
            contents.push(json!({"role": role, "parts": parts}));
        }
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    match obj.get("system") {
        Some(Value::String(s)) => {
            out.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
        }
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("cache_control").is_some() {
                    loss.push(format!("system[{i}].cache_control"));
                }
            }
            let parts: Vec<Value> = blocks
                .iter()
                .filter_map(|b| b.get("text"))
                .map(|t| json!({"text": t}))
                .collect();
            out.insert("systemInstruction".into(), json!({"parts": parts}));
        }
        _ => {}
    }
    let mut gen = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "messages" | "system" | "model" | "stream" => {}
            "max_tokens" => {
                gen.insert("maxOutputTokens".into(), v.clone());
            }
            "temperature" => {
                gen.insert("temperature".into(), v.clone());
            }
            "top_p" => {
                gen.insert("topP".into(), v.clone());
            }
            "top_k" => {
                gen.insert("topK".into(), v.clone());
            }
            "stop_sequences" => {
                gen.insert("stopSequences".into(), v.clone());
            }
            "thinking" => {
                if v.get("type").and_then(Value::as_str) == Some("enabled") {
                    gen.insert(
                        "thinkingConfig".into(),
                        json!({"thinkingBudget": v.get("budget_tokens").cloned().unwrap_or(json!(-1)), "includeThoughts": true}),
                    );
                }
            }
            "tools" => {
                let mut decls = Vec::new();
                for (i, t) in v.as_array().into_iter().flatten().enumerate() {
                    let Some(schema) = t.get("input_schema") else {
                        loss.push(format!("tools[{i}]"));
                        continue;
                    };
                    let mut d = json!({"name": t.get("name").cloned().unwrap_or_default(), "parameters": strip_schema(schema)});
                    if let Some(desc) = t.get("description") {
                        d["description"] = desc.clone();
                    }
                    if t.get("cache_control").is_some() {
                        loss.push(format!("tools[{i}].cache_control"));
                    }
                    decls.push(d);
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
            other => loss.push(other.to_owned()),
        }
    }
    if !gen.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gen));
    }
    Ok(Value::Object(out))
}

/// Gemini `generateContent` body → Anthropic Messages request (`model` comes from the path).
pub fn request_to_anthropic(body: &Value, model: &str, loss: &mut Loss) -> Result<Value, Error> {
    let obj = body.as_object().ok_or(Error::NotJson)?;
    let contents = obj
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Invalid("`contents` must be an array".into()))?;
    let mut messages: Vec<Value> = Vec::new();
    let mut pending_ids: Vec<(String, String)> = Vec::new();
    let mut n = 0usize;
    for (i, c) in contents.iter().enumerate() {
        let role = if c.get("role").and_then(Value::as_str) == Some("model") {
            "assistant"
        } else {
            "user"
        };
        let mut blocks = Vec::new();
        for (j, p) in c
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("contents[{i}].parts[{j}]");
            if let Some(fc) = p.get("functionCall") {
                let name = fc
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let base = fc
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        n += 1;
                        format!("toolu_gemini_{i}_{n}")
                    });
                let id = match p.get("thoughtSignature").and_then(Value::as_str) {
                    Some(sig) => id_with_signature(&base, sig),
                    None => base,
                };
                pending_ids.push((name.clone(), id.clone()));
                blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": fc.get("args").cloned().unwrap_or_else(|| json!({}))}));
            } else if let Some(fr) = p.get("functionResponse") {
                let name = fr.get("name").and_then(Value::as_str).unwrap_or("");
                let id = match pending_ids.iter().position(|(n, _)| n == name) {
                    Some(k) => pending_ids.remove(k).1,
                    None => format!("toolu_gemini_unmatched_{name}"),
                };
                let resp = fr.get("response").cloned().unwrap_or_default();
                let text = match resp.get("content").or_else(|| resp.get("output")) {
                    Some(Value::String(s)) => s.clone(),
                    _ => resp.to_string(),
                };
                blocks.push(json!({"type": "tool_result", "tool_use_id": id, "content": text}));
            } else if p.get("thought") == Some(&Value::Bool(true)) {
                blocks.push(json!({"type": "thinking", "thinking": p.get("text").cloned().unwrap_or_default(),
                                   "signature": p.get("thoughtSignature").cloned().unwrap_or(json!(""))}));
            } else if let Some(t) = p.get("text") {
                blocks.push(json!({"type": "text", "text": t}));
            } else if let Some(d) = p.get("inlineData") {
                blocks.push(json!({"type": "image", "source": {"type": "base64",
                    "media_type": d.get("mimeType").cloned().unwrap_or_default(), "data": d.get("data").cloned().unwrap_or_default()}}));
            } else {
                loss.push(at);
            }
        }
        if !blocks.is_empty() {
            messages.push(json!({"role": role, "content": blocks}));
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    let gen = obj
        .get("generationConfig")
        .or_else(|| obj.get("generation_config"))
        .cloned()
        .unwrap_or_default();
    let max = gen
        .get("maxOutputTokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| super::openai::default_max_tokens(model));
    out.insert("max_tokens".into(), json!(max));
    if let Some(sys) = obj
        .get("systemInstruction")
        .or_else(|| obj.get("system_instruction"))
    {
        let parts: Vec<Value> = sys
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text"))
            .map(|t| json!({"type": "text", "text": t}))
            .collect();
        out.insert("system".into(), Value::Array(parts));
    }
    if let Value::Object(g) = &gen {
        for (k, v) in g {
            match k.as_str() {
                "maxOutputTokens" => {}
                "temperature" => {
                    out.insert("temperature".into(), v.clone());
                }
                "topP" => {
                    out.insert("top_p".into(), v.clone());
                }
                "topK" => {
                    out.insert("top_k".into(), v.clone());
                }
                "stopSequences" => {
                    out.insert("stop_sequences".into(), v.clone());
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
                other => loss.push(format!("generationConfig.{other}")),
            }
        }
    }
    let mut tools = Vec::new();
    for (i, t) in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match t
            .get("functionDeclarations")
            .or_else(|| t.get("function_declarations"))
            .and_then(Value::as_array)
        {
            Some(decls) => {
                for d in decls {
                    let mut tool = json!({"name": d.get("name").cloned().unwrap_or_default(),
                        "input_schema": d.get("parameters").or_else(|| d.get("parametersJsonSchema")).cloned().unwrap_or_else(|| json!({"type": "object"}))});
                    if let Some(desc) = d.get("description") {
                        tool["description"] = desc.clone();
                    }
                    tools.push(tool);
                }
            }
            None => loss.push(format!("tools[{i}]")),
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(cfg) = obj
        .get("toolConfig")
        .and_then(|t| t.get("functionCallingConfig"))
    {
        let tc = match cfg.get("mode").and_then(Value::as_str) {
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
        out.insert("tool_choice".into(), tc);
    }
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "contents"
                | "generationConfig"
                | "generation_config"
                | "systemInstruction"
                | "system_instruction"
                | "tools"
                | "toolConfig"
        ) {
            loss.push(k.clone());
        }
    }
    Ok(Value::Object(out))
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
pub fn parts_to_blocks(parts: &[Value], counter: &mut usize) -> Vec<Value> {
    let mut blocks = Vec::new();
    for p in parts {
        if let Some(fc) = p.get("functionCall") {
            *counter += 1;
            let base = fc
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("toolu_gemini_{counter}"));
            let id = match p.get("thoughtSignature").and_then(Value::as_str) {
                Some(sig) => id_with_signature(&base, sig),
                None => base,
            };
            blocks.push(json!({"type": "tool_use", "id": id, "name": fc.get("name").cloned().unwrap_or_default(),
                               "input": fc.get("args").cloned().unwrap_or_else(|| json!({}))}));
        } else if p.get("thought") == Some(&Value::Bool(true)) {
            blocks.push(json!({"type": "thinking", "thinking": p.get("text").cloned().unwrap_or_default(),
                               "signature": p.get("thoughtSignature").cloned().unwrap_or(json!(""))}));
        } else if let Some(t) = p.get("text") {
            if let Some(sig) = p.get("thoughtSignature") {
                // A signature on a plain text part: keep it in an empty thinking block.
                blocks.push(json!({"type": "thinking", "thinking": "", "signature": sig}));
            }
            blocks.push(json!({"type": "text", "text": t}));
        }
    }
    blocks
}

/// Gemini response → Anthropic `message`.
pub fn response_to_anthropic(body: &Value, model: &str, loss: &mut Loss) -> Result<Value, Error> {
    let body = body
        .get("response")
        .filter(|r| r.is_object())
        .unwrap_or(body);
    let cand = body
        .get("candidates")
        .and_then(|c| c.get(0))
        .ok_or_else(|| Error::Invalid("response has no candidates".into()))?;
    if body
        .get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| c.len() > 1)
    {
        loss.push("candidates[1..]");
    }
    let parts = cand
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let content = parts_to_blocks(&parts, &mut 0);
    let has_tool = content.iter().any(|b| b["type"] == "tool_use");
    Ok(json!({
        "id": body.get("responseId").cloned().unwrap_or_else(|| json!("msg_gemini")),
        "type": "message", "role": "assistant",
        "model": body.get("modelVersion").cloned().unwrap_or_else(|| json!(model)),
        "content": content,
        "stop_reason": stop_reason(cand.get("finishReason").and_then(Value::as_str), has_tool),
        "stop_sequence": null,
        "usage": usage_to_anthropic(body.get("usageMetadata").unwrap_or(&Value::Null)),
    }))
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

/// One Anthropic block → a Gemini part.
pub fn block_to_part(b: &Value) -> Option<Value> {
    match b.get("type").and_then(Value::as_str) {
        Some("text") => Some(json!({"text": b.get("text").cloned().unwrap_or_default()})),
        Some("thinking") => {
            let mut p =
                json!({"text": b.get("thinking").cloned().unwrap_or_default(), "thought": true});
            if let Some(sig) = b
                .get("signature")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                p["thoughtSignature"] = json!(sig);
            }
            Some(p)
        }
        Some("tool_use") => {
            let id = b.get("id").and_then(Value::as_str).unwrap_or("");
            let mut p = json!({"functionCall": {"name": b.get("name").cloned().unwrap_or_default(),
                                                "args": b.get("input").cloned().unwrap_or_else(|| json!({}))}});
            if let Some(sig) = signature_from_id(id) {
                p["thoughtSignature"] = json!(sig);
            }
            Some(p)
        }
        _ => None,
    }
}

/// Anthropic `message` → Gemini response.
pub fn response_from_anthropic(body: &Value, loss: &mut Loss) -> Value {
    let mut parts = Vec::new();
    for (i, b) in body
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match block_to_part(b) {
            Some(p) => parts.push(p),
            None => loss.push(format!("content[{i}]")),
        }
    }
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                        "finishReason": finish_reason(body.get("stop_reason").and_then(Value::as_str))}],
        "usageMetadata": usage_from_anthropic(body.get("usage").unwrap_or(&Value::Null)),
        "modelVersion": body.get("model").cloned().unwrap_or_default(),
        "responseId": body.get("id").cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = response_to_anthropic(&g, "gemini-2.5-pro", &mut loss).unwrap();
        assert_eq!(a["stop_reason"], "tool_use");
        assert_eq!(a["content"][0]["signature"], "c2lnMQ==");
        assert_eq!(a["usage"]["output_tokens"], 5);
        // The client sends the assistant turn back; the next Gemini request carries both signatures.
        let next = json!({"model": "gemini-2.5-pro", "max_tokens": 100, "messages": [
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": a["content"].clone()},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": a["content"][1]["id"].clone(), "content": "x y"}]}
        ]});
        let req = request_from_anthropic(&next, &mut loss).unwrap();
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
        let a = request_to_anthropic(&g, "claude-x", &mut loss).unwrap();
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
        let g = request_from_anthropic(&hub, &mut Loss::default()).unwrap();
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
}
