//! `ccproxy run --inspect`: the built binary jails real programs (`curl`, `getent`, `sh`,
//! `python3`) in new namespaces whose traffic goes over WireGuard to an in-process gateway.
//! `inspector.resolve` points `api.anthropic.com` at a local TLS mock, so nothing leaves the
//! machine. Skipped, with the reason printed, where the kernel or the machine does not allow
//! user namespaces or TUN devices.

use crate::support::mock::{MockUpstream, Reply};
use crate::support::tls::TestCa;
use crate::support::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BODY: &str =
    r#"{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;

/// `ccproxy run --inspect -- args…` against `gw`'s config directory.
fn jail(gw: &Gateway, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config")
        .arg(gw.dir.path())
        .args(["run", "--inspect", "--"])
        .args(args);
    c
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Why jails cannot run here, if they cannot (probed with a real jail).
async fn unavailable(gw: &Gateway) -> Option<String> {
    let out = output(jail(gw, &["true"])).await;
    if out.status.success() {
        return None;
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("namespaces") || err.contains("/dev/net/tun"),
        "the jail failed for another reason: {err}"
    );
    Some(err.trim().to_owned())
}

fn gateway_with_mocks(
    original: &MockUpstream,
    provider_mock: &MockUpstream,
    ca: &TestCa,
) -> Gateway {
    let iport = gateway_port();
    // The mock's CA lives in the gateway's own directory, as long as the gateway does.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    Gateway::start_in(dir, &format!(
        "  ca_file: {}\n  providers:\n{}  inspector:\n    listen: 127.0.0.1:{iport}\n    resolve:\n      api.anthropic.com: \"127.0.0.1:{}\"\n",
        ca_file.display(),
        provider(
            "anthropic",
            "anthropic",
            provider_mock,
            "      auth: echo sk-provider\n"
        ),
        original.port()
    ))
}

/// What a jail test runs against: the TLS mock `inspector.resolve` points `api.anthropic.com`
/// at, a provider mock for sentinel keys, and the gateway. `None` (the reason printed) when
/// jails cannot run here.
struct Setup {
    original: MockUpstream,
    provider_mock: MockUpstream,
    gw: Gateway,
}

