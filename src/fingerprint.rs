//! TLS client fingerprints computed from the ClientHello bytes a client sent: JA4 (FoxIO's
//! `JA4_a_b_c`) and JA3 (Salesforce's, string and MD5); the browser profiles ccproxy's own
//! upstream connections can take ([`profile`]); and [`probe`], which connects with a profile
//! and reports the fingerprint of the hello it wrote (`ccproxy fingerprint`).

pub mod connector;
pub mod profile;

use crate::tls_hello::{is_grease, ClientHello};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The JA4 fingerprint of a TLS-over-TCP ClientHello.
pub fn ja4(hello: &ClientHello) -> String {
    let version = hello
        .versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(hello.legacy_version);
    let version = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        _ => "00",
    };
    let ciphers: Vec<u16> = hello
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let extensions: Vec<u16> = hello
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let alpn = match hello.alpn.first() {
        Some(first) if !first.is_empty() => {
            let (a, z) = (first[0], first[first.len() - 1]);
            if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
                format!("{}{}", a as char, z as char)
            } else {
                // Not printable: the first hex digit of the first byte, the last of the last.
                let hex = format!("{a:02x}{z:02x}");
                format!("{}{}", &hex[..1], &hex[3..])
            }
        }
        _ => "00".to_owned(),
    };
    let part_a = format!(
        "t{version}{}{:02}{:02}{alpn}",
        if hello.sni.is_some() || hello.extensions.contains(&0) {
            'd'
        } else {
            'i'
        },
        ciphers.len().min(99),
        extensions.len().min(99),
    );
    let mut sorted_ciphers = ciphers;
    sorted_ciphers.sort_unstable();
    let part_b = truncated_sha256(&hex_list(&sorted_ciphers));
    let mut sorted_ext: Vec<u16> = extensions
        .into_iter()
        .filter(|e| *e != 0 && *e != 16)
        .collect();
    sorted_ext.sort_unstable();
    let mut c = hex_list(&sorted_ext);
    // Signature algorithms in the order sent, GREASE left out like everywhere in JA4 (recent
    // Chrome GREASEs this list too).
    let sigalgs: Vec<u16> = hello
        .sigalgs
        .iter()
        .copied()
        .filter(|s| !is_grease(*s))
        .collect();
    if !sigalgs.is_empty() {
        c.push('_');
        c.push_str(&hex_list(&sigalgs));
    }
    let part_c = if sorted_ext.is_empty() {
        "000000000000".to_owned()
    } else {
        truncated_sha256(&c)
    };
    format!("{part_a}_{part_b}_{part_c}")
}

/// The JA3 string (`version,ciphers,extensions,groups,point_formats`, GREASE left out) and its
/// MD5.
pub fn ja3(hello: &ClientHello) -> (String, String) {
    let join = |v: &[u16]| {
        v.iter()
            .filter(|x| !is_grease(**x))
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join("-")
    };
    let formats = hello
        .point_formats
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let text = format!(
        "{},{},{},{},{formats}",
        hello.legacy_version,
        join(&hello.ciphers),
        join(&hello.extensions),
        join(&hello.groups),
    );
    let digest = boring::hash::hash(boring::hash::MessageDigest::md5(), text.as_bytes())
        .map(|d| hex(&d))
        .unwrap_or_default();
    (text, digest)
}

/// What one probe connection showed.
#[derive(Debug, Clone)]
pub struct Probe {
    pub ja4: String,
    pub ja3: String,
    pub ja3_md5: String,
    /// The protocol the server chose by ALPN (`None`: none).
    pub alpn: Option<String>,
    pub tls_version: String,
    pub cipher: String,
    /// The server's answer to `GET <path>`.
    pub status: u16,
}

