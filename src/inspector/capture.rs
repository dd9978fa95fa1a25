//! The inspector's side of the flow-recording seam: a [`Recorder`] hands each request a
//! [`Capture`], which keeps what the phases report (redacted, bounded) and sends it to the
//! store's writer when the request is over.
//!
//! Nothing here parses or serialises on the request path: large body chunks are kept as shared
//! `Bytes` and small ones copied (see [`CapturedBody`]); a pass-through response is not kept
//! twice (the client's chunks are the provider's very buffers, told apart by address),
//! header maps are cloned (their names and values are shared buffers), and the finished
//! capture goes through a bounded channel. Redaction, parsing (usage, conversation id, model)
//! and everything else happen on the store's writer thread, before anything is stored. When
//! the channel is full the flow is dropped and counted, never waited for. The live feed's
//! "created" event is only produced while someone listens to it.

use super::model::HookRun;
use super::redact;
use super::store::{Captured, CapturedBody, CapturedHeaders, CapturedMessage, StoreMsg, Writer};
use crate::hooks::RequestMeta;
use crate::proxy::flow::{FlowCapture, FlowRecorder, FlowSummary};
use crate::proxy::ingress::Ingress;
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Creates a [`Capture`] for every request.
pub struct Recorder {
    writer: Arc<Writer>,
    max_body: usize,
}

impl Recorder {
    pub fn new(writer: Arc<Writer>, max_body_bytes: usize) -> Self {
        Self {
            writer,
            max_body: max_body_bytes,
        }
    }
}

impl FlowRecorder for Recorder {
    fn start(&self, request_id: &str, ingress: Ingress) -> Option<Box<dyn FlowCapture>> {
        Some(Box::new(Capture {
            writer: self.writer.clone(),
            max_body: self.max_body,
            flow: Captured {
                id: request_id.to_owned(),
                seq: self.writer.next_seq(),
                ingress: ingress.as_str(),
                started_wall: SystemTime::now(),
                ..Captured::default()
            },
            started: Instant::now(),
            provider_chunks: Vec::new(),
            client_same: true,
            client_chunk: 0,
        }))
    }
}

/// One request's recording.
pub struct Capture {
    writer: Arc<Writer>,
    max_body: usize,
    flow: Captured,
    started: Instant,
    /// The provider's chunks as received (shared with Pingora), to tell whether the client got
    /// the same bytes.
    provider_chunks: Vec<Bytes>,
    /// Every client chunk so far was the provider's chunk of the same index.
    client_same: bool,
    client_chunk: usize,
}

