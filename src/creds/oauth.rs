//! OAuth refresh-token sources (`anthropic_oauth`, `google_oauth`): a JSON credentials file
//! shared in place with the provider's own CLI (`~/.claude/.credentials.json`,
//! `~/.gemini/oauth_creds.json`), refreshed at the provider's token endpoint when the access
//! token is within [`EXPIRY_MARGIN`] of expiring, and written back atomically.
//!
//! The file is re-read whenever it changes (the host CLI may refresh it too). A refresh posts
//! `grant_type=refresh_token` as a form (15 s timeout); a rotated refresh token is kept, a
//! missing one falls back to the old one. The write-back keeps every other field of the file
//! (`scopes`, `subscriptionType`, …), goes through a temp file in the same directory (fsync,
//! mode 0600, rename, directory fsync), and a failed refresh leaves the file untouched.
//! Single flight and failure memory live in [`super::CredentialSource`].

use super::{Error, Secret};
use crate::http_call::CaList;
use crate::http_call::{self, percent_encode, Call};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An access token is used only while it has more than this left.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Deadline of a token request.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

/// Whose token endpoint and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Anthropic,
    Google,
}

impl Flavor {
    /// The auth `type` naming it.
    pub fn type_name(self) -> &'static str {
        match self {
            Flavor::Anthropic => "anthropic_oauth",
            Flavor::Google => "google_oauth",
        }
    }

    pub fn default_file(self) -> &'static str {
        match self {
            Flavor::Anthropic => "~/.config/ccproxy/oauth/anthropic.json",
            Flavor::Google => "~/.gemini/oauth_creds.json",
        }
    }

    pub fn default_endpoint(self) -> &'static str {
        match self {
            Flavor::Anthropic => "https://claude.ai/v1/oauth/token",
            Flavor::Google => "https://oauth2.googleapis.com/token",
        }
    }

    /// Claude Code's public OAuth client; Google has no default (it is required).
    pub fn default_client_id(self) -> Option<&'static str> {
        match self {
            Flavor::Anthropic => Some("9d1c250a-e61b-44d9-88ed-5944d1962f5e"),
            Flavor::Google => None,
        }
    }

    /// Lifetime assumed when a token response has no `expires_in`.
    pub fn default_lifetime(self) -> Duration {
        match self {
            Flavor::Anthropic => Duration::from_secs(36_000),
            Flavor::Google => Duration::from_secs(3_600),
        }
    }

    /// Default `(access, refresh, expiry)` dot-paths for a file; Claude Code's own file
    /// (`.credentials.json`) keeps them under `claudeAiOauth`.
    pub fn default_paths(self, file: &Path) -> [&'static str; 3] {
        match self {
            Flavor::Anthropic if file.file_name().is_some_and(|n| n == ".credentials.json") => [
                "claudeAiOauth.accessToken",
                "claudeAiOauth.refreshToken",
                "claudeAiOauth.expiresAt",
            ],
            Flavor::Anthropic => ["access_token", "refresh_token", "expires_at"],
            Flavor::Google => ["access_token", "refresh_token", "expiry_date"],
        }
    }
}

/// A dot-path into the credentials JSON (`claudeAiOauth.accessToken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    /// `None` when the path is empty or has an empty segment.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<String> = s.split('.').map(str::to_owned).collect();
        (!parts.iter().any(String::is_empty)).then_some(Self(parts))
    }

    fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(v, |v, k| v.get(k))
    }

    /// Set the value, creating missing objects on the way (a non-object in the way is
    /// replaced by one).
    fn set(&self, root: &mut Value, value: Value) {
        let mut at = root;
        for key in &self.0 {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let Value::Object(map) = at else { return };
            at = map.entry(key.clone()).or_insert(Value::Null);
        }
        *at = value;
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// An OAuth source as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSpec {
    pub flavor: Flavor,
    pub file: PathBuf,
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub access_path: JsonPath,
    pub refresh_path: JsonPath,
    pub expiry_path: JsonPath,
}

/// What the credentials file holds now. `Debug` shows no token.
pub struct TokenFile {
    doc: Value,
    access: Option<String>,
    refresh: Option<String>,
    /// Milliseconds since the epoch.
    expiry_ms: Option<i64>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("access", &self.access.as_ref().map(|_| "<redacted>"))
            .field("refresh", &self.refresh.as_ref().map(|_| "<redacted>"))
            .field("expiry_ms", &self.expiry_ms)
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Milliseconds the access token has left (negative = expired); `None` = no token or
    /// no expiry.
    pub fn remaining_ms(&self, now_ms: i64) -> Option<i64> {
        self.access.as_ref()?;
        self.expiry_ms.map(|e| e - now_ms)
    }

    pub fn access_token(&self) -> Option<&str> {
        self.access.as_deref()
    }

