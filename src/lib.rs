//! ccproxy: a programmable LLM API gateway for coding agents, built on Pingora.
//!
//! One Pingora `ProxyHttp` service ([`proxy::Gateway`]) carries every request. Its phases only
//! delegate: `request_filter` buffers the body and runs the `inbound` hook stage,
//! `upstream_peer` resolves the route ([`proxy::route`]), `upstream_request_filter` /
//! `request_body_filter` run the `outbound` stage and apply body changes, and the response
//! filters carry the response stage. Configuration ([`config`]) is loaded once and validated
//! strictly; credentials ([`creds`]) are resolved per provider; hooks ([`hooks`]) are ordered by a
//! dependency DAG at load time; metrics and logging live in [`telemetry`]; the command line in
//! [`cli`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod catalog;
pub mod cli;
pub mod code_assist;
pub mod config;
pub mod conversation;
pub mod creds;
pub mod fingerprint;
pub mod gemini_cache;
pub mod hooks;
pub mod http_call;
pub mod inspector;
pub mod jail;
pub mod learned;
pub mod local_ca;
pub mod proxy;
pub mod telemetry;
pub mod tls_hello;
pub mod tls_keylog;
pub mod translate;
pub mod wireguard;
