//! The gateway's Pingora service: one `ProxyHttp` implementation whose phases only delegate.
//!
//! | Pingora phase | what ccproxy does there |
//! |---|---|
//! | `request_filter` | synthetic routes; buffer the body ([`replay`]); run the `inbound` hooks |
//! | `upstream_peer` | resolve the route ([`route`]) and build the peer ([`upstream`]) |
//! | `upstream_request_filter` | rewrite destination, inject rule credentials, translate the body ([`crate::translate`]), run `outbound` hooks, fix framing, strip `x-ccproxy-*` |
//! | `request_body_filter` | send the (possibly rewritten) body |
//! | `upstream_response_filter` | upstream latency |
//! | `upstream_response_body_filter` | last-upstream-byte time (overhead metric) |
//! | `response_filter` / `response_body_filter` | request id; response translation (buffered JSON, SSE event by event) |
//! | `fail_to_proxy` | every error as JSON in the client's API format ([`error`]) |
//! | `logging` | restore the client session for keep-alive; metrics |

pub mod ctx;
pub mod error;
pub mod replay;
pub mod route;
pub mod server;
pub mod synthetic;
pub mod upstream;

use crate::config::file::ApiFamily;
use crate::config::Config;
use crate::hooks::builtin::forward_oauth::{self, AUTH_HEADERS, SENTINEL_PREFIX};
use crate::hooks::{Body, HookContext, HookError, Overrides, Stage, OVERRIDE_HEADER};
use crate::telemetry::metrics::Metrics;
use crate::translate::{self, stream::StreamTranslator};
use async_trait::async_trait;
use bytes::Bytes;
use ctx::RequestCtx;
use ctx::{ResponseMode, TranslationState};
use error::GatewayError;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Response header carrying the gateway's request id.
pub const REQUEST_ID_HEADER: &str = "x-ccproxy-request-id";

/// Response header listing fields a translation could not carry over.
pub const TRANSLATION_LOSS_HEADER: &str = "x-ccproxy-translation-loss";

/// Response header marking a locally estimated token count.
pub const TOKEN_ESTIMATE_HEADER: &str = "x-ccproxy-token-estimate";

/// `anthropic-version` sent on translated requests that have none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Prefix of headers that are internal to ccproxy and never forwarded upstream.
pub const INTERNAL_HEADER_PREFIX: &str = "x-ccproxy-";

/// The gateway service.
pub struct Gateway {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    resolver: upstream::Resolver,
    id_prefix: u32,
    seq: AtomicU64,
}

