//! Configuration: locating, parsing and validating `ccproxy.yaml` into the runtime [`Config`].
//!
//! Precedence, highest first: `--config DIR` (location only) > `CCPROXY_HOST` / `CCPROXY_PORT`
//! (those two keys only) > the YAML file > built-in defaults. A missing file means defaults.
//! Every error names the file and the key path (`ccproxy.yaml: providers.anthropic.auth: …`).
//! Regexes are compiled and CA files loaded here, once. The config is data: the hook pipeline and
//! the stateful credential sources are built from it by the server (`proxy::server`).

pub mod file;
pub mod paths;

use crate::creds::{SourceKind, SourceSpec, DEFAULT_COMMAND_CACHE};
use crate::translate::Format;
use file::{FileConfig, HooksConfig, RootConfig, RuleAction, Scheme};
use indexmap::IndexMap;
use pingora::tls::x509::X509;
use regex::Regex;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use paths::{locate, ConfigLocation};

/// Trusted CA certificates for upstream TLS (Pingora's per-peer CA type).
pub type CaList = pingora::protocols::tls::CaType;

/// Providers by name, in file order.
pub type ProviderTable = IndexMap<String, Arc<Provider>>;

/// A configuration error; `Display` is the one line printed at startup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TRACE" => Self::Trace,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "WARN" | "WARNING" => Self::Warn,
            "ERROR" | "CRITICAL" => Self::Error,
            _ => return None,
        })
    }

    pub fn as_filter(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// `gemini_capacity` as configured (used by `code_assist::capacity`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityPolicy {
    pub retry_status_codes: Vec<u16>,
    pub fallback_models: Vec<String>,
    /// Retries of the original model after its first failure.
    pub sticky_attempts: u32,
    /// A delay above this moves on to the next model.
    pub sticky_max_delay: Duration,
    /// A delay above this stops retrying.
    pub terminal_delay: Duration,
    /// All retries end within this, counted from the first failure.
    pub budget: Duration,
}

/// A resolved upstream provider.
pub struct Provider {
    pub name: Arc<str>,
    /// The API format the provider speaks (never `Responses`).
    pub family: Format,
    pub dest: Destination,
    /// Path template (`{model}`, `{action}`); `None` keeps the client's path.
    pub path: Option<String>,
    pub auth: Option<SourceSpec>,
    /// Trust roots: system roots plus any `ca_file`; `None` = BoringSSL's default paths.
    pub trust: Option<Arc<CaList>>,
    /// Connection-pool key: upstream connections are never shared between providers.
    pub pool_key: u64,
    /// Facts learned at run time (the Code Assist project).
    pub learned: Arc<crate::learned::Learned>,
    /// Browser-shaped TLS for this provider's connections (`None`: BoringSSL's defaults).
    pub fingerprint: Option<Arc<crate::fingerprint::connector::ProfileConnector>>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("family", &self.family)
            .field("dest", &self.dest)
            .field("path", &self.path)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Where requests go on the wire: scheme, host, port and the `Host` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    /// Host name or IP, without port or brackets.
    pub host: Arc<str>,
    pub port: u16,
    /// `host[:port]` as it goes in the `Host` header (port only when not the scheme's default).
    pub authority: Arc<str>,
    /// The same, ready to put on a request.
    pub host_header: http::HeaderValue,
}

impl Destination {
    /// `host[:port]` parsed for `scheme` (its default port when none is given).
    pub fn parse(scheme: Scheme, host_port: &str) -> Option<Self> {
        let (host, port) = split_authority(host_port.trim())?;
        if host.is_empty() {
            return None;
        }
        let port = port.unwrap_or(scheme.default_port());
        let authority = if scheme.default_port() == port {
            bracket(&host)
        } else {
            format!("{}:{port}", bracket(&host))
        };
        let host_header = http::HeaderValue::from_str(&authority).ok()?;
        Some(Self {
            scheme,
            host: host.into(),
            port,
            authority: authority.into(),
            host_header,
        })
    }
}

/// A compiled `inspector.transforms[]` rule.
#[derive(Debug)]
pub struct Rule {
    pub index: usize,
    pub match_host: Option<Regex>,
    pub match_path: Option<Regex>,
    pub match_model: Option<Regex>,
    pub action: RuleAction,
    pub dest_provider: Option<String>,
    /// `dest_host`, resolved against `dest_provider`'s scheme (else https).
    pub dest_host: Option<Destination>,
    pub dest_path: Option<String>,
    pub dest_model: Option<String>,
}

