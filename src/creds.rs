//! Provider credentials: where they come from ([`SourceSpec`], plain config data), the stateful
//! sources that resolve and cache them ([`CredentialSource`], held in the server-owned
//! [`Store`]), the resolved value ([`Secret`]), and how a credential goes on the wire
//! ([`inject`]). Also the sentinel key that names a provider instead of carrying a key
//! ([`sentinel_provider`]).
//!
//! A source is a shell command (`sh -c`, 5 s timeout, trimmed stdout), a file (trimmed
//! content), or an OAuth credentials file refreshed at the provider's token endpoint
//! ([`oauth`]). Resolution is single-flight per provider and cached: a command result for
//! `cache_seconds` (default 30 s, `0` = run on every request as the original did), a file until its
//! modification time or size changes, an OAuth token until the file changes or the token is
//! within a minute of expiring. A failed OAuth refresh is shared by the requests that waited
//! for it and retried by the next request. [`CredentialSource::renew_rejected`] is the 401 path. Secrets never reach logs: [`Secret`]'s `Debug` is redacted,
//! injected header values are marked sensitive, and errors carry no credential bytes.

pub mod oauth;

use crate::http_call::CaList;
use crate::translate::Format;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a credential command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default reuse window of a command's output.
pub const DEFAULT_COMMAND_CACHE: Duration = Duration::from_secs(30);

/// Prefix of a sentinel key; the rest names the provider.
pub const SENTINEL_PREFIX: &str = "sk-ant-oat-ccproxy-";

/// `x-api-key` (Anthropic).
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `x-goog-api-key` (Gemini).
pub const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// Headers that may carry a client API key, in sentinel lookup order.
pub const AUTH_HEADERS: [HeaderName; 3] = [X_API_KEY, X_GOOG_API_KEY, AUTHORIZATION];

/// Anthropic OAuth (subscription) access tokens start with this.
pub const ANTHROPIC_OAUTH_TOKEN_PREFIX: &str = "sk-ant-oat";

/// Google OAuth access tokens start with this; anything else for Gemini is an API key.
pub const GOOGLE_OAUTH_TOKEN_PREFIX: &str = "ya29.";

/// The beta Anthropic requires for OAuth access tokens sent as `Authorization: Bearer`.
pub const ANTHROPIC_OAUTH_BETA: &str = "oauth-2025-04-20";

/// The provider named by a sentinel key in the request's auth headers, if any
/// (`x-api-key`, then `x-goog-api-key`, then `Authorization: Bearer`, case-insensitive scheme).
pub fn sentinel_provider(headers: &RequestHeader) -> Option<&str> {
    // One pass over the headers; the first of the three (in lookup order) with a sentinel wins.
    let mut found: [Option<&str>; 3] = [None; 3];
    for (name, value) in &headers.headers {
        let Some(slot) = AUTH_HEADERS.iter().position(|h| h == name) else {
            continue;
        };
        if found[slot].is_some() {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        let v = v.trim();
        let v = if slot == 2 { strip_bearer(v) } else { Some(v) };
        found[slot] = v
            .and_then(|v| v.strip_prefix(SENTINEL_PREFIX))
            .filter(|n| !n.is_empty());
    }
    found.into_iter().flatten().next()
}

fn strip_bearer(v: &str) -> Option<&str> {
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("bearer ").then(|| rest.trim())
}

/// Whether any auth header still carries a sentinel key.
pub fn carries_sentinel(headers: &RequestHeader) -> bool {
    headers.headers.iter().any(|(name, v)| {
        AUTH_HEADERS.contains(name) && v.to_str().is_ok_and(|s| s.contains(SENTINEL_PREFIX))
    })
}

fn has_sentinel(headers: &RequestHeader, name: &HeaderName) -> bool {
    headers
        .headers
        .get_all(name)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains(SENTINEL_PREFIX)))
}

/// Remove every auth header that carries a sentinel key (the client's other keys stay).
pub fn strip_sentinels(headers: &mut RequestHeader) {
    for h in &AUTH_HEADERS {
        if has_sentinel(headers, h) {
            headers.remove_header(h);
        }
    }
}

