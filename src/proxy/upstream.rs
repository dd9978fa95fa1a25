//! The upstream side of a route: address resolution and the Pingora `HttpPeer`.
//!
//! DNS answers are cached per `host:port` for a minute so the hot path never blocks on the
//! resolver (Pingora's `HttpPeer::new` would resolve synchronously); a cache hit allocates
//! nothing. Pooled connections carry no idle timer: Pingora drops one as soon as the provider
//! closes it, and the rare request that still races a closing connection is retried (see
//! `outbound::may_retry`). TLS peers verify the certificate against the system roots, or the provider's trust
//! list when a `ca_file` applies, offer h2 and http/1.1 via ALPN (only the client's own HTTP
//! version on a route without a provider), and use the route host as SNI.
//! A provider with a browser profile is reached through its bridge
//! ([`crate::fingerprint::connector`]).

use super::error::GatewayError;
use super::ingress::Ingress;
use super::route::Route;
use crate::config::file::Scheme;
use crate::config::{CaList, Timeouts};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::{Duration, Instant};

const DNS_TTL: Duration = Duration::from_secs(60);

/// A request body up to this size goes into the socket's send buffer in one write, which cannot
/// stall; only larger bodies get a write timeout (each timed write costs a timer).
const UNTIMED_WRITE_BYTES: usize = 64 * 1024;

/// One cached answer: port, address, when it was resolved.
type Answer = (u16, SocketAddr, Instant);

/// A small async DNS cache: host → answers by port.
#[derive(Default)]
pub struct Resolver {
    cache: RwLock<HashMap<Arc<str>, Vec<Answer>>>,
    /// `inspector.resolve`: these hosts go to these addresses, whatever the port asked.
    overrides: HashMap<String, SocketAddr>,
}

impl Resolver {
    fn cached(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let cache = self.cache.read().ok()?;
        cache
            .get(host)?
            .iter()
            .find(|(p, _, at)| *p == port && at.elapsed() < DNS_TTL)
            .map(|(_, a, _)| *a)
    }

    /// A resolver whose `overrides` (lower-case host → address) beat DNS.
    pub fn with_overrides(overrides: HashMap<String, SocketAddr>) -> Self {
        Self {
            cache: RwLock::default(),
            overrides,
        }
    }

    /// The first address of `host:port` (an `inspector.resolve` entry wins over DNS).
    pub async fn lookup(&self, host: &Arc<str>, port: u16) -> Result<SocketAddr, GatewayError> {
        if !self.overrides.is_empty() {
            if let Some(a) = self.overrides.get(host.to_ascii_lowercase().as_str()) {
                return Ok(*a);
            }
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if let Some(addr) = self.cached(host, port) {
            return Ok(addr);
        }
        let addr = tokio::net::lookup_host((&**host, port))
            .await
            .map_err(|e| {
                GatewayError::new(
                    502,
                    "upstream_dns",
                    format!("cannot resolve upstream host {host}: {e}"),
                )
            })?
            .next()
            .ok_or_else(|| {
                GatewayError::new(
                    502,
                    "upstream_dns",
                    format!("upstream host {host} has no addresses"),
                )
            })?;
        if let Ok(mut c) = self.cache.write() {
            let entries = c.entry(host.clone()).or_default();
            entries.retain(|(p, _, _)| *p != port);
            entries.push((port, addr, Instant::now()));
        }
        Ok(addr)
    }
}

/// The gateway's own HTTP listeners. A request routed back to a listener that would route it the
/// same way again is refused, instead of looping until the process runs out of file
/// descriptors (and every listener with it).
#[derive(Debug, Default)]
pub struct OwnListeners {
    reverse: Option<SocketAddr>,
    proxy: Option<SocketAddr>,
}

impl OwnListeners {
    /// From the configured `host:port` strings; a listener given by host name is not checked.
    pub fn new(reverse: &str, proxy: Option<&str>) -> Self {
        Self {
            reverse: reverse.parse().ok(),
            proxy: proxy.and_then(|p| p.parse().ok()),
        }
    }

