//! One-shot HTTP requests the gateway makes on its own behalf: OAuth token refreshes, the
//! Code Assist `loadCodeAssist` prewarm, model-catalog refreshes. HTTP/1.1 (hyper's client)
//! over TCP or BoringSSL (verified against the given trust roots, else the system's), one
//! connection per call, one deadline for the whole call, and a bounded response body.
//!
//! Proxied traffic never goes through here; it uses Pingora's pooled connectors.

/// Trust roots (Pingora's CA list type).
pub type CaList = pingora::protocols::tls::CaType;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// `s` percent-encoded: every byte but RFC 3986's unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// as `%XX`. Fit for a path segment and for a form value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A request to send. `Debug` shows header names only (they may carry credentials).
#[derive(Clone)]
pub struct Call {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Call {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: http::Method::GET,
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn post(url: impl Into<String>, content_type: &'static str, body: Bytes) -> Self {
        Self {
            method: http::Method::POST,
            url: url.into(),
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )],
            body,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Add headers.
    pub fn headers(mut self, headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>) -> Self {
        self.headers.extend(headers);
        self
    }
}

/// What came back. `Debug` shows the status and sizes only (a token endpoint's body is a
/// credential).
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Why a call failed. Messages name the host, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("cannot connect to {host}: {message}")]
    Connect { host: String, message: String },
    #[error("TLS with {host} failed: {message}")]
    Tls { host: String, message: String },
    #[error("HTTP exchange with {host} failed: {message}")]
    Http { host: String, message: String },
    #[error("{host} did not answer within {}s", .after.as_secs_f64())]
    Timeout { host: String, after: Duration },
}

/// Send `call` and read the whole reply, all within `timeout`.
pub async fn send(
    call: Call,
    timeout: Duration,
    trust: Option<&CaList>,
) -> Result<Reply, CallError> {
    let uri: http::Uri = call
        .url
        .parse()
        .map_err(|_| CallError::Url(call.url.clone()))?;
    let host = uri
        .host()
        .ok_or_else(|| CallError::Url(call.url.clone()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    match tokio::time::timeout(timeout, exchange(&uri, &host, call, trust)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout {
            host,
            after: timeout,
        }),
    }
}

async fn exchange(
    uri: &http::Uri,
    host: &str,
    call: Call,
    trust: Option<&CaList>,
) -> Result<Reply, CallError> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(CallError::Url(call.url)),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connect = |message: String| CallError::Connect {
        host: host.to_owned(),
        message,
    };
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if tls {
        let tls_err = |message: String| CallError::Tls {
            host: host.to_owned(),
            message,
        };
        let mut builder = boring::ssl::SslConnector::builder(boring::ssl::SslMethod::tls())
            .map_err(|e| tls_err(e.to_string()))?;
        match trust {
            Some(roots) => {
                let store = builder.cert_store_mut();
                for cert in roots.iter() {
                    store
                        .add_cert(cert.clone())
                        .map_err(|e| tls_err(e.to_string()))?;
                }
            }
            None => builder
                .set_default_verify_paths()
                .map_err(|e| tls_err(e.to_string()))?,
        }
        builder
            .set_alpn_protos(b"\x08http/1.1")
            .map_err(|e| tls_err(e.to_string()))?;
        let config = builder
            .build()
            .configure()
            .map_err(|e| tls_err(e.to_string()))?;
        let stream = tokio_boring::connect(config, host, tcp)
            .await
            .map_err(|e| tls_err(e.to_string()))?;
        http1(TokioIo::new(stream), uri, host, call).await
    } else {
        http1(TokioIo::new(tcp), uri, host, call).await
    }
}

async fn http1<I>(io: I, uri: &http::Uri, host: &str, call: Call) -> Result<Reply, CallError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http_err = |e: &dyn std::fmt::Display| CallError::Http {
        host: host.to_owned(),
        message: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| http_err(&e))?;
    // The connection task ends when the exchange does (the sender is dropped with this call).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut request = http::Request::builder()
        .method(call.method)
        .uri(path)
        .body(Full::new(call.body.clone()))
        .map_err(|e| http_err(&e))?;
    let headers = request.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::from_str(authority).map_err(|e| http_err(&e))?,
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(call.body.len()));
    for (name, value) in call.headers {
        headers.insert(name, value);
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http_err(&e))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| http_err(&e))?
        .to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