/// Remove `name` if present (Pingora's `remove_header` hashes the name twice even when absent).
fn remove_if_present(headers: &mut RequestHeader, name: &HeaderName) {
    if headers.headers.contains_key(name) {
        headers.remove_header(name);
    }
}

/// Remove every client key (`x-api-key`, `x-goog-api-key`, `authorization`).
pub fn strip_client_keys(headers: &mut RequestHeader) {
    for h in &AUTH_HEADERS {
        remove_if_present(headers, h);
    }
}

/// Why a credential could not be put on a request.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("the provider credential is not a valid header value")]
    InvalidValue,
    #[error("cannot set the credential header: {0}")]
    Header(String),
}

/// Put `secret` on `headers` the way a provider speaking `family` expects, removing the other
/// auth headers:
/// - `header` set: the raw credential in that header;
/// - Gemini without `header`: OAuth access tokens (`ya29.…`) as `Authorization: Bearer`, API keys
///   in `x-goog-api-key` (the header form of `?key=`);
/// - otherwise `Authorization: Bearer <credential>`; an Anthropic OAuth token sent that way also
///   gets the `oauth-2025-04-20` beta, which the API requires for subscription tokens.
pub fn inject(
    headers: &mut RequestHeader,
    family: Format,
    header: Option<&HeaderName>,
    secret: &Secret,
) -> Result<(), InjectError> {
    let raw = secret.expose();
    let target = match header {
        Some(h) => Some(h),
        None if family == Format::Gemini && !raw.starts_with(GOOGLE_OAUTH_TOKEN_PREFIX) => {
            Some(&X_GOOG_API_KEY)
        }
        None => None,
    };
    let (name, value) = match target {
        Some(h) => (h.clone(), secret.raw_header()),
        None => (AUTHORIZATION, secret.bearer_header()),
    };
    let value = value.ok_or(InjectError::InvalidValue)?;
    for h in &AUTH_HEADERS {
        if *h != name {
            remove_if_present(headers, h);
        }
    }
    headers
        .insert_header(name, value)
        .map_err(|e| InjectError::Header(e.to_string()))?;
    if family == Format::Anthropic
        && target.is_none()
        && raw.starts_with(ANTHROPIC_OAUTH_TOKEN_PREFIX)
    {
        ensure_beta(headers, ANTHROPIC_OAUTH_BETA)?;
    }
    Ok(())
}

/// The headers [`inject`] puts on a request, for the gateway's own calls to a provider (model
/// lists, Code Assist prewarm, Gemini caches), so they carry the credential the same way.
pub fn auth_headers(
    family: Format,
    header: Option<&HeaderName>,
    secret: &Secret,
) -> Result<Vec<(HeaderName, HeaderValue)>, InjectError> {
    let mut head =
        RequestHeader::build("GET", b"/", None).map_err(|e| InjectError::Header(e.to_string()))?;
    inject(&mut head, family, header, secret)?;
    Ok(head
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect())
}

/// Add `beta` to the comma-separated `anthropic-beta` header unless present.
pub fn ensure_beta(headers: &mut RequestHeader, beta: &str) -> Result<(), InjectError> {
    let current = headers
        .headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if current.split(',').any(|b| b.trim() == beta) {
        return Ok(());
    }
    let next = if current.is_empty() {
        beta.to_owned()
    } else {
        format!("{current},{beta}")
    };
    headers
        .insert_header("anthropic-beta", next)
        .map_err(|e| InjectError::Header(e.to_string()))
}

/// Where a provider's credential comes from and how it is used: config data, no state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub kind: SourceKind,
    /// Header the raw credential goes in; `None` = `Authorization: Bearer` (see [`inject`]).
    pub header: Option<HeaderName>,
    /// How long a command's output is reused.
    pub ttl: Duration,
}

/// The credential sources of every provider with `auth`, owned by the running server.
#[derive(Debug, Default)]
pub struct Store {
    sources: HashMap<String, Arc<CredentialSource>>,
}

