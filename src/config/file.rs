//! The on-disk schema of `ccproxy.yaml`: plain serde structs with defaults.
//!
//! Every struct denies unknown keys so a typo fails loudly at startup. Values that need
//! compiling (regexes, hook params) stay raw here and are validated in `config::resolve`, which
//! reports the key path of anything wrong. This module must not read the environment or disk.

use crate::translate::Format;
use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// Root document: everything lives under the `ccproxy:` key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    #[serde(default)]
    pub ccproxy: Option<FileConfig>,
}

/// The `ccproxy:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Address the reverse listener binds to (and that `status`/`run` use).
    pub host: String,
    /// Port of the reverse listener.
    pub port: u16,
    /// `host:port` of the Prometheus scrape listener; `null` disables it.
    pub metrics: Option<String>,
    /// Log level: `TRACE`, `DEBUG`, `INFO`, `WARNING`/`WARN`, `ERROR`, `CRITICAL`.
    pub log_level: String,
    /// Log file, relative to the config directory; `null` disables file logging.
    pub log_file: Option<String>,
    /// Worker threads of the proxy service; `null` = one per CPU.
    pub threads: Option<usize>,
    /// Largest request body the gateway buffers; larger bodies get `413`.
    pub max_request_body_bytes: u64,
    /// Most request-body bytes buffered at once over all requests; past it requests get `503`.
    pub max_buffered_body_bytes: u64,
    /// Largest provider response (or single SSE event) buffered for translation.
    pub max_response_buffer_bytes: u64,
    /// Extra CA certificates (PEM) trusted for every upstream, on top of the system roots.
    pub ca_file: Option<String>,
    /// Browser TLS profile for every provider without its own (`null` = BoringSSL's defaults).
    pub fingerprint_profile: Option<String>,
    /// Upstream timeouts.
    pub timeouts: TimeoutsConfig,
    /// Named upstream providers, in file order.
    pub providers: IndexMap<String, ProviderConfig>,
    /// Inspector: flow capture, store, admin API, transform rules.
    pub inspector: InspectorConfig,
    /// The `ccproxy flows` command's defaults.
    pub flows: FlowsConfig,
    /// OpenTelemetry export of one span per flow.
    pub otel: OtelConfig,
    /// Gemini Code Assist capacity retries and model fallback.
    pub gemini_capacity: GeminiCapacityConfig,
    /// Hook pipeline; absent = the built-in default pipeline.
    pub hooks: Option<HooksConfig>,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 4000,
            metrics: Some("127.0.0.1:4090".to_owned()),
            log_level: "INFO".to_owned(),
            log_file: Some("ccproxy.log".to_owned()),
            threads: None,
            max_request_body_bytes: 32 * 1024 * 1024,
            max_buffered_body_bytes: 512 * 1024 * 1024,
            max_response_buffer_bytes: 64 * 1024 * 1024,
            ca_file: None,
            fingerprint_profile: None,
            timeouts: TimeoutsConfig::default(),
            providers: IndexMap::new(),
            inspector: InspectorConfig::default(),
            flows: FlowsConfig::default(),
            otel: OtelConfig::default(),
            gemini_capacity: GeminiCapacityConfig::default(),
            hooks: None,
        }
    }
}

/// Upstream timeouts in seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP (+TLS) connect timeout.
    pub connect_seconds: f64,
    /// Longest silence while reading the upstream response (LLMs think; keep it generous).
    pub read_seconds: f64,
    /// How long `SIGTERM`/`SIGINT` waits for in-flight requests before stopping.
    pub shutdown_seconds: u64,
    /// Longest silence from a client: before its first request bytes, and while it sends a body.
    pub client_read_seconds: f64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_seconds: 10.0,
            read_seconds: 600.0,
            shutdown_seconds: 10,
            client_read_seconds: 60.0,
        }
    }
}

/// One upstream provider (`providers.<name>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Where the credential comes from; absent = requests are forwarded without one.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Upstream host, optionally `host:port`.
    pub host: String,
    /// `https` (default) or `http` (local models, tests).
    #[serde(default)]
    pub scheme: Scheme,
    /// Path template with `{model}` and `{action}`; absent = keep the client's path.
    #[serde(default)]
    pub path: Option<String>,
    /// API format spoken by the upstream: `anthropic`, `openai` or `gemini`.
    pub provider: Format,
    /// Extra CA certificates trusted for this provider.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Browser TLS profile of this provider's upstream connections (`chrome156`, or a
    /// Chrome/Edge version name); absent = the global `fingerprint_profile`.
    #[serde(default)]
    pub fingerprint_profile: Option<String>,
}

