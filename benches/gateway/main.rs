//! ccproxy's benchmark harness: `cargo bench --bench gateway -- [--quick] [--only S1,S3]
//! [--no-peers] [--settle SECS]`.
//!
//! Runs the release `ccproxy` binary in front of an in-repo mock LLM upstream ([`mock_llm`]) and
//! drives it with an in-repo load generator ([`load`]). Scenarios (see README "Benchmarks"):
//! S1 added latency at c=1 (direct and gateway rounds alternate), S2 throughput at p99 < 5 ms
//! with the gateway pinned to one core, S3 SSE time to first event / frame gaps / stall-free
//! concurrent streams, S4 a 300 KB Claude-Code-like request, S5 memory, S6 cold start, S7 a
//! translated OpenAI → Anthropic request (buffered and streamed), S8 peak memory per MB of request
//! body, S9 flow capture off vs on (added latency, SSE, RSS with 10,000 stored flows; S1–S8 run
//! with capture off). A bare Pingora pass-through with the same body buffering ([`floor`]) is the floor for S1
//! and S2; peers (LiteLLM) run in the same session on the same mock when installed; each is
//! reported as a ratio to ccproxy. `CCPROXY_BENCH_BIN` runs another ccproxy binary (an older
//! build, for before/after; with `CCPROXY_BENCH_LEGACY_CONFIG=1` for a build from before the
//! inspector). Prints tables and writes `benches/results/latest.json`. Never part
//! of `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod floor;
mod harness;
mod load;
mod mock_llm;
mod peers;
mod relay;
#[path = "../../tests/it/support/tls.rs"]
mod tls;
mod wrk;

use bytes::Bytes;
use harness::{ccproxy_bin, free_port, wait_port};
use load::{pct_us, Conn, Target};

/// The same allocator as the ccproxy binary, so the floor proxy (which runs in this binary)
/// is compared on equal terms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    peers: bool,
    settle: u64,
}

impl Opts {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let only = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|s| s.split(',').map(|x| x.trim().to_uppercase()).collect());
        let settle = args
            .iter()
            .position(|a| a == "--settle")
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(if quick { 5 } else { 60 });
        Self {
            quick,
            only,
            peers: !args.iter().any(|a| a == "--no-peers"),
            settle,
        }
    }

    fn wants(&self, s: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s))
    }
}

/// A gateway process.
struct Gateway {
    child: Child,
    port: u16,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(mock: SocketAddr, threads: usize, pin_core: Option<usize>) -> Self {
        Self::start_with(mock, threads, pin_core, "")
    }

    /// Start with extra provider entries (YAML, indented under `providers:`), capture off.
    fn start_with(mock: SocketAddr, threads: usize, pin_core: Option<usize>, extra: &str) -> Self {
        // Scenarios S1–S8 measure the gateway without flow capture (comparable with earlier
        // runs and with the floor); S9 measures capture on against off. A binary from before
        // the inspector (CCPROXY_BENCH_BIN) knows no such keys: CCPROXY_BENCH_LEGACY_CONFIG=1.
        let inspector = if std::env::var_os("CCPROXY_BENCH_LEGACY_CONFIG").is_some() {
            ""
        } else {
            "  inspector:\n    capture: false\n    listen: null\n    proxy_listen: null\n"
        };
        Self::start_full(mock, threads, pin_core, extra, inspector)
    }

