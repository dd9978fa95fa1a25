//! Builds and runs the Pingora `Server`: the reverse listener (HTTP/1.1 + h2c, see
//! [`super::ingress`]) carrying the [`Gateway`] service, and the metrics listener. It owns what
//! the config only describes: the hook pipeline, the credential store (inside [`Shared`]) and the
//! flow recorder. Used by `ccproxy start` and by tests, which run it on a thread and stop it
//! through [`GatewayHandle::shutdown`].
//!
//! Listeners are added beside the reverse one here (the TLS-intercepting and jail listeners
//! will feed the same `Gateway` through their own ingress).

use super::flow::{FlowRecorder, NoRecorder};
use super::ingress::{Ingress, ReverseListener};
use super::intercept::Interceptor;
use super::retry::MAX_ATTEMPTS;
use super::{Gateway, Shared};
use crate::config::Config;
use crate::hooks::Pipeline;
use crate::inspector::Inspector;
use crate::telemetry::metrics::{Metrics, ScrapeApp};
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Config(#[from] crate::config::Error),
    #[error("the gateway did not start listening on {0} within 10 s")]
    NotListening(String),
    #[error("the gateway thread could not be started: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Inspector(#[from] crate::inspector::Error),
    /// `inspector.keylog` names a file that cannot be opened (the message names it).
    #[error("{0}")]
    KeyLog(String),
}

/// Fail early, with a clear message, when a listen address is taken or invalid.
fn preflight(addr: &str) -> Result<(), Error> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| Error::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// What the server is built with besides the config.
#[derive(Default)]
pub struct Options {
    /// Where flows are recorded; `None` = the inspector the config describes (or nothing when
    /// `inspector.capture` is off).
    pub recorder: Option<Arc<dyn FlowRecorder>>,
}

/// The inspector of a built server, as its users need to reach it.
#[derive(Clone)]
pub struct InspectorInfo {
    /// Admin API address (`None`: not listening).
    pub listen: Option<String>,
    pub token: String,
    pub store: Arc<crate::inspector::store::Store>,
}

impl std::fmt::Debug for InspectorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InspectorInfo")
            .field("listen", &self.listen)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The hook pipeline of `config`; an unknown hook, bad params or a cycle is a config error
/// naming the file and the key path.
pub fn pipeline(config: &Config) -> Result<Pipeline, crate::config::Error> {
    Pipeline::build(&config.hooks).map_err(|e| config.invalid(e.path, e.message))
}

/// The Pingora HTTP proxy app for one listener (HTTP/1.1, and h2c after the listener's own
/// accept-time check, see [`ReverseListener`]).
fn proxy_app(
    conf: &Arc<ServerConf>,
    shared: &Arc<Shared>,
    ingress: Ingress,
) -> pingora_proxy::HttpProxy<Gateway> {
    let mut app = pingora_proxy::http_proxy(conf, Gateway::new(shared.clone(), ingress));
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    // An HTTP/2 connection with no open stream is closed after the client read timeout, as
    // Pingora closes an idle HTTP/1 connection (it counts only time with no active stream, so
    // long responses are not cut).
    options.h2_idle_timeout = Some(shared.config.timeouts.client_read);
    // CONNECT reaches the gateway, which refuses it with a JSON error.
    options.allow_connect_method_proxying = true;
    app.server_options = Some(options);
    app
}

