//! The `ccproxy` binary: init, status, run, logs, start/stop, config errors, help, and the
//! shipped configs.

use crate::support::{bin, config_yaml, gateway_port, sigterm, start_binary, Gateway};
use std::path::Path;
use std::process::{Command, Output};

fn ccproxy(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(dir)
        .args(args)
        .env_remove("CCPROXY_CONFIG_DIR")
        .env_remove("CCPROXY_HOST")
        .env_remove("CCPROXY_PORT")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_shipped_config_loads() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(&conf).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let loc = ccproxy::config::locate(Some(&path));
            ccproxy::config::Config::load(loc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no YAML under conf/");
}

#[test]
fn init_installs_the_default_config_then_skips_then_forces() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("sub");
    let out = ccproxy(&target, &["init"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Installed ccproxy.yaml"));
    let written = std::fs::read_to_string(target.join("ccproxy.yaml")).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ccproxy.yaml"))
            .unwrap();
    assert_eq!(written, shipped);

    std::fs::write(target.join("ccproxy.yaml"), "ccproxy: {}\n").unwrap();
    let out = ccproxy(&target, &["init"]);
    assert!(out.status.success());
    assert!(text(&out.stdout)
        .contains("Skipping ccproxy.yaml (already exists, use --force to overwrite)"));
    assert_eq!(
        std::fs::read_to_string(target.join("ccproxy.yaml")).unwrap(),
        "ccproxy: {}\n"
    );
    let out = ccproxy(&target, &["init", "--force"]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(target.join("ccproxy.yaml")).unwrap(),
        shipped
    );
}

#[test]
fn config_errors_fail_startup_with_one_line_naming_file_and_key() {
    let cases = [
        (
            "ccproxy:\n  providers:\n    anthropic:\n      host: h\n      provider: anthropic\n      auth:\n        comand: x\n",
            "ccproxy.yaml: providers.anthropic.auth: unknown field \"comand\"",
        ),
        ("ccproxy:\n  port: many\n", "ccproxy.yaml: port: invalid type"),
        (
            "ccproxy:\n  inspector:\n    resolve:\n      api.anthropic.com: localhost\n",
            "ccproxy.yaml: inspector.resolve.api.anthropic.com: \"localhost\" is not an ip:port address",
        ),
        (
            "ccproxy:\n  providers:\n    anthropic:\n      host: h\n      provider: anthropic\n      auth:\n        type: claude_oauth\n",
            "ccproxy.yaml: providers.anthropic.auth: unknown auth type \"claude_oauth\" (valid: command, file, anthropic_oauth, google_oauth)",
        ),
        (
            "ccproxy:\n  providers:\n    gemini:\n      host: h\n      provider: gemini\n      auth:\n        type: google_oauth\n",
            "ccproxy.yaml: providers.gemini.auth.client_id: google_oauth needs a client_id",
        ),
        (
            "ccproxy:\n  providers:\n    anthropic:\n      host: h\n      provider: anthropic\n      auth:\n        type: anthropic_oauth\n        access_path: a..b\n",
            "ccproxy.yaml: providers.anthropic.auth.access_path: \"a..b\" is not a dot-path",
        ),
        (
            "ccproxy:\n  providers:\n    anthropic:\n      host: h\n      provider: anthropic\n      auth:\n        command: x\n        file_path: y\n",
            "ccproxy.yaml: providers.anthropic.auth: \"file_path\" needs \"type: anthropic_oauth\" or \"type: google_oauth\"",
        ),
        (
            "ccproxy:\n  hooks:\n    inbound: [forward_oauth, nope]\n",
            "ccproxy.yaml: hooks.inbound[1]: unknown hook \"nope\"",
        ),
        (
            "ccproxy:\n  inspector:\n    transforms:\n      - match_model: \"[\"\n        dest_host: x\n",
            "ccproxy.yaml: inspector.transforms[0].match_model: invalid regex",
        ),
        (
            "ccproxy:\n  hooks:\n    outbound:\n      - {hook: verbose_mode, after: [commitbee_compat]}\n      - {hook: commitbee_compat, after: [verbose_mode]}\n",
            "ccproxy.yaml: hooks.outbound: hooks form a dependency cycle: verbose_mode -> commitbee_compat",
        ),
        (
            "ccproxy:\n  hooks:\n    inbound: [forward_oauth, forward_oauth]\n",
            "ccproxy.yaml: hooks.inbound: hook \"forward_oauth\" is listed twice",
        ),
    ];
    for (yaml, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ccproxy.yaml"), yaml).unwrap();
        let out = ccproxy(dir.path(), &["start"]);
        assert_eq!(out.status.code(), Some(1), "{yaml}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn status_reports_down_with_exit_bitmask_and_pipeline_json() {
    let dir = tempfile::tempdir().unwrap();
    let (port, iport) = (gateway_port(), gateway_port());
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        format!("ccproxy:\n  port: {port}\n  metrics: null\n  inspector:\n    listen: 127.0.0.1:{iport}\n  hooks:\n    outbound:\n      - {{hook: commitbee_compat, after: [verbose_mode]}}\n      - verbose_mode\n"),
    )
    .unwrap();
    let out = ccproxy(dir.path(), &["status", "--proxy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let out = ccproxy(dir.path(), &["status", "--inspect"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    // Bitmask: 1 = proxy down, 2 = inspector down.
    let out = ccproxy(dir.path(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["proxy"], false);
    assert_eq!(v["inspector"]["running"], false);
    assert_eq!(v["inspector"]["url"], format!("http://127.0.0.1:{iport}/"));
    assert_eq!(v["url"], format!("http://127.0.0.1:{port}"));
    // The proxy listener is on by default; status names it and the CA to trust.
    assert_eq!(v["proxy_listener"]["url"], "http://127.0.0.1:8084");
    assert!(v["proxy_listener"]["ca"]
        .as_str()
        .unwrap()
        .ends_with("ccproxy-ca.pem"));
    // So is the WireGuard listener (`run --inspect`); with no gateway it is stopped.
    assert_eq!(v["wireguard"]["running"], false);
    assert_eq!(v["wireguard"]["endpoint"], "127.0.0.1:0");
    // `after:` reorders the DAG: verbose_mode runs first although listed second.
    let order: Vec<&str> = v["hooks"]["outbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["verbose_mode", "commitbee_compat"]);
    assert_eq!(v["hooks"]["outbound"][1]["depends_on"][0], "verbose_mode");
    // A `hooks:` section lists every stage explicitly: no inbound list means no inbound hooks.
    assert_eq!(v["hooks"]["inbound"], serde_json::json!([]));

    let out = ccproxy(dir.path(), &["status"]);
    let t = text(&out.stdout);
    assert!(
        t.contains("stopped") && t.contains("── inbound ──") && t.contains("── outbound ──"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_a_running_gateway() {
    let gw = Gateway::start("");
    let out = ccproxy(gw.dir.path(), &["status", "--proxy"]);
    assert_eq!(out.status.code(), Some(0));
    let out = ccproxy(gw.dir.path(), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["proxy"], true);
    assert_eq!(v["metrics"]["running"], true);
}

#[test]
fn run_points_base_urls_at_the_gateway_and_propagates_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ccproxy.yaml"), "ccproxy:\n  port: 4123\n").unwrap();
    let out = ccproxy(
        dir.path(),
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo \"$ANTHROPIC_BASE_URL $OPENAI_BASE_URL $OPENAI_API_BASE\"; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        text(&out.stdout).trim(),
        "http://127.0.0.1:4123 http://127.0.0.1:4123/v1 http://127.0.0.1:4123/v1"
    );
    let out = ccproxy(dir.path(), &["run", "--", "/nonexistent/tool"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/tool"));
}

#[test]
fn logs_prints_the_tail_or_says_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        "ccproxy:\n  log_file: my.log\n",
    )
    .unwrap();
    let out = ccproxy(dir.path(), &["logs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No log file at"));
    std::fs::write(dir.path().join("my.log"), "one\ntwo\nthree\n").unwrap();
    let out = ccproxy(dir.path(), &["logs", "-n", "2"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "two\nthree\n");
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["start", "--help"],
        &["init", "--help"],
        &["status", "--help"],
        &["logs", "--help"],
        &["run", "--help"],
    ] {
        let out = Command::new(bin()).args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(text(&out.stdout).contains("Usage"), "{cmd:?}");
    }
}

#[test]
fn start_serves_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (gateway_port(), gateway_port());
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        config_yaml(port, mport, "").replace("log_file: null", "log_file: gw.log"),
    )
    .unwrap();
    let mut child = start_binary(dir.path(), port, &[]);
    let body = raw_get::health(&format!("127.0.0.1:{port}"));
    assert_eq!(body, "ccproxy says hey!");
    assert_eq!(sigterm(&mut child).code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("gw.log")).unwrap();
    assert!(
        log.contains("ccproxy starting") && log.contains("SIGTERM"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn system_trust_comes_from_ssl_cert_file_or_the_distro_bundle() {
    let ca = crate::support::tls::TestCa::new();
    let mock = crate::support::mock::MockUpstream::start_tls(
        crate::support::mock::Reply::Json {
            status: 200,
            body: serde_json::json!({"ok": true}),
        },
        &ca,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (gateway_port(), gateway_port());
    let providers = format!(
        "  providers:\n    p:\n      host: localhost:{}\n      provider: anthropic\n      auth: echo t\n",
        mock.port()
    );
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        config_yaml(port, mport, &providers),
    )
    .unwrap();
    let send = || async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/messages"))
            .header("x-api-key", "sk-ant-oat-ccproxy-p")
            .json(&serde_json::json!({"model": "m"}))
            .send()
            .await
            .unwrap()
            .status()
    };
    // The test CA as the "system" bundle: the provider needs no ca_file.
    let ca_path = ca.ca_file.display().to_string();
    let mut child = start_binary(dir.path(), port, &[("SSL_CERT_FILE", &ca_path)]);
    assert_eq!(send().await, 200);
    sigterm(&mut child);
    // The distro bundle does not know the test CA.
    let mut child = start_binary(dir.path(), port, &[]);
    assert_eq!(send().await, 502);
    sigterm(&mut child);
    assert_eq!(mock.request_count(), 1);
}

/// A blocking GET /health over a raw socket (no async runtime in this test).
mod raw_get {
    use std::io::{Read, Write};

    pub fn health(addr: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }
}

#[test]
fn start_fails_clearly_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ccproxy.yaml"),
        format!("ccproxy:\n  port: {port}\n  metrics: null\n  log_file: null\n"),
    )
    .unwrap();
    let out = ccproxy(dir.path(), &["start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    drop(taken);
}

#[test]
fn ca_creates_the_local_ca_once_and_says_how_to_trust_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = ccproxy(dir.path(), &["ca"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cert = dir.path().join("ccproxy-ca.pem");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("NODE_EXTRA_CA_CERTS={}", cert.display())),
        "{stdout}"
    );
    assert!(stdout.contains("update-ca-certificates"), "{stdout}");
    let key = dir.path().join("ccproxy-ca-key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pem = std::fs::read(&cert).unwrap();
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    // A second run (or a start) keeps the same CA.
    assert!(ccproxy(dir.path(), &["ca"]).status.success());
    assert_eq!(std::fs::read(&cert).unwrap(), pem);
}