/// Upstream and client timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub shutdown_seconds: u64,
    /// Longest client silence before its first request bytes and between body reads.
    pub client_read: Duration,
}

/// The validated runtime configuration.
pub struct Config {
    pub location: ConfigLocation,
    /// Whether the YAML file existed (else defaults).
    pub file_found: bool,
    pub host: String,
    pub port: u16,
    pub metrics: Option<String>,
    pub log_level: LogLevel,
    pub log_file: Option<PathBuf>,
    pub threads: usize,
    pub max_request_body_bytes: u64,
    /// Budget for request bodies buffered at once, over all requests.
    pub max_buffered_body_bytes: u64,
    /// Cap on a provider response (or one SSE event) held for translation.
    pub max_response_buffer_bytes: u64,
    pub timeouts: Timeouts,
    pub providers: ProviderTable,
    pub rules: Vec<Rule>,
    /// Trust roots for upstreams without a provider (system roots + global `ca_file`).
    pub trust: Option<Arc<CaList>>,
    /// The configured hook lists (built into a pipeline by the server).
    pub hooks: HooksConfig,
    /// Flow capture, store and admin API.
    pub inspector: Inspector,
    /// jq filters `ccproxy flows` applies before its `--jq` ones.
    pub default_jq_filters: Vec<String>,
    /// OTLP span export (`None` = off).
    pub otel: Option<Otel>,
    /// Gemini Code Assist capacity retries (`None` = off).
    pub capacity: Option<CapacityPolicy>,
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otel {
    /// `<endpoint>/v1/traces`.
    pub traces_url: String,
    pub service_name: String,
}

/// Where the admin token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Written in the config.
    Literal(String),
    /// A shell command's output (trimmed).
    Command(String),
    /// A file's content (trimmed).
    File(PathBuf),
    /// Generated on first start and kept in this file (mode 0600).
    Generated(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(<redacted>)"),
            Self::Command(c) => f.debug_tuple("Command").field(c).finish(),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Generated(p) => f.debug_tuple("Generated").field(p).finish(),
        }
    }
}