async fn setup(original: Reply) -> Option<Setup> {
    let ca = TestCa::with_names(&["api.anthropic.com"]);
    let original = MockUpstream::start_tls(original, &ca).await;
    let provider_mock = MockUpstream::start(Reply::Echo).await;
    let gw = gateway_with_mocks(&original, &provider_mock, &ca);
    if let Some(why) = unavailable(&gw).await {
        println!("skipped: {why}");
        return None;
    }
    Some(Setup {
        original,
        provider_mock,
        gw,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn jailed_curl_is_intercepted_routed_and_captured_and_its_exit_code_propagates() {
    let Some(Setup {
        original,
        provider_mock,
        gw,
        ..
    }) = setup(Reply::Echo).await
    else {
        return;
    };
    let curl = |key: &str| {
        format!(
            "curl -sS --max-time 20 -w '\\n%{{http_code}}\\n' -H 'content-type: application/json' \
             -H 'x-api-key: {key}' -d '{BODY}' https://api.anthropic.com/v1/messages"
        )
    };
    // No base-URL variables, no proxy settings: the program dials api.anthropic.com itself.
    let script = format!(
        "getent ahostsv4 api.anthropic.com | head -n1\n{}\n{}\necho \"ca=$SSL_CERT_FILE\"\nexit 7",
        curl("sk-client-own"),
        curl("sk-ant-oat-ccproxy-anthropic")
    );
    let mut cmd = jail(&gw, &["sh", "-c", &script]);
    cmd.env_remove("ANTHROPIC_BASE_URL")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{stderr}");

    // DNS in the jail: the resolved name gets a stand-in address routed through the tunnel.
    assert!(
        stdout.starts_with("198.18.0.1 "),
        "getent: {stdout}\n{stderr}"
    );
    // curl trusted the intercepting leaf through the CA bundle the jail was given.
    assert!(stdout.contains(&format!("ca={}", gw.path("ca-bundle.pem").display())));
    assert_eq!(stdout.matches("\n200\n").count(), 2, "{stdout}\n{stderr}");

    // No sentinel: on to the host the program named (the mock), with its own key.
    let seen = original.requests();
    assert_eq!(seen.len(), 1, "{stdout}");
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-client-own"));
    assert_eq!(seen[0].json()["model"], "claude-sonnet-4-6");
    // A sentinel key: routed to the provider with the provider's credential.
    let routed = provider_mock.requests();
    assert_eq!(routed.len(), 1);
    assert_eq!(
        routed[0].header("authorization"),
        Some("Bearer sk-provider")
    );

    // Both exchanges were captured, as intercepted flows for api.anthropic.com.
    let deadline = Instant::now() + Duration::from_secs(10);
    let flows = loop {
        let v = api_json(&gw, "/api/flows").await;
        let flows = v["flows"].as_array().cloned().unwrap_or_default();
        if flows.iter().filter(|f| f["state"] == "done").count() >= 2 {
            break flows;
        }
        assert!(Instant::now() < deadline, "flows not stored: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        flows.iter().all(|f| f["ingress"] == "intercept"
            && f["host"] == "api.anthropic.com"
            && f["path"] == "/v1/messages"
            && f["status"] == 200),
        "{flows:?}"
    );
    assert!(
        flows.iter().any(|f| f["provider"] == "anthropic"),
        "{flows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_reaches_the_command_and_its_status_is_reported() {
    let Some(Setup { gw, .. }) = setup(Reply::Echo).await else {
        return;
    };
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = jail(
        &gw,
        &[
            "sh",
            "-c",
            "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 1; done",
        ],
    );
    // Its own process group, as a shell gives a foreground job: Ctrl-C goes to the group.
    cmd.process_group(0).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        (child.wait().unwrap(), rest)
    })
    .await
    .unwrap();
    assert_eq!(status.1, vec!["got-int".to_owned()]);
    assert_eq!(status.0.code(), Some(42));
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_opened_in_the_jail_is_reachable_and_sigkill_leaves_nothing_behind() {
    let Some(Setup { gw, .. }) = setup(Reply::Echo).await else {
        return;
    };
    let port = crate::support::mock::free_port();
    let marker = format!("ccproxy-jail-marker-{port}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("index.html"), &marker).unwrap();
    // A server in the jail on its own localhost, and a child that outlives its shell.
    let script = format!(
        "cd {} && exec python3 -m http.server {port} --bind 127.0.0.1 # {marker}",
        tmp.path().display()
    );
    let mut cmd = jail(&gw, &["sh", "-c", &script]);
    cmd.env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();

    // The host reaches it on the same port once the jail listens (bounded wait).
    let url = format!("http://127.0.0.1:{port}/index.html");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok(r) = client().get(&url).send().await {
            if r.status() == 200 {
                break r.text().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the jail's port never became reachable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, marker);
    // Also on the host's IPv6 loopback, where it has one (`localhost` may resolve there first).
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = client()
            .get(format!("http://[::1]:{port}/index.html"))
            .send()
            .await
            .unwrap();
        assert_eq!(v6.text().await.unwrap(), marker);
    }
    assert!(!processes_with(&marker).is_empty());

    // SIGKILL of `ccproxy run`: the jail, its processes and the forwarded port all go.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(&marker);
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if left.is_empty() && !listening {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {left:?}, port open: {listening}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processes_with("__jail-").iter().all(|pid| {
        // Other tests' jails may run concurrently: none may belong to this one.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        !String::from_utf8_lossy(&cmdline).contains(&marker)
    }));
    // No temp files: everything the jail needed lived in memory or in its mount namespace.
    let files: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from("index.html")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_running_gateway_run_inspect_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = output({
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(dir.path())
            .args(["run", "--inspect", "--", "true"]);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no gateway is running") && err.contains("ccproxy start"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_user_gets_a_jail_without_capabilities() {
    // Run as root (CI): drop to `nobody` with util-linux's setpriv to show no privilege is
    // needed. As another user, the other tests already run unprivileged.
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: not root (the other jail tests run unprivileged already)");
        return;
    }
    if Command::new("setpriv").arg("--help").output().is_err() {
        println!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let Some(Setup { original, gw, .. }) = setup(Reply::Echo).await else {
        return;
    };
    // `nobody` needs the config directory (it rewrites the CA bundle there) and a copy of the
    // binary outside root's home.
    let nobody = 65534;
    let own =
        |p: &std::path::Path| std::os::unix::fs::chown(p, Some(nobody), Some(nobody)).unwrap();
    own(gw.dir.path());
    for entry in std::fs::read_dir(gw.dir.path()).unwrap().flatten() {
        own(&entry.path());
    }
    let shared = tempfile::tempdir().unwrap();
    let exe = shared.path().join("ccproxy");
    std::fs::copy(bin(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "id -u; grep CapEff /proc/self/status; curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}\\n' \
         -H 'x-api-key: sk-own' -d '{BODY}' https://api.anthropic.com/v1/messages"
    );
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .arg("--config")
        .arg(gw.dir.path())
        .args(["run", "--inspect", "--", "sh", "-c", &script])
        .env("HOME", shared.path());
    use std::os::unix::fs::MetadataExt;
    let tun_mode = std::fs::metadata("/dev/net/tun").map_or(0, |m| m.mode() & 0o777);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if tun_mode & 0o006 != 0o006 {
        // Some hosts ship /dev/net/tun as 0600: then the jail cannot be built by `nobody`, and
        // what a user must get is the error that names the device and the fix.
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stdout}\n{err}");
        assert!(
            err.contains("/dev/net/tun is not accessible") && err.contains("chmod 0666"),
            "{err}"
        );
        println!(
            "skipped the unprivileged jail: /dev/net/tun is mode {tun_mode:o} here (checked the error `nobody` gets instead)"
        );
        return;
    }
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "65534", "the command runs as the user itself");
    assert_eq!(lines[1], "CapEff:\t0000000000000000");
    assert_eq!(lines[2], "200");
    assert_eq!(original.request_count(), 1);
}

/// The Claude Code release the test was written against (npm `@anthropic-ai/claude-code`).
const CLAUDE_CODE: &str = "2.1.332";

/// Claude Code's `claude`, installed on first use into `~/.cache/ccproxy-npm`
/// (`CCPROXY_NPM_DIR` overrides the place); `Err(reason)` when npm or the registry is missing.
fn claude_code() -> Result<std::path::PathBuf, String> {
    let dir = std::env::var_os("CCPROXY_NPM_DIR").map_or_else(
        || {
            let home: std::path::PathBuf =
                std::env::var_os("HOME").map_or_else(std::env::temp_dir, Into::into);
            home.join(".cache/ccproxy-npm")
        },
        Into::into,
    );
    let claude = dir.join("node_modules/.bin/claude");
    let version = || {
        Command::new(&claude)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if version().is_some_and(|v| v.starts_with(CLAUDE_CODE)) {
        return Ok(claude);
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let installed = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .arg(format!("@anthropic-ai/claude-code@{CLAUDE_CODE}"))
        .status()
        .map_err(|e| format!("npm is not available: {e}"))?;
    if !installed.success() || !version().is_some_and(|v| v.starts_with(CLAUDE_CODE)) {
        return Err(format!(
            "npm install @anthropic-ai/claude-code@{CLAUDE_CODE} failed (no registry access?)"
        ));
    }
    Ok(claude)
}

/// An Anthropic Messages answer with `text`, as one streamed message.
fn message_events(text: &str) -> Vec<String> {
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    vec![
        ev(
            "message_start",
            serde_json::json!({"type": "message_start", "message": {
            "id": "msg_jail", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        ),
        ev(
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "message_delta",
            serde_json::json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 5}}),
        ),
        ev("message_stop", serde_json::json!({"type": "message_stop"})),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_jailed_reaches_its_default_api_which_resolve_maps_to_a_mock() {
    let claude = match tokio::task::spawn_blocking(claude_code).await.unwrap() {
        Ok(c) => c,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let reply = Reply::script(|req, _| {
        if req.path.starts_with("/v1/messages") && req.json()["stream"] == true {
            Reply::Sse {
                events: message_events("pong from the jailed mock"),
                gate: None,
            }
        } else if req.path.starts_with("/v1/messages/count_tokens") {
            Reply::Json {
                status: 200,
                body: serde_json::json!({"input_tokens": 12}),
            }
        } else {
            Reply::Json {
                status: 404,
                body: serde_json::json!({"type": "error", "error": {"type": "not_found_error", "message": "mock"}}),
            }
        }
    });
    let Some(Setup {
        original: api, gw, ..
    }) = setup(reply).await
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // `timeout` bounds a hung client; SIGKILL of `ccproxy run` takes the jail down with it.
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120", bin(), "--config"])
        .arg(gw.dir.path())
        .args(["run", "--inspect", "--"])
        .arg(&claude)
        .args(["-p", "Reply with one word.", "--model", "claude-sonnet-4-6"])
        .env("HOME", home.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-api03-jailed-client-key")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null());
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "claude -p failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("pong from the jailed mock"),
        "{stdout}\n{stderr}"
    );

    // The mock saw Claude Code's own request, with its own key, on its default host.
    let asked = api
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/v1/messages") && r.json()["stream"] == true)
        .expect("no streamed /v1/messages request reached the mock");
    assert_eq!(
        asked.header("x-api-key"),
        Some("sk-ant-api03-jailed-client-key")
    );
    assert!(
        asked
            .header("user-agent")
            .unwrap_or("")
            .contains("claude-cli"),
        "{:?}",
        asked.header("user-agent")
    );

    // And the gateway captured it (the stored key is redacted at capture).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = api_json(&gw, "/api/flows").await;
        let found = v["flows"].as_array().into_iter().flatten().any(|f| {
            f["host"] == "api.anthropic.com"
                && f["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/v1/messages"))
                && f["state"] == "done"
                && f["streamed"] == true
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Claude Code's flow not captured: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_over_tcp_works_in_the_jail() {
    let Some(Setup { gw, .. }) = setup(Reply::Echo).await else {
        return;
    };
    // A client retrying a truncated answer asks over TCP: the gateway answers there too.
    let script = r#"
import socket, struct
q = struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0) + b'\x03api\x09anthropic\x03com\x00\x00\x01\x00\x01'
s = socket.create_connection(('10.77.0.1', 53), timeout=10)
s.sendall(struct.pack('>H', len(q)) + q)
n = struct.unpack('>H', s.recv(2))[0]
a = b''
while len(a) < n:
    a += s.recv(n - len(a))
print('.'.join(str(b) for b in a[-4:]))
"#;
    let out = output(jail(&gw, &["python3", "-c", script])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "198.18.0.1");
}
