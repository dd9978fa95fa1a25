//! The response stage: what the client gets back, and the end of the request.
//!
//! - `upstream_response_filter` / `upstream_response_body_filter`: upstream latency, the last
//!   upstream byte (overhead metric), the provider's raw bytes to the flow seam.
//! - `response_filter` / `response_body_filter`: `x-ccproxy-request-id`; on a translated route
//!   the body is translated for the client (JSON and error bodies once complete, within
//!   `max_response_buffer_bytes`; SSE event by event).
//! - `fail_to_proxy`: every gateway error as JSON in the client's API format, also after an
//!   interim `100 Continue`; the client connection is closed afterwards unless the request was
//!   read whole, and an abandoned upload is drained for a bounded time first, so the client reads
//!   the error instead of a reset.
//! - `logging`: the client session restored for keep-alive; metrics; the flow summary.

use super::attempt::{ResponseMode, TranslationState};
use super::ctx::RequestCtx;
use super::error::{self, GatewayError};
use super::flow::FlowSummary;
use super::{replay, Gateway, REQUEST_ID_HEADER, TRANSLATION_LOSS_HEADER};
use crate::translate::{self, stream::StreamTranslator};
use bytes::Bytes;
use pingora::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};
use std::time::{Duration, Instant};

/// After an error that left part of the request body unread, read and discard the rest for at
/// most this long…
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(5);
/// …or this many bytes, then close.
pub(crate) const DRAIN_BYTES: usize = 64 * 1024 * 1024;

impl Gateway {
    /// `upstream_response_filter`: the provider answered (headers).
    pub(super) fn upstream_head(&self, head: &mut ResponseHeader, ctx: &mut RequestCtx) {
        let Some(attempt) = ctx.attempt.as_ref() else {
            return;
        };
        if let Some(sent) = attempt.upstream_sent {
            self.shared
                .metrics
                .upstream_latency
                .with_label_values(&[attempt.route.label()])
                .observe(sent.elapsed().as_secs_f64());
        }
        if let Some(flow) = ctx.flow.as_mut() {
            flow.upstream_response(attempt.n, head);
        }
    }

    /// `response_filter`: the head the client gets.
    pub(super) fn client_head(
        &self,
        head: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = head.status.as_u16();
        head.insert_header(REQUEST_ID_HEADER, ctx.request_id_header.clone())?;
        let cap = self.config().max_response_buffer_bytes;
        if let (Some(envelope), Some(a)) = (ctx.client.meta.code_assist, ctx.attempt.as_mut()) {
            a.unwrap = unwrap_for(head, envelope, cap)?;
        }
        if let Some(t) = ctx.attempt.as_mut().and_then(|a| a.translation.as_mut()) {
            translated_head(head, t, cap, &ctx.client.meta.request_id)?;
            ctx.status = head.status.as_u16();
        }
        if let Some(flow) = ctx.flow.as_mut() {
            flow.client_response(head);
        }
        Ok(())
    }

    /// `response_body_filter`: the body the client gets.
    pub(super) fn client_body(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) {
        let cap = self.config().max_response_buffer_bytes;
        if let Some(u) = ctx.attempt.as_mut().and_then(|a| a.unwrap.as_mut()) {
            *body = u.feed(body.as_ref(), end_of_stream);
        }
        if let Some(t) = ctx.attempt.as_mut().and_then(|a| a.translation.as_mut()) {
            translate_body(t, body, end_of_stream, cap, &ctx.client.meta.request_id);
        }
        if let Some(flow) = ctx.flow.as_mut() {
            match body {
                Some(b) => flow.client_body(b, end_of_stream),
                None if end_of_stream => flow.client_body(&Bytes::new(), true),
                None => {}
            }
        }
    }