    /// The error for a request that came in through `ingress` and is routed to `dest`, when
    /// that is a loop: anything sent to the proxy listener (which routes an origin-form request
    /// by its `Host`, back to itself), or a reverse-listener request routed to the reverse
    /// listener. (The proxy listener sending a request on to the reverse listener is a normal
    /// second pass, not a loop.)
    pub fn loop_error(&self, ingress: Ingress, dest: SocketAddr) -> Option<GatewayError> {
        let hits = |listener: Option<SocketAddr>| {
            listener.is_some_and(|l| {
                l.port() == dest.port()
                    && (l.ip() == dest.ip()
                        || (l.ip().is_unspecified()
                            && (dest.ip().is_loopback() || dest.ip().is_unspecified())))
            })
        };
        if hits(self.proxy) {
            // Through the proxy listener the client named this destination itself, most often
            // by using the proxy listener as a base URL.
            let status = if ingress == Ingress::Reverse {
                508
            } else {
                400
            };
            let base_url = self.reverse.map_or_else(String::new, |r| {
                format!(
                    "; a client with a base URL should point it at the reverse listener, http://{r}"
                )
            });
            return Some(GatewayError::new(
                status,
                "loop",
                format!(
                    "the destination {dest} is ccproxy's own proxy listener, so the request would \
                     come back to it forever{base_url}"
                ),
            ));
        }
        if ingress == Ingress::Reverse && hits(self.reverse) {
            return Some(GatewayError::new(
                508,
                "loop",
                format!(
                    "this request is routed to {dest}, ccproxy's own listener, where it would be \
                     routed the same way forever; check the dest_host of the rule or provider"
                ),
            ));
        }
        None
    }
}

/// Chrome's `SETTINGS_INITIAL_WINDOW_SIZE`.
const CHROME_H2_STREAM_WINDOW: u32 = 6_291_456;
/// Chrome's connection window (65,535 + its first `WINDOW_UPDATE` of 15,663,105).
const CHROME_H2_CONNECTION_WINDOW: u32 = 15_728_640;

/// The Pingora peer for `route` at `addr`, for a request body of `body_len` bytes from a client
/// that speaks HTTP/2 (`client_h2`) or HTTP/1.x.
pub fn peer(
    route: &Route,
    addr: SocketAddr,
    timeouts: &Timeouts,
    default_trust: Option<&Arc<CaList>>,
    body_len: usize,
    client_h2: bool,
) -> Box<HttpPeer> {
    let tls = route.dest.scheme == Scheme::Https;
    let profiled = route.provider.as_ref().and_then(|p| p.fingerprint.clone());
    // A profiled provider's TLS is made by its bridge (src/fingerprint/connector.rs); Pingora
    // speaks plain HTTP to the bridge.
    let tls = tls && profiled.is_none();
    let sni = if tls {
        route.dest.host.to_string()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    // Pingora's connection pool key ignores the per-peer CA list; keying the pool by provider
    // keeps a connection verified against one provider's trust from serving another.
    if let Some(p) = &route.provider {
        peer.group_key = p.pool_key;
    }
    let o = &mut peer.options;
    o.connection_timeout = Some(timeouts.connect);
    o.total_connection_timeout = Some(timeouts.connect);
    o.read_timeout = Some(timeouts.read);
    if body_len > UNTIMED_WRITE_BYTES {
        o.write_timeout = Some(timeouts.read);
    }
    if let Some(connector) = profiled {
        // `addr` is the profile's bridge (see `fingerprint::connector`): plain text to it,
        // HTTP/2 with prior knowledge when the provider chose h2.
        o.alpn = if connector.speaks_h2() {
            ALPN::H2
        } else {
            ALPN::H1
        };
        // Chrome's HTTP/2 flow-control windows (SETTINGS_INITIAL_WINDOW_SIZE 6 MiB, connection
        // window 15 MiB); the rest of Pingora's SETTINGS frame and its pseudo-header order
        // cannot be set (README: Browser TLS fingerprints).
        o.h2_stream_window_size = Some(CHROME_H2_STREAM_WINDOW);
        o.h2_connection_window_size = Some(CHROME_H2_CONNECTION_WINDOW);
    }
    if tls {
        // A route without a provider goes to a host the gateway knows nothing about (an
        // intercepted request passing through, a `dest_host` rule): it goes there in the
        // client's HTTP version, as an intercepting proxy should (mitmproxy does the same), so an
        // HTTP/1.1 client is never turned into an HTTP/2 one. Providers get h2 or http/1.1 by ALPN.
        o.alpn = if route.provider.is_none() && !client_h2 {
            ALPN::H1
        } else {
            ALPN::H2H1
        };
        let trust = route.provider.as_ref().and_then(|p| p.trust.as_ref());
        if let Some(trust) = trust.or(default_trust) {
            o.ca = Some(trust.clone());
        }
    }
    Box::new(peer)
}

#[cfg(test)]
mod tests {
    use super::{Ingress, OwnListeners};

    #[test]
    fn only_a_way_back_to_the_same_routing_is_a_loop() {
        let own = OwnListeners::new("127.0.0.1:4000", Some("0.0.0.0:8084"));
        let cases = [
            // Anything to the proxy listener (bound to every address: loopback counts).
            (Ingress::ProxyHttp, "127.0.0.1:8084", Some(400)),
            (Ingress::Reverse, "127.0.0.1:8084", Some(508)),
            // The reverse listener from itself is a loop; from the proxy listener a second pass.
            (Ingress::Reverse, "127.0.0.1:4000", Some(508)),
            (Ingress::ProxyHttp, "127.0.0.1:4000", None),
            (Ingress::Intercept, "127.0.0.1:4000", None),
            // Another port, or another address than the reverse listener's own.
            (Ingress::Reverse, "127.0.0.1:4001", None),
            (Ingress::Reverse, "127.0.0.2:4000", None),
        ];
        for (ingress, dest, status) in cases {
            let got = own.loop_error(ingress, dest.parse().unwrap());
            assert_eq!(got.map(|e| e.status), status, "{ingress:?} to {dest}");
        }
        // A listener named by host name is not checked.
        let named = OwnListeners::new("localhost:4000", None);
        let dest = "127.0.0.1:4000".parse().unwrap();
        assert!(named.loop_error(Ingress::Reverse, dest).is_none());
    }
}
