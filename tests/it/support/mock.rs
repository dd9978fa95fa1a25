//! Mock upstream servers for integration tests.
//!
//! This module owns the fake LLM providers the gateway is pointed at: a
//! [`MockUpstream`] listens on an ephemeral `127.0.0.1` port, speaks HTTP/1.1
//! and HTTP/2 (h2c prior knowledge in plain mode, ALPN `h2` over TLS), records
//! every request it receives ([`Recorded`]) and answers each one with a fixed
//! [`Reply`]. It also provides [`Gate`] (lets a test hold a streaming reply
//! mid-body) and helpers for port numbers nobody listens on.
//!
//! Everything runs on the test's tokio runtime; dropping the [`MockUpstream`]
//! stops the accept loop and tears down every open connection and in-flight
//! response. Synchronisation is event based ([`MockUpstream::wait_for_requests`],
//! [`Gate`]), never sleep based.

// Shared test support: not every test binary uses every helper.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::tls::TestCa;

/// Response body type used by the mock.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How a [`MockUpstream`] answers every request it receives.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `status` with `content-type: application/json` and `body` serialised.
    Json {
        status: u16,
        body: serde_json::Value,
    },
    /// Arbitrary status, headers (appended in order) and body. Hyper still
    /// manages framing: it adds `content-length` when absent and strips
    /// connection-specific headers on HTTP/2.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// `200` with `content-type: application/json` describing the request:
    ///
    /// ```json
    /// {"method": "POST", "path": "/v1/messages?beta=true", "version": "HTTP/1.1",
    ///  "headers": {"content-type": "application/json", ...},
    ///  "body_len": 123, "body_prefix": "{\"model\":..."}
    /// ```
    ///
    /// `headers` maps lowercased names to values (repeated names are joined
    /// with `", "`); `body_prefix` is the first 64 body bytes, lossy UTF-8.
    Echo,
    /// `200` with `content-type: text/event-stream`, streaming each element
    /// of `events` verbatim as its own body frame (each should be a complete
    /// SSE event such as `"data: {...}\n\n"`).
    ///
    /// With a `gate`, the first event is sent (and flushed), then the stream
    /// stalls until [`Gate::open`] is called; then the remaining events are
    /// sent and the body ends. The gate is awaited even when there is only
    /// one event, so a test can hold the stream open.
    Sse {
        events: Vec<String>,
        gate: Option<Gate>,
    },
    /// Waits `after` (once the request body has been read and recorded),
    /// then answers with `reply`. Models a slow upstream.
    Delay { after: Duration, reply: Box<Reply> },
    /// The given status with an empty body.
    Status(u16),
    /// Computed from the request (the count of earlier requests included): a token endpoint
    /// that rotates, a provider that rejects one credential and accepts another.
    Script(Script),
}

/// A reply computed per request: `f(request, n)` where `n` counts earlier requests.
#[derive(Clone)]
pub struct Script(pub Arc<ReplyFn>);

/// `f(request, earlier requests)`.
pub type ReplyFn = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Script(..)")
    }
}

impl Reply {
    /// A reply computed from each request and how many came before it.
    pub fn script(f: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        Reply::Script(Script(Arc::new(f)))
    }
}

/// A one-shot latch a test opens to release a gated [`Reply::Sse`].
///
/// Opening is sticky: opening before anyone waits, or opening twice, is fine,
/// and every waiter (including later ones) is released.
#[derive(Clone, Debug)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    /// Creates a closed gate.
    pub fn new() -> Self {
        Self(watch::Sender::new(false))
    }

    /// Opens the gate, releasing current and future waiters.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Returns whether [`Gate::open`] has been called.
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the gate is open (immediately if it already is).
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // Cannot fail: `self` keeps the sender alive.
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// One request as received by a [`MockUpstream`].
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request method, e.g. `"POST"`.
    pub method: String,
    /// Path and query exactly as received, e.g. `"/v1/messages?beta=true"`.
    pub path: String,
    /// URI authority if the request carried one: the `:authority`
    /// pseudo-header on HTTP/2, the absolute-form target on HTTP/1.1.
    /// (HTTP/1.1 origin-form requests carry it in the `host` header instead.)
    pub authority: Option<String>,
    /// Headers with lowercased names, in the order hyper's `HeaderMap`
    /// yields them: arrival order, except that repeats of a name are grouped
    /// after its first occurrence. Values are lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// The complete request body.
    pub body: Bytes,
    /// Protocol version of the request (`HTTP_11` or `HTTP_2`).
    pub version: Version,
}

