//! Responses the gateway makes itself (spec §3.1): `GET /` and `GET /health` (liveness) and
//! `GET /v1/models` (the model catalog of §15.3, built from the configured providers without
//! touching the network).

use crate::config::ProviderTable;
use crate::translate::Format;
use bytes::Bytes;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

/// Body of the liveness answer.
pub const HEALTH_BODY: &str = "ccproxy says hey!";

/// What a synthetic route answers.
pub struct Synthetic {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// The synthetic answer for `method path`, if the path is one.
pub fn answer(method: &str, path: &str, providers: &ProviderTable) -> Option<Synthetic> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    match path {
        "/" | "/health" => Some(Synthetic {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(HEALTH_BODY.as_bytes()),
        }),
        "/v1/models" => Some(Synthetic {
            status: 200,
            content_type: "application/json",
            body: Bytes::from(catalog(providers).to_string()),
        }),
        _ => None,
    }
}

/// Floor models by provider name (spec §15.3), falling back to the API family.
fn floor(name: &str, family: Format) -> &'static [&'static str] {
    const ANTHROPIC: &[&str] = &[
        "claude-opus-4-7",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
    ];
    const GEMINI: &[&str] = &[
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
    ];
    match (name, family) {
        ("deepseek", _) => &["deepseek-v4"],
        ("anthropic", _) | (_, Format::Anthropic) => ANTHROPIC,
        ("gemini", _) | (_, Format::Gemini) => GEMINI,
        _ => &[],
    }
}

/// OpenAI-style model list: `{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`.
pub fn catalog(providers: &ProviderTable) -> serde_json::Value {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut seen = std::collections::HashSet::new();
    let data: Vec<_> = providers
        .values()
        .flat_map(|p| floor(&p.name, p.family).iter().map(move |m| (&*p.name, *m)))
        .filter(|(owner, id)| seen.insert((*owner, *id)))
        .map(|(owner, id)| json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
        .collect();
    json!({"object": "list", "data": data})
}
