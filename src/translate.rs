//! Cross-format translation between the API wire formats clients speak and providers serve.
//!
//! Anthropic Messages is the hub: every supported request is brought to Messages and from there
//! to the provider's format; every provider response (and stream event) is brought to Messages and
//! from there to the client's format. That keeps one mapping per format instead of one per pair,
//! and Messages is the richest of the three (thinking with signatures, `cache_control`, tool ids).
//!
//! Nothing is dropped silently: a field with no equivalent in the target is recorded in
//! [`Loss`], which the gateway reports in `x-ccproxy-translation-loss`, counts in
//! `ccproxy_translation_loss_total` and logs at debug. Translation is pure (no I/O); the proxy
//! phases drive it (`upstream_request_filter` for requests, `response_body_filter` for bodies and
//! streams).

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod schema;
pub mod serialize;
pub mod sse;
pub mod stream;

use serde_json::{json, Map, Value};

/// An API wire format: what a client request is in (detected from its path) and what a provider
/// speaks (`providers.<name>.provider` in the config). The one format enum of the crate.
///
/// Providers speak [`Format::Anthropic`], [`Format::OpenAi`] or [`Format::Gemini`];
/// [`Format::Responses`] (OpenAI's `/v1/responses`) is a client format served by OpenAI providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Gemini `generateContent` / `streamGenerateContent` (AI Studio and Vertex paths).
    Gemini,
    /// OpenAI Responses (`/v1/responses`), as a client format.
    Responses,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Anthropic => "anthropic",
            Format::OpenAi => "openai",
            Format::Gemini => "gemini",
            Format::Responses => "responses",
        }
    }

    /// The provider format that serves this client format natively (Responses → OpenAI).
    pub fn family(self) -> Format {
        match self {
            Format::Responses => Format::OpenAi,
            f => f,
        }
    }

    /// Whether a provider can speak this format.
    pub fn is_provider_format(self) -> bool {
        self != Format::Responses
    }
}

/// Whether requests in `from` can be translated for a provider speaking `to`.
pub fn supported(from: Format, to: Format) -> bool {
    to.is_provider_format() && from.family() != to
}

/// Fields a translation could not carry over, as JSON paths (`frequency_penalty`,
/// `messages[2].name`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loss(pub Vec<String>);

impl Loss {
    pub fn push(&mut self, path: impl Into<String>) {
        let p = path.into();
        if !self.0.contains(&p) {
            self.0.push(p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Header value: comma-separated paths, cut at a safe length.
    pub fn header_value(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            if s.len() + p.len() + 1 > 2000 {
                s.push_str(",…");
                break;
            }
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(p);
        }
        s
    }

    /// Metric label for a path: its first segment without indexes (`messages.name`).
    pub fn label(path: &str) -> String {
        let mut out = String::new();
        for seg in path.split('.') {
            let seg = seg.split('[').next().unwrap_or(seg);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }
}

/// A JSON object from `(key, value)` pairs, moving the values in. (`serde_json::json!` copies
/// every interpolated value: `json!({"text": s})` clones `s`, which for message texts, images
/// and schemas is most of a request.)
pub(crate) fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Map::with_capacity(N);
    for (k, v) in pairs {
        m.insert(k.to_owned(), v);
    }
    Value::Object(m)
}

/// Move a member out of a JSON object (`Null` when absent). Order of the remaining members is
/// kept.
pub(crate) fn take(o: &mut Map<String, Value>, key: &str) -> Value {
    o.shift_remove(key).unwrap_or(Value::Null)
}

/// Move a string member out of a JSON object (empty when absent or not a string).
pub(crate) fn take_str(o: &mut Map<String, Value>, key: &str) -> String {
    match o.shift_remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The members of a JSON object value (empty for anything else).
pub fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// The text of Anthropic content, consuming it: a string is moved, a single text block's text
/// is moved, the texts of several blocks are joined by newlines.
pub(crate) fn into_text(content: Value) -> String {
    match content {
        Value::String(s) => s,
        Value::Array(blocks) => {
            let mut texts = blocks.into_iter().filter_map(|b| match b {
                Value::Object(mut o) => match o.shift_remove("text") {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                },
                _ => None,
            });
            let Some(first) = texts.next() else {
                return String::new();
            };
            texts.fold(first, |mut acc, t| {
                acc.push('\n');
                acc.push_str(&t);
                acc
            })
        }
        _ => String::new(),
    }
}

/// Token counts of an Anthropic `usage` object, as the other formats need them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubUsage {
    /// Uncached input tokens.
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
}

impl HubUsage {
    pub fn of(u: &Value) -> Self {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        Self {
            input: n("input_tokens"),
            cache_read: n("cache_read_input_tokens"),
            cache_write: n("cache_creation_input_tokens"),
            output: n("output_tokens"),
        }
    }

    /// The whole prompt: other formats count cache reads and writes as input.
    pub fn prompt(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }
}

/// Why a body could not be translated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("request body is not a JSON object")]
    NotJson,
    #[error("{0}")]
    Invalid(String),
}

/// A request translated for the provider.
#[derive(Debug)]
pub struct Translated {
    pub body: Value,
    pub loss: Loss,
    /// The client asked for a stream.
    pub stream: bool,
}

/// What the body alone does not say about a request.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// Model from the body or the path (Gemini names it only in the path).
    pub model: String,
    /// The path asked for a stream (Gemini `streamGenerateContent`).
    pub path_stream: bool,
}