impl Gateway {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        let id_prefix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32))
            ^ std::process::id();
        Self {
            config,
            metrics,
            resolver: upstream::Resolver::default(),
            id_prefix,
            seq: AtomicU64::new(0),
        }
    }

    fn next_request_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{:08x}", self.id_prefix, n)
    }

    /// Record `err` for `fail_to_proxy` and return the Pingora error that leads there.
    fn fail(&self, ctx: &mut RequestCtx, err: GatewayError) -> Box<pingora::Error> {
        let e = err.to_pingora();
        ctx.error = Some(err);
        e
    }

    fn hook_failed(&self, request_id: &str, hook: &'static str, e: &HookError) {
        self.metrics.hook_errors.with_label_values(&[hook]).inc();
        if e.fatal.is_some() {
            tracing::warn!(request_id, hook, error = %e, "hook failed; request stopped");
        } else {
            tracing::warn!(request_id, hook, error = %e, "hook failed; request continues");
        }
    }

    /// Run one hook stage over `headers` and the request body; a fatal hook error becomes the
    /// client's error.
    async fn run_hooks(
        &self,
        stage: Stage,
        headers: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let request_id = ctx.meta.request_id.clone();
        let mut cx = HookContext {
            headers,
            body: &mut ctx.body,
            meta: &mut ctx.meta,
            providers: &self.config.providers,
        };
        let outcome = self
            .config
            .pipeline
            .run(stage, &mut cx, &ctx.overrides, |hook, e| {
                self.hook_failed(&request_id, hook, e)
            })
            .await;
        outcome.map_err(|f| self.fail(ctx, GatewayError::new(f.status, "hook", f.message)))
    }

    async fn inbound(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        if let Some(s) =
            synthetic::answer(req.method.as_str(), req.uri.path(), &self.config.providers)
        {
            ctx.synthetic = true;
            ctx.status = s.status;
            let head = req.method == http::Method::HEAD;
            respond(session, ctx, s.status, s.content_type, s.body, head).await?;
            return Ok(true);
        }
        ctx.meta.client_format = route::detect_format(req.uri.path());
        if ctx.meta.client_format == Some(ApiFamily::Gemini) {
            let path = req.uri.path();
            ctx.meta.client_model =
                route::routing_model(&Body::default(), path).map(|m| m.into_owned());
            ctx.meta.client_stream_path = route::path_action(path) == Some("streamGenerateContent");
        }
        if let Some(v) = req.headers.get(OVERRIDE_HEADER) {
            ctx.overrides = Overrides::parse(v.to_str().unwrap_or_default());
        }

        if !session.downstream_session.is_body_empty() {
            let limit = self.config.max_request_body_bytes;
            // The gateway reads the body itself, so it answers `Expect: 100-continue` itself
            // (clients such as curl otherwise wait a second before sending a large body); the
            // upstream then gets the complete body without the expectation.
            let expects_continue = session
                .req_header()
                .headers
                .get(http::header::EXPECT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
            if expects_continue {
                session
                    .req_header_mut()
                    .remove_header(&http::header::EXPECT);
                let declared_too_large = session
                    .req_header()
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > limit);
                if !declared_too_large {
                    session.downstream_session.write_continue_response().await?;
                }
            }
            match replay::read_body(&mut session.downstream_session, limit).await? {
                replay::ReadBody::TooLarge => {
                    return Err(self.fail(ctx, GatewayError::body_too_large(limit)))
                }
                replay::ReadBody::Complete(bytes) => {
                    ctx.replay = Some(replay::install(session, bytes.clone()));
                    ctx.body = Body::new(bytes);
                }
            }
        }

        self.run_hooks(Stage::Inbound, session.req_header_mut(), ctx)
            .await?;
        if self.count_tokens_locally(session, ctx).await? {
            return Ok(true);
        }
        Ok(false)
    }

    /// `POST …/v1/messages/count_tokens` for a provider without a counting endpoint (the route
    /// translates): answer with a local estimate, marked `x-ccproxy-token-estimate: local`.
    async fn count_tokens_locally(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let req = session.req_header();
        if ctx.meta.client_format != Some(ApiFamily::Anthropic)
            || !req.uri.path().ends_with("/v1/messages/count_tokens")
        {
            return Ok(false);
        }
        let Ok(r) = route::resolve(&self.config, req, &ctx.body, &ctx.meta) else {
            return Ok(false);
        };
        let r = Arc::new(r);
        // Either way the route is known now; upstream_peer reuses it.
        ctx.route = Some(r.clone());
        if r.translation.is_none() {
            return Ok(false);
        }
        let Some(body) = ctx.body.json() else {
            return Err(self.fail(
                ctx,
                GatewayError::new(400, "bad_request", "count_tokens needs a JSON body"),
            ));
        };
        let n = translate::estimate_input_tokens(body);
        ctx.synthetic = true;
        ctx.status = 200;
        let body = Bytes::from(serde_json::json!({"input_tokens": n}).to_string());
        respond_with(
            session,
            ctx,
            200,
            "application/json",
            body,
            false,
            &[(TOKEN_ESTIMATE_HEADER, "local")],
        )
        .await?;
        Ok(true)
    }

    async fn outbound(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Err(self.fail(
                ctx,
                GatewayError::new(500, "internal", "request reached upstream without a route"),
            ));
        };
        let uri = route.path_and_query.parse::<http::Uri>().map_err(|e| {
            self.fail(
                ctx,
                GatewayError::new(
                    502,
                    "bad_destination",
                    format!("upstream path {:?} is not valid: {e}", route.path_and_query),
                ),
            )
        })?;
        upstream_request.set_uri(uri);
        upstream_request.insert_header(http::header::HOST, route.authority.as_str())?;
        if route.provider.is_none() && ctx.meta.oauth_injected {
            // A rule sent the request to a host no provider owns: the credential resolved for
            // the sentinel's provider must not go there.
            for h in AUTH_HEADERS {
                upstream_request.remove_header(h);
            }
            ctx.meta.oauth_injected = false;
            tracing::debug!(request_id = %ctx.meta.request_id, "dropped provider credential for a rule destination without provider");
        }
        if route.inject_credential {
            if let Some(p) = &route.provider {
                if let Err(e) = forward_oauth::authorize(upstream_request, p).await {
                    let status = e.fatal.as_ref().map_or(502, |f| f.status);
                    return Err(self.fail(ctx, GatewayError::new(status, "credential", e.message)));
                }
                ctx.meta.oauth_injected = p.auth.is_some();
            }
        }

        if let Some(tr) = &route.translation {
            self.translate_request(upstream_request, ctx, tr)?;
        }

        self.run_hooks(Stage::Outbound, upstream_request, ctx)
            .await?;

        if ctx.replay.is_some() {
            let len = if ctx.body.is_dirty() {
                let wire = ctx.body.to_wire().map_err(|e| {
                    self.fail(
                        ctx,
                        GatewayError::new(500, "internal", format!("cannot serialize body: {e}")),
                    )
                })?;
                let len = wire.len();
                ctx.outgoing_body = Some(wire);
                len
            } else {
                ctx.body.raw().len()
            };
            upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
            upstream_request.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
        }

        strip_internal_headers(upstream_request);
        if carries_sentinel(upstream_request) {
            return Err(self.fail(
                ctx,
                GatewayError::new(
                    502,
                    "sentinel_leak",
                    "refusing to forward a ccproxy sentinel key upstream; is forward_oauth disabled for this request?",
                ),
            ));
        }
        Ok(())
    }
}

