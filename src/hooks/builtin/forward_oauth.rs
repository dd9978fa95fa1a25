//! `forward_oauth` (inbound): swaps a sentinel key for the provider's real credential.
//!
//! The sentinel `sk-ant-oat-ccproxy-{name}` is looked for in `x-api-key`, `x-goog-api-key`, then
//! `authorization` (after a case-insensitive `Bearer `). Found: the credential of
//! `providers.{name}` goes in its `auth.header` (raw) or `Authorization: Bearer`, and the other
//! auth headers are removed. An unknown provider or a failing credential source is fatal: the
//! sentinel must never leave the gateway.

use crate::config::file::ApiFamily;
use crate::config::Provider;
use crate::creds::Secret;
use crate::hooks::registry::{no_params, HookSpec};
use crate::hooks::{Hook, HookContext, HookError, Stage};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use pingora_http::RequestHeader;
use std::sync::Arc;

/// Prefix of a sentinel key; the rest names the provider.
pub const SENTINEL_PREFIX: &str = "sk-ant-oat-ccproxy-";

/// Anthropic OAuth (subscription) access tokens start with this.
pub const ANTHROPIC_OAUTH_TOKEN_PREFIX: &str = "sk-ant-oat";

/// Google OAuth access tokens start with this; anything else for Gemini is an API key.
pub const GOOGLE_OAUTH_TOKEN_PREFIX: &str = "ya29.";

/// The beta Anthropic requires for OAuth access tokens sent as `Authorization: Bearer`.
pub const ANTHROPIC_OAUTH_BETA: &str = "oauth-2025-04-20";

/// Headers that may carry a client API key, in lookup order.
pub const AUTH_HEADERS: [&str; 3] = ["x-api-key", "x-goog-api-key", "authorization"];

pub const SPEC: HookSpec = HookSpec {
    name: "forward_oauth",
    stage: Stage::Inbound,
    reads: &["authorization", "x-api-key", "x-goog-api-key"],
    writes: &["authorization", "x-api-key", "x-goog-api-key"],
    summary: "replace a sentinel key with the named provider's credential",
    build: |p| {
        no_params(p)?;
        Ok(Arc::new(ForwardOauth))
    },
};

struct ForwardOauth;

/// The provider named by a sentinel key in the request's auth headers, if any.
pub fn sentinel_provider(headers: &RequestHeader) -> Option<&str> {
    AUTH_HEADERS.iter().find_map(|h| {
        let v = headers.headers.get(*h)?.to_str().ok()?.trim();
        let v = if *h == "authorization" {
            strip_bearer(v)?
        } else {
            v
        };
        v.strip_prefix(SENTINEL_PREFIX).filter(|n| !n.is_empty())
    })
}

fn strip_bearer(v: &str) -> Option<&str> {
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("bearer ").then(|| rest.trim())
}

/// Put `secret` in the provider's credential header and remove the other auth headers.
pub fn inject_credential(
    headers: &mut RequestHeader,
    target: Option<&HeaderName>,
    secret: &Secret,
) -> Result<(), HookError> {
    let (name, value) = match target {
        Some(h) => (h.clone(), secret.expose().to_owned()),
        None => (AUTHORIZATION, format!("Bearer {}", secret.expose())),
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| HookError::fatal(502, "provider credential is not a valid header value"))?;
    value.set_sensitive(true);
    for h in AUTH_HEADERS {
        if h != name.as_str() {
            headers.remove_header(h);
        }
    }
    headers
        .insert_header(name, value)
        .map_err(|e| HookError::fatal(500, format!("cannot set credential header: {e}")))?;
    Ok(())
}

/// Add `beta` to the comma-separated `anthropic-beta` header unless present.
pub fn ensure_beta(headers: &mut RequestHeader, beta: &str) -> Result<(), HookError> {
    let current = headers
        .headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_owned();
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
        .map_err(|e| HookError::soft(format!("cannot set anthropic-beta: {e}")))?;
    Ok(())
}

