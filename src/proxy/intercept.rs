//! The explicit proxy listener (`inspector.proxy_listen`): clients that honour `HTTPS_PROXY`
//! send `CONNECT host:port`; the gateway answers `200`, terminates the client's TLS with a leaf
//! for that host minted by the local CA ([`crate::local_ca`]), and hands the decrypted stream
//! to the same proxy service as the reverse listener, with [`Ingress::Intercept`], so hooks,
//! routing, translation, capture and metrics apply alike. A request that is not `CONNECT`
//! (absolute-form plain HTTP) goes to the same service unencrypted. What cannot be taken as a
//! proxy request (a bad `CONNECT` target, an oversized or late head, TLS or another protocol
//! spoken to this HTTP listener) is answered here with a JSON error naming what was wrong.
//!
//! [`Ingress::Intercept`]: super::ingress::Ingress::Intercept

use super::error::GatewayError;
use crate::local_ca::LocalCa;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::tls::ssl::{NameType, SslAcceptor, SslMethod};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest `CONNECT` request head read.
const MAX_HEAD: usize = 8 * 1024;

/// What every intercepting ingress shares (the `CONNECT` listener here, the jail's TCP streams
/// in [`crate::wireguard`]): the proxy apps, the CA, and the rules that decide between
/// decrypting a TLS stream and relaying it as it is.
pub struct Interceptor<A> {
    /// Serves the decrypted streams (`Ingress::Intercept`).
    pub app: Arc<A>,
    /// Serves plain HTTP (`Ingress::ProxyHttp`).
    pub plain: Arc<A>,
    pub ca: Arc<LocalCa>,
    /// How long a new connection may take to send its first bytes (request head, TLS hello).
    pub head_timeout: Duration,
    /// Hosts whose TLS is relayed as it is (`inspector.ignore_hosts`).
    pub ignore_hosts: Vec<regex::Regex>,
    /// `inspector.resolve`, for relayed streams too.
    pub resolve: std::collections::HashMap<String, std::net::SocketAddr>,
    /// The TLS acceptor (ALPN, key log); the certificate is chosen per connection.
    pub acceptor: SslAcceptor,
    /// Hosts whose clients were already told (in the log) that they do not trust the local CA.
    pub untrusted_warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How many hosts [`Interceptor::untrusted_warned`] remembers; past that, no more warnings
/// (the first ones have said what to do).
const UNTRUSTED_WARNINGS: usize = 64;

/// Whether a failed client handshake says outright that the client refused the minted
/// certificate: its TLS alert (unknown CA, bad or unknown certificate), or, from OpenSSL clients
/// (curl, Python), a record that does not decrypt: in TLS 1.3 they send that alert before
/// switching to the handshake keys, so it arrives in the clear where BoringSSL expects an
/// encrypted record. (Node, and so Claude Code, just closes the connection.)
fn refused_in_so_many_words(error: &str) -> bool {
    let e = error.to_ascii_uppercase();
    [
        "ALERT_UNKNOWN_CA",
        "ALERT_BAD_CERTIFICATE",
        "ALERT_CERTIFICATE_UNKNOWN",
        "DECRYPTION_FAILED_OR_BAD_RECORD_MAC",
    ]
    .iter()
    .any(|alert| e.contains(alert))
}

/// Where a relayed stream goes.
#[derive(Debug, Clone)]
pub enum RelayTarget {
    /// A host name (looked up in `inspector.resolve`, then DNS) and port.
    Name(String, u16),
    /// An address as the client dialled it.
    Addr(std::net::SocketAddr),
}

impl<A: ServerApp + Send + Sync + 'static> Interceptor<A> {
    /// Whether TLS for `host` is relayed undecrypted.
    pub fn ignored(&self, host: &str) -> bool {
        self.ignore_hosts.iter().any(|r| r.is_match(host))
    }

