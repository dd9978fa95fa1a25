//! The one flow-recording seam: every phase that sees request or response bytes reports them
//! here, and nowhere else.
//!
//! A [`FlowRecorder`] is chosen when the server is built (today [`NoRecorder`]; the inspector
//! plugs in a store). For each request the gateway asks it for a [`FlowCapture`]; `None` means
//! the request is not recorded and every call below costs one branch. The capture sees, in
//! order: the client request (head and body as the gateway will forward it), per upstream attempt
//! the request as sent and the provider's response head and raw body chunks (before
//! translation), the response head and body chunks the client got (after translation), and a
//! closing summary. Calls are synchronous and must not block: a capture copies what it keeps
//! (bounded) and hands work to its own task; it can never delay forwarding.

use super::error::GatewayError;
use super::ingress::Ingress;
use crate::hooks::RequestMeta;
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};

/// Decides which requests are recorded and creates their captures.
pub trait FlowRecorder: Send + Sync {
    /// A capture for the request `request_id` that arrived on `ingress`, or `None` to record
    /// nothing for it.
    fn start(&self, request_id: &str, ingress: Ingress) -> Option<Box<dyn FlowCapture>>;
}

/// One request's recording. Every method defaults to doing nothing.
pub trait FlowCapture: Send + Sync {
    /// The client's request after the inbound stage: head as received (hooks applied), the body
    /// bytes as they will be forwarded, and what the inbound stage learned.
    fn client_request(&mut self, _head: &RequestHeader, _body: &Bytes, _meta: &RequestMeta) {}

    /// Hook `name` of `stage` ran; `changed` when it changed the request's headers or body.
    fn hook_ran(&mut self, _stage: &'static str, _name: &'static str, _changed: bool) {}

    /// What went upstream on attempt `attempt` (1-based) to `origin` (`scheme://authority`):
    /// head after credential injection, translation and outbound hooks, and the body bytes
    /// sent.
    fn upstream_request(
        &mut self,
        _attempt: u32,
        _origin: &str,
        _head: &RequestHeader,
        _body: &Bytes,
    ) {
    }

    /// The provider's response head on attempt `attempt`.
    fn upstream_response(&mut self, _attempt: u32, _head: &ResponseHeader) {}

    /// A chunk of the provider's response body, before any translation.
    /// Chunks are shared (`Bytes`), so keeping one costs no copy.
    fn upstream_body(&mut self, _chunk: &Bytes, _end: bool) {}

    /// The response head the client gets (the gateway's own answers included).
    fn client_response(&mut self, _head: &ResponseHeader) {}

    /// A chunk of the response body the client gets, after translation.
    /// A pass-through chunk is the same `Bytes` the provider sent.
    fn client_body(&mut self, _chunk: &Bytes, _end: bool) {}

    /// The request is over.
    fn finish(self: Box<Self>, _summary: &FlowSummary<'_>) {}
}

/// How a request ended.
#[derive(Debug)]
pub struct FlowSummary<'a> {
    /// Status sent to the client (`0` when none was sent).
    pub status: u16,
    /// Provider name or destination host; `none` when not routed.
    pub provider: &'a str,
    /// Route action label (`redirect`, `transform`, `synthetic`, `none`).
    pub action: &'static str,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Why each attempt after the first was made (`auth_refresh`, `capacity`, …).
    pub retries: &'a [&'static str],
    /// API format of the provider the last attempt went to (`None`: not routed, or not an LLM
    /// API).
    pub provider_format: Option<crate::translate::Format>,
    /// Fields translation could not carry over.
    pub loss: &'a [String],
    /// The gateway error the client got, if any.
    pub error: Option<&'a GatewayError>,
}

/// Records nothing.
#[derive(Debug, Default)]
pub struct NoRecorder;

impl FlowRecorder for NoRecorder {
    fn start(&self, _request_id: &str, _ingress: Ingress) -> Option<Box<dyn FlowCapture>> {
        None
    }
}