impl Store {
    /// A store with one source per `(provider name, spec)`; OAuth token endpoints are verified
    /// against `trust` (`None`: the system's roots).
    pub fn new<'a>(
        specs: impl IntoIterator<Item = (&'a str, &'a SourceSpec)>,
        trust: Option<Arc<CaList>>,
    ) -> Self {
        Self {
            sources: specs
                .into_iter()
                .map(|(name, spec)| {
                    let mut source = CredentialSource::new(spec.clone());
                    source.trust = trust.clone();
                    (name.to_owned(), Arc::new(source))
                })
                .collect(),
        }
    }

    /// The source of `provider`, if it has `auth`.
    pub fn get(&self, provider: &str) -> Option<&Arc<CredentialSource>> {
        self.sources.get(provider)
    }
}

/// A credential value. `Debug` and `Display` never show it. The header values made from it are
/// built once per value (a cached secret serves many requests) and marked sensitive.
pub struct Secret {
    value: String,
    raw: OnceLock<Option<HeaderValue>>,
    bearer: OnceLock<Option<HeaderValue>>,
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self::new(self.value.clone())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Secret {}

fn sensitive(v: Result<HeaderValue, http::header::InvalidHeaderValue>) -> Option<HeaderValue> {
    let mut v = v.ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            raw: OnceLock::new(),
            bearer: OnceLock::new(),
        }
    }

    /// The raw value, for putting on the wire only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The value as a header value (`None` if it cannot be one).
    fn raw_header(&self) -> Option<HeaderValue> {
        self.raw
            .get_or_init(|| sensitive(HeaderValue::from_str(&self.value)))
            .clone()
    }

    /// `Bearer <value>` as a header value.
    fn bearer_header(&self) -> Option<HeaderValue> {
        self.bearer
            .get_or_init(|| sensitive(HeaderValue::from_str(&format!("Bearer {}", self.value))))
            .clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a credential could not be resolved. Messages never contain the credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential command could not start: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("credential command timed out after {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("credential command exited with {status}{stderr}")]
    CommandFailed { status: String, stderr: String },
    #[error("credential command printed nothing")]
    CommandEmpty,
    #[error("credential file {path} could not be read: {source}")]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credential file {path} is empty")]
    FileEmpty { path: PathBuf },
    #[error("OAuth credentials file {path}: {message}")]
    OAuthFile { path: PathBuf, message: String },
    #[error("OAuth token refresh at {endpoint} failed: {message}")]
    Refresh { endpoint: String, message: String },
    /// The refresh this request waited for failed (the same failure, not a second attempt).
    #[error("{0}")]
    Shared(String),
}

impl Error {
    /// The error without command output or paths, for clients (details stay in the log).
    pub fn summary(&self) -> String {
        match self {
            Error::Spawn(_) => "credential command could not start".to_owned(),
            Error::Timeout => self.to_string(),
            Error::CommandFailed { status, .. } => {
                format!("credential command exited with {status}")
            }
            Error::CommandEmpty => self.to_string(),
            Error::FileRead { .. } => "credential file could not be read".to_owned(),
            Error::FileEmpty { .. } => "credential file is empty".to_owned(),
            Error::OAuthFile { message, .. } => format!("OAuth credentials file: {message}"),
            Error::Refresh { .. } | Error::Shared(_) => self.to_string(),
        }
    }
}

/// Where a provider's credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Command(String),
    File(PathBuf),
    OAuth(Box<oauth::OAuthSpec>),
}

impl SourceKind {
    /// The auth `type` as configured.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Command(_) => "command",
            SourceKind::File(_) => "file",
            SourceKind::OAuth(o) => o.flavor.type_name(),
        }
    }
}

#[derive(Clone)]
struct Cached {
    secret: Arc<Secret>,
    fetched: Instant,
    file_stamp: Option<(SystemTime, u64)>,
    /// OAuth: when the token expires (ms since the epoch).
    expiry_ms: Option<i64>,
}

/// A credential source with its cache.
pub struct CredentialSource {
    spec: SourceSpec,
    state: Arc<State>,
    /// Trust roots for an OAuth token endpoint.
    trust: Option<Arc<CaList>>,
}

