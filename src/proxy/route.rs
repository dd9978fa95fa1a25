//! Routing (spec §4.3): which upstream a request goes to, decided in `upstream_peer`.
//!
//! Order: `inspector.transforms` rules first (`match_host` / `match_path` / `match_model`, regex
//! search, first match wins), then the provider named by a sentinel key (set by
//! `forward_oauth`), else `501`. A provider route is a redirect when the client's API format
//! (detected from the path) is the provider's family, else a translation, which answers `501`
//! until translation lands. This module only decides; it performs no I/O.

use super::error::GatewayError;
use crate::config::file::{ApiFamily, RuleAction, Scheme};
use crate::config::{split_authority, Config, Provider, Rule};
use crate::hooks::{Body, RequestMeta};
use crate::translate::{self, Format};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::sync::Arc;

/// What the gateway does with a routed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Redirect,
    Transform,
    Passthrough,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Redirect => "redirect",
            Action::Transform => "transform",
            Action::Passthrough => "passthrough",
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub action: Action,
    /// Provider whose credential / trust applies, if any.
    pub provider: Option<Arc<Provider>>,
    /// Label for metrics and logs: provider name, or the destination host.
    pub label: String,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Value of the upstream `Host` header.
    pub authority: String,
    /// Upstream path with query.
    pub path_and_query: String,
    /// The credential must be injected after routing (rule with `dest_provider`).
    pub inject_credential: bool,
    /// Index of the rule that matched, if a rule routed the request.
    pub rule: Option<usize>,
    /// Set for `transform`: the client's format and the provider's family.
    pub translation: Option<Translation>,
}

/// A translated route: requests go from `client` to `provider`, responses back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    pub client: Format,
    pub provider: ApiFamily,
    /// A rule's `dest_model`: the model the translated request asks for.
    pub model: Option<String>,
}

/// The upstream path of a translated request: the provider's path template, or the standard
/// endpoint of its family.
fn transform_path(p: &Provider, model: Option<&str>, action: Option<&str>) -> String {
    match &p.path {
        Some(t) => fill_template(t, model, action),
        None => match p.family {
            ApiFamily::Anthropic => "/v1/messages".to_owned(),
            ApiFamily::Openai => "/v1/chat/completions".to_owned(),
            ApiFamily::Gemini => format!("/v1beta/models/{}:generateContent", model.unwrap_or("")),
        },
    }
}

/// A `transform` route to `p`, or 501 when the pair cannot be translated.
fn transform_route(
    p: &Arc<Provider>,
    path: &str,
    format: Option<ApiFamily>,
    model: Option<&str>,
    action: Option<&str>,
    rule: Option<&Rule>,
) -> Result<Route, GatewayError> {
    let client = format
        .and_then(|f| Format::for_path(path, f))
        .filter(|c| translate::supported(*c, p.family))
        .ok_or_else(|| GatewayError::translation_unavailable(format, p.family.as_str()))?;
    Ok(Route {
        action: Action::Transform,
        provider: Some(p.clone()),
        label: p.name.clone(),
        scheme: p.scheme,
        host: p.host.clone(),
        port: p.port,
        authority: p.authority.clone(),
        path_and_query: transform_path(p, model, action),
        inject_credential: rule.is_some(),
        rule: rule.map(|r| r.index),
        translation: Some(Translation {
            client,
            provider: p.family,
            model: rule.and_then(|r| r.dest_model.clone()),
        }),
    })
}

/// API format of a request path (query excluded), per spec §4.3.
pub fn detect_format(path: &str) -> Option<ApiFamily> {
    if endpoint_rest(path, "/v1/chat/completions").is_some()
        || endpoint_rest(path, "/v1/responses").is_some()
    {
        return Some(ApiFamily::Openai);
    }
    let p = path.strip_prefix("/anthropic").unwrap_or(path);
    if endpoint_rest(p, "/v1/messages").is_some() {
        return Some(ApiFamily::Anthropic);
    }
    if path.starts_with("/v1internal:") {
        return Some(ApiFamily::Gemini);
    }
    // Vertex: /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{action}
    if let Some(i) = path.find("/publishers/google/models/") {
        let rest = &path[i + "/publishers/google/models/".len()..];
        if rest
            .find(':')
            .is_some_and(|c| c > 0 && !rest[..c].contains('/'))
        {
            return Some(ApiFamily::Gemini);
        }
    }
    let p = path.strip_prefix("/gemini").unwrap_or(path);
    for base in ["/v1beta/models/", "/v1alpha/models/"] {
        if let Some(rest) = p.strip_prefix(base) {
            let name_end = rest.find([':', '/']);
            if let Some(i) = name_end {
                if i > 0 && rest.as_bytes()[i] == b':' {
                    return Some(ApiFamily::Gemini);
                }
            }
        }
    }
    None
}

