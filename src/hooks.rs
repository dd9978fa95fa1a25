//! The hook pipeline: what a hook is, the per-request view it gets, and the executor.
//!
//! A hook ([`Hook`]) declares the body paths / header names it `reads` and `writes`, an optional
//! guard and typed params; its [`Stage`] says where it runs: `inbound` in `request_filter` before
//! routing, `outbound` in `upstream_request_filter` after routing and before the upstream request.
//! The configured lists are ordered once at load time by [`dag`]; the executor runs them in that
//! order with the request body parsed at most once per request ([`Body`]). A failing hook is
//! logged and counted and the request goes on, unless the hook marks the error fatal, which
//! answers the client with that status. The `x-ccproxy-hooks` header ([`Overrides`]) forces hooks
//! on or off per request.

pub mod builtin;
pub mod dag;
pub mod registry;

use crate::config::file::{HookEntryConfig, HooksConfig};
use crate::config::ProviderTable;
use crate::translate::Format;
use bytes::Bytes;
use pingora_http::RequestHeader;
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

pub use registry::HookSpec;

/// Where in the request a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `request_filter`: before routing; sees the client's request.
    Inbound,
    /// `upstream_request_filter`: after routing; sees the request about to go upstream.
    Outbound,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Inbound => "inbound",
            Stage::Outbound => "outbound",
        }
    }
}

/// The request body. Reading a top-level field scans the JSON once into an index of byte ranges
/// (no tree is built, so a 300 KB Claude Code body costs one fast validation pass); the full tree
/// is built only when a hook asks for it, and the body is re-serialized only if a hook changed it.
/// Empty and non-JSON bodies are never rewritten.
#[derive(Debug, Default)]
pub struct Body {
    raw: Bytes,
    index: OnceLock<Option<Arc<Members>>>,
    parsed: OnceLock<Option<Value>>,
    dirty: bool,
    /// Expected size of the re-serialized body (the bytes it came from), so writing it
    /// allocates once instead of doubling its way up (a peak of ~3× the body).
    size_hint: usize,
}

/// A top-level member name: where it is in the raw body, or (when it had escapes) its text.
#[derive(Debug)]
enum Key {
    At(Range<usize>),
    Unescaped(Box<str>),
}

/// Top-level member names of a JSON object with the byte range of each value.
type Members = Vec<(Key, Range<usize>)>;

/// Builds [`Members`] while scanning the raw body.
struct TopLevel {
    base: usize,
    members: Members,
}

/// Reads one member name without copying it when it has no escapes.
struct KeySeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key, E> {
        let start = v.as_ptr() as usize - self.0;
        Ok(Key::At(start..start + v.len()))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key::Unescaped(v.into()))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut TopLevel {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut TopLevel {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key_seed(KeySeed(self.base))? {
            let v: &'de RawValue = map.next_value()?;
            let start = v.get().as_ptr() as usize - self.base;
            self.members.push((k, start..start + v.get().len()));
        }
        Ok(())
    }
}

impl Body {
    pub fn new(raw: Bytes) -> Self {
        Self {
            size_hint: raw.len(),
            raw,
            index: OnceLock::new(),
            parsed: OnceLock::new(),
            dirty: false,
        }
    }

    /// A body replaced wholesale (a translated request): sent re-serialized. `size_hint` is
    /// the size of the body it was made from.
    pub fn replaced(value: Value, size_hint: usize) -> Self {
        let parsed = OnceLock::new();
        let _ = parsed.set(Some(value));
        Self {
            raw: Bytes::new(),
            index: OnceLock::new(),
            parsed,
            dirty: true,
            size_hint,
        }
    }

    /// A second view of the same bytes (shared, not copied) that reuses the field index already
    /// built; its tree is parsed again only if asked for, and changes to it stay its own.
    pub fn fork(&self) -> Self {
        let index = OnceLock::new();
        if let Some(i) = self.index.get() {
            let _ = index.set(i.clone());
        }
        Self {
            raw: self.raw.clone(),
            index,
            parsed: OnceLock::new(),
            dirty: false,
            size_hint: self.size_hint,
        }
    }

