//! Ports the jailed program listens on, reachable from the host on the same port while it runs
//! (a login callback on `localhost`, a dev server). The keeper reads the jail's listening TCP
//! sockets from `/proc/net/tcp{,6}` (its own network namespace's view); the parent listens on
//! `127.0.0.1:<port>` (and `[::1]:<port>` when it can) on the host and passes each accepted
//! connection to the keeper, which connects it to the port inside the jail.

use super::control::{Channel, Message};
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// `st` value of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The TCP ports something listens on in this network namespace.
pub fn listening() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            ports.extend(parse_listening(&text));
        }
    }
    ports
}

/// Listening ports in the text of `/proc/net/tcp` or `/proc/net/tcp6`.
fn parse_listening(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        let state = cols.nth(1)?;
        if state != TCP_LISTEN {
            return None;
        }
        let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
        (port != 0).then_some(port)
    })
}

/// Connect a connection accepted on the host to `port` inside the jail and relay.
pub async fn connect_inside(port: u16, accepted: OwnedFd) {
    let std_stream = std::net::TcpStream::from(accepted);
    if std_stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut outside) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let targets: [SocketAddr; 3] = [
        (Ipv4Addr::LOCALHOST, port).into(),
        (Ipv6Addr::LOCALHOST, port).into(),
        (crate::wireguard::PEER_V4, port).into(),
    ];
    for target in targets {
        if let Ok(mut inside) = tokio::net::TcpStream::connect(target).await {
            let _ = inside.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
            return;
        }
    }
}

/// The parent's side: a host listener per jail port.
#[derive(Default)]
pub struct HostForwards {
    listeners: HashMap<u16, tokio::task::JoinHandle<()>>,
}

impl HostForwards {
    /// Listen on `127.0.0.1:port` and pass every connection to the keeper.
    pub fn listen(&mut self, port: u16, channel: &Arc<Channel>) {
        if self.listeners.contains_key(&port) {
            return;
        }
        let bind = |ip: std::net::IpAddr| {
            std::net::TcpListener::bind((ip, port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
        };
        let v4 = match bind(Ipv4Addr::LOCALHOST.into()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "ccproxy run: port {port} of the jail is not reachable from the host \
                     (127.0.0.1:{port}: {e})"
                );
                return;
            }
        };
        // `localhost` may resolve to ::1 first on the host; that one is best effort.
        let v6 = bind(Ipv6Addr::LOCALHOST.into()).ok();
        let channel = channel.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = match &v6 {
                    Some(v6) => tokio::select! {
                        r = v4.accept() => r,
                        r = v6.accept() => r,
                    },
                    None => v4.accept().await,
                };
                let Ok((conn, _)) = accepted else {
                    break;
                };
                // The keeper gets its own copy of the socket; ours closes with `conn`.
                let _ = channel.send(&Message::Connection(port), Some(conn.as_raw_fd()));
            }
        });
        self.listeners.insert(port, task);
    }

    pub fn unlisten(&mut self, port: u16) {
        if let Some(task) = self.listeners.remove(&port) {
            task.abort();
        }
    }
}

impl Drop for HostForwards {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn listening_sockets_are_read_from_proc_net_tcp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
             1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert_eq!(parse_listening(tcp).collect::<Vec<_>>(), vec![8080]);
        let tcp6 = "  sl  local_address                         remote_address                        st\n   \
             0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(parse_listening(tcp6).collect::<Vec<_>>(), vec![3000]);
        assert_eq!(parse_listening("header only\n").count(), 0);
        assert_eq!(parse_listening("h\n 0: garbage\n").count(), 0);
    }
}
