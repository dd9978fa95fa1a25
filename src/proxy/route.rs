//! Routing (spec §4.3): which upstream a request goes to, decided per attempt in `upstream_peer`.
//!
//! Order: `inspector.transforms` rules first (`match_host` / `match_path` / `match_model`, regex
//! search, first match wins), then the provider named by a sentinel key (set by
//! `forward_oauth`), else `501`. A provider route is a redirect when the client's API format
//! (detected from the path) is served natively by the provider, a translation when it is a
//! generation endpoint of another format, and a plain forward (credential injected, path kept
//! under the provider's base) when the path is no known API at all: embeddings, files, batches,
//! model lookups and whatever a provider ships next need no translation. Only a known
//! non-generation endpoint of another format (a Gemini `countTokens` sent to an Anthropic
//! provider, say) is refused with `501`. This module only decides; it performs no I/O.

use super::error::GatewayError;
use super::ingress::Ingress;
use crate::config::file::RuleAction;
use crate::config::{Config, Destination, Provider, Rule};
use crate::hooks::{Body, RequestMeta};
use crate::translate::Format;
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
    pub dest: Destination,
    /// Upstream path with query; `None` keeps the client's.
    pub path: Option<String>,
    /// Index of the rule that matched, if a rule routed the request.
    pub rule: Option<usize>,
    /// Set for `transform`: the client's format and the provider's.
    pub translation: Option<Translation>,
}

impl Route {
    /// Label for metrics and logs: provider name, or the destination host.
    pub fn label(&self) -> &str {
        self.provider
            .as_ref()
            .map_or(&*self.dest.host, |p| &*p.name)
    }
}

/// A translated route: requests go from `client` to `provider`, responses back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    pub client: Format,
    pub provider: Format,
    /// A rule's `dest_model`: the model the translated request asks for.
    pub model: Option<String>,
}

impl Translation {
    /// Same format on both sides (a `transform` rule to a provider of the client's format):
    /// only `dest_model` changes the body; responses pass through.
    pub fn is_identity(&self) -> bool {
        self.client == self.provider
    }
}

/// The upstream path of a translated request: the provider's path template, or the standard
/// endpoint of its format.
fn transform_path(p: &Provider, model: Option<&str>, action: Option<&str>) -> String {
    match &p.path {
        Some(t) => fill_template(t, model, action),
        None => match p.family {
            Format::Anthropic => "/v1/messages".to_owned(),
            Format::Gemini => format!("/v1beta/models/{}:generateContent", model.unwrap_or("")),
            Format::OpenAi | Format::Responses => "/v1/chat/completions".to_owned(),
        },
    }
}

/// A `transform` route to `p`, or 501 when the endpoint has no translation.
fn transform_route(
    p: &Arc<Provider>,
    path: &str,
    client: Format,
    model: Option<&str>,
    action: Option<&str>,
    rule: Option<&Rule>,
) -> Result<Route, GatewayError> {
    // Anthropic `count_tokens` is answered locally for a provider of another format.
    let translatable = is_generation_endpoint(path, client) || is_count_tokens(path, client);
    if client != p.family && !translatable {
        return Err(GatewayError::new(
            501,
            "translation_unavailable",
            format!(
                "translation not available: this gateway translates {} generation requests, not {path}, to the {} API; send it to a {} provider",
                client.as_str(),
                p.family.as_str(),
                client.family().as_str()
            ),
        ));
    }
    Ok(Route {
        action: Action::Transform,
        provider: Some(p.clone()),
        dest: p.dest.clone(),
        path: Some(transform_path(p, model, action)),
        rule: rule.map(|r| r.index),
        translation: Some(Translation {
            client,
            provider: p.family,
            model: rule.and_then(|r| r.dest_model.clone()),
        }),
    })
}

/// `Some(action)` for `…/models/{model}:{action}` where the action is a word (so OpenAI model
/// ids with colons, `ft:gpt-4o:org::id`, are not mistaken for one).
fn gemini_model_action(rest: &str) -> Option<&str> {
    let (model, action) = rest.split_once(':')?;
    let ok = !model.is_empty()
        && !model.contains('/')
        && !action.is_empty()
        && action.bytes().all(|b| b.is_ascii_alphabetic());
    ok.then_some(action)
}