/// A Pingora server with the gateway's services, ready to run, and its inspector.
pub fn build(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    options: Options,
) -> Result<(Server, Option<InspectorInfo>), Error> {
    let listen = config.listen_addr();
    let pipeline = pipeline(&config)?;
    preflight(&listen)?;
    if let Some(m) = &config.metrics {
        preflight(m)?;
    }
    if config.otel.is_some() && !config.inspector.capture {
        tracing::warn!("otel.enabled has no effect with inspector.capture: false (spans are made from captured flows)");
    }
    let inspector = match (&options.recorder, config.inspector.capture) {
        (None, true) => {
            if let Some(l) = &config.inspector.listen {
                preflight(l)?;
            }
            Some(Inspector::start(&config, metrics.clone())?)
        }
        _ => None,
    };
    let recorder: Arc<dyn FlowRecorder> = match (options.recorder, &inspector) {
        (Some(r), _) => r,
        (None, Some(i)) => i.recorder.clone(),
        (None, None) => Arc::new(NoRecorder),
    };
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(config.timeouts.shutdown_seconds),
        max_retries: MAX_ATTEMPTS as usize,
        // The upstream leg's secrets for `inspector.keylog` (Pingora's connector reads
        // `SSLKEYLOGFILE`, set by `ccproxy start`; see `tls_keylog`).
        upstream_debug_ssl_keylog: config.inspector.keylog.is_some(),
        ..ServerConf::default()
    };
    // Every TLS session of the gateway logs to it: intercepted clients, browser-profile
    // bridges, and (through the environment `start` set) Pingora's upstream connector.
    if let Some(path) = &config.inspector.keylog {
        crate::tls_keylog::open(path).map_err(Error::KeyLog)?;
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let shared = Arc::new(Shared::new(
        config.clone(),
        metrics.clone(),
        pipeline,
        recorder,
    ));
    let conf = server.configuration.clone();
    let reverse = ReverseListener {
        app: Arc::new(proxy_app(&conf, &shared, Ingress::Reverse)),
        first_bytes_timeout: config.timeouts.client_read,
    };
    let mut proxy = Service::new("ccproxy".to_owned(), reverse);
    proxy.add_tcp(&listen);
    server.add_service(proxy);

    let wants_interception =
        config.inspector.proxy_listen.is_some() || config.inspector.wireguard_listen.is_some();
    if wants_interception {
        if let Some(addr) = &config.inspector.proxy_listen {
            preflight(addr)?;
        }
        match interceptor(&config, &conf, &shared) {
            Ok(interceptor) => add_interception(&mut server, &config, interceptor)?,
            Err(e) => {
                tracing::warn!(error = %e, "TLS interception off (proxy and WireGuard listeners)")
            }
        }
    }

    if let Some(addr) = &config.metrics {
        let mut scrape = Service::new(
            "ccproxy metrics".to_owned(),
            pingora::apps::http_app::HttpServer::new_app(ScrapeApp { metrics }),
        );
        scrape.add_tcp(addr);
        server.add_service(scrape);
    }
    let info = inspector.map(|i| {
        if let Some(addr) = &config.inspector.listen {
            let mut admin = Service::new("ccproxy inspector".to_owned(), i.admin_app());
            admin.add_tcp(addr);
            server.add_service(admin);
        }
        InspectorInfo {
            listen: config.inspector.listen.clone(),
            token: i.token.clone(),
            store: i.store.clone(),
        }
    });
    Ok((server, info))
}

/// The interception machinery every intercepting listener shares.
fn interceptor(
    config: &Config,
    conf: &Arc<ServerConf>,
    shared: &Arc<Shared>,
) -> Result<Arc<Interceptor<pingora_proxy::HttpProxy<Gateway>>>, String> {
    let ca = crate::local_ca::LocalCa::load_or_create(&config.location.dir)
        .map_err(|e| format!("no local CA: {e}"))?;
    let acceptor = super::intercept::acceptor(config.inspector.keylog.is_some())?;
    Ok(Arc::new(Interceptor {
        app: Arc::new(proxy_app(conf, shared, Ingress::Intercept)),
        plain: Arc::new(proxy_app(conf, shared, Ingress::ProxyHttp)),
        ca: Arc::new(ca),
        head_timeout: config.timeouts.client_read,
        ignore_hosts: config.inspector.ignore_hosts.clone(),
        resolve: config.inspector.resolve.clone(),
        acceptor,
        untrusted_warned: Default::default(),
    }))
}