/// The `inspector:` settings, resolved.
#[derive(Debug, Clone)]
pub struct Inspector {
    /// Capture flows at all.
    pub capture: bool,
    /// Admin API / web viewer address (`None` = off).
    pub listen: Option<String>,
    /// SQLite file (`None` = in memory).
    pub store: Option<PathBuf>,
    pub token: TokenSource,
    pub max_body_bytes: usize,
    pub max_flows: u64,
    pub max_age: Duration,
    pub max_bytes: u64,
    /// Upstream address overrides by host name (lower case).
    pub resolve: std::collections::HashMap<String, std::net::SocketAddr>,
    /// The explicit proxy listener (`None` = off).
    pub proxy_listen: Option<String>,
    /// Hosts whose tunnels are relayed, not decrypted.
    pub ignore_hosts: Vec<Regex>,
    /// Where intercepted TLS secrets go (`None` = nowhere).
    pub keylog: Option<PathBuf>,
    /// The WireGuard listener's UDP address (`None` = off).
    pub wireguard_listen: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("location", &self.location)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Load from the resolved location, applying `CCPROXY_HOST` / `CCPROXY_PORT`.
    pub fn load(location: ConfigLocation) -> Result<Self, Error> {
        let (text, found) = match std::fs::read_to_string(&location.file) {
            Ok(t) => (t, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(source) => {
                return Err(Error::Read {
                    file: location.file.display().to_string(),
                    source,
                })
            }
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::from_yaml_with_env(&text, location, found, env)
    }

    /// Parse and validate YAML text as if read from `location`.
    pub fn from_yaml_with_env(
        text: &str,
        location: ConfigLocation,
        file_found: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let fname = display_name(&location.file);
        let mut raw = parse(text, &fname)?;
        if let Some(h) = env("CCPROXY_HOST") {
            raw.host = h;
        }
        if let Some(p) = env("CCPROXY_PORT") {
            raw.port = p.parse().map_err(|_| Error::Env {
                var: "CCPROXY_PORT".into(),
                message: format!("\"{p}\" is not a port number"),
            })?;
        }
        resolve(raw, location, file_found, &fname)
    }

    /// `host:port` of the reverse listener.
    pub fn listen_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A config error at `path`, for checks made after loading (the hook pipeline).
    pub fn invalid(&self, path: impl Into<String>, message: impl Into<String>) -> Error {
        invalid(&display_name(&self.location.file), path, message)
    }

    /// Base URL clients use (`http://host:port`, no `/v1`).
    pub fn base_url(&self) -> String {
        let host = match self.host.as_str() {
            "0.0.0.0" | "" => "127.0.0.1",
            "::" | "[::]" => "[::1]",
            h => h,
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("http://[{host}]:{}", self.port)
        } else {
            format!("http://{host}:{}", self.port)
        }
    }
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn parse(text: &str, fname: &str) -> Result<FileConfig, Error> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    // serde_yaml's message already starts with the key path ("ccproxy.port: invalid type…")
    // and ends with the line/column; only the root key is dropped from the path.
    let root: RootConfig = serde_yaml::from_str(text).map_err(|e| {
        let message = e.to_string().replace('`', "\"");
        let message = message.strip_prefix("ccproxy.").unwrap_or(&message);
        Error::Syntax {
            file: fname.to_owned(),
            message: one_line(message),
        }
    })?;
    Ok(root.ccproxy.unwrap_or_default())
}

fn invalid(fname: &str, path: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Invalid {
        file: fname.to_owned(),
        path: one_line(&path.into()),
        message: one_line(&message.into()),
    }
}

/// `s` with control characters escaped (`\n`), so an error stays one line even when it
/// quotes a key or value from the file that contains a line break (found by fuzzing).
fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

fn compile(fname: &str, path: String, pattern: &Option<String>) -> Result<Option<Regex>, Error> {
    pattern
        .as_deref()
        .map(|p| {
            Regex::new(p).map_err(|e| {
                // regex errors span several lines (pattern, caret, message): keep one line.
                let one_line = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                invalid(fname, path, format!("invalid regex: {one_line}"))
            })
        })
        .transpose()
}

/// Split `host[:port]` (IPv6 in brackets).
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((h.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_owned(), Some(p.parse().ok()?))),
        Some(_) => Some((authority.to_owned(), None)),
        None => Some((authority.to_owned(), None)),
    }
}

fn system_roots() -> Vec<X509> {
    let candidates = [
        std::env::var("SSL_CERT_FILE").ok(),
        Some("/etc/ssl/certs/ca-certificates.crt".to_owned()),
        Some("/etc/pki/tls/certs/ca-bundle.crt".to_owned()),
        Some("/etc/ssl/cert.pem".to_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|p| {
            let pem = std::fs::read(p).ok()?;
            X509::stack_from_pem(&pem).ok().filter(|s| !s.is_empty())
        })
        .unwrap_or_default()
}

/// `providers.<name>.auth` with `type: anthropic_oauth | google_oauth`: the type's defaults
/// filled in (file, endpoint, client id, dot-paths) and each key checked.
fn oauth_spec(
    fname: &str,
    at: &dyn Fn(&str) -> String,
    dir: &Path,
    o: file::OAuthConfig,
) -> Result<crate::creds::oauth::OAuthSpec, Error> {
    use crate::creds::oauth::{Flavor, JsonPath, OAuthSpec};
    let flavor = if o.kind == "google_oauth" {
        Flavor::Google
    } else {
        Flavor::Anthropic
    };
    let file = paths::relative_to(dir, o.file_path.as_deref().unwrap_or(flavor.default_file()));
    let endpoint = o
        .endpoint
        .unwrap_or_else(|| flavor.default_endpoint().to_owned());
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        || endpoint.parse::<http::Uri>().is_err()
    {
        return Err(invalid(
            fname,
            at("auth.endpoint"),
            format!("\"{endpoint}\" is not an http(s) URL"),
        ));
    }
    let client_id = match o
        .client_id
        .or(flavor.default_client_id().map(str::to_owned))
    {
        Some(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            return Err(invalid(
                fname,
                at("auth.client_id"),
                format!("{} needs a client_id", flavor.type_name()),
            ))
        }
    };
    let defaults = flavor.default_paths(&file);
    let path = |key: &str, given: Option<String>, default: &str| {
        let text = given.unwrap_or_else(|| default.to_owned());
        JsonPath::parse(text.trim()).ok_or_else(|| {
            invalid(
                fname,
                at(&format!("auth.{key}")),
                format!("\"{text}\" is not a dot-path (like claudeAiOauth.accessToken)"),
            )
        })
    };
    Ok(OAuthSpec {
        flavor,
        endpoint,
        client_id,
        client_secret: o
            .client_secret
            .filter(|s| !s.is_empty())
            .map(crate::creds::Secret::new),
        access_path: path("access_path", o.access_path, defaults[0])?,
        refresh_path: path("refresh_path", o.refresh_path, defaults[1])?,
        expiry_path: path("expiry_path", o.expiry_path, defaults[2])?,
        file,
    })
}

fn load_ca(fname: &str, path: &str, base: &Path, file: &str) -> Result<Vec<X509>, Error> {
    let p = paths::relative_to(base, file);
    let pem = std::fs::read(&p)
        .map_err(|e| invalid(fname, path, format!("cannot read {}: {e}", p.display())))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        invalid(
            fname,
            path,
            format!("{} is not PEM certificates: {e}", p.display()),
        )
    })?;
    if certs.is_empty() {
        return Err(invalid(
            fname,
            path,
            format!("{} holds no certificates", p.display()),
        ));
    }
    Ok(certs)
}