    fn usable(&self, now_ms: i64) -> Option<&str> {
        let left = self.remaining_ms(now_ms)?;
        (left > EXPIRY_MARGIN.as_millis() as i64)
            .then_some(self.access.as_deref())
            .flatten()
    }
}

/// A token ready to use, and until when. `Debug` shows no token.
pub struct Obtained {
    pub access: String,
    pub expiry_ms: i64,
}

impl std::fmt::Debug for Obtained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obtained")
            .field("access", &"<redacted>")
            .field("expiry_ms", &self.expiry_ms)
            .finish()
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Read and parse the credentials file.
pub fn read(spec: &OAuthSpec) -> Result<TokenFile, Error> {
    let raw = std::fs::read(&spec.file).map_err(|source| Error::FileRead {
        path: spec.file.clone(),
        source,
    })?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|e| Error::OAuthFile {
        path: spec.file.clone(),
        message: format!("not valid JSON ({e})"),
    })?;
    let text = |p: &JsonPath| {
        p.get(&doc)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let expiry_ms = spec.expiry_path.get(&doc).and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    Ok(TokenFile {
        access: text(&spec.access_path),
        refresh: text(&spec.refresh_path),
        expiry_ms,
        doc,
    })
}

/// A usable access token: the file's while it has more than a minute left (and is not the
/// `rejected` one), else a refreshed one, written back to the file.
///
/// Deliberate difference from the original (which returns nothing when the file has no
/// refresh token, even with a valid access token): a valid access token is used; only a
/// needed refresh without a refresh token is an error.
pub async fn obtain(
    spec: &OAuthSpec,
    trust: Option<&CaList>,
    rejected: Option<&str>,
) -> Result<Obtained, Error> {
    let file = read(spec)?;
    let now = now_ms();
    if let Some(access) = file.usable(now) {
        if rejected != Some(access) {
            return Ok(Obtained {
                access: access.to_owned(),
                expiry_ms: file.expiry_ms.unwrap_or(now),
            });
        }
    }
    let Some(refresh) = file.refresh.clone() else {
        return Err(Error::OAuthFile {
            path: spec.file.clone(),
            message: format!(
                "the access token needs a refresh and there is no refresh token at `{}`",
                spec.refresh_path
            ),
        });
    };
    let granted = request_token(spec, &refresh, trust).await?;
    let expiry_ms = now_ms()
        + granted
            .expires_in
            .unwrap_or_else(|| spec.flavor.default_lifetime())
            .as_millis() as i64;
    let new_refresh = granted.refresh.unwrap_or(refresh);
    let mut doc = file.doc;
    spec.access_path
        .set(&mut doc, Value::String(granted.access.clone()));
    spec.refresh_path.set(&mut doc, Value::String(new_refresh));
    spec.expiry_path.set(&mut doc, Value::from(expiry_ms));
    if let Err(e) = write_back(&spec.file, &doc) {
        // The token is good; losing it (and a rotated refresh token) would be worse than
        // serving it from memory until the next refresh.
        tracing::warn!(file = %spec.file.display(), error = %e, "refreshed OAuth token could not be written back; using it from memory");
    }
    Ok(Obtained {
        access: granted.access,
        expiry_ms,
    })
}

fn write_back(path: &Path, doc: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(doc).map_err(std::io::Error::other)?;
    crate::config::paths::write_atomically(path, &bytes, 0o600)
}

struct Granted {
    access: String,
    refresh: Option<String>,
    expires_in: Option<Duration>,
}

/// The token request body (spec order: grant type, client id, secret, refresh token).
fn token_form(spec: &OAuthSpec, refresh: &str) -> Result<String, Error> {
    let mut form = String::from("grant_type=refresh_token&client_id=");
    form.push_str(&percent_encode(&spec.client_id));
    match (&spec.client_secret, spec.flavor) {
        (Some(secret), _) => {
            form.push_str("&client_secret=");
            form.push_str(&percent_encode(secret.expose()));
        }
        (None, Flavor::Google) => {
            return Err(Error::Refresh {
                endpoint: spec.endpoint.clone(),
                message: "google_oauth needs `client_secret` to refresh".to_owned(),
            })
        }
        (None, Flavor::Anthropic) => {}
    }
    form.push_str("&refresh_token=");
    form.push_str(&percent_encode(refresh));
    Ok(form)
}