/// API format of a request path (query excluded), per spec §4.3, plus Gemini's `v1` (the
/// google-genai default) and OpenAI Responses.
pub fn detect_format(path: &str) -> Option<Format> {
    if endpoint_rest(path, "/v1/chat/completions").is_some() {
        return Some(Format::OpenAi);
    }
    if endpoint_rest(path, "/v1/responses").is_some() {
        return Some(Format::Responses);
    }
    let p = path.strip_prefix("/anthropic").unwrap_or(path);
    if endpoint_rest(p, "/v1/messages").is_some() {
        return Some(Format::Anthropic);
    }
    if path.starts_with("/v1internal:") {
        return Some(Format::Gemini);
    }
    // Vertex: /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{action}
    if let Some(i) = path.find("/publishers/google/models/") {
        if gemini_model_action(&path[i + "/publishers/google/models/".len()..]).is_some() {
            return Some(Format::Gemini);
        }
    }
    let p = path.strip_prefix("/gemini").unwrap_or(path);
    for base in ["/v1beta/models/", "/v1alpha/models/", "/v1/models/"] {
        if let Some(rest) = p.strip_prefix(base) {
            if gemini_model_action(rest).is_some() {
                return Some(Format::Gemini);
            }
        }
    }
    None
}

/// Whether `path` is the generation endpoint of `format` (what translation handles): Messages,
/// Chat Completions, Responses, or Gemini's `generateContent` / `streamGenerateContent`.
pub fn is_generation_endpoint(path: &str, format: Format) -> bool {
    match format {
        Format::Anthropic => path.strip_prefix("/anthropic").unwrap_or(path) == "/v1/messages",
        Format::OpenAi => path == "/v1/chat/completions",
        Format::Responses => path == "/v1/responses",
        Format::Gemini => matches!(
            path_action(path),
            Some("generateContent" | "streamGenerateContent")
        ),
    }
}

/// Anthropic's token-counting endpoint (`[/anthropic]/v1/messages/count_tokens`).
pub fn is_count_tokens(path: &str, format: Format) -> bool {
    format == Format::Anthropic
        && path.strip_prefix("/anthropic").unwrap_or(path) == "/v1/messages/count_tokens"
}

/// `Some(rest)` when `path` is `base` or `base/…` (rest includes the leading `/`).
fn endpoint_rest<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The part of the client path below its API endpoint (`/count_tokens` of
/// `/v1/messages/count_tokens`), kept when a provider path template replaces the endpoint.
fn endpoint_suffix(path: &str, format: Option<Format>) -> &str {
    match format {
        Some(Format::OpenAi) => endpoint_rest(path, "/v1/chat/completions").unwrap_or(""),
        Some(Format::Anthropic) => {
            let p = path.strip_prefix("/anthropic").unwrap_or(path);
            endpoint_rest(p, "/v1/messages").unwrap_or("")
        }
        _ => "",
    }
}

/// The path prefix a provider's API lives under, from its path template: what comes before the
/// endpoint of its format (`/anthropic` of `/anthropic/v1/messages`, `/api/paas/v4` of
/// `/api/paas/v4/chat/completions`). `None` when the template names no known endpoint.
fn provider_base(template: &str, family: Format) -> Option<&str> {
    let marker = match family {
        Format::Anthropic => "/v1/messages",
        Format::OpenAi | Format::Responses => "/chat/completions",
        Format::Gemini => {
            return ["/v1beta/", "/v1alpha/", "/v1/", "/v1internal"]
                .iter()
                .find_map(|m| template.find(m))
                .map(|i| &template[..i]);
        }
    };
    template.find(marker).map(|i| &template[..i])
}

/// Upstream path of a request in no known API format, sent to `p`: the client's path under the
/// provider's base (`/v1/files` → `/anthropic/v1/files` for a provider at
/// `/anthropic/v1/messages`; `/v1/embeddings` → `/api/paas/v4/embeddings` for one at
/// `/api/paas/v4/chat/completions`), or the client's path when the provider has no template.
fn forward_path(p: &Provider, path: &str, req: &RequestHeader) -> Option<String> {
    let template = p.path.as_deref()?;
    let base = provider_base(template, p.family)?;
    let rest = match p.family {
        Format::Anthropic => path.strip_prefix("/anthropic").unwrap_or(path),
        Format::Gemini => path.strip_prefix("/gemini").unwrap_or(path),
        // An OpenAI base already ends in its version (`/v1`, `/api/paas/v4`).
        Format::OpenAi | Format::Responses => endpoint_rest(path, "/v1").unwrap_or(path),
    };
    Some(with_query(format!("{base}{rest}"), req))
}

/// Model the request is for: `body.model`, else `/models/{model}` in the path.
pub fn routing_model<'a>(body: &Body, path: &'a str) -> Option<Cow<'a, str>> {
    if let Some(m) = body.str_field("model") {
        return Some(Cow::Owned(m));
    }
    path_model_span(path).map(|r| Cow::Borrowed(&path[r]))
}

