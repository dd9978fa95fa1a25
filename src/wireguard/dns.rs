//! DNS for jailed programs and WireGuard devices. Every UDP query to port 53 that comes through
//! the tunnel is answered here:
//! - a name in `inspector.resolve` gets an address from `198.18.0.0/15` (the benchmarking range,
//!   never routed on the internet) that stands for the name: connections to it are matched back
//!   to the name, and go where `inspector.resolve` says. The jail therefore resolves such names
//!   even offline. `AAAA` queries for them get no records, so clients use the IPv4 address;
//! - any other query is forwarded, as it is, to the host's resolver (the first `nameserver` of
//!   `/etc/resolv.conf`) and its answer relayed (`SERVFAIL` when it does not answer in 3 s).
//!
//! Queries come over UDP, and over TCP (port 53) from clients that retry a truncated answer;
//! those are forwarded over TCP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

/// First address handed out for a name in `inspector.resolve`.
const FIRST_STAND_IN: u32 = u32::from_be_bytes([198, 18, 0, 1]);
/// How long a forwarded query may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// The jail's resolver.
pub struct JailDns {
    /// Names answered with a stand-in address (keys of `inspector.resolve`).
    local: Vec<String>,
    stand_ins: Mutex<StandIns>,
    /// The host's resolver, when it has one.
    upstream: Option<SocketAddr>,
    /// How long a forwarded query may take.
    forward_timeout: Duration,
}

#[derive(Default)]
struct StandIns {
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl JailDns {
    pub fn new(
        resolve_names: impl IntoIterator<Item = String>,
        upstream: Option<SocketAddr>,
    ) -> Self {
        JailDns {
            local: resolve_names.into_iter().collect(),
            stand_ins: Mutex::new(StandIns::default()),
            upstream,
            forward_timeout: FORWARD_TIMEOUT,
        }
    }

    /// The host's resolver from `/etc/resolv.conf`.
    pub fn system_resolver() -> Option<SocketAddr> {
        let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
        text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver")
                .then(|| words.next()?.parse::<IpAddr>().ok())
                .flatten()
                .map(|ip| SocketAddr::new(ip, 53))
        })
    }

    /// The name a stand-in address stands for.
    pub fn name_for(&self, ip: IpAddr) -> Option<String> {
        let IpAddr::V4(v4) = ip else { return None };
        self.stand_ins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_addr
            .get(&v4)
            .cloned()
    }

    fn stand_in(&self, name: &str) -> Ipv4Addr {
        let mut s = self.stand_ins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = s.by_name.get(name) {
            return *ip;
        }
        // One per name in `inspector.resolve`: a handful, never near the range's 131070.
        let ip = Ipv4Addr::from(FIRST_STAND_IN + s.by_name.len() as u32);
        s.by_name.insert(name.to_owned(), ip);
        s.by_addr.insert(ip, name.to_owned());
        ip
    }

    /// The answer to one query (`None`: not a query worth answering).
    pub async fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.answer_over(query, Transport::Udp).await
    }

    async fn answer_over(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let q = Question::parse(query)?;
        if self.local.contains(&q.name) {
            let ip = (q.qtype == TYPE_A).then(|| self.stand_in(&q.name));
            return Some(q.reply(RCODE_OK, ip));
        }
        let Some(upstream) = self.upstream else {
            return Some(q.reply(RCODE_SERVFAIL, None));
        };
        let answer = match transport {
            Transport::Udp => forward(query, upstream, self.forward_timeout).await,
            Transport::Tcp => forward_tcp(query, upstream, self.forward_timeout).await,
        };
        Some(answer.unwrap_or_else(|| q.reply(RCODE_SERVFAIL, None)))
    }

    /// Serve DNS over TCP (RFC 7766: two-byte length, then the message) on one connection,
    /// for clients that retry a truncated UDP answer over TCP. Names that are not local go to
    /// the host's resolver over TCP too.
    pub async fn serve_tcp<S>(&self, stream: &mut S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
                return;
            };
            let mut query = vec![0u8; usize::from(len)];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            let Some(answer) = self.answer_over(&query, Transport::Tcp).await else {
                return;
            };
            let Ok(len) = u16::try_from(answer.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(2 + answer.len());
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        }
    }
}