async fn request_token(
    spec: &OAuthSpec,
    refresh: &str,
    trust: Option<&CaList>,
) -> Result<Granted, Error> {
    let failed = |message: String| Error::Refresh {
        endpoint: spec.endpoint.clone(),
        message,
    };
    let form = token_form(spec, refresh)?;
    let call = Call::post(
        spec.endpoint.clone(),
        "application/x-www-form-urlencoded",
        Bytes::from(form),
    )
    .header(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let reply = http_call::send(call, REFRESH_TIMEOUT, trust)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    if reply.status != 200 {
        // OAuth error bodies carry `error` / `error_description`, never a token.
        let detail = body
            .as_ref()
            .and_then(|b| {
                let e = b.get("error")?;
                let kind = e
                    .as_str()
                    .or_else(|| e.get("type").and_then(Value::as_str))?;
                let desc = b
                    .get("error_description")
                    .or_else(|| e.get("message"))
                    .and_then(Value::as_str);
                Some(match desc {
                    Some(d) => format!(": {kind}: {}", d.chars().take(200).collect::<String>()),
                    None => format!(": {kind}"),
                })
            })
            .unwrap_or_default();
        return Err(failed(format!("answered {}{detail}", reply.status)));
    }
    let Some(body) = body else {
        return Err(failed("answered 200 without a JSON body".to_owned()));
    };
    let access = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| failed("answered 200 without an access_token".to_owned()))?;
    Ok(Granted {
        access: access.to_owned(),
        refresh: body
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        expires_in: body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(file: PathBuf, flavor: Flavor) -> OAuthSpec {
        let [a, r, e] = flavor.default_paths(&file);
        OAuthSpec {
            flavor,
            endpoint: "http://127.0.0.1:9/token".into(),
            client_id: flavor.default_client_id().unwrap_or("cid").into(),
            client_secret: None,
            access_path: JsonPath::parse(a).unwrap(),
            refresh_path: JsonPath::parse(r).unwrap(),
            expiry_path: JsonPath::parse(e).unwrap(),
            file,
        }
    }

    #[test]
    fn claude_code_file_uses_its_own_paths() {
        let s = spec(
            PathBuf::from("/h/.claude/.credentials.json"),
            Flavor::Anthropic,
        );
        assert_eq!(s.access_path.to_string(), "claudeAiOauth.accessToken");
        let s = spec(PathBuf::from("/h/anthropic.json"), Flavor::Anthropic);
        assert_eq!(s.expiry_path.to_string(), "expires_at");
        let s = spec(PathBuf::from("/h/oauth_creds.json"), Flavor::Google);
        assert_eq!(s.expiry_path.to_string(), "expiry_date");
    }

    #[test]
    fn paths_set_creates_objects_and_keeps_siblings() {
        let mut doc = serde_json::json!({"claudeAiOauth": {"scopes": ["x"]}, "other": 1});
        JsonPath::parse("claudeAiOauth.accessToken")
            .unwrap()
            .set(&mut doc, Value::from("new"));
        JsonPath::parse("a.b")
            .unwrap()
            .set(&mut doc, Value::from(2));
        assert_eq!(
            doc,
            serde_json::json!({"claudeAiOauth": {"scopes": ["x"], "accessToken": "new"}, "other": 1, "a": {"b": 2}})
        );
        assert!(JsonPath::parse("a..b").is_none());
        assert!(JsonPath::parse("").is_none());
    }

    #[test]
    fn form_matches_the_spec_example() {
        let s = spec(PathBuf::from("/x/.credentials.json"), Flavor::Anthropic);
        assert_eq!(
            token_form(&s, "r").unwrap(),
            "grant_type=refresh_token&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e&refresh_token=r"
        );
        let mut g = spec(PathBuf::from("/x/oauth_creds.json"), Flavor::Google);
        assert!(token_form(&g, "r").is_err(), "google needs a secret");
        g.client_secret = Some(Secret::new("s e/c"));
        assert_eq!(
            token_form(&g, "1//r+").unwrap(),
            "grant_type=refresh_token&client_id=cid&client_secret=s%20e%2Fc&refresh_token=1%2F%2Fr%2B"
        );
    }

    #[test]
    fn a_broken_credentials_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anthropic.json");
        let s = spec(path.clone(), Flavor::Anthropic);
        let missing = read(&s).unwrap_err().to_string();
        assert!(missing.contains("anthropic.json"), "{missing}");
        std::fs::write(&path, "{not json").unwrap();
        let bad = read(&s).unwrap_err().to_string();
        assert!(
            bad.contains("anthropic.json") && bad.contains("not valid JSON"),
            "{bad}"
        );
        // Valid JSON without the fields: nothing usable, and nothing to refresh with.
        std::fs::write(&path, r#"{"other": 1}"#).unwrap();
        let f = read(&s).unwrap();
        assert_eq!(f.remaining_ms(now_ms()), None);
        assert!(f.access_token().is_none());
    }

    #[test]
    fn expiry_margin_is_sixty_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anthropic.json");
        let s = spec(path.clone(), Flavor::Anthropic);
        let now = now_ms();
        for (left_s, usable) in [(59, false), (61, true)] {
            std::fs::write(
                &path,
                serde_json::json!({"access_token": "a", "refresh_token": "r", "expires_at": now + left_s * 1000})
                    .to_string(),
            )
            .unwrap();
            let f = read(&s).unwrap();
            assert_eq!(f.usable(now_ms()).is_some(), usable, "{left_s}s left");
        }
    }
}