impl Gateway {
    /// Replace the client's body with its translation and fit the headers to the provider.
    fn translate_request(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
        tr: &route::Translation,
    ) -> Result<()> {
        let from = tr.client.as_str();
        let to = tr.provider.as_str();
        let info = translate::RequestInfo {
            model: tr
                .model
                .clone()
                .or_else(|| {
                    route::routing_model(&ctx.body, upstream_request.uri.path())
                        .map(|m| m.into_owned())
                })
                .or_else(|| ctx.meta.client_model.clone())
                .unwrap_or_default(),
            path_stream: ctx.meta.client_stream_path,
        };
        let translated = match ctx.body.json() {
            Some(body) => translate::request(tr.client, tr.provider, body, &info),
            None => Err(translate::Error::NotJson),
        };
        let mut t = translated.map_err(|e| {
            self.fail(
                ctx,
                GatewayError::new(
                    400,
                    "translation",
                    format!("cannot translate this {from} request for a {to} provider: {e}"),
                ),
            )
        })?;
        if let (Some(m), Some(o)) = (&tr.model, t.body.as_object_mut()) {
            // A rule's dest_model replaces the client's model (Gemini carries it in the path).
            if tr.provider != ApiFamily::Gemini {
                o.insert("model".into(), serde_json::Value::String(m.clone()));
            }
        }
        for p in &t.loss.0 {
            self.metrics
                .translation_loss
                .with_label_values(&[from, to, &translate::Loss::label(p)])
                .inc();
        }
        if !t.loss.is_empty() {
            tracing::debug!(request_id = %ctx.meta.request_id, from, to, lost = %t.loss.header_value(), "translation dropped fields");
        }
        let model = info.model;
        if tr.provider == ApiFamily::Gemini {
            // Gemini names the model and the streaming mode in the path.
            let action = if t.stream {
                "streamGenerateContent"
            } else {
                "generateContent"
            };
            let provider_path = ctx
                .route
                .as_ref()
                .and_then(|r| r.provider.as_ref())
                .and_then(|p| p.path.clone());
            let mut path = match provider_path {
                Some(tpl) => route::fill_template(&tpl, Some(&model), Some(action)),
                None => format!("/v1beta/models/{model}:{action}"),
            };
            if t.stream && !path.contains("alt=sse") {
                path.push_str(if path.contains('?') {
                    "&alt=sse"
                } else {
                    "?alt=sse"
                });
            }
            match path.parse::<http::Uri>() {
                Ok(uri) => upstream_request.set_uri(uri),
                Err(e) => {
                    return Err(self.fail(
                        ctx,
                        GatewayError::new(
                            502,
                            "bad_destination",
                            format!("upstream path {path:?} is not valid: {e}"),
                        ),
                    ))
                }
            }
        }
        ctx.translation = Some(TranslationState {
            route: tr.clone(),
            stream: t.stream,
            model,
            loss: t.loss,
            response: ResponseMode::Pending,
        });
        ctx.body = Body::replaced(t.body);
        // The gateway must read the provider's response to translate it.
        upstream_request.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
        upstream_request.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        match tr.provider {
            ApiFamily::Anthropic => {
                if !upstream_request.headers.contains_key("anthropic-version") {
                    upstream_request.insert_header("anthropic-version", ANTHROPIC_VERSION)?;
                }
            }
            _ => {
                for h in [
                    "anthropic-version",
                    "anthropic-beta",
                    "anthropic-dangerous-direct-browser-access",
                ] {
                    upstream_request.remove_header(h);
                }
            }
        }
        Ok(())
    }
}

