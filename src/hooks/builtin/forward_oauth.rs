//! `forward_oauth` (inbound): recognises a sentinel key and names the provider it stands for.
//!
//! The sentinel `sk-ant-oat-ccproxy-{name}` is looked for in `x-api-key`, `x-goog-api-key`, then
//! `authorization` (after a case-insensitive `Bearer `). Found: the request is routed to
//! `providers.{name}`, whose credential replaces the sentinel on every upstream attempt
//! (`creds::inject`, called by the outbound stage, so a retry can carry a refreshed credential
//! and the client's own headers are never rewritten). A sentinel naming no configured provider is
//! fatal (`501`): the sentinel must never leave the gateway. With this hook off for a request
//! (`x-ccproxy-hooks: -forward_oauth`) the sentinel is not recognised, so the request is not
//! routed by it, and the outbound sentinel check refuses to forward it.

use crate::creds::sentinel_provider;
use crate::hooks::registry::{no_params, HookSpec};
use crate::hooks::{Hook, HookContext, HookError, Stage};
use std::sync::Arc;

pub const SPEC: HookSpec = HookSpec {
    name: "forward_oauth",
    stage: Stage::Inbound,
    reads: &["authorization", "x-api-key", "x-goog-api-key"],
    writes: &["authorization", "x-api-key", "x-goog-api-key"],
    summary: "route a sentinel key to the named provider, whose credential replaces it",
    build: |p| {
        no_params(p)?;
        Ok(Arc::new(ForwardOauth))
    },
};

struct ForwardOauth;

#[async_trait::async_trait]
impl Hook for ForwardOauth {
    fn guard(&self, cx: &HookContext<'_>) -> bool {
        crate::creds::AUTH_HEADERS
            .iter()
            .any(|h| cx.headers.headers.get(h).is_some_and(|v| !v.is_empty()))
    }

    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError> {
        let Some(name) = sentinel_provider(cx.headers) else {
            return Ok(());
        };
        if !cx.providers.contains_key(name) {
            return Err(HookError::fatal(
                501,
                format!(
                    "sentinel key names provider '{name}' but there is no providers.{name} entry in ccproxy.yaml"
                ),
            ));
        }
        cx.meta.sentinel_provider = cx.providers.get(name).map(|p| p.name.clone());
        Ok(())
    }
}
