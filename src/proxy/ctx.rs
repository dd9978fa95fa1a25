//! Per-request state shared by every Pingora phase (`ProxyHttp::CTX`).
//!
//! It is split in two on purpose:
//! - [`ClientRequest`]: what the client sent, frozen once the inbound stage has run (hook
//!   metadata, the body bytes, the detected format, the per-request hook overrides). Nothing after
//!   the inbound stage changes it, so it can be sent again.
//! - [`Attempt`]: everything about one upstream attempt (route, credential, the body actually
//!   sent, translation state, timings), rebuilt from the client request each time Pingora asks
//!   `upstream_peer` for a peer, which is how a retry resends the request.
//!
//! Later features (flow capture, OAuth replay, capacity fallback) add their per-request state
//! here rather than threading it through phase signatures.

use super::attempt::Attempt;
use super::budget::BodyPermit;
use super::error::GatewayError;
use super::flow::FlowCapture;
use super::ingress::Ingress;
use super::replay;
use super::retry::Retries;
use crate::hooks::{Body, Overrides, RequestMeta};
use crate::translate::Format;
use std::time::{Duration, Instant};

/// The client's request as the gateway will forward it (after the inbound hooks).
#[derive(Default)]
pub struct ClientRequest {
    pub meta: RequestMeta,
    /// The body the client sent (after inbound hooks, which may have rewritten it).
    pub body: Body,
    /// An inbound hook rewrote the body: the bytes to forward are not the ones replayed.
    pub rewritten: bool,
    pub overrides: Overrides,
}

impl ClientRequest {
    /// The client's API format, from its path.
    pub fn format(&self) -> Option<Format> {
        self.meta.client_format
    }
}

/// How far the gateway got with the client's request body, which decides whether the client
/// connection may serve another request after an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientBody {
    /// The request has no body.
    #[default]
    Empty,
    /// Read completely: the connection is in a clean state.
    Complete,
    /// Not read whole: reading has not finished or stopped early (too large, malformed, timed
    /// out, no budget), so the rest of the body may still be on the wire and the connection must
    /// not be reused.
    Abandoned,
}

/// State of one request.
pub struct RequestCtx {
    /// Which listener the request came in on.
    pub ingress: Ingress,
    /// When `request_filter` started (headers read).
    pub started: Option<Instant>,
    pub client: ClientRequest,
    /// The request id as a header value (`x-ccproxy-request-id` on every answer).
    pub request_id_header: http::HeaderValue,
    /// The current upstream attempt, if one started.
    pub attempt: Option<Attempt>,
    /// Upstream attempts made so far.
    pub attempts: u32,
    /// Time spent connecting to upstreams over all attempts (TCP + TLS; ~0 when pooled).
    pub connect_time: Duration,
    /// An error to answer with, rendered by `fail_to_proxy`.
    pub error: Option<GatewayError>,
    /// Where the original downstream session waits while the replay session is installed.
    pub replay: Option<replay::Slot>,
    /// Holds the replay session's response writes while a retry is being decided.
    pub hold: Option<replay::Hold>,
    /// The share of the global body budget this request's buffered body holds.
    pub body_permit: Option<BodyPermit>,
    /// State of the client's request body.
    pub client_body: ClientBody,
    /// Status sent to the client.
    pub status: u16,
    /// Counted in the in-flight gauge.
    pub in_flight: bool,
    /// Answered by the gateway itself (health, models, local token counts).
    pub synthetic: bool,
    /// The flow-recording seam's per-request handle (`None` when nothing records).
    pub flow: Option<Box<dyn FlowCapture>>,
    /// Retries made and decided ([`super::retry`]).
    pub retries: Retries,
}

impl RequestCtx {
    pub fn new(ingress: Ingress) -> Self {
        Self {
            ingress,
            started: None,
            client: ClientRequest::default(),
            request_id_header: http::HeaderValue::from_static(""),
            attempt: None,
            attempts: 0,
            connect_time: Duration::ZERO,
            error: None,
            replay: None,
            hold: None,
            body_permit: None,
            client_body: ClientBody::Empty,
            status: 0,
            in_flight: false,
            synthetic: false,
            flow: None,
            retries: Retries::default(),
        }
    }

    /// The request id (`x-ccproxy-request-id`).
    pub fn request_id(&self) -> &str {
        &self.client.meta.request_id
    }

    /// Time this request spent in the gateway rather than waiting for the upstream: everything
    /// from `request_filter` to now, minus connecting and minus the last attempt's
    /// request-sent → last response byte.
    pub fn overhead(&self, now: Instant) -> Duration {
        let Some(start) = self.started else {
            return Duration::ZERO;
        };
        let total = now.saturating_duration_since(start);
        let upstream = match self.attempt.as_ref().and_then(|a| a.upstream_sent) {
            Some(sent) => match self.attempt.as_ref().and_then(|a| a.upstream_done) {
                Some(done) => done.saturating_duration_since(sent),
                None => now.saturating_duration_since(sent),
            },
            None => Duration::ZERO,
        };
        total
            .saturating_sub(upstream)
            .saturating_sub(self.connect_time)
    }

    /// Label for metrics: the provider (or destination host), `none` before routing.
    pub fn provider_label(&self) -> &str {
        self.attempt.as_ref().map_or("none", |a| a.route.label())
    }

    /// API format of the provider the current attempt goes to.
    pub fn provider_format(&self) -> Option<Format> {
        let attempt = self.attempt.as_ref()?;
        if let Some(t) = &attempt.translation {
            return Some(t.route.provider);
        }
        attempt.route.provider.as_ref().map(|p| p.family)
    }

    /// Label for metrics: the route action, `synthetic`, or `none`.
    pub fn action_label(&self) -> &'static str {
        if self.synthetic {
            return "synthetic";
        }
        self.attempt
            .as_ref()
            .map_or("none", |a| a.route.action.as_str())
    }

    /// Whether the client connection may serve another request after this one failed: only if
    /// the request was read whole (or had no body) and the answer was written.
    pub fn client_reusable(&self) -> bool {
        self.client_body != ClientBody::Abandoned
    }
}