/// How a query came, and so how it is forwarded.
#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// How long a DNS-over-TCP connection may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A query to the resolver over TCP; its answer.
async fn forward_tcp(query: &[u8], upstream: SocketAddr, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(limit, async {
        let mut tcp = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(query.len()).ok()?;
        let mut framed = Vec::with_capacity(2 + query.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        tcp.write_all(&framed).await.ok()?;
        let n = tcp.read_u16().await.ok()?;
        let mut answer = vec![0u8; usize::from(n)];
        tcp.read_exact(&mut answer).await.ok()?;
        (answer.get(..2) == query.get(..2)).then_some(answer)
    })
    .await
    .ok()
    .flatten()
}

async fn forward(query: &[u8], upstream: SocketAddr, limit: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.send_to(query, upstream).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        // Only the resolver's answer to this query's id.
        if from == upstream && n >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

const TYPE_A: u16 = 1;
const RCODE_OK: u8 = 0;
const RCODE_SERVFAIL: u8 = 2;

/// The one question of a standard query.
#[derive(Debug)]
struct Question<'a> {
    id: [u8; 2],
    /// Recursion desired, echoed back.
    rd: bool,
    /// The name, lower case, without the final dot.
    name: String,
    qtype: u16,
    /// The question section as it came (name, type, class).
    raw: &'a [u8],
}

impl<'a> Question<'a> {
    fn parse(msg: &'a [u8]) -> Option<Self> {
        let header = msg.get(..12)?;
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let is_query = flags & 0x8000 == 0 && (flags >> 11) & 0xf == 0;
        let qdcount = u16::from_be_bytes([header[4], header[5]]);
        if !is_query || qdcount != 1 {
            return None;
        }
        let mut at = 12;
        let mut labels: Vec<String> = Vec::new();
        loop {
            let len = usize::from(*msg.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            // No compression pointers in a question; labels are at most 63 bytes.
            if len > 63 || labels.len() > 127 {
                return None;
            }
            let label = std::str::from_utf8(msg.get(at..at + len)?).ok()?;
            labels.push(label.to_ascii_lowercase());
            at += len;
        }
        let tail = msg.get(at..at + 4)?;
        Some(Question {
            id: [header[0], header[1]],
            rd: flags & 0x0100 != 0,
            name: labels.join("."),
            qtype: u16::from_be_bytes([tail[0], tail[1]]),
            raw: &msg[12..at + 4],
        })
    }

    /// A response to this question: `rcode`, and one A record when `ip` is given.
    fn reply(&self, rcode: u8, ip: Option<Ipv4Addr>) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.raw.len() + 16);
        out.extend_from_slice(&self.id);
        // QR, RA (and RD as asked); the rcode in the low bits.
        let flags: u16 = 0x8080 | if self.rd { 0x0100 } else { 0 } | u16::from(rcode & 0xf);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&u16::from(ip.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(self.raw);
        if let Some(ip) = ip {
            // Name: a pointer to the question's name at offset 12; type A, class IN, TTL 60 s.
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[tokio::test]
    async fn a_resolve_name_gets_a_stable_stand_in_that_maps_back() {
        let dns = JailDns::new(["api.anthropic.com".to_owned()], None);
        let a = dns.answer(&query("API.anthropic.com", 1)).await.unwrap();
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[3] & 0xf, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        let ip = Ipv4Addr::new(
            a[a.len() - 4],
            a[a.len() - 3],
            a[a.len() - 2],
            a[a.len() - 1],
        );
        assert_eq!(ip, Ipv4Addr::new(198, 18, 0, 1));
        // The same address again, for any spelling (the question is echoed as asked).
        let again = dns.answer(&query("api.anthropic.com", 1)).await.unwrap();
        assert_eq!(a[a.len() - 4..], again[again.len() - 4..]);
        assert_eq!(
            dns.name_for(ip.into()).as_deref(),
            Some("api.anthropic.com")
        );
        // AAAA: no records, so the client uses the A answer.
        let aaaa = dns.answer(&query("api.anthropic.com", 28)).await.unwrap();
        assert_eq!(u16::from_be_bytes([aaaa[6], aaaa[7]]), 0);
        assert_eq!(aaaa[3] & 0xf, 0);
    }

    #[tokio::test]
    async fn other_names_are_forwarded_and_a_silent_resolver_is_servfail() {
        // A resolver that answers with a fixed record, and one that never answers.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                reply.extend_from_slice(b"forwarded");
                let _ = server.send_to(&reply, from).await;
            }
        });
        let dns = JailDns::new(Vec::new(), Some(addr));
        let a = dns.answer(&query("example.org", 1)).await.unwrap();
        assert!(a.ends_with(b"forwarded"));
        assert_eq!(dns.name_for(Ipv4Addr::new(198, 18, 0, 1).into()), None);

        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut dns = JailDns::new(Vec::new(), Some(silent.local_addr().unwrap()));
        dns.forward_timeout = Duration::from_millis(50);
        let a = dns.answer(&query("example.org", 1)).await.unwrap();
        assert_eq!(a[3] & 0xf, RCODE_SERVFAIL);
    }

    #[tokio::test]
    async fn dns_over_tcp_answers_local_names_and_forwards_others_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A resolver that only speaks TCP and marks its answers.
        let resolver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = resolver.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut c, _) = resolver.accept().await.unwrap();
            let n = c.read_u16().await.unwrap();
            let mut q = vec![0u8; usize::from(n)];
            c.read_exact(&mut q).await.unwrap();
            q[2] |= 0x80;
            q.extend_from_slice(b"via-tcp");
            c.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            c.write_all(&q).await.unwrap();
        });
        let dns = JailDns::new(["local.test".to_owned()], Some(addr));
        let (mut client, mut server) = tokio::io::duplex(4096);
        let serving = tokio::spawn(async move { dns.serve_tcp(&mut server).await });
        for (name, expect_tail) in [
            ("local.test", &[198u8, 18, 0, 1][..]),
            ("example.org", b"via-tcp"),
        ] {
            let q = query(name, 1);
            client
                .write_all(&(q.len() as u16).to_be_bytes())
                .await
                .unwrap();
            client.write_all(&q).await.unwrap();
            let n = client.read_u16().await.unwrap();
            let mut a = vec![0u8; usize::from(n)];
            client.read_exact(&mut a).await.unwrap();
            assert_eq!(&a[..2], &q[..2]);
            assert!(a.ends_with(expect_tail), "{name}: {a:?}");
        }
        drop(client);
        serving.await.unwrap();
    }

    #[tokio::test]
    async fn malformed_queries_are_dropped_without_panic() {
        let dns = JailDns::new(["x.test".to_owned()], None);
        let good = query("x.test", 1);
        for cut in 0..good.len() {
            assert!(dns.answer(&good[..cut]).await.is_none(), "cut at {cut}");
        }
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(dns.answer(&response).await.is_none());
    }
}