    /// The whole body as an owned JSON tree for consumers that transform it (translation): the
    /// tree already parsed is moved out, else the bytes are parsed; `None` for empty or
    /// non-JSON bodies. The body keeps its bytes.
    pub fn take_json(&mut self) -> Option<Value> {
        match self.parsed.take() {
            Some(Some(v)) if !self.dirty => Some(v),
            Some(v) => {
                // A changed tree is the body's truth; keep it for later readers.
                let copy = v.clone();
                let _ = self.parsed.set(v);
                copy
            }
            None if self.raw.is_empty() => None,
            None => serde_json::from_slice(&self.raw).ok(),
        }
    }

    /// Whether the body may contain `needle` verbatim: a cheap pre-check before reading fields
    /// (always `true` once a hook changed the body, whose bytes are then stale).
    pub fn may_contain(&self, needle: &memchr::memmem::Finder<'_>) -> bool {
        self.dirty || needle.find(&self.raw).is_some()
    }

    /// The bytes as received from the client.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    fn index(&self) -> Option<&[(Key, Range<usize>)]> {
        self.index
            .get_or_init(|| {
                if self.raw.is_empty() {
                    return None;
                }
                let mut top = TopLevel {
                    base: self.raw.as_ptr() as usize,
                    members: Vec::new(),
                };
                let mut de = serde_json::Deserializer::from_slice(&self.raw);
                serde::de::DeserializeSeed::deserialize(&mut top, &mut de).ok()?;
                de.end().ok()?;
                Some(Arc::new(top.members))
            })
            .as_deref()
            .map(Vec::as_slice)
    }

    /// Whether the body is a JSON object.
    pub fn is_json_object(&self) -> bool {
        self.index().is_some()
    }

    /// The raw JSON text of a top-level field of the body as received.
    pub fn field_raw(&self, key: &str) -> Option<&str> {
        let (_, r) = self.index()?.iter().find(|(k, _)| self.key_is(k, key))?;
        std::str::from_utf8(self.raw.get(r.clone())?).ok()
    }

    fn key_is(&self, k: &Key, name: &str) -> bool {
        match k {
            Key::At(r) => self.raw.get(r.clone()) == Some(name.as_bytes()),
            Key::Unescaped(s) => &**s == name,
        }
    }

    /// A top-level field, deserialized; reflects hook changes.
    pub fn field<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        if let Some(Some(v)) = self.parsed.get() {
            return T::deserialize(v.get(key)?).ok();
        }
        serde_json::from_str(self.field_raw(key)?).ok()
    }

    /// A top-level string field (`model`, …).
    pub fn str_field(&self, key: &str) -> Option<String> {
        self.field::<String>(key)
    }

    /// The whole body as JSON; `None` for empty or non-JSON bodies.
    pub fn json(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| {
                if self.raw.is_empty() {
                    None
                } else {
                    serde_json::from_slice(&self.raw).ok()
                }
            })
            .as_ref()
    }

    /// Mutable JSON; marks the body as changed. `None` for empty or non-JSON bodies.
    pub fn json_mut(&mut self) -> Option<&mut Value> {
        self.json()?;
        self.dirty = true;
        self.parsed.get_mut().and_then(Option::as_mut)
    }

    /// Whether a hook asked for mutable access.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The bytes to send upstream: re-serialized JSON when changed, else the original bytes.
    pub fn to_wire(&self) -> Bytes {
        match (self.dirty, self.parsed.get()) {
            (true, Some(Some(v))) => {
                // A little headroom: translation and hooks usually add a few fields.
                let capacity = self.size_hint + self.size_hint / 16 + 256;
                Bytes::from(crate::translate::serialize::to_vec_with_capacity(
                    v, capacity,
                ))
            }
            _ => self.raw.clone(),
        }
    }
}