pub use crate::translate::gemini::{path_action, path_model_span};

/// Fill `{model}` and `{action}` (missing → empty).
pub fn fill_template(t: &str, model: Option<&str>, action: Option<&str>) -> String {
    t.replace("{model}", model.unwrap_or(""))
        .replace("{action}", action.unwrap_or(""))
}

fn host_candidates(req: &RequestHeader) -> impl Iterator<Item = &str> {
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
    ingress: Ingress,
) -> Result<Route, GatewayError> {
    if let Some(rule) = cfg.rules.iter().find(|r| rule_matches(r, req, body)) {
        if rule.action == RuleAction::Passthrough && ingress.has_original_host() {
            return original_route(req, ingress, Some(rule.index));
        }
        return rule_route(cfg, rule, req, body, meta);
    }
    let Some(name) = &meta.sentinel_provider else {
        if ingress.has_original_host() {
            return original_route(req, ingress, None);
        }
        return Err(GatewayError::no_route());
    };
    let Some(p) = cfg.providers.get(&**name) else {
        return Err(GatewayError::unknown_provider(name));
    };
    let path = req.uri.path();
    let format = meta.client_format;
    // The model and action are looked up only when something needs them (a translation or a
    // path template).
    let model = || routing_model(body, path);
    let route_path = match format {
        Some(f) if f.family() != p.family => {
            return transform_route(p, path, f, model().as_deref(), path_action(path), None)
        }
        Some(f) => p.path.as_ref().map(|t| {
            with_query(
                fill_template(t, model().as_deref(), path_action(path))
                    + endpoint_suffix(path, Some(f)),
                req,
            )
        }),
        // Not an API the gateway knows: forwarded as is, under the provider's base.
        None => forward_path(p, path, req),
    };
    Ok(Route {
        action: Action::Redirect,
        provider: Some(p.clone()),
        dest: p.dest.clone(),
        path: route_path,
        rule: None,
        translation: None,
    })
}

/// An intercepted request going on to the host it named (`Host`, or the absolute URI), over
/// HTTPS with normal verification and the client's own credentials.
fn original_route(
    req: &RequestHeader,
    ingress: Ingress,
    rule: Option<usize>,
) -> Result<Route, GatewayError> {
    let authority = req
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            GatewayError::new(
                400,
                "bad_request",
                "an intercepted request without a Host header",
            )
        })?;
    let scheme = match ingress {
        Ingress::ProxyHttp => crate::config::file::Scheme::Http,
        _ => crate::config::file::Scheme::Https,
    };
    let dest = crate::config::Destination::parse(scheme, &authority).ok_or_else(|| {
        GatewayError::new(400, "bad_request", format!("{authority:?} is not a host"))
    })?;
    Ok(Route {
        action: Action::Passthrough,
        provider: None,
        dest,
        path: None,
        rule,
        translation: None,
    })
}