/// The explicit proxy listener and the WireGuard listener, as the config asks.
fn add_interception(
    server: &mut Server,
    config: &Config,
    interceptor: Arc<Interceptor<pingora_proxy::HttpProxy<Gateway>>>,
) -> Result<(), Error> {
    if let Some(addr) = &config.inspector.proxy_listen {
        let listener = super::intercept::ConnectListener {
            interceptor: interceptor.clone(),
        };
        let mut svc = Service::new("ccproxy intercept".to_owned(), listener);
        svc.add_tcp(addr);
        server.add_service(svc);
        tracing::info!(listen = %addr, "proxy listener (CONNECT, TLS interception) on");
    }
    if let Some(addr) = &config.inspector.wireguard_listen {
        let dns = crate::wireguard::dns::JailDns::new(
            config.inspector.resolve.keys().cloned(),
            crate::wireguard::dns::JailDns::system_resolver(),
        );
        let wg = crate::wireguard::WireGuardService::bind(
            addr,
            &config.location.dir,
            interceptor,
            Arc::new(dns),
        )
        .map_err(|e| Error::Bind {
            addr: addr.clone(),
            source: std::io::Error::other(e),
        })?;
        server.add_service(pingora::services::background::background_service(
            "ccproxy wireguard",
            wg,
        ));
    }
    Ok(())
}

/// Shutdown on `SIGTERM` or `SIGINT`, both graceful (in-flight requests get
/// `timeouts.shutdown_seconds` to finish).
pub struct SignalWatch;

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            // Without signal handlers there is nothing to wait for but the process end.
            std::future::pending::<()>().await;
            return ShutdownSignal::GracefulTerminate;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Run until `SIGTERM`/`SIGINT` (blocks the calling thread).
pub fn run(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<(), Error> {
    let (server, inspector) = build(config, metrics, Options::default())?;
    if let Some(i) = &inspector {
        match &i.listen {
            Some(l) => {
                tracing::info!(url = %format!("http://{l}/"), store = ?i.store.path, "inspector listening")
            }
            None => {
                tracing::info!(store = ?i.store.path, "inspector capturing (no admin listener)")
            }
        }
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch),
    });
    Ok(())
}

struct ChannelWatch(tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelWatch {
    async fn recv(&self) -> ShutdownSignal {
        if let Some(rx) = self.0.lock().await.take() {
            let _ = rx.await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// A gateway running on a background thread.
pub struct GatewayHandle {
    pub addr: String,
    pub metrics_addr: Option<String>,
    pub metrics: Arc<Metrics>,
    /// The inspector, when the config turned it on.
    pub inspector: Option<InspectorInfo>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatewayHandle {
    /// Gracefully stop the gateway and wait for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Start the gateway on a thread and return once its reverse listener accepts connections.
pub fn spawn(config: Config) -> Result<GatewayHandle, Error> {
    spawn_with(config, Options::default())
}

/// [`spawn`] with [`Options`] (a flow recorder).
pub fn spawn_with(config: Config, options: Options) -> Result<GatewayHandle, Error> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new()?);
    let (server, inspector) = build(config.clone(), metrics.clone(), options)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let watch = ChannelWatch(tokio::sync::Mutex::new(Some(rx)));
    let thread = std::thread::Builder::new()
        .name("ccproxy-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(watch),
            })
        })
        .map_err(Error::Thread)?;
    let handle = GatewayHandle {
        addr: config.listen_addr(),
        metrics_addr: config.metrics.clone(),
        metrics,
        inspector,
        stop: Some(tx),
        thread: Some(thread),
    };
    wait_listening(&handle.addr)?;
    if let Some(m) = &handle.metrics_addr {
        wait_listening(m)?;
    }
    if let Some(l) = handle.inspector.as_ref().and_then(|i| i.listen.as_ref()) {
        wait_listening(l)?;
    }
    Ok(handle)
}

/// Readiness poll: connect until the listener answers (bounded).
fn wait_listening(addr: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::NotListening(addr.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
