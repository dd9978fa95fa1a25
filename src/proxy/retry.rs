//! The gateway's one retry mechanism: whether to send the client's request upstream again,
//! decided before any byte of the answer reaches the client.
//!
//! Two kinds of trigger feed it:
//! - a transport failure Pingora marks retryable (a pooled connection the provider had
//!   closed): `error_while_proxy` / `fail_to_connect` ([`Gateway::may_retry`]);
//! - the provider's response head (`upstream_response_filter`, [`Gateway::retry_on_head`]):
//!   a 401 on a credential the gateway injected makes the credential source renew it, and a
//!   changed credential sends the request once more.
//!
//! Either way the phase returns a retryable error; Pingora calls `upstream_peer` again, which
//! builds a fresh [`super::attempt::Attempt`] from the frozen client request (credential
//! resolved again, body translated again from the client's bytes, which the replay session
//! serves for every attempt). The client sees only the final answer. Each retry is logged
//! with the request id and counted in `ccproxy_upstream_retries_total{provider,reason}`; the
//! flow records the number of attempts.

use super::ctx::RequestCtx;
use super::error::GatewayError;
use super::Gateway;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Most upstream attempts per request, over every reason.
pub const MAX_ATTEMPTS: u32 = 4;

/// Why a request is sent again (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A pooled connection failed before the provider answered.
    StaleConnection,
    /// The provider rejected the injected credential (401) and the source had a new one.
    AuthRefresh,
}

impl RetryReason {
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::StaleConnection => "stale_connection",
            RetryReason::AuthRefresh => "auth_refresh",
        }
    }

    /// How many retries of this kind one request may make.
    fn budget(self) -> usize {
        match self {
            RetryReason::StaleConnection | RetryReason::AuthRefresh => 1,
        }
    }
}

/// The retries of one request so far, and the one being set up.
#[derive(Debug, Default)]
pub struct Retries {
    pub done: Vec<RetryReason>,
    /// Decided on a response head; taken by `may_retry`.
    pub pending: Option<RetryReason>,
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
        if head.status.as_u16() != 401
            || !ctx.retries.allows(RetryReason::AuthRefresh, ctx.attempts)
        {
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
        let reason = ctx
            .retries
            .pending
            .take()
            .unwrap_or(RetryReason::StaleConnection);
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
