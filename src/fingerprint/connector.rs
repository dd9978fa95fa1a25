//! The upstream connector of a provider with a browser profile, plugged into Pingora through
//! `PeerOptions::custom_l4`: TCP, then the profile's TLS handshake (SNI and verification for the
//! provider's host, its trust roots), handed to Pingora as a plain stream that Pingora speaks
//! HTTP over. Pingora cannot see the protocol the handshake negotiated, so the connector keeps
//! what the server chose last: HTTP/2 until a server picks HTTP/1.1 (then HTTP/1.1; a
//! connection negotiated against the expectation fails as retryable, and the retry uses the
//! learned protocol). One connector per provider: connections are pooled per provider, so two
//! providers on the same host with different profiles never share one.

use super::profile::Profile;
use async_trait::async_trait;
use boring::ssl::SslConnector;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One provider's profiled connector.
pub struct ProfileConnector {
    profile: Profile,
    /// SNI and the name the certificate must match.
    host: String,
    connector: SslConnector,
    /// What the server chose by ALPN on the last handshake.
    alpn: AtomicU8,
}

impl std::fmt::Debug for ProfileConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileConnector")
            .field("profile", &self.profile)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl ProfileConnector {
    /// For `host`, trusting `trust` (`None`: BoringSSL's default paths).
    pub fn new(
        profile: Profile,
        host: &str,
        trust: Option<&[boring::x509::X509]>,
    ) -> Result<Self, String> {
        let connector = profile.connector_with(|b| {
            match trust {
                Some(list) => {
                    let store = b.cert_store_mut();
                    for cert in list {
                        // The same certificate twice is not an error worth refusing.
                        let _ = store.add_cert(cert.clone());
                    }
                }
                None => b.set_default_verify_paths().map_err(|e| e.to_string())?,
            }
            Ok(())
        })?;
        Ok(ProfileConnector {
            profile,
            host: host.to_owned(),
            connector,
            alpn: AtomicU8::new(UNKNOWN),
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Whether Pingora should speak HTTP/2 over the next connection.
    pub fn expects_h2(&self) -> bool {
        self.alpn.load(Ordering::Relaxed) != HTTP1
    }
}

#[async_trait]
impl L4Connect for ProfileConnector {
    async fn connect(&self, addr: &SocketAddr) -> pingora::Result<L4Stream> {
        let expected_h2 = self.expects_h2();
        let SocketAddr::Inet(addr) = addr else {
            return Err(Error::explain(
                ErrorType::ConnectError,
                "a browser profile needs a TCP address",
            ));
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Error::because(ErrorType::ConnectError, format!("{addr}"), e))?;
        let _ = tcp.set_nodelay(true);
        let mut config = self
            .connector
            .configure()
            .map_err(|e| Error::because(ErrorType::TLSHandshakeFailure, "profile", e))?;
        self.profile
            .configure_connection(&mut config)
            .map_err(|e| Error::explain(ErrorType::TLSHandshakeFailure, e))?;
        let tls = tokio_boring::connect(config, &self.host, tcp)
            .await
            .map_err(|e| {
                Error::because(
                    ErrorType::TLSHandshakeFailure,
                    format!("{} handshake with {}", self.profile.name(), self.host),
                    e,
                )
            })?;
        let h2 = tls.ssl().selected_alpn_protocol() == Some(b"h2");
        self.alpn
            .store(if h2 { HTTP2 } else { HTTP1 }, Ordering::Relaxed);
        if h2 != expected_h2 {
            let mut e = Error::explain(
                ErrorType::ConnectError,
                format!(
                    "{} chose {} by ALPN; retrying with it",
                    self.host,
                    if h2 { "h2" } else { "http/1.1" }
                ),
            );
            e.set_retry(true);
            return Err(e);
        }
        Ok(L4Stream::from(VirtualSocketStream::new(Box::new(
            ProfiledTls(tls),
        ))))
    }
}

/// A profiled TLS connection as Pingora's virtual socket.
struct ProfiledTls(tokio_boring::SslStream<tokio::net::TcpStream>);

impl std::fmt::Debug for ProfiledTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfiledTls")
            .field("peer", &self.0.get_ref().peer_addr().ok())
            .finish()
    }
}

impl AsyncRead for ProfiledTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProfiledTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl VirtualSocket for ProfiledTls {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().set_nodelay(true),
            _ => Ok(()),
        }
    }
}
