//! Whole-body buffering before `upstream_peer`, on Pingora's public API.
//!
//! Routing and inbound hooks need the JSON body before Pingora picks the upstream, but Pingora
//! reads the body only after connecting, and its retry buffer stops at 64 KiB
//! (`../shared/notes/build-and-pingora.md` §3(a2)). So `request_filter` reads the whole body
//! (bounded by `max_request_body_bytes`), then swaps the downstream session for a
//! `ReplaySession`: it owns the original session, forwards every response write to it, and
//! hands the complete body to Pingora's forwarding loop as one read (with end-of-stream), again
//! on every attempt ([`rearm`]). In `logging`, [`restore`] puts the original session back so
//! Pingora can reuse the connection for keep-alive. Works for HTTP/1.1 and HTTP/2 (h2c) clients
//! alike.
//!
//! The body is a read, not Pingora's "retry buffer": Pingora writes a retry buffer to an h2
//! upstream before it looks at the answer and gives up on a failed write, so an upstream that
//! answers early (a `401` for a 2 MB request) and resets the stream, as RFC 9113 §8.1 lets it,
//! cost the client a 502 instead of that answer. A body that comes as a read goes through
//! Pingora's duplex loop, which reads the answer after a failed upstream write.

use super::budget::BodyPermit;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::HeaderMap;
use pingora::protocols::http::custom::server::Session as CustomSession;
use pingora::protocols::http::custom::CustomMessageWrite;
use pingora::protocols::http::HttpTask;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::Digest;
use pingora::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the original session waits while the replay session is installed.
pub type Slot = Arc<Mutex<Option<Box<ServerSession>>>>;

/// A response write held back from the client.
pub enum Write {
    Header(Box<ResponseHeader>, bool),
    Body(Bytes, bool),
    Trailers(HeaderMap),
    Tasks(Vec<HttpTask>),
}

/// What the replay session does with response writes. Holding lets the gateway read a whole
/// answer (a capacity error's body) before deciding to send the request again: while held,
/// nothing has reached the client and `response_written()` says so.
#[derive(Default)]
enum HoldMode {
    /// Write through.
    #[default]
    Pass,
    /// Keep every write.
    Hold,
    /// Write what is held, then go on writing through.
    Release,
    /// Write these instead of what is held, and drop the rest of the current response.
    ReleaseInstead(Vec<Write>),
    /// Drop writes (the response that was replaced).
    Drop,
}

/// The held writes and the mode; shared by the replay session and the request context.
#[derive(Default)]
pub struct Held {
    mode: HoldMode,
    writes: Vec<Write>,
    /// The body has not been handed to the current attempt yet.
    body_unsent: bool,
}

/// Handle on a replay session's [`Held`] state.
pub type Hold = Arc<Mutex<Held>>;

fn lock(hold: &Hold) -> std::sync::MutexGuard<'_, Held> {
    hold.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new attempt begins: it gets the whole body again.
pub fn rearm(h: &Hold) {
    lock(h).body_unsent = true;
}

/// Start holding the response writes.
pub fn hold(h: &Hold) {
    let mut g = lock(h);
    g.mode = HoldMode::Hold;
    g.writes.clear();
}

/// Forget what is held and write through again (the next attempt answers); returns what was
/// held.
pub fn discard(h: &Hold) -> Vec<Write> {
    let mut g = lock(h);
    g.mode = HoldMode::Pass;
    std::mem::take(&mut g.writes)
}

/// Let what is held go to the client with the next write.
pub fn release(h: &Hold) {
    let mut g = lock(h);
    if matches!(g.mode, HoldMode::Hold) {
        g.mode = HoldMode::Release;
    }
}

/// Send `writes` (an earlier answer) instead of what is held, with the next write.
pub fn release_instead(h: &Hold, writes: Vec<Write>) {
    let mut g = lock(h);
    g.writes.clear();
    g.mode = HoldMode::ReleaseInstead(writes);
}

fn ends(w: &Write) -> bool {
    match w {
        Write::Header(_, end) | Write::Body(_, end) => *end,
        Write::Trailers(_) => true,
        Write::Tasks(t) => t.iter().any(|t| match t {
            HttpTask::Header(_, end) | HttpTask::Body(_, end) | HttpTask::UpgradedBody(_, end) => {
                *end
            }
            HttpTask::Trailer(_) | HttpTask::Done => true,
            HttpTask::Failed(_) => false,
        }),
    }
}

/// Outcome of reading the request body.
pub enum ReadBody {
    Complete(Bytes),
    /// Past `max_request_body_bytes` (declared or read).
    TooLarge,
    /// The global body budget cannot hold it.
    NoBudget,
    /// Reading failed: the client's fault (or the client is gone).
    Failed(BodyError),
}

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The client went silent for longer than the read timeout.
    Timeout,
    /// The body ended before its declared length or terminating chunk.
    Truncated(String),
    /// The framing is broken (a bad chunk size or extension).
    Malformed(String),
}