/// Facts about the request that hooks and routing share.
#[derive(Debug, Default)]
pub struct RequestMeta {
    /// Gateway-assigned id, also echoed to the client as `x-ccproxy-request-id`.
    pub request_id: String,
    /// API format of the client request, from its path.
    pub client_format: Option<Format>,
    /// Provider named by a sentinel key (`sk-ant-oat-ccproxy-{name}`).
    pub sentinel_provider: Option<Arc<str>>,
    /// Client session id (Claude Code `metadata.user_id`).
    pub session_id: Option<String>,
    /// Provider the current attempt was routed to (outbound stage).
    pub routed_provider: Option<Arc<str>>,
    /// Model named in the client's path (Gemini), before any rewrite.
    pub client_model: Option<String>,
    /// The client's path asks for a stream (Gemini `streamGenerateContent`).
    pub client_stream_path: bool,
    /// This attempt went to Gemini Code Assist in its envelope (set by `gemini_cli`); its
    /// answer is unwrapped.
    pub code_assist: Option<crate::code_assist::Envelope>,
    /// The model this attempt asks for instead of the client's (Code Assist capacity
    /// fallback; `gemini_cli` puts it in the envelope).
    pub fallback_model: Option<String>,
    /// The model `gemini_cli` sent this attempt to.
    pub sent_model: Option<String>,
}

/// What a hook sees and may change.
pub struct HookContext<'a> {
    pub headers: &'a mut RequestHeader,
    pub body: &'a mut Body,
    pub meta: &'a mut RequestMeta,
    pub providers: &'a ProviderTable,
}

impl HookContext<'_> {
    /// A header value as text (first value, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A hook failure.
#[derive(Debug)]
pub struct HookError {
    pub message: String,
    /// Set when the request must stop and the client gets this error.
    pub fatal: Option<Fatal>,
}

/// A fatal hook error: answer the client with `status` in its API format.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub status: u16,
    pub message: String,
}

impl HookError {
    /// Logged and counted; the request continues.
    pub fn soft(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fatal: None,
        }
    }

    /// Stops the request with `status`; the client sees `client_message`, the log `message`
    /// (which may carry details, such as a command's stderr, that stay on the gateway).
    pub fn fatal_with_detail(
        status: u16,
        client_message: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            fatal: Some(Fatal {
                status,
                message: client_message.into(),
            }),
            message: message.into(),
        }
    }

    /// Stops the request with `status`.
    pub fn fatal(status: u16, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            fatal: Some(Fatal {
                status,
                message: message.clone(),
            }),
            message,
        }
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A hook instance, built from its [`HookSpec`] and params.
#[async_trait::async_trait]
pub trait Hook: Send + Sync {
    /// Whether the hook applies to this request. Default: always.
    fn guard(&self, _cx: &HookContext<'_>) -> bool {
        true
    }

    /// Run the hook.
    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError>;

    /// Resolved params as `(name, value)` pairs, for `ccproxy status`. Default: none.
    fn describe_params(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// One configured hook in its stage's execution order.
pub struct Slot {
    pub spec: &'static HookSpec,
    pub hook: Arc<dyn Hook>,
    /// Index in the configured list.
    pub position: usize,
    /// Names of hooks this one runs after (DAG predecessors).
    pub depends_on: Vec<&'static str>,
}

/// The ordered hooks of both stages.
#[derive(Default)]
pub struct Pipeline {
    inbound: Vec<Slot>,
    outbound: Vec<Slot>,
}

/// A pipeline load error: where (`hooks.<stage>[i]…`) and what.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct BuildError {
    pub path: String,
    pub message: String,
}

impl Pipeline {
    /// Build and order both stages; unknown hooks, bad params, wrong stage, duplicates and
    /// cycles are errors.
    pub fn build(cfg: &HooksConfig) -> Result<Self, BuildError> {
        Ok(Self {
            inbound: build_stage(Stage::Inbound, &cfg.inbound)?,
            outbound: build_stage(Stage::Outbound, &cfg.outbound)?,
        })
    }

    pub fn stage(&self, stage: Stage) -> &[Slot] {
        match stage {
            Stage::Inbound => &self.inbound,
            Stage::Outbound => &self.outbound,
        }
    }

