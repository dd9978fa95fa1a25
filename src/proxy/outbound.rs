//! The outbound stage: one upstream attempt, from choosing the peer to the bytes on the wire.
//!
//! - `upstream_peer` ([`Gateway::begin_attempt`]): a new [`Attempt`] from the frozen client
//!   request: route ([`route::resolve`]), the provider's credential (resolved per attempt, so a
//!   retry picks up a refreshed one), the address and the peer.
//! - `upstream_request_filter` ([`Gateway::outbound`]): path and `Host`; the credential injected
//!   into this attempt's copy of the headers (the client's headers are never rewritten);
//!   translation; the `outbound` hooks; `Content-Length` for the buffered body; `x-ccproxy-*`
//!   stripped; a sentinel key never leaves (502).
//! - `request_body_filter` ([`body`]): the attempt's bytes when they are not the client's.
//! - `error_while_proxy` / `fail_to_connect` ([`Gateway::may_retry`]): whether Pingora may make
//!   another attempt (it calls `upstream_peer` again, which rebuilds everything above).

use super::attempt::{Attempt, ResponseMode, TranslationState};
use super::ctx::RequestCtx;
use super::error::GatewayError;
use super::route::{self, Translation};
use super::{upstream, Gateway, ANTHROPIC_VERSION, INTERNAL_HEADER_PREFIX};
use crate::creds;
use crate::hooks::{Body, Stage};
use crate::translate::{self, Format};
use bytes::Bytes;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Instant;

