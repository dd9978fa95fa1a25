//! The gateway's Pingora service: one `ProxyHttp` implementation whose phases only delegate to
//! the stage that owns them.
//!
//! | Pingora phase | stage |
//! |---|---|
//! | `request_filter` | [`inbound`]: synthetic routes, buffer the body ([`replay`], [`budget`]), `inbound` hooks |
//! | `upstream_peer` | [`outbound`]: start an [`attempt`]: route ([`route`]), credential, peer ([`upstream`]) |
//! | `upstream_request_filter` / `request_body_filter` | [`outbound`]: destination, credential, translation, `outbound` hooks, framing, sentinel check; the attempt's body |
//! | `error_while_proxy` / `fail_to_connect` | [`retry`]: may this attempt be retried |
//! | `upstream_response_filter` / `upstream_response_body_filter` | [`response`]: upstream timings, raw provider bytes to the [`flow`] seam; [`retry`]: a 401 on an injected credential renews it and sends again |
//! | `response_filter` / `response_body_filter` | [`response`]: request id, response translation (buffered JSON, SSE event by event) |
//! | `fail_to_proxy` | [`response`]: every error as JSON in the client's API format ([`error`]) |
//! | `logging` | [`response`]: restore the client session for keep-alive, metrics, flow summary |
//!
//! Requests reach the service through listeners ([`ingress`]); every listener feeds this same
//! service, and the request remembers which one it came in on.

pub mod attempt;
pub mod budget;
pub mod ctx;
pub mod error;
pub mod flow;
pub mod inbound;
pub mod ingress;
pub mod intercept;
pub mod outbound;
pub mod replay;
pub mod response;
pub mod retry;
pub mod route;
pub mod server;
pub mod synthetic;
pub mod upstream;

use crate::config::Config;
use crate::creds;
use crate::hooks::Pipeline;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use budget::BodyBudget;
use bytes::Bytes;
use ctx::RequestCtx;
use flow::FlowRecorder;
use ingress::Ingress;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Response header carrying the gateway's request id.
pub const REQUEST_ID_HEADER: &str = "x-ccproxy-request-id";

/// Response header listing fields a translation could not carry over.
pub const TRANSLATION_LOSS_HEADER: &str = "x-ccproxy-translation-loss";

/// Response header marking a locally estimated token count.
pub const TOKEN_ESTIMATE_HEADER: &str = "x-ccproxy-token-estimate";

/// `anthropic-version` sent on translated requests that have none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Prefix of headers that are internal to ccproxy and never forwarded upstream.
pub const INTERNAL_HEADER_PREFIX: &str = "x-ccproxy-";

/// What every listener's copy of the service shares: configuration and the long-lived state the
/// server owns (hook pipeline, credential store, DNS cache, body budget, flow recorder).
pub struct Shared {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub pipeline: Pipeline,
    pub creds: creds::Store,
    pub resolver: upstream::Resolver,
    /// The gateway's own listeners, to refuse requests routed back to them.
    pub own_listeners: upstream::OwnListeners,
    pub budget: Arc<BodyBudget>,
    pub recorder: Arc<dyn FlowRecorder>,
    ids: RequestIds,
}

/// With the `gemini_cli` hook configured, learn each Code Assist provider's project in the
/// background (`loadCodeAssist`); requests before it answers go without one.
fn prewarm_code_assist(config: &Config, pipeline: &Pipeline, creds: &creds::Store) {
    let hooked = pipeline
        .stage(crate::hooks::Stage::Outbound)
        .iter()
        .any(|s| s.spec.name == crate::hooks::builtin::gemini_cli::SPEC.name);
    if !hooked {
        return;
    }
    let (providers, sources): (Vec<_>, Vec<_>) = config
        .providers
        .values()
        .filter(|p| crate::code_assist::is_code_assist(p))
        .filter_map(|p| creds.get(&p.name).map(|s| (p.clone(), s.clone())))
        .unzip();
    crate::code_assist::spawn_prewarm(providers, sources, config.trust.clone());
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        pipeline: Pipeline,
        recorder: Arc<dyn FlowRecorder>,
    ) -> Self {
        let creds = creds::Store::new(
            config
                .providers
                .values()
                .filter_map(|p| p.auth.as_ref().map(|a| (&*p.name, a))),
            config.trust.clone(),
        );
        prewarm_code_assist(&config, &pipeline, &creds);
        let budget = BodyBudget::new(
            config.max_buffered_body_bytes,
            metrics.buffered_body_bytes.clone(),
            metrics.body_budget_rejections.clone(),
        );
        let resolver = upstream::Resolver::with_overrides(config.inspector.resolve.clone());
        let own_listeners = upstream::OwnListeners::new(
            &config.listen_addr(),
            config.inspector.proxy_listen.as_deref(),
        );
        Self {
            config,
            metrics,
            pipeline,
            creds,
            resolver,
            own_listeners,
            budget,
            recorder,
            ids: RequestIds::new(),
        }
    }
}

/// Request ids: a per-process prefix and a counter, mixed by a bijection (so they stay unique)
/// into 16 hex digits whose first few already tell flows apart (the inspector and
/// `ccproxy flows` accept a unique prefix).
struct RequestIds {
    prefix: u32,
    seq: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let prefix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32))
            ^ std::process::id();
        Self {
            prefix,
            seq: AtomicU64::new(0),
        }
    }

    /// The next id, as text and as a header value.
    fn next(&self) -> (String, http::HeaderValue) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = if n <= u64::from(u32::MAX) {
            // The common case without the formatting machinery: 16 lower-case hex digits.
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut buf = [0u8; 16];
            let v = mix((u64::from(self.prefix) << 32) | n);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
            }
            String::from_utf8_lossy(&buf).into_owned()
        } else {
            format!("{:08x}{:08x}", self.prefix, n)
        };
        let value = http::HeaderValue::from_str(&id)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        (id, value)
    }
}

/// SplitMix64's finaliser: a bijection on `u64` that spreads consecutive inputs apart.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The gateway service as one listener runs it.
pub struct Gateway {
    shared: Arc<Shared>,
    ingress: Ingress,
}

impl Gateway {
    pub fn new(shared: Arc<Shared>, ingress: Ingress) -> Self {
        Self { shared, ingress }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.ingress)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.inbound(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.begin_attempt(session, ctx).await
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        outbound::connected(ctx, reused);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.outbound(upstream_request, ctx).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        outbound::body(body, ctx);
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<pingora::Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<pingora::Error> {
        self.may_retry(peer, session, e, ctx, client_reused)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_head(upstream_response, ctx);
        match self.retry_on_head(upstream_response, ctx).await {
            Some(retry) => Err(retry),
            None => Ok(()),
        }
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        response::upstream_body(body, end_of_stream, ctx);
        self.capacity_body(body, end_of_stream, ctx)?;
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.client_head(upstream_response, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.client_body(body, end_of_stream, ctx);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.fail(session, e, ctx).await
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _e: &pingora::Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        // `may_retry` logs every retry once, with the request id and the reason.
        true
    }

    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _e: &pingora::Error,
    ) -> bool {
        // `fail_to_proxy` already logged the failure once, with the request id.
        true
    }

    async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        self.finish(session, ctx);
    }
}