impl BodyError {
    fn from_pingora(e: &Error) -> Self {
        match e.etype() {
            ErrorType::ReadTimedout => BodyError::Timeout,
            ErrorType::ConnectionClosed | ErrorType::ReadError => {
                BodyError::Truncated(e.to_string())
            }
            _ => BodyError::Malformed(e.to_string()),
        }
    }
}

/// Grow a budget reservation in steps of at least this much, so a chunked body does not touch
/// the shared counter for every chunk.
const BUDGET_STEP: u64 = 256 * 1024;

/// The request's declared `Content-Length`, if any.
pub fn declared_length(session: &ServerSession) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Read the whole request body, failing fast past `limit` bytes or past what the budget lets
/// `permit` grow to. The caller has reserved the declared length (see [`declared_length`]).
pub async fn read_body(
    session: &mut ServerSession,
    limit: u64,
    declared: Option<u64>,
    permit: &mut BodyPermit,
) -> ReadBody {
    // The first chunk is kept as it came (a body that arrives in one piece is never copied);
    // later chunks go into one buffer sized for the declared length, which the budget covers.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return ReadBody::Failed(BodyError::from_pingora(&e)),
        };
        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
        let total = (held + chunk.len()) as u64;
        if total > limit {
            return ReadBody::TooLarge;
        }
        if total > permit.bytes() {
            let step = (permit.bytes() + BUDGET_STEP).min(limit).max(total);
            if !permit.cover(step) && !permit.cover(total) {
                return ReadBody::NoBudget;
            }
        }
        if held == 0 {
            first = Some(chunk);
            continue;
        }
        if let Some(f) = first.take() {
            let want = declared.map_or(total as usize * 2, |n| n as usize);
            buf.reserve(want.max(total as usize));
            buf.extend_from_slice(&f);
        }
        buf.extend_from_slice(&chunk);
    }
    match first {
        Some(f) => ReadBody::Complete(f),
        None => ReadBody::Complete(buf.freeze()),
    }
}

/// Replace `session`'s downstream with a replay of `body`; returns the slot for [`restore`].
pub fn install(session: &mut pingora_proxy::Session, body: Bytes) -> (Slot, Hold) {
    let slot: Slot = Arc::new(Mutex::new(None));
    let hold: Hold = Arc::default();
    let req = session.downstream_session.req_header().clone();
    let original = std::mem::replace(&mut session.downstream_session, placeholder());
    let replay = ReplaySession {
        inner: Some(original),
        slot: slot.clone(),
        req,
        body,
        hold: hold.clone(),
    };
    *session.downstream_session = ServerSession::new_custom(Box::new(replay));
    (slot, hold)
}

/// A stand-in session on an empty in-memory stream, held only for the instant of a swap (no
/// pipe, no buffer: it is never read or written).
fn placeholder() -> Box<ServerSession> {
    Box::new(ServerSession::new_http1(Box::new(std::io::Cursor::new(
        Vec::<u8>::new(),
    ))))
}

/// Put the original session back (drops the replay session, which hands it over).
pub fn restore(session: &mut pingora_proxy::Session, slot: &Slot) {
    let replay = std::mem::replace(&mut session.downstream_session, placeholder());
    drop(replay);
    let original = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(original) = original {
        session.downstream_session = original;
    }
}

/// The replaying downstream session.
struct ReplaySession {
    /// The client's session; `None` only after `Drop` moved it to the slot.
    inner: Option<Box<ServerSession>>,
    slot: Slot,
    req: RequestHeader,
    body: Bytes,
    hold: Hold,
}

impl Drop for ReplaySession {
    fn drop(&mut self) {
        if let (Some(inner), Ok(mut slot)) = (self.inner.take(), self.slot.lock()) {
            *slot = Some(inner);
        }
    }
}

fn gone() -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        "downstream session already released",
    )
}

impl ReplaySession {
    fn inner(&mut self) -> Result<&mut ServerSession> {
        self.inner.as_deref_mut().ok_or_else(gone)
    }

    /// Route a write through the hold state: held, dropped, or written (after anything held
    /// that is due). Returns whether the response is complete.
    async fn gate(&mut self, w: Write) -> Result<bool> {
        let due = {
            let mut g = lock(&self.hold);
            match std::mem::take(&mut g.mode) {
                HoldMode::Pass => vec![w],
                HoldMode::Hold => {
                    let done = ends(&w);
                    g.writes.push(w);
                    g.mode = HoldMode::Hold;
                    return Ok(done);
                }
                HoldMode::Release => {
                    let mut all = std::mem::take(&mut g.writes);
                    all.push(w);
                    all
                }
                HoldMode::ReleaseInstead(instead) => {
                    g.writes.clear();
                    g.mode = if ends(&w) {
                        HoldMode::Pass
                    } else {
                        HoldMode::Drop
                    };
                    instead
                }
                HoldMode::Drop => {
                    if !ends(&w) {
                        g.mode = HoldMode::Drop;
                    }
                    return Ok(ends(&w));
                }
            }
        };
        let mut done = false;
        for w in due {
            done |= self.write_now(w).await?;
        }
        Ok(done)
    }