    /// A stream that should carry TLS (a `CONNECT` tunnel, a jailed connection to port 443):
    /// decrypted ([`Interceptor::decrypt`]) unless `ignore_hosts` matches `host` or the
    /// hello's SNI, or the first bytes are not a TLS ClientHello (SSH, a database protocol);
    /// those are relayed as they are to `target`.
    pub async fn intercept_tls(
        &self,
        mut l4: L4Stream,
        host: String,
        target: RelayTarget,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.ignored(&host) {
            self.relay(&mut l4, target).await;
            return None;
        }
        let (first, hello) = self
            .first_bytes(&mut l4, |b| match crate::tls_hello::parse(b) {
                crate::tls_hello::Hello::NeedMore => None,
                other => Some(other),
            })
            .await?;
        l4.rewind(&first);
        match hello {
            crate::tls_hello::Hello::ClientHello { sni } => {
                let host = sni.unwrap_or(host);
                if self.ignored(&host) {
                    self.relay(&mut l4, target).await;
                    return None;
                }
                self.decrypt(l4, host, shutdown).await
            }
            _ => {
                self.relay(&mut l4, target).await;
                None
            }
        }
    }

    /// Terminate the client's TLS with a leaf for its SNI (else `host`) and serve the decrypted
    /// stream through the proxy service as [`Ingress::Intercept`].
    ///
    /// [`Ingress::Intercept`]: super::ingress::Ingress::Intercept
    pub async fn decrypt(
        &self,
        l4: L4Stream,
        host: String,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mint = Mint {
            ca: self.ca.clone(),
            connect_host: host,
            offered: std::sync::atomic::AtomicBool::new(false),
        };
        // A client that stalls mid-handshake is given up on like one that never sends a head.
        let handshake =
            pingora::protocols::tls::server::handshake_with_callback(&self.acceptor, l4, &mint);
        let tls = match tokio::time::timeout(self.head_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.handshake_failed(&mint, &e.to_string());
                return None;
            }
            Err(_) => {
                tracing::debug!(
                    host = mint.connect_host,
                    "intercepted TLS handshake timed out"
                );
                return None;
            }
        };
        let stream: Stream = Box::new(tls);
        self.app.process_new(stream, shutdown).await
    }

    /// Log a failed client handshake. A client that breaks off the handshake once it has the
    /// minted certificate most likely does not trust the local CA, which is the one thing its
    /// user must fix: that is a warning saying how (once per host). Anything else is debug.
    fn handshake_failed(&self, mint: &Mint, error: &str) {
        let offered = mint.offered.load(std::sync::atomic::Ordering::Relaxed);
        let host = mint.connect_host.as_str();
        let first = offered
            && self.untrusted_warned.lock().is_ok_and(|mut warned| {
                warned.len() < UNTRUSTED_WARNINGS && warned.insert(host.to_owned())
            });
        if !first {
            tracing::debug!(host, error, "intercepted TLS handshake failed");
            return;
        }
        let how = if refused_in_so_many_words(error) {
            "refused"
        } else {
            "closed the connection on"
        };
        tracing::warn!(
            host,
            error,
            ca = %self.ca.cert_path().display(),
            "a client {how} the certificate ccproxy made for {host}: most likely it does not \
             trust ccproxy's CA. `ccproxy ca` says how to trust it (system store, \
             NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, REQUESTS_CA_BUNDLE); or list the host in \
             inspector.ignore_hosts to relay it undecrypted"
        );
    }

    /// Read until `decide` can tell what the stream is (at most a TLS hello's worth, within the
    /// client read timeout); the bytes read and the decision. `None`: the client closed or
    /// stalled first.
    pub async fn first_bytes<T>(
        &self,
        stream: &mut L4Stream,
        decide: impl Fn(&[u8]) -> Option<T>,
    ) -> Option<(Vec<u8>, T)> {
        read_until(
            stream,
            self.head_timeout,
            crate::tls_hello::MAX_HELLO,
            decide,
        )
        .await
        .ok()
    }

    /// Copy bytes both ways between the client and `target` until either side closes.
    pub async fn relay(&self, client: &mut L4Stream, target: RelayTarget) {
        let upstream = match &target {
            RelayTarget::Name(host, port) => match self.resolve.get(&host.to_ascii_lowercase()) {
                Some(addr) => tokio::net::TcpStream::connect(*addr).await,
                None => tokio::net::TcpStream::connect((host.as_str(), *port)).await,
            },
            RelayTarget::Addr(addr) => tokio::net::TcpStream::connect(*addr).await,
        };
        match upstream {
            Ok(mut up) => {
                let _ = up.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(client, &mut up).await;
            }
            Err(e) => tracing::debug!(?target, error = %e, "cannot reach a relayed destination"),
        }
    }
}

