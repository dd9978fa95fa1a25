//! The gateway's WireGuard listener (`inspector.wireguard_listen`, UDP, on whenever the gateway
//! runs): the far end of `ccproxy run --inspect`'s jail and of external devices set up with
//! `ccproxy wg client-config`. It owns the peer table and the WireGuard sessions (`boringtun`,
//! userspace; no kernel module needed); each peer's decrypted IP packets go into a userspace
//! TCP/IP stack of its own ([`stack`]), whose TCP streams enter the same proxy service as every
//! other listener (TLS interception on 443, plain HTTP on 80, a relay otherwise) and whose DNS
//! queries [`dns`] answers.
//!
//! Who may connect: a peer whose packets come from a loopback address is a local jail (anyone
//! who can reach the gateway's loopback listeners can already use it), with a key of its own
//! for each run; any other peer must be one of the devices made by `ccproxy wg client-config`.
//! Every peer gets the same inner addresses ([`PEER_V4`]), since each has its own stack.

pub mod dns;
pub mod keys;
mod stack;

use crate::proxy::intercept::Interceptor;
use async_trait::async_trait;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use pingora::apps::ServerApp;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The peer's address inside the tunnel (the jail's TUN, a device's interface).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// The gateway's side of the tunnel: the DNS server peers are given.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// MTU of a local jail's tunnel. Loopback carries 64 KiB datagrams, so a jail sends about 45
/// times fewer packets than with the usual 1420 (one WireGuard operation and one trip through
/// the userspace stack per packet is what limits bulk throughput).
pub const JAIL_MTU: usize = 65_000;
/// MTU for external devices, whose datagrams cross real networks.
pub const DEVICE_MTU: usize = 1420;
/// Room for the largest datagram: a JAIL_MTU packet plus WireGuard's 32 bytes, or any UDP
/// datagram the socket can deliver.
const DATAGRAM: usize = 65_536;
/// How often WireGuard's timers run (handshake retries, keepalives, expiry).
const TIMER_TICK: Duration = Duration::from_millis(250);
/// A peer with no packets for this long (and an expired session) is forgotten.
const PEER_IDLE: Duration = Duration::from_secs(180);

/// One peer's WireGuard state, shared by the receive loop and its stack's sender.
struct Peer {
    name: String,
    tunn: Mutex<Tunn>,
    endpoint: Mutex<SocketAddr>,
    last_seen: Mutex<Instant>,
    /// Decrypted packets into the peer's stack.
    to_stack: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl Peer {
    fn endpoint(&self) -> SocketAddr {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A peer in the table, with the tasks of its stack (dropped with it).
struct Entry {
    peer: Arc<Peer>,
    key: [u8; 32],
    _tasks: tokio::task::JoinSet<()>,
}

/// The listener, as a Pingora background service.
pub struct WireGuardService<A> {
    socket: Mutex<Option<std::net::UdpSocket>>,
    local_addr: SocketAddr,
    secret: keys::Secret,
    dir: PathBuf,
    interceptor: Arc<Interceptor<A>>,
    dns: Arc<dns::JailDns>,
}

impl<A> WireGuardService<A> {
    /// Bind `addr` (port 0: any free port), load or create the server key, and record the
    /// listener in `<dir>/wireguard.json` for `ccproxy run --inspect`.
    pub fn bind(
        addr: &str,
        dir: &std::path::Path,
        interceptor: Arc<Interceptor<A>>,
        dns: Arc<dns::JailDns>,
    ) -> Result<Self, String> {
        let socket = bind_udp(addr, dir)?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("{addr}: {e}"))?;
        large_buffers(&socket);
        let secret = keys::Secret::load_or_create(&keys::server_key_path(dir))?;
        keys::State {
            endpoint: local_addr,
            public_key: keys::encode(&secret.public()),
            pid: std::process::id(),
        }
        .write(dir)
        .map_err(|e| format!("{}: {e}", dir.join(keys::STATE_FILE).display()))?;
        Ok(WireGuardService {
            socket: Mutex::new(Some(socket)),
            local_addr,
            secret,
            dir: dir.to_owned(),
            interceptor,
            dns,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// The receive loop's view of the peers.
#[derive(Default)]
struct Table {
    by_key: HashMap<[u8; 32], u32>,
    by_index: HashMap<u32, Entry>,
    next_index: u32,
    /// Devices made by `ccproxy wg client-config` (name by public key), and when the
    /// directory was last read.
    devices: HashMap<[u8; 32], String>,
    devices_read: Option<Instant>,
}

impl Table {
    /// Whether `key` may connect from `from`, and under which name.
    fn admit(&mut self, key: &[u8; 32], from: SocketAddr, dir: &std::path::Path) -> Option<String> {
        if from.ip().is_loopback() {
            return Some("jail".to_owned());
        }
        let stale = self
            .devices_read
            .is_none_or(|t| t.elapsed() > Duration::from_secs(2));
        if stale && !self.devices.contains_key(key) {
            self.devices = keys::device_peers(dir)
                .into_iter()
                .map(|(name, k)| (k, name))
                .collect();
            self.devices_read = Some(Instant::now());
        }
        self.devices.get(key).cloned()
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> BackgroundService for WireGuardService<A> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std_socket) = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let socket = match tokio::net::UdpSocket::from_std(std_socket) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "WireGuard listener off");
                return;
            }
        };
        tracing::info!(listen = %self.local_addr, "WireGuard listener (ccproxy run --inspect) on");
        let mut table = Table {
            next_index: 1,
            ..Table::default()
        };
        let mut buf = vec![0u8; DATAGRAM];
        let mut out = vec![0u8; DATAGRAM];
        let mut tick = tokio::time::interval(TIMER_TICK);
        loop {
            tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.datagram(&mut table, &socket, &buf[..n], from, &mut out, &shutdown),
                    Err(e) => tracing::debug!(error = %e, "WireGuard receive failed"),
                },
                _ = tick.tick() => timers(&mut table, &socket, &mut out),
                _ = shutdown.changed() => break,
            }
        }
        // `wireguard.json` stays: its pid tells `run` the gateway has gone, and its port is the
        // one the next start takes again.
    }
}

