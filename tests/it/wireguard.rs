//! The gateway's WireGuard listener as an external device sees it: `ccproxy wg client-config`
//! makes a device whose key the gateway accepts from a non-loopback address, an unknown key
//! gets no answer, and DNS works through the tunnel. The device is a userspace WireGuard peer
//! (`boringtun`) in the test.

use crate::support::*;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// This machine's address on its default route, if it has one.
fn non_loopback_v4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

fn key(text: &str, field: &str) -> [u8; 32] {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field} = ")))
        .unwrap_or_else(|| panic!("no {field} in {text}"));
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap()
        .try_into()
        .unwrap()
}

/// Handshake as `secret` from `from` to `endpoint`; the tunnel if the gateway answered.
fn handshake(
    secret: [u8; 32],
    server: [u8; 32],
    from: Ipv4Addr,
    endpoint: SocketAddr,
) -> Option<(Tunn, UdpSocket)> {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.connect(endpoint).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut tunn = Tunn::new(
        StaticSecret::from(secret),
        PublicKey::from(server),
        None,
        None,
        7,
        None,
    );
    let mut out = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut out, false) else {
        panic!("no handshake initiation");
    };
    sock.send(init).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = sock.recv(&mut buf).ok()?;
    let mut out2 = vec![0u8; 2048];
    match tunn.decapsulate(None, &buf[..n], &mut out2) {
        TunnResult::WriteToNetwork(keepalive) => {
            sock.send(keepalive).unwrap();
        }
        other => panic!(
            "unexpected handshake result {:?}",
            std::mem::discriminant(&other)
        ),
    }
    Some((tunn, sock))
}

/// An IPv4/UDP packet (UDP checksum 0: allowed for IPv4).
fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&src.0.octets());
    p.extend_from_slice(&dst.0.octets());
    let sum = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let ulen = (8 + payload.len()) as u16;
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&ulen.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_from_client_config_is_accepted_and_an_unknown_key_is_not() {
    let Some(local) = non_loopback_v4() else {
        println!("skipped: no non-loopback IPv4 address to act as an external device");
        return;
    };
    let gw = Gateway::start(
        "  inspector:\n    wireguard_listen: 0.0.0.0:0\n    resolve:\n      api.anthropic.com: \"127.0.0.1:9\"\n",
    );
    let dir = gw.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let run = || {
            Command::new(bin())
                .arg("--config")
                .arg(&dir)
                .args(["wg", "client-config", "--name", "phone"])
                .output()
                .unwrap()
        };
        (run(), run())
    })
    .await
    .unwrap();
    let (first, second) = out;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(
        text,
        String::from_utf8_lossy(&second.stdout),
        "the same device prints the same config"
    );
    for line in [
        "[Interface]",
        "Address = 10.77.0.2/32",
        "DNS = 10.77.0.1",
        "[Peer]",
        "AllowedIPs = 0.0.0.0/0, ::/0",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let key_file = gw.path("wireguard/peers/phone.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let endpoint: SocketAddr = text
        .lines()
        .find_map(|l| l.strip_prefix("Endpoint = "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(endpoint.ip(), std::net::IpAddr::V4(local));
    let (device, server) = (key(&text, "PrivateKey"), key(&text, "PublicKey"));

    let (unknown, accepted) = tokio::task::spawn_blocking(move || {
        let random = StaticSecret::random_from_rng(rand_core::OsRng).to_bytes();
        let unknown = handshake(random, server, local, endpoint).is_some();
        (unknown, handshake(device, server, local, endpoint))
    })
    .await
    .unwrap();
    assert!(!unknown, "a key the gateway does not know got an answer");
    let (mut tunn, sock) = accepted.expect("the device's handshake was not answered");

    // DNS through the tunnel: a name in inspector.resolve gets its stand-in address.
    let mut query = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["api", "anthropic", "com"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let packet = udp_packet(
        (Ipv4Addr::new(10, 77, 0, 2), 40000),
        (Ipv4Addr::new(10, 77, 0, 1), 53),
        &query,
    );
    let answer = tokio::task::spawn_blocking(move || {
        let mut out = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&packet, &mut out) else {
            panic!("no session");
        };
        sock.send(d).unwrap();
        let mut buf = vec![0u8; 2048];
        loop {
            let n = sock
                .recv(&mut buf)
                .expect("no DNS answer through the tunnel");
            if let TunnResult::WriteToTunnelV4(p, _) = tunn.decapsulate(None, &buf[..n], &mut out) {
                return p.to_vec();
            }
        }
    })
    .await
    .unwrap();
    // IPv4 + UDP headers, then the DNS answer ending in the A record's address.
    let dns = &answer[28..];
    assert_eq!(&dns[..2], &[0xab, 0xcd]);
    assert_eq!(&dns[dns.len() - 4..], &[198, 18, 0, 1]);
}

#[test]
fn client_config_without_a_known_port_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(dir.path())
        .args(["wg", "client-config", "--name", "vm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("start the gateway first") && err.contains("wireguard_listen"),
        "{err}"
    );
    let bad = Command::new(bin())
        .arg("--config")
        .arg(dir.path())
        .args(["wg", "client-config", "--name", "../x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--name must be"));
}

#[test]
fn status_shows_the_running_wireguard_listener() {
    let gw = Gateway::start("");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gw.path("wireguard.json")).unwrap()).unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(gw.dir.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wireguard"]["running"], true);
    assert_eq!(v["wireguard"]["endpoint"], state["endpoint"]);
    assert_eq!(v["wireguard"]["public_key"], state["public_key"]);
    let text = Command::new(bin())
        .arg("--config")
        .arg(gw.dir.path())
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "jail     running  udp://{}",
            state["endpoint"].as_str().unwrap()
        )),
        "{text}"
    );
}
