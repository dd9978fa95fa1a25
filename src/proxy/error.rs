//! Gateway errors and their JSON bodies in the client's API format.
//!
//! Every error the gateway answers itself goes through [`GatewayError`]: it carries the status,
//! a metric label ([`GatewayError::kind`]) and a message that says what was wrong. [`render`]
//! shapes the body the way the client's SDK expects (Anthropic `{"type":"error",…}`, OpenAI
//! `{"error":{…}}`, Gemini `{"error":{"code","status",…}}`). Pingora errors are mapped once in
//! [`from_pingora`].

use crate::translate::{self, Format};
use bytes::Bytes;
use pingora::{Error as PError, ErrorSource, ErrorType};

/// Whose fault an error is; decides the status class and Pingora's error source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was bad (4xx; Pingora `Downstream`).
    Client,
    /// The provider failed or could not be reached (502/504; Pingora `Upstream`).
    Upstream,
    /// The gateway itself could not go on: config, routing, capacity (Pingora `Internal`).
    Gateway,
}

/// An error the gateway answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    /// Metric and log label (`no_route`, `body_too_large`, …).
    pub kind: &'static str,
    /// What the client is told.
    pub message: String,
    pub fault: Fault,
    /// Whether sending the request again (a new upstream attempt) may succeed.
    pub retryable: bool,
    /// `retry-after` seconds to tell the client (capacity errors).
    pub retry_after: Option<u32>,
}

impl GatewayError {
    /// An error whose fault follows from its status (4xx: client, 502/504: upstream, else
    /// gateway); not retryable.
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        let fault = match status {
            400..=499 => Fault::Client,
            502 | 504 => Fault::Upstream,
            _ => Fault::Gateway,
        };
        Self {
            status,
            kind,
            message: message.into(),
            fault,
            retryable: false,
            retry_after: None,
        }
    }

    /// The same error, marked as one a new attempt may get past.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// No rule and no sentinel key (spec §4.3, byte-exact message).
    pub fn no_route() -> Self {
        Self::new(
            501,
            "no_route",
            "no provider or transform rule matched this request",
        )
    }

    pub fn unknown_provider(name: &str) -> Self {
        Self::new(
            501,
            "unknown_provider",
            format!(
                "sentinel key names provider '{name}' but there is no providers.{name} entry in ccproxy.yaml"
            ),
        )
    }

    pub fn translation_unavailable(from: Format, to: Format) -> Self {
        Self::new(
            501,
            "translation_unavailable",
            format!(
                "translation not available: this gateway cannot translate {} requests to the {} API",
                from.as_str(),
                to.as_str()
            ),
        )
    }

    pub fn no_destination(message: String) -> Self {
        Self::new(502, "no_destination", message)
    }

    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("request body exceeds max_request_body_bytes ({limit} bytes)"),
        )
    }

    /// The global buffered-body budget is used up; the client may retry shortly.
    pub fn body_budget_exhausted(limit: u64) -> Self {
        let mut e = Self::new(
            503,
            "body_budget_exhausted",
            format!(
                "the gateway is holding max_buffered_body_bytes ({limit} bytes) of request bodies; retry shortly"
            ),
        );
        e.retry_after = Some(1);
        e
    }

    /// The Pingora error that makes Pingora call `fail_to_proxy`, where this error is rendered;
    /// it carries the source and retry flag.
    pub fn to_pingora(&self) -> Box<PError> {
        let source = match self.fault {
            Fault::Client => ErrorSource::Downstream,
            Fault::Upstream => ErrorSource::Upstream,
            Fault::Gateway => ErrorSource::Internal,
        };
        let mut e = PError::create(
            ErrorType::HTTPStatus(self.status),
            source,
            Some(self.message.clone().into()),
            None,
        );
        e.set_retry(self.retryable);
        e
    }
}

/// The JSON error body for `format` (OpenAI shape when the format is unknown).
pub fn render(err: &GatewayError, format: Option<Format>) -> Bytes {
    let f = format.unwrap_or(Format::OpenAi);
    Bytes::from(translate::error_json(f, err.status, &err.message, None).to_string())
}

/// Map a Pingora error to what the client is told. `None` when the client is gone.
pub fn from_pingora(e: &PError, upstream: Option<&str>) -> Option<GatewayError> {
    use ErrorType::*;
    let at = upstream.map_or_else(String::new, |u| format!(" ({u})"));
    let g = match e.etype() {
        HTTPStatus(code) => GatewayError::new(*code, "http_status", e.to_string()),
        ConnectTimedout => GatewayError::new(
            504,
            "upstream_connect_timeout",
            format!("timed out connecting to the upstream{at}"),
        ),
        ReadTimedout | WriteTimedout if *e.esource() == ErrorSource::Upstream => GatewayError::new(
            504,
            "upstream_timeout",
            format!("the upstream{at} timed out"),
        ),
        ReadTimedout if *e.esource() == ErrorSource::Downstream => GatewayError::new(
            408,
            "client_timeout",
            format!("timed out waiting for the client: {}", e.root_cause()),
        ),
        ConnectRefused => GatewayError::new(
            502,
            "upstream_connect_refused",
            format!("the upstream{at} refused the connection"),
        ),
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => GatewayError::new(
            502,
            "upstream_tls",
            format!("TLS with the upstream{at} failed: {}", e.root_cause()),
        ),
        ConnectNoRoute | ConnectError | BindError | SocketError | ConnectProxyFailure => {
            GatewayError::new(
                502,
                "upstream_connect",
                format!("cannot connect to the upstream{at}: {}", e.root_cause()),
            )
        }
        ReadError | WriteError | ConnectionClosed | H2Error | H2Downgrade | InvalidH2
            if *e.esource() == ErrorSource::Downstream =>
        {
            return None
        }
        _ => match e.esource() {
            ErrorSource::Upstream => GatewayError::new(
                502,
                "upstream_error",
                format!("error talking to the upstream{at}: {}", e.root_cause()),
            ),
            ErrorSource::Downstream => GatewayError::new(
                400,
                "bad_request",
                format!("bad request: {}", e.root_cause()),
            ),
            _ => GatewayError::new(500, "internal", format!("internal error: {e}")),
        },
    };
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_source_and_retry_flag_into_pingora() {
        let e = GatewayError::new(502, "x", "down").retryable().to_pingora();
        assert!(e.retry());
        assert_eq!(*e.esource(), ErrorSource::Upstream);
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(502));
        let e = GatewayError::new(400, "x", "bad").to_pingora();
        assert!(!e.retry());
        assert_eq!(*e.esource(), ErrorSource::Downstream);
        let e = GatewayError::no_route().to_pingora();
        assert_eq!(*e.esource(), ErrorSource::Internal);
    }
    use serde_json::json;

    #[test]
    fn no_route_body_matches_spec_for_openai() {
        let b = render(&GatewayError::no_route(), Some(Format::OpenAi));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "no provider or transform rule matched this request", "type": "not_implemented_error", "code": 501}})
        );
    }

    #[test]
    fn anthropic_and_gemini_shapes() {
        let e = GatewayError::new(504, "x", "slow");
        let a: serde_json::Value =
            serde_json::from_slice(&render(&e, Some(Format::Anthropic))).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "timeout_error");
        let g: serde_json::Value =
            serde_json::from_slice(&render(&e, Some(Format::Gemini))).unwrap();
        assert_eq!(g["error"]["status"], "DEADLINE_EXCEEDED");
        assert_eq!(g["error"]["code"], 504);
    }
}