/// Resolve `provider`'s credential and inject it; without `auth` just drop the client's keys.
/// An Anthropic OAuth token sent as Bearer also gets the `oauth-2025-04-20` beta, which the API
/// requires for subscription tokens (the original got it from captured shapes). For Gemini
/// without `auth.header`, `ya29.` tokens go as Bearer and API keys in `x-goog-api-key`.
pub async fn authorize(headers: &mut RequestHeader, provider: &Provider) -> Result<(), HookError> {
    match &provider.auth {
        Some(src) => {
            let secret = src.resolve().await.map_err(|e| {
                HookError::fatal_with_detail(
                    502,
                    format!(
                        "could not resolve the credential of provider '{}' ({}); see the ccproxy log",
                        provider.name,
                        e.summary()
                    ),
                    format!(
                        "could not resolve the credential of provider '{}': {e}",
                        provider.name
                    ),
                )
            })?;
            // Gemini: OAuth access tokens (`ya29.…`) go as Bearer, API keys in x-goog-api-key
            // (the header form of `?key=`), unless auth.header says otherwise.
            let goog = HeaderName::from_static("x-goog-api-key");
            let target = match src.header() {
                None if provider.family == ApiFamily::Gemini
                    && !secret.expose().starts_with(GOOGLE_OAUTH_TOKEN_PREFIX) =>
                {
                    Some(&goog)
                }
                h => h,
            };
            inject_credential(headers, target, &secret)?;
            if provider.family == ApiFamily::Anthropic
                && src.header().is_none()
                && secret.expose().starts_with(ANTHROPIC_OAUTH_TOKEN_PREFIX)
            {
                ensure_beta(headers, ANTHROPIC_OAUTH_BETA)?;
            }
            Ok(())
        }
        None => {
            for h in AUTH_HEADERS {
                headers.remove_header(h);
            }
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Hook for ForwardOauth {
    fn guard(&self, cx: &HookContext<'_>) -> bool {
        AUTH_HEADERS
            .iter()
            .chain(std::iter::once(&"api-key"))
            .any(|h| cx.header(h).is_some_and(|v| !v.is_empty()))
    }

    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError> {
        let Some(name) = sentinel_provider(cx.headers).map(str::to_owned) else {
            return Ok(());
        };
        let Some(provider) = cx.providers.get(&name).cloned() else {
            return Err(HookError::fatal(
                501,
                format!(
                    "sentinel key names provider '{name}' but there is no providers.{name} entry in ccproxy.yaml"
                ),
            ));
        };
        authorize(cx.headers, &provider).await?;
        cx.meta.sentinel_provider = Some(name);
        cx.meta.oauth_injected = provider.auth.is_some();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bearer_injection_removes_other_keys() {
        let mut r = req(&[
            ("x-api-key", "sk-ant-oat-ccproxy-a"),
            ("x-goog-api-key", "g"),
        ]);
        inject_credential(&mut r, None, &Secret::new("tok123")).unwrap();
        assert_eq!(r.headers["authorization"], "Bearer tok123");
        assert!(r.headers.get("x-api-key").is_none());
        assert!(r.headers.get("x-goog-api-key").is_none());
    }

    #[test]
    fn ensure_beta_appends_once() {
        let mut r = req(&[("anthropic-beta", "foo")]);
        ensure_beta(&mut r, ANTHROPIC_OAUTH_BETA).unwrap();
        ensure_beta(&mut r, ANTHROPIC_OAUTH_BETA).unwrap();
        assert_eq!(r.headers["anthropic-beta"], "foo,oauth-2025-04-20");
        let mut r = req(&[]);
        ensure_beta(&mut r, ANTHROPIC_OAUTH_BETA).unwrap();
        assert_eq!(r.headers["anthropic-beta"], "oauth-2025-04-20");
    }

    #[test]
    fn custom_header_injection_is_raw() {
        let mut r = req(&[("authorization", "Bearer sk-ant-oat-ccproxy-a")]);
        let h = HeaderName::from_static("x-api-key");
        inject_credential(&mut r, Some(&h), &Secret::new("tok123")).unwrap();
        assert_eq!(r.headers["x-api-key"], "tok123");
        assert!(r.headers.get("authorization").is_none());
    }
}
