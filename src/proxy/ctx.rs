//! Per-request state shared by every Pingora phase (`ProxyHttp::CTX`).
//!
//! Any phase can read what earlier phases decided: the buffered body, hook metadata, the route,
//! a pending error, timings. Later features (flow capture, stream translation, OAuth replay) add
//! their per-request state here rather than threading it through phase signatures.

use super::error::GatewayError;
use super::replay;
use super::route::Route;
use super::route::Translation;
use crate::hooks::{Body, Overrides, RequestMeta};
use crate::translate::stream::StreamTranslator;
use crate::translate::Loss;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State of one request.
#[derive(Default)]
pub struct RequestCtx {
    /// When `request_filter` started (headers read).
    pub started: Option<Instant>,
    pub meta: RequestMeta,
    pub body: Body,
    pub overrides: Overrides,
    /// Resolved once (in `upstream_peer`, or earlier for local count_tokens) and shared.
    pub route: Option<Arc<Route>>,
    /// An error to answer with, rendered by `fail_to_proxy`.
    pub error: Option<GatewayError>,
    /// The body to send upstream when hooks changed it.
    pub outgoing_body: Option<Bytes>,
    /// Where the original downstream session waits while the replay session is installed.
    pub replay: Option<replay::Slot>,
    /// When `upstream_peer` returned (connection setup starts).
    pub peer_chosen: Option<Instant>,
    /// Time spent connecting to the upstream (TCP + TLS; ~0 for a pooled connection).
    pub connect_time: Duration,
    /// When the request headers went upstream.
    pub upstream_sent: Option<Instant>,
    /// When the last upstream response body chunk arrived.
    pub upstream_done: Option<Instant>,
    /// Status sent to the client.
    pub status: u16,
    /// Counted in the in-flight gauge.
    pub in_flight: bool,
    /// Answered by the gateway itself (health, models).
    pub synthetic: bool,
    /// Set when the route translates between API formats.
    pub translation: Option<TranslationState>,
}

/// Per-request translation state.
pub struct TranslationState {
    pub route: Translation,
    /// The client asked for a stream.
    pub stream: bool,
    /// Model named by the request (for stream chunks that need one).
    pub model: String,
    /// Fields that could not be carried over (request side, then response side).
    pub loss: Loss,
    pub response: ResponseMode,
}

/// How the response body is translated.
pub enum ResponseMode {
    /// Response headers not seen yet.
    Pending,
    /// SSE translated chunk by chunk.
    Stream(Box<StreamTranslator>),
    /// A JSON body (or an upstream error, with its status) translated once complete; with
    /// `as_stream`, replayed as a stream because the client asked for one.
    Buffer {
        error: Option<u16>,
        buf: Vec<u8>,
        as_stream: bool,
    },
    /// Forwarded as received: the provider compressed the body despite `accept-encoding:
    /// identity`, so it cannot be read (logged; the client gets the provider's own bytes).
    Untranslated,
}

impl RequestCtx {
    /// Time this request spent in the gateway rather than waiting for the upstream: everything
    /// from `request_filter` to now, minus connecting and minus request-sent → last response
    /// byte received.
    pub fn overhead(&self, now: Instant) -> Duration {
        let Some(start) = self.started else {
            return Duration::ZERO;
        };
        let total = now.saturating_duration_since(start);
        let upstream = match (self.upstream_sent, self.upstream_done) {
            (Some(sent), Some(done)) => done.saturating_duration_since(sent),
            (Some(sent), None) => now.saturating_duration_since(sent),
            _ => Duration::ZERO,
        };
        total
            .saturating_sub(upstream)
            .saturating_sub(self.connect_time)
    }

    /// Label for metrics: the provider (or destination host), `none` before routing.
    pub fn provider_label(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.label.as_str())
    }

    /// Label for metrics: the route action, `synthetic`, or `none`.
    pub fn action_label(&self) -> &'static str {
        if self.synthetic {
            return "synthetic";
        }
        self.route.as_ref().map_or("none", |r| r.action.as_str())
    }
}