/// Connect to `url` (https) with `profile` (`None`: BoringSSL's defaults, as the gateway's
/// upstream connections without a profile), `GET` its path, and report the fingerprint of the
/// ClientHello this connection wrote, computed from the bytes themselves.
pub async fn probe(
    url: &str,
    profile: Option<profile::Profile>,
    insecure: bool,
) -> Result<Probe, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url}: only https:// URLs have a TLS fingerprint"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let host_for_connect = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = tokio::net::TcpStream::connect((host_for_connect.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let recorder = Recording {
        inner: tcp,
        written: Vec::new(),
    };
    let connector = match profile {
        Some(p) => p.connector()?,
        None => {
            let mut b = boring::ssl::SslConnector::builder(boring::ssl::SslMethod::tls())
                .map_err(|e| e.to_string())?;
            b.set_alpn_protos(b"\x02h2\x08http/1.1")
                .map_err(|e| e.to_string())?;
            b.build()
        }
    };
    let mut config = connector.configure().map_err(|e| e.to_string())?;
    if let Some(p) = profile {
        p.configure_connection(&mut config)?;
    }
    if insecure {
        config.set_verify(boring::ssl::SslVerifyMode::NONE);
        config.set_verify_hostname(false);
    }
    let tls = tokio_boring::connect(config, &host_for_connect, recorder)
        .await
        .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
    let hello = crate::tls_hello::client_hello(&tls.get_ref().written)
        .map_err(|_| "the bytes written are not a ClientHello".to_owned())?;
    let (ja3, ja3_md5) = ja3(&hello);
    let ssl = tls.ssl();
    let alpn = ssl
        .selected_alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let tls_version = ssl.version_str().to_owned();
    let cipher = ssl
        .current_cipher()
        .map_or_else(String::new, |c| c.name().to_owned());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(path.as_str())
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, "ccproxy-fingerprint")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let status = if alpn.as_deref() == Some("h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2: {e}"))?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://{authority}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        req.headers_mut().remove(http::header::HOST);
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP/2 request: {e}"))?
            .status()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP/1.1 request: {e}"))?
            .status()
    };
    Ok(Probe {
        ja4: ja4(&hello),
        ja3,
        ja3_md5,
        alpn,
        tls_version,
        cipher,
        status: status.as_u16(),
    })
}

/// A stream that keeps a copy of the first bytes written to it (the ClientHello).
struct Recording<S> {
    inner: S,
    written: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = &mut *self;
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let room = crate::tls_hello::MAX_HELLO.saturating_sub(me.written.len());
            me.written.extend_from_slice(&buf[..(*n).min(room)]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn hex_list(values: &[u16]) -> String {
    values
        .iter()
        .map(|v| format!("{v:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn truncated_sha256(text: &str) -> String {
    if text.is_empty() {
        return "000000000000".to_owned();
    }
    let mut h = hex(&Sha256::digest(text.as_bytes()));
    h.truncate(12);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(hex_text: &str) -> ClientHello {
        let bytes: Vec<u8> = (0..hex_text.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex_text[i..i + 2], 16).unwrap())
            .collect();
        crate::tls_hello::client_hello(&bytes).unwrap()
    }

    /// Debian's curl 7.88.1 (OpenSSL 3.0): JA4 as FoxIO's ja4plus computed it for the same
    /// client (build notes §4), JA3 from an independent implementation.
    #[test]
    fn curl_hello_has_its_known_fingerprints() {
        let h = hello(include_str!(
            "../tests/fixtures/client_hello/curl-7.88.1.hex"
        ));
        assert_eq!(ja4(&h), "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6");
        let (text, md5) = ja3(&h);
        assert_eq!(
            text,
            "771,4866-4867-4865-49196-49200-159-52393-52392-52394-49195-49199-158-49188-49192-107-\
             49187-49191-103-49162-49172-57-49161-49171-51-157-156-61-60-53-47-255,\
             0-11-10-16-22-23-49-13-43-45-51-21,29-23-30-25-24-256-257-258-259-260,0-1-2"
        );
        assert_eq!(md5, "0149f47eabf9a20d0893e2a44e5a6323");
    }

    /// Debian Chromium 156.0.8078.114, headless: GREASE (also among its signature algorithms)
    /// and permuted extensions. JA4 sorts, so it is stable across connections, and equals what
    /// FoxIO's ja4plus gave for Chromium 156 (build notes §4); JA3 follows the permuted order of
    /// this capture.
    #[test]
    fn chromium_hello_has_its_known_fingerprints() {
        let h = hello(include_str!(
            "../tests/fixtures/client_hello/chromium-156.hex"
        ));
        assert_eq!(h.sni.as_deref(), Some("api.example.test"));
        assert_eq!(ja4(&h), "t13d1517h2_8daaf6152771_cb7bf5808d99");
        assert!(h.sigalgs.iter().any(|s| is_grease(*s)));
        assert_eq!(ja3(&h).1, "94bc45711e233f6be6f096fec38b356d");
        assert!(
            h.ciphers.iter().any(|c| is_grease(*c)),
            "Chrome sends GREASE"
        );
    }

    #[test]
    fn grease_values_are_recognised() {
        for v in [0x0a0a, 0x1a1a, 0xfafa] {
            assert!(is_grease(v));
        }
        for v in [0x0a1a, 0x1301, 0x0000, 0xaaab] {
            assert!(!is_grease(v));
        }
    }
}