    /// `fail_to_proxy`: answer a failed request.
    pub(super) async fn fail(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let upstream = ctx.attempt.as_ref().map(|a| {
            format!(
                "{}://{}",
                a.route.dest.scheme.as_str(),
                a.route.dest.authority
            )
        });
        if let Some((head, body)) = Gateway::capacity_original(ctx) {
            if session.response_written().is_none() {
                let status = head.status.as_u16();
                ctx.status = status;
                let written = session.write_response_header(head, false).await.is_ok()
                    && session.write_response_body(Some(body), true).await.is_ok();
                return FailToProxy {
                    error_code: status,
                    can_reuse_downstream: written && ctx.client_reusable(),
                };
            }
        }
        let Some(err) = ctx
            .error
            .clone()
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
            request_id = %ctx.client.meta.request_id,
            status = err.status,
            kind = err.kind,
            error = %err.message,
            "request failed"
        );
        let reusable = ctx.client_reusable();
        if !reusable {
            // Say so in the answer (`connection: close`); Pingora closes it after.
            session.set_keepalive(None);
        }
        // An interim `100 Continue` is not an answer: the error still goes out after it.
        let answered = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        let mut written = false;
        if !answered {
            let body = error::render(&err, ctx.client.format());
            let retry_after = err.retry_after.map(|s| s.to_string());
            let extra: Vec<(&'static str, &str)> = retry_after
                .as_deref()
                .map(|s| ("retry-after", s))
                .into_iter()
                .collect();
            written = respond(
                session,
                ctx,
                err.status,
                "application/json",
                body,
                false,
                &extra,
            )
            .await
            .is_ok();
        }
        ctx.error = Some(err.clone());
        if written && !reusable && matches!(err.status, 413 | 503) {
            drain(session).await;
        }
        FailToProxy {
            error_code: err.status,
            can_reuse_downstream: written && reusable,
        }
    }

    /// `logging`: the request is over.
    pub(super) fn finish(&self, session: &mut Session, ctx: &mut RequestCtx) {
        if let Some(slot) = ctx.replay.take() {
            replay::restore(session, &slot);
        }
        if ctx.in_flight {
            self.shared.metrics.in_flight.dec();
        }
        let status = match ctx.status {
            0 => session.response_written().map_or(0, |r| r.status.as_u16()),
            s => s,
        };
        let metrics = &self.shared.metrics;
        metrics.count_request(ctx.provider_label(), ctx.action_label(), status);
        if !ctx.synthetic {
            metrics
                .overhead
                .observe(ctx.overhead(Instant::now()).as_secs_f64());
        }
        if let Some(flow) = ctx.flow.take() {
            flow.finish(&FlowSummary {
                status,
                provider: ctx.provider_label(),
                action: ctx.action_label(),
                attempts: ctx.attempts,
                retries: &ctx
                    .retries
                    .done
                    .iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>(),
                provider_format: ctx.provider_format(),
                loss: ctx
                    .attempt
                    .as_ref()
                    .and_then(|a| a.translation.as_ref())
                    .map_or(&[][..], |t| &t.loss.0),
                error: ctx.error.as_ref(),
            });
        }
        // The body's share of the budget is released now, not when Pingora drops the context.
        ctx.body_permit = None;
        let req = session.req_header();
        tracing::debug!(
            request_id = %ctx.client.meta.request_id,
            method = %req.method,
            path = req.uri.path(),
            status,
            provider = ctx.provider_label(),
            action = ctx.action_label(),
            attempts = ctx.attempts,
            session_id = ctx.client.meta.session_id.as_deref().unwrap_or(""),
            elapsed_ms = ctx.started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
            "request done"
        );
    }
}

/// `upstream_response_body_filter`: the provider's raw bytes, before translation.
pub(super) fn upstream_body(body: &mut Option<Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
    if let Some(a) = ctx.attempt.as_mut() {
        a.upstream_done = Some(Instant::now());
    }
    if let Some(flow) = ctx.flow.as_mut() {
        match body {
            Some(b) => flow.upstream_body(b, end_of_stream),
            None if end_of_stream => flow.upstream_body(&Bytes::new(), true),
            None => {}
        }
    }
}