/// Translate a complete buffered provider body for the client.
fn finish_buffered(
    t: &mut TranslationState,
    error: Option<u16>,
    as_stream: bool,
    buf: &[u8],
    request_id: &str,
) -> Bytes {
    let parsed: serde_json::Value = serde_json::from_slice(buf).unwrap_or(serde_json::Value::Null);
    if as_stream {
        match translate::response_hub(t.route.provider, &parsed, &t.model, &mut t.loss) {
            Ok(hub) => {
                return Bytes::from(translate::stream::stream_from_message(
                    t.route.client,
                    &hub,
                    &t.model,
                ))
            }
            Err(e) => {
                tracing::warn!(request_id, error = %e, "provider response could not be translated; passing it through");
                return Bytes::copy_from_slice(buf);
            }
        }
    }
    let out = match error {
        Some(status) => Some(translate::error_body(
            t.route.client,
            status,
            &parsed,
            &String::from_utf8_lossy(buf),
        )),
        None => match translate::response(
            t.route.provider,
            t.route.client,
            &parsed,
            &t.model,
            &mut t.loss,
        ) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(request_id, error = %e, "provider response could not be translated; passing it through");
                None
            }
        },
    };
    match out {
        Some(v) => Bytes::from(v.to_string()),
        None => Bytes::copy_from_slice(buf),
    }
}

fn strip_internal_headers(req: &mut RequestHeader) {
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

fn carries_sentinel(req: &RequestHeader) -> bool {
    AUTH_HEADERS.iter().any(|h| {
        req.headers
            .get_all(*h)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains(SENTINEL_PREFIX)))
    })
}

/// Write a complete response the gateway makes itself.
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    content_type: &str,
    body: Bytes,
    head_only: bool,
) -> Result<()> {
    respond_with(session, ctx, status, content_type, body, head_only, &[]).await
}

