//! Interception and jail benchmarks: `cargo bench --bench intercept -- [--quick] [--only S10,S11]`.
//!
//! S10, TLS interception through the `CONNECT` listener, in one run against the same TLS mock
//! (a child process) with the same client: direct (no proxy), ccproxy with capture off and on, and `mitmdump`
//! (PyPI `mitmproxy`, regular mode; installed into `~/.cache/ccproxy-bench/mitmproxy` when pip
//! can reach PyPI, else skipped with the reason). Kept-alive connections (one `CONNECT` + TLS
//! handshake, then requests) and a new connection per request, at c=1 and c=16: req/s and
//! p50/p99 (kept-alive: connections opened before the clock runs, routes in alternating rounds;
//! c=1 on one client thread, like S1). Targets: ≥ 20× mitmdump's req/s, added p50 ≤ 150 µs kept alive.
//! Kept-alive c=1 runs twice: back to back, and with a pause between an answer and the next
//! request (`--c1-gap-us N`, default 300), since on a small VM the two give different "added"
//! latencies for the same work.
//!
//! S11, the jail (`ccproxy run --inspect`): this binary runs itself inside a jail as the client
//! (`--jail-client`), against hosts that `inspector.resolve` maps to local servers. Added latency
//! per request through WireGuard + the userspace TCP stack (a raw relay on port 8080, and plain
//! HTTP through the proxy service on port 80), and a 100 MB download through the relay: Gbit/s
//! and CPU seconds per GB (gateway + jail keeper). Targets: ≥ 1 Gbit/s, added p50 ≤ 1 ms.
//!
//! S12, browser TLS profiles: connect time (TCP + TLS handshake) of the Chrome profile's
//! connector (`fingerprint_profile`) against the default BoringSSL stack, to the same local TLS
//! server, alternating, in one run.
//!
//! Prints tables; never part of `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "gateway/harness.rs"]
mod harness;
#[path = "gateway/mock_llm.rs"]
mod mock_llm;
#[path = "../tests/it/support/tls.rs"]
mod tls;

use bytes::Bytes;
use harness::{ccproxy_bin, free_port};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &str =
    r#"{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
const BULK_BYTES: u64 = 100 * 1024 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--jail-client") {
        return jail_client(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--serve-mock-tls") {
        return serve_mock_tls(&args[i + 1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(|x| x.trim().to_uppercase()).collect());
    let wants = |s: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c1_gap = Duration::from_micros(
        args.iter()
            .position(|a| a == "--c1-gap-us")
            .and_then(|i| args.get(i + 1))
            .map_or(300, |v| v.parse().expect("--c1-gap-us takes microseconds")),
    );
    if wants("S10") {
        rt.block_on(s10(quick, c1_gap));
    }
    if wants("S11") {
        rt.block_on(s11(quick));
    }
    if wants("S12") {
        rt.block_on(s12(quick));
    }
}

/// Wait until something accepts on `addr` (bounded).
fn wait_listening(addr: SocketAddr) {
    assert!(
        harness::wait_port(addr.port(), Duration::from_secs(30)),
        "nothing listens on {addr}"
    );
}

/// A child process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A ccproxy gateway (release binary) with `inspector` settings; its config dir and process.
fn gateway(inspector: &str, extra: &str) -> (tempfile::TempDir, Proc, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "ccproxy:\n  host: 127.0.0.1\n  port: {port}\n  metrics: null\n  log_file: null\n{extra}  inspector:\n    listen: null\n    store: null\n{inspector}"
    );
    std::fs::write(dir.path().join("ccproxy.yaml"), yaml).unwrap();
    let child = Command::new(ccproxy_bin())
        .arg("--config")
        .arg(dir.path())
        .arg("start")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(([127, 0, 0, 1], port).into());
    (dir, Proc(child), port)
}

// ---------------------------------------------------------------------------------------------
// S10: interception vs mitmdump

/// The TLS mock in a process of its own, as an upstream is for a real client: were it a
/// thread of this process, the direct route would hop between two threads of one process while
/// every proxied route crosses processes, and the proxy would be charged the difference.
/// Killed on drop.
struct MockProc {
    _proc: Proc,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl MockProc {
    fn start(ca: &tls::TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("leaf.pem");
        let key = dir.path().join("leaf.key");
        std::fs::write(&cert, &ca.leaf_cert_pem).unwrap();
        std::fs::write(&key, &ca.leaf_key_pem).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve-mock-tls")
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("mock said {line:?}"));
        Self {
            _proc: Proc(child),
            _dir: dir,
            addr,
        }
    }
}