/// `Some(true)` for an HTTP/1 request line's start, `Some(false)` for anything else, `None`
/// while too few bytes have come to tell.
pub fn looks_like_http(b: &[u8]) -> Option<bool> {
    let method_len = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    match b.get(method_len) {
        None if method_len < 16 => None,
        Some(b' ') if method_len > 0 => Some(true),
        _ => Some(false),
    }
}

/// The explicit proxy listener's application.
pub struct ConnectListener<A> {
    pub interceptor: Arc<Interceptor<A>>,
}

/// The acceptor for intercepted TLS: h2 and http/1.1 offered; with `keylog`, every session's
/// secrets go to the key log ([`crate::tls_keylog`]).
pub fn acceptor(keylog: bool) -> Result<SslAcceptor, String> {
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_alpn_select_callback(|_, client| {
        pingora::tls::ssl::select_next_proto(b"\x02h2\x08http/1.1", client)
            .ok_or(pingora::tls::ssl::AlpnError::NOACK)
    });
    if keylog {
        crate::tls_keylog::attach(&mut b);
    }
    Ok(b.build())
}

/// Mints the certificate for the name the client asked for (SNI, else the `CONNECT` host).
struct Mint {
    ca: Arc<LocalCa>,
    connect_host: String,
    /// Whether a certificate was put in the handshake (so a failure after it is the client's
    /// verdict on it, or the client going away).
    offered: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl pingora::listeners::TlsAccept for Mint {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let host = ssl
            .servername(NameType::HOST_NAME)
            .map_or_else(|| self.connect_host.clone(), str::to_owned);
        match self.ca.leaf(&host) {
            Ok(leaf) => {
                let _ = pingora::tls::ext::ssl_use_certificate(ssl, &leaf.cert);
                let _ = pingora::tls::ext::ssl_use_private_key(ssl, &leaf.key);
                let _ = pingora::tls::ext::ssl_add_chain_cert(ssl, self.ca.cert());
                self.offered
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot mint a certificate; the handshake fails")
            }
        }
    }
}

/// Why a connection's first bytes ran out before [`read_until`] could decide.
#[derive(Debug, PartialEq, Eq)]
enum ReadStop {
    /// The client sent nothing and closed or stayed silent: there is no one to answer.
    Silent,
    /// The client closed part way.
    Closed,
    /// More than the limit came without a decision.
    TooLarge,
    /// The limit in time passed part way.
    TimedOut,
}

/// Read from `stream` until `decide` can tell what it is, within `limit` and at most `max`
/// bytes; the bytes read and the decision.
async fn read_until<T>(
    stream: &mut L4Stream,
    limit: Duration,
    max: usize,
    decide: impl Fn(&[u8]) -> Option<T>,
) -> Result<(Vec<u8>, T), ReadStop> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 4096];
    loop {
        if let Some(d) = decide(&buf) {
            return Ok((buf, d));
        }
        if buf.len() > max {
            return Err(ReadStop::TooLarge);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) if buf.is_empty() => return Err(ReadStop::Silent),
            Ok(_) => return Err(ReadStop::Closed),
            Err(_) if buf.is_empty() => return Err(ReadStop::Silent),
            Err(_) => return Err(ReadStop::TimedOut),
        }
    }
}

/// What the explicit proxy listener was asked for.
#[derive(Debug, PartialEq, Eq)]
enum ProxyRequest {
    /// `CONNECT target`, and any bytes the client sent after the head.
    Connect { target: String, after: Vec<u8> },
    /// Any other request (absolute-form plain HTTP): the bytes read so far, which start with
    /// its request line; the proxy service reads the rest of the head itself, with its own
    /// limits.
    Plain(Vec<u8>),
}

