//! Ingress: which listener a request came in on, and the accept-time code of the reverse
//! listener.
//!
//! Every listener feeds the same [`super::Gateway`] service; [`Ingress`] tells the phases where a
//! request came from (the reverse listener, the proxy listener's decrypted and plain requests,
//! jailed traffic), each through its own accept path that ends in `process_new` of the same
//! service.
//!
//! The reverse listener speaks HTTP/1.1 and h2c on one port. Pingora's own h2c detection reads
//! the 24-byte HTTP/2 preface with no timeout, so a connection that sends fewer bytes (a short
//! `GET / HTTP/1.0` request, a stalled client) would wait forever. [`ReverseListener`] decides at
//! accept time instead: it reads only as many bytes as it takes to tell (usually one read), with
//! `timeouts.client_read` as the limit, and hands them back to the stream. One proxy app serves
//! both protocols: an h2c connection reaches Pingora's detection with the preface already there,
//! an HTTP/1 one is marked so that detection does not wait for bytes that may never come
//! ([`KnownHttp1`]). A request that cannot be the preface is answered as HTTP/1 at once.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where a request entered the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// The reverse-proxy listener (`host:port`): clients point their base URL at the gateway.
    Reverse,
    /// The explicit proxy listener (`inspector.proxy_listen`): a client's `CONNECT` (or
    /// absolute-form HTTP) request, TLS decrypted with a leaf from the local CA. A request with
    /// no sentinel and no matching rule goes on to the host it named.
    Intercept,
    /// The same listener, a plain-HTTP request in absolute form (`GET http://host/…`): as
    /// `Intercept`, over HTTP.
    ProxyHttp,
}

impl Ingress {
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Reverse => "reverse",
            Ingress::Intercept => "intercept",
            Ingress::ProxyHttp => "proxy_http",
        }
    }

    /// Whether requests name the host they are for (intercepted ones), which is where they go
    /// when nothing else routes them.
    pub fn has_original_host(self) -> bool {
        matches!(self, Ingress::Intercept | Ingress::ProxyHttp)
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

/// A connection already known to speak HTTP/1.
///
/// The reverse listener's proxy app has Pingora's h2c detection on, which peeks at the first 24
/// bytes of every connection and waits until they arrive. For a connection [`sniff`] has already
/// classified as HTTP/1, the peek answers at once with bytes that are not the preface, so
/// Pingora goes straight to HTTP/1 and one app (one upstream connector, one set of connection
/// pools) serves both protocols. Everything else is passed through to the wrapped stream.
#[derive(Debug)]
struct KnownHttp1(Stream);

impl AsyncRead for KnownHttp1 {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for KnownHttp1 {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for KnownHttp1 {
    async fn shutdown(&mut self) {
        self.0.shutdown().await;
    }
}

impl UniqueID for KnownHttp1 {
    fn id(&self) -> UniqueIDType {
        self.0.id()
    }
}

impl Ssl for KnownHttp1 {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.0.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.0.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.0.selected_alpn_proto()
    }
}

impl GetTimingDigest for KnownHttp1 {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.0.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.0.get_write_pending_time()
    }
}

impl GetProxyDigest for KnownHttp1 {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for KnownHttp1 {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for KnownHttp1 {
    /// "Peeked, and it is not the HTTP/2 preface": zeros never match it.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        buf.fill(0);
        Ok(true)
    }
}

/// The reverse listener's application: HTTP/1.1 and h2c on one port, served by one proxy app
/// with Pingora's h2c detection on.
pub struct ReverseListener<A> {
    pub app: Arc<A>,
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
        match sniff(stream, self.first_bytes_timeout).await {
            // Pingora's own peek finds the preface in the bytes put back.
            Sniffed::H2(s) => self.app.process_new(s, shutdown).await,
            Sniffed::H1(s) => {
                let s: Stream = Box::new(KnownHttp1(s));
                self.app.process_new(s, shutdown).await
            }
            Sniffed::Gone => None,
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