    /// Run one stage. Soft errors go to `on_error(hook, error)`; a fatal error stops the stage.
    ///
    /// With `on_ran`, each hook that ran is reported with whether it changed the request
    /// (headers or body); telling that costs a copy of the headers per hook, so it is only
    /// done when someone listens (the inspector).
    pub async fn run(
        &self,
        stage: Stage,
        cx: &mut HookContext<'_>,
        overrides: &Overrides,
        mut on_error: impl FnMut(&'static str, &HookError),
        mut on_ran: Option<&mut (dyn FnMut(&'static str, bool) + Send)>,
    ) -> Result<(), Fatal> {
        for slot in self.stage(stage) {
            let run = match overrides.get(slot.spec.name) {
                Some(Override::Skip) => false,
                Some(Override::Force) => true,
                None => slot.hook.guard(cx),
            };
            if !run {
                continue;
            }
            let before = on_ran.as_ref().map(|_| {
                let headers: Vec<(http::HeaderName, http::HeaderValue)> = cx
                    .headers
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (headers, cx.headers.uri.clone(), cx.body.is_dirty())
            });
            let result = slot.hook.run(cx).await;
            if let (Some(report), Some((headers, uri, dirty))) = (on_ran.as_mut(), before) {
                let same_headers = headers.len() == cx.headers.headers.len()
                    && headers
                        .iter()
                        .zip(cx.headers.headers.iter())
                        .all(|((a, b), (c, d))| a == c && b == d);
                let changed =
                    !same_headers || uri != cx.headers.uri || (cx.body.is_dirty() && !dirty);
                report(slot.spec.name, changed);
            }
            if let Err(e) = result {
                on_error(slot.spec.name, &e);
                if let Some(f) = e.fatal {
                    return Err(f);
                }
            }
        }
        Ok(())
    }
}

fn build_stage(stage: Stage, entries: &[HookEntryConfig]) -> Result<Vec<Slot>, BuildError> {
    let mut nodes = Vec::with_capacity(entries.len());
    let mut built = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("hooks.{}[{i}]", stage.as_str());
        let spec = registry::find(&entry.hook).ok_or_else(|| BuildError {
            path: path.clone(),
            message: format!(
                "unknown hook \"{}\" (known: {})",
                entry.hook,
                registry::names().join(", ")
            ),
        })?;
        if spec.stage != stage {
            return Err(BuildError {
                path,
                message: format!(
                    "hook \"{}\" runs in the {} stage, not {}",
                    spec.name,
                    spec.stage.as_str(),
                    stage.as_str()
                ),
            });
        }
        let hook = (spec.build)(entry.params.as_ref()).map_err(|(key, message)| BuildError {
            path: if key.is_empty() {
                format!("{path}.params")
            } else {
                format!("{path}.params.{key}")
            },
            message: format!("hook \"{}\": {message}", spec.name),
        })?;
        nodes.push(dag::Node {
            name: spec.name,
            reads: spec.reads,
            writes: spec.writes,
            after: entry.after.clone(),
        });
        built.push((spec, hook));
    }
    let order = dag::order(&nodes).map_err(|e| BuildError {
        path: format!("hooks.{}", stage.as_str()),
        message: e.to_string(),
    })?;
    let mut built: Vec<Option<(&'static HookSpec, Arc<dyn Hook>)>> =
        built.into_iter().map(Some).collect();
    let mut slots = Vec::with_capacity(order.len());
    for o in order {
        if let Some((spec, hook)) = built.get_mut(o.index).and_then(Option::take) {
            slots.push(Slot {
                spec,
                hook,
                position: o.index,
                depends_on: o.depends_on.iter().map(|&d| nodes[d].name).collect(),
            });
        }
    }
    Ok(slots)
}

/// Per-request hook overrides from `x-ccproxy-hooks` (spec §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// `+name`: run even if the guard says no.
    Force,
    /// `-name`: never run.
    Skip,
}

/// Parsed `x-ccproxy-hooks: +a,-b,c`; the last mention of a name wins; bare names reset to
/// normal (guarded) behaviour.
#[derive(Debug, Default)]
pub struct Overrides(Vec<(String, Option<Override>)>);

/// Name of the per-request override header.
pub const OVERRIDE_HEADER: http::HeaderName = http::HeaderName::from_static("x-ccproxy-hooks");

impl Overrides {
    pub fn parse(value: &str) -> Self {
        let mut out: Vec<(String, Option<Override>)> = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, o) = if let Some(n) = item.strip_prefix('+') {
                (n.trim(), Some(Override::Force))
            } else if let Some(n) = item.strip_prefix('-') {
                (n.trim(), Some(Override::Skip))
            } else {
                (item, None)
            };
            out.retain(|(n, _)| n != name);
            out.push((name.to_owned(), o));
        }
        Self(out)
    }