    /// Start with `extra` providers and an `inspector:` section (YAML at two spaces).
    fn start_full(
        mock: SocketAddr,
        threads: usize,
        pin_core: Option<usize>,
        extra: &str,
        inspector: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let yaml = format!(
            "ccproxy:\n  port: {port}\n  metrics: 127.0.0.1:{metrics_port}\n  log_level: WARNING\n  log_file: null\n  threads: {threads}\n  timeouts: {{shutdown_seconds: 0}}\n  providers:\n    openai:\n      host: {mock}\n      scheme: http\n      provider: openai\n      auth: echo sk-bench\n    anthropic:\n      host: {mock}\n      scheme: http\n      provider: anthropic\n      auth: echo sk-bench\n{extra}{inspector}"
        );
        std::fs::write(dir.path().join("ccproxy.yaml"), yaml).unwrap();
        let bin = ccproxy_bin();
        let mut cmd = match pin_core {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &c.to_string(), &bin]);
                cmd
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--config")
            .arg(dir.path())
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ccproxy");
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "ccproxy did not start"
        );
        let _ = Command::new("prlimit")
            .args(["--pid", &child.id().to_string(), "--nofile=20000:20000"])
            .status();
        Self {
            child,
            port,
            metrics_port,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Resident set size in KiB (the `taskset` wrapper execs, so the pid is ccproxy's).
    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// `(sum, count)` of `ccproxy_overhead_seconds`.
    fn overhead(&self) -> (f64, f64) {
        let text = http_get(self.metrics_port, "/metrics");
        let get = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        (
            get("ccproxy_overhead_seconds_sum"),
            get("ccproxy_overhead_seconds_count"),
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The floor proxy as a child process.
struct FloorProc {
    child: Child,
    port: u16,
}

impl FloorProc {
    fn start(upstream: SocketAddr, threads: usize, core: Option<usize>) -> Self {
        let port = free_port();
        let child = floor::spawn(port, upstream, threads, core);
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "floor proxy did not start"
        );
        Self { child, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for FloorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    http_get_with(port, path, None)
}

/// `GET path` on 127.0.0.1:`port` (with a bearer token when given); the whole response, or ""
/// on error.
fn http_get_with(port: u16, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let auth = token.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn chat_body() -> Bytes {
    Bytes::from(
        json!({"model": "bench-model", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 16})
            .to_string(),
    )
}

fn openai_target(addr: SocketAddr, key: &str, mode: &str) -> Target {
    Target {
        addr,
        path: "/v1/chat/completions".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {key}")),
            ("x-mock-mode".into(), mode.into()),
        ],
        body: chat_body(),
    }
}

fn anthropic_target(addr: SocketAddr, body: Bytes, mode: &str) -> Target {
    Target {
        addr,
        path: "/v1/messages".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-api-key".into(), "sk-ant-oat-ccproxy-anthropic".into()),
            ("anthropic-version".into(), "2023-06-01".into()),
            ("x-mock-mode".into(), mode.into()),
        ],
        body,
    }
}

/// A ~300 KB Claude Code request: long system prompt, 40 tools, a long conversation.
fn claude_code_body() -> Bytes {
    let tools: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "name": format!("tool_{i}"),
                "description": "Performs an operation on the workspace. ".repeat(20),
                "input_schema": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "Absolute path. ".repeat(10)},
                    "content": {"type": "string", "description": "New content. ".repeat(10)},
                    "flags": {"type": "array", "items": {"type": "string"}}
                }, "required": ["path"]}
            })
        })
        .collect();
    let mut messages = Vec::new();
    while serde_json::to_vec(&messages).map_or(0, |v| v.len()) < 230_000 {
        messages.push(json!({"role": "user", "content": [{"type": "text", "text": "Please refactor the module and explain each step in detail. ".repeat(40)}]}));
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": "Here is the refactor with explanations for every change made. ".repeat(40)}]}));
    }
    messages.push(json!({"role": "user", "content": "continue"}));
    let body = json!({
        "model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": false,
        "system": [{"type": "text", "text": "You are Claude Code. ".repeat(400), "cache_control": {"type": "ephemeral"}}],
        "tools": tools, "messages": messages,
        "metadata": {"user_id": "user_abc_account_123_session_0f1e2d3c"}
    });
    Bytes::from(body.to_string())
}

struct Added {
    direct: Vec<Duration>,
    via: Vec<Duration>,
}

impl Added {
    fn row(&self, p: f64) -> (f64, f64, f64) {
        let d = pct_us(&self.direct, p);
        let v = pct_us(&self.via, p);
        (d, v, v - d)
    }

    fn json(&self) -> Value {
        let mut o = serde_json::Map::new();
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("p99_9", 99.9)] {
            let (d, v, a) = self.row(p);
            o.insert(
                name.into(),
                json!({"direct_us": d, "via_us": v, "added_us": a}),
            );
        }
        o.insert("samples".into(), json!(self.via.len()));
        Value::Object(o)
    }

    fn mean_added_us(&self) -> f64 {
        let mean = |v: &[Duration]| {
            v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
        };
        (mean(&self.via) - mean(&self.direct)) * 1e6
    }

    fn print(&self, label: &str) {
        println!(
            "  {label:<28} {:>10} {:>10} {:>10}",
            "direct µs", "via µs", "added µs"
        );
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)] {
            let (d, v, a) = self.row(p);
            println!("  {name:<28} {d:>10.1} {v:>10.1} {a:>10.1}");
        }
    }
}

/// Alternate rounds of direct and via requests at c=1.
async fn added_latency(direct: &Target, via: &Target, rounds: usize, per_round: usize) -> Added {
    let mut dc = Conn::open(direct.addr).await.expect("direct conn");
    let mut vc = Conn::open(via.addr).await.expect("via conn");
    for _ in 0..per_round.min(300) {
        let _ = dc.send(direct).await;
        let _ = vc.send(via).await;
    }
    let mut out = Added {
        direct: Vec::with_capacity(rounds * per_round),
        via: Vec::with_capacity(rounds * per_round),
    };
    for r in 0..rounds {
        for pass in 0..2 {
            let via_pass = (r + pass) % 2 == 1;
            let (c, t, v) = if via_pass {
                (&mut vc, via, &mut out.via)
            } else {
                (&mut dc, direct, &mut out.direct)
            };
            let mut reconnects = 0;
            let mut done = 0;
            while done < per_round {
                let s = Instant::now();
                match c.send(t).await {
                    Ok(200) => {
                        v.push(s.elapsed());
                        done += 1;
                    }
                    Ok(code) => panic!("unexpected status {code} from {}", t.addr),
                    // A server may close a kept-alive connection (mitmproxy does now and then):
                    // reconnect and repeat the request, without recording that sample.
                    Err(e) => {
                        reconnects += 1;
                        assert!(reconnects < 50, "request to {} keeps failing: {e}", t.addr);
                        *c = Conn::open(t.addr).await.expect("reconnect");
                    }
                }
            }
        }
    }
    out.direct.sort();
    out.via.sort();
    out
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default()
}

