//! The upstream side of a provider with a browser profile: the profile's TLS handshake (SNI and
//! verification for the provider's host, its trust roots) behind a loopback **bridge**, so that
//! Pingora's connection pool works as for any provider.
//!
//! Pingora's own TLS connector cannot be shaped, and a connection handed over through
//! `custom_l4` is never reused (Pingora only reuses a pooled connection whose file descriptor it
//! can match to the peer's address, and such a connection has none). So each profiled provider
//! gets a listener on `127.0.0.1` (started on first use): Pingora connects to it in plain text,
//! pools those connections as usual, and every connection the bridge accepts becomes one
//! profiled TLS connection to the provider, copied both ways. Pingora speaks HTTP/2 (prior
//! knowledge) to the bridge when the provider chose h2 by ALPN, HTTP/1.1 otherwise; the first
//! use learns that with one handshake, and later handshakes keep it up to date. Two providers
//! on the same host with different profiles have two bridges and never share a connection.

use super::profile::Profile;
use boring::ssl::SslConnector;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One provider's profiled connections.
pub struct ProfileConnector {
    profile: Profile,
    /// SNI and the name the certificate must match.
    host: String,
    connector: SslConnector,
    /// What the server chose by ALPN on the last handshake.
    alpn: AtomicU8,
    /// Where the provider is (set by every request from the gateway's resolver, so
    /// `inspector.resolve` and the DNS cache apply).
    upstream: Mutex<Option<SocketAddr>>,
    /// The bridge's address, once it listens.
    bridge: OnceLock<SocketAddr>,
    /// The connection the first use made to learn the protocol, for the bridge's first
    /// connection (so learning costs no extra handshake).
    spare: Mutex<Option<tokio_boring::SslStream<tokio::net::TcpStream>>>,
}

impl std::fmt::Debug for ProfileConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileConnector")
            .field("profile", &self.profile)
            .field("host", &self.host)
            .field("bridge", &self.bridge.get())
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
            upstream: Mutex::new(None),
            bridge: OnceLock::new(),
            spare: Mutex::new(None),
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Whether Pingora speaks HTTP/2 to the bridge.
    pub fn speaks_h2(&self) -> bool {
        self.alpn.load(Ordering::Relaxed) == HTTP2
    }

    /// Before a request: note where the provider is, learn its protocol on first use, and
    /// start the bridge; the address Pingora should connect to.
    pub async fn prepare(self: &Arc<Self>, upstream: SocketAddr) -> Result<SocketAddr, String> {
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some(upstream);
        if self.alpn.load(Ordering::Relaxed) == UNKNOWN {
            let tls = self.handshake(upstream).await?;
            *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(tls);
        }
        if let Some(addr) = self.bridge.get() {
            return Ok(*addr);
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("profile bridge: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("profile bridge: {e}"))?;
        if self.bridge.set(addr).is_err() {
            // Another request started it first.
            return self
                .bridge
                .get()
                .copied()
                .ok_or_else(|| "profile bridge".into());
        }
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("profile bridge: {e}"))?;
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(me.clone().carry(conn));
            }
        });
        tracing::debug!(host = %self.host, profile = self.profile.name(), bridge = %addr, "browser-profile bridge listening");
        Ok(addr)
    }

    /// One connection from Pingora: a profiled TLS connection to the provider, copied both ways.
    async fn carry(self: Arc<Self>, mut plain: tokio::net::TcpStream) {
        let _ = plain.set_nodelay(true);
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take();
        let tls = match spare {
            Some(tls) => Ok(tls),
            None => {
                let Some(upstream) = *self.upstream.lock().unwrap_or_else(|p| p.into_inner())
                else {
                    return;
                };
                self.handshake(upstream).await
            }
        };
        match tls {
            Ok(mut tls) => {
                let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
            }
            Err(e) => {
                tracing::warn!(host = %self.host, error = %e, "browser-profile connection failed")
            }
        }
    }

    /// TCP and the profile's handshake; records the protocol the server chose.
    pub async fn handshake(
        &self,
        upstream: SocketAddr,
    ) -> Result<tokio_boring::SslStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::net::TcpStream::connect(upstream)
            .await
            .map_err(|e| format!("cannot connect to {} ({upstream}): {e}", self.host))?;
        let _ = tcp.set_nodelay(true);
        let mut config = self.connector.configure().map_err(|e| e.to_string())?;
        self.profile.configure_connection(&mut config)?;
        let tls = tokio_boring::connect(config, &self.host, tcp)
            .await
            .map_err(|e| {
                format!(
                    "{} TLS handshake with {} failed: {e}",
                    self.profile.name(),
                    self.host
                )
            })?;
        let h2 = tls.ssl().selected_alpn_protocol() == Some(b"h2");
        self.alpn
            .store(if h2 { HTTP2 } else { HTTP1 }, Ordering::Relaxed);
        Ok(tls)
    }
}
