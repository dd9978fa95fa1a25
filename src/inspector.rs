//! The inspector: every flow through the gateway captured ([`capture`]), redacted at capture
//! time ([`redact`]), stored in SQLite ([`store`]) with the facts read from its bodies
//! ([`enrich`]), and served by the admin listener ([`admin`]: JSON API, live feed, HAR
//! ([`har`]), the embedded web viewer). [`Inspector::start`] builds it from the config;
//! the server plugs its [`capture::Recorder`] into the flow-recording seam
//! (`proxy::flow`) and its [`admin::AdminApp`] onto `inspector.listen`.

pub mod admin;
pub mod capture;
pub mod enrich;
pub mod har;
pub mod model;
pub mod redact;
pub mod store;

use crate::config::{Config, TokenSource};
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;

/// Why the inspector could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Store(#[from] store::OpenError),
    #[error("inspector.token: {0}")]
    Token(String),
    #[error("otel: cannot start the exporter: {0}")]
    Otel(String),
}

/// A running inspector: the store, the capture side and the admin token.
pub struct Inspector {
    pub store: Arc<store::Store>,
    pub recorder: Arc<capture::Recorder>,
    pub token: String,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Open the store and resolve the admin token (generating it on first start).
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let ins = &config.inspector;
        let token = if ins.listen.is_some() {
            resolve_token(&ins.token, true).map_err(Error::Token)?
        } else {
            String::new()
        };
        let otel = config
            .otel
            .as_ref()
            .map(crate::telemetry::otel::Exporter::start)
            .transpose()
            .map_err(|e| Error::Otel(e.to_string()))?;
        let (store, writer) = store::open(
            ins.store.as_deref(),
            store::Retention {
                max_flows: ins.max_flows,
                max_age: ins.max_age,
                max_bytes: ins.max_bytes,
            },
            metrics,
            otel,
        )?;
        let recorder = Arc::new(capture::Recorder::new(writer, ins.max_body_bytes));
        Ok(Self {
            store,
            recorder,
            token,
        })
    }

    /// The admin app for `inspector.listen`.
    pub fn admin_app(&self) -> admin::AdminApp {
        admin::AdminApp::new(self.store.clone(), self.token.clone())
    }
}

/// The admin token from its source; with `create`, a generated token's file is written on
/// first use (mode 0600, atomically).
pub fn resolve_token(source: &TokenSource, create: bool) -> Result<String, String> {
    let token = match source {
        TokenSource::Literal(t) => t.clone(),
        TokenSource::Command(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env_remove(crate::tls_keylog::ENV)
                .stderr(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
            if !out.status.success() {
                return Err(format!("`{cmd}` failed ({})", out.status));
            }
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
        TokenSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        TokenSource::Generated(path) => match std::fs::read_to_string(path) {
            Ok(t) => t.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let token = random_token().map_err(|e| format!("cannot generate a token: {e}"))?;
                crate::config::paths::write_atomically(path, token.as_bytes(), 0o600)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                token
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} does not exist yet (it is written when the gateway first starts)",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        },
    };
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    Ok(token)
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
