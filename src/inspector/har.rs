//! HAR 1.2 export of flows (spec §10.3): per flow one page and two entries, the forwarded
//! request with the provider's raw response, then the client's request with the response the
//! client got. Opens in browser devtools' HAR import.
//!
//! Text bodies are written as text, anything else (or invalid UTF-8) base64 with
//! `"encoding": "base64"`.

use super::model::{Flow, Message};
use base64::Engine;
use serde_json::{json, Value};

/// A flow with the bytes of its bodies, as the HAR needs them.
pub struct FlowWithBodies {
    pub flow: Flow,
    /// `(part, bytes)` for each stored body.
    pub bodies: Vec<(String, Vec<u8>)>,
}

impl FlowWithBodies {
    fn body(&self, part: &str) -> Option<&[u8]> {
        self.bodies
            .iter()
            .find(|(p, _)| p == part)
            .map(|(_, b)| b.as_slice())
    }
}

/// The HAR document of `flows`, in order.
pub fn document(flows: &[FlowWithBodies]) -> Value {
    let mut pages = Vec::with_capacity(flows.len());
    let mut entries = Vec::with_capacity(flows.len() * 2);
    for f in flows {
        let s = &f.flow.summary;
        let started = s.started_at.clone();
        pages.push(json!({
            "id": s.id,
            "title": format!("ccproxy flow {}", s.id),
            "startedDateTime": started,
            "pageTimings": {"onContentLoad": -1, "onLoad": -1},
        }));
        let t = &f.flow.timings;
        let total = t.done_ms.unwrap_or(0.0);
        let wait = match (t.upstream_sent_ms, t.first_byte_ms) {
            (Some(a), Some(b)) => (b - a).max(0.0),
            _ => 0.0,
        };
        let receive = match (t.first_byte_ms, t.last_byte_ms) {
            (Some(a), Some(b)) => (b - a).max(0.0),
            _ => 0.0,
        };
        let timings = json!({"blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
            "send": 0, "wait": wait, "receive": receive});
        let forwarded = f
            .flow
            .forwarded_request
            .as_ref()
            .unwrap_or(&f.flow.client_request);
        let forwarded_body = if f.flow.forwarded_request.is_some() {
            f.body("forwarded_request")
        } else {
            f.body("client_request")
        };
        let provider = f.flow.provider_response.as_ref();
        entries.push(json!({
            "pageref": s.id,
            "startedDateTime": started,
            "time": total,
            "request": request(forwarded, forwarded_body),
            "response": response(provider, provider.and(f.body("provider_response")), 200),
            "cache": {},
            "timings": timings,
            "comment": "forwarded request and the provider's response",
        }));
        let (client_resp, client_body) = match &f.flow.client_response {
            Some(m) => (Some(m), f.body("client_response")),
            None => (provider, f.body("provider_response")),
        };
        entries.push(json!({
            "pageref": s.id,
            "startedDateTime": started,
            "time": total,
            "request": request(&f.flow.client_request, f.body("client_request")),
            "response": response(client_resp, client_body, i64::from(s.status)),
            "cache": {},
            "timings": timings,
            "comment": "client request and the response the client got",
        }));
    }
    json!({"log": {
        "version": "1.2",
        "creator": {"name": "ccproxy", "version": env!("CARGO_PKG_VERSION"), "comment": ""},
        "pages": pages,
        "entries": entries,
    }})
}

fn headers(m: &Message) -> Value {
    Value::Array(
        m.headers
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect(),
    )
}

fn query_string(url: &str) -> Value {
    let Some((_, q)) = url.split_once('?') else {
        return json!([]);
    };
    Value::Array(
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                json!({"name": k, "value": v})
            })
            .collect(),
    )
}

/// Text when the bytes are UTF-8 and the type is textual, else base64.
fn content_text(ctype: &str, bytes: &[u8]) -> (String, Option<&'static str>) {
    let textual = ctype.is_empty()
        || ctype.starts_with("text/")
        || ctype.contains("json")
        || ctype.contains("xml")
        || ctype.contains("event-stream")
        || ctype.contains("x-www-form-urlencoded")
        || ctype.contains("javascript");
    match std::str::from_utf8(bytes) {
        Ok(s) if textual => (s.to_owned(), None),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some("base64"),
        ),
    }
}

fn request(m: &Message, body: Option<&[u8]>) -> Value {
    let url = m.url.clone().unwrap_or_default();
    let mut r = json!({
        "method": m.method.clone().unwrap_or_else(|| "GET".to_owned()),
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": headers(m),
        "queryString": query_string(&url),
        "headersSize": -1,
        "bodySize": m.body.as_ref().map_or(0, |b| b.total),
    });
    if let Some(bytes) = body {
        let ctype = m.header("content-type").unwrap_or("").to_owned();
        let (text, encoding) = content_text(&ctype, bytes);
        let mut post = json!({"mimeType": ctype, "text": text});
        if let Some(e) = encoding {
            post["encoding"] = json!(e);
        }
        r["postData"] = post;
    }
    r
}

fn response(m: Option<&Message>, body: Option<&[u8]>, default_status: i64) -> Value {
    let Some(m) = m else {
        return json!({
            "status": default_status, "statusText": "", "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": [],
            "content": {"size": 0, "mimeType": ""},
            "redirectURL": "", "headersSize": -1, "bodySize": 0,
        });
    };
    let status = m.status.map_or(default_status, i64::from);
    let reason = u16::try_from(status)
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let ctype = m.header("content-type").unwrap_or("").to_owned();
    let bytes = body.unwrap_or(&[]);
    let (text, encoding) = content_text(&ctype, bytes);
    let mut content =
        json!({"size": m.body.as_ref().map_or(0, |b| b.total), "mimeType": ctype, "text": text});
    if let Some(e) = encoding {
        content["encoding"] = json!(e);
    }
    if m.body.as_ref().is_some_and(|b| b.truncated) {
        content["comment"] = json!("truncated by inspector.max_body_bytes");
    }
    json!({
        "status": status,
        "statusText": reason,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": headers(m),
        "content": content,
        "redirectURL": "",
        "headersSize": -1,
        "bodySize": m.body.as_ref().map_or(0, |b| b.total),
    })
}