/// Cache shared with background refreshes.
#[derive(Default)]
struct State {
    cached: RwLock<Option<Cached>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
    /// Counts OAuth reads/refreshes; a request that waited for one sees it moved.
    generation: AtomicU64,
    /// The last OAuth failure and the generation it belongs to.
    failure: Mutex<Option<(u64, String)>>,
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSource")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl CredentialSource {
    pub fn new(spec: SourceSpec) -> Self {
        Self {
            spec,
            state: Arc::default(),
            trust: None,
        }
    }

    pub fn kind(&self) -> &SourceKind {
        &self.spec.kind
    }

    /// The header the credential goes in; `None` = `Authorization: Bearer`.
    pub fn header(&self) -> Option<&http::HeaderName> {
        self.spec.header.as_ref()
    }

    /// Forget the cached value so the next [`resolve`](Self::resolve) reads the source again.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.state.cached.write() {
            *c = None;
        }
    }

    /// The current credential, from cache when still fresh.
    ///
    /// A command result older than `cache_seconds` but younger than twice that is still served
    /// while one background task runs the command again, so requests do not wait for `sh` every
    /// time the cache turns over; only an empty or much older cache makes a request wait.
    pub async fn resolve(&self) -> Result<Arc<Secret>, Error> {
        if let SourceKind::OAuth(spec) = &self.spec.kind {
            return self.resolve_oauth(spec, None).await;
        }
        let stamp = self.file_stamp();
        match self.lookup(stamp) {
            Lookup::Fresh(s) => return Ok(s),
            Lookup::Stale(s) => {
                self.refresh_in_background();
                return Ok(s);
            }
            Lookup::Missing => {}
        }
        // Single flight: one reader of the source at a time; the others reuse its result.
        let _guard = self.state.refresh.lock().await;
        if let Lookup::Fresh(s) = self.lookup(stamp) {
            return Ok(s);
        }
        fetch(&self.spec.kind, &self.state, stamp).await
    }

    /// The provider rejected `rejected` (a 401): read the source again (an OAuth source
    /// refreshes even a token that looks valid) and return the new credential, or `None`
    /// when the source still gives the rejected one.
    pub async fn renew_rejected(&self, rejected: &Secret) -> Result<Option<Arc<Secret>>, Error> {
        let fresh = match &self.spec.kind {
            SourceKind::OAuth(spec) => self.resolve_oauth(spec, Some(rejected)).await?,
            _ => {
                let _guard = self.state.refresh.lock().await;
                // Another request may have renewed it while this one waited.
                if let Some(c) = self.cached() {
                    if *c != *rejected {
                        return Ok(Some(c));
                    }
                }
                let stamp = self.file_stamp();
                fetch(&self.spec.kind, &self.state, stamp).await?
            }
        };
        Ok((*fresh != *rejected).then_some(fresh))
    }

    fn cached(&self) -> Option<Arc<Secret>> {
        let guard = self.state.cached.read().ok()?;
        guard.as_ref().map(|c| c.secret.clone())
    }

    /// OAuth: the cached token while the file is unchanged and the token has more than a
    /// minute left; else one task reads the file and refreshes if needed while the others
    /// wait for its outcome (success or failure).
    async fn resolve_oauth(
        &self,
        spec: &oauth::OAuthSpec,
        rejected: Option<&Secret>,
    ) -> Result<Arc<Secret>, Error> {
        let fresh = |stamp: Option<(SystemTime, u64)>| -> Option<Arc<Secret>> {
            let guard = self.state.cached.read().ok()?;
            let c = guard.as_ref()?;
            let left = c.expiry_ms? - oauth::now_ms();
            let ok = stamp.is_some()
                && c.file_stamp == stamp
                && left > oauth::EXPIRY_MARGIN.as_millis() as i64
                && rejected.is_none_or(|r| *c.secret != *r);
            ok.then(|| c.secret.clone())
        };
        if let Some(s) = fresh(self.file_stamp()) {
            return Ok(s);
        }
        let seen = self.state.generation.load(Ordering::Acquire);
        let _guard = self.state.refresh.lock().await;
        if self.state.generation.load(Ordering::Acquire) != seen {
            // Someone read or refreshed while this request waited: take their outcome.
            if let Ok(f) = self.state.failure.lock() {
                if let Some((g, message)) = f.as_ref() {
                    if *g != seen {
                        return Err(Error::Shared(message.clone()));
                    }
                }
            }
            if let Some(s) = fresh(self.file_stamp()) {
                return Ok(s);
            }
        }
        let generation = self.state.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let trust = self.trust.as_deref();
        match oauth::obtain(spec, trust, rejected.map(Secret::expose)).await {
            Ok(got) => {
                let secret = Arc::new(Secret::new(got.access));
                if let Ok(mut c) = self.state.cached.write() {
                    *c = Some(Cached {
                        secret: secret.clone(),
                        fetched: Instant::now(),
                        file_stamp: self.file_stamp(),
                        expiry_ms: Some(got.expiry_ms),
                    });
                }
                if let Ok(mut f) = self.state.failure.lock() {
                    *f = None;
                }
                Ok(secret)
            }
            Err(e) => {
                if let Ok(mut f) = self.state.failure.lock() {
                    *f = Some((generation, e.to_string()));
                }
                Err(e)
            }
        }
    }

    fn refresh_in_background(&self) {
        let Ok(guard) = self.state.refresh.clone().try_lock_owned() else {
            return; // a refresh is already running
        };
        let (kind, state) = (self.spec.kind.clone(), self.state.clone());
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = fetch(&kind, &state, None).await {
                tracing::warn!(error = %e, "background credential refresh failed; keeping the previous value for now");
            }
        });
    }

    fn lookup(&self, stamp: Option<(SystemTime, u64)>) -> Lookup {
        let Ok(guard) = self.state.cached.read() else {
            return Lookup::Missing;
        };
        let Some(c) = guard.as_ref() else {
            return Lookup::Missing;
        };
        match self.spec.kind {
            SourceKind::File(_) if stamp.is_some() && c.file_stamp == stamp => {
                Lookup::Fresh(c.secret.clone())
            }
            SourceKind::File(_) | SourceKind::OAuth(_) => Lookup::Missing,
            SourceKind::Command(_) => {
                let age = c.fetched.elapsed();
                if age < self.spec.ttl {
                    Lookup::Fresh(c.secret.clone())
                } else if age < self.spec.ttl * 2 {
                    Lookup::Stale(c.secret.clone())
                } else {
                    Lookup::Missing
                }
            }
        }
    }

    fn file_stamp(&self) -> Option<(SystemTime, u64)> {
        let p = match &self.spec.kind {
            SourceKind::File(p) => p,
            SourceKind::OAuth(o) => &o.file,
            SourceKind::Command(_) => return None,
        };
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

enum Lookup {
    Fresh(Arc<Secret>),
    /// Past its TTL but still usable while a refresh runs.
    Stale(Arc<Secret>),
    Missing,
}

/// Read the source and store the result in the cache.
async fn fetch(
    kind: &SourceKind,
    state: &State,
    stamp: Option<(SystemTime, u64)>,
) -> Result<Arc<Secret>, Error> {
    let value = match kind {
        SourceKind::Command(cmd) => run_command(cmd).await?,
        SourceKind::File(path) => read_file(path).await?,
        // Resolved by `resolve_oauth`, which keeps the expiry with the token.
        SourceKind::OAuth(spec) => oauth::read(spec)
            .ok()
            .and_then(|f| f.access_token().map(str::to_owned))
            .ok_or_else(|| Error::OAuthFile {
                path: spec.file.clone(),
                message: "no access token".to_owned(),
            })?,
    };
    let secret = Arc::new(Secret::new(value));
    if let Ok(mut c) = state.cached.write() {
        *c = Some(Cached {
            secret: secret.clone(),
            fetched: Instant::now(),
            file_stamp: stamp,
            expiry_ms: None,
        });
    }
    Ok(secret)
}

async fn run_command(cmd: &str) -> Result<String, Error> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env_remove(crate::tls_keylog::ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        let stderr = if first.is_empty() {
            String::new()
        } else {
            let cut: String = first.chars().take(200).collect();
            format!(": {cut}")
        };
        return Err(Error::CommandFailed {
            status: out.status.to_string(),
            stderr,
        });
    }
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if value.is_empty() {
        return Err(Error::CommandEmpty);
    }
    Ok(value)
}