impl<A: ServerApp + Send + Sync + 'static> WireGuardService<A> {
    /// One datagram from the network: find (or admit) its peer and let WireGuard handle it.
    fn datagram(
        &self,
        table: &mut Table,
        socket: &Arc<tokio::net::UdpSocket>,
        data: &[u8],
        from: SocketAddr,
        out: &mut [u8],
        shutdown: &ShutdownWatch,
    ) {
        let index = match Tunn::parse_incoming_packet(data) {
            Err(_) => return,
            Ok(Packet::HandshakeInit(init)) => {
                let Ok(half) = parse_handshake_anon(&self.secret.0, &self.secret.public(), &init)
                else {
                    return;
                };
                let key = half.peer_static_public;
                match table.by_key.get(&key) {
                    Some(i) => *i,
                    None => match table.admit(&key, from, &self.dir) {
                        Some(name) => self.add_peer(table, socket, key, name, from, shutdown),
                        None => {
                            tracing::debug!(%from, "WireGuard handshake from an unknown key refused");
                            return;
                        }
                    },
                }
            }
            // Response, cookie and data carry our index (shifted by 8 bits, see Tunn::new).
            Ok(Packet::HandshakeResponse(_)) => le_u32(data, 8) >> 8,
            Ok(_) => le_u32(data, 4) >> 8,
        };
        let Some(entry) = table.by_index.get(&index) else {
            return;
        };
        let peer = &entry.peer;
        *peer.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = from;
        *peer.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut tunn = peer.tunn.lock().unwrap_or_else(|p| p.into_inner());
        let mut result = tunn.decapsulate(Some(from.ip()), data, out);
        loop {
            match result {
                TunnResult::WriteToNetwork(d) => {
                    let _ = socket.try_send_to(d, from);
                    // Packets queued during the handshake go out now.
                    result = tunn.decapsulate(None, &[], out);
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    // A full stack queue drops the packet; TCP sends it again.
                    let _ = peer.to_stack.try_send(p.to_vec());
                    break;
                }
                TunnResult::Done => break,
                TunnResult::Err(e) => {
                    tracing::trace!(peer = %peer.name, error = ?e, "WireGuard packet dropped");
                    break;
                }
            }
        }
    }

    fn add_peer(
        &self,
        table: &mut Table,
        socket: &Arc<tokio::net::UdpSocket>,
        key: [u8; 32],
        name: String,
        from: SocketAddr,
        shutdown: &ShutdownWatch,
    ) -> u32 {
        let index = table.next_index;
        // Indices are 24 bits (boringtun uses the low 8 for the session).
        table.next_index = (table.next_index % 0x00ff_ffff) + 1;
        let tunn = Tunn::new(
            self.secret.0.clone(),
            PublicKey::from(key),
            None,
            None,
            index,
            None,
        );
        let mtu = if from.ip().is_loopback() {
            JAIL_MTU
        } else {
            DEVICE_MTU
        };
        let (to_stack, from_tunnel) = tokio::sync::mpsc::channel(1024);
        let peer = Arc::new(Peer {
            name: name.clone(),
            tunn: Mutex::new(tunn),
            endpoint: Mutex::new(from),
            last_seen: Mutex::new(Instant::now()),
            to_stack,
        });
        let tasks = stack::start(stack::StackParts {
            mtu,
            peer: peer.clone(),
            socket: socket.clone(),
            from_tunnel,
            interceptor: self.interceptor.clone(),
            dns: self.dns.clone(),
            shutdown: shutdown.clone(),
        });
        tracing::info!(peer = %name, %from, "WireGuard peer connected");
        if let Some(old) = table.by_index.insert(
            index,
            Entry {
                peer,
                key,
                _tasks: tasks,
            },
        ) {
            table.by_key.remove(&old.key);
        }
        table.by_key.insert(key, index);
        index
    }
}

