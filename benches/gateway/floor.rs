//! The floor for S1 and S2: a bare Pingora pass-through with the same whole-body buffering as
//! ccproxy (the body read in `request_filter`, replayed through `ccproxy::proxy::replay`), no
//! hooks, no routing, no metrics, one fixed upstream. Whatever ccproxy costs above this is its
//! own work. It runs as a child process (`gateway --serve-floor PORT UPSTREAM THREADS`) so it can
//! be pinned to a core exactly like the gateway.

use async_trait::async_trait;
use bytes::BytesMut;
use ccproxy::proxy::replay;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

struct Floor {
    upstream: SocketAddr,
}

#[derive(Default)]
struct Ctx {
    slot: Option<replay::Slot>,
    hold: Option<replay::Hold>,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        if session.downstream_session.is_body_empty() {
            return Ok(false);
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = session.downstream_session.read_request_body().await? {
            buf.extend_from_slice(&chunk);
        }
        let (slot, hold) = replay::install(session, buf.freeze());
        (ctx.slot, ctx.hold) = (Some(slot), Some(hold));
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // As ccproxy does when an attempt begins: the replay session hands the body over.
        if let Some(hold) = &ctx.hold {
            replay::rearm(hold);
        }
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        if let Some(slot) = ctx.slot.take() {
            replay::restore(session, &slot);
        }
    }
}

struct Forever;

#[async_trait]
impl ShutdownSignalWatch for Forever {
    async fn recv(&self) -> ShutdownSignal {
        std::future::pending::<()>().await;
        ShutdownSignal::FastShutdown
    }
}

/// Run the floor proxy in this process (never returns).
pub fn serve(port: u16, upstream: SocketAddr, threads: usize) {
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Floor { upstream });
    svc.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(svc);
    server.run(RunArgs {
        shutdown_signal: Box::new(Forever),
    });
}

/// Start the floor as a child process of this benchmark binary, optionally pinned to `core`.
pub fn spawn(port: u16, upstream: SocketAddr, threads: usize, core: Option<usize>) -> Child {
    let me = std::env::current_exe().expect("current exe");
    let mut cmd = match core {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string()]).arg(me);
            cmd
        }
        None => Command::new(me),
    };
    cmd.args([
        "--serve-floor",
        &port.to_string(),
        &upstream.to_string(),
        &threads.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn floor proxy")
}