fn pin_self(core: usize) {
    let _ = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-floor") {
        let arg = |k: usize| args.get(i + k).cloned().unwrap_or_default();
        floor::serve(
            arg(1).parse().expect("floor port"),
            arg(2).parse().expect("floor upstream"),
            arg(3).parse().expect("floor threads"),
        );
        return;
    }
    let opts = Opts::parse();
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=20000:20000",
        ])
        .status();
    let mock = mock_llm::spawn(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results = serde_json::Map::new();
    results.insert(
        "env".into(),
        json!({"cpu": cpu_model(), "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
               "ccproxy": env!("CARGO_PKG_VERSION"), "quick": opts.quick}),
    );
    println!(
        "ccproxy benchmarks ({}; {})",
        cpu_model(),
        if opts.quick { "quick" } else { "full" }
    );

    let (rounds, per_round) = if opts.quick { (4, 250) } else { (20, 500) };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // S6 cold start, first: nothing else running yet.
    if opts.wants("S6") {
        let mut times = Vec::new();
        for _ in 0..if opts.quick { 5 } else { 15 } {
            let t = Instant::now();
            let gw = Gateway::start(mock, 2, None);
            // First 200: wait_port already saw the listener; confirm with a real request.
            let resp = http_get(gw.port, "/health");
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
            times.push(t.elapsed());
        }
        times.sort();
        let med = times[times.len() / 2].as_secs_f64() * 1e3;
        println!("\nS6 cold start (spawn → first 200): median {med:.1} ms, min {:.1} ms (target ≤ 30 ms)", times[0].as_secs_f64() * 1e3);
        results.insert(
            "S6_cold_start_ms".into(),
            json!({"median": med, "min": times[0].as_secs_f64() * 1e3}),
        );
    }

    let gw = Gateway::start(mock, cores, None);
    let idle_rss = gw.rss_kib();
    // LiteLLM serves S1 and S7; start it once.
    let (litellm, litellm_err) = if opts.peers && (opts.wants("S1") || opts.wants("S7")) {
        match peers::litellm::start(mock) {
            Ok(p) => (Some(p), String::new()),
            Err(e) => (None, e),
        }
    } else {
        (None, "peers disabled (--no-peers)".to_owned())
    };

    if opts.wants("S1") {
        let direct = openai_target(mock, "sk-bench", "instant");
        let via = openai_target(gw.addr(), "sk-ant-oat-ccproxy-openai", "instant");
        let before = gw.overhead();
        let added = rt.block_on(added_latency(&direct, &via, rounds, per_round));
        let after = gw.overhead();
        println!("\nS1 added latency, c=1, OpenAI chat pass-through ({} samples each; target p99 ≤ 120 µs)", added.via.len());
        added.print("");
        let inband = (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e6;
        let measured = added.mean_added_us();
        // The in-band metric cannot see the extra socket hops (client→gateway, gateway→
        // upstream and back). A byte relay measured the same way isolates that cost, so
        // "added − relay" is the gateway's own time, which the metric should match.
        let relay = relay::spawn(mock);
        let via_relay = openai_target(relay, "sk-bench", "instant");
        let hop = rt.block_on(added_latency(&direct, &via_relay, rounds, per_round));
        let own = measured - hop.mean_added_us();
        println!(
            "  in-band ccproxy_overhead_seconds mean {inband:.1} µs vs measured mean added {measured:.1} µs ({:+.0} %)",
            (inband / measured - 1.0) * 100.0
        );
        println!(
            "  a plain TCP relay adds {:.1} µs (socket hops); ccproxy's own time = {own:.1} µs vs in-band {inband:.1} µs ({:+.0} %, target ±10 %)",
            hop.mean_added_us(),
            (inband / own - 1.0) * 100.0
        );
        // The floor: a bare Pingora pass-through with the same body buffering, same mock.
        let floor = FloorProc::start(mock, cores, None);
        let via_floor = openai_target(floor.addr(), "sk-bench", "instant");
        let fl = rt.block_on(added_latency(&direct, &via_floor, rounds, per_round));
        drop(floor);
        println!("  floor (bare Pingora pass-through, same body buffering):");
        fl.print("");
        println!(
            "  ccproxy added − floor added: p50 {:+.1} µs, p99 {:+.1} µs",
            added.row(50.0).2 - fl.row(50.0).2,
            added.row(99.0).2 - fl.row(99.0).2
        );
        let mut s1 = added.json();
        s1["floor"] = fl.json();
        s1["inband_overhead_mean_us"] = json!(inband);
        s1["measured_added_mean_us"] = json!(measured);
        s1["relay_added_mean_us"] = json!(hop.mean_added_us());
        s1["gateway_own_mean_us"] = json!(own);

        if opts.peers {
            let mut peer_results = serde_json::Map::new();
            match litellm.as_ref().ok_or_else(|| litellm_err.clone()) {
                Ok(peer) => {
                    let via = openai_target(peer.addr(), peers::litellm::MASTER_KEY, "instant");
                    let peer_rounds = (rounds / 2).max(2);
                    let p = rt.block_on(added_latency(&direct, &via, peer_rounds, per_round / 2));
                    println!(
                        "\nS1 peer: LiteLLM {} (2 workers), same route and mock",
                        peer.version
                    );
                    p.print("");
                    let ratio = |q: f64| p.row(q).2 / added.row(q).2;
                    println!(
                        "  LiteLLM added / ccproxy added: p50 {:.0}×, p99 {:.0}× (target ≥ 30× at p99)",
                        ratio(50.0),
                        ratio(99.0)
                    );
                    let mut j = p.json();
                    j["version"] = json!(peer.version);
                    j["ratio_p50"] = json!(ratio(50.0));
                    j["ratio_p99"] = json!(ratio(99.0));
                    peer_results.insert("litellm".into(), j);
                }
                Err(reason) => {
                    println!("\nS1 peer LiteLLM skipped: {reason}");
                    peer_results.insert("litellm".into(), json!({"skipped": reason}));
                }
            }
            match v2_comparison(&rt, mock, rounds, per_round) {
                Ok(j) => {
                    peer_results.insert("ccproxy_v2".into(), j);
                }
                Err(reason) => {
                    println!("\nS1 peer ccproxy v2 skipped: {reason}");
                    peer_results.insert("ccproxy_v2".into(), json!({"skipped": reason}));
                }
            }
            s1["peers"] = Value::Object(peer_results);
        }
        results.insert("S1_added_latency".into(), s1);
    }

    if opts.wants("S7") {
        results.insert(
            "S7_translation".into(),
            translated_scenario(&rt, mock, &gw, litellm.as_ref(), &litellm_err, opts.quick),
        );
    }
    drop(litellm);

    if opts.wants("S4") {
        let body = claude_code_body();
        let direct = anthropic_target(mock, body.clone(), "instant");
        let via = anthropic_target(gw.addr(), body.clone(), "instant");
        let n = if opts.quick { 50 } else { 1000 };
        let added = rt.block_on(added_latency(&direct, &via, 4, n / 4));
        println!(
            "\nS4 {} KB Claude-Code-like request (40 tools), c=1",
            body.len() / 1024
        );
        added.print("");
        let mut j = added.json();
        j["body_bytes"] = json!(body.len());
        results.insert("S4_large_body".into(), j);
    }

    if opts.wants("S3") {
        let direct = anthropic_target(mock, chat_anthropic(), "sse");
        let via = anthropic_target(gw.addr(), chat_anthropic(), "sse");
        let (dt, vt) = rt.block_on(async {
            let mut dc = Conn::open(direct.addr).await.unwrap();
            let mut vc = Conn::open(via.addr).await.unwrap();
            let mut d = Vec::new();
            let mut v = Vec::new();
            // Warm-up (connection pool, credential cache), not timed.
            dc.stream(&direct).await.unwrap();
            vc.stream(&via).await.unwrap();
            for _ in 0..if opts.quick { 3 } else { 10 } {
                d.push(dc.stream(&direct).await.unwrap());
                v.push(vc.stream(&via).await.unwrap());
            }
            (d, v)
        });
        let (mean_first, mean_gap) = (sse_mean_first_us, sse_mean_gap_us);
        let mean_head = |x: &[load::SseTiming]| {
            x.iter().map(|t| t.head.as_secs_f64()).sum::<f64>() / x.len() as f64 * 1e6
        };
        let added_head = mean_head(&vt) - mean_head(&dt);
        let added_first = mean_first(&vt) - mean_first(&dt);
        println!(
            "  time to response head: direct {:.0} µs, via ccproxy {:.0} µs; to first event: {:.0} / {:.0} µs",
            mean_head(&dt),
            mean_head(&vt),
            mean_first(&dt),
            mean_first(&vt)
        );
        let added_gap = mean_gap(&vt) - mean_gap(&dt);
        println!(
            "\nS3 SSE ({} frames × {} ms)",
            mock_llm::FRAME_COUNT,
            mock_llm::FRAME_INTERVAL.as_millis()
        );
        println!("  added time to first event {added_first:.1} µs, added mean frame gap {added_gap:.1} µs");
        let mut levels = vec![64, 256, 1024];
        if opts.quick {
            levels.truncate(2);
        }
        let mut stall_free = 0;
        let mut conc = Vec::new();
        let mut peak_rss = 0;
        let top = *levels.last().unwrap_or(&64);
        let (d_stalls, d_errors) = rt.block_on(concurrent_streams(&direct, top, &gw, &mut 0));
        println!(
            "  baseline, {top} streams straight to the mock: {d_stalls} stalled, {d_errors} failed"
        );
        for n in levels {
            let (stalls, errors) = rt.block_on(concurrent_streams(&via, n, &gw, &mut peak_rss));
            println!(
                "  {n:>5} concurrent streams: {stalls} stalled (gap > 200 ms), {errors} failed"
            );
            conc.push(json!({"streams": n, "stalled": stalls, "failed": errors}));
            if stalls == 0 && errors == 0 {
                stall_free = n;
            }
        }
        println!("  stall-free concurrent streams: {stall_free} (target 1024)");
        results.insert(
            "S3_sse".into(),
            json!({"added_first_event_us": added_first, "added_head_us": added_head, "added_mean_gap_us": added_gap, "concurrency": conc, "stall_free": stall_free, "peak_rss_kib": peak_rss,
                   "direct_baseline": {"streams": top, "stalled": d_stalls, "failed": d_errors}}),
        );
    }

    let load_rss = gw.rss_kib();
    drop(gw);

    if opts.wants("S2") {
        // Gateway alone on core 0 with one worker; mock and load generator on core 1.
        let gw = Gateway::start(mock, 1, Some(0));
        if cores > 1 {
            pin_self(1);
        }
        let via = openai_target(gw.addr(), "sk-ant-oat-ccproxy-openai", "instant");
        let step = Duration::from_millis(if opts.quick { 1500 } else { 3000 });
        let mut rate = 2000.0;
        let mut best = 0.0;
        let mut steps = Vec::new();
        let mut peak_rss = 0;
        println!(
            "\nS2 throughput with p99 < 5 ms, gateway pinned to one core (target ≥ 12,000 req/s)"
        );
        loop {
            let mut run = rt.block_on(load::open_loop(&via, rate, step, 128));
            peak_rss = peak_rss.max(gw.rss_kib());
            run.latencies.sort();
            let p99 = pct_us(&run.latencies, 99.0);
            let achieved = run.latencies.len() as f64 / step.as_secs_f64();
            // p50 includes up to ~1 ms of tokio timer lateness (latency is measured from the
            // intended send time); the p99 < 5 ms verdict is unaffected.
            println!("  offered {rate:>8.0}/s  done {achieved:>8.0}/s  p50 {:>8.0} µs  p99 {p99:>8.0} µs  errors {}", pct_us(&run.latencies, 50.0), run.errors);
            steps.push(
                json!({"offered": rate, "achieved": achieved, "p99_us": p99, "errors": run.errors}),
            );
            if p99 >= 5000.0 || run.errors > 0 || rate > 100_000.0 {
                break;
            }
            best = rate;
            rate *= 1.25;
        }
        println!("  max rate with p99 < 5 ms: {best:.0} req/s");
        drop(gw);
        let closed = closed_loop_vs_floor(&rt, mock, cores, opts.quick);
        results.insert(
            "S2_throughput".into(),
            json!({"max_rate_p99_under_5ms": best, "steps": steps, "peak_rss_kib": peak_rss,
                   "closed_loop_c16": closed}),
        );
    }

    if opts.wants("S9") {
        results.insert(
            "S9_capture".into(),
            capture_on_off(&rt, mock, cores, rounds, per_round, opts.quick),
        );
    }
    if opts.wants("S8") {
        results.insert(
            "S8_memory_per_body_mb".into(),
            memory_per_body_mb(&rt, mock),
        );
    }

    if opts.wants("S5") {
        let gw = Gateway::start(mock, cores, None);
        let idle = gw.rss_kib();
        let via = openai_target(gw.addr(), "sk-ant-oat-ccproxy-openai", "instant");
        let run = rt.block_on(load::closed_loop(
            &via,
            64,
            if opts.quick { 20_000 } else { 100_000 },
        ));
        let under = gw.rss_kib();
        std::thread::sleep(Duration::from_secs(opts.settle));
        let after = gw.rss_kib();
        println!(
            "\nS5 memory (RSS): idle {:.1} MB, under load {:.1} MB ({} requests, 64 conns), {}s after {:.1} MB (target idle ≤ 15 MB)",
            idle as f64 / 1024.0,
            under as f64 / 1024.0,
            run.latencies.len(),
            opts.settle,
            after as f64 / 1024.0
        );
        results.insert(
            "S5_memory_kib".into(),
            json!({"idle": idle, "under_load": under, "after_settle": after, "settle_s": opts.settle,
                   "first_gateway_idle": idle_rss, "first_gateway_after_load": load_rss}),
        );
    }

    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let _ = std::fs::create_dir_all(&out_dir);
    let text = serde_json::to_string_pretty(&Value::Object(results)).unwrap();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = std::fs::write(out_dir.join(format!("{stamp}.json")), &text);
    let _ = std::fs::write(out_dir.join("latest.json"), &text);
    println!("\nresults: {}", out_dir.join("latest.json").display());
}

/// S2, closed loop: requests per second at c=16 with the proxy pinned to one core (one worker),
/// ccproxy against the floor, alternating rounds. With `wrk` and `nginx` on PATH they are the
/// load generator and the upstream (both on the other core), otherwise the in-repo ones.
fn closed_loop_vs_floor(
    rt: &tokio::runtime::Runtime,
    mock: SocketAddr,
    cores: usize,
    quick: bool,
) -> Value {
    let tools = wrk::Tools::find();
    let other = usize::from(cores > 1);
    let nginx = tools.as_ref().and_then(|t| t.nginx(other).ok());
    let upstream = nginx.as_ref().map_or(mock, wrk::Nginx::addr);
    let secs = if quick { 2 } else { 5 };
    let rounds = if quick { 2 } else { 3 };
    let driver = if nginx.is_some() {
        "wrk -t1 -c16 against nginx"
    } else {
        "in-repo closed loop (16 connections) against the mock"
    };
    println!("\nS2 closed loop, c=16, proxy on one pinned core: ccproxy vs the floor ({driver}, {rounds} × {secs} s each, target ≥ 90 %)");
    let measure = |addr: SocketAddr, key: &str| -> f64 {
        let t = openai_target(addr, key, "instant");
        match (&tools, &nginx) {
            (Some(tools), Some(_)) => tools.run(&t, other, 16, secs),
            _ => {
                let run = rt.block_on(load::closed_loop(&t, 16, 3000 * secs as usize));
                run.latencies.len() as f64 / run.elapsed.as_secs_f64()
            }
        }
    };
    let (mut ours, mut floors) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let gw = Gateway::start(upstream, 1, Some(0));
        measure(gw.addr(), "sk-ant-oat-ccproxy-openai"); // warm-up
        ours.push(measure(gw.addr(), "sk-ant-oat-ccproxy-openai"));
        drop(gw);
        let fl = FloorProc::start(upstream, 1, Some(0));
        measure(fl.addr(), "sk-bench");
        floors.push(measure(fl.addr(), "sk-bench"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (o, f) = (median(&mut ours), median(&mut floors));
    println!(
        "  ccproxy {o:.0} req/s, floor {f:.0} req/s: ccproxy = {:.1} % of the floor (rounds: {ours:.0?} / {floors:.0?})",
        o / f * 100.0
    );
    json!({"driver": driver, "ccproxy_rps": o, "floor_rps": f, "ratio": o / f, "rounds_ccproxy": ours, "rounds_floor": floors})
}

/// S8: peak RSS a request body costs, per MB of body (target ≤ 3×): a fresh gateway per case
/// (peak RSS is the process's high-water mark), four sequential requests, peak minus idle.
fn memory_per_body_mb(rt: &tokio::runtime::Runtime, mock: SocketAddr) -> Value {
    println!(
        "\nS8 peak memory per MB of request body (fresh gateway per case; target ≤ 3× the body)"
    );
    let mut rows = Vec::new();
    for mb in [1usize, 2] {
        for translated in [false, true] {
            let gw = Gateway::start(mock, 2, None);
            let idle = status_kib(gw.child.id(), "VmHWM:");
            let pad = "x".repeat(mb * 1024 * 1024);
            let (target, label) = if translated {
                let body = Bytes::from(
                    json!({"model": "claude-x", "max_tokens": 16,
                    "messages": [{"role": "user", "content": pad}]})
                    .to_string(),
                );
                (
                    openai_target_body(gw.addr(), "sk-ant-oat-ccproxy-anthropic", "instant", body),
                    "translated OpenAI → Anthropic",
                )
            } else {
                let body = Bytes::from(
                    json!({"model": "claude-x", "max_tokens": 16,
                    "messages": [{"role": "user", "content": pad}]})
                    .to_string(),
                );
                (anthropic_target(gw.addr(), body, "instant"), "pass-through")
            };
            let run = rt.block_on(load::closed_loop(&target, 1, 4));
            assert_eq!(run.errors, 0, "S8 {label} requests failed");
            let peak = status_kib(gw.child.id(), "VmHWM:");
            let per_mb = (peak.saturating_sub(idle)) as f64 / 1024.0 / target.body.len() as f64
                * 1024.0
                * 1024.0;
            println!(
                "  {mb} MB {label:<32} idle {:.1} MB, peak {:.1} MB: {per_mb:.1} MB per MB of body",
                idle as f64 / 1024.0,
                peak as f64 / 1024.0
            );
            rows.push(json!({"body_mb": mb, "case": label, "idle_kib": idle, "peak_kib": peak, "peak_per_body_mb": per_mb}));
        }
    }
    Value::Array(rows)
}

/// S7: OpenAI client → Anthropic provider through translation, buffered and streamed, against a
/// direct Anthropic request to the mock; LiteLLM doing the same translation in the same run.
fn translated_scenario(
    rt: &tokio::runtime::Runtime,
    mock: SocketAddr,
    gw: &Gateway,
    litellm: Option<&peers::Peer>,
    litellm_err: &str,
    quick: bool,
) -> Value {
    let chat = |stream: bool| {
        Bytes::from(
            json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 64, "stream": stream,
                   "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say ok."}]})
            .to_string(),
        )
    };
    let direct = anthropic_target(mock, chat_hub(false), "instant");
    let via = openai_target_body(
        gw.addr(),
        "sk-ant-oat-ccproxy-anthropic",
        "instant",
        chat(false),
    );
    let (rounds, per) = if quick { (2, 200) } else { (6, 500) };
    let ours = rt.block_on(added_latency(&direct, &via, rounds, per));
    println!("\nS7 translated OpenAI → Anthropic, buffered, c=1");
    ours.print("ccproxy");
    let mut out = json!({"buffered": {"ccproxy": ours.json()}});
    // Streams: time to first event and mean frame gap, direct vs translated.
    let n = if quick { 3 } else { 8 };
    let timing = |t: Target| {
        rt.block_on(async move {
            let mut c = Conn::open(t.addr).await.expect("conn");
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(c.stream(&t).await.expect("stream"));
            }
            v
        })
    };
    let (first, gap) = (sse_mean_first_us, sse_mean_gap_us);
    let d = timing(anthropic_target(mock, chat_hub(true), "sse"));
    let o = timing(openai_target_body(
        gw.addr(),
        "sk-ant-oat-ccproxy-anthropic",
        "sse",
        chat(true),
    ));
    println!(
        "  streamed: ccproxy adds {:.0} µs to the first event, {:.1} µs per frame gap",
        first(&o) - first(&d),
        gap(&o) - gap(&d)
    );
    out["streamed"] = json!({"ccproxy": {"added_first_event_us": first(&o) - first(&d), "added_gap_us": gap(&o) - gap(&d)}});
    match litellm {
        Some(peer) => {
            let via_l = openai_target_body(
                peer.addr(),
                peers::litellm::MASTER_KEY,
                "instant",
                chat_model(false, "bench-claude"),
            );
            let l = rt.block_on(added_latency(&direct, &via_l, (rounds / 2).max(1), per / 2));
            l.print("LiteLLM");
            let lo = timing(openai_target_body(
                peer.addr(),
                peers::litellm::MASTER_KEY,
                "sse",
                chat_model(true, "bench-claude"),
            ));
            println!(
                "  LiteLLM added / ccproxy added (buffered): p50 {:.0}×, p99 {:.0}×; streamed first event: LiteLLM adds {:.0} µs ({:.0}×)",
                l.row(50.0).2 / ours.row(50.0).2,
                l.row(99.0).2 / ours.row(99.0).2,
                first(&lo) - first(&d),
                (first(&lo) - first(&d)) / (first(&o) - first(&d))
            );
            out["buffered"]["litellm"] = l.json();
            out["streamed"]["litellm"] = json!({"added_first_event_us": first(&lo) - first(&d), "added_gap_us": gap(&lo) - gap(&d)});
        }
        None => {
            println!("  LiteLLM skipped: {litellm_err}");
            out["litellm_skipped"] = json!(litellm_err);
        }
    }
    out
}

