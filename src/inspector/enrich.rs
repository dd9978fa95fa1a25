//! Turning a finished capture into a stored [`Flow`]: headers redacted ([`redact`]), and the
//! facts read from its bodies (token usage, model, conversation id, system-prompt hash), all
//! on the store's writer thread, never on the request path, and before anything is stored.
//!
//! The conversation id and system-prompt hash follow the original (spec §10.1):
//! `conversation_id = sha256(first user text)[:12]` and
//! `system_prompt_sha = sha256(json.dumps(system, sort_keys=True))[:12]`, with Python's JSON
//! text reproduced exactly so the values match the original's for the same request.

use super::model::{BodyInfo, Flow, FlowError, Message, Usage};
use super::redact;
use super::store::{rfc3339_ms, Bodies, Captured, CapturedMessage};
use crate::translate::sse::decode_all;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The stored flow and its bodies.
pub fn finish(c: Captured) -> (Flow, Bodies) {
    let mut summary = c.summary_at_start();
    summary.state = "done".to_owned();
    summary.status = c.status;
    summary.provider = c.provider.clone();
    summary.action = c.action.to_owned();
    summary.provider_format = c.provider_format.map(str::to_owned);
    summary.duration_ms = c.timings.done_ms;
    summary.error = c
        .error
        .clone()
        .map(|(kind, message)| FlowError { kind, message });

    let mut bodies = Bodies::default();
    let mut message = |part: &'static str, m: Option<CapturedMessage>| -> Option<Message> {
        let m = m?;
        let content_type = m
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = m.body.as_ref().map(|b| {
            let size = bodies.push(part, b) as u64;
            BodyInfo {
                size,
                total: b.total,
                truncated: size < b.total,
                content_type: content_type.clone(),
            }
        });
        Some(Message {
            method: m.method,
            url: m.url,
            status: m.status,
            headers: m
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        redact::header_value(k.as_str(), v.as_bytes()),
                    )
                })
                .collect(),
            body: body.filter(|b| b.total > 0),
        })
    };
    let client_request = message("client_request", c.client_request).unwrap_or_default();
    let forwarded_request = message("forwarded_request", c.forwarded_request);
    let provider_response = message("provider_response", c.provider_response);
    let client_response = if c.client_same_as_provider {
        None
    } else {
        message("client_response", c.client_response)
    };

    let body_of = |part: &str| bodies.get(part);
    let is_json = |m: &Message| {
        m.body
            .as_ref()
            .and_then(|b| b.content_type.as_deref())
            .is_some_and(|t| t.contains("application/json"))
    };
    let client_json: Option<Value> = body_of("client_request")
        .filter(|_| is_json(&client_request))
        .and_then(|b| serde_json::from_slice(b).ok());
    let forwarded_json: Option<Value> = body_of("forwarded_request")
        .filter(|_| forwarded_request.as_ref().is_some_and(is_json))
        .and_then(|b| serde_json::from_slice(b).ok());

    summary.model = forwarded_json
        .as_ref()
        .and_then(model_of)
        .or_else(|| client_json.as_ref().and_then(model_of))
        .or_else(|| {
            forwarded_request
                .as_ref()
                .and_then(|m| m.url.as_deref())
                .and_then(model_in_path)
        })
        .or(c.client_model.clone());
    let mut system_prompt_sha = None;
    if let Some(body) = &client_json {
        summary.conversation_id = Some(conversation_id(body, &c.id));
        system_prompt_sha = system_prompt(body).map(|s| short_sha(python_json(s).as_bytes()));
    }
    if let Some(resp) = &provider_response {
        let ctype = resp
            .body
            .as_ref()
            .and_then(|b| b.content_type.as_deref())
            .unwrap_or("");
        summary.streamed = ctype.contains("text/event-stream");
        summary.response_bytes = resp.body.as_ref().map_or(0, |b| b.total);
        if summary.streamed {
            summary.ttft_ms = c.timings.ttft_ms;
        }
        if let Some(bytes) = body_of("provider_response") {
            summary.usage = usage(bytes, summary.streamed);
        }
    } else if let Some(resp) = &client_response {
        summary.response_bytes = resp.body.as_ref().map_or(0, |b| b.total);
    }
    let flow = Flow {
        summary,
        system_prompt_sha,
        attempts: c.attempts,
        loss: c.loss,
        hooks: c.hooks,
        timings: c.timings,
        client_request,
        forwarded_request,
        provider_response,
        client_response,
    };
    (flow, bodies)
}

/// The model a request body names (`model`, or Code Assist's envelope `model`).
fn model_of(body: &Value) -> Option<String> {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}