/// What a proxy request's first bytes say, once they say enough.
enum Head {
    /// `CONNECT target`, its head `len` bytes long.
    Connect { target: String, len: usize },
    /// Any other method.
    Plain,
}

/// Why no request could be taken from a new connection.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The bytes ran out first.
    Stopped(ReadStop),
    /// The first bytes are not an HTTP request line; `tls` when they look like a TLS hello.
    NotHttp { tls: bool },
}

impl HeadError {
    /// What the client is told, if anything.
    fn answer(&self) -> Option<GatewayError> {
        let e = match self {
            HeadError::Stopped(ReadStop::Silent | ReadStop::Closed) => return None,
            HeadError::Stopped(ReadStop::TooLarge) => GatewayError::new(
                431,
                "proxy_head_too_large",
                format!("the proxy request head is over {MAX_HEAD} bytes"),
            ),
            HeadError::Stopped(ReadStop::TimedOut) => GatewayError::new(
                408,
                "proxy_head_timeout",
                "timed out reading the proxy request head",
            ),
            HeadError::NotHttp { tls: true } => GatewayError::new(
                400,
                "proxy_not_http",
                "this is an HTTP proxy and the client spoke TLS to it: use an http:// proxy \
                 URL (HTTPS_PROXY=http://host:port); tunnelled TLS is decrypted after CONNECT",
            ),
            HeadError::NotHttp { tls: false } => GatewayError::new(
                400,
                "proxy_not_http",
                "expected an HTTP proxy request (CONNECT host:port, or a request with an \
                 absolute URL)",
            ),
        };
        Some(e)
    }
}

/// What `buf` holds so far: not yet enough to tell (`None`), the request line of another
/// method, a whole `CONNECT` head, or something that is not HTTP.
fn proxy_head(buf: &[u8]) -> Option<Result<Head, HeadError>> {
    if looks_like_http(buf) == Some(false) {
        return Some(Err(HeadError::NotHttp {
            tls: buf.first() == Some(&0x16),
        }));
    }
    let line_end = memchr::memmem::find(buf, b"\r\n")?;
    let Ok(line) = std::str::from_utf8(&buf[..line_end]) else {
        return Some(Err(HeadError::NotHttp { tls: false }));
    };
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    if !method.eq_ignore_ascii_case("CONNECT") {
        return Some(Ok(Head::Plain));
    }
    let target = parts.next().unwrap_or_default().to_owned();
    let end = memchr::memmem::find(buf, b"\r\n\r\n")?;
    Some(Ok(Head::Connect {
        target,
        len: end + 4,
    }))
}

/// Read the request line (and for `CONNECT` the rest of the head), bounded by [`MAX_HEAD`]
/// and by `limit`.
async fn read_proxy_request(s: &mut L4Stream, limit: Duration) -> Result<ProxyRequest, HeadError> {
    let (mut buf, head) = read_until(s, limit, MAX_HEAD, proxy_head)
        .await
        .map_err(HeadError::Stopped)?;
    Ok(match head? {
        Head::Plain => ProxyRequest::Plain(buf),
        Head::Connect { target, len } => {
            let after = buf.split_off(len);
            ProxyRequest::Connect { target, after }
        }
    })
}

/// The host and port of a `CONNECT` target (`host:port`, `[v6]:port`; a missing port is 443),
/// or the error the client gets for it.
fn connect_target(target: &str) -> Result<(String, u16), GatewayError> {
    let bad = |why: &str| {
        GatewayError::new(
            400,
            "proxy_bad_target",
            format!("CONNECT target {target:?} {why}; expected host:port"),
        )
    };
    let (host, port) = match target.rsplit_once(':') {
        // `[::1]` alone: the colon is inside the brackets.
        Some((h, p)) if !p.contains(']') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has no valid port"))?;
            (h, port)
        }
        _ => (target, 443),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.contains(['/', '[', ']', '@'])
        || host.chars().any(char::is_whitespace)
    {
        return Err(bad("has no valid host"));
    }
    Ok((host.to_owned(), port))
}