/// Translate a request body from the client's format to the provider's. The body is consumed:
/// its strings (message texts, base64 images, tool schemas) are moved into the result, not
/// copied.
pub fn request(
    from: Format,
    to: Format,
    body: Value,
    info: &RequestInfo,
) -> Result<Translated, Error> {
    let Value::Object(obj) = body else {
        return Err(Error::NotJson);
    };
    if !to.is_provider_format() {
        return Err(Error::Invalid(format!(
            "{} is not a provider format",
            to.as_str()
        )));
    }
    let stream = info.path_stream || obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // The hub needs max_tokens (Anthropic requires it); a default invented for that must not
    // become a limit the client never asked for on other targets.
    let asked_max = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .any(|k| obj.contains_key(*k))
        || gemini::generation_config(&obj).is_some_and(|g| {
            g.contains_key("maxOutputTokens") || g.contains_key("max_output_tokens")
        });
    let mut loss = Loss::default();
    let mut hub = match from {
        Format::Anthropic => obj,
        Format::OpenAi => openai::request_to_anthropic(obj, &mut loss)?,
        Format::Gemini => gemini::request_to_anthropic(obj, &info.model, &mut loss)?,
        Format::Responses => responses::request_to_anthropic(obj, &mut loss)?,
    };
    if stream && hub.get("stream") != Some(&Value::Bool(true)) {
        hub.insert("stream".into(), Value::Bool(true));
    }
    if !asked_max && to != Format::Anthropic {
        hub.remove("max_tokens");
    }
    if to == Format::Anthropic {
        // Anthropic requires thinking.budget_tokens < max_tokens.
        let budget = hub
            .get("thinking")
            .and_then(|t| t.get("budget_tokens"))
            .and_then(Value::as_u64);
        let max = hub.get("max_tokens").and_then(Value::as_u64);
        if let (Some(b), Some(m)) = (budget, max) {
            if b >= m {
                hub.insert("max_tokens".into(), json!(b + 1024));
            }
        }
    }
    let out = match to {
        Format::OpenAi => anthropic::request_to_openai(hub, &mut loss)?,
        Format::Gemini => gemini::request_from_anthropic(hub, &mut loss)?,
        Format::Anthropic | Format::Responses => Value::Object(hub),
    };
    Ok(Translated {
        body: out,
        loss,
        stream,
    })
}

/// A complete provider response as an Anthropic `message` (the hub form).
pub fn response_hub(
    from: Format,
    body: Value,
    model: &str,
    loss: &mut Loss,
) -> Result<Value, Error> {
    Ok(match from {
        Format::Anthropic => body,
        Format::OpenAi => openai::response_to_anthropic(body, loss)?,
        Format::Gemini => gemini::response_to_anthropic(body, model, loss)?,
        Format::Responses => {
            return Err(Error::Invalid("responses is not a provider format".into()))
        }
    })
}

/// Translate a complete (non-stream) provider response to the client's format.
pub fn response(
    from: Format,
    to: Format,
    body: Value,
    model: &str,
    loss: &mut Loss,
) -> Result<Value, Error> {
    let hub = response_hub(from, body, model, loss)?;
    Ok(match to {
        Format::Anthropic => hub,
        Format::OpenAi => anthropic::response_to_openai(hub, loss),
        Format::Gemini => gemini::response_from_anthropic(hub, loss),
        Format::Responses => responses::response_from_anthropic(hub, loss),
    })
}

/// The message of a provider error body, whatever its format.
pub fn error_message(body: &Value) -> Option<String> {
    let e = body.get("error")?;
    e.get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| e.as_str().map(str::to_owned))
}

/// A provider error (status kept) re-shaped for the client's format.
pub fn error_body(to: Format, status: u16, body: &Value, raw: &str) -> Value {
    let message = error_message(body).unwrap_or_else(|| {
        let t = raw.trim();
        if t.is_empty() {
            format!("upstream returned HTTP {status}")
        } else {
            t.chars().take(1000).collect()
        }
    });
    let upstream_type = body
        .get("error")
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str);
    error_json(to, status, &message, upstream_type)
}

