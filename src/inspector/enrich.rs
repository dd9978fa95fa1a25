//! Turning a finished capture into a stored [`Flow`]: headers redacted ([`redact`]), and the
//! facts read from its bodies (token usage, model, conversation id, system-prompt hash), all
//! on the store's writer thread, never on the request path, and before anything is stored.
//!
//! The conversation id and system-prompt hash are [`crate::conversation`]'s.

use super::model::{BodyInfo, Flow, FlowError, Message, Usage};
use super::redact;
use super::store::{rfc3339_ms, Bodies, Captured, CapturedMessage};
use crate::conversation;
use crate::translate::sse::decode_all;
use serde_json::Value;

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
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v).into_owned());
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
                .map(|(k, v)| (k.to_owned(), redact::header_value(k, v)))
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
    // Only the forwarded body's `model` is needed, and only when it is not the client's body.
    let forwarded_model = body_of("forwarded_request")
        .filter(|b| {
            forwarded_request.as_ref().is_some_and(is_json) && Some(*b) != body_of("client_request")
        })
        .and_then(top_level_model);

    summary.model = forwarded_model
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
        summary.conversation_id = Some(conversation::conversation_id(body, &c.id));
        system_prompt_sha = conversation::system_prompt_sha(body);
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
        retries: c.retries,
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
/// The top-level `model` of a JSON body, read without building a tree of the rest.
fn top_level_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ModelField {
        #[serde(default)]
        model: Option<String>,
    }
    serde_json::from_slice::<ModelField>(body)
        .ok()?
        .model
        .filter(|m| !m.is_empty())
}

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
            if let Some(v) = usage_parts(ev.data.as_bytes()) {
                merge(&v);
            }
        }
    } else if let Some(v) = usage_parts(body) {
        merge(&v);
    }
    total
}

/// The parts of a response that can carry token usage (`usage`, `usageMetadata`, and the
/// `response` / `message` envelopes, recursively) as a small JSON object; everything else is
/// skipped while parsing, never built into a tree (a response body can be megabytes).
fn usage_parts(json: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        #[serde(borrow, default)]
        response: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default)]
        message: Option<&'a serde_json::value::RawValue>,
        #[serde(default, rename = "usageMetadata")]
        usage_metadata: Option<Value>,
        #[serde(default)]
        usage: Option<Value>,
    }
    let p: Parts<'_> = serde_json::from_slice(json).ok()?;
    let mut out = serde_json::Map::new();
    for (key, inner) in [("response", p.response), ("message", p.message)] {
        if let Some(v) = inner
            .filter(|r| r.get().starts_with('{'))
            .and_then(|r| usage_parts(r.get().as_bytes()))
        {
            out.insert(key.to_owned(), v);
        }
    }
    if let Some(u) = p.usage_metadata {
        out.insert("usageMetadata".to_owned(), u);
    }
    if let Some(u) = p.usage {
        out.insert("usage".to_owned(), u);
    }
    Some(Value::Object(out))
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