/// [`respond`] with extra response headers.
async fn respond_with(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    content_type: &str,
    body: Bytes,
    head_only: bool,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(REQUEST_ID_HEADER, ctx.meta.request_id.as_str())?;
    if head_only {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Some(Instant::now());
        ctx.meta.request_id = self.next_request_id();
        self.metrics.in_flight.inc();
        ctx.in_flight = true;
        self.inbound(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = match ctx.route.clone() {
            Some(r) => r,
            None => Arc::new(
                route::resolve(&self.config, session.req_header(), &ctx.body, &ctx.meta)
                    .map_err(|e| self.fail(ctx, e))?,
            ),
        };
        let addr = self
            .resolver
            .lookup(&route.host, route.port)
            .await
            .map_err(|e| self.fail(ctx, e))?;
        let peer = upstream::peer(
            &route,
            addr,
            &self.config.timeouts,
            self.config.trust.as_ref(),
        );
        ctx.meta.routed_provider = route.provider.as_ref().map(|p| p.name.clone());
        ctx.route = Some(route);
        ctx.peer_chosen = Some(Instant::now());
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (false, Some(t)) = (reused, ctx.peer_chosen) {
            ctx.connect_time += t.elapsed();
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let r = self.outbound(upstream_request, ctx).await;
        ctx.upstream_sent = Some(Instant::now());
        r
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if body.is_some() {
            if let Some(b) = &ctx.outgoing_body {
                *body = Some(b.clone());
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(sent) = ctx.upstream_sent {
            self.metrics
                .upstream_latency
                .with_label_values(&[ctx.provider_label()])
                .observe(sent.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        ctx.upstream_done = Some(Instant::now());
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        upstream_response.insert_header(REQUEST_ID_HEADER, ctx.meta.request_id.as_str())?;
        if let Some(t) = ctx.translation.as_mut() {
            let encoded = upstream_response
                .headers
                .get(http::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
            if encoded {
                tracing::warn!(
                    request_id = %ctx.meta.request_id,
                    "provider compressed a response it was asked to send uncompressed; forwarding it untranslated"
                );
                t.response = ResponseMode::Untranslated;
                return Ok(());
            }
            let is_sse = upstream_response
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let status = ctx.status;
            let stream = match (status >= 400, is_sse) {
                (false, true) => StreamTranslator::new(t.route.provider, t.route.client, &t.model),
                _ => None,
            };
            t.response = match stream {
                Some(s) => ResponseMode::Stream(Box::new(s)),
                None => ResponseMode::Buffer {
                    error: (status >= 400).then_some(status),
                    buf: Vec::new(),
                    // The client asked for a stream but the provider sent one JSON body.
                    as_stream: status < 400 && !is_sse && t.stream,
                },
            };
            let ctype = match &t.response {
                ResponseMode::Stream(_)
                | ResponseMode::Buffer {
                    as_stream: true, ..
                } => "text/event-stream",
                _ => "application/json",
            };
            upstream_response.remove_header(&http::header::CONTENT_LENGTH);
            upstream_response.remove_header(&http::header::CONTENT_ENCODING);
            upstream_response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            upstream_response.insert_header(http::header::CONTENT_TYPE, ctype)?;
            if !t.loss.is_empty() {
                upstream_response.insert_header(TRANSLATION_LOSS_HEADER, t.loss.header_value())?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(t) = ctx.translation.as_mut() else {
            return Ok(None);
        };
        match &mut t.response {
            ResponseMode::Pending | ResponseMode::Untranslated => {}
            ResponseMode::Stream(s) => {
                let mut out = body.take().map(|b| s.push(&b)).unwrap_or_default();
                if end_of_stream {
                    out.extend(s.finish());
                }
                *body = Some(Bytes::from(out));
            }
            ResponseMode::Buffer {
                error,
                buf,
                as_stream,
            } => {
                if let Some(b) = body.take() {
                    buf.extend_from_slice(&b);
                }
                if end_of_stream {
                    let (error, as_stream, data) = (*error, *as_stream, std::mem::take(buf));
                    *body = Some(finish_buffered(
                        t,
                        error,
                        as_stream,
                        &data,
                        &ctx.meta.request_id,
                    ));
                } else {
                    *body = Some(Bytes::new());
                }
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let upstream = ctx
            .route
            .as_ref()
            .map(|r| format!("{}://{}", r.scheme.as_str(), r.authority));
        let Some(err) = ctx
            .error
            .take()
            .or_else(|| error::from_pingora(e, upstream.as_deref()))
        else {
            // The client is gone; nothing to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        ctx.status = err.status;
        tracing::warn!(
            request_id = %ctx.meta.request_id,
            status = err.status,
            kind = err.kind,
            error = %err.message,
            "request failed"
        );
        let mut reuse = false;
        if session.response_written().is_none() {
            let body = error::render(&err, ctx.meta.client_format);
            let written = respond(session, ctx, err.status, "application/json", body, false).await;
            // The client's body was fully read unless it was too large.
            reuse = written.is_ok() && err.status != 413;
        }
        FailToProxy {
            error_code: err.status,
            can_reuse_downstream: reuse,
        }
    }

    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _e: &pingora::Error,
    ) -> bool {
        // `fail_to_proxy` already logged the failure once, with the request id.
        true
    }

    async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        if let Some(slot) = ctx.replay.take() {
            replay::restore(session, &slot);
        }
        if ctx.in_flight {
            self.metrics.in_flight.dec();
        }
        let status = match ctx.status {
            0 => session.response_written().map_or(0, |r| r.status.as_u16()),
            s => s,
        };
        let code = http::StatusCode::from_u16(status).ok();
        let status_label = code.as_ref().map_or("0", http::StatusCode::as_str);
        self.metrics
            .requests
            .with_label_values(&[ctx.provider_label(), ctx.action_label(), status_label])
            .inc();
        if !ctx.synthetic {
            self.metrics
                .overhead
                .observe(ctx.overhead(Instant::now()).as_secs_f64());
        }
        let req = session.req_header();
        tracing::debug!(
            request_id = %ctx.meta.request_id,
            method = %req.method,
            path = req.uri.path(),
            status,
            provider = ctx.provider_label(),
            action = ctx.action_label(),
            session_id = ctx.meta.session_id.as_deref().unwrap_or(""),
            elapsed_ms = ctx.started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
            "request done"
        );
    }
}