/// `Some(rest)` when `path` is `base` or `base/…` (rest includes the leading `/`).
fn endpoint_rest<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The part of the client path below its API endpoint (`/count_tokens` of
/// `/v1/messages/count_tokens`), kept when a provider path template replaces the endpoint.
fn endpoint_suffix(path: &str, format: Option<ApiFamily>) -> &str {
    match format {
        Some(ApiFamily::Openai) => endpoint_rest(path, "/v1/chat/completions").unwrap_or(""),
        Some(ApiFamily::Anthropic) => {
            let p = path.strip_prefix("/anthropic").unwrap_or(path);
            endpoint_rest(p, "/v1/messages").unwrap_or("")
        }
        _ => "",
    }
}

/// Model the request is for: `body.model`, else `/models/{model}` in the path.
pub fn routing_model<'a>(body: &Body, path: &'a str) -> Option<Cow<'a, str>> {
    if let Some(m) = body.str_field("model") {
        return Some(Cow::Owned(m));
    }
    let i = path.find("/models/")?;
    let rest = &path[i + "/models/".len()..];
    let end = rest.find([':', '/']).unwrap_or(rest.len());
    (end > 0).then(|| Cow::Borrowed(&rest[..end]))
}

/// Action in a Gemini-style path (`…:generateContent` → `generateContent`).
pub fn path_action(path: &str) -> Option<&str> {
    let (_, a) = path.rsplit_once(':')?;
    (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(a)
}

/// Fill `{model}` and `{action}` (missing → empty).
pub fn fill_template(t: &str, model: Option<&str>, action: Option<&str>) -> String {
    t.replace("{model}", model.unwrap_or(""))
        .replace("{action}", action.unwrap_or(""))
}

fn host_candidates(req: &RequestHeader) -> impl Iterator<Item = &str> {
    let strip = |h: &str| -> String { split_authority(h).map(|(h, _)| h).unwrap_or_default() };
    let _ = strip;
    let from_headers = ["host", "x-forwarded-host"]
        .into_iter()
        .filter_map(|n| req.headers.get(n).and_then(|v| v.to_str().ok()));
    req.uri.host().into_iter().chain(from_headers)
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split(']').next().map_or(h, |s| s.trim_start_matches('['));
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => h,
    }
}

fn rule_matches(rule: &Rule, req: &RequestHeader, body: &Body) -> bool {
    if let Some(re) = &rule.match_host {
        if !host_candidates(req).any(|h| re.is_match(strip_port(h))) {
            return false;
        }
    }
    if let Some(re) = &rule.match_path {
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        if !re.is_match(pq) {
            return false;
        }
    }
    if let Some(re) = &rule.match_model {
        match body.str_field("model") {
            Some(m) if re.is_match(&m) => {}
            _ => return false,
        }
    }
    true
}

fn with_query(path: String, req: &RequestHeader) -> String {
    match req.uri.query() {
        Some(q) if !path.contains('?') => format!("{path}?{q}"),
        _ => path,
    }
}

