//! The gateway's one retry mechanism: whether to send the client's request upstream again,
//! decided before any byte of the answer reaches the client.
//!
//! Three kinds of trigger feed it:
//! - a transport failure Pingora marks retryable (a pooled connection the provider had
//!   closed): `error_while_proxy` / `fail_to_connect` ([`Gateway::may_retry`]);
//! - the provider's response head (`upstream_response_filter`, [`Gateway::retry_on_head`]):
//!   a 401 on a credential the gateway injected makes the credential source renew it, and a
//!   changed credential sends the request once more;
//! - a Code Assist capacity error (`gemini_capacity`, [`Gateway::capacity_body`]): its head
//!   starts holding the answer back from the client (the replay session keeps the writes),
//!   its body decides ([`crate::code_assist::capacity::Plan`]): send again after a delay, to
//!   the same or a fallback model, or let the client have the original error.
//!
//! Either way the phase returns a retryable error; Pingora calls `upstream_peer` again, which
//! builds a fresh [`super::attempt::Attempt`] from the frozen client request (credential
//! resolved again, body translated again from the client's bytes, which the replay session
//! serves for every attempt). The client sees only the final answer. Each retry is logged
//! with the request id and counted in `ccproxy_upstream_retries_total{provider,reason}`; the
//! flow records the number of attempts.

use super::ctx::RequestCtx;
use super::error::GatewayError;
use super::replay;
use super::Gateway;
use crate::code_assist::capacity::{capacity_error, Decision, Plan};
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::{Duration, Instant};

/// Most upstream attempts per request, over every reason.
pub const MAX_ATTEMPTS: u32 = 16;

/// Largest error body read to decide on a capacity retry; a bigger one passes on.
const PROBE_MAX: usize = 64 * 1024;

/// Why a request is sent again (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A pooled connection failed before the provider answered.
    StaleConnection,
    /// The provider rejected the injected credential (401) and the source had a new one.
    AuthRefresh,
    /// Code Assist had no capacity (`gemini_capacity`).
    Capacity,
}

impl RetryReason {
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::StaleConnection => "stale_connection",
            RetryReason::AuthRefresh => "auth_refresh",
            RetryReason::Capacity => "capacity",
        }
    }

    /// How many retries of this kind one request may make.
    fn budget(self) -> usize {
        match self {
            RetryReason::StaleConnection | RetryReason::AuthRefresh => 1,
            // Bounded by the plan (sticky attempts, fallback models, time budget).
            RetryReason::Capacity => MAX_ATTEMPTS as usize,
        }
    }
}

/// The retries of one request so far, and the one being set up.
#[derive(Default)]
pub struct Retries {
    pub done: Vec<RetryReason>,
    /// Decided on a response head; taken by `may_retry`.
    pub pending: Option<RetryReason>,
    pub capacity: CapacityState,
}

/// Capacity fallback of one request.
#[derive(Default)]
pub struct CapacityState {
    /// The head and body of an answer held back from the client, being read to decide.
    probe: Option<(Box<ResponseHeader>, Vec<u8>)>,
    plan: Option<Plan>,
    /// The first capacity error (head as the client gets it, body): what the client gets if
    /// no retry succeeds.
    original: Option<(Box<ResponseHeader>, Bytes)>,
    /// Wait this long, then ask for this model (taken by `upstream_peer`).
    pub next: Option<(Duration, String)>,
}

impl Retries {
    fn allows(&self, reason: RetryReason, attempts: u32) -> bool {
        attempts < MAX_ATTEMPTS
            && self.done.iter().filter(|r| **r == reason).count() < reason.budget()
    }
}