fn resolve(
    raw: FileConfig,
    location: ConfigLocation,
    file_found: bool,
    fname: &str,
) -> Result<Config, Error> {
    let dir = location.dir.clone();
    let log_level = LogLevel::parse(&raw.log_level).ok_or_else(|| {
        invalid(
            fname,
            "log_level",
            format!(
                "unknown level \"{}\" (use DEBUG, INFO, WARNING, ERROR or CRITICAL)",
                raw.log_level
            ),
        )
    })?;
    if raw.host.trim().is_empty() {
        return Err(invalid(fname, "host", "must not be empty"));
    }
    let metrics = match raw.metrics.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(m) => {
            match split_authority(m) {
                Some((_, Some(_))) => {}
                _ => {
                    return Err(invalid(
                        fname,
                        "metrics",
                        format!("\"{m}\" is not host:port"),
                    ))
                }
            }
            Some(m.to_owned())
        }
    };
    if raw.max_request_body_bytes == 0 {
        return Err(invalid(fname, "max_request_body_bytes", "must be > 0"));
    }
    if raw.max_buffered_body_bytes < raw.max_request_body_bytes {
        return Err(invalid(
            fname,
            "max_buffered_body_bytes",
            format!(
                "must be at least max_request_body_bytes ({}), or no body of the largest allowed size could ever be buffered",
                raw.max_request_body_bytes
            ),
        ));
    }
    if raw.max_response_buffer_bytes == 0 {
        return Err(invalid(fname, "max_response_buffer_bytes", "must be > 0"));
    }
    let secs = |path: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(invalid(fname, path, "must be a positive number of seconds"))
        }
    };
    let timeouts = Timeouts {
        connect: secs("timeouts.connect_seconds", raw.timeouts.connect_seconds)?,
        read: secs("timeouts.read_seconds", raw.timeouts.read_seconds)?,
        shutdown_seconds: raw.timeouts.shutdown_seconds,
        client_read: secs(
            "timeouts.client_read_seconds",
            raw.timeouts.client_read_seconds,
        )?,
    };

    let global_ca = raw
        .ca_file
        .as_deref()
        .map(|f| load_ca(fname, "ca_file", &dir, f))
        .transpose()?;
    // Trust for upstream TLS, loaded once: the system roots (SSL_CERT_FILE or the distro
    // bundle), plus the global ca_file, plus a provider's own ca_file. Loading the roots here
    // rather than relying on BoringSSL's compiled-in default paths makes verification the same
    // on every distro. No bundle found and no ca_file: BoringSSL's defaults apply.
    let system = system_roots();
    let with_extra = |base: &[X509], extra: &[X509]| -> Option<Arc<CaList>> {
        let list: Vec<X509> = base.iter().chain(extra).cloned().collect();
        (!list.is_empty()).then(|| Arc::new(list.into_boxed_slice()))
    };
    let global_trust = with_extra(&system, global_ca.as_deref().unwrap_or(&[]));
    let mut providers = ProviderTable::new();
    for (name, p) in raw.providers {
        let at = |k: &str| format!("providers.{name}.{k}");
        if p.host.trim().is_empty() {
            return Err(invalid(fname, at("host"), "must not be empty"));
        }
        let dest = Destination::parse(p.scheme, &p.host).ok_or_else(|| {
            invalid(
                fname,
                at("host"),
                format!("\"{}\" is not host[:port]", p.host),
            )
        })?;
        if !p.provider.is_provider_format() {
            return Err(invalid(
                fname,
                at("provider"),
                "\"responses\" is a client format (OpenAI's /v1/responses, served by openai providers); a provider speaks anthropic, openai or gemini",
            ));
        }
        if let Some(path) = &p.path {
            if !path.starts_with('/') {
                return Err(invalid(fname, at("path"), "must start with /"));
            }
        }
        let auth = match p.auth {
            None => None,
            Some(a) => {
                let header = a
                    .header
                    .as_deref()
                    .map(|h| {
                        http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes())
                            .map_err(|_| {
                                invalid(
                                    fname,
                                    at("auth.header"),
                                    format!("\"{h}\" is not a header name"),
                                )
                            })
                    })
                    .transpose()?;
                let kind = match (a.oauth, a.command, a.file) {
                    (Some(o), _, _) => {
                        SourceKind::OAuth(Box::new(oauth_spec(fname, &at, &dir, o)?))
                    }
                    (None, Some(c), None) => SourceKind::Command(c),
                    (None, None, Some(f)) => SourceKind::File(paths::relative_to(&dir, &f)),
                    _ => return Err(invalid(fname, at("auth"), "needs `command` or `file`")),
                };
                Some(SourceSpec {
                    kind,
                    header,
                    ttl: a
                        .cache_seconds
                        .map_or(DEFAULT_COMMAND_CACHE, Duration::from_secs),
                })
            }
        };
        let own_ca = p
            .ca_file
            .as_deref()
            .map(|f| load_ca(fname, &at("ca_file"), &dir, f))
            .transpose()?;
        let trust = match own_ca {
            Some(own) => {
                let base: Vec<X509> = system
                    .iter()
                    .chain(global_ca.iter().flatten())
                    .cloned()
                    .collect();
                with_extra(&base, &own)
            }
            None => global_trust.clone(),
        };
        let pool_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            h.finish()
        };
        let fingerprint = match p
            .fingerprint_profile
            .as_deref()
            .map(|n| (n, at("fingerprint_profile")))
            .or_else(|| {
                raw.fingerprint_profile
                    .as_deref()
                    .map(|n| (n, "fingerprint_profile".to_owned()))
            }) {
            None => None,
            Some((profile_name, key)) if dest.scheme == file::Scheme::Https => {
                let profile = crate::fingerprint::profile::Profile::by_name(profile_name)
                    .map_err(|e| invalid(fname, key.clone(), e))?;
                let connector = crate::fingerprint::connector::ProfileConnector::new(
                    profile,
                    &dest.host,
                    trust.as_deref().map(|t| &t[..]),
                )
                .map_err(|e| invalid(fname, key, e))?;
                Some(Arc::new(connector))
            }
            // Plain HTTP has no ClientHello to shape.
            Some(_) => None,
        };
        providers.insert(
            name.clone(),
            Arc::new(Provider {
                pool_key,
                fingerprint,
                learned: Arc::default(),
                name: name.into(),
                family: p.provider,
                dest,
                path: p.path,
                auth,
                trust,
            }),
        );
    }

    let trust = global_trust;

    let inspector = inspector(&raw.inspector, &dir, fname)?;
    let otel = if raw.otel.enabled {
        let endpoint = raw.otel.endpoint.trim().trim_end_matches('/');
        if !endpoint.starts_with("http://") {
            return Err(invalid(
                fname,
                "otel.endpoint",
                format!("\"{endpoint}\" is not an http:// URL (OTLP/HTTP to a local collector, e.g. http://localhost:4318; https is not supported)"),
            ));
        }
        if raw.otel.service_name.trim().is_empty() {
            return Err(invalid(fname, "otel.service_name", "must not be empty"));
        }
        Some(Otel {
            traces_url: format!("{endpoint}/v1/traces"),
            service_name: raw.otel.service_name.trim().to_owned(),
        })
    } else {
        None
    };
    let capacity = capacity(&raw.gemini_capacity, fname)?;
    let mut rules = Vec::with_capacity(raw.inspector.transforms.len());
    for (i, r) in raw.inspector.transforms.into_iter().enumerate() {
        let at = |k: &str| format!("inspector.transforms[{i}].{k}");
        if let Some(dp) = &r.dest_provider {
            if !providers.contains_key(dp) {
                return Err(invalid(
                    fname,
                    at("dest_provider"),
                    format!("no provider named \"{dp}\" in providers"),
                ));
            }
        }
        if r.action == RuleAction::Redirect && r.dest_provider.is_none() && r.dest_host.is_none() {
            return Err(invalid(
                fname,
                at("action"),
                "redirect needs dest_provider or dest_host",
            ));
        }
        let dest_host = match &r.dest_host {
            Some(h) => {
                let scheme = r
                    .dest_provider
                    .as_ref()
                    .and_then(|p| providers.get(p))
                    .map_or(Scheme::Https, |p| p.dest.scheme);
                Some(Destination::parse(scheme, h).ok_or_else(|| {
                    invalid(
                        fname,
                        at("dest_host"),
                        format!("\"{h}\" is not host[:port]"),
                    )
                })?)
            }
            None => None,
        };
        rules.push(Rule {
            index: i,
            match_host: compile(fname, at("match_host"), &r.match_host)?,
            match_path: compile(fname, at("match_path"), &r.match_path)?,
            match_model: compile(fname, at("match_model"), &r.match_model)?,
            action: r.action,
            dest_provider: r.dest_provider,
            dest_host,
            dest_path: r.dest_path,
            dest_model: r.dest_model,
        });
    }

    let hooks = raw.hooks.unwrap_or_else(HooksConfig::builtin_default);

    let threads = raw
        .threads
        .filter(|t| *t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let log_file = raw
        .log_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| paths::relative_to(&dir, f));

    Ok(Config {
        location,
        file_found,
        host: raw.host,
        port: raw.port,
        metrics,
        log_level,
        log_file,
        threads,
        max_request_body_bytes: raw.max_request_body_bytes,
        max_buffered_body_bytes: raw.max_buffered_body_bytes,
        max_response_buffer_bytes: raw.max_response_buffer_bytes,
        timeouts,
        providers,
        rules,
        trust,
        hooks,
        inspector,
        default_jq_filters: raw.flows.default_jq_filters,
        otel,
        capacity,
    })
}

