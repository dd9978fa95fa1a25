//! `ccproxy flows …`: the captured flows of the running gateway, through its admin API.
//!
//! Every subcommand works on a *set*: the stored flows, oldest first, passed through the
//! config's `flows.default_jq_filters` and then each `--jq` (run in-process by [`jq`]); or
//! the ids given on the command line (full or a unique prefix). Exit code 1 on a connection,
//! HTTP or jq error, and when `dump`/`compare` get an empty set or `diff` fewer than two flows;
//! `list`/`clear` on an empty set print a message and exit 0 (spec §1).

pub mod answer;
pub mod diff;
pub mod jq;

use crate::config::Config;
use crate::http_call::percent_encode;
use crate::inspector::model::{Flow, Summary, Usage};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// Most flows one command reads.
const MAX_SET: usize = 1000;
/// Largest admin API answer read (HAR of many flows with bodies).
const MAX_ANSWER: u64 = 512 * 1024 * 1024;

/// What `ccproxy flows` does.
#[derive(Debug, clap::Subcommand)]
pub enum FlowsCommand {
    /// One line per flow (id, method, status, provider, model, path, duration, tokens).
    List {
        /// Print the set as JSON.
        #[arg(long)]
        json: bool,
        /// Show only the newest N flows of the set.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Everything about one flow, with its bodies.
    Show { id: String },
    /// HAR 1.2 of the given flows (default: the set), on stdout.
    Dump { ids: Vec<String> },
    /// Unified diff of consecutive request bodies (the given flows, default the set).
    Diff { ids: Vec<String> },
    /// Client vs forwarded request, then provider vs client response, of one flow.
    Compare { id: String },
    /// Delete the set's flows (`--all`: every stored flow).
    Clear {
        #[arg(long)]
        all: bool,
    },
    /// Send a captured client request through the gateway again (optionally to another
    /// provider or model, translated as needed); the new flow is linked to the original, and
    /// both answers are summarised side by side.
    Replay {
        id: String,
        /// Send it to this provider (its sentinel key replaces the client's credential).
        #[arg(long)]
        provider: Option<String>,
        /// Ask for this model instead.
        #[arg(long)]
        model: Option<String>,
    },
    /// Token usage of the set: input, output, cache read/write, cache hit ratio, requests,
    /// errors, median time to first token.
    Usage {
        /// Group by session, model or provider.
        #[arg(long, value_parser = ["session", "model", "provider"])]
        by: Option<String>,
    },
}

/// Why a command failed (printed as `ccproxy: …`).
struct Failure(String);

/// The admin API of the running gateway.
struct Admin {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Admin {
    fn connect(config: &Config) -> Result<Self, Failure> {
        let listen = config.inspector.listen.clone().ok_or_else(|| {
            Failure("the inspector's admin API is off (inspector.listen is null)".to_owned())
        })?;
        let token = crate::inspector::resolve_token(&config.inspector.token, false)
            .map_err(|e| Failure(format!("cannot read the admin token: {e}")))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Self {
            base: format!("http://{listen}"),
            token,
            agent,
        })
    }