fn chat_hub(stream: bool) -> Bytes {
    Bytes::from(
        json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 64, "stream": stream, "system": [{"type": "text", "text": "Be brief."}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Say ok."}]}]})
        .to_string(),
    )
}

fn chat_model(stream: bool, model: &str) -> Bytes {
    Bytes::from(
        json!({"model": model, "max_tokens": 64, "stream": stream,
               "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say ok."}]})
        .to_string(),
    )
}

fn openai_target_body(addr: SocketAddr, key: &str, mode: &str, body: Bytes) -> Target {
    let mut t = openai_target(addr, key, mode);
    t.body = body;
    t
}

/// ccproxy v2 vs ccproxy on the same sentinel `/v1/messages` route to the same TLS mock on
/// 127.0.0.1:443 (v2 always dials https:443).
fn v2_comparison(
    rt: &tokio::runtime::Runtime,
    plain_mock: SocketAddr,
    rounds: usize,
    per_round: usize,
) -> Result<Value, String> {
    let ca = tls::TestCa::new();
    mock_llm::spawn_tls("127.0.0.1:443", ca.acceptor())?;
    let peer = peers::ccproxy_v2::start()?;
    let extra = format!(
        "    anthropic_tls:\n      host: localhost:443\n      provider: anthropic\n      auth: echo sk-bench\n      ca_file: {}\n",
        ca.ca_file.display()
    );
    let ours = Gateway::start_with(plain_mock, 2, None, &extra);
    let body = Bytes::from(
        json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 16, "messages": [{"role": "user", "content": "Say ok."}]})
            .to_string(),
    );
    let direct = anthropic_target(plain_mock, body.clone(), "instant");
    let mut ours_t = anthropic_target(ours.addr(), body.clone(), "instant");
    ours_t.headers[1].1 = "sk-ant-oat-ccproxy-anthropic_tls".into();
    let v2_t = anthropic_target(peer.addr(), body, "instant");
    let r = (rounds / 4).max(2);
    let a = rt.block_on(added_latency(&direct, &ours_t, r, per_round / 2));
    let b = rt.block_on(added_latency(&direct, &v2_t, r, per_round / 2));
    println!(
        "\nS1 peer: ccproxy v2 {} vs ccproxy, sentinel /v1/messages to a TLS mock on :443",
        peer.version
    );
    a.print("ccproxy (TLS upstream)");
    b.print("ccproxy v2");
    let ratio = |q: f64| b.row(q).2 / a.row(q).2;
    println!(
        "  v2 added / ccproxy added: p50 {:.0}×, p99 {:.0}×",
        ratio(50.0),
        ratio(99.0)
    );
    Ok(
        json!({"version": peer.version, "ccproxy_tls": a.json(), "v2": b.json(),
              "ratio_p50": ratio(50.0), "ratio_p99": ratio(99.0)}),
    )
}