impl Gateway {
    /// `upstream_peer`: start attempt `n` (route, credential, peer).
    pub(super) async fn begin_attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.capacity_wait(ctx).await;
        ctx.attempts += 1;
        let n = ctx.attempts;
        // Every attempt sends the whole client body (the replay session hands it over once per
        // attempt).
        if let Some(hold) = &ctx.hold {
            super::replay::rearm(hold);
        }
        let route = route::resolve(
            self.config(),
            session.req_header(),
            &ctx.client.body,
            &ctx.client.meta,
            self.ingress,
        )
        .map_err(|e| self.reject(ctx, e))?;
        let route = Arc::new(route);
        let credential = match route
            .provider
            .as_ref()
            .and_then(|p| self.shared.creds.get(&p.name).map(|s| (p, s)))
        {
            Some((p, source)) => match source.resolve().await {
                Ok(secret) => Some(secret),
                Err(e) => {
                    tracing::warn!(
                        request_id = %ctx.client.meta.request_id,
                        provider = %p.name,
                        error = %e,
                        "could not resolve the provider credential"
                    );
                    // The client learns the provider and a summary; command output and file
                    // paths stay in the log.
                    let message = format!(
                        "could not resolve the credential of provider '{}' ({}); see the ccproxy log",
                        p.name,
                        e.summary()
                    );
                    return Err(self.reject(ctx, GatewayError::new(502, "credential", message)));
                }
            },
            None => None,
        };
        let addr = self
            .shared
            .resolver
            .lookup(&route.dest.host, route.dest.port)
            .await
            .map_err(|e| self.reject(ctx, e))?;
        if let Some(e) = self.shared.own_listeners.loop_error(self.ingress, addr) {
            return Err(self.reject(ctx, e));
        }
        // A browser profile: Pingora connects to the profile's bridge instead.
        let addr = match route.provider.as_ref().and_then(|p| p.fingerprint.clone()) {
            Some(profiled) => profiled
                .prepare(addr)
                .await
                .map_err(|e| self.reject(ctx, GatewayError::new(502, "upstream_tls", e)))?,
            None => addr,
        };
        let peer = upstream::peer(
            &route,
            addr,
            &self.config().timeouts,
            self.config().trust.as_ref(),
            ctx.client.body.raw().len(),
            session.req_header().version == http::Version::HTTP_2,
        );
        ctx.client.meta.routed_provider = route.provider.as_ref().map(|p| p.name.clone());
        let mut attempt = Attempt::new(n, route, credential, ctx.client.body.fork());
        attempt.peer_chosen = Some(Instant::now());
        ctx.attempt = Some(attempt);
        Ok(peer)
    }

    /// Gemini context caching for a translated Anthropic request ([`crate::gemini_cache`]):
    /// any failure leaves the request as it is.
    async fn context_cache(&self, ctx: &mut RequestCtx) {
        static MARKER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new("cache_control"));
        if !ctx.client.body.may_contain(&MARKER)
            || !crate::gemini_cache::may_qualify(
                ctx.client.body.field_raw("system"),
                ctx.client.body.field_raw("messages"),
            )
        {
            return;
        }
        let Some(attempt) = ctx.attempt.as_mut() else {
            return;
        };
        let Some(provider) = attempt.route.provider.clone() else {
            return;
        };
        if crate::code_assist::is_code_assist(&provider) {
            // Code Assist has no cachedContents.
            return;
        }
        let (Some(credential), Some(model)) = (
            attempt.credential.clone(),
            attempt.translation.as_ref().map(|t| t.model.clone()),
        ) else {
            return;
        };
        let Some(client) = ctx.client.body.json() else {
            return;
        };
        let Some(plan) = attempt
            .body
            .json()
            .and_then(|t| crate::gemini_cache::plan(client, t, &model))
        else {
            return;
        };
        let base = format!(
            "{}://{}",
            provider.dest.scheme.as_str(),
            provider.dest.authority
        );
        let trust = provider.trust.as_deref().or(self.config().trust.as_deref());
        let header = provider.auth.as_ref().and_then(|a| a.header.as_ref());
        let auth = match creds::auth_headers(Format::Gemini, header, &credential) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(request_id = %ctx.client.meta.request_id, error = %e, "Gemini context caching skipped");
                return;
            }
        };
        match crate::gemini_cache::find_or_create(&base, &auth, &plan, trust).await {
            Ok(name) => {
                if let Some(t) = attempt.body.json_mut() {
                    crate::gemini_cache::apply(t, &plan, &name);
                }
                tracing::debug!(request_id = %ctx.client.meta.request_id, cache = name, "Gemini context cache used");
            }
            Err(e) => {
                tracing::warn!(request_id = %ctx.client.meta.request_id, error = %e, "Gemini context caching failed; sending the request uncached");
            }
        }
    }

    /// `upstream_request_filter`: fit the attempt's request for its destination.
    pub(super) async fn outbound(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.attempt.as_ref().map(|a| a.route.clone()) else {
            return Err(self.reject(
                ctx,
                GatewayError::new(500, "internal", "request reached upstream without a route"),
            ));
        };
        if let Some(path) = &route.path {
            let uri = path.parse::<http::Uri>().map_err(|e| {
                self.reject(
                    ctx,
                    GatewayError::new(
                        502,
                        "bad_destination",
                        format!("upstream path {path:?} is not valid: {e}"),
                    ),
                )
            })?;
            upstream_request.set_uri(uri);
        } else if !matches!(upstream_request.raw_path().first(), Some(b'/' | b'*')) {
            // An absolute-form target (`GET http://host/path`, an HTTP/1 client through the
            // proxy listener), which Pingora keeps verbatim beside a URI holding its path, goes
            // to the origin in origin-form (RFC 9112 §3.2.1); `Host` names the destination.
            let origin_form = upstream_request.uri.clone();
            upstream_request.set_uri(origin_form);
        }
        upstream_request.insert_header(http::header::HOST, route.dest.host_header.clone())?;
        self.authorize(upstream_request, ctx, &route)?;

        if let Some(tr) = &route.translation {
            self.translate_request(upstream_request, ctx, tr)?;
            if tr.client == Format::Anthropic && tr.provider == Format::Gemini {
                self.context_cache(ctx).await;
            }
        }

        // Set again by `gemini_cli` if this attempt goes to Code Assist.
        ctx.client.meta.code_assist = None;
        self.run_hooks(Stage::Outbound, upstream_request, ctx)
            .await?;

        let wire = self.wire_body(ctx);
        if ctx.replay.is_some() || wire.is_some() {
            let len = match &wire {
                Some(w) => w.len(),
                None => ctx.client.body.raw().len(),
            };
            set_content_length(upstream_request, len)?;
        }

        strip_internal_headers(upstream_request);
        if creds::carries_sentinel(upstream_request) {
            return Err(self.reject(
                ctx,
                GatewayError::new(
                    502,
                    "sentinel_leak",
                    "refusing to forward a ccproxy sentinel key upstream; is forward_oauth disabled for this request?",
                ),
            ));
        }
        let Some(attempt) = ctx.attempt.as_mut() else {
            return Ok(());
        };
        if let Some(w) = &wire {
            // The bytes are final: drop the JSON tree they were made from (it would otherwise
            // live as long as the response stream).
            attempt.body = Body::new(w.clone());
        }
        attempt.wire = wire;
        if let Some(flow) = ctx.flow.as_mut() {
            let bytes = attempt.wire.as_ref().unwrap_or(ctx.client.body.raw());
            let dest = &attempt.route.dest;
            let origin = format!("{}://{}", dest.scheme.as_str(), dest.authority);
            flow.upstream_request(attempt.n, &origin, upstream_request, bytes);
        }
        attempt.upstream_sent = Some(Instant::now());
        Ok(())
    }

    /// Put the attempt's credential on the request: the provider's (or none, removing the
    /// client's keys, when it has no `auth`); for a destination without a provider only a
    /// sentinel the client sent is removed (its real keys go through).
    fn authorize(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
        route: &route::Route,
    ) -> Result<()> {
        let Some(p) = &route.provider else {
            if ctx.client.meta.sentinel_provider.is_some() {
                creds::strip_sentinels(req);
            }
            return Ok(());
        };
        let secret = ctx.attempt.as_ref().and_then(|a| a.credential.clone());
        match (&p.auth, secret) {
            (Some(spec), Some(secret)) => {
                creds::inject(req, p.family, spec.header.as_ref(), &secret).map_err(|e| {
                    self.reject(
                        ctx,
                        GatewayError::new(
                            502,
                            "credential",
                            format!("cannot use the credential of provider '{}': {e}", p.name),
                        ),
                    )
                })
            }
            _ => {
                creds::strip_client_keys(req);
                Ok(())
            }
        }
    }

    /// The bytes to send when they are not the replayed client bytes.
    fn wire_body(&self, ctx: &RequestCtx) -> Option<Bytes> {
        let attempt = ctx.attempt.as_ref()?;
        if attempt.body.is_dirty() {
            return Some(attempt.body.to_wire());
        }
        ctx.client.rewritten.then(|| ctx.client.body.raw().clone())
    }

    /// Replace the attempt's body with its translation and fit the headers to the provider.
    fn translate_request(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
        tr: &Translation,
    ) -> Result<()> {
        let client_body_len = ctx.client.body.raw().len();
        let Some(attempt) = ctx.attempt.as_mut() else {
            return Ok(());
        };
        if tr.is_identity() {
            // Same format: only a rule's dest_model changes the body.
            if let (Some(m), Some(Format::OpenAi | Format::Anthropic | Format::Responses)) =
                (&tr.model, Some(tr.provider))
            {
                if let Some(serde_json::Value::Object(o)) = attempt.body.json_mut() {
                    o.insert("model".into(), serde_json::Value::String(m.clone()));
                }
            }
            return Ok(());
        }
        let (from, to) = (tr.client.as_str(), tr.provider.as_str());
        let path_model = route::routing_model(&attempt.body, upstream_request.uri.path())
            .map(|m| m.into_owned());
        let info = translate::RequestInfo {
            model: tr
                .model
                .clone()
                .or(path_model)
                .or_else(|| ctx.client.meta.client_model.clone())
                .unwrap_or_default(),
            path_stream: ctx.client.meta.client_stream_path,
        };
        let translated = match attempt.body.take_json() {
            Some(body) => translate::request(tr.client, tr.provider, body, &info),
            None => Err(translate::Error::NotJson),
        };
        let mut t = match translated {
            Ok(t) => t,
            Err(e) => {
                let err = GatewayError::new(
                    400,
                    "translation",
                    format!("cannot translate this {from} request for a {to} provider: {e}"),
                );
                return Err(self.reject(ctx, err));
            }
        };
        if let (Some(m), Some(o)) = (&tr.model, t.body.as_object_mut()) {
            // A rule's dest_model replaces the client's model (Gemini carries it in the path).
            if tr.provider != Format::Gemini {
                o.insert("model".into(), serde_json::Value::String(m.clone()));
            }
        }
        for p in &t.loss.0 {
            self.shared
                .metrics
                .translation_loss
                .with_label_values(&[from, to, &translate::Loss::label(p)])
                .inc();
        }
        if !t.loss.is_empty() {
            tracing::debug!(request_id = %ctx.client.meta.request_id, from, to, lost = %t.loss.header_value(), "translation dropped fields");
        }
        if tr.provider == Format::Gemini {
            // Gemini names the model and the streaming mode in the path.
            let action = if t.stream {
                "streamGenerateContent"
            } else {
                "generateContent"
            };
            let template = attempt.route.provider.as_ref().and_then(|p| p.path.clone());
            let path = match template {
                Some(tpl) => route::fill_template(&tpl, Some(&info.model), Some(action)),
                None => format!("/v1beta/models/{}:{action}", info.model),
            };
            let path = if t.stream {
                format!("{path}?alt=sse")
            } else {
                path
            };
            match path.parse::<http::Uri>() {
                Ok(uri) => upstream_request.set_uri(uri),
                Err(e) => {
                    let err = GatewayError::new(
                        502,
                        "bad_destination",
                        format!("upstream path {path:?} is not valid: {e}"),
                    );
                    return Err(self.reject(ctx, err));
                }
            }
        }
        attempt.translation = Some(TranslationState {
            route: tr.clone(),
            stream: t.stream,
            model: info.model,
            loss: std::mem::take(&mut t.loss),
            response: ResponseMode::Pending,
        });
        attempt.body = Body::replaced(t.body, client_body_len);
        // The gateway must read the provider's response to translate it.
        upstream_request.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
        upstream_request.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        if tr.provider == Format::Anthropic {
            if !upstream_request.headers.contains_key("anthropic-version") {
                upstream_request.insert_header("anthropic-version", ANTHROPIC_VERSION)?;
            }
        } else {
            for h in [
                "anthropic-version",
                "anthropic-beta",
                "anthropic-dangerous-direct-browser-access",
            ] {
                upstream_request.remove_header(h);
            }
        }
        Ok(())
    }
}