    async fn write_now(&mut self, w: Write) -> Result<bool> {
        let inner = self.inner()?;
        match w {
            Write::Header(resp, end) => {
                inner.write_response_header(resp).await?;
                if end {
                    inner.write_response_body(Bytes::new(), true).await?;
                }
                Ok(end)
            }
            Write::Body(data, end) => {
                inner.write_response_body(data, end).await?;
                Ok(end)
            }
            Write::Trailers(t) => {
                inner.write_response_trailers(t).await?;
                Ok(true)
            }
            Write::Tasks(tasks) => inner.response_duplex_vec(tasks).await,
        }
    }

    /// The body, when the current attempt has not had it yet (an empty body is never sent).
    fn take_unsent_body(&mut self) -> Option<Bytes> {
        let mut g = lock(&self.hold);
        if g.body_unsent && !self.body.is_empty() {
            g.body_unsent = false;
            return Some(self.body.clone());
        }
        None
    }

    /// Whether writes are being held back (nothing of them has reached the client yet). In
    /// `Drop` mode a replacement answer was already written, so the client has an answer.
    fn holding(&self) -> bool {
        matches!(
            lock(&self.hold).mode,
            HoldMode::Hold | HoldMode::Release | HoldMode::ReleaseInstead(_)
        )
    }
}

#[async_trait]
impl CustomSession for ReplaySession {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        Ok(self.take_unsent_body())
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, end: bool) -> Result<()> {
        self.gate(Write::Header(resp, end)).await.map(|_| ())
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.gate(Write::Header(Box::new(resp.clone()), end))
            .await
            .map(|_| ())
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.gate(Write::Body(data, end)).await.map(|_| ())
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        self.gate(Write::Trailers(trailers)).await.map(|_| ())
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        self.gate(Write::Tasks(tasks)).await
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        if let Some(s) = self.inner.as_deref_mut() {
            s.set_read_timeout(timeout);
        }
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.inner
            .as_deref()
            .and_then(ServerSession::get_read_timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        if let Some(s) = self.inner.as_deref_mut() {
            s.set_write_timeout(timeout);
        }
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.inner
            .as_deref()
            .and_then(ServerSession::get_write_timeout)
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        if let Some(s) = self.inner.as_deref_mut() {
            s.set_total_drain_timeout(timeout);
        }
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.inner
            .as_deref()
            .and_then(ServerSession::get_total_drain_timeout)
    }

    fn request_summary(&self) -> String {
        self.inner
            .as_deref()
            .map(ServerSession::request_summary)
            .unwrap_or_default()
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        if self.holding() {
            // Held writes have not reached the client.
            return None;
        }
        self.inner
            .as_deref()
            .and_then(ServerSession::response_written)
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        if let Some(s) = self.inner.as_deref_mut() {
            s.shutdown().await;
        }
    }

    fn is_body_done(&mut self) -> bool {
        self.body.is_empty() || !lock(&self.hold).body_unsent
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner()?.finish_body().await
    }

    fn is_body_empty(&mut self) -> bool {
        self.body.is_empty()
    }

    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if let Some(body) = self.take_unsent_body() {
            return Ok(Some(body));
        }
        // The client's body was read before: this only notices the client going away.
        self.inner()?.read_body_or_idle(no_body_expected).await
    }

    fn body_bytes_sent(&self) -> usize {
        self.inner
            .as_deref()
            .map_or(0, ServerSession::body_bytes_sent)
    }

    fn body_bytes_read(&self) -> usize {
        self.body.len()
    }

    fn digest(&self) -> Option<&Digest> {
        self.inner.as_deref().and_then(ServerSession::digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        self.inner
            .as_deref_mut()
            .and_then(ServerSession::digest_mut)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        self.inner.as_deref().and_then(ServerSession::client_addr)
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.inner.as_deref().and_then(ServerSession::server_addr)
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        self.inner
            .as_deref()
            .map(ServerSession::to_h1_raw)
            .unwrap_or_default()
    }

    fn enable_retry_buffering(&mut self) {}

    fn retry_buffer_truncated(&self) -> bool {
        false
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        // The body comes as a read (see the module docs), so each attempt gets it from there.
        None
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>> {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _reader: Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
    ) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }
}
