//! Facts that identify a conversation across requests (spec §10.1), shared by the flow store
//! and the Code Assist session id: `conversation_id = sha256(first user text)[:12]` and
//! `system_prompt_sha = sha256(json.dumps(system, sort_keys=True))[:12]`, with Python's JSON
//! text reproduced exactly so the values match the original's for the same request.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The first 12 hex digits of SHA-256.
fn short_sha(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(12);
    for b in digest.iter().take(6) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The first non-empty user text of a chat (`messages` or Gemini `contents`, also inside a
/// Code Assist `request`).
fn first_user_text(body: &Value) -> Option<String> {
    let text_of = |content: &Value| -> Option<String> {
        match content {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .find(|t| !t.is_empty())
                .map(str::to_owned),
            _ => None,
        }
    };
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        let first = msgs
            .iter()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
        return first.get("content").and_then(text_of);
    }
    let contents = body
        .get("contents")
        .or_else(|| body.get("request").and_then(|r| r.get("contents")))
        .and_then(Value::as_array)?;
    let first = contents
        .iter()
        .find(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")?;
    first.get("parts").and_then(text_of)
}

/// `sha256(first user text or "flow:<id>")[:12]`.
pub fn conversation_id(body: &Value, flow_id: &str) -> String {
    match first_user_text(body) {
        Some(t) => short_sha(t.as_bytes()),
        None => short_sha(format!("flow:{flow_id}").as_bytes()),
    }
}

/// The system prompt of a request (Anthropic `system`, Gemini `systemInstruction`).
fn system_prompt(body: &Value) -> Option<&Value> {
    body.get("system")
        .or_else(|| body.get("systemInstruction"))
        .or_else(|| body.get("request").and_then(|r| r.get("systemInstruction")))
}

/// `json.dumps(v, sort_keys=True)` of Python: `", "` and `": "` separators, keys sorted,
/// non-ASCII escaped as four-hex-digit `\u` escapes (UTF-16).
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_python(&mut out, v);
    out
}

fn write_python(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_python_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(out, x);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_str(out, k);
                out.push_str(": ");
                if let Some(x) = map.get(k) {
                    write_python(out, x);
                }
            }
            out.push('}');
        }
    }
}

fn write_python_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The system-prompt hash of a request, if it has a system prompt.
pub fn system_prompt_sha(body: &Value) -> Option<String> {
    system_prompt(body).map(|s| short_sha(python_json(s).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_examples_of_conversation_id_and_system_hash() {
        let body = json!({"system": "You are terse.", "messages": [{"role": "user", "content": "what is 2+2"}]});
        assert_eq!(conversation_id(&body, "x"), "e49cf1b969ff");
        let sys = system_prompt(&body).map(python_json).unwrap_or_default();
        assert_eq!(short_sha(sys.as_bytes()), "5b132848be2a");
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = json!({"b": [1, 2.5, null], "a": "é\n\u{1F600}"});
        assert_eq!(
            python_json(&v),
            r#"{"a": "\u00e9\n\ud83d\ude00", "b": [1, 2.5, null]}"#
        );
    }

    #[test]
    fn conversation_id_falls_back_to_the_flow() {
        assert_eq!(
            conversation_id(&json!({"messages": []}), "abc"),
            short_sha(b"flow:abc")
        );
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "what is 2+2"}]}]});
        assert_eq!(conversation_id(&gemini, "x"), "e49cf1b969ff");
    }
}