async fn read_file(path: &PathBuf) -> Result<String, Error> {
    let raw = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| Error::FileRead {
            path: path.clone(),
            source,
        })?;
    let value = raw.trim().to_owned();
    if value.is_empty() {
        return Err(Error::FileEmpty { path: path.clone() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SourceKind, ttl: Option<Duration>) -> SourceSpec {
        SourceSpec {
            kind,
            header: None,
            ttl: ttl.unwrap_or(DEFAULT_COMMAND_CACHE),
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("very"));
    }

    #[tokio::test]
    async fn command_output_is_trimmed_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; echo '  tok123  '", counter.display());
        let src = CredentialSource::new(spec(SourceKind::Command(cmd), None));
        assert_eq!(src.resolve().await.unwrap().expose(), "tok123");
        assert_eq!(src.resolve().await.unwrap().expose(), "tok123");
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        assert_eq!(runs, 1, "second resolve must come from cache");
        src.invalidate();
        src.resolve().await.unwrap();
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        assert_eq!(runs, 2);
    }

    #[tokio::test]
    async fn stale_value_is_served_while_one_background_refresh_runs() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; wc -l < {0}", counter.display());
        let ttl = Duration::from_millis(50);
        let src = CredentialSource::new(spec(SourceKind::Command(cmd), Some(ttl)));
        assert_eq!(src.resolve().await.unwrap().expose(), "1");
        // Age the cache past its TTL (but within the grace window) without sleeping.
        if let Ok(mut c) = src.state.cached.write() {
            if let Some(c) = c.as_mut() {
                c.fetched -= ttl + Duration::from_millis(1);
            }
        }
        // The stale value comes back at once; a refresh runs in the background.
        assert_eq!(src.resolve().await.unwrap().expose(), "1");
        // Wait for the refresh to finish (it holds the refresh lock while running).
        drop(src.state.refresh.lock().await);
        assert_eq!(src.resolve().await.unwrap().expose(), "2");
        // Much older than the TTL: the request waits for a fresh value.
        if let Ok(mut c) = src.state.cached.write() {
            if let Some(c) = c.as_mut() {
                c.fetched -= ttl * 3;
            }
        }
        assert_eq!(src.resolve().await.unwrap().expose(), "3");
    }

    #[tokio::test]
    async fn zero_ttl_runs_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; echo tok", counter.display());
        let src = CredentialSource::new(spec(SourceKind::Command(cmd), Some(Duration::ZERO)));
        src.resolve().await.unwrap();
        src.resolve().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&counter).unwrap().lines().count(),
            2
        );
    }

    #[tokio::test]
    async fn failing_command_reports_status_without_stdout() {
        let src = CredentialSource::new(spec(
            SourceKind::Command("echo secret-out; echo oops >&2; exit 3".into()),
            None,
        ));
        let err = src.resolve().await.unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("oops"), "{err}");
        assert!(!err.contains("secret-out"), "{err}");
    }

    #[tokio::test]
    async fn empty_command_output_is_an_error() {
        let src = CredentialSource::new(spec(SourceKind::Command("true".into()), None));
        assert!(matches!(src.resolve().await, Err(Error::CommandEmpty)));
    }

    #[tokio::test]
    async fn file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "first\n").unwrap();
        let src = CredentialSource::new(spec(SourceKind::File(p.clone()), None));
        assert_eq!(src.resolve().await.unwrap().expose(), "first");
        std::fs::write(&p, "second-longer\n").unwrap();
        assert_eq!(src.resolve().await.unwrap().expose(), "second-longer");
    }

    #[tokio::test]
    async fn missing_file_names_the_path() {
        let src = CredentialSource::new(spec(SourceKind::File("/nonexistent/x".into()), None));
        let err = src.resolve().await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x"), "{err}");
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/messages", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn sentinel_found_in_each_header_in_order() {
        assert_eq!(
            sentinel_provider(&req(&[("x-api-key", "sk-ant-oat-ccproxy-anthropic")])),
            Some("anthropic")
        );
        assert_eq!(
            sentinel_provider(&req(&[("x-goog-api-key", "sk-ant-oat-ccproxy-gemini")])),
            Some("gemini")
        );
        assert_eq!(
            sentinel_provider(&req(&[("authorization", "bearer sk-ant-oat-ccproxy-zai")])),
            Some("zai")
        );
        assert_eq!(
            sentinel_provider(&req(&[
                ("authorization", "Bearer sk-ant-oat-ccproxy-b"),
                ("x-api-key", "sk-ant-oat-ccproxy-a")
            ])),
            Some("a")
        );
        assert_eq!(sentinel_provider(&req(&[("x-api-key", "sk-real")])), None);
        assert_eq!(
            sentinel_provider(&req(&[("x-api-key", "sk-ant-oat-ccproxy-")])),
            None
        );
    }

    #[test]
    fn bearer_injection_removes_other_keys_and_marks_the_value_sensitive() {
        let mut r = req(&[
            ("x-api-key", "sk-ant-oat-ccproxy-a"),
            ("x-goog-api-key", "g"),
        ]);
        inject(&mut r, Format::OpenAi, None, &Secret::new("tok123")).unwrap();
        assert_eq!(r.headers["authorization"], "Bearer tok123");
        assert!(r.headers["authorization"].is_sensitive());
        assert!(r.headers.get("x-api-key").is_none());
        assert!(r.headers.get("x-goog-api-key").is_none());
    }

    #[test]
    fn anthropic_oauth_token_gets_the_oauth_beta_once() {
        let mut r = req(&[("anthropic-beta", "foo")]);
        inject(
            &mut r,
            Format::Anthropic,
            None,
            &Secret::new("sk-ant-oat01-x"),
        )
        .unwrap();
        inject(
            &mut r,
            Format::Anthropic,
            None,
            &Secret::new("sk-ant-oat01-x"),
        )
        .unwrap();
        assert_eq!(r.headers["anthropic-beta"], "foo,oauth-2025-04-20");
        let mut r = req(&[]);
        inject(
            &mut r,
            Format::Anthropic,
            None,
            &Secret::new("sk-ant-api03-x"),
        )
        .unwrap();
        assert!(r.headers.get("anthropic-beta").is_none());
    }

    #[test]
    fn gemini_api_keys_go_in_x_goog_api_key_and_oauth_tokens_as_bearer() {
        let mut r = req(&[("authorization", "Bearer sk-ant-oat-ccproxy-g")]);
        inject(&mut r, Format::Gemini, None, &Secret::new("AIza123")).unwrap();
        assert_eq!(r.headers["x-goog-api-key"], "AIza123");
        assert!(r.headers.get("authorization").is_none());
        let mut r = req(&[]);
        inject(&mut r, Format::Gemini, None, &Secret::new("ya29.tok")).unwrap();
        assert_eq!(r.headers["authorization"], "Bearer ya29.tok");
    }

    #[test]
    fn custom_header_injection_is_raw() {
        let mut r = req(&[("authorization", "Bearer sk-ant-oat-ccproxy-a")]);
        let h = HeaderName::from_static("x-api-key");
        inject(&mut r, Format::Anthropic, Some(&h), &Secret::new("tok123")).unwrap();
        assert_eq!(r.headers["x-api-key"], "tok123");
        assert!(r.headers.get("authorization").is_none());
    }

    #[test]
    fn sentinels_are_stripped_and_real_keys_kept() {
        let mut r = req(&[
            ("x-api-key", "sk-ant-oat-ccproxy-a"),
            ("authorization", "Bearer sk-real"),
        ]);
        assert!(carries_sentinel(&r));
        strip_sentinels(&mut r);
        assert!(!carries_sentinel(&r));
        assert_eq!(r.headers["authorization"], "Bearer sk-real");
    }
}