fn rule_route(
    cfg: &Config,
    rule: &Rule,
    req: &RequestHeader,
    body: &Body,
    meta: &RequestMeta,
) -> Result<Route, GatewayError> {
    let path = req.uri.path();
    let original = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let at = || format!("inspector.transforms[{}]", rule.index);
    let model = routing_model(body, path);
    let model = rule.dest_model.as_deref().or(model.as_deref());
    let action = path_action(path);
    let bound = rule
        .dest_provider
        .as_ref()
        .and_then(|p| cfg.providers.get(p));
    match rule.action {
        RuleAction::Passthrough => Err(GatewayError::no_destination(format!(
            "{} passes the request through, but the reverse listener has no original destination (path={original})",
            at()
        ))),
        RuleAction::Transform => match (bound, meta.client_format) {
            (Some(p), Some(client)) => transform_route(p, path, client, model, action, Some(rule)),
            (Some(_), None) => Err(GatewayError::new(
                501,
                "translation_unavailable",
                format!(
                    "translation not available: {} transforms {path}, which is no API format this gateway knows",
                    at()
                ),
            )),
            (None, _) => Err(GatewayError::no_destination(format!(
                "{} is a transform without dest_provider (path={original})",
                at()
            ))),
        },
        RuleAction::Redirect => {
            let dest = match (&rule.dest_host, bound) {
                (Some(d), _) => d.clone(),
                (None, Some(b)) => b.dest.clone(),
                (None, None) => {
                    return Err(GatewayError::no_destination(format!(
                        "{} has neither dest_host nor dest_provider (path={original})",
                        at()
                    )))
                }
            };
            let path = if let Some(t) = &rule.dest_path {
                Some(with_query(fill_template(t, model, action), req))
            } else {
                bound.and_then(|b| b.path.as_deref()).map(|t| {
                    let suffix = endpoint_suffix(path, meta.client_format);
                    with_query(fill_template(t, model, action) + suffix, req)
                })
            };
            Ok(Route {
                action: Action::Redirect,
                provider: bound.cloned(),
                dest,
                path,
                rule: Some(rule.index),
                translation: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn formats_from_path() {
        use Format::*;
        assert_eq!(detect_format("/v1/chat/completions"), Some(OpenAi));
        assert_eq!(detect_format("/v1/chat/completionsX"), None);
        assert_eq!(detect_format("/v1/responses"), Some(Responses));
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
    fn google_genai_v1_paths_are_gemini_and_openai_model_ids_are_not() {
        use Format::*;
        // google-genai 3.x defaults to api_version="v1".
        assert_eq!(
            detect_format("/v1/models/gemini-2.5-flash:generateContent"),
            Some(Gemini)
        );
        assert_eq!(
            detect_format("/gemini/v1/models/gemini-2.5-flash:streamGenerateContent"),
            Some(Gemini)
        );
        assert_eq!(detect_format("/v1/models/gemini-2.5-flash"), None);
        // OpenAI fine-tuned model ids contain colons; a model lookup is not Gemini.
        assert_eq!(
            detect_format("/v1/models/ft:gpt-4o-mini:acme::abc123"),
            None
        );
        assert_eq!(detect_format("/v1/models/:generateContent"), None);
    }

    #[test]
    fn only_generation_endpoints_translate() {
        assert!(is_generation_endpoint("/v1/messages", Format::Anthropic));
        assert!(!is_generation_endpoint(
            "/v1/messages/batches",
            Format::Anthropic
        ));
        assert!(is_generation_endpoint(
            "/v1/models/g:streamGenerateContent",
            Format::Gemini
        ));
        assert!(!is_generation_endpoint(
            "/v1beta/models/g:countTokens",
            Format::Gemini
        ));
        assert!(is_generation_endpoint("/v1/responses", Format::Responses));
    }

    #[test]
    fn provider_base_and_forward_paths() {
        assert_eq!(
            provider_base("/anthropic/v1/messages", Format::Anthropic),
            Some("/anthropic")
        );
        assert_eq!(provider_base("/v1/messages", Format::Anthropic), Some(""));
        assert_eq!(
            provider_base("/api/paas/v4/chat/completions", Format::OpenAi),
            Some("/api/paas/v4")
        );
        assert_eq!(
            provider_base("/v1internal:{action}", Format::Gemini),
            Some("")
        );
        assert_eq!(provider_base("/custom", Format::Anthropic), None);
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
            endpoint_suffix("/v1/messages/count_tokens", Some(Format::Anthropic)),
            "/count_tokens"
        );
        assert_eq!(endpoint_suffix("/v1/messages", Some(Format::Anthropic)), "");
    }

    #[test]
    fn port_is_stripped_from_hosts() {
        assert_eq!(strip_port("a.b:4000"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