/// `connected_to_upstream`: connect time counts as upstream time, not the gateway's.
pub(super) fn connected(ctx: &mut RequestCtx, reused: bool) {
    if let (false, Some(t)) = (reused, ctx.attempt.as_ref().and_then(|a| a.peer_chosen)) {
        ctx.connect_time += t.elapsed();
    }
}

/// `request_body_filter`: the attempt's bytes replace the replayed client bytes when they
/// differ.
pub(super) fn body(body: &mut Option<Bytes>, ctx: &RequestCtx) {
    if body.is_some() {
        if let Some(w) = ctx.attempt.as_ref().and_then(|a| a.wire.as_ref()) {
            *body = Some(w.clone());
        }
    }
}

/// Frame the buffered body with `Content-Length: len` (no chunking); left alone when the
/// client already sent exactly that.
fn set_content_length(req: &mut RequestHeader, len: usize) -> Result<()> {
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let same = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        == Some(len);
    if chunked {
        req.remove_header(&http::header::TRANSFER_ENCODING);
    }
    if chunked || !same {
        req.insert_header(http::header::CONTENT_LENGTH, len)?;
    }
    Ok(())
}

fn strip_internal_headers(req: &mut RequestHeader) {
    if !req
        .headers
        .keys()
        .any(|k| k.as_str().starts_with(INTERNAL_HEADER_PREFIX))
    {
        return;
    }
    let internal: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with(INTERNAL_HEADER_PREFIX))
        .cloned()
        .collect();
    for k in internal {
        req.remove_header(&k);
    }
}