    fn call(&self, method: &str, path: &str) -> Result<Vec<u8>, Failure> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let result = match method {
            "DELETE" => self
                .agent
                .delete(&url)
                .header("authorization", &auth)
                .call(),
            "POST" => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .send_empty(),
            _ => self.agent.get(&url).header("authorization", &auth).call(),
        };
        let mut resp = result.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                Failure(format!(
                    "cannot connect to the inspector at {}. Is ccproxy running?",
                    self.base
                ))
            }
            e => Failure(format!("inspector at {}: {e}", self.base)),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| Failure(format!("reading the inspector's answer: {e}")))?;
        if status == 401 {
            return Err(Failure(
                "the inspector refused the admin token (HTTP 401): inspector.token does not match the running gateway's".to_owned(),
            ));
        }
        if !(200..300).contains(&status) {
            let text = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(Failure(format!("HTTP {status}: {text}")));
        }
        Ok(body)
    }

    fn json(&self, method: &str, path: &str) -> Result<Value, Failure> {
        let body = self.call(method, path)?;
        serde_json::from_slice(&body)
            .map_err(|e| Failure(format!("the inspector answered with invalid JSON: {e}")))
    }

    fn flow(&self, id: &str) -> Result<Flow, Failure> {
        let v = self.json("GET", &format!("/api/flows/{}", percent_encode(id)))?;
        serde_json::from_value(v).map_err(|e| Failure(format!("unexpected flow JSON: {e}")))
    }

    /// A body part's bytes, `None` when the flow has none.
    fn body(&self, id: &str, part: &str) -> Result<Option<Vec<u8>>, Failure> {
        match self.call(
            "GET",
            &format!("/api/flows/{}/{part}/body", percent_encode(id)),
        ) {
            Ok(b) => Ok(Some(b)),
            Err(Failure(m)) if m.starts_with("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored flows, oldest first, through the default and given jq filters.
    fn set(&self, config: &Config, jq_filters: &[String]) -> Result<Vec<Value>, Failure> {
        let v = self.json("GET", &format!("/api/flows?limit={MAX_SET}"))?;
        let mut flows = v["flows"].as_array().cloned().unwrap_or_default();
        flows.reverse();
        let filters: Vec<String> = config
            .default_jq_filters
            .iter()
            .chain(jq_filters)
            .cloned()
            .collect();
        match jq::apply(&filters, Value::Array(flows)) {
            Ok(Value::Array(a)) => Ok(a),
            Ok(_) => Err(Failure(
                "jq filter must produce a JSON array, got another type".to_owned(),
            )),
            Err(e) => Err(Failure(e.to_string())),
        }
    }

    /// Ids given on the command line, else the set's.
    fn ids(
        &self,
        config: &Config,
        jq_filters: &[String],
        given: &[String],
    ) -> Result<Vec<String>, Failure> {
        if !given.is_empty() {
            return Ok(given.to_vec());
        }
        Ok(self
            .set(config, jq_filters)?
            .iter()
            .filter_map(|f| f["id"].as_str().map(str::to_owned))
            .collect())
    }
}

pub fn run(
    location: crate::config::ConfigLocation,
    jq_filters: &[String],
    command: FlowsCommand,
) -> ExitCode {
    let Some(config) = super::load_config(location) else {
        return ExitCode::FAILURE;
    };
    let result =
        Admin::connect(&config).and_then(|admin| execute(&admin, &config, jq_filters, command));
    match result {
        Ok(code) => code,
        Err(Failure(m)) => {
            eprintln!("ccproxy: {m}");
            ExitCode::FAILURE
        }
    }
}

fn execute(
    admin: &Admin,
    config: &Config,
    jq_filters: &[String],
    command: FlowsCommand,
) -> Result<ExitCode, Failure> {
    let color = std::io::stdout().is_terminal();
    match command {
        FlowsCommand::List { json, limit } => {
            let mut set = admin.set(config, jq_filters)?;
            if let Some(n) = limit {
                let skip = set.len().saturating_sub(n);
                set.drain(..skip);
            }
            if json {
                println!("{}", pretty(&Value::Array(set)));
            } else if set.is_empty() {
                println!("No flows.");
            } else {
                print!("{}", list_text(&set, color));
            }
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Show { id } => {
            let flow = admin.flow(&id)?;
            print!("{}", show_text(admin, &flow)?);
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Dump { ids } => {
            let ids = admin.ids(config, jq_filters, &ids)?;
            if ids.is_empty() {
                return Err(Failure("no flows to dump".to_owned()));
            }
            let joined: Vec<String> = ids.iter().map(|i| percent_encode(i)).collect();
            let har = admin.json("GET", &format!("/api/har?ids={}", joined.join(",")))?;
            println!("{}", pretty(&har));
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Diff { ids } => {
            let ids = admin.ids(config, jq_filters, &ids)?;
            if ids.len() < 2 {
                return Err(Failure(format!(
                    "diff needs at least two flows, the set has {}",
                    ids.len()
                )));
            }
            let mut bodies = Vec::with_capacity(ids.len());
            for id in &ids {
                let flow = admin.flow(id)?;
                let body = admin
                    .body(&flow.summary.id, "client_request")?
                    .unwrap_or_default();
                bodies.push((flow.summary.id.clone(), diff::body_text(&body)));
            }
            for pair in bodies.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                print!(
                    "{}",
                    diff::unified(
                        &a.1,
                        &b.1,
                        &format!("flow:{}", a.0),
                        &format!("flow:{}", b.0),
                        color
                    )
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Compare { id } => {
            let flow = admin.flow(&id)?;
            print!("{}", compare_text(admin, &flow, color)?);
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Clear { all } => {
            if all {
                let v = admin.json("POST", "/api/clear")?;
                let _ = v;
                println!("All flows cleared.");
                return Ok(ExitCode::SUCCESS);
            }
            let ids = admin.ids(config, jq_filters, &[])?;
            if ids.is_empty() {
                println!("No flows.");
                return Ok(ExitCode::SUCCESS);
            }
            for id in &ids {
                admin.json("DELETE", &format!("/api/flows/{}", percent_encode(id)))?;
            }
            println!("Cleared {} flow(s).", ids.len());
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Replay {
            id,
            provider,
            model,
        } => {
            let flow = admin.flow(&id)?;
            print!(
                "{}",
                replay(admin, config, &flow, provider.as_deref(), model.as_deref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        FlowsCommand::Usage { by } => {
            let set = admin.set(config, jq_filters)?;
            let summaries: Vec<Summary> = set
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect();
            if summaries.is_empty() {
                println!("No flows.");
                return Ok(ExitCode::SUCCESS);
            }
            print!("{}", usage_text(&summaries, by.as_deref()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn list_text(set: &[Value], color: bool) -> String {
    let mut out = format!(
        "{:<16}  {:<19}  {:<6}  {:>4}  {:<10}  {:<28}  {:>8}  {:>13}  {}\n",
        "ID", "TIME (UTC)", "METHOD", "CODE", "PROVIDER", "MODEL", "MS", "TOKENS IN/OUT", "PATH"
    );
    for f in set {
        let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
        let status = f["status"].as_u64().unwrap_or(0);
        let code = match status {
            0 => paint("   -", "2", color),
            200..=299 => paint(&format!("{status:>4}"), "32", color),
            _ => paint(&format!("{status:>4}"), "31", color),
        };
        let time = s("started_at")
            .replace('T', " ")
            .chars()
            .take(19)
            .collect::<String>();
        let ms = f["duration_ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.0}"));
        let tokens = match (
            f["usage"]["input_tokens"].as_u64(),
            f["usage"]["output_tokens"].as_u64(),
        ) {
            (Some(i), Some(o)) => format!(
                "{}/{o}",
                i + f["usage"]["cache_read_tokens"].as_u64().unwrap_or(0)
                    + f["usage"]["cache_write_tokens"].as_u64().unwrap_or(0)
            ),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<16}  {:<19}  {:<6}  {code}  {:<10}  {:<28}  {ms:>8}  {tokens:>13}  {}\n",
            s("id"),
            time,
            s("method"),
            cut(&s("provider"), 10),
            cut(&s("model"), 28),
            cut(&s("path"), 60),
        ));
    }
    out
}

fn message_text(
    admin: &Admin,
    id: &str,
    part: &str,
    title: &str,
    m: &crate::inspector::model::Message,
) -> Result<String, Failure> {
    let mut out = format!("=== {title} ===\n");
    match (&m.method, &m.url, m.status) {
        (Some(method), Some(url), _) => out.push_str(&format!("{method} {url}\n")),
        (_, _, Some(status)) => out.push_str(&format!("HTTP {status}\n")),
        _ => {}
    }
    out.push_str("--- Headers ---\n");
    for (k, v) in &m.headers {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    out.push_str("--- Body ---\n");
    match &m.body {
        None => out.push_str("(empty)\n"),
        Some(info) => {
            let bytes = admin.body(id, part)?.unwrap_or_default();
            out.push_str(&diff::body_text(&bytes));
            if !out.ends_with('\n') {
                out.push('\n');
            }
            if info.truncated {
                out.push_str(&format!(
                    "(truncated: {} of {} bytes stored)\n",
                    info.size, info.total
                ));
            }
        }
    }
    Ok(out)
}

fn show_text(admin: &Admin, flow: &Flow) -> Result<String, Failure> {
    let s = &flow.summary;
    let mut out = format!(
        "Flow {}  {} {}{}  →  {} ({})\n",
        s.id, s.method, s.host, s.path, s.status, s.provider
    );
    out.push_str(&format!(
        "started {}  action {}  formats {} → {}  model {}\n",
        s.started_at,
        s.action,
        s.client_format.as_deref().unwrap_or("-"),
        s.provider_format.as_deref().unwrap_or("-"),
        s.model.as_deref().unwrap_or("-"),
    ));
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |d| format!("{d:.1} ms"));
    out.push_str(&format!(
        "timings: upstream sent {}, first byte {}, last byte {}, done {}, ttft {}\n",
        ms(flow.timings.upstream_sent_ms),
        ms(flow.timings.first_byte_ms),
        ms(flow.timings.last_byte_ms),
        ms(flow.timings.done_ms),
        ms(flow.timings.ttft_ms),
    ));
    if let Some(u) = &s.usage {
        out.push_str(&format!(
            "usage: input {}, output {}, cache read {}, cache write {}{}\n",
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.cache_hit_ratio()
                .map_or_else(String::new, |r| format!(", cache hit {:.1}%", r * 100.0)),
        ));
    }
    for (label, v) in [
        ("session", &s.session_id),
        ("conversation", &s.conversation_id),
        ("system prompt sha", &flow.system_prompt_sha),
    ] {
        if let Some(v) = v {
            out.push_str(&format!("{label}: {v}\n"));
        }
    }
    if !flow.loss.is_empty() {
        out.push_str(&format!("translation dropped: {}\n", flow.loss.join(", ")));
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("error ({}): {}\n", e.kind, e.message));
    }
    out.push('\n');
    let id = s.id.as_str();
    out.push_str(&message_text(
        admin,
        id,
        "client_request",
        "Client-Request",
        &flow.client_request,
    )?);
    if let Some(m) = &flow.forwarded_request {
        out.push_str(&message_text(
            admin,
            id,
            "forwarded_request",
            "Forwarded-Request",
            m,
        )?);
    }
    if let Some(m) = &flow.provider_response {
        out.push_str(&message_text(
            admin,
            id,
            "provider_response",
            "Provider-Response",
            m,
        )?);
    }
    if let Some(m) = &flow.client_response {
        out.push_str(&message_text(
            admin,
            id,
            "client_response",
            "Client-Response",
            m,
        )?);
    }
    Ok(out)
}

fn compare_text(admin: &Admin, flow: &Flow, color: bool) -> Result<String, Failure> {
    let id = &flow.summary.id;
    let short: String = id.chars().take(8).collect();
    let mut out = String::new();
    let client_url = flow.client_request.url.clone().unwrap_or_default();
    if let Some(fwd) = &flow.forwarded_request {
        let fwd_url = fwd.url.clone().unwrap_or_default();
        if fwd_url != client_url {
            out.push_str(&format!(
                "--- URL change: {short} ---\n- {client_url}\n+ {fwd_url}\n"
            ));
        }
    }
    let body = |part: &str| -> Result<String, Failure> {
        Ok(diff::body_text(&admin.body(id, part)?.unwrap_or_default()))
    };
    let client = body("client_request")?;
    let forwarded = if flow.forwarded_request.is_some() {
        body("forwarded_request")?
    } else {
        client.clone()
    };
    out.push_str(&diff::unified(
        &client,
        &forwarded,
        "client:request",
        "forwarded:request",
        color,
    ));
    if flow.provider_response.is_some() {
        let provider = body("provider_response")?;
        let client_resp = if flow.client_response.is_some() {
            body("client_response")?
        } else {
            provider.clone()
        };
        out.push_str(&diff::unified(
            &provider,
            &client_resp,
            "provider:response",
            "client:response",
            color,
        ));
    }
    if out.is_empty() {
        out.push_str("No differences: the client's request and response went through unchanged.\n");
    }
    Ok(out)
}

#[derive(Default)]
struct Tally {
    usage: Usage,
    requests: u64,
    errors: u64,
    ttft: Vec<f64>,
}

fn usage_text(flows: &[Summary], by: Option<&str>) -> String {
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    for f in flows {
        let key = match by {
            Some("session") => f.session_id.clone().unwrap_or_else(|| "-".to_owned()),
            Some("model") => f.model.clone().unwrap_or_else(|| "-".to_owned()),
            Some("provider") => f.provider.clone(),
            _ => "all".to_owned(),
        };
        let t = groups.entry(key).or_default();
        t.requests += 1;
        if f.status >= 400 || f.status == 0 || f.error.is_some() {
            t.errors += 1;
        }
        if let Some(u) = &f.usage {
            t.usage.input_tokens += u.input_tokens;
            t.usage.output_tokens += u.output_tokens;
            t.usage.cache_read_tokens += u.cache_read_tokens;
            t.usage.cache_write_tokens += u.cache_write_tokens;
        }
        if let Some(ms) = f.ttft_ms {
            t.ttft.push(ms);
        }
    }
    let mut out = format!(
        "{:<28}  {:>8}  {:>6}  {:>10}  {:>10}  {:>11}  {:>11}  {:>9}  {:>10}\n",
        by.unwrap_or("scope").to_uppercase(),
        "REQUESTS",
        "ERRORS",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "CACHE WRITE",
        "CACHE HIT",
        "TTFT p50"
    );
    for (key, mut t) in groups {
        t.ttft.sort_by(f64::total_cmp);
        let median = (!t.ttft.is_empty()).then(|| t.ttft[t.ttft.len() / 2]);
        out.push_str(&format!(
            "{:<28}  {:>8}  {:>6}  {:>10}  {:>10}  {:>11}  {:>11}  {:>9}  {:>10}\n",
            cut(&key, 28),
            t.requests,
            t.errors,
            t.usage.input_tokens,
            t.usage.output_tokens,
            t.usage.cache_read_tokens,
            t.usage.cache_write_tokens,
            t.usage
                .cache_hit_ratio()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            median.map_or_else(|| "-".to_owned(), |m| format!("{m:.0} ms")),
        ));
    }
    out
}

/// Headers a replay does not copy from the captured request.
const NOT_REPLAYED: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "accept-encoding",
    "expect",
    "x-ccproxy-replay-of",
];

/// Resend `flow`'s client request through the gateway and summarise both answers.
fn replay(
    admin: &Admin,
    config: &Config,
    flow: &Flow,
    provider: Option<&str>,
    model: Option<&str>,
) -> Result<String, Failure> {
    use crate::inspector::redact;
    let id = &flow.summary.id;
    let req = &flow.client_request;
    if req.body.as_ref().is_some_and(|b| b.truncated) {
        return Err(Failure(format!(
            "flow {id}'s request body was cut at inspector.max_body_bytes; it cannot be replayed whole"
        )));
    }
    let mut body = admin.body(id, "client_request")?.unwrap_or_default();
    let mut path = flow.summary.path.clone();
    if let Some(p) = provider {
        if !config.providers.contains_key(p) {
            return Err(Failure(format!(
                "no provider named {p} in the config (have: {})",
                config
                    .providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if let Some(m) = model {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut o)) if o.contains_key("model") || !path.contains("/models/") => {
                o.insert("model".to_owned(), Value::String(m.to_owned()));
                body = serde_json::to_vec(&Value::Object(o)).unwrap_or(body);
            }
            _ => {}
        }
        if let Some(span) = crate::proxy::route::path_model_span(&path) {
            path.replace_range(span, m);
        }
    }
    // The captured credentials are redacted; a sentinel key names the provider instead.
    let redacted = req
        .headers
        .iter()
        .any(|(k, v)| redact::is_secret_header(k) && v.contains('…'));
    let target = match (provider, redacted) {
        (Some(p), _) => Some(p.to_owned()),
        (None, true) if config.providers.contains_key(&flow.summary.provider) => {
            Some(flow.summary.provider.clone())
        }
        (None, true) => {
            return Err(Failure(format!(
                "flow {id} carried a credential that was redacted at capture; name a provider with --provider"
            )))
        }
        (None, false) => None,
    };
    let url = format!("http://{}{path}", config.listen_addr());
    let mut builder = ureq::http::Request::builder()
        .method(req.method.as_deref().unwrap_or("POST"))
        .uri(&url);
    for (k, v) in &req.headers {
        let lower = k.to_ascii_lowercase();
        if NOT_REPLAYED.contains(&lower.as_str())
            || (target.is_some() && redact::is_secret_header(&lower))
        {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(p) = &target {
        let sentinel = format!("sk-ant-oat-ccproxy-{p}");
        builder = match flow.summary.client_format.as_deref() {
            Some("openai" | "responses") => {
                builder.header("authorization", format!("Bearer {sentinel}"))
            }
            Some("gemini") => builder.header("x-goog-api-key", sentinel),
            _ => builder.header("x-api-key", sentinel),
        };
    }
    builder = builder.header(crate::inspector::model::REPLAY_HEADER, id.as_str());
    let request = builder
        .body(body)
        .map_err(|e| Failure(format!("cannot build the replayed request: {e}")))?;
    let started = std::time::Instant::now();
    let mut resp = admin.agent.run(request).map_err(|e| {
        Failure(format!(
            "cannot send the replay to the gateway at {url}: {e}. Is ccproxy running?"
        ))
    })?;
    let status = resp.status().as_u16();
    let new_id = resp
        .headers()
        .get("x-ccproxy-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let streamed = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("text/event-stream"));
    let replay_body = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(|e| Failure(format!("reading the replayed answer: {e}")))?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;

    // The original answer as the client got it.
    let original_part = if flow.client_response.is_some() {
        "client_response"
    } else {
        "provider_response"
    };
    let original_body = admin.body(id, original_part)?.unwrap_or_default();
    let original = answer::read(&original_body, flow.summary.streamed);
    let replayed = answer::read(&replay_body, streamed);
    // The replay's own flow (usage), once the store has it.
    let new_usage = wait_for_usage(admin, &new_id);

    let usage = |u: Option<&Usage>| {
        u.map_or_else(
            || "-".to_owned(),
            |u| {
                format!(
                    "in {} out {} cache r/w {}/{}",
                    u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens
                )
            },
        )
    };
    let text = |a: &answer::Answer| cut(&a.text.replace('\n', " "), 60);
    let rows = [
        ("flow", id.clone(), new_id.clone()),
        (
            "status",
            flow.summary.status.to_string(),
            status.to_string(),
        ),
        (
            "provider",
            flow.summary.provider.clone(),
            target
                .clone()
                .unwrap_or_else(|| flow.summary.provider.clone()),
        ),
        (
            "model",
            flow.summary.model.clone().unwrap_or_else(|| "-".to_owned()),
            model
                .map(str::to_owned)
                .or(flow.summary.model.clone())
                .unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "latency",
            flow.summary
                .duration_ms
                .map_or_else(|| "-".to_owned(), |d| format!("{d:.0} ms")),
            format!("{elapsed:.0} ms"),
        ),
        ("text", text(&original), text(&replayed)),
        (
            "tool calls",
            original.tools.join(", "),
            replayed.tools.join(", "),
        ),
        (
            "stop",
            original.stop.clone().unwrap_or_default(),
            replayed.stop.clone().unwrap_or_default(),
        ),
        (
            "usage",
            usage(flow.summary.usage.as_ref()),
            usage(new_usage.as_ref()),
        ),
    ];
    let mut out = format!("{:<11}  {:<62}  {}\n", "", "ORIGINAL", "REPLAY");
    for (k, a, b) in rows {
        out.push_str(&format!("{k:<11}  {a:<62}  {b}\n"));
    }
    Ok(out)
}

/// The usage of flow `id` once the store has written it (bounded wait: the store writes off
/// the request path, moments after the answer).
fn wait_for_usage(admin: &Admin, id: &str) -> Option<Usage> {
    if id.is_empty() {
        return None;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Ok(f) = admin.flow(id) {
            if f.summary.state == "done" {
                return f.summary.usage;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
