//! Gemini Code Assist (`cloudcode-pa.googleapis.com`, spec §8): the API Gemini CLI uses with a
//! Google login. Standard Gemini requests are sent there as `/v1internal:{action}` with the
//! body wrapped in an envelope, and its answers come back wrapped in `{"response": …}`.
//!
//! This module owns the facts: which actions exist, the envelope and its deterministic
//! session id ([`session_id`], UUID5), the user-agent masquerade for `google-genai` SDK
//! clients, the project learned by the `loadCodeAssist` prewarm ([`prewarm`]), and the
//! response unwrap for buffered bodies and SSE streams ([`Unwrap`]). The `gemini_cli` hook
//! (`hooks::builtin::gemini_cli`) applies the request side; the response filters apply the
//! unwrap.

pub mod capacity;

use crate::config::{CaList, Provider};
use crate::creds::CredentialSource;
use crate::http_call::{self, Call};
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The Code Assist actions the hook rewrites.
pub const ACTIONS: [&str; 3] = ["generateContent", "streamGenerateContent", "countTokens"];

/// Deadline of the `loadCodeAssist` prewarm.
pub const PREWARM_TIMEOUT: Duration = Duration::from_secs(10);

/// User agent sent for `google-genai` SDK clients, so their requests count against Gemini
/// CLI's quota rather than a separate bucket (`{model}` filled in).
pub const CLI_USER_AGENT: &str =
    "GeminiCLI/0.36.0/{model} (linux; x64; terminal) google-api-nodejs-client/9.15.1";
pub const CLI_API_CLIENT: &str = "gl-node/22.22.2";

/// A request that went out in the Code Assist envelope; its answer is unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// `streamGenerateContent` (the answer is an event stream).
    pub streaming: bool,
}

/// The action of a Gemini path (`…/models/m:streamGenerateContent`), if it is one of [`ACTIONS`].
pub fn action_of(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let action = crate::translate::gemini::path_action(path)?;
    ACTIONS.into_iter().find(|a| *a == action)
}

/// The model named in a path (`/models/{model}:action`).
pub fn model_in_path(path: &str) -> Option<&str> {
    crate::translate::gemini::path_model_span(path).map(|r| &path[r])
}

/// The Code Assist path for `action` (streams ask for SSE).
pub fn upstream_path(action: &str) -> String {
    if action == "streamGenerateContent" {
        format!("/v1internal:{action}?alt=sse")
    } else {
        format!("/v1internal:{action}")
    }
}

