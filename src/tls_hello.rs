//! Reading a TLS ClientHello from the first bytes a client sent, without terminating TLS: is this
//! TLS at all, which host does it name (SNI), and the fields fingerprints are made of
//! ([`crate::fingerprint`]). The jail's TCP dispatch uses it to choose
//! between interception, a raw relay (`inspector.ignore_hosts`) and non-TLS traffic. Bounded:
//! a hello longer than [`MAX_HELLO`] is treated as not TLS.

/// Longest ClientHello (all its records) read before giving up.
pub const MAX_HELLO: usize = 64 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A TLS handshake that is not complete yet: read more.
    NeedMore,
    /// Not a TLS ClientHello (or a malformed or oversized one).
    NotTls,
    /// A complete ClientHello, with the server name it asks for, if any.
    ClientHello { sni: Option<String> },
}

/// Look at the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Hello {
    match client_hello(buf) {
        Ok(h) => Hello::ClientHello { sni: h.sni },
        Err(other) => other,
    }
}

/// The whole ClientHello in the first bytes of a connection (`Err`: more bytes needed, or not
/// TLS).
pub fn client_hello(buf: &[u8]) -> Result<ClientHello, Hello> {
    let body = handshake_body(buf)?;
    ClientHello::from_body(&body).ok_or(Hello::NotTls)
}

/// The ClientHello handshake message's body, gathered from as many records as it spans.
fn handshake_body(buf: &[u8]) -> Result<Vec<u8>, Hello> {
    // The handshake message may span several records; gather its bytes.
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return Err(if at == 0 && !buf.is_empty() && buf[0] != 0x16 {
                Hello::NotTls
            } else {
                Hello::NeedMore
            });
        };
        // Content type 22 (handshake), major version 3.
        if header[0] != 0x16 || header[1] != 0x03 {
            return Err(Hello::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16 * 1024 + 2048 {
            return Err(Hello::NotTls);
        }
        let Some(body) = buf.get(at + 5..at + 5 + len) else {
            return Err(if buf.len() > MAX_HELLO {
                Hello::NotTls
            } else {
                Hello::NeedMore
            });
        };
        handshake.extend_from_slice(body);
        at += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return Err(Hello::NotTls);
            }
            let want = 4
                + ((usize::from(handshake[1]) << 16)
                    | (usize::from(handshake[2]) << 8)
                    | usize::from(handshake[3]));
            if want > MAX_HELLO {
                return Err(Hello::NotTls);
            }
            if handshake.len() >= want {
                handshake.truncate(want);
                return Ok(handshake.split_off(4));
            }
        }
    }
}

/// A cursor over a ClientHello body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The fields of a ClientHello that fingerprints and routing look at, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3 hellos).
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    /// Extension types, in order.
    pub extensions: Vec<u16>,
    /// Server name (lower case), when valid.
    pub sni: Option<String>,
    /// ALPN protocols, in order.
    pub alpn: Vec<Vec<u8>>,
    /// `signature_algorithms`, in order.
    pub sigalgs: Vec<u16>,
    /// `supported_groups`, in order.
    pub groups: Vec<u16>,
    /// `ec_point_formats`.
    pub point_formats: Vec<u8>,
    /// `supported_versions`, in order.
    pub versions: Vec<u16>,
}

/// GREASE values (RFC 8701): both bytes equal, low nibble 0xA.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn u16s(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

impl ClientHello {
    /// Parse a ClientHello handshake body; `None` when it is malformed.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        let mut r = Reader(body);
        let v = r.take(2)?;
        let mut hello = ClientHello {
            legacy_version: u16::from_be_bytes([v[0], v[1]]),
            ..ClientHello::default()
        };
        r.take(32)?; // random
        r.vec8()?; // session id
        hello.ciphers = u16s(r.vec16()?);
        r.vec8()?; // compression methods
        if r.0.is_empty() {
            return Some(hello); // no extensions at all
        }
        let mut exts = Reader(r.vec16()?);
        while !exts.0.is_empty() {
            let kind = exts.u16()? as u16;
            let data = exts.vec16()?;
            hello.extensions.push(kind);
            match kind {
                0 => hello.sni = server_name(data)?,
                10 => hello.groups = u16s(Reader(data).vec16()?),
                11 => hello.point_formats = Reader(data).vec8()?.to_vec(),
                13 => hello.sigalgs = u16s(Reader(data).vec16()?),
                16 => {
                    let mut list = Reader(Reader(data).vec16()?);
                    while !list.0.is_empty() {
                        hello.alpn.push(list.vec8()?.to_vec());
                    }
                }
                43 => hello.versions = u16s(Reader(data).vec8()?),
                _ => {}
            }
        }
        Some(hello)
    }
}

/// The host name in a `server_name` extension (`Some(None)`: no valid host name in it).
fn server_name(data: &[u8]) -> Option<Option<String>> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == 0 {
            let name = std::str::from_utf8(name).ok()?;
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            return Some(valid.then(|| name.to_ascii_lowercase()));
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with the given extensions, in one record.
    fn hello(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
        let mut hs = vec![0x01, 0, 0, 0];
        let n = body.len();
        hs[1..4].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn sni_ext(name: &str) -> Vec<u8> {
        let mut entry = vec![0u8];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        ext
    }

    #[test]
    fn finds_the_server_name_after_other_extensions() {
        let mut exts = vec![0x00, 0x17, 0, 0]; // extended master secret, empty
        exts.extend(sni_ext("API.Anthropic.com"));
        assert_eq!(
            parse(&hello(&exts)),
            Hello::ClientHello {
                sni: Some("api.anthropic.com".into())
            }
        );
    }

    #[test]
    fn a_hello_without_sni_has_none() {
        assert_eq!(
            parse(&hello(&[0x00, 0x17, 0, 0])),
            Hello::ClientHello { sni: None }
        );
    }

    #[test]
    fn partial_input_asks_for_more_and_other_protocols_are_not_tls() {
        let full = hello(&sni_ext("example.com"));
        for cut in [1, 4, 5, 20, full.len() - 1] {
            assert_eq!(parse(&full[..cut]), Hello::NeedMore, "cut at {cut}");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.2\r\n"), Hello::NotTls);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0, 0]), Hello::NotTls);
    }

    #[test]
    fn a_hello_split_across_two_records_is_reassembled() {
        let one = hello(&sni_ext("split.example"));
        let hs = &one[5..];
        let (a, b) = hs.split_at(30);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            parse(&two),
            Hello::ClientHello {
                sni: Some("split.example".into())
            }
        );
    }

    #[test]
    fn lengths_that_lie_never_panic() {
        let good = hello(&sni_ext("example.com"));
        for i in 5..good.len() {
            for v in [0u8, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse(&bad);
            }
        }
    }
}
