//! `ccproxy start`: load the config, set up logging and run the gateway in the foreground.

use crate::config::ConfigLocation;
use crate::proxy::server;
use crate::telemetry::{logging, metrics::Metrics};
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(location: ConfigLocation, verbose: u8) -> ExitCode {
    let Some(config) = super::load_config(location) else {
        return ExitCode::FAILURE;
    };
    // The hook pipeline is built by the server; check it before anything starts so a bad hook
    // list fails like any other config error (one line naming file and key).
    if let Err(e) = server::pipeline(&config) {
        eprintln!("ccproxy: {e}");
        return ExitCode::FAILURE;
    }
    // Before logging or anything else starts a thread: the environment may only change while
    // the process has one (see `tls_keylog::export_env`).
    if let Some(path) = &config.inspector.keylog {
        if let Err(e) = crate::tls_keylog::export_env(path) {
            eprintln!("ccproxy: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = logging::init(config.log_level, verbose, config.log_file.as_deref()) {
        eprintln!("ccproxy: {e}");
        return ExitCode::FAILURE;
    }
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("ccproxy: metrics setup failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.file_found {
        tracing::warn!(
            file = %config.location.file.display(),
            "no config file; using built-in defaults (run `ccproxy init` to create one)"
        );
    }
    if config.providers.is_empty() {
        tracing::warn!("no providers configured: every proxied request will get 501");
    }
    // The local CA for TLS interception, created on the first start (`ccproxy ca` says how to
    // trust it). Nothing serves with it yet, so a failure is a warning.
    if let Err(e) = crate::local_ca::LocalCa::load_or_create(&config.location.dir) {
        tracing::warn!(error = %e, "local CA not available");
    }
    tracing::info!(
        listen = %config.listen_addr(),
        metrics = config.metrics.as_deref().unwrap_or("off"),
        config = %config.location.file.display(),
        providers = config.providers.len(),
        "ccproxy starting"
    );
    let config = Arc::new(config);
    match server::run(config, metrics) {
        Ok(()) => {
            tracing::info!("ccproxy stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ccproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
