//! The channel between `ccproxy run --inspect` (on the host) and its jail keeper (inside the
//! namespaces): one `SOCK_SEQPACKET` Unix socket with an abstract name (nothing on disk; it
//! disappears with the processes). The keeper connects before it leaves the host's network
//! namespace and keeps the connection afterwards. Messages are JSON packets; a connection
//! accepted on a forwarded port travels as a packet carrying the socket (`SCM_RIGHTS`).

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest control packet.
const MAX_PACKET: usize = 16 * 1024;

/// What the parent tells the keeper once, first.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    /// The jail's WireGuard private key (base64; made for this run).
    pub secret: String,
    /// The gateway's public key and listener (from `wireguard.json`).
    pub server_public: String,
    pub endpoint: std::net::SocketAddr,
    /// The user and group outside, mapped to themselves inside.
    pub uid: u32,
    pub gid: u32,
    /// The parent's pid: the keeper exits if it is no longer its parent.
    pub parent: u32,
    /// Variables for the command (CA bundle paths).
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("endpoint", &self.endpoint)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// Packets after the setup.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Keeper → parent: the tunnel is up, the command is starting.
    Ready,
    /// Keeper → parent: something in the jail listens on this TCP port.
    Listen(u16),
    /// Keeper → parent: it stopped listening.
    Unlisten(u16),
    /// Parent → keeper: a connection to this port, its socket attached.
    Connection(u16),
}

/// A connected control socket.
#[derive(Debug)]
pub struct Channel(OwnedFd);

/// The parent's listening socket.
pub struct Listener {
    fd: OwnedFd,
    pub name: String,
}

impl Listener {
    /// Listen on a fresh abstract name.
    pub fn bind() -> Result<Self, String> {
        let fd = seqpacket()?;
        let name = format!(
            "ccproxy-jail-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| e.to_string())?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(|e| format!("control socket: {e}"))?;
        socket::listen(&fd, Backlog::new(1).map_err(|e| e.to_string())?)
            .map_err(|e| format!("control socket: {e}"))?;
        Ok(Listener { fd, name })
    }

    /// Accept the keeper's connection: only from process `pid`, within `timeout`.
    pub fn accept(&self, pid: u32, timeout: std::time::Duration) -> Result<Channel, String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("the jail did not start within 10 s".to_owned());
            }
            let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&self.fd),
                PollFlags::POLLIN,
            )];
            if poll(&mut fds, ms).map_err(|e| e.to_string())? == 0 {
                continue;
            }
            let raw = socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)
                .map_err(|e| format!("control socket: {e}"))?;
            let conn = adopt(raw);
            let cred = socket::getsockopt(&conn, socket::sockopt::PeerCredentials)
                .map_err(|e| e.to_string())?;
            if u32::try_from(cred.pid()).ok() == Some(pid) {
                return Ok(Channel(conn));
            }
            // Someone else found the name: ignore them.
        }
    }
}

impl Channel {
    /// Connect to the parent's listener (the keeper, before leaving the host namespace).
    pub fn connect(name: &str) -> Result<Self, String> {
        let fd = seqpacket()?;
        let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| e.to_string())?;
        socket::connect(fd.as_raw_fd(), &addr)
            .map_err(|e| format!("cannot reach `ccproxy run` ({name}): {e}"))?;
        Ok(Channel(fd))
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }

    /// Send one packet: `value` as JSON, with `fd` attached when given.
    pub fn send<T: Serialize>(&self, value: &T, fd: Option<RawFd>) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        let fds = fd.map(|f| [f]);
        let cmsgs: Vec<ControlMessage<'_>> = fds
            .as_ref()
            .map(|f| vec![ControlMessage::ScmRights(f)])
            .unwrap_or_default();
        socket::sendmsg::<()>(
            self.0.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map(drop)
        .map_err(|e| format!("control channel: {e}"))
    }

    /// Receive one packet (blocking, or `EAGAIN` on a non-blocking socket): the JSON value and
    /// the socket attached to it. `Ok(None)`: the other side has gone.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Received<T> {
        recv_on(&self.0)
    }

    /// The packets as they arrive, for an async task. The socket becomes non-blocking (for
    /// this and every other use of the channel).
    pub fn incoming(&self) -> std::io::Result<Incoming> {
        let fd = self.0.try_clone()?;
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Incoming(super::register_fd(fd)?))
    }
}

/// A received packet and the socket attached to it; `Ok(None)`: the other side has gone.
pub type Received<T> = Result<Option<(T, Option<OwnedFd>)>, nix::errno::Errno>;

/// A channel's packets, awaited.
pub struct Incoming(tokio::io::unix::AsyncFd<OwnedFd>);

impl Incoming {
    /// The next packet; `None` once the other side has gone or sent something unreadable.
    pub async fn next<T: for<'de> Deserialize<'de>>(&self) -> Option<(T, Option<OwnedFd>)> {
        loop {
            let mut guard = self.0.readable().await.ok()?;
            match recv_on(self.0.get_ref()) {
                Ok(Some(packet)) => {
                    guard.retain_ready();
                    return Some(packet);
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// Receive one packet on `fd` (see [`Channel::recv`]).
fn recv_on<T: for<'de> Deserialize<'de>>(sock: &OwnedFd) -> Received<T> {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fd = None;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // Keep the first; close any others.
                    let owned = adopt(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        (msg.bytes, fd)
    };
    if n == 0 {
        return Ok(None);
    }
    match serde_json::from_slice(&buf[..n]) {
        Ok(v) => Ok(Some((v, fd))),
        Err(_) => Err(nix::errno::Errno::EBADMSG),
    }
}

/// A new Unix `SOCK_SEQPACKET` socket (close-on-exec).
fn seqpacket() -> Result<OwnedFd, String> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("control socket: {e}"))
}

/// Own a descriptor the kernel has just installed in this process (from `accept4` or an
/// `SCM_RIGHTS` message).
fn adopt(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was returned by the kernel a moment ago as a new descriptor of this
    // process; nothing else refers to it, so this is its only owner.
    #[allow(unsafe_code)]
    unsafe {
        OwnedFd::from_raw_fd(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_sockets_cross_the_channel() {
        let listener = Listener::bind().unwrap();
        let name = listener.name.clone();
        let client = std::thread::spawn(move || Channel::connect(&name).unwrap());
        let server = listener
            .accept(std::process::id(), std::time::Duration::from_secs(5))
            .unwrap();
        let client = client.join().unwrap();

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        server
            .send(&Message::Connection(port), Some(tcp.as_raw_fd()))
            .unwrap();
        let (msg, fd) = client.recv::<Message>().unwrap().unwrap();
        assert!(matches!(msg, Message::Connection(p) if p == port));
        // The passed socket is the same listener.
        let passed = std::net::TcpListener::from(fd.unwrap());
        assert_eq!(passed.local_addr().unwrap().port(), port);

        client.send(&Message::Listen(8080), None).unwrap();
        let (msg, fd) = server.recv::<Message>().unwrap().unwrap();
        assert!(matches!(msg, Message::Listen(8080)) && fd.is_none());
        drop(client);
        assert!(server.recv::<Message>().unwrap().is_none());
    }
}