/// An error body in `format`'s shape. `kind` overrides the error type derived from `status`.
pub fn error_json(format: Format, status: u16, message: &str, kind: Option<&str>) -> Value {
    match format {
        Format::Anthropic => json!({
            "type": "error",
            "error": {"type": kind.unwrap_or_else(|| anthropic_error_type(status)), "message": message},
        }),
        Format::Gemini => json!({
            "error": {"code": status, "message": message, "status": gemini_status(status)},
        }),
        Format::OpenAi | Format::Responses => json!({
            "error": {"message": message, "type": kind.unwrap_or_else(|| openai_error_type(status)), "code": status},
        }),
    }
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 408 | 422 | 431 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        501 => "not_implemented_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

fn gemini_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        405 | 501 => "UNIMPLEMENTED",
        408 => "DEADLINE_EXCEEDED",
        502 | 503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn openai_error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 408 | 413 | 422 | 431 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        501 => "not_implemented_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// A local estimate of the input tokens of an Anthropic `count_tokens` body: about four
/// characters per token over the text of the system prompt, messages and tool definitions.
pub fn estimate_input_tokens(body: &Value) -> u64 {
    fn text_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.iter().map(text_len).sum(),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "type" | "cache_control" | "id" | "tool_use_id" | "signature"
                    )
                })
                .map(|(k, v)| k.len() / 2 + text_len(v))
                .sum(),
            Value::Number(n) => n.to_string().len(),
            _ => 1,
        }
    }
    let chars: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(text_len)
        .sum();
    (chars as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_header_and_labels() {
        let mut l = Loss::default();
        l.push("messages[2].name");
        l.push("frequency_penalty");
        l.push("frequency_penalty");
        assert_eq!(l.header_value(), "messages[2].name,frequency_penalty");
        assert_eq!(Loss::label("messages[2].name"), "messages.name");
    }

    #[test]
    fn errors_keep_message_and_take_client_shape() {
        let up = json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}});
        let o = error_body(Format::OpenAi, 529, &up, "");
        assert_eq!(o["error"]["message"], "busy");
        assert_eq!(o["error"]["code"], 529);
        let up = json!({"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}});
        let a = error_body(Format::Anthropic, 401, &up, "");
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["message"], "bad key");
        let a = error_body(
            Format::Anthropic,
            502,
            &Value::Null,
            "<html>bad gateway</html>",
        );
        assert_eq!(a["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(a["error"]["type"], "api_error");
    }

    #[test]
    fn token_estimate_grows_with_text() {
        let small =
            estimate_input_tokens(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        let big = estimate_input_tokens(
            &json!({"messages": [{"role": "user", "content": "hi ".repeat(400)}]}),
        );
        assert!(small >= 1 && big > 250 && big < 400, "{small} {big}");
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::translate::stream::StreamTranslator;
    use proptest::prelude::*;

    /// Arbitrary JSON, biased towards the keys translators look at.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("model".to_owned()),
            Just("messages".to_owned()),
            Just("role".to_owned()),
            Just("content".to_owned()),
            Just("type".to_owned()),
            Just("text".to_owned()),
            Just("tools".to_owned()),
            Just("tool_calls".to_owned()),
            Just("function".to_owned()),
            Just("arguments".to_owned()),
            Just("input".to_owned()),
            Just("system".to_owned()),
            Just("contents".to_owned()),
            Just("parts".to_owned()),
            Just("tool_choice".to_owned()),
            Just("stream".to_owned()),
            Just("max_tokens".to_owned()),
            Just("thinking".to_owned()),
            Just("candidates".to_owned()),
            Just("choices".to_owned()),
            Just("delta".to_owned()),
            Just("index".to_owned()),
            Just("usage".to_owned()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop_oneof![
                Just("user".to_owned()),
                Just("assistant".to_owned()),
                Just("tool_use".to_owned()),
                Just("text".to_owned()),
                Just("{\"a\":1}".to_owned()),
                "[ -~]{0,12}"
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    const CLIENTS: [Format; 4] = [
        Format::Anthropic,
        Format::OpenAi,
        Format::Gemini,
        Format::Responses,
    ];
    const PROVIDERS: [Format; 3] = [Format::Anthropic, Format::OpenAi, Format::Gemini];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_json_never_panics_any_translator(v in json_value()) {
            let info = RequestInfo { model: "m".into(), path_stream: false };
            for from in CLIENTS {
                for to in PROVIDERS {
                    let _ = request(from, to, v.clone(), &info);
                }
            }
            for from in PROVIDERS {
                for to in CLIENTS {
                    let _ = response(from, to, v.clone(), "m", &mut Loss::default());
                    let _ = error_body(to, 500, &v, "");
                    if let Some(mut s) = StreamTranslator::new(from, to, "m") {
                        let data = format!("data: {v}\n\n");
                        let _ = s.push(data.as_bytes());
                        let _ = s.push(b"data: [DONE]\n\n");
                        let _ = s.finish();
                    }
                }
            }
        }
    }
}