impl Recorded {
    fn new(parts: &Parts, body: Bytes) -> Self {
        let uri = &parts.uri;
        Self {
            method: parts.method.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_owned()),
            authority: uri.authority().map(|a| a.as_str().to_owned()),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            version: parts.version,
        }
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` (case-insensitive) is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The body as lossy UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON. Panics (showing the body) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "request body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// State shared between a [`MockUpstream`] handle and its server tasks.
struct Shared {
    /// Every request recorded so far; receivers are woken on each push.
    requests: watch::Sender<Vec<Recorded>>,
    /// Number of accepted TCP connections.
    connections: AtomicUsize,
}

/// A mock HTTP upstream on an ephemeral `127.0.0.1` port.
///
/// Serves until dropped; dropping it closes the listener and aborts every
/// connection and in-flight response.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping this sender is the shutdown signal for all server tasks.
    _shutdown: watch::Sender<()>,
}

impl MockUpstream {
    /// Starts a plain-text server (HTTP/1.1 and h2c prior knowledge).
    pub async fn start(reply: Reply) -> Self {
        Self::spawn(reply, None).await
    }

    /// Starts a TLS server presenting `ca`'s leaf certificate (valid for
    /// `localhost` and `127.0.0.1`); HTTP/2 via ALPN `h2`, else HTTP/1.1.
    pub async fn start_tls(reply: Reply, ca: &TestCa) -> Self {
        Self::spawn(reply, Some(ca.acceptor())).await
    }

    async fn spawn(reply: Reply, tls: Option<boring::ssl::SslAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock upstream local addr");
        let shared = Arc::new(Shared {
            requests: watch::Sender::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        let exec = ScopedExecutor(shutdown_rx);
        exec.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            reply,
            tls,
            exec.clone(),
        ));
        Self {
            addr,
            shared,
            _shutdown: shutdown,
        }
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `"127.0.0.1:PORT"`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far, in the order their bodies completed.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.borrow().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.requests.borrow().len()
    }

    /// Number of TCP connections accepted so far (for TLS, including ones
    /// whose handshake then failed). Useful for connection-reuse tests.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Resolves once at least `n` requests have been recorded. A request is
    /// recorded as soon as its body has been fully read, before the reply
    /// (including any [`Reply::Delay`]) is produced.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut rx = self.shared.requests.subscribe();
        // Cannot fail: `self` keeps the sender alive.
        let _ = rx.wait_for(|requests| requests.len() >= n).await;
    }
}

/// Binds `127.0.0.1:0`, drops the listener and returns its port: a port that
/// (almost certainly) refuses connections.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Synchronous variant of [`closed_port`]: a port that is free right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Spawns tasks on the current tokio runtime that are cancelled as soon as
/// the owning [`MockUpstream`] drops its shutdown sender. Also used as the
/// hyper executor, so HTTP/2 stream tasks are cancelled too.
#[derive(Clone)]
struct ScopedExecutor(watch::Receiver<()>);

impl ScopedExecutor {
    fn spawn<F>(&self, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut shutdown = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                // Nothing is ever sent: this only resolves (with `Err`) once
                // the sender is dropped.
                _ = shutdown.changed() => {}
            }
        });
    }
}

impl<F> hyper::rt::Executor<F> for ScopedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(fut);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    reply: Reply,
    tls: Option<boring::ssl::SslAcceptor>,
    exec: ScopedExecutor,
) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        // Small SSE frames must not sit in Nagle's buffer.
        let _ = tcp.set_nodelay(true);
        let (shared, reply, exec2) = (Arc::clone(&shared), reply.clone(), exec.clone());
        match tls.clone() {
            None => exec.spawn(serve_connection(tcp, shared, reply, exec2)),
            Some(acceptor) => exec.spawn(async move {
                // A failed handshake is the client's problem (e.g. a test
                // checking that an untrusted upstream is rejected).
                if let Ok(stream) = tokio_boring::accept(&acceptor, tcp).await {
                    serve_connection(stream, shared, reply, exec2).await;
                }
            }),
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (detected from the connection preface) on `io`.
async fn serve_connection<I>(io: I, shared: Arc<Shared>, reply: Reply, exec: ScopedExecutor)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(req, Arc::clone(&shared), reply.clone()));
    // Errors here are client disconnects and protocol errors; the client
    // side of the test observes them.
    let _ = auto::Builder::new(exec)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    reply: Reply,
) -> Result<Response<Body>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let recorded = Recorded::new(&parts, body);
    let mut earlier = 0;
    shared.requests.send_modify(|requests| {
        earlier = requests.len();
        requests.push(recorded.clone());
    });
    Ok(respond(reply, &recorded, earlier).await)
}

async fn respond(mut reply: Reply, req: &Recorded, earlier: usize) -> Response<Body> {
    loop {
        match reply {
            Reply::Delay {
                after,
                reply: inner,
            } => {
                tokio::time::sleep(after).await;
                reply = *inner;
            }
            Reply::Script(Script(f)) => reply = f(req, earlier),
            _ => break,
        }
    }
    match reply {
        Reply::Json { status, body } => {
            response(status, Some("application/json"), full(body.to_string()))
        }
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let mut resp = response(status, None, full(body));
            for (name, value) in headers {
                resp.headers_mut().append(
                    HeaderName::try_from(name).expect("valid header name"),
                    HeaderValue::try_from(value).expect("valid header value"),
                );
            }
            resp
        }
        Reply::Echo => response(200, Some("application/json"), full(echo(req).to_string())),
        Reply::Sse { events, gate } => {
            response(200, Some("text/event-stream"), sse_body(events, gate))
        }
        Reply::Status(status) => response(status, None, full(Bytes::new())),
        Reply::Delay { .. } | Reply::Script(_) => {
            unreachable!("delays and scripts unwrapped above")
        }
    }
}

/// A response with `status`, an optional `content-type` and `body`.
fn response(status: u16, content_type: Option<&'static str>, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).expect("valid status code");
    if let Some(content_type) = content_type {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    resp
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

/// The JSON document returned by [`Reply::Echo`].
fn echo(req: &Recorded) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &req.headers {
        match headers.get_mut(name) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), value.clone().into());
            }
        }
    }
    let prefix = &req.body[..req.body.len().min(64)];
    json!({
        "method": req.method,
        "path": req.path,
        "version": format!("{:?}", req.version),
        "headers": headers,
        "body_len": req.body.len(),
        "body_prefix": String::from_utf8_lossy(prefix),
    })
}

/// A genuinely streamed body: one frame per event, optionally stalled on
/// `gate` after the first one.
fn sse_body(events: Vec<String>, gate: Option<Gate>) -> Body {
    let mut events = events
        .into_iter()
        .map(|event| Ok(Frame::data(Bytes::from(event))));
    let first: Vec<_> = events.by_ref().take(1).collect();
    let rest: Vec<_> = events.collect();
    // Yields no frame; only delays the rest of the stream until the gate opens.
    let wait = stream::once(async move {
        if let Some(gate) = gate {
            gate.wait().await;
        }
    })
    .filter_map(|()| async { None });
    StreamBody::new(stream::iter(first).chain(wait).chain(stream::iter(rest))).boxed_unsync()
}