/// Read and discard what is left of an abandoned request body (bounded), so that closing the
/// connection after an early answer sends a FIN the client can read past, not a reset.
async fn drain(session: &mut Session) {
    let downstream = &mut session.downstream_session;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while seen < DRAIN_BYTES {
            match downstream.read_request_body().await {
                Ok(Some(chunk)) => seen += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}

/// How a Code Assist answer is unwrapped: successes only (errors are not enveloped), as a
/// stream when the request was a stream (by its action) or the answer is an event stream,
/// else whole. The body changes size, so it goes out chunked.
fn unwrap_for(
    head: &mut ResponseHeader,
    envelope: crate::code_assist::Envelope,
    cap: u64,
) -> Result<Option<crate::code_assist::Unwrap>> {
    if head.status.as_u16() >= 400 {
        return Ok(None);
    }
    let is_sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let unwrap = if envelope.streaming || is_sse {
        crate::code_assist::Unwrap::stream(cap)
    } else {
        crate::code_assist::Unwrap::buffered(cap)
    };
    head.remove_header(&http::header::CONTENT_LENGTH);
    head.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    Ok(Some(unwrap))
}

/// Fit the response head of a translated route to the client and choose how its body is
/// translated.
fn translated_head(
    head: &mut ResponseHeader,
    t: &mut TranslationState,
    cap: u64,
    request_id: &str,
) -> Result<()> {
    if t.route.is_identity() {
        t.response = ResponseMode::Untranslated;
        return Ok(());
    }
    let encoded = head
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    if encoded {
        tracing::warn!(
            request_id,
            "provider compressed a response it was asked to send uncompressed; forwarding it untranslated"
        );
        t.response = ResponseMode::Untranslated;
        return Ok(());
    }
    let is_sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let status = head.status.as_u16();
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let stream = match (status >= 400, is_sse) {
        (false, true) => StreamTranslator::new(t.route.provider, t.route.client, &t.model)
            .map(|s| s.with_event_limit(cap as usize)),
        _ => None,
    };
    t.response = match stream {
        Some(s) => ResponseMode::Stream(Box::new(s)),
        None if declared.is_some_and(|n| n > cap) => {
            // Too big to hold for translation: say so in the client's format, with a status
            // that is not a success.
            tracing::warn!(
                request_id,
                bytes = declared,
                cap,
                "provider response too large to translate"
            );
            head.set_status(502)?;
            ResponseMode::Overflowed
        }
        None => ResponseMode::Buffer {
            error: (status >= 400).then_some(status),
            buf: Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize)),
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
    head.remove_header(&http::header::CONTENT_LENGTH);
    head.remove_header(&http::header::CONTENT_ENCODING);
    head.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    head.insert_header(http::header::CONTENT_TYPE, ctype)?;
    if !t.loss.is_empty() {
        head.insert_header(TRANSLATION_LOSS_HEADER, t.loss.header_value())?;
    }
    Ok(())
}

/// The client-format error body for a provider response over `cap` bytes.
fn overflow_body(t: &TranslationState, cap: u64) -> Bytes {
    let err = GatewayError::new(
        502,
        "response_too_large",
        format!(
            "the provider's response exceeds max_response_buffer_bytes ({cap} bytes) and cannot be translated"
        ),
    );
    error::render(&err, Some(t.route.client))
}

/// Translate one chunk of a translated route's response body.
fn translate_body(
    t: &mut TranslationState,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    cap: u64,
    request_id: &str,
) {
    match &mut t.response {
        ResponseMode::Pending | ResponseMode::Untranslated => {}
        ResponseMode::Overflowed => {
            body.take();
            if end_of_stream {
                *body = Some(overflow_body(t, cap));
            }
        }
        ResponseMode::Stream(s) => {
            let mut out = body.take().map(|b| s.push(&b)).unwrap_or_default();
            if end_of_stream {
                out.extend(s.finish());
            }
            *body = Some(Bytes::from(out));
        }
        ResponseMode::Buffer { buf, .. } => {
            if let Some(b) = body.take() {
                if (buf.len() + b.len()) as u64 > cap {
                    tracing::warn!(request_id, cap, "provider response too large to translate");
                    t.response = ResponseMode::Overflowed;
                    // The status is already on the wire; the body says what happened.
                    if end_of_stream {
                        *body = Some(overflow_body(t, cap));
                    }
                    return;
                }
                buf.extend_from_slice(&b);
            }
            if end_of_stream {
                *body = Some(finish_buffered(t, request_id));
            } else {
                *body = Some(Bytes::new());
            }
        }
    }
}

/// Translate a complete buffered provider body for the client.
fn finish_buffered(t: &mut TranslationState, request_id: &str) -> Bytes {
    let ResponseMode::Buffer {
        error,
        buf,
        as_stream,
    } = std::mem::replace(&mut t.response, ResponseMode::Untranslated)
    else {
        return Bytes::new();
    };
    let parsed: serde_json::Value = serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null);
    if let Some(status) = error {
        let out = translate::error_body(
            t.route.client,
            status,
            &parsed,
            &String::from_utf8_lossy(&buf),
        );
        return Bytes::from(translate::serialize::to_vec(&out));
    }
    if as_stream {
        return match translate::response_hub(t.route.provider, parsed, &t.model, &mut t.loss) {
            Ok(hub) => Bytes::from(translate::stream::stream_from_message(
                t.route.client,
                &hub,
                &t.model,
            )),
            Err(e) => {
                tracing::warn!(request_id, error = %e, "provider response could not be translated; passing it through");
                Bytes::from(buf)
            }
        };
    }
    match translate::response(
        t.route.provider,
        t.route.client,
        parsed,
        &t.model,
        &mut t.loss,
    ) {
        Ok(v) => Bytes::from(translate::serialize::to_vec(&v)),
        Err(e) => {
            tracing::warn!(request_id, error = %e, "provider response could not be translated; passing it through");
            Bytes::from(buf)
        }
    }
}

/// Write a complete response the gateway makes itself (and show it to the flow seam).
pub(super) async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
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
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(REQUEST_ID_HEADER, ctx.request_id_header.clone())?;
    if let Some(flow) = ctx.flow.as_mut() {
        flow.client_response(&resp);
        let sent = if head_only {
            Bytes::new()
        } else {
            body.clone()
        };
        flow.client_body(&sent, true);
    }
    if head_only {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::Translation;
    use crate::translate::{Format, Loss};

    fn state(client: Format, provider: Format) -> TranslationState {
        TranslationState {
            route: Translation {
                client,
                provider,
                model: None,
            },
            stream: false,
            model: "m".into(),
            loss: Loss::default(),
            response: ResponseMode::Pending,
        }
    }

    #[test]
    fn a_buffered_response_over_the_cap_becomes_an_error_in_the_client_format() {
        let mut t = state(Format::OpenAi, Format::Anthropic);
        let mut head = ResponseHeader::build(200, None).unwrap();
        translated_head(&mut head, &mut t, 16, "r").unwrap();
        let mut body = Some(Bytes::from_static(b"{\"id\":\"msg_1\",\"content\""));
        translate_body(&mut t, &mut body, false, 16, "r");
        assert!(matches!(t.response, ResponseMode::Overflowed));
        let mut rest = Some(Bytes::from_static(b":[]}"));
        translate_body(&mut t, &mut rest, true, 16, "r");
        let v: serde_json::Value = serde_json::from_slice(&rest.unwrap()).unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_response_buffer_bytes"));
    }

    #[test]
    fn a_declared_oversized_response_gets_a_502_head() {
        let mut t = state(Format::OpenAi, Format::Anthropic);
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("content-length", "100").unwrap();
        translated_head(&mut head, &mut t, 16, "r").unwrap();
        assert_eq!(head.status.as_u16(), 502);
        assert!(matches!(t.response, ResponseMode::Overflowed));
    }
}