/// Decide the route for a request. `meta.sentinel_provider` is set by `forward_oauth`.
pub fn resolve(
    cfg: &Config,
    req: &RequestHeader,
    body: &Body,
    meta: &RequestMeta,
) -> Result<Route, GatewayError> {
    let path = req.uri.path();
    let format = meta.client_format;
    let model = routing_model(body, path);
    let model = model.as_deref();
    let action = path_action(path);
    let original = req.uri.path_and_query().map_or("/", |p| p.as_str());

    if let Some(rule) = cfg.rules.iter().find(|r| rule_matches(r, req, body)) {
        let at = format!("inspector.transforms[{}]", rule.index);
        return match rule.action {
            RuleAction::Passthrough => Err(GatewayError::no_destination(format!(
                "{at} passes the request through, but the reverse listener has no original destination (path={original})"
            ))),
            RuleAction::Transform => match rule.dest_provider.as_ref().and_then(|p| cfg.providers.get(p)) {
                Some(p) => transform_route(p, path, format, rule.dest_model.as_deref().or(model), action, Some(rule)),
                None => Err(GatewayError::no_destination(format!(
                    "{at} is a transform without dest_provider (path={original})"
                ))),
            },
            RuleAction::Redirect => {
                let bound = rule.dest_provider.as_ref().and_then(|p| cfg.providers.get(p));
                let model = rule.dest_model.as_deref().or(model);
                let (scheme, host, port, authority) = match (&rule.dest_host, bound) {
                    (Some(h), b) => {
                        let scheme = b.map_or(Scheme::Https, |b| b.scheme);
                        let (host, port) = split_authority(h).ok_or_else(|| {
                            GatewayError::no_destination(format!("{at}.dest_host is not host[:port]"))
                        })?;
                        let port = port.unwrap_or(scheme.default_port());
                        (scheme, host, port, h.clone())
                    }
                    (None, Some(b)) => (b.scheme, b.host.clone(), b.port, b.authority.clone()),
                    (None, None) => {
                        return Err(GatewayError::no_destination(format!(
                            "{at} has neither dest_host nor dest_provider (path={original})"
                        )))
                    }
                };
                let path = if let Some(t) = &rule.dest_path {
                    with_query(fill_template(t, model, action), req)
                } else if let Some(t) = bound.and_then(|b| b.path.as_deref()) {
                    let suffix = endpoint_suffix(path, format);
                    with_query(fill_template(t, model, action) + suffix, req)
                } else {
                    original.to_owned()
                };
                Ok(Route {
                    action: Action::Redirect,
                    provider: bound.cloned(),
                    label: bound.map_or_else(|| host.clone(), |b| b.name.clone()),
                    scheme,
                    host,
                    port,
                    authority,
                    path_and_query: path,
                    inject_credential: bound.is_some(),
                    rule: Some(rule.index),
                    translation: None,
                })
            }
        };
    }

    if let Some(name) = &meta.sentinel_provider {
        let Some(p) = cfg.providers.get(name) else {
            return Err(GatewayError::unknown_provider(name));
        };
        if format != Some(p.family) {
            return transform_route(p, path, format, model, action, None);
        }
        let path = match &p.path {
            Some(t) => with_query(
                fill_template(t, model, action) + endpoint_suffix(path, format),
                req,
            ),
            None => original.to_owned(),
        };
        return Ok(Route {
            action: Action::Redirect,
            provider: Some(p.clone()),
            label: p.name.clone(),
            scheme: p.scheme,
            host: p.host.clone(),
            port: p.port,
            authority: p.authority.clone(),
            path_and_query: path,
            inject_credential: false,
            rule: None,
            translation: None,
        });
    }
    Err(GatewayError::no_route())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn formats_from_path() {
        use ApiFamily::*;
        assert_eq!(detect_format("/v1/chat/completions"), Some(Openai));
        assert_eq!(detect_format("/v1/chat/completionsX"), None);
        assert_eq!(detect_format("/v1/messages"), Some(Anthropic));
        assert_eq!(
            detect_format("/anthropic/v1/messages/count_tokens"),
            Some(Anthropic)
        );
        assert_eq!(
            detect_format("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(Gemini)
        );
        assert_eq!(
            detect_format("/gemini/v1alpha/models/g:streamGenerateContent"),
            Some(Gemini)
        );
        assert_eq!(detect_format("/v1internal:generateContent"), Some(Gemini));
        assert_eq!(detect_format("/v1beta/models/x"), None);
        assert_eq!(
            detect_format("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent"),
            Some(Gemini)
        );
        assert_eq!(detect_format("/v1/models"), None);
    }

    #[test]
    fn model_and_action() {
        let empty = Body::new(Bytes::new());
        let p = "/v1beta/models/gemini-2.5-flash:generateContent";
        assert_eq!(
            routing_model(&empty, p).as_deref(),
            Some("gemini-2.5-flash")
        );
        assert_eq!(path_action(p), Some("generateContent"));
        let b = Body::new(Bytes::from_static(br#"{"model":"m1"}"#));
        assert_eq!(routing_model(&b, p).as_deref(), Some("m1"));
        assert_eq!(path_action("/v1/messages"), None);
        assert_eq!(
            fill_template("/v1internal:{action}/{model}", Some("m"), None),
            "/v1internal:/m"
        );
    }

    #[test]
    fn suffix_below_endpoint_is_kept() {
        assert_eq!(
            endpoint_suffix("/v1/messages/count_tokens", Some(ApiFamily::Anthropic)),
            "/count_tokens"
        );
        assert_eq!(
            endpoint_suffix("/v1/messages", Some(ApiFamily::Anthropic)),
            ""
        );
    }

    #[test]
    fn port_is_stripped_from_hosts() {
        assert_eq!(strip_port("a.b:4000"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