    pub fn get(&self, name: &str) -> Option<Override> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, o)| *o)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_last_wins_and_bare_resets() {
        let o = Overrides::parse(" +a , -b,c, -a ,, b");
        assert_eq!(o.get("a"), Some(Override::Skip));
        assert_eq!(o.get("b"), None);
        assert_eq!(o.get("c"), None);
        assert_eq!(o.get("zzz"), None);
    }

    #[test]
    fn body_is_parsed_lazily_and_only_rewritten_when_touched() {
        let raw = Bytes::from_static(b"{ \"model\" : \"m\" }");
        let mut b = Body::new(raw.clone());
        assert_eq!(b.str_field("model").as_deref(), Some("m"));
        assert_eq!(b.field_raw("model"), Some("\"m\""));
        assert_eq!(b.to_wire(), raw, "untouched body keeps its bytes");
        if let Some(v) = b.json_mut() {
            v["model"] = Value::from("n");
        }
        assert_eq!(&b.to_wire()[..], br#"{"model":"n"}"#);
        assert_eq!(
            b.str_field("model").as_deref(),
            Some("n"),
            "fields reflect changes"
        );
    }

    #[test]
    fn field_index_handles_nesting_escapes_and_rejects_trailing_garbage() {
        let b = Body::new(Bytes::from_static(
            br#" {"a": {"x": [1, "}"]}, "k\"ey": "v\u00e9", "model": "m"} "#,
        ));
        assert_eq!(b.field_raw("a"), Some(r#"{"x": [1, "}"]}"#));
        assert_eq!(b.str_field("k\"ey").as_deref(), Some("vé"));
        assert_eq!(b.str_field("model").as_deref(), Some("m"));
        assert!(b.field_raw("missing").is_none());
        assert!(!Body::new(Bytes::from_static(br#"{"a":1} x"#)).is_json_object());
        assert!(!Body::new(Bytes::from_static(b"[1]")).is_json_object());
    }

    #[test]
    fn non_json_body_is_never_rewritten() {
        let mut b = Body::new(Bytes::from_static(b"not json"));
        assert!(b.json_mut().is_none());
        assert!(!b.is_dirty());
        assert_eq!(&b.to_wire()[..], b"not json");
        let mut e = Body::new(Bytes::new());
        assert!(e.json_mut().is_none());
        assert!(e.to_wire().is_empty());
    }

    #[test]
    fn unknown_hook_is_a_load_error_naming_the_entry() {
        let cfg = HooksConfig {
            inbound: vec![HookEntryConfig {
                hook: "nope".into(),
                params: None,
                after: vec![],
            }],
            outbound: vec![],
        };
        let err = Pipeline::build(&cfg).err().unwrap().to_string();
        assert!(
            err.starts_with("hooks.inbound[0]: unknown hook \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn hook_in_wrong_stage_is_a_load_error() {
        let cfg = HooksConfig {
            inbound: vec![HookEntryConfig {
                hook: "verbose_mode".into(),
                params: None,
                after: vec![],
            }],
            outbound: vec![],
        };
        let err = Pipeline::build(&cfg).err().unwrap().to_string();
        assert!(err.contains("outbound stage"), "{err}");
    }

    #[test]
    fn default_pipeline_builds() {
        let p = Pipeline::build(&HooksConfig::builtin_default()).unwrap();
        let names: Vec<_> = p
            .stage(Stage::Inbound)
            .iter()
            .map(|s| s.spec.name)
            .collect();
        assert_eq!(names, ["forward_oauth", "extract_session_id"]);
    }
}