/// Run every peer's WireGuard timers; forget peers that have been silent too long.
fn timers(table: &mut Table, socket: &tokio::net::UdpSocket, out: &mut [u8]) {
    let mut gone = Vec::new();
    for (index, entry) in &table.by_index {
        let peer = &entry.peer;
        let result = peer
            .tunn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update_timers(out);
        match result {
            TunnResult::WriteToNetwork(d) => {
                let _ = socket.try_send_to(d, peer.endpoint());
            }
            TunnResult::Err(_) | TunnResult::Done => {}
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
        }
        let idle = peer
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if idle > PEER_IDLE {
            gone.push(*index);
        }
    }
    for index in gone {
        if let Some(entry) = table.by_index.remove(&index) {
            table.by_key.remove(&entry.key);
            tracing::info!(peer = %entry.peer.name, "WireGuard peer gone (idle)");
        }
    }
}

/// Bind the listener. With port 0, the port of the previous run (from `wireguard.json`) is
/// tried first: jails that outlive a gateway restart keep sending to it, and WireGuard
/// re-handshakes on its own (the key is the same), so they recover without a new `run`.
fn bind_udp(addr: &str, dir: &std::path::Path) -> Result<std::net::UdpSocket, String> {
    let wanted: Option<SocketAddr> = addr.parse().ok();
    if let Some(wanted) = wanted.filter(|w| w.port() == 0) {
        let previous = std::fs::read_to_string(dir.join(keys::STATE_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<keys::State>(&t).ok())
            .map(|s| s.endpoint)
            .filter(|p| p.ip() == wanted.ip());
        if let Some(Ok(socket)) = previous.map(std::net::UdpSocket::bind) {
            return Ok(socket);
        }
    }
    std::net::UdpSocket::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Socket buffer size asked for on both ends of a tunnel.
const SOCKET_BUFFER: usize = 4 << 20;

/// Ask for 4 MiB socket buffers (the kernel caps them at `net.core.rmem_max`/`wmem_max`). The
/// default 208 KiB holds three 64 KiB jail datagrams, so a burst from the stack overflowed it
/// and every lost datagram cost a TCP retransmission (measured: 0.17 Gbit/s and 1570
/// `RcvbufErrors` for a 100 MB download).
pub fn large_buffers(socket: &std::net::UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER);
}

fn le_u32(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::bind_udp;

    #[test]
    fn an_automatic_port_is_the_previous_runs_when_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = bind_udp("127.0.0.1:0", dir.path()).unwrap();
        let port = first.local_addr().unwrap().port();
        super::keys::State {
            endpoint: first.local_addr().unwrap(),
            public_key: String::new(),
            pid: std::process::id(),
        }
        .write(dir.path())
        .unwrap();
        // Taken: another free port.
        let second = bind_udp("127.0.0.1:0", dir.path()).unwrap();
        assert_ne!(second.local_addr().unwrap().port(), port);
        drop((first, second));
        // Free again (a restart): the same port.
        let again = bind_udp("127.0.0.1:0", dir.path()).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
    }
}
