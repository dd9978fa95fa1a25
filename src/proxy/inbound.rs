//! The inbound stage (`request_filter`): everything that happens to the client's request before
//! an upstream is chosen.
//!
//! In order: request id and in-flight count; the flow capture starts; synthetic answers (`/`,
//! `/health`, `/v1/models`, reverse listener only); `CONNECT` refused; the client's API format
//! from the path; `x-ccproxy-hooks`; the body read whole within `max_request_body_bytes` and the
//! global budget (answering `Expect: 100-continue` itself) and the replay session installed; the
//! `inbound` hooks; then the client request is frozen. A translated `count_tokens` is answered
//! here with a local estimate. Errors in reading the body are the client's (400 malformed or
//! truncated, 408 too slow, 413 too large, 503 no budget), and leave the connection unusable
//! for another request.

use super::ctx::{ClientBody, RequestCtx};
use super::error::GatewayError;
use super::replay::{self, BodyError, ReadBody};
use super::response::respond;
use super::{route, synthetic, Gateway, TOKEN_ESTIMATE_HEADER};
use crate::hooks::{Body, HookContext, Overrides, Stage, OVERRIDE_HEADER};
use crate::translate::{self, Format};
use bytes::Bytes;
use pingora::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::time::Instant;

impl Gateway {
    /// `request_filter`: `Ok(true)` when the gateway answered the request itself.
    pub(super) async fn inbound(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        ctx.started = Some(Instant::now());
        let (id, header) = self.shared.ids.next();
        ctx.client.meta.request_id = id;
        ctx.request_id_header = header;
        self.shared.metrics.in_flight.inc();
        ctx.in_flight = true;
        ctx.flow = self
            .shared
            .recorder
            .start(&ctx.client.meta.request_id, ctx.ingress);

        let req = session.req_header();
        if ctx.ingress.serves_synthetic() {
            if let Some(s) = synthetic::answer(
                req.method.as_str(),
                req.uri.path(),
                &self.config().providers,
                &self.shared.creds,
                self.config().trust.clone(),
            )
            .await
            {
                ctx.synthetic = true;
                ctx.status = s.status;
                self.record_client_request(session, ctx);
                let head = session.req_header().method == http::Method::HEAD;
                respond(session, ctx, s.status, s.content_type, s.body, head, &[]).await?;
                return Ok(true);
            }
        }
        if req.method == http::Method::CONNECT {
            return Err(self.reject(
                ctx,
                GatewayError::new(
                    405,
                    "method_not_allowed",
                    "CONNECT is not supported: ccproxy is a reverse proxy; point the client's base URL at it instead",
                ),
            ));
        }
        let path = req.uri.path();
        let format = route::detect_format(path);
        ctx.client.meta.client_format = format;
        if format == Some(Format::Gemini) {
            ctx.client.meta.client_model =
                route::routing_model(&Body::default(), path).map(|m| m.into_owned());
            ctx.client.meta.client_stream_path =
                route::path_action(path) == Some("streamGenerateContent");
        }
        if let Some(v) = req.headers.get(OVERRIDE_HEADER) {
            ctx.client.overrides = Overrides::parse(v.to_str().unwrap_or_default());
        }

        if !session.downstream_session.is_body_empty() {
            let body = self.read_client_body(session, ctx).await?;
            let (slot, hold) = replay::install(session, body.clone());
            ctx.replay = Some(slot);
            ctx.hold = Some(hold);
            ctx.client.body = Body::new(body);
        }

        self.run_hooks(Stage::Inbound, session.req_header_mut(), ctx)
            .await?;
        // Freeze the client request: a body an inbound hook changed is serialized once, here.
        if ctx.client.body.is_dirty() {
            ctx.client.body = Body::new(ctx.client.body.to_wire());
            ctx.client.rewritten = true;
        }
        self.record_client_request(session, ctx);
        self.count_tokens_locally(session, ctx).await
    }

