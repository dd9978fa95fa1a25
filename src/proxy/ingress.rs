//! Ingress: which listener a request came in on, and the accept-time code of the reverse
//! listener.
//!
//! Every listener feeds the same [`super::Gateway`] service; [`Ingress`] tells the phases where a
//! request came from (today only the reverse listener; intercepted TLS and jailed traffic come
//! next, each through its own accept path that ends in `process_new` of the same service).
//!
//! The reverse listener speaks HTTP/1.1 and h2c on one port. Pingora's own h2c detection reads
//! the 24-byte HTTP/2 preface with no timeout, so a connection that sends fewer bytes (a short
//! `GET / HTTP/1.0` request, a stalled client) would wait forever. [`ReverseListener`] decides at
//! accept time instead: it reads only as many bytes as it takes to tell (usually one read), with
//! `timeouts.client_read` as the limit, hands them back to the stream, and passes the connection
//! to an HTTP/1 proxy or an h2c proxy. A request that cannot be the preface is answered as
//! HTTP/1 at once.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where a request entered the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// The reverse-proxy listener (`host:port`): clients point their base URL at the gateway.
    Reverse,
}

impl Ingress {
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Reverse => "reverse",
        }
    }

    /// Whether the gateway answers `/`, `/health` and `/v1/models` itself on this listener
    /// (only where a client talks to the gateway by name, not to a provider through it).
    pub fn serves_synthetic(self) -> bool {
        matches!(self, Ingress::Reverse)
    }
}

/// What the first bytes of a connection say.
enum Sniffed {
    /// The HTTP/2 preface.
    H2(Stream),
    /// Anything else: HTTP/1.
    H1(Stream),
    /// Closed, failed or silent past the timeout before saying anything.
    Gone,
}

/// Read just enough of `stream` to tell the HTTP/2 preface from an HTTP/1 request, then put the
/// bytes back.
async fn sniff(stream: Stream, limit: Duration) -> Sniffed {
    if !stream.as_any().is::<L4Stream>() {
        // Not a plain TCP stream (nothing else reaches this listener today): let Pingora decide.
        return Sniffed::H2(stream);
    }
    let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
        return Sniffed::Gone;
    };
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + limit;
    let h2 = loop {
        let read = tokio::time::timeout_at(deadline, l4.read(&mut buf[len..])).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Sniffed::Gone,
            Ok(Ok(n)) => len += n,
        }
        if buf[..len] != H2_PREFACE[..len] {
            break false;
        }
        if len == H2_PREFACE.len() {
            break true;
        }
    };
    l4.rewind(&buf[..len]);
    let stream: Stream = l4;
    if h2 {
        Sniffed::H2(stream)
    } else {
        Sniffed::H1(stream)
    }
}

/// An app built on first use, or earlier by [`Lazy::warm_up`] on a spare thread.
///
/// Each Pingora proxy app owns its upstream connector, whose TLS context loads the system CA
/// bundle (tens of milliseconds of CPU). The reverse listener starts warming its h2c app when
/// the first connection arrives, so neither the gateway's cold start nor the first h2c client
/// pays for it in the common case.
pub struct Lazy<A> {
    cell: OnceLock<Arc<A>>,
    warming: AtomicBool,
    build: Box<dyn Fn() -> A + Send + Sync>,
}

impl<A> Lazy<A> {
    pub fn new(build: impl Fn() -> A + Send + Sync + 'static) -> Self {
        Self {
            cell: OnceLock::new(),
            warming: AtomicBool::new(false),
            build: Box::new(build),
        }
    }

    /// The app, built now if nobody has yet (concurrent callers wait for one build).
    pub fn get(&self) -> &Arc<A> {
        self.cell.get_or_init(|| Arc::new((self.build)()))
    }

    /// Build the app on a background thread so its first user does not wait (once; later calls
    /// cost one atomic load).
    pub fn warm_up(self: &Arc<Self>)
    where
        A: Send + Sync + 'static,
    {
        if self.warming.load(Ordering::Relaxed) || self.warming.swap(true, Ordering::Relaxed) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ccproxy-warm-up".into())
            .spawn(move || {
                me.get();
            });
        if let Err(e) = spawned {
            // Not fatal: the first h2c connection builds it instead.
            tracing::debug!(error = %e, "cannot start the warm-up thread");
        }
    }
}

/// The reverse listener's application: HTTP/1.1 and h2c on one port.
pub struct ReverseListener<A> {
    /// HTTP/1 proxy (Pingora's h2c detection off).
    pub http1: Arc<A>,
    /// h2c proxy (Pingora's h2c detection on; it finds the preface already there).
    pub h2c: Arc<Lazy<A>>,
    /// How long a new connection may stay silent.
    pub first_bytes_timeout: Duration,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ReverseListener<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.h2c.warm_up();
        match sniff(stream, self.first_bytes_timeout).await {
            Sniffed::H2(s) => self.h2c.get().process_new(s, shutdown).await,
            Sniffed::H1(s) => self.http1.process_new(s, shutdown).await,
            Sniffed::Gone => None,
        }
    }

    async fn cleanup(&self) {
        self.http1.cleanup().await;
        if let Some(h2c) = self.h2c.cell.get() {
            h2c.cleanup().await;
        }
    }
}
