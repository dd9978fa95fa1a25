//! OpenTelemetry export: one span per finished flow, sent as OTLP/HTTP JSON
//! (`POST <endpoint>/v1/traces`) by a background thread in batches.
//!
//! Spans are made from the stored flow (after the inspector's writer has read usage and model
//! from the bodies), so exporting never touches the request path; with `otel.enabled: false`
//! nothing here exists. Attributes follow the GenAI semantic conventions (`gen_ai.*`) plus the
//! original's `ccproxy.*` ones (spec §13); status is ERROR for answers ≥ 400. A collector that
//! is down costs one warning per failure burst, and the spans of that batch.

use crate::config::Otel;
use crate::inspector::model::Summary;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Spans waiting for export; past this they are dropped.
const QUEUE: usize = 4096;
/// Most spans per request to the collector.
const BATCH: usize = 512;
/// A partial batch goes out after this long.
const FLUSH: Duration = Duration::from_secs(2);

/// The sending side: hands finished flows to the export thread, never blocking.
#[derive(Clone)]
pub struct Exporter {
    tx: SyncSender<Summary>,
}

impl Exporter {
    /// Start the export thread.
    pub fn start(config: &Otel) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let config = config.clone();
        std::thread::Builder::new()
            .name("ccproxy-otel".to_owned())
            .spawn(move || export_loop(&config, &rx))?;
        Ok(Self { tx })
    }

    /// Queue the span of a finished flow.
    pub fn send(&self, flow: &Summary) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(flow.clone()) {
            tracing::debug!("otel: export queue full; span dropped");
        }
    }
}

fn export_loop(config: &Otel, rx: &Receiver<Summary>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut failing = false;
    loop {
        let Ok(first) = rx.recv() else {
            return;
        };
        let mut batch = vec![span(&first)];
        let deadline = Instant::now() + FLUSH;
        let mut closed = false;
        while batch.len() < BATCH {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => batch.push(span(&s)),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let body = document(&config.service_name, batch);
        let result = agent
            .post(&config.traces_url)
            .header("content-type", "application/json")
            .send(body.to_string());
        match result {
            Ok(r) if r.status().is_success() => failing = false,
            Ok(r) if !failing => {
                failing = true;
                tracing::warn!(url = %config.traces_url, status = r.status().as_u16(), "otel: collector refused spans");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(url = %config.traces_url, error = %e, "otel: cannot reach the collector");
            }
            _ => {}
        }
        if closed {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string(key: &str, v: &str) -> Value {
    json!({"key": key, "value": {"stringValue": v}})
}

fn int(key: &str, v: u64) -> Value {
    // OTLP/JSON carries 64-bit integers as strings.
    json!({"key": key, "value": {"intValue": v.to_string()}})
}

fn double(key: &str, v: f64) -> Value {
    json!({"key": key, "value": {"doubleValue": v}})
}

/// Whether a path is a model call (spec §13: `/messages`, `/completions`; and Gemini's
/// `:generateContent` actions).
fn is_chat(path: &str) -> bool {
    path.contains("/messages")
        || path.contains("/completions")
        || path.contains("/responses")
        || path.contains(":generateContent")
        || path.contains(":streamGenerateContent")
}

/// The OTLP span of one flow. Trace and span ids derive from the flow id, so re-exporting
/// the same flow gives the same span.
pub fn span(f: &Summary) -> Value {
    let digest = Sha256::digest(f.id.as_bytes());
    let start_ns = u128::from(f.started_ms) * 1_000_000;
    let end_ns = start_ns + (f.duration_ms.unwrap_or(0.0).max(0.0) * 1e6) as u128;
    let (host, port) = match f.host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse::<u64>().unwrap_or(80)),
        _ => (f.host.clone(), 80),
    };
    let path = f.path.split('?').next().unwrap_or("");
    let mut attrs = vec![
        string("http.request.method", &f.method),
        string("url.full", &format!("http://{}{}", f.host, f.path)),
        string("url.path", path),
        string("url.scheme", "http"),
        string("server.address", &host),
        int("server.port", port),
        string("ccproxy.proxy_direction", "inbound"),
        string("ccproxy.trace_id", &f.id),
        string("ccproxy.provider", &f.provider),
        string("ccproxy.action", &f.action),
        int("http.response.status_code", u64::from(f.status)),
        double("ccproxy.duration_ms", f.duration_ms.unwrap_or(0.0)),
    ];
    if let Some(s) = &f.session_id {
        attrs.push(string("ccproxy.session_id", s));
    }
    if let Some(c) = &f.conversation_id {
        attrs.push(string("ccproxy.conversation_id", c));
    }
    if is_chat(path) {
        let system = f
            .provider_format
            .clone()
            .or_else(|| f.client_format.clone())
            .unwrap_or_else(|| f.provider.clone());
        attrs.push(string("gen_ai.system", &system));
        attrs.push(string("gen_ai.operation.name", "chat"));
        if let Some(m) = &f.model {
            attrs.push(string("gen_ai.request.model", m));
        }
        if let Some(u) = &f.usage {
            attrs.push(int(
                "gen_ai.usage.input_tokens",
                u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            ));
            attrs.push(int("gen_ai.usage.output_tokens", u.output_tokens));
            attrs.push(int(
                "gen_ai.usage.cache_read_input_tokens",
                u.cache_read_tokens,
            ));
            attrs.push(int(
                "gen_ai.usage.cache_creation_input_tokens",
                u.cache_write_tokens,
            ));
        }
        if let Some(t) = f.ttft_ms {
            attrs.push(double("ccproxy.ttft_ms", t));
        }
    }
    let status = if f.status >= 400 || f.status == 0 {
        let message = match &f.error {
            Some(e) => format!("HTTP {}: {}", f.status, e.message),
            None => format!("HTTP {}", f.status),
        };
        json!({"code": 2, "message": message})
    } else {
        json!({"code": 0})
    };
    json!({
        "traceId": hex(&digest[..16]),
        "spanId": hex(&digest[16..24]),
        "name": format!("ccproxy.inbound.{} {}", f.method, f.host),
        "kind": 2,
        "startTimeUnixNano": start_ns.to_string(),
        "endTimeUnixNano": end_ns.to_string(),
        "attributes": attrs,
        "status": status,
    })
}

/// An OTLP `ExportTraceServiceRequest` in JSON.
pub fn document(service_name: &str, spans: Vec<Value>) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", service_name)]},
        "scopeSpans": [{
            "scope": {"name": "ccproxy", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans,
        }],
    }]})
}