/// `--serve-mock-tls CERT KEY`: the TLS mock on an ephemeral loopback port, printed on stdout;
/// runs until killed.
fn serve_mock_tls(args: &[String]) {
    let cert = boring::x509::X509::from_pem(&std::fs::read(&args[0]).unwrap()).unwrap();
    let key = boring::pkey::PKey::private_key_from_pem(&std::fs::read(&args[1]).unwrap()).unwrap();
    let mut b =
        boring::ssl::SslAcceptor::mozilla_intermediate_v5(boring::ssl::SslMethod::tls()).unwrap();
    b.set_certificate(&cert).unwrap();
    b.set_private_key(&key).unwrap();
    b.set_alpn_select_callback(|_, client| {
        boring::ssl::select_next_proto(b"\x02h2\x08http/1.1", client)
            .ok_or(boring::ssl::AlpnError::NOACK)
    });
    let addr = mock_llm::spawn_tls("127.0.0.1:0", b.build()).unwrap();
    println!("{addr}");
    loop {
        std::thread::park();
    }
}

/// How a connection reaches the mock.
#[derive(Clone)]
struct Route {
    /// `CONNECT` through this proxy (`None`: straight to the mock).
    proxy: Option<SocketAddr>,
    mock: SocketAddr,
    /// The client's TLS context, trusting the proxy's CA or the mock's test CA. Built once per
    /// route, as a real client builds it once per process: building one loads the system trust
    /// store (milliseconds), which per connection would dwarf the handshakes being measured.
    /// Sessions are not resumed, so every new connection is a full handshake.
    tls: std::sync::Arc<boring::ssl::SslConnector>,
}

/// A client TLS context (HTTP/1.1 by ALPN) trusting `ca`.
fn client_tls(ca: &Path) -> std::sync::Arc<boring::ssl::SslConnector> {
    let mut b = boring::ssl::SslConnector::builder(boring::ssl::SslMethod::tls()).unwrap();
    b.set_ca_file(ca).unwrap();
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    std::sync::Arc::new(b.build())
}

async fn connect(route: &Route) -> Result<SendRequest<Full<Bytes>>, String> {
    let target = route.proxy.unwrap_or(route.mock);
    let mut tcp = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    if route.proxy.is_some() {
        let port = route.mock.port();
        tcp.write_all(
            format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        // Read the answer head byte by byte: nothing past it may be consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tcp.read_u8().await.map_err(|e| e.to_string())?;
            head.push(b);
            if head.len() > 4096 {
                return Err("CONNECT answer too long".into());
            }
        }
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            return Err(format!("CONNECT: {}", String::from_utf8_lossy(&head)));
        }
    }
    let config = route.tls.configure().map_err(|e| e.to_string())?;
    let tls = tokio_boring::connect(config, "localhost", tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request(sender: &mut SendRequest<Full<Bytes>>, mock: SocketAddr) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::post("/v1/messages")
        .header("host", format!("localhost:{}", mock.port()))
        .header("content-type", "application/json")
        .header("x-api-key", "sk-bench-own-key")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(())
}

/// Latencies of `per_conn` requests on each of `conns` concurrent connections, each request on
/// a new connection (CONNECT + TLS), timed with it. Returns (sorted latencies, wall time).
async fn run_fresh(route: &Route, conns: usize, per_conn: usize) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                let t = Instant::now();
                let mut s = connect(&route)
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}"));
                request(&mut s, route.mock)
                    .await
                    .unwrap_or_else(|e| panic!("request: {e}"));
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    all.sort();
    (all, wall)
}

/// Kept-alive c=1 for every route the way S1 measures added latency: a single-threaded client
/// (no wake-ups across runtime threads in the client), one kept-alive connection per route, and
/// `rounds` rounds of `per_round` sequential requests to each route in turn, so drift on the VM
/// hits every route alike. (req/s, p50 µs, p99 µs) per route; req/s = requests / time in them.
/// `gap`: time between one answer and the next request (zero: back to back).
fn alternating_c1(
    routes: &[Route],
    rounds: usize,
    per_round: usize,
    gap: Duration,
) -> Vec<(f64, f64, f64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for r in routes {
            let mut c = connect(r).await.unwrap_or_else(|e| panic!("connect: {e}"));
            for _ in 0..20 {
                kept_request(r, &mut c).await;
            }
            conns.push(c);
        }
        let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); routes.len()];
        for _ in 0..rounds {
            for (i, r) in routes.iter().enumerate() {
                for _ in 0..per_round {
                    lat[i].push(kept_request(r, &mut conns[i]).await);
                    if !gap.is_zero() {
                        // The client is busy elsewhere: the thread sleeps, nothing is polled.
                        std::thread::sleep(gap);
                    }
                }
            }
        }
        lat.into_iter()
            .map(|mut l| {
                l.sort();
                let busy: Duration = l.iter().sum();
                (
                    l.len() as f64 / busy.as_secs_f64(),
                    pct(&l, 0.5),
                    pct(&l, 0.99),
                )
            })
            .collect()
    })
}