impl Capture {
    fn ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

impl FlowCapture for Capture {
    fn client_request(&mut self, head: &RequestHeader, body: &Bytes, meta: &RequestMeta) {
        let host = head
            .headers
            .get(http::header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .or_else(|| head.uri.authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_default();
        let pq = head
            .uri
            .path_and_query()
            .map_or_else(|| head.uri.path().to_owned(), |p| p.as_str().to_owned());
        let f = &mut self.flow;
        f.path = redact::path_and_query(&pq);
        f.url = format!("http://{host}{}", f.path);
        f.host = host;
        f.session_id = meta.session_id.clone();
        f.client_format = meta.client_format.map(|c| c.as_str());
        f.client_model = meta.client_model.clone();
        f.client_request = Some(CapturedMessage {
            method: Some(head.method.as_str().to_owned()),
            url: Some(f.url.clone()),
            status: None,
            headers: CapturedHeaders::copy(&head.headers),
            body: (!body.is_empty()).then(|| CapturedBody::whole(body, self.max_body)),
        });
        if self.writer.has_listeners() {
            self.writer
                .send(StoreMsg::Begin(Box::new(f.summary_at_start())));
        }
    }

    fn hook_ran(&mut self, stage: &'static str, name: &'static str, changed: bool) {
        self.flow.hooks.push(HookRun {
            stage: stage.to_owned(),
            name: name.to_owned(),
            changed,
        });
    }

    fn upstream_request(&mut self, attempt: u32, origin: &str, head: &RequestHeader, body: &Bytes) {
        let ms = self.ms();
        let pq = head
            .uri
            .path_and_query()
            .map_or_else(|| head.uri.path().to_owned(), |p| p.as_str().to_owned());
        let f = &mut self.flow;
        f.attempts = attempt;
        f.timings.upstream_sent_ms = Some(ms);
        f.forwarded_request = Some(CapturedMessage {
            method: Some(head.method.as_str().to_owned()),
            url: Some(format!("{origin}{}", redact::path_and_query(&pq))),
            status: None,
            headers: CapturedHeaders::copy(&head.headers),
            body: (!body.is_empty()).then(|| CapturedBody::whole(body, self.max_body)),
        });
        // A new attempt starts a new provider response.
        f.provider_response = None;
        self.provider_chunks.clear();
    }

    fn upstream_response(&mut self, _attempt: u32, head: &ResponseHeader) {
        let ms = self.ms();
        self.flow.timings.first_byte_ms = Some(ms);
        self.flow.provider_response = Some(CapturedMessage {
            method: None,
            url: None,
            status: Some(head.status.as_u16()),
            headers: CapturedHeaders::copy(&head.headers),
            body: Some(CapturedBody::default()),
        });
    }

    fn upstream_body(&mut self, chunk: &Bytes, end: bool) {
        let ms = self.ms();
        if !chunk.is_empty() && self.flow.timings.ttft_ms.is_none() {
            self.flow.timings.ttft_ms = Some(ms);
        }
        if end || !chunk.is_empty() {
            self.flow.timings.last_byte_ms = Some(ms);
        }
        if let Some(body) = self
            .flow
            .provider_response
            .as_mut()
            .and_then(|m| m.body.as_mut())
        {
            body.push(chunk, self.max_body);
        }
        if !chunk.is_empty() {
            self.provider_chunks.push(chunk.clone());
        }
    }

    fn client_response(&mut self, head: &ResponseHeader) {
        self.flow.client_response = Some(CapturedMessage {
            method: None,
            url: None,
            status: Some(head.status.as_u16()),
            headers: CapturedHeaders::copy(&head.headers),
            body: Some(CapturedBody::default()),
        });
    }

    fn client_body(&mut self, chunk: &Bytes, _end: bool) {
        if chunk.is_empty() {
            return;
        }
        if self.client_same {
            let same = self
                .provider_chunks
                .get(self.client_chunk)
                .is_some_and(|p| p.as_ptr() == chunk.as_ptr() && p.len() == chunk.len());
            self.client_chunk += 1;
            if same {
                if let Some(b) = self
                    .flow
                    .client_response
                    .as_mut()
                    .and_then(|m| m.body.as_mut())
                {
                    b.total += chunk.len() as u64;
                }
                return;
            }
            // From here on the client's bytes differ: keep what it got so far (the shared
            // chunks before this one) and everything after.
            self.client_same = false;
            let before: Vec<Bytes> = self.provider_chunks[..self.client_chunk - 1].to_vec();
            if let Some(b) = self
                .flow
                .client_response
                .as_mut()
                .and_then(|m| m.body.as_mut())
            {
                b.reset();
                for c in &before {
                    b.push(c, self.max_body);
                }
            }
        }
        if let Some(b) = self
            .flow
            .client_response
            .as_mut()
            .and_then(|m| m.body.as_mut())
        {
            b.push(chunk, self.max_body);
        }
    }

    fn finish(mut self: Box<Self>, summary: &FlowSummary<'_>) {
        // Health probes answered by the gateway itself would only bury the real flows.
        if summary.action == "synthetic" && matches!(self.flow.path.as_str(), "/health" | "/") {
            return;
        }
        let ms = self.ms();
        let f = &mut self.flow;
        f.timings.done_ms = Some(ms);
        f.status = summary.status;
        f.provider = summary.provider.to_owned();
        f.action = summary.action;
        f.attempts = summary.attempts.max(f.attempts);
        f.retries = summary.retries.iter().map(|r| (*r).to_owned()).collect();
        f.provider_format = summary.provider_format.map(|p| p.as_str());
        f.loss = summary.loss.to_vec();
        f.error = summary
            .error
            .map(|e| (e.kind.to_owned(), e.message.clone()));
        f.client_same_as_provider =
            self.client_same && f.provider_response.is_some() && f.client_response.is_some();
        let flow = std::mem::take(&mut self.flow);
        self.writer.send(StoreMsg::Finish(Box::new(flow)));
    }
}