fn chat_anthropic() -> Bytes {
    Bytes::from(
        json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 64, "stream": true,
               "messages": [{"role": "user", "content": "Count to 64."}]})
        .to_string(),
    )
}

/// Run `n` streams at once; returns (streams with a stall, failed streams).
async fn concurrent_streams(
    t: &Target,
    n: usize,
    gw: &Gateway,
    peak_rss: &mut u64,
) -> (usize, usize) {
    let stall = mock_llm::FRAME_INTERVAL * 10;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(t.addr).await.map_err(|e| e.to_string())?;
            c.stream(&t).await
        }));
    }
    let sampler = {
        let pid = gw.child.id();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..40 {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let (mut stalled, mut failed) = (0, 0);
    for task in tasks {
        match task.await {
            Ok(Ok(timing)) => {
                if timing.frames < mock_llm::FRAME_COUNT {
                    failed += 1;
                } else if timing.gaps.iter().any(|g| *g > stall) {
                    stalled += 1;
                }
            }
            _ => failed += 1,
        }
    }
    if let Ok(p) = sampler.await {
        *peak_rss = (*peak_rss).max(p);
    }
    (stalled, failed)
}

/// S9: the same gateway with flow capture off and on (SQLite store on disk, as shipped), same
/// run: added latency (S1's route, blocks alternated so drift hits both), SSE first event and
/// frame gaps (S3's stream), and RSS once 10,000 flows are stored.
fn capture_on_off(
    rt: &tokio::runtime::Runtime,
    mock: SocketAddr,
    cores: usize,
    rounds: usize,
    per_round: usize,
    quick: bool,
) -> Value {
    let admin_port = free_port();
    let off = Gateway::start_full(
        mock,
        cores,
        None,
        "",
        "  inspector:\n    capture: false\n    listen: null\n    proxy_listen: null\n",
    );
    let on = Gateway::start_full(
        mock,
        cores,
        None,
        "",
        &format!("  inspector:\n    listen: 127.0.0.1:{admin_port}\n    token: bench-token\n    store: flows.db\n    proxy_listen: null\n"),
    );
    let direct = openai_target(mock, "sk-bench", "instant");
    let via_off = openai_target(off.addr(), "sk-ant-oat-ccproxy-openai", "instant");
    let via_on = openai_target(on.addr(), "sk-ant-oat-ccproxy-openai", "instant");
    let mut a_off = Added {
        direct: Vec::new(),
        via: Vec::new(),
    };
    let mut a_on = Added {
        direct: Vec::new(),
        via: Vec::new(),
    };
    let blocks = 4;
    for b in 0..blocks {
        let (first, second) = if b % 2 == 0 {
            (&via_off, &via_on)
        } else {
            (&via_on, &via_off)
        };
        let x = rt.block_on(added_latency(
            &direct,
            first,
            (rounds / blocks).max(1),
            per_round,
        ));
        let y = rt.block_on(added_latency(
            &direct,
            second,
            (rounds / blocks).max(1),
            per_round,
        ));
        let (xo, yo) = if b % 2 == 0 {
            (&mut a_off, &mut a_on)
        } else {
            (&mut a_on, &mut a_off)
        };
        xo.direct.extend(x.direct);
        xo.via.extend(x.via);
        yo.direct.extend(y.direct);
        yo.via.extend(y.via);
    }
    for a in [&mut a_off, &mut a_on] {
        a.direct.sort();
        a.via.sort();
    }
    println!("\nS9 flow capture off vs on (same run; target: on adds ≤ 15 % to S1's added p50, nothing measurable to SSE frame gaps)");
    a_off.print("capture off");
    a_on.print("capture on (SQLite on disk)");
    let p50_off = a_off.row(50.0).2;
    let p50_on = a_on.row(50.0).2;
    println!(
        "  added p50: off {p50_off:.1} µs, on {p50_on:.1} µs ({:+.1} %)",
        (p50_on / p50_off - 1.0) * 100.0
    );

    // SSE: first event and mean frame gap, streams alternated between the two.
    let sse_off = anthropic_target(off.addr(), chat_anthropic(), "sse");
    let sse_on = anthropic_target(on.addr(), chat_anthropic(), "sse");
    let n = if quick { 3 } else { 10 };
    let (t_off, t_on) = rt.block_on(async {
        let mut co = Conn::open(sse_off.addr).await.unwrap();
        let mut cn = Conn::open(sse_on.addr).await.unwrap();
        co.stream(&sse_off).await.unwrap();
        cn.stream(&sse_on).await.unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..n {
            a.push(co.stream(&sse_off).await.unwrap());
            b.push(cn.stream(&sse_on).await.unwrap());
        }
        (a, b)
    });
    let (first, gap) = (sse_mean_first_us, sse_mean_gap_us);
    println!(
        "  SSE: first event off {:.0} µs, on {:.0} µs; mean frame gap off {:.1} µs, on {:.1} µs",
        first(&t_off),
        first(&t_on),
        gap(&t_off),
        gap(&t_on)
    );

    // Memory with 10,000 flows stored (the default retention).
    let idle_on = on.rss_kib();
    let count = if quick { 2_000 } else { 10_000 };
    let run = rt.block_on(load::closed_loop(&via_on, 16, count));
    assert_eq!(run.errors, 0, "S9 load failed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let response = http_get_with(admin_port, "/api/status", Some("bench-token"));
        let status = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let n = serde_json::from_str::<Value>(status)
            .ok()
            .and_then(|v| v["flows"].as_u64())
            .unwrap_or(0);
        if n as usize >= count.min(10_000) || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rss_on = on.rss_kib();
    let rss_off = off.rss_kib();
    println!(
        "  RSS with {stored} flows stored: {:.1} MB (idle before {:.1} MB; capture-off gateway {:.1} MB)",
        rss_on as f64 / 1024.0,
        idle_on as f64 / 1024.0,
        rss_off as f64 / 1024.0
    );
    json!({
        "off": a_off.json(), "on": a_on.json(),
        "added_p50_off_us": p50_off, "added_p50_on_us": p50_on,
        "sse_first_event_us": {"off": first(&t_off), "on": first(&t_on)},
        "sse_mean_gap_us": {"off": gap(&t_off), "on": gap(&t_on)},
        "stored_flows": stored, "rss_kib_with_flows": rss_on, "rss_kib_idle": idle_on,
    })
}

/// Mean time to the first SSE event, in µs.
fn sse_mean_first_us(x: &[load::SseTiming]) -> f64 {
    x.iter().map(|t| t.first.as_secs_f64()).sum::<f64>() / x.len().max(1) as f64 * 1e6
}

/// Mean gap between SSE frames over all streams, in µs.
fn sse_mean_gap_us(x: &[load::SseTiming]) -> f64 {
    let all: Vec<f64> = x
        .iter()
        .flat_map(|t| t.gaps.iter().map(|g| g.as_secs_f64()))
        .collect();
    all.iter().sum::<f64>() / all.len().max(1) as f64 * 1e6
}
