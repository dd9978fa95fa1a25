//! Responses the gateway makes itself (spec §3.1): `GET /` and `GET /health` (liveness) and
//! `GET /v1/models` (the model catalog of §15.3, [`crate::catalog`]).

use crate::config::ProviderTable;
use bytes::Bytes;

/// Body of the liveness answer.
pub const HEALTH_BODY: &str = "ccproxy says hey!";

/// What a synthetic route answers.
pub struct Synthetic {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// The synthetic answer for `method path`, if the path is one.
pub async fn answer(
    method: &str,
    path: &str,
    providers: &ProviderTable,
    creds: &crate::creds::Store,
    trust: Option<std::sync::Arc<crate::config::CaList>>,
) -> Option<Synthetic> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    match path {
        "/" | "/health" => Some(Synthetic {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(HEALTH_BODY.as_bytes()),
        }),
        "/v1/models" => {
            crate::catalog::refresh_stale(providers, creds, trust);
            Some(Synthetic {
                status: 200,
                content_type: "application/json",
                body: Bytes::from(crate::catalog::catalog(providers).await.to_string()),
            })
        }
        _ => None,
    }
}
