//! `ccproxy status [--json] [--proxy]`: probe the listeners and render the hook pipeline.
//!
//! Exit code is a bitmask of what is down (spec §1): 1 = proxy, 2 = inspector (its admin
//! listener, when configured). `--proxy` / `--inspect` are silent health checks of one each.

use crate::config::{Config, ConfigLocation};
use crate::hooks::{Pipeline, Slot, Stage};
use serde_json::{json, Value};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

fn probe(addr: &str) -> bool {
    let target = match addr.split_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        _ => addr.to_owned(),
    };
    target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, PROBE_TIMEOUT).is_ok())
}

/// The admin listener's address, when the inspector has one.
fn inspector_addr(c: &Config) -> Option<&str> {
    c.inspector
        .listen
        .as_deref()
        .filter(|_| c.inspector.capture)
}

pub fn run(location: ConfigLocation, json: bool, proxy_only: bool, inspect_only: bool) -> ExitCode {
    let Some(config) = super::load_config(location) else {
        return ExitCode::FAILURE;
    };
    let pipeline = match crate::proxy::server::pipeline(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ccproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let proxy_up = probe(&config.listen_addr());
    let inspector_up = inspector_addr(&config).map(probe);
    let proxy_bit = u8::from(!proxy_up);
    let inspector_bit = if inspector_up == Some(false) { 2 } else { 0 };
    if proxy_only || inspect_only {
        let mut code = 0;
        if proxy_only {
            code |= proxy_bit;
        }
        if inspect_only {
            code |= inspector_bit;
        }
        return ExitCode::from(code);
    }
    let metrics_up = config.metrics.as_deref().map(probe);
    // The WireGuard listener is UDP: its record says where it is and whether its process lives.
    let wireguard = crate::wireguard::keys::State::read_live(&config.location.dir);
    if json {
        let mut v = render_json(&config, &pipeline, proxy_up, metrics_up);
        v["proxy_listener"] = match &config.inspector.proxy_listen {
            Some(l) => json!({
                "url": format!("http://{l}"),
                "running": probe(l),
                "ca": config.location.dir.join(crate::local_ca::CERT_FILE).display().to_string(),
            }),
            None => Value::Null,
        };
        v["wireguard"] = match (&config.inspector.wireguard_listen, &wireguard) {
            (None, _) => Value::Null,
            (Some(_), Ok(state)) => json!({
                "endpoint": state.endpoint.to_string(),
                "running": true,
                "public_key": state.public_key,
            }),
            (Some(l), Err(_)) => json!({"endpoint": l, "running": false}),
        };
        v["inspector"] = match inspector_addr(&config) {
            Some(l) => json!({
                "url": format!("http://{l}/"),
                "running": inspector_up.unwrap_or(false),
                "store": config.inspector.store.as_ref().map(|p| p.display().to_string()),
            }),
            None => Value::Null,
        };
        println!("{v}");
    } else {
        let mut text = render_text(&config, &pipeline, proxy_up, metrics_up);
        let line = match (inspector_addr(&config), inspector_up) {
            (Some(l), Some(u)) => format!(
                "  inspect  {}  http://{l}/\n",
                if u { "running" } else { "stopped" }
            ),
            _ => "  inspect  off\n".to_owned(),
        };
        let line =
            line + &match &config.inspector.proxy_listen {
                Some(l) => format!(
                    "  intercept {}  http://{l}  (HTTPS_PROXY; trust {})\n",
                    if probe(l) { "running" } else { "stopped" },
                    config
                        .location
                        .dir
                        .join(crate::local_ca::CERT_FILE)
                        .display()
                ),
                None => "  intercept off\n".to_owned(),
            } + &match (&config.inspector.wireguard_listen, &wireguard) {
                (None, _) => "  jail     off\n".to_owned(),
                (Some(_), Ok(state)) => format!(
                    "  jail     running  udp://{}  (ccproxy run --inspect -- cmd)\n",
                    state.endpoint
                ),
                (Some(_), Err(_)) => "  jail     stopped\n".to_owned(),
            };
        if let Some(i) = text.find("  config ") {
            text.insert_str(i, &line);
        }
        print!("{text}");
    }
    ExitCode::from(proxy_bit | inspector_bit)
}

fn slot_json(slot: &Slot) -> Value {
    let params: serde_json::Map<String, Value> = slot
        .hook
        .describe_params()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({
        "name": slot.spec.name,
        "reads": slot.spec.reads,
        "writes": slot.spec.writes,
        "depends_on": slot.depends_on,
        "params": params,
    })
}

/// The pipeline as JSON: `{"inbound":[…],"outbound":[…]}` in execution order.
pub fn pipeline_json(p: &Pipeline) -> Value {
    json!({
        "inbound": p.stage(Stage::Inbound).iter().map(slot_json).collect::<Vec<_>>(),
        "outbound": p.stage(Stage::Outbound).iter().map(slot_json).collect::<Vec<_>>(),
    })
}

fn render_json(c: &Config, pipeline: &Pipeline, proxy_up: bool, metrics_up: Option<bool>) -> Value {
    json!({
        "proxy": proxy_up,
        "url": c.base_url(),
        "config": {"ccproxy.yaml": c.location.file.display().to_string(), "found": c.file_found},
        "hooks": pipeline_json(pipeline),
        "log": c.log_file.as_ref().map(|p| p.display().to_string()),
        "metrics": c.metrics.as_ref().map(|m| json!({
            "url": format!("http://{m}/metrics"),
            "running": metrics_up.unwrap_or(false),
        })),
        "providers": c.providers.values().map(|p| json!({
            "name": &*p.name,
            "provider": p.family.as_str(),
            "url": format!("{}://{}{}", p.dest.scheme.as_str(), p.dest.authority, p.path.as_deref().unwrap_or("")),
            "auth": p.auth.as_ref().map(|a| a.kind.type_name()),
            "token": p.auth.as_ref().and_then(|a| token_state(&a.kind)),
        })).collect::<Vec<_>>(),
    })
}

/// What an OAuth credentials file says about its token, never the token:
/// `{"file", "expires_in_s"}` or `{"file", "error"}`.
fn token_state(kind: &crate::creds::SourceKind) -> Option<Value> {
    let crate::creds::SourceKind::OAuth(spec) = kind else {
        return None;
    };
    let file = spec.file.display().to_string();
    Some(match crate::creds::oauth::read(spec) {
        Ok(t) => match t.remaining_ms(crate::creds::oauth::now_ms()) {
            Some(ms) => json!({"file": file, "expires_in_s": ms / 1000}),
            None => {
                json!({"file": file, "error": format!("no access token or expiry at {} / {}", spec.access_path, spec.expiry_path)})
            }
        },
        Err(e) => json!({"file": file, "error": e.summary()}),
    })
}

fn token_text(t: &Value) -> String {
    match (t["expires_in_s"].as_i64(), t["error"].as_str()) {
        (Some(s), _) if s > 0 => format!(
            "token valid for {}",
            humantime::format_duration(std::time::Duration::from_secs(s as u64))
        ),
        (Some(s), _) => format!(
            "token expired {} ago (refreshed on the next request)",
            humantime::format_duration(std::time::Duration::from_secs(s.unsigned_abs()))
        ),
        (None, Some(e)) => format!("{e} in {}", t["file"].as_str().unwrap_or("")),
        _ => String::new(),
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "—".to_owned()
    } else {
        items.join(", ")
    }
}

fn render_stage(out: &mut String, title: &str, phase: &str, slots: &[Slot]) {
    out.push_str(&format!("── {title} ── ({phase})\n"));
    if slots.is_empty() {
        out.push_str("   (no hooks)\n");
    }
    for (i, s) in slots.iter().enumerate() {
        out.push_str(&format!("  {}. {}\n", i + 1, s.spec.name));
        out.push_str(&format!("       r: {}\n", list(s.spec.reads)));
        out.push_str(&format!("       w: {}\n", list(s.spec.writes)));
        if !s.depends_on.is_empty() {
            out.push_str(&format!("       after: {}\n", s.depends_on.join(", ")));
        }
        for (k, v) in s.hook.describe_params() {
            out.push_str(&format!("       {k}: {v}\n"));
        }
    }
}

/// Human-readable status and pipeline.
pub fn render_text(
    c: &Config,
    pipeline: &Pipeline,
    proxy_up: bool,
    metrics_up: Option<bool>,
) -> String {
    let up = |b: bool| if b { "running" } else { "stopped" };
    let mut out = String::new();
    out.push_str("ccproxy status\n");
    out.push_str(&format!("  proxy    {}  {}\n", up(proxy_up), c.base_url()));
    match (&c.metrics, metrics_up) {
        (Some(m), Some(u)) => out.push_str(&format!("  metrics  {}  http://{m}/metrics\n", up(u))),
        _ => out.push_str("  metrics  off\n"),
    }
    let found = if c.file_found {
        ""
    } else {
        " (not found: defaults)"
    };
    out.push_str(&format!(
        "  config   {}{found}\n",
        c.location.file.display()
    ));
    match &c.log_file {
        Some(l) => out.push_str(&format!("  log      {}\n", l.display())),
        None => out.push_str("  log      off\n"),
    }
    if c.providers.is_empty() {
        out.push_str("  providers (none)\n");
    } else {
        out.push_str("  providers\n");
        for p in c.providers.values() {
            let auth = p.auth.as_ref().map_or_else(
                || "no auth".to_owned(),
                |a| {
                    let mut s = a.kind.type_name().to_owned();
                    if let Some(t) = token_state(&a.kind) {
                        s.push_str(&format!(", {}", token_text(&t)));
                    }
                    s
                },
            );
            out.push_str(&format!(
                "    {:<12} {} ({auth})\n",
                &*p.name,
                p.family.as_str()
            ));
        }
    }
    out.push_str("\nPipeline\n");
    render_stage(
        &mut out,
        "inbound",
        "request_filter, before routing",
        pipeline.stage(Stage::Inbound),
    );
    out.push_str("   │\n   ▼\n ◆ route (upstream_peer) ◆\n   │\n   ▼\n");
    render_stage(
        &mut out,
        "outbound",
        "upstream_request_filter",
        pipeline.stage(Stage::Outbound),
    );
    out.push_str("   │\n   ▼\n → provider API\n");
    out
}
