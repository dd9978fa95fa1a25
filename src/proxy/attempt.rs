//! One upstream attempt: what the gateway sends for the client's request this time.
//!
//! Built in `upstream_peer` from the frozen [`super::ctx::ClientRequest`] each time Pingora asks
//! for a peer (the first try, and every retry), so nothing from a failed attempt leaks into the
//! next: the route is resolved again, the credential resolved again (a refreshed one is picked
//! up), the body translated again from the client's bytes.

use super::route::{Route, Translation};
use crate::creds::Secret;
use crate::hooks::Body;
use crate::translate::stream::StreamTranslator;
use crate::translate::Loss;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// State of one upstream attempt.
pub struct Attempt {
    /// 1 for the first attempt.
    pub n: u32,
    pub route: Arc<Route>,
    /// The credential injected on this attempt (resolved in `upstream_peer`).
    pub credential: Option<Arc<Secret>>,
    /// This attempt's request body as the outbound hooks see it: the client's (sharing its
    /// bytes and field index), or the translation.
    pub body: Body,
    /// The bytes sent upstream when they are not the replayed client bytes (translated,
    /// rewritten by a hook).
    pub wire: Option<Bytes>,
    /// Set when the route translates between API formats.
    pub translation: Option<TranslationState>,
    /// Takes the Code Assist envelope off the answer (before any translation).
    pub unwrap: Option<crate::code_assist::Unwrap>,
    /// When `upstream_peer` returned (connection setup starts).
    pub peer_chosen: Option<Instant>,
    /// When the request headers went upstream.
    pub upstream_sent: Option<Instant>,
    /// When the last upstream response body chunk arrived.
    pub upstream_done: Option<Instant>,
}

impl Attempt {
    pub fn new(n: u32, route: Arc<Route>, credential: Option<Arc<Secret>>, body: Body) -> Self {
        Self {
            n,
            route,
            credential,
            body,
            wire: None,
            translation: None,
            unwrap: None,
            peer_chosen: None,
            upstream_sent: None,
            upstream_done: None,
        }
    }
}

/// Translation state of an attempt.
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
    /// The response outgrew `max_response_buffer_bytes`: the client got an error in its format
    /// and the rest of the provider's body is dropped.
    Overflowed,
}