/// Answer `err` as JSON and close: the listener's own refusals, before any request reached the
/// proxy service. What the client still sends is read and discarded (bounded, as after the
/// proxy service's own early answers) so the close is a FIN after the answer, not a reset that
/// could destroy it.
async fn refuse(s: &mut L4Stream, err: &GatewayError) {
    let body = crate::proxy::error::render(err, None);
    let reason = http::StatusCode::from_u16(err.status)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("Error");
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        err.status,
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
        return;
    }
    let _ = s.shutdown().await;
    let mut seen = 0usize;
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(super::response::DRAIN_TIME, async {
        while seen < super::response::DRAIN_BYTES {
            match s.read(&mut sink).await {
                Ok(n) if n > 0 => seen += n,
                _ => break,
            }
        }
    })
    .await;
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectListener<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        let me = &self.interceptor;
        let (target, after) = match read_proxy_request(&mut l4, me.head_timeout).await {
            Ok(ProxyRequest::Connect { target, after }) => (target, after),
            Ok(ProxyRequest::Plain(read)) => {
                l4.rewind(&read);
                return me.plain.process_new(l4, shutdown).await;
            }
            Err(e) => {
                if let Some(err) = e.answer() {
                    tracing::debug!(kind = err.kind, "proxy request refused");
                    refuse(&mut l4, &err).await;
                }
                return None;
            }
        };
        let (host, port) = match connect_target(&target) {
            Ok(t) => t,
            Err(err) => {
                refuse(&mut l4, &err).await;
                return None;
            }
        };
        l4.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .ok()?;
        // The stream buffers writes; the client waits for this answer before its TLS hello.
        l4.flush().await.ok()?;
        if !after.is_empty() {
            l4.rewind(&after);
        }
        let target = RelayTarget::Name(host.clone(), port);
        me.intercept_tls(*l4, host, target, shutdown).await
    }

    async fn cleanup(&self) {
        self.interceptor.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{connect_target, looks_like_http, refused_in_so_many_words};

    #[test]
    fn a_refusal_is_told_from_a_client_that_went_away() {
        for alert in [
            "error:10000418:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA",
            "SSLV3_ALERT_BAD_CERTIFICATE",
            "sslv3_alert_certificate_unknown",
            // curl and Python (OpenSSL 3) over TLS 1.3, as Pingora reports it.
            " TLSHandshakeFailure context: TLS accept() failed: [BAD_PACKET_LENGTH] [DECRYPTION_FAILED_OR_BAD_RECORD_MAC]",
        ] {
            assert!(refused_in_so_many_words(alert), "{alert}");
        }
        for other in [
            "Connection reset by peer",
            " TLSHandshakeFailure context: TLS accept() failed: unexpected EOF",
            "WRONG_VERSION_NUMBER",
        ] {
            assert!(!refused_in_so_many_words(other), "{other}");
        }
    }

    #[test]
    fn connect_targets_are_host_and_port() {
        let ok = |t: &str| connect_target(t).map_err(|e| e.message);
        assert_eq!(
            ok("api.anthropic.com:443"),
            Ok(("api.anthropic.com".into(), 443))
        );
        assert_eq!(ok("localhost:8443"), Ok(("localhost".into(), 8443)));
        assert_eq!(ok("[::1]:8443"), Ok(("::1".into(), 8443)));
        assert_eq!(ok("[::1]"), Ok(("::1".into(), 443)));
        assert_eq!(ok("example.test"), Ok(("example.test".into(), 443)));
        for bad in [
            "example.test:https",
            "example.test:0",
            "example.test:70000",
            ":443",
            "",
            "a b:443",
            "http://x:443",
            "[::1:443",
        ] {
            let e = connect_target(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert!(e.message.contains("host:port"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn http_is_told_from_other_protocols() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(looks_like_http(b"POST"), None);
        assert_eq!(looks_like_http(b""), None);
        assert_eq!(looks_like_http(b"\x16\x03\x01"), Some(false));
        assert_eq!(looks_like_http(b"SSH-2.0"), Some(false));
        assert_eq!(looks_like_http(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Some(false));
    }
}