    /// Read the whole request body (within the size limit and the global budget), answering
    /// `Expect: 100-continue` once the body is acceptable.
    async fn read_client_body(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Bytes> {
        let limit = self.config().max_request_body_bytes;
        // Until the body is read whole, the connection cannot serve another request.
        ctx.client_body = ClientBody::Abandoned;
        let downstream = &mut session.downstream_session;
        downstream.set_read_timeout(Some(self.config().timeouts.client_read));
        let declared = replay::declared_length(downstream);
        let expects_continue = downstream
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        if declared.is_some_and(|n| n > limit) {
            return Err(self.reject(ctx, GatewayError::body_too_large(limit)));
        }
        let Some(permit) = self.shared.budget.reserve(declared.unwrap_or(0)) else {
            return Err(self.reject(
                ctx,
                GatewayError::body_budget_exhausted(self.shared.budget.limit()),
            ));
        };
        let permit = ctx.body_permit.insert(permit);
        if expects_continue {
            // The gateway reads the body itself, so it answers the expectation itself (clients
            // such as curl otherwise wait a second before sending a large body); the upstream
            // then gets the complete body without it.
            session
                .req_header_mut()
                .remove_header(&http::header::EXPECT);
            session.downstream_session.write_continue_response().await?;
        }
        let outcome =
            replay::read_body(&mut session.downstream_session, limit, declared, permit).await;
        let err = match outcome {
            ReadBody::Complete(bytes) => {
                ctx.client_body = ClientBody::Complete;
                return Ok(bytes);
            }
            ReadBody::TooLarge => GatewayError::body_too_large(limit),
            ReadBody::NoBudget => GatewayError::body_budget_exhausted(self.shared.budget.limit()),
            ReadBody::Failed(BodyError::Timeout) => GatewayError::new(
                408,
                "client_timeout",
                format!(
                    "timed out reading the request body: the client sent nothing for {} s",
                    self.config().timeouts.client_read.as_secs_f64()
                ),
            ),
            ReadBody::Failed(BodyError::Truncated(why)) => GatewayError::new(
                400,
                "truncated_body",
                format!("the request body ended early: {why}"),
            ),
            ReadBody::Failed(BodyError::Malformed(why)) => GatewayError::new(
                400,
                "malformed_body",
                format!("the request body is malformed: {why}"),
            ),
        };
        Err(self.reject(ctx, err))
    }

    /// Run one hook stage over `headers` and the request body (the client's for `inbound`, the
    /// attempt's for `outbound`); a fatal hook error becomes the client's error.
    pub(super) async fn run_hooks(
        &self,
        stage: Stage,
        headers: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let RequestCtx {
            client,
            attempt,
            flow,
            ..
        } = ctx;
        let body = match stage {
            Stage::Inbound => &mut client.body,
            Stage::Outbound => match attempt.as_mut() {
                Some(a) => &mut a.body,
                None => &mut client.body,
            },
        };
        let mut cx = HookContext {
            headers,
            body,
            meta: &mut client.meta,
            providers: &self.config().providers,
        };
        let mut failed: Vec<(&'static str, String, bool)> = Vec::new();
        let tracking = flow.is_some();
        let mut report = |hook: &'static str, changed: bool| {
            if let Some(f) = flow.as_mut() {
                f.hook_ran(stage.as_str(), hook, changed);
            }
        };
        let outcome = self
            .shared
            .pipeline
            .run(
                stage,
                &mut cx,
                &client.overrides,
                |hook, e| {
                    failed.push((hook, e.to_string(), e.fatal.is_some()));
                },
                if tracking { Some(&mut report) } else { None },
            )
            .await;
        for (hook, error, fatal) in failed {
            self.shared
                .metrics
                .hook_errors
                .with_label_values(&[hook])
                .inc();
            let request_id = ctx.client.meta.request_id.as_str();
            if fatal {
                tracing::warn!(request_id, hook, error, "hook failed; request stopped");
            } else {
                tracing::warn!(request_id, hook, error, "hook failed; request continues");
            }
        }
        outcome.map_err(|f| self.reject(ctx, GatewayError::new(f.status, "hook", f.message)))
    }

    /// `POST …/v1/messages/count_tokens` routed to a provider of another format (which has no
    /// such endpoint): answer with a local estimate, marked `x-ccproxy-token-estimate: local`.
    async fn count_tokens_locally(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let req = session.req_header();
        if ctx.client.format() != Some(Format::Anthropic)
            || !route::is_count_tokens(req.uri.path(), Format::Anthropic)
        {
            return Ok(false);
        }
        let translated = route::resolve(
            self.config(),
            req,
            &ctx.client.body,
            &ctx.client.meta,
            self.ingress,
        )
        .is_ok_and(|r| r.translation.is_some_and(|t| !t.is_identity()));
        if !translated {
            return Ok(false);
        }
        let Some(body) = ctx.client.body.json() else {
            return Err(self.reject(
                ctx,
                GatewayError::new(400, "bad_request", "count_tokens needs a JSON body"),
            ));
        };
        let n = translate::estimate_input_tokens(body);
        ctx.synthetic = true;
        ctx.status = 200;
        let body = Bytes::from(serde_json::json!({"input_tokens": n}).to_string());
        respond(
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

    /// Hand the frozen client request to the flow seam.
    fn record_client_request(&self, session: &Session, ctx: &mut RequestCtx) {
        if let Some(flow) = ctx.flow.as_mut() {
            flow.client_request(
                session.req_header(),
                ctx.client.body.raw(),
                &ctx.client.meta,
            );
        }
    }

    /// Record `err` for `fail_to_proxy` and return the Pingora error that leads there.
    pub(super) fn reject(&self, ctx: &mut RequestCtx, err: GatewayError) -> Box<pingora::Error> {
        let e = err.to_pingora();
        ctx.error = Some(err);
        e
    }
}