/// `uuid5(NAMESPACE_OID, "ccproxy:{model}:{project or 'default'}:{conversation}")`: the same
/// conversation with the same model and project always gets the same session.
pub fn session_id(model: &str, project: Option<&str>, conversation: &str) -> String {
    let name = format!(
        "ccproxy:{model}:{}:{conversation}",
        project.unwrap_or("default")
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// Whether a body is already a Code Assist envelope (`request` present, no `contents`).
pub fn is_enveloped(body: &Value) -> bool {
    body.get("request").is_some() && body.get("contents").is_none()
}

/// Wrap a Gemini request: `{model, request: {…body without metadata, session_id}, project?,
/// user_prompt_id}` (that key order). An already wrapped body only gets its
/// `request.session_id` (overwritten).
pub fn wrap(body: Value, model: &str, project: Option<&str>, session: &str) -> Value {
    let session = Value::String(session.to_owned());
    if is_enveloped(&body) {
        let mut body = body;
        if let Some(r) = body.get_mut("request").and_then(Value::as_object_mut) {
            r.insert("session_id".to_owned(), session);
        }
        return body;
    }
    let mut request = match body {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    request.shift_remove("metadata");
    request.insert("session_id".to_owned(), session);
    let mut out = Map::new();
    out.insert("model".to_owned(), Value::String(model.to_owned()));
    out.insert("request".to_owned(), Value::Object(request));
    if let Some(p) = project {
        out.insert("project".to_owned(), Value::String(p.to_owned()));
    }
    out.insert(
        "user_prompt_id".to_owned(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    Value::Object(out)
}

/// Ask Code Assist which project the account uses (`POST /v1internal:loadCodeAssist`), once,
/// and remember it on the provider. A failure is one warning; requests then go without a
/// project.
pub async fn prewarm(provider: &Provider, source: &CredentialSource, trust: Option<&CaList>) {
    let project = match load_project(provider, source, trust).await {
        Ok(p) => {
            tracing::info!(provider = %provider.name, project = p.as_deref().unwrap_or("(none)"), "Code Assist prewarm done");
            p
        }
        Err(e) => {
            tracing::warn!(provider = %provider.name, error = %e, "Code Assist prewarm (loadCodeAssist) failed; requests go without a project");
            None
        }
    };
    provider.learned.set_project(project);
}

async fn load_project(
    provider: &Provider,
    source: &CredentialSource,
    trust: Option<&CaList>,
) -> Result<Option<String>, String> {
    let token = source.resolve().await.map_err(|e| e.to_string())?;
    let url = format!(
        "{}://{}/v1internal:loadCodeAssist",
        provider.dest.scheme.as_str(),
        provider.dest.authority
    );
    let auth = crate::creds::auth_headers(provider.family, source.header(), &token)
        .map_err(|e| e.to_string())?;
    let call = Call::post(url, "application/json", Bytes::from_static(b"{}")).headers(auth);
    let trust = provider.trust.as_deref().or(trust);
    let reply = http_call::send(call, PREWARM_TIMEOUT, trust)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("answered {}", reply.status));
    }
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|_| "answered 200 without a JSON body".to_owned())?;
    Ok(body
        .get("cloudaicompanionProject")
        .and_then(|p| p.as_str().or_else(|| p.get("id").and_then(Value::as_str)))
        .map(str::to_owned))
}

/// The inner value of a `{"response": {…}}` envelope, serialized; `None` when `json` is not one.
fn unwrap_json(json: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    let inner = v.as_object_mut()?.remove("response")?;
    inner
        .is_object()
        .then(|| crate::translate::serialize::to_vec_with_capacity(&inner, json.len()))
}

/// Takes the `{"response": …}` envelope off Code Assist answers, buffered or streamed.
#[derive(Debug)]
pub enum Unwrap {
    /// A JSON body, held whole (up to the cap) and unwrapped at its end.
    Buffered {
        buf: BytesMut,
        cap: usize,
        over: bool,
    },
    /// An event stream: each complete event's `data:` JSON unwrapped as it arrives; a partial
    /// event waits for the rest.
    Stream { pending: BytesMut, cap: usize },
}

impl Unwrap {
    pub fn buffered(cap: usize) -> Self {
        Unwrap::Buffered {
            buf: BytesMut::new(),
            cap,
            over: false,
        }
    }

    pub fn stream(cap: usize) -> Self {
        Unwrap::Stream {
            pending: BytesMut::new(),
            cap,
        }
    }

    /// Feed a chunk (or the end); returns what goes on to the client now.
    pub fn feed(&mut self, chunk: Option<&Bytes>, end: bool) -> Option<Bytes> {
        match self {
            Unwrap::Buffered { buf, cap, over } => {
                if let Some(c) = chunk {
                    if *over {
                        return Some(c.clone());
                    }
                    buf.extend_from_slice(c);
                    if buf.len() > *cap {
                        // Too big to hold: pass it on as it is (never truncated).
                        *over = true;
                        return Some(std::mem::take(buf).freeze());
                    }
                }
                if !end || *over {
                    return None;
                }
                let whole = std::mem::take(buf).freeze();
                Some(match unwrap_json(&whole) {
                    Some(inner) => Bytes::from(inner),
                    None => whole,
                })
            }
            Unwrap::Stream { pending, cap } => {
                if let Some(c) = chunk {
                    pending.extend_from_slice(c);
                }
                let mut out = BytesMut::new();
                while let Some((len, sep)) = event_end(pending) {
                    let event = pending.split_to(len + sep);
                    unwrap_event(&event[..len], &event[len..], &mut out);
                }
                if end || pending.len() > *cap {
                    // The rest is not a complete event: pass it on verbatim.
                    out.extend_from_slice(&std::mem::take(pending));
                }
                (!out.is_empty()).then(|| out.freeze())
            }
        }
    }
}

/// Length of the first complete event in `buf` and of its separator (`\n\n` or `\r\n\r\n`).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(buf, b"\n\n");
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n");
    match (lf, crlf) {
        (Some(a), Some(b)) if b < a => Some((b, 4)),
        (Some(a), _) => Some((a, 2)),
        (None, Some(b)) => Some((b, 4)),
        (None, None) => None,
    }
}

/// One event: `data:` lines joined and unwrapped into one `data: <inner>` line after the
/// other lines; an event without data, `[DONE]`, or data that is not an envelope passes
/// verbatim. The separator is kept as it came.
fn unwrap_event(event: &[u8], sep: &[u8], out: &mut BytesMut) {
    let text = String::from_utf8_lossy(event);
    let mut data = String::new();
    let mut other = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("data:") {
            Some(d) => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
            None => other.push(line),
        }
    }
    let inner = (!data.is_empty() && data.trim() != "[DONE]")
        .then(|| unwrap_json(data.as_bytes()))
        .flatten();
    let Some(inner) = inner else {
        out.extend_from_slice(event);
        out.extend_from_slice(sep);
        return;
    };
    for line in other {
        out.extend_from_slice(line.trim_end().as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&inner);
    out.extend_from_slice(sep);
}

/// Everything the provider-side of a Code Assist provider needs, for the hook.
pub fn is_code_assist(provider: &Provider) -> bool {
    provider.family == crate::translate::Format::Gemini
        && provider.auth.as_ref().is_some_and(|a| {
            matches!(&a.kind, crate::creds::SourceKind::OAuth(o) if o.flavor == crate::creds::oauth::Flavor::Google)
        })
}

/// Run the prewarm for every Code Assist provider, in the background (its own thread and
/// runtime: it must not hold up startup).
pub fn spawn_prewarm(
    providers: Vec<Arc<Provider>>,
    sources: Vec<Arc<CredentialSource>>,
    trust: Option<Arc<CaList>>,
) {
    if providers.is_empty() {
        return;
    }
    for p in &providers {
        p.learned.prewarm_started();
    }
    let waiting = providers.clone();
    let run = move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let jobs = providers
                .iter()
                .zip(&sources)
                .map(|(p, s)| prewarm(p, s, trust.as_deref()));
            futures::future::join_all(jobs).await;
        });
    };
    if let Err(e) = std::thread::Builder::new()
        .name("ccproxy-prewarm".to_owned())
        .spawn(run)
    {
        tracing::warn!(error = %e, "cannot start the Code Assist prewarm");
        for p in waiting {
            p.learned.set_project(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_id_matches_the_spec_example_and_is_deterministic() {
        assert_eq!(
            session_id("gemini-2.5-flash", None, "abc123def456"),
            "58fa57be-9f19-5f3b-bac8-8af6202a45a9"
        );
        assert_eq!(
            session_id("gemini-2.5-flash", None, "abc123def456"),
            session_id("gemini-2.5-flash", Some("default"), "abc123def456")
        );
        assert_ne!(
            session_id("gemini-2.5-flash", Some("p1"), "abc123def456"),
            session_id("gemini-2.5-flash", None, "abc123def456")
        );
    }

    #[test]
    fn paths_and_actions() {
        assert_eq!(
            action_of("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            Some("streamGenerateContent")
        );
        assert_eq!(action_of("/v1beta/models/g:embedContent"), None);
        assert_eq!(
            model_in_path("/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
            Some("gemini-2.5-flash")
        );
        assert_eq!(
            upstream_path("streamGenerateContent"),
            "/v1internal:streamGenerateContent?alt=sse"
        );
        assert_eq!(upstream_path("countTokens"), "/v1internal:countTokens");
    }

    #[test]
    fn envelope_key_order_and_already_wrapped_bodies() {
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "metadata": {"x": 1}, "generationConfig": {"temperature": 0}});
        let w = wrap(body, "gemini-2.5-flash", Some("p1"), "sid");
        let keys: Vec<&str> = w.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["model", "request", "project", "user_prompt_id"]);
        assert_eq!(w["request"]["session_id"], "sid");
        assert!(w["request"].get("metadata").is_none());
        assert_eq!(w["request"]["generationConfig"]["temperature"], 0);
        let w = wrap(
            json!({"model": "m", "project": "p", "request": {"contents": [], "session_id": "old"}}),
            "m",
            None,
            "new",
        );
        assert_eq!(
            w,
            json!({"model": "m", "project": "p", "request": {"contents": [], "session_id": "new"}})
        );
        let w = wrap(json!({"contents": []}), "m", None, "s");
        assert!(w.get("project").is_none());
    }

    #[test]
    fn buffered_unwrap() {
        let mut u = Unwrap::buffered(1 << 20);
        assert_eq!(
            u.feed(Some(&Bytes::from_static(b"{\"response\":{\"cand")), false),
            None
        );
        let out = u
            .feed(Some(&Bytes::from_static(b"idates\":[1]}}")), true)
            .unwrap();
        assert_eq!(&out[..], b"{\"candidates\":[1]}");
        // Not an envelope: unchanged.
        let mut u = Unwrap::buffered(1 << 20);
        let out = u
            .feed(Some(&Bytes::from_static(b"{\"error\":{}}")), true)
            .unwrap();
        assert_eq!(&out[..], b"{\"error\":{}}");
        // Over the cap: passed on as is, never cut.
        let mut u = Unwrap::buffered(4);
        let a = u.feed(Some(&Bytes::from_static(b"{\"response\":")), false);
        let b = u.feed(Some(&Bytes::from_static(b"{}}")), true);
        assert_eq!([a.unwrap(), b.unwrap()].concat(), b"{\"response\":{}}");
    }

    #[test]
    fn stream_unwrap_event_by_event() {
        let mut u = Unwrap::stream(1 << 20);
        let first = u
            .feed(
                Some(&Bytes::from_static(
                    b"data: {\"response\":{\"candidates\":[{\"n\":1}]}}\r\n\r\ndata: {\"resp",
                )),
                false,
            )
            .unwrap();
        assert_eq!(&first[..], b"data: {\"candidates\":[{\"n\":1}]}\r\n\r\n");
        let second = u
            .feed(
                Some(&Bytes::from_static(
                    b"onse\":{\"n\":2},\"traceId\":\"t\"}\n\nevent: x\ndata: [DONE]\n\n",
                )),
                false,
            )
            .unwrap();
        assert_eq!(
            &second[..],
            b"data: {\"n\":2}\n\nevent: x\ndata: [DONE]\n\n"
        );
        assert_eq!(
            u.feed(Some(&Bytes::from_static(b"data: partial")), true)
                .unwrap(),
            &b"data: partial"[..]
        );
        assert_eq!(u.feed(None, true), None);
    }
}
