//! Observability: logging setup ([`logging`]) and the Prometheus metrics ([`metrics`]).

pub mod logging;
pub mod metrics;
pub mod otel;
