//! The model catalog `GET /v1/models` answers (spec §15.3): each provider's live list where
//! it has a models endpoint (Anthropic-format providers: `…/v1/models`; OpenAI-format ones,
//! OpenRouter style: `…/models` beside the chat path), then the floor list, deduplicated by
//! `(owned_by, id)`.
//!
//! Live lists are fetched only for catalog requests, never on the proxied path: a catalog
//! request that finds a list missing or older than [`REFRESH_AFTER`] starts its fetch and
//! waits for the running fetches (each at most [`FETCH_TIMEOUT`]); a failure keeps what was
//! there (at least the floor), and is not tried again before [`REFRESH_AFTER`].

use crate::config::{CaList, Provider, ProviderTable};
use crate::creds::CredentialSource;
use crate::http_call::{self, Call};
use crate::translate::Format;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Deadline of one live-list fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A live list older than this is fetched again (in the background).
pub const REFRESH_AFTER: Duration = Duration::from_secs(600);

/// Floor models by provider name (spec §15.3), falling back to the API family.
pub fn floor(name: &str, family: Format) -> &'static [&'static str] {
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

/// The models endpoint of a provider, if its format has one: beside its path template
/// (`/anthropic/v1/messages` → `/anthropic/v1/models`, `/api/v1/chat/completions` →
/// `/api/v1/models`), else `/v1/models`.
pub fn models_path(p: &Provider) -> Option<String> {
    let suffix = match p.family {
        Format::Anthropic => "/messages",
        Format::OpenAi => "/chat/completions",
        _ => return None,
    };
    let base = p
        .path
        .as_deref()
        .filter(|t| !t.contains('{'))
        .and_then(|t| t.strip_suffix(suffix))
        .unwrap_or("/v1");
    Some(format!("{base}/models"))
}

/// Fetch `p`'s live list and keep it (a failure keeps the previous one).
pub async fn refresh(p: &Provider, source: Option<&CredentialSource>, trust: Option<&CaList>) {
    let Some(path) = models_path(p) else { return };
    p.learned.live_models.send_modify(|l| l.running = true);
    let result = fetch(p, &path, source, trust).await;
    if let Err(e) = &result {
        tracing::debug!(provider = %p.name, error = %e, "live model list not available; keeping the floor list");
    }
    p.learned.live_models.send_modify(|l| {
        l.running = false;
        l.fetched = Some(Instant::now());
        if let Ok(models) = result {
            l.models = models;
        }
    });
}

async fn fetch(
    p: &Provider,
    path: &str,
    source: Option<&CredentialSource>,
    trust: Option<&CaList>,
) -> Result<Vec<String>, String> {
    let url = format!("{}://{}{path}", p.dest.scheme.as_str(), p.dest.authority);
    let mut call = Call::get(url);
    if let Some(source) = source {
        let secret = source.resolve().await.map_err(|e| e.to_string())?;
        call = call.headers(
            crate::creds::auth_headers(p.family, source.header(), &secret)
                .map_err(|e| e.to_string())?,
        );
    }
    if p.family == Format::Anthropic {
        call = call.header(
            http::HeaderName::from_static("anthropic-version"),
            http::HeaderValue::from_static("2023-06-01"),
        );
    }
    let reply = http_call::send(call, FETCH_TIMEOUT, p.trust.as_deref().or(trust))
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("answered {}", reply.status));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    let models = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` list")?
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    Ok(models)
}

/// Start fetches (as tasks on the current runtime) for every provider with a models endpoint
/// whose list is missing or old; none runs twice at once.
pub fn refresh_stale(
    providers: &ProviderTable,
    creds: &crate::creds::Store,
    trust: Option<Arc<CaList>>,
) {
    for p in providers.values() {
        if models_path(p).is_none() {
            continue;
        }
        let stale = {
            let l = p.learned.live_models.borrow();
            !l.running && l.fetched.is_none_or(|t| t.elapsed() > REFRESH_AFTER)
        };
        if !stale {
            continue;
        }
        p.learned.live_models.send_modify(|l| l.running = true);
        let (p, source, trust) = (p.clone(), creds.get(&p.name).cloned(), trust.clone());
        tokio::spawn(async move { refresh(&p, source.as_deref(), trust.as_deref()).await });
    }
}

/// The catalog: `{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`,
/// each provider's live models first, then its floor list. Waits (at most
/// [`FETCH_TIMEOUT`]) for fetches that are running.
pub async fn catalog(providers: &ProviderTable) -> Value {
    for p in providers.values() {
        let mut rx = p.learned.live_models.subscribe();
        if rx.borrow().running {
            let _ = tokio::time::timeout(
                FETCH_TIMEOUT + Duration::from_secs(1),
                rx.wait_for(|l| !l.running),
            )
            .await;
        }
    }
    render(providers)
}

/// The catalog from what is known now.
pub fn render(providers: &ProviderTable) -> Value {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut seen = std::collections::HashSet::new();
    let mut data = Vec::new();
    for p in providers.values() {
        let live = p.learned.live_models.borrow().models.clone();
        let ids = live
            .into_iter()
            .chain(floor(&p.name, p.family).iter().map(|m| (*m).to_owned()));
        for id in ids {
            if seen.insert((p.name.clone(), id.clone())) {
                data.push(
                    json!({"id": id, "object": "model", "created": created, "owned_by": &*p.name}),
                );
            }
        }
    }
    json!({"object": "list", "data": data})
}
