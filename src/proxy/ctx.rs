//! Per-request state shared by every Pingora phase (`ProxyHttp::CTX`).
//!
//! Any phase can read what earlier phases decided: the buffered body, hook metadata, the route,
//! a pending error, timings. Later features (flow capture, stream translation, OAuth replay) add
//! their per-request state here rather than threading it through phase signatures.

use super::error::GatewayError;
use super::replay;
use super::route::Route;
use crate::hooks::{Body, Overrides, RequestMeta};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// State of one request.
#[derive(Default)]
pub struct RequestCtx {
    /// When `request_filter` started (headers read).
    pub started: Option<Instant>,
    pub meta: RequestMeta,
    pub body: Body,
    pub overrides: Overrides,
    pub route: Option<Route>,
    /// An error to answer with, rendered by `fail_to_proxy`.
    pub error: Option<GatewayError>,
    /// The body to send upstream when hooks changed it.
    pub outgoing_body: Option<Bytes>,
    /// Where the original downstream session waits while the replay session is installed.
    pub replay: Option<replay::Slot>,
    /// Time spent in ccproxy's own phases so far.
    pub overhead: Duration,
    /// When the request headers went upstream.
    pub upstream_sent: Option<Instant>,
    /// Status sent to the client.
    pub status: u16,
    /// Counted in the in-flight gauge.
    pub in_flight: bool,
    /// Answered by the gateway itself (health, models).
    pub synthetic: bool,
}

impl RequestCtx {
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