/// One request on `conn`, reconnecting (and not counting the try) when the proxy closed a
/// kept-alive connection, as mitmproxy now and then does; the request's latency.
async fn kept_request(route: &Route, conn: &mut SendRequest<Full<Bytes>>) -> Duration {
    for _ in 0..50 {
        let t = Instant::now();
        match request(conn, route.mock).await {
            Ok(()) => return t.elapsed(),
            Err(_) => {
                *conn = connect(route)
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}"))
            }
        }
    }
    panic!("requests through {:?} keep failing", route.proxy)
}

/// Kept-alive throughput at `conns` concurrent connections per route: `rounds` rounds in which
/// each route in turn gets `per_round` requests on each of its connections (opened and warmed
/// once, before any clock runs). (req/s over the rounds' wall time, p50 µs, p99 µs) per route.
async fn alternating_concurrent(
    routes: &[Route],
    conns: usize,
    rounds: usize,
    per_round: usize,
) -> Vec<(f64, f64, f64)> {
    let mut pools = Vec::new();
    for r in routes {
        let mut pool = Vec::new();
        for _ in 0..conns {
            let mut c = connect(r).await.unwrap_or_else(|e| panic!("connect: {e}"));
            kept_request(r, &mut c).await;
            pool.push(c);
        }
        pools.push(pool);
    }
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); routes.len()];
    let mut wall = vec![Duration::ZERO; routes.len()];
    for _ in 0..rounds {
        for (i, r) in routes.iter().enumerate() {
            let start = Instant::now();
            let tasks: Vec<_> = std::mem::take(&mut pools[i])
                .into_iter()
                .map(|mut c| {
                    let r = r.clone();
                    tokio::spawn(async move {
                        let mut l = Vec::with_capacity(per_round);
                        for _ in 0..per_round {
                            l.push(kept_request(&r, &mut c).await);
                        }
                        (c, l)
                    })
                })
                .collect();
            for t in tasks {
                let (c, l) = t.await.unwrap();
                pools[i].push(c);
                lat[i].extend(l);
            }
            wall[i] += start.elapsed();
        }
    }
    lat.into_iter()
        .zip(wall)
        .map(|(mut l, w)| {
            l.sort();
            (
                l.len() as f64 / w.as_secs_f64(),
                pct(&l, 0.5),
                pct(&l, 0.99),
            )
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

struct Row {
    name: String,
    /// (req/s, p50 µs, p99 µs) per column.
    cells: Vec<(f64, f64, f64)>,
}

/// mitmdump from a venv in the cache (installed on first use); `Err(reason)` when impossible.
fn mitmdump() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let venv = home.join(".cache/ccproxy-bench/mitmproxy");
    let exe = venv.join("bin/mitmdump");
    if exe.exists() {
        return Ok(exe);
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "mitmproxy"])
            .status()
            .is_ok_and(|s| s.success());
    if ok && exe.exists() {
        Ok(exe)
    } else {
        Err("mitmproxy could not be installed from PyPI".into())
    }
}