/// URL scheme of an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }
}

/// `providers.<name>.auth`: a bare string is a shell command; a map names `command` or `file`,
/// or has `type: anthropic_oauth | google_oauth` with the OAuth keys.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Shell command (`sh -c`) whose trimmed stdout is the credential.
    pub command: Option<String>,
    /// File whose trimmed content is the credential (`~` expanded).
    pub file: Option<String>,
    /// Header to put the raw credential in; absent = `Authorization: Bearer <credential>`.
    pub header: Option<String>,
    /// How long a resolved credential is reused before the source is read again.
    pub cache_seconds: Option<u64>,
    /// `type: anthropic_oauth | google_oauth`.
    pub oauth: Option<OAuthConfig>,
}

/// The OAuth keys of an auth source (absent = the type's default). `Debug` hides the client
/// secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OAuthConfig {
    /// `anthropic_oauth` or `google_oauth`.
    pub kind: String,
    pub file_path: Option<String>,
    pub endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub access_path: Option<String>,
    pub refresh_path: Option<String>,
    pub expiry_path: Option<String>,
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("kind", &self.kind)
            .field("file_path", &self.file_path)
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("access_path", &self.access_path)
            .field("refresh_path", &self.refresh_path)
            .field("expiry_path", &self.expiry_path)
            .finish()
    }
}

