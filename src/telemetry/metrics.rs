//! Prometheus metrics of one gateway instance, and the scrape endpoint that serves them.
//!
//! Each [`Metrics`] has its own registry (no process globals), so several gateways in one process
//! (tests) never mix counts. The scrape endpoint is a small Pingora `ServeHttp` app answering
//! `GET /metrics` in the text exposition format on its own listener.

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::sync::Arc;

/// Buckets for latencies measured in seconds, from 10 µs to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `ccproxy_requests_total{provider,action,status}`.
    pub requests: IntCounterVec,
    /// `ccproxy_upstream_latency_seconds{provider}`: request sent → response headers received.
    pub upstream_latency: HistogramVec,
    /// `ccproxy_overhead_seconds`: time a request spent in the gateway, not waiting for the
    /// upstream (see `RequestCtx::overhead`).
    pub overhead: Histogram,
    /// `ccproxy_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `ccproxy_hook_errors_total{hook}`.
    pub hook_errors: IntCounterVec,
    /// `ccproxy_translation_loss_total{from,to,field}`: fields translation could not carry.
    pub translation_loss: IntCounterVec,
    /// `ccproxy_upstream_retries_total{provider,reason}`: extra upstream attempts.
    pub upstream_retries: IntCounterVec,
    /// `ccproxy_buffered_body_bytes`: request-body bytes held right now.
    pub buffered_body_bytes: IntGauge,
    /// `ccproxy_body_budget_rejections_total`: requests refused because the body budget was
    /// used up.
    pub body_budget_rejections: IntCounter,
    /// `ccproxy_tokens_total{provider,model,kind}`: tokens reported by providers
    /// (`input`, `output`, `cache_read`, `cache_write`), counted from captured flows.
    pub tokens: IntCounterVec,
    /// `ccproxy_flows_dropped_total`: flows not stored because the store's queue was full.
    pub flows_dropped: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ccproxy_requests_total",
                "Requests answered, by provider, route action and status",
            ),
            &["provider", "action", "status"],
        )?;
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "ccproxy_upstream_latency_seconds",
                "Time from sending the request upstream to receiving the response headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let overhead = Histogram::with_opts(
            HistogramOpts::new(
                "ccproxy_overhead_seconds",
                "Time a request spends in the gateway rather than waiting for the upstream (total minus connect minus request-sent to last-response-byte)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let in_flight = IntGauge::new("ccproxy_requests_in_flight", "Requests being processed")?;
        let hook_errors = IntCounterVec::new(
            Opts::new("ccproxy_hook_errors_total", "Hook failures, by hook"),
            &["hook"],
        )?;
        let translation_loss = IntCounterVec::new(
            Opts::new(
                "ccproxy_translation_loss_total",
                "Fields dropped by translation because the target format has no equivalent",
            ),
            &["from", "to", "field"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "ccproxy_upstream_retries_total",
                "Upstream attempts after the first, by provider and reason",
            ),
            &["provider", "reason"],
        )?;
        let buffered_body_bytes = IntGauge::new(
            "ccproxy_buffered_body_bytes",
            "Request-body bytes buffered right now (against max_buffered_body_bytes)",
        )?;
        let body_budget_rejections = IntCounter::new(
            "ccproxy_body_budget_rejections_total",
            "Requests refused with 503 because max_buffered_body_bytes was used up",
        )?;
        registry.register(Box::new(upstream_retries.clone()))?;
        registry.register(Box::new(buffered_body_bytes.clone()))?;
        registry.register(Box::new(body_budget_rejections.clone()))?;
        registry.register(Box::new(translation_loss.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(hook_errors.clone()))?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "ccproxy_tokens_total",
                "Tokens the providers reported, by provider, model and kind (input, output, cache_read, cache_write)",
            ),
            &["provider", "model", "kind"],
        )?;
        let flows_dropped = IntCounter::new(
            "ccproxy_flows_dropped_total",
            "Flows not stored because the flow store's queue was full",
        )?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(flows_dropped.clone()))?;
        Ok(Self {
            registry,
            requests,
            upstream_latency,
            overhead,
            in_flight,
            hook_errors,
            translation_loss,
            upstream_retries,
            buffered_body_bytes,
            body_budget_rejections,
            tokens,
            flows_dropped,
        })
    }

    /// Add a flow's token usage to `ccproxy_tokens_total`.
    pub fn count_tokens(
        &self,
        provider: &str,
        model: &str,
        usage: &crate::inspector::model::Usage,
    ) {
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .with_label_values(&[provider, model, kind])
                    .inc_by(n);
            }
        }
    }

    /// Count one answered request in `ccproxy_requests_total`.
    pub fn count_request(&self, provider: &str, action: &str, status: u16) {
        let code = http::StatusCode::from_u16(status).ok();
        let status = code.as_ref().map_or("0", http::StatusCode::as_str);
        self.requests
            .with_label_values(&[provider, action, status])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec only fails on metric-family inconsistencies we never create.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The `GET /metrics` endpoint.
pub struct ScrapeApp {
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for ScrapeApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let req = session.req_header();
        let (status, ctype, body) = match (req.method.as_str(), req.uri.path()) {
            ("GET" | "HEAD", "/metrics") => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            (_, "/metrics") => (405, "text/plain", b"method not allowed\n".to_vec()),
            _ => (404, "text/plain", b"not found: try /metrics\n".to_vec()),
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        if let Ok(v) = http::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        resp
    }
}