fn start_mitmdump(exe: &Path, ca: &Path) -> (tempfile::TempDir, Proc, SocketAddr) {
    let confdir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(exe)
        .args([
            "--mode",
            "regular",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
        ])
        .arg(port.to_string())
        .arg("--set")
        .arg(format!("confdir={}", confdir.path().display()))
        .arg("--set")
        .arg(format!("ssl_verify_upstream_trusted_ca={}", ca.display()))
        .args(["-q", "--set", "flow_detail=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr);
    (confdir, Proc(child), addr)
}

async fn s10(quick: bool, c1_gap: Duration) {
    println!("\nS10 TLS interception via CONNECT (same TLS mock, same client, HTTP/1.1 both legs)");
    let ca = tls::TestCa::new();
    let mock_proc = MockProc::start(&ca);
    let mock = mock_proc.addr;
    let extra = format!("  ca_file: {}\n", ca.ca_file.display());
    let pport = free_port();
    let (off_dir, _off, _) = gateway(
        &format!("    capture: false\n    proxy_listen: 127.0.0.1:{pport}\n"),
        &extra,
    );
    let pport_on = free_port();
    let (on_dir, _on, _) = gateway(&format!("    proxy_listen: 127.0.0.1:{pport_on}\n"), &extra);
    wait_listening(([127, 0, 0, 1], pport).into());
    wait_listening(([127, 0, 0, 1], pport_on).into());
    let mut routes: Vec<(String, Route)> = vec![
        (
            "direct (no proxy)".into(),
            Route {
                proxy: None,
                mock,
                tls: client_tls(&ca.ca_file),
            },
        ),
        (
            "ccproxy, capture off".into(),
            Route {
                proxy: Some(([127, 0, 0, 1], pport).into()),
                mock,
                tls: client_tls(&off_dir.path().join("ccproxy-ca.pem")),
            },
        ),
        (
            "ccproxy, capture on".into(),
            Route {
                proxy: Some(([127, 0, 0, 1], pport_on).into()),
                mock,
                tls: client_tls(&on_dir.path().join("ccproxy-ca.pem")),
            },
        ),
    ];
    let _mitm = match mitmdump() {
        Ok(exe) => {
            let (dir, proc_, addr) = start_mitmdump(&exe, &ca.ca_file);
            let mca = dir.path().join("mitmproxy-ca-cert.pem");
            let deadline = Instant::now() + Duration::from_secs(20);
            let written =
                |p: &Path| std::fs::read_to_string(p).is_ok_and(|t| t.contains("END CERTIFICATE"));
            while !written(&mca) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            routes.push((
                "mitmdump".into(),
                Route {
                    proxy: Some(addr),
                    mock,
                    tls: client_tls(&mca),
                },
            ));
            Some((dir, proc_))
        }
        Err(why) => {
            println!("mitmdump: skipped ({why})");
            None
        }
    };
    let fresh_n = if quick { 60 } else { 300 };
    let columns = ["kept c=1", "kept c=16", "new conn c=1", "new conn c=16"];
    // Kept-alive runs go first and warm every route (connections, minted leaves) before their
    // clocks start. Kept-alive c=1 as S1 measures it: one client thread, the routes in alternating
    // blocks; back to back, then with a pause between an answer and the next request, as any
    // real client makes (on this kind of VM, back-to-back requests let the gateway's
    // after-response work and the spare worker it wakes compete with the next request for the
    // two cores).
    let (kept_c1, kept_c1_paced) = {
        let routes: Vec<Route> = routes.iter().map(|(_, r)| r.clone()).collect();
        let (rounds, per_round) = if quick { (6, 50) } else { (20, 100) };
        tokio::task::spawn_blocking(move || {
            let c1 = |gap| alternating_c1(&routes, rounds, per_round, gap);
            (c1(Duration::ZERO), c1(c1_gap))
        })
        .await
        .unwrap()
    };
    // Kept-alive c=16 the same way: the routes take turns, a round of `per_round` requests on
    // each of 16 connections at a time, so a slow patch of the VM does not land on one route.
    let kept_c16 = {
        let routes: Vec<Route> = routes.iter().map(|(_, r)| r.clone()).collect();
        let (rounds, per_round) = if quick { (4, 20) } else { (12, 40) };
        alternating_concurrent(&routes, 16, rounds, per_round).await
    };
    let mut rows = Vec::new();
    for (((name, route), c1), c16) in routes.iter().zip(kept_c1).zip(kept_c16) {
        let mut cells = vec![c1, c16];
        for (conns, per) in [(1, fresh_n), (16, fresh_n / 8)] {
            let (lat, wall) = run_fresh(route, conns, per).await;
            cells.push((
                lat.len() as f64 / wall.as_secs_f64(),
                pct(&lat, 0.5),
                pct(&lat, 0.99),
            ));
        }
        rows.push(Row {
            name: name.clone(),
            cells,
        });
    }
    println!(
        "{:<24} {}",
        "",
        columns
            .iter()
            .map(|c| format!("{c:>28}"))
            .collect::<String>()
    );
    println!(
        "{:<24} {}",
        "",
        columns
            .iter()
            .map(|_| format!("{:>28}", "req/s   p50 µs   p99 µs"))
            .collect::<String>()
    );
    for r in &rows {
        print!("{:<24} ", r.name);
        for (rps, p50, p99) in &r.cells {
            print!("{:>10.0} {:>8.0} {:>8.0}", rps, p50, p99);
        }
        println!();
    }
    let direct = &rows[0].cells;
    for r in rows.iter().skip(1) {
        println!(
            "  {}: added p50 kept-alive c=1 = {:.0} µs (target ≤ 150)",
            r.name,
            r.cells[0].1 - direct[0].1
        );
    }
    println!(
        "  kept-alive c=1 with {} µs between an answer and the next request (--c1-gap-us):",
        c1_gap.as_micros()
    );
    for ((name, _), (_, p50, p99)) in routes.iter().zip(&kept_c1_paced) {
        println!(
            "    {name}: p50 {p50:.0} µs, p99 {p99:.0} µs, added p50 {:.0} µs",
            p50 - kept_c1_paced[0].1
        );
    }
    if let (Some(ours), Some(mitm)) = (
        rows.iter().find(|r| r.name == "ccproxy, capture off"),
        rows.iter().find(|r| r.name == "mitmdump"),
    ) {
        for (i, c) in columns.iter().enumerate() {
            println!(
                "  ccproxy / mitmdump req/s, {c}: {:.1}× (target ≥ 20×)",
                ours.cells[i].0 / mitm.cells[i].0
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S11: the jail path

/// A server that answers every connection's first request with `BULK_BYTES` of body.
fn spawn_bulk_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {BULK_BYTES}\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                let chunk = vec![b'x'; 256 * 1024];
                let mut left = BULK_BYTES;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if conn.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    addr
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Time `n` kept-alive requests to `addr` (plain HTTP); sorted latencies.
async fn http_latencies(addr: &str, host: &str, n: usize) -> Vec<Duration> {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_nodelay(true).ok();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let t = Instant::now();
        sender.ready().await.unwrap();
        let req = hyper::Request::post("/v1/messages")
            .header("host", host)
            .header("content-type", "application/json")
            .header("x-api-key", "sk-bench-own-key")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        if i >= 50 {
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    lat
}

/// Inside the jail: `latency HOST:PORT HOSTHEADER N` or `bulk HOST:PORT`; prints one JSON line.
fn jail_client(args: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("latency") => {
            let n: usize = args[3].parse().unwrap();
            let lat = rt.block_on(http_latencies(&args[1], &args[2], n));
            println!("{{\"p50\":{},\"p99\":{}}}", pct(&lat, 0.5), pct(&lat, 0.99));
        }
        Some("bulk") => {
            let secs = rt.block_on(async {
                let mut tcp = TcpStream::connect(args[1].as_str()).await.unwrap();
                let t = Instant::now();
                tcp.write_all(b"GET /bulk HTTP/1.1\r\nHost: bulk\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = tcp.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                assert!(total >= BULK_BYTES, "short download: {total}");
                t.elapsed().as_secs_f64()
            });
            println!("{{\"seconds\":{secs}}}");
        }
        _ => panic!("--jail-client latency|bulk …"),
    }
}

/// Run this binary as the jailed client; the JSON it printed and the keeper's CPU seconds.
fn in_jail(dir: &Path, args: &[&str]) -> Result<(serde_json::Value, f64), String> {
    let mut child = Command::new(ccproxy_bin())
        .arg("--config")
        .arg(dir)
        .args(["run", "--inspect", "--"])
        .arg(std::env::current_exe().unwrap())
        .arg("--jail-client")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // The keeper is `run`'s child; sample its CPU just before the jail ends.
    let run_pid = child.id();
    let mut keeper_cpu = 0.0;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if let Ok(children) =
            std::fs::read_to_string(format!("/proc/{run_pid}/task/{run_pid}/children"))
        {
            keeper_cpu = children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .map(cpu_seconds)
                .fold(keeper_cpu, f64::max);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))?;
    Ok((v, keeper_cpu))
}

async fn s11(quick: bool) {
    println!("\nS11 the jail (ccproxy run --inspect): WireGuard + userspace TCP");
    let mock = mock_llm::spawn(1);
    let bulk = spawn_bulk_server();
    let inspector = format!(
        "    capture: false\n    proxy_listen: null\n    resolve:\n      bench.test: \"{mock}\"\n      bulk.test: \"{bulk}\"\n"
    );
    let (dir, gw, _) = gateway(&inspector, "");
    // The same with capture on (flows kept in memory), for the capture-on/off pair.
    let (dir_on, _gw_on, _) = gateway(&inspector.replace("capture: false", "capture: true"), "");
    // The listeners' records appear once they are up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("wireguard.json").exists()
        || !dir_on.path().join("wireguard.json").exists()
    {
        assert!(Instant::now() < deadline, "no WireGuard listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = if quick { 500 } else { 3000 };
    let direct = http_latencies(&mock.to_string(), "bench.test", n).await;
    let (d50, d99) = (pct(&direct, 0.5), pct(&direct, 0.99));
    println!(
        "{:<44} {:>8} {:>8} {:>12}",
        "", "p50 µs", "p99 µs", "added p50"
    );
    println!("{:<44} {:>8.0} {:>8.0}", "direct (host → mock)", d50, d99);
    let ns = n.to_string();
    for (label, target, config) in [
        (
            "jail → relay (port 8080) → mock",
            "bench.test:8080",
            dir.path(),
        ),
        (
            "jail → proxy service (port 80) → mock",
            "bench.test:80",
            dir.path(),
        ),
        ("  the same, capture on", "bench.test:80", dir_on.path()),
    ] {
        match in_jail(config, &["latency", target, "bench.test", &ns]) {
            Ok((v, _)) => {
                let (p50, p99) = (v["p50"].as_f64().unwrap(), v["p99"].as_f64().unwrap());
                println!("{label:<44} {p50:>8.0} {p99:>8.0} {:>9.0} µs", p50 - d50);
            }
            Err(e) => {
                println!("{label}: skipped ({})", e.trim());
                return;
            }
        }
    }
    let rounds = if quick { 1 } else { 3 };
    for _ in 0..rounds {
        let gw_before = cpu_seconds(gw.0.id());
        match in_jail(dir.path(), &["bulk", "bulk.test:9000"]) {
            Ok((v, keeper_cpu)) => {
                let secs = v["seconds"].as_f64().unwrap();
                let gw_cpu = cpu_seconds(gw.0.id()) - gw_before;
                let gb = BULK_BYTES as f64 / 1e9;
                println!(
                    "bulk 100 MB jail ← relay: {:.2} Gbit/s ({:.2} s); CPU per GB: gateway {:.2} s, jail keeper {:.2} s",
                    BULK_BYTES as f64 * 8.0 / secs / 1e9,
                    secs,
                    gw_cpu / gb,
                    keeper_cpu / gb
                );
            }
            Err(e) => println!("bulk: failed ({})", e.trim()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S12: profiled vs default handshake

async fn s12(quick: bool) {
    println!("\nS12 connect time, TCP + TLS handshake to a local TLS server (alternating rounds)");
    let ca = tls::TestCa::new();
    let server = mock_llm::spawn_tls("127.0.0.1:0", ca.acceptor()).unwrap();
    let trust = vec![boring::x509::X509::from_pem(ca.ca_pem.as_bytes()).unwrap()];
    let profiled = ccproxy::fingerprint::connector::ProfileConnector::new(
        ccproxy::fingerprint::profile::Profile::Chrome156,
        "localhost",
        Some(&trust),
    )
    .unwrap();
    let mut b = boring::ssl::SslConnector::builder(boring::ssl::SslMethod::tls()).unwrap();
    b.set_ca_file(&ca.ca_file).unwrap();
    b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
    let default = b.build();
    let n = if quick { 200 } else { 1000 };
    let (mut with_profile, mut without) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let stream = profiled.handshake(server).await.unwrap();
        with_profile.push(t.elapsed());
        drop(stream);
        let t = Instant::now();
        let tcp = TcpStream::connect(server).await.unwrap();
        tcp.set_nodelay(true).ok();
        let cfg = default.configure().unwrap();
        let tls = tokio_boring::connect(cfg, "localhost", tcp).await.unwrap();
        without.push(t.elapsed());
        drop(tls);
    }
    with_profile.sort();
    without.sort();
    println!("{:<34} {:>8} {:>8}", "", "p50 µs", "p99 µs");
    println!(
        "{:<34} {:>8.0} {:>8.0}",
        "default BoringSSL",
        pct(&without, 0.5),
        pct(&without, 0.99)
    );
    println!(
        "{:<34} {:>8.0} {:>8.0}",
        "chrome156 profile",
        pct(&with_profile, 0.5),
        pct(&with_profile, 0.99)
    );
    println!(
        "  added p50 by the profile: {:.0} µs (X25519MLKEM768 key share, GREASE, ECH GREASE, a 1.8 KB hello)",
        pct(&with_profile, 0.5) - pct(&without, 0.5)
    );
}
