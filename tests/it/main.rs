//! ccproxy's integration tests: one binary, one module per area. Gateways run in-process on
//! ephemeral ports (or as the built binary for CLI tests) in front of in-repo mock upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod attempts;
mod body;
mod cli;
mod code_assist;
mod errors;
mod fingerprint;
mod golden;
mod hooks;
mod hostile;
mod inspector;
mod intercept;
mod jail;
mod metrics;
mod oauth;
mod routing;
mod sdk;
mod translation;
mod wireguard;
