//! Gateway errors and their JSON bodies in the client's API format.
//!
//! Every error the gateway answers itself goes through [`GatewayError`]: it carries the status,
//! a metric label ([`GatewayError::kind`]) and a message that says what was wrong. [`render`]
//! shapes the body the way the client's SDK expects (Anthropic `{"type":"error",…}`, OpenAI
//! `{"error":{…}}`, Gemini `{"error":{"code","status",…}}`). Pingora errors are mapped once in
//! [`from_pingora`].

use crate::config::file::ApiFamily;
use crate::translate::{self, Format};
use bytes::Bytes;
use pingora::{Error as PError, ErrorSource, ErrorType};

/// An error the gateway answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl GatewayError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
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

    pub fn translation_unavailable(from: Option<ApiFamily>, to: &str) -> Self {
        let from = from.map_or("an unrecognised API format", ApiFamily::as_str);
        Self::new(
            501,
            "translation_unavailable",
            format!("translation not available: this gateway cannot yet translate {from} requests to the {to} API"),
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

    /// The Pingora error that makes Pingora call `fail_to_proxy`, where this error is rendered.
    pub fn to_pingora(&self) -> Box<PError> {
        PError::explain(ErrorType::HTTPStatus(self.status), self.message.clone())
    }
}

/// The JSON error body for `format` (OpenAI shape when the format is unknown).
pub fn render(err: &GatewayError, format: Option<ApiFamily>) -> Bytes {
    let f = format.and_then(Format::of).unwrap_or(Format::OpenAi);
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
    use serde_json::json;

    #[test]
    fn no_route_body_matches_spec_for_openai() {
        let b = render(&GatewayError::no_route(), Some(ApiFamily::Openai));
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
            serde_json::from_slice(&render(&e, Some(ApiFamily::Anthropic))).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "timeout_error");
        let g: serde_json::Value =
            serde_json::from_slice(&render(&e, Some(ApiFamily::Gemini))).unwrap();
        assert_eq!(g["error"]["status"], "DEADLINE_EXCEEDED");
        assert_eq!(g["error"]["code"], 504);
    }
}