/// `gemini_capacity:` checked; `None` when disabled or without fallback models.
fn capacity(
    raw: &file::GeminiCapacityConfig,
    fname: &str,
) -> Result<Option<CapacityPolicy>, Error> {
    let at = |k: &str| format!("gemini_capacity.{k}");
    if raw.sticky_retry_attempts > 10 {
        return Err(invalid(fname, at("sticky_retry_attempts"), "must be 0..10"));
    }
    let seconds = |key: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(invalid(fname, at(key), "must be a number of seconds > 0"))
        }
    };
    let policy = CapacityPolicy {
        retry_status_codes: raw.retry_status_codes.clone(),
        fallback_models: raw
            .fallback_models
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect(),
        sticky_attempts: raw.sticky_retry_attempts,
        sticky_max_delay: seconds(
            "sticky_retry_max_delay_seconds",
            raw.sticky_retry_max_delay_seconds,
        )?,
        terminal_delay: seconds(
            "terminal_delay_threshold_seconds",
            raw.terminal_delay_threshold_seconds,
        )?,
        budget: seconds("total_retry_budget_seconds", raw.total_retry_budget_seconds)?,
    };
    Ok(raw.enabled.then_some(policy))
}

/// Resolve the `inspector:` settings (everything but the transform rules).
fn inspector(raw: &file::InspectorConfig, dir: &Path, fname: &str) -> Result<Inspector, Error> {
    let listen = match raw.listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => match split_authority(l) {
            Some((_, Some(_))) => Some(l.to_owned()),
            _ => {
                return Err(invalid(
                    fname,
                    "inspector.listen",
                    format!("\"{l}\" is not host:port"),
                ))
            }
        },
    };
    let store = raw
        .store
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| paths::relative_to(dir, s));
    let token = match &raw.token {
        None => TokenSource::Generated(dir.join("inspector.token")),
        Some(file::TokenConfig::Literal(t)) if t.trim().is_empty() => {
            return Err(invalid(fname, "inspector.token", "must not be empty"))
        }
        Some(file::TokenConfig::Literal(t)) => TokenSource::Literal(t.trim().to_owned()),
        Some(file::TokenConfig::Source(src)) => match (&src.command, &src.file) {
            (Some(c), None) => TokenSource::Command(c.clone()),
            (None, Some(f)) => TokenSource::File(paths::relative_to(dir, f)),
            _ => {
                return Err(invalid(
                    fname,
                    "inspector.token",
                    "give exactly one of `command` or `file` (or the token as a string)",
                ))
            }
        },
    };
    if raw.max_body_bytes == 0 {
        return Err(invalid(fname, "inspector.max_body_bytes", "must be > 0"));
    }
    let r = &raw.retention;
    if r.max_flows == 0 {
        return Err(invalid(
            fname,
            "inspector.retention.max_flows",
            "must be > 0",
        ));
    }
    if !(r.max_age_hours.is_finite() && r.max_age_hours > 0.0) {
        return Err(invalid(
            fname,
            "inspector.retention.max_age_hours",
            "must be a positive number of hours",
        ));
    }
    if r.max_bytes == 0 {
        return Err(invalid(
            fname,
            "inspector.retention.max_bytes",
            "must be > 0",
        ));
    }
    let mut resolve = std::collections::HashMap::new();
    for (host, addr) in &raw.resolve {
        let key = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let parsed = addr.trim().parse::<std::net::SocketAddr>().map_err(|_| {
            invalid(
                fname,
                format!("inspector.resolve.{host}"),
                format!("\"{addr}\" is not an ip:port address (like 127.0.0.1:8443)"),
            )
        })?;
        if key.is_empty() {
            return Err(invalid(fname, "inspector.resolve", "a host name is empty"));
        }
        resolve.insert(key, parsed);
    }
    let proxy_listen = raw
        .proxy_listen
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned);
    let wireguard_listen = match raw.wireguard_listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => match l.parse::<std::net::SocketAddr>() {
            Ok(_) => Some(l.to_owned()),
            Err(_) => {
                return Err(invalid(
                    fname,
                    "inspector.wireguard_listen",
                    format!("\"{l}\" is not an ip:port address (like 127.0.0.1:51820)"),
                ))
            }
        },
    };
    let ignore_hosts = raw
        .ignore_hosts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Regex::new(r).map_err(|e| {
                invalid(
                    fname,
                    format!("inspector.ignore_hosts[{i}]"),
                    format!("invalid regex: {e}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Inspector {
        keylog: raw.keylog.then(|| dir.join("tls.keylog")),
        wireguard_listen,
        ignore_hosts,
        proxy_listen,
        resolve,
        capture: raw.capture,
        listen,
        store,
        token,
        max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
        max_flows: r.max_flows,
        max_age: Duration::from_secs_f64(r.max_age_hours * 3600.0),
        max_bytes: r.max_bytes,
    })
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, Error> {
        let loc = ConfigLocation {
            dir: PathBuf::from("/tmp"),
            file: PathBuf::from("/tmp/ccproxy.yaml"),
        };
        Config::from_yaml_with_env(yaml, loc, true, |_| None)
    }

    fn err(yaml: &str) -> String {
        load(yaml).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 4000);
        assert_eq!(c.metrics.as_deref(), Some("127.0.0.1:4090"));
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/ccproxy.log")));
        assert!(c.providers.is_empty());
    }

    #[test]
    fn errors_quoting_a_line_break_stay_one_line() {
        // Found by the config fuzz target: a flow-mapping key that spans lines.
        let e = err("ccproxy:\n  providers:\n    a:\n      host: h:1\n      provider: anthropic\n      auth: {command: \"echo x\", x-goog-a\n\n   ca   \n");
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("x-goog-a\\nca"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_and_path() {
        let e = err("ccproxy:\n  providers:\n    anthropic:\n      host: a\n      provider: anthropic\n      auth:\n        comand: x\n");
        assert!(
            e.starts_with("ccproxy.yaml: providers.anthropic.auth: unknown field \"comand\""),
            "{e}"
        );
    }

    #[test]
    fn bad_type_names_path() {
        let e = err("ccproxy:\n  port: lots\n");
        assert!(e.starts_with("ccproxy.yaml: port: invalid type"), "{e}");
    }

    #[test]
    fn unknown_root_key_is_rejected() {
        let e = err("ccproxi:\n  port: 1\n");
        assert!(e.contains("unknown field \"ccproxi\""), "{e}");
    }

    #[test]
    fn bad_regex_names_rule() {
        let e = err("ccproxy:\n  inspector:\n    transforms:\n      - match_path: \"(\"\n        dest_host: example.com\n");
        assert!(
            e.starts_with("ccproxy.yaml: inspector.transforms[0].match_path: invalid regex"),
            "{e}"
        );
    }

    #[test]
    fn bare_hook_list_is_inbound() {
        let c = load("ccproxy:\n  hooks: [forward_oauth]\n").unwrap();
        assert_eq!(c.hooks.inbound.len(), 1);
        assert!(c.hooks.outbound.is_empty());
    }

    #[test]
    fn auth_string_is_a_command_and_host_port_is_split() {
        let c = load("ccproxy:\n  providers:\n    local:\n      host: 127.0.0.1:8080\n      scheme: http\n      provider: openai\n      auth: echo hi\n").unwrap();
        let p = &c.providers["local"];
        assert_eq!((&*p.dest.host, p.dest.port), ("127.0.0.1", 8080));
        assert_eq!(&*p.dest.authority, "127.0.0.1:8080");
        assert_eq!(
            p.auth.as_ref().map(|a| a.kind.clone()),
            Some(SourceKind::Command("echo hi".into()))
        );
    }

    #[test]
    fn unknown_provider_family_is_rejected() {
        let e = err("ccproxy:\n  providers:\n    x:\n      host: a\n      provider: cohere\n");
        assert!(
            e.starts_with("ccproxy.yaml: providers.x.provider: unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn rule_with_unknown_dest_provider_is_rejected() {
        let e = err("ccproxy:\n  inspector:\n    transforms:\n      - dest_provider: ghost\n");
        assert!(
            e.starts_with("ccproxy.yaml: inspector.transforms[0].dest_provider"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_host_and_port() {
        let loc = ConfigLocation {
            dir: PathBuf::from("/tmp"),
            file: PathBuf::from("/tmp/ccproxy.yaml"),
        };
        let c = Config::from_yaml_with_env("ccproxy:\n  port: 1\n", loc.clone(), true, |k| {
            (k == "CCPROXY_PORT").then(|| "4555".to_owned())
        })
        .unwrap();
        assert_eq!(c.port, 4555);
        let e = Config::from_yaml_with_env("", loc, true, |k| {
            (k == "CCPROXY_PORT").then(|| "x".to_owned())
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("CCPROXY_PORT"), "{e}");
    }

    #[test]
    fn split_authority_forms() {
        assert_eq!(split_authority("a.b"), Some(("a.b".into(), None)));
        assert_eq!(split_authority("a.b:81"), Some(("a.b".into(), Some(81))));
        assert_eq!(split_authority("[::1]:81"), Some(("::1".into(), Some(81))));
        assert_eq!(split_authority("a:b"), None);
        assert_eq!(split_authority("a/b"), None);
    }

    #[test]
    fn responses_is_not_a_provider_format() {
        let e = err("ccproxy:\n  providers:\n    x:\n      host: a\n      provider: responses\n");
        assert!(
            e.starts_with("ccproxy.yaml: providers.x.provider: \"responses\" is a client format"),
            "{e}"
        );
    }

    #[test]
    fn body_budget_below_the_body_limit_is_rejected() {
        let e = err("ccproxy:\n  max_request_body_bytes: 1000\n  max_buffered_body_bytes: 999\n");
        assert!(e.starts_with("ccproxy.yaml: max_buffered_body_bytes: must be at least max_request_body_bytes (1000)"), "{e}");
    }
}