impl Gateway {
    /// `upstream_response_filter`: an error here (retryable) makes Pingora drop this answer and
    /// ask `upstream_peer` for a new attempt; `None` lets the answer through.
    pub(super) async fn retry_on_head(
        &self,
        head: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Option<Box<pingora::Error>> {
        let status = head.status.as_u16();
        self.probe_capacity(head, ctx);
        if status != 401 || !ctx.retries.allows(RetryReason::AuthRefresh, ctx.attempts) {
            return None;
        }
        let attempt = ctx.attempt.as_ref()?;
        let rejected = attempt.credential.clone()?;
        let provider = attempt.route.provider.as_ref()?.name.clone();
        let source = self.shared.creds.get(&provider)?.clone();
        let request_id = ctx.client.meta.request_id.clone();
        match source.renew_rejected(&rejected).await {
            Ok(Some(_)) => {
                ctx.retries.pending = Some(RetryReason::AuthRefresh);
                Some(
                    GatewayError::new(
                        502,
                        "retry",
                        format!("provider '{provider}' rejected the credential (401); sending again with the renewed one"),
                    )
                    .retryable()
                    .to_pingora(),
                )
            }
            Ok(None) => {
                tracing::info!(%request_id, %provider, "provider answered 401 and the credential source has no other credential; passing the 401 on");
                // Do not ask the source again on this request.
                ctx.retries.done.push(RetryReason::AuthRefresh);
                None
            }
            Err(e) => {
                tracing::warn!(%request_id, %provider, error = %e, "provider answered 401 and renewing the credential failed; passing the 401 on");
                ctx.retries.done.push(RetryReason::AuthRefresh);
                None
            }
        }
    }

    /// A Code Assist answer that may be a capacity error (or, once capacity retries began, any
    /// answer that is not a success) is held back from the client while its body is read.
    fn probe_capacity(&self, head: &ResponseHeader, ctx: &mut RequestCtx) {
        let status = head.status.as_u16();
        let Some(policy) = self.config().capacity.as_ref() else {
            return;
        };
        let Some(hold) = ctx.hold.as_ref() else {
            return;
        };
        if ctx.client.meta.code_assist.is_none() {
            return;
        }
        let retrying = ctx.retries.capacity.original.is_some();
        let candidate = policy.retry_status_codes.contains(&status)
            && ctx.retries.allows(RetryReason::Capacity, ctx.attempts);
        if candidate || (retrying && !(200..300).contains(&status)) {
            replay::hold(hold);
            let mut head = Box::new(head.clone());
            // As `response_filter` would have it.
            let _ = head.insert_header(super::REQUEST_ID_HEADER, ctx.request_id_header.clone());
            ctx.retries.capacity.probe = Some((head, Vec::new()));
        }
    }

    /// `upstream_response_body_filter` for a held answer: collect its body; at its end decide
    /// between another attempt (an error here makes Pingora send the request again) and
    /// letting the client have an answer (this one, or the original capacity error).
    pub(super) fn capacity_body(
        &self,
        body: &Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let (Some((_, probe)), Some(hold)) =
            (ctx.retries.capacity.probe.as_mut(), ctx.hold.clone())
        else {
            return Ok(());
        };
        if let Some(b) = body {
            if probe.len() + b.len() > PROBE_MAX {
                ctx.retries.capacity.probe = None;
                replay::release(&hold);
                return Ok(());
            }
            probe.extend_from_slice(b);
        }
        if !end {
            return Ok(());
        }
        let Some((head, probe)) = ctx.retries.capacity.probe.take() else {
            return Ok(());
        };
        let Some(policy) = self.config().capacity.as_ref() else {
            replay::release(&hold);
            return Ok(());
        };
        let request_id = ctx.client.meta.request_id.clone();
        let now = Instant::now();
        let decision = match capacity_error(&probe, &policy.retry_status_codes) {
            Some(err) if ctx.retries.allows(RetryReason::Capacity, ctx.attempts) => {
                let model = ctx.client.meta.sent_model.clone().unwrap_or_default();
                ctx.retries
                    .capacity
                    .plan
                    .get_or_insert_with(|| Plan::new(policy, &model, now))
                    .next(err.retry_delay, now)
            }
            _ => Decision::Stop,
        };
        match decision {
            Decision::Retry { model, delay } => {
                // This answer's writes never reach the client (the error below stops them).
                replay::discard(&hold);
                if ctx.retries.capacity.original.is_none() {
                    ctx.retries.capacity.original = Some((head, Bytes::from(probe)));
                }
                tracing::info!(%request_id, model, delay_s = delay.as_secs_f64(), "Code Assist has no capacity; retrying");
                ctx.retries.capacity.next = Some((delay, model));
                ctx.retries.pending = Some(RetryReason::Capacity);
                Err(
                    GatewayError::new(502, "retry", "Code Assist capacity error")
                        .retryable()
                        .to_pingora(),
                )
            }
            Decision::Stop => {
                match ctx.retries.capacity.original.take() {
                    Some((head, body)) => {
                        tracing::info!(%request_id, "Code Assist capacity retries did not succeed; the client gets the original error");
                        replay::release_instead(
                            &hold,
                            vec![
                                replay::Write::Header(head, false),
                                replay::Write::Body(body, true),
                            ],
                        );
                    }
                    None => replay::release(&hold),
                }
                Ok(())
            }
        }
    }

    /// The original capacity error, when capacity retries ended in a transport failure: the
    /// client gets it instead of a gateway error (`fail_to_proxy`).
    pub(super) fn capacity_original(ctx: &mut RequestCtx) -> Option<(Box<ResponseHeader>, Bytes)> {
        ctx.retries.capacity.original.take()
    }

    /// `upstream_peer`, before a capacity retry: wait as planned and ask for the planned model.
    pub(super) async fn capacity_wait(&self, ctx: &mut RequestCtx) {
        if let Some((delay, model)) = ctx.retries.capacity.next.take() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            ctx.client.meta.fallback_model = Some(model);
        }
    }

    /// `error_while_proxy` and `fail_to_connect`: may Pingora make another attempt? Only while
    /// nothing has reached the client, within each reason's budget, and when the failure says
    /// a resend can help: a head-decided retry ([`Gateway::retry_on_head`]) or a pooled
    /// connection the provider had closed (the one case Pingora marks retryable for a request
    /// that was sent).
    pub(super) fn may_retry(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<pingora::Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<pingora::Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // The request body is buffered whole (or empty), so a POST can be sent again.
        e.retry.decide_reuse(client_reused);
        let mut reason = ctx
            .retries
            .pending
            .take()
            .unwrap_or(RetryReason::StaleConnection);
        if reason == RetryReason::StaleConnection {
            if let Some(plan) = ctx.retries.capacity.plan.as_mut() {
                // A transport failure during capacity retries moves on in the plan (§8.6:
                // a network error goes to the next attempt); a plan that is done leaves the
                // client the original error (see `fail`).
                reason = RetryReason::Capacity;
                match plan.next(None, std::time::Instant::now()) {
                    Decision::Retry { model, delay } => {
                        ctx.retries.capacity.next = Some((delay, model));
                        e.set_retry(true);
                    }
                    Decision::Stop => e.set_retry(false),
                }
            }
        }
        if !ctx.retries.allows(reason, ctx.attempts) || session.response_written().is_some() {
            e.set_retry(false);
        }
        if e.retry() {
            ctx.retries.done.push(reason);
            let provider = ctx.provider_label().to_owned();
            self.shared
                .metrics
                .upstream_retries
                .with_label_values(&[&provider, reason.label()])
                .inc();
            tracing::info!(
                request_id = %ctx.client.meta.request_id,
                attempt = ctx.attempts,
                provider,
                reason = reason.label(),
                error = %e,
                "sending the request upstream again"
            );
        }
        e
    }
}
