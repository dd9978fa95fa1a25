//! One WireGuard peer's userspace TCP/IP stack (`netstack-smoltcp`) and what its traffic
//! becomes. The stack accepts every TCP connection the peer opens, to any address, and:
//! - port 443: a TLS ClientHello is intercepted like a `CONNECT` tunnel (a leaf for its SNI,
//!   then the proxy service as `Ingress::Intercept`), unless `inspector.ignore_hosts` matches
//!   the name; then, or when it is not TLS, the bytes are relayed as they are;
//! - port 80: an HTTP request goes to the proxy service as plain HTTP (`Ingress::ProxyHttp`);
//!   anything else is relayed;
//! - any other port: relayed to where the peer dialled.
//!
//! DNS (UDP, and TCP to port 53) is answered by [`super::dns`]; other UDP is dropped (QUIC then falls back to
//! TCP, where it can be inspected).

use super::dns::JailDns;
use super::Peer;
use crate::proxy::intercept::{looks_like_http, Interceptor, RelayTarget};
use boringtun::noise::TunnResult;
use futures::{SinkExt, StreamExt};
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::server::ShutdownWatch;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a peer's stack is built from.
pub(super) struct StackParts<A> {
    pub mtu: usize,
    pub peer: Arc<Peer>,
    pub socket: Arc<tokio::net::UdpSocket>,
    /// Decrypted packets from the receive loop.
    pub from_tunnel: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pub interceptor: Arc<Interceptor<A>>,
    pub dns: Arc<JailDns>,
    pub shutdown: ShutdownWatch,
}

/// Start the stack's tasks; they stop when the returned set is dropped.
pub(super) fn start<A: ServerApp + Send + Sync + 'static>(
    parts: StackParts<A>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let built = netstack_smoltcp::StackBuilder::default()
        .enable_tcp(true)
        .enable_udp(true)
        .mtu(parts.mtu)
        // Windows big enough for a loopback tunnel's bandwidth-delay product.
        .tcp_recv_buffer_size(4 << 20)
        .tcp_send_buffer_size(4 << 20)
        .build();
    let (stack, runner, udp, tcp) = match built {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the userspace TCP/IP stack");
            return tasks;
        }
    };
    if let Some(runner) = runner {
        tasks.spawn(async move {
            if let Err(e) = runner.await {
                tracing::debug!(error = %e, "userspace stack stopped");
            }
        });
    }
    let (mut stack_sink, mut stack_stream) = stack.split();

    // Tunnel → stack.
    let mut from_tunnel = parts.from_tunnel;
    tasks.spawn(async move {
        while let Some(packet) = from_tunnel.recv().await {
            // A packet the stack refuses (malformed, a protocol it does not carry) is dropped;
            // the sink stays usable.
            if let Err(e) = stack_sink.send(packet).await {
                tracing::trace!(error = %e, "packet from the tunnel dropped");
            }
        }
    });

    // Stack → tunnel: encrypt and send to the peer's current endpoint.
    let peer = parts.peer.clone();
    let socket = parts.socket.clone();
    tasks.spawn(async move {
        let mut out = vec![0u8; super::DATAGRAM];
        while let Some(Ok(packet)) = stack_stream.next().await {
            let len = {
                let mut tunn = peer.tunn.lock().unwrap_or_else(|p| p.into_inner());
                if packet.len() + 32 > out.len() {
                    continue;
                }
                match tunn.encapsulate(&packet, &mut out) {
                    TunnResult::WriteToNetwork(d) => d.len(),
                    _ => continue,
                }
            };
            if let Err(e) = socket.send_to(&out[..len], peer.endpoint()).await {
                tracing::debug!(peer = %peer.name, error = %e, "WireGuard send failed");
            }
        }
    });

    if let Some(mut tcp) = tcp {
        let interceptor = parts.interceptor.clone();
        let dns = parts.dns.clone();
        let shutdown = parts.shutdown.clone();
        tasks.spawn(async move {
            while let Some((stream, _client, dest)) = tcp.next().await {
                let stream = L4Stream::from(VirtualSocketStream::new(Box::new(JailSocket(stream))));
                tokio::spawn(dispatch(
                    stream,
                    dest,
                    interceptor.clone(),
                    dns.clone(),
                    shutdown.clone(),
                ));
            }
        });
    }

    if let Some(udp) = udp {
        let dns = parts.dns.clone();
        let (mut read, mut write) = udp.split();
        let (answers, mut to_send) =
            tokio::sync::mpsc::channel::<netstack_smoltcp::udp::UdpMsg>(64);
        tasks.spawn(async move {
            while let Some(msg) = to_send.recv().await {
                if write.send(msg).await.is_err() {
                    break;
                }
            }
        });
        tasks.spawn(async move {
            while let Some((payload, client, dest)) = read.next().await {
                if dest.port() != 53 {
                    continue;
                }
                let dns = dns.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    if let Some(answer) = dns.answer(&payload).await {
                        let _ = answers.send((answer, dest, client)).await;
                    }
                });
            }
        });
    }
    tasks
}

/// Where one TCP stream from the peer goes (see the module docs).
async fn dispatch<A: ServerApp + Send + Sync + 'static>(
    mut stream: L4Stream,
    dest: SocketAddr,
    interceptor: Arc<Interceptor<A>>,
    dns: Arc<JailDns>,
    shutdown: ShutdownWatch,
) {
    let name = dns.name_for(dest.ip());
    let target = match &name {
        Some(n) => RelayTarget::Name(n.clone(), dest.port()),
        None => RelayTarget::Addr(dest),
    };
    match dest.port() {
        443 => {
            let host = name.unwrap_or_else(|| dest.ip().to_string());
            let _ = interceptor
                .intercept_tls(stream, host, target, &shutdown)
                .await;
        }
        80 => {
            let Some((first, is_http)) =
                interceptor.first_bytes(&mut stream, looks_like_http).await
            else {
                return;
            };
            stream.rewind(&first);
            if is_http {
                let _ = interceptor
                    .plain
                    .process_new(Box::new(stream), &shutdown)
                    .await;
            } else {
                interceptor.relay(&mut stream, target).await;
            }
        }
        // DNS over TCP (a client retrying a truncated answer) is answered like UDP.
        53 => dns.serve_tcp(&mut stream).await,
        _ => interceptor.relay(&mut stream, target).await,
    }
}

/// A TCP stream of the userspace stack, as Pingora's virtual socket.
struct JailSocket(netstack_smoltcp::TcpStream);

impl std::fmt::Debug for JailSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JailSocket")
            .field("client", self.0.local_addr())
            .field("dest", self.0.remote_addr())
            .finish()
    }
}

impl AsyncRead for JailSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for JailSocket {
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

impl VirtualSocket for JailSocket {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> std::io::Result<()> {
        // No socket options in the userspace stack (it sends without delay already).
        Ok(())
    }
}