/// The auth `type` names.
pub const AUTH_TYPES: [&str; 4] = ["command", "file", "anthropic_oauth", "google_oauth"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthMap {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    cache_seconds: Option<u64>,
    #[serde(default)]
    file_path: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    access_path: Option<String>,
    #[serde(default)]
    refresh_path: Option<String>,
    #[serde(default)]
    expiry_path: Option<String>,
}

impl AuthMap {
    fn into_config(self) -> Result<AuthConfig, String> {
        let oauth_keys = [
            ("file_path", self.file_path.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret", self.client_secret.is_some()),
            ("access_path", self.access_path.is_some()),
            ("refresh_path", self.refresh_path.is_some()),
            ("expiry_path", self.expiry_path.is_some()),
        ];
        let kind = self.kind.as_deref().map(str::trim);
        match kind {
            Some(k @ ("anthropic_oauth" | "google_oauth")) => {
                for (key, set) in [
                    ("command", self.command.is_some()),
                    ("file", self.file.is_some()),
                    ("cache_seconds", self.cache_seconds.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "`{key}` does not apply to type {k} (use `file_path`)"
                        ));
                    }
                }
                let kind = k.to_owned();
                Ok(AuthConfig {
                    header: self.header,
                    oauth: Some(OAuthConfig {
                        kind,
                        file_path: self.file_path,
                        endpoint: self.endpoint,
                        client_id: self.client_id,
                        client_secret: self.client_secret,
                        access_path: self.access_path,
                        refresh_path: self.refresh_path,
                        expiry_path: self.expiry_path,
                    }),
                    ..AuthConfig::default()
                })
            }
            None | Some("command" | "file") => {
                if let Some((key, _)) = oauth_keys.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "`{key}` needs `type: anthropic_oauth` or `type: google_oauth`"
                    ));
                }
                match (kind, &self.command, &self.file) {
                    (_, Some(_), Some(_)) => {
                        return Err("set either `command` or `file`, not both".to_owned())
                    }
                    (Some("file"), Some(_), None) => {
                        return Err("type file needs `file`, not `command`".to_owned())
                    }
                    (Some("command"), None, Some(_)) => {
                        return Err("type command needs `command`, not `file`".to_owned())
                    }
                    (_, None, None) => {
                        return Err(
                            "needs `command` or `file` (or `type: anthropic_oauth | google_oauth`)"
                                .to_owned(),
                        )
                    }
                    _ => {}
                }
                Ok(AuthConfig {
                    command: self.command,
                    file: self.file,
                    header: self.header,
                    cache_seconds: self.cache_seconds,
                    oauth: None,
                })
            }
            Some(other) => Err(format!(
                "unknown auth type \"{other}\" (valid: {})",
                AUTH_TYPES.join(", ")
            )),
        }
    }
}

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AuthVisitor;
        impl<'de> Visitor<'de> for AuthVisitor {
            type Value = AuthConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shell command string or a map with `command`, `file` or `type`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AuthConfig, E> {
                Ok(AuthConfig {
                    command: Some(v.to_owned()),
                    ..AuthConfig::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AuthConfig, A::Error> {
                AuthMap::deserialize(de::value::MapAccessDeserializer::new(map))?
                    .into_config()
                    .map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(AuthVisitor)
    }
}

/// `inspector:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectorConfig {
    /// Record every flow (`false`: nothing is captured and capture costs nothing).
    pub capture: bool,
    /// `host:port` of the admin API and web viewer; `null` disables it.
    pub listen: Option<String>,
    /// SQLite file for flows, relative to the config directory; `null` keeps flows in memory.
    pub store: Option<String>,
    /// Admin token: a literal string, `{command: …}` or `{file: …}`; `null` = generated on
    /// first start and kept in `<config dir>/inspector.token`.
    pub token: Option<TokenConfig>,
    /// Bytes kept per captured body (each of the four bodies of a flow); the rest is counted
    /// and the body marked truncated.
    pub max_body_bytes: u64,
    /// How many flows and how much the store keeps.
    pub retention: RetentionConfig,
    /// Routing rules tried before sentinel keys, first match wins.
    pub transforms: Vec<TransformRuleConfig>,
    /// `host: "ip:port"`: where upstream connections to `host` go instead of its DNS answer.
    pub resolve: IndexMap<String, String>,
    /// `host:port` of the explicit proxy listener (`CONNECT`, TLS interception); `null` = off.
    pub proxy_listen: Option<String>,
    /// Regexes of hosts whose `CONNECT` tunnels are relayed as they are, never decrypted.
    pub ignore_hosts: Vec<String>,
    /// Write every TLS session's secrets (intercepted clients, upstream connections) to
    /// `<config dir>/tls.keylog`.
    pub keylog: bool,
    /// UDP `host:port` of the WireGuard listener (`ccproxy run --inspect`, external devices);
    /// port 0 = any free port (recorded in `<config dir>/wireguard.json`); `null` = off.
    pub wireguard_listen: Option<String>,
}

impl Default for InspectorConfig {
    fn default() -> Self {
        Self {
            capture: true,
            listen: Some("127.0.0.1:8083".to_owned()),
            store: Some("flows.db".to_owned()),
            token: None,
            max_body_bytes: 4 * 1024 * 1024,
            retention: RetentionConfig::default(),
            transforms: Vec::new(),
            resolve: IndexMap::new(),
            proxy_listen: Some("127.0.0.1:8084".to_owned()),
            ignore_hosts: Vec::new(),
            keylog: false,
            wireguard_listen: Some("127.0.0.1:0".to_owned()),
        }
    }
}

/// `inspector.token`: the admin API's bearer token.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TokenConfig {
    /// The token itself.
    Literal(String),
    /// Read from a command's output or a file (trimmed).
    Source(TokenSourceConfig),
}

/// `inspector.token: {command: …}` or `{file: …}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceConfig {
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
}

/// `inspector.retention`: the oldest flows go first when any limit is passed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub max_flows: u64,
    /// Age limit in hours.
    pub max_age_hours: f64,
    /// Total stored bytes (bodies and metadata).
    pub max_bytes: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_flows: 10_000,
            max_age_hours: 24.0 * 7.0,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// `gemini_capacity:` section (spec §8.6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeminiCapacityConfig {
    pub enabled: bool,
    pub retry_status_codes: Vec<u16>,
    pub fallback_models: Vec<String>,
    pub sticky_retry_attempts: u32,
    pub sticky_retry_max_delay_seconds: f64,
    pub terminal_delay_threshold_seconds: f64,
    pub total_retry_budget_seconds: f64,
}

impl Default for GeminiCapacityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            retry_status_codes: vec![429, 503, 500],
            fallback_models: Vec::new(),
            sticky_retry_attempts: 3,
            sticky_retry_max_delay_seconds: 60.0,
            terminal_delay_threshold_seconds: 300.0,
            total_retry_budget_seconds: 120.0,
        }
    }
}