/// `…/models/{model}:action` in a URL.
fn model_in_path(url: &str) -> Option<String> {
    crate::proxy::route::path_model_span(url).map(|r| url[r].to_owned())
}

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

/// Token usage in a response body (JSON) or stream (SSE), whatever the API: Anthropic
/// `usage`, OpenAI Chat `usage.prompt_tokens`, Responses `response.usage`, Gemini
/// `usageMetadata` (also inside a Code Assist `response` envelope). Streams report usage in
/// several events; each field keeps its largest value.
pub fn usage(body: &[u8], streamed: bool) -> Option<Usage> {
    let mut total: Option<Usage> = None;
    let mut merge = |v: &Value| {
        if let Some(u) = usage_of(v) {
            let t = total.get_or_insert_with(Usage::default);
            t.input_tokens = t.input_tokens.max(u.input_tokens);
            t.output_tokens = t.output_tokens.max(u.output_tokens);
            t.cache_read_tokens = t.cache_read_tokens.max(u.cache_read_tokens);
            t.cache_write_tokens = t.cache_write_tokens.max(u.cache_write_tokens);
        }
    };
    if streamed {
        for ev in decode_all(body) {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                merge(&v);
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<Value>(body) {
        merge(&v);
    }
    total
}

fn usage_of(v: &Value) -> Option<Usage> {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    // Envelopes: Code Assist `response`, Anthropic stream `message`, Responses `response`.
    for key in ["response", "message"] {
        if let Some(inner) = v.get(key).filter(|i| i.is_object()) {
            if let Some(u) = usage_of(inner) {
                return Some(u);
            }
        }
    }
    if let Some(u) = v.get("usageMetadata") {
        let prompt = n(u.get("promptTokenCount"));
        let cached = n(u.get("cachedContentTokenCount"));
        return Some(Usage {
            input_tokens: prompt.saturating_sub(cached),
            output_tokens: n(u.get("candidatesTokenCount")) + n(u.get("thoughtsTokenCount")),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        });
    }
    let u = v.get("usage").filter(|u| u.is_object())?;
    if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
        let cached = n(u
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens")));
        return Some(Usage {
            input_tokens: n(u.get("prompt_tokens")).saturating_sub(cached),
            output_tokens: n(u.get("completion_tokens")),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        });
    }
    if let Some(details) = u.get("input_tokens_details") {
        // OpenAI Responses: input_tokens includes the cached ones.
        let cached = n(details.get("cached_tokens"));
        return Some(Usage {
            input_tokens: n(u.get("input_tokens")).saturating_sub(cached),
            output_tokens: n(u.get("output_tokens")),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        });
    }
    Some(Usage {
        input_tokens: n(u.get("input_tokens")),
        output_tokens: n(u.get("output_tokens")),
        cache_read_tokens: n(u.get("cache_read_input_tokens")),
        cache_write_tokens: n(u.get("cache_creation_input_tokens")),
    })
}

/// `started_at` of a summary, for code that only has the epoch milliseconds.
pub fn started_at(ms: u64) -> String {
    rfc3339_ms(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
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

    #[test]
    fn usage_of_each_api() {
        let anthropic = br#"{"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":100,"cache_creation_input_tokens":7}}"#;
        assert_eq!(
            usage(anthropic, false),
            Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 100,
                cache_write_tokens: 7
            })
        );
        let openai = br#"{"usage":{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":20}}}"#;
        assert_eq!(
            usage(openai, false),
            Some(Usage {
                input_tokens: 10,
                output_tokens: 4,
                cache_read_tokens: 20,
                cache_write_tokens: 0
            })
        );
        let gemini = br#"{"response":{"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":3,"cachedContentTokenCount":2}}}"#;
        assert_eq!(
            usage(gemini, false),
            Some(Usage {
                input_tokens: 10,
                output_tokens: 3,
                cache_read_tokens: 2,
                cache_write_tokens: 0
            })
        );
        assert_eq!(usage(b"{}", false), None);
        assert_eq!(usage(b"not json", false), None);
    }

    #[test]
    fn usage_of_an_anthropic_stream_merges_events() {
        let sse = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":3}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n";
        assert_eq!(
            usage(sse, true),
            Some(Usage {
                input_tokens: 25,
                output_tokens: 42,
                cache_read_tokens: 3,
                cache_write_tokens: 0
            })
        );
    }

    #[test]
    fn model_from_a_gemini_path() {
        assert_eq!(
            model_in_path("https://g/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
            Some("gemini-2.5-pro".to_owned())
        );
        assert_eq!(model_in_path("/v1/messages"), None);
    }
}