/// `otel:` section: OTLP/HTTP (JSON) export of one span per flow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    pub enabled: bool,
    /// Collector base URL; spans go to `<endpoint>/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://localhost:4318".to_owned(),
            service_name: "ccproxy".to_owned(),
        }
    }
}

/// `flows:` section (the `ccproxy flows` command).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// jq filters applied before any `--jq` of the command line.
    pub default_jq_filters: Vec<String>,
}

/// One `inspector.transforms[]` rule (spec §2 TransformOverride).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformRuleConfig {
    /// Regex searched in the request host (`Host` / `X-Forwarded-Host`, port stripped).
    #[serde(default)]
    pub match_host: Option<String>,
    /// Regex searched in the path (with query); default matches everything.
    #[serde(default)]
    pub match_path: Option<String>,
    /// Regex searched in the body's `model`.
    #[serde(default)]
    pub match_model: Option<String>,
    #[serde(default)]
    pub action: RuleAction,
    #[serde(default)]
    pub dest_provider: Option<String>,
    #[serde(default)]
    pub dest_host: Option<String>,
    #[serde(default)]
    pub dest_path: Option<String>,
    #[serde(default)]
    pub dest_model: Option<String>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Passthrough,
    #[default]
    Redirect,
    Transform,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Passthrough => "passthrough",
            RuleAction::Redirect => "redirect",
            RuleAction::Transform => "transform",
        }
    }
}

/// `hooks:` section: `{inbound: [...], outbound: [...]}` or a bare list (= inbound).
#[derive(Debug, Default)]
pub struct HooksConfig {
    pub inbound: Vec<HookEntryConfig>,
    pub outbound: Vec<HookEntryConfig>,
}

impl HooksConfig {
    /// The pipeline when `hooks:` is absent: the spec's defaults minus hooks that are not built
    /// yet (§2: inbound `forward_oauth, extract_session_id`; outbound `verbose_mode`,
    /// `gemini_cli`, which only touches Code Assist providers).
    pub fn builtin_default() -> Self {
        let entry = |name: &str| HookEntryConfig {
            hook: name.to_owned(),
            params: None,
            after: Vec::new(),
        };
        Self {
            inbound: vec![entry("forward_oauth"), entry("extract_session_id")],
            outbound: vec![entry("verbose_mode"), entry("gemini_cli")],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksMap {
    #[serde(default)]
    inbound: Vec<HookEntryConfig>,
    #[serde(default)]
    outbound: Vec<HookEntryConfig>,
}

impl<'de> Deserialize<'de> for HooksConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HooksVisitor;
        impl<'de> Visitor<'de> for HooksVisitor {
            type Value = HooksConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with `inbound`/`outbound` lists, or a list of hooks")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<HooksConfig, A::Error> {
                let inbound = Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(HooksConfig {
                    inbound,
                    outbound: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HooksConfig, A::Error> {
                let m = HooksMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HooksConfig {
                    inbound: m.inbound,
                    outbound: m.outbound,
                })
            }
        }
        deserializer.deserialize_any(HooksVisitor)
    }
}

/// One hook list entry: a bare name or `{hook: name, params: {...}}`.
#[derive(Debug, Clone)]
pub struct HookEntryConfig {
    pub hook: String,
    pub params: Option<serde_yaml::Value>,
    /// Names of hooks (same stage) that must run before this one, on top of the
    /// reads/writes dependencies.
    pub after: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookEntryMap {
    hook: String,
    #[serde(default)]
    params: Option<serde_yaml::Value>,
    #[serde(default)]
    after: Vec<String>,
}

impl<'de> Deserialize<'de> for HookEntryConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = HookEntryConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hook name or a map `{hook: name, params: {...}}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HookEntryConfig, E> {
                Ok(HookEntryConfig {
                    hook: v.to_owned(),
                    params: None,
                    after: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HookEntryConfig, A::Error> {
                let m = HookEntryMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HookEntryConfig {
                    hook: m.hook,
                    params: m.params,
                    after: m.after,
                })
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn oauth_client_secret_is_not_in_debug() {
        let c = super::OAuthConfig {
            client_secret: Some("GOCSPX-very-secret".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
