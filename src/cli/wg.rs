//! `ccproxy wg client-config [--name N]`: a WireGuard client config for an external device (a
//! phone, a VM) that routes all its traffic through the gateway's inspector. The device's key
//! is kept in `<config dir>/wireguard/peers/<name>.key` (0600), so the same config prints again
//! and the gateway accepts the device.

use crate::config::ConfigLocation;
use crate::wireguard::{keys, DEVICE_MTU, GATEWAY_V4, PEER_V4, PEER_V6};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

pub fn client_config(location: ConfigLocation, name: &str) -> ExitCode {
    let Some(config) = super::load_config(location) else {
        return ExitCode::FAILURE;
    };
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        eprintln!("ccproxy wg: --name must be 1-32 letters, digits, '-' or '_' (got {name:?})");
        return ExitCode::FAILURE;
    }
    let dir = &config.location.dir;
    let keys = keys::Secret::load_or_create(&keys::server_key_path(dir)).and_then(|server| {
        keys::Secret::load_or_create(&keys::peers_dir(dir).join(format!("{name}.key")))
            .map(|device| (server, device))
    });
    let (server, device) = match keys {
        Ok(k) => k,
        Err(e) => {
            eprintln!("ccproxy wg: {e}");
            return ExitCode::FAILURE;
        }
    };
    let configured = config
        .inspector
        .wireguard_listen
        .as_deref()
        .and_then(|l| l.parse::<SocketAddr>().ok());
    let endpoint = match keys::State::read_live(dir) {
        Ok(state) => state.endpoint,
        Err(_) => match configured {
            Some(a) if a.port() != 0 => a,
            _ => {
                eprintln!(
                    "ccproxy wg: the WireGuard listener's port is chosen at start; start the \
                     gateway first, or set inspector.wireguard_listen to a fixed address \
                     (e.g. 0.0.0.0:51820)"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let shown = match endpoint.ip() {
        ip if ip.is_loopback() => {
            eprintln!(
                "note: the WireGuard listener is bound to {endpoint}, which other devices cannot \
                 reach; set inspector.wireguard_listen to a reachable address (e.g. \
                 0.0.0.0:51820) and restart the gateway"
            );
            endpoint
        }
        ip if ip.is_unspecified() => SocketAddr::new(this_host_address(ip), endpoint.port()),
        _ => endpoint,
    };
    print!(
        "# ccproxy: device {name}. Import into a WireGuard app; trust the CA shown by \
         `ccproxy ca` on the device to see its HTTPS traffic.\n\
         [Interface]\n\
         PrivateKey = {}\n\
         Address = {PEER_V4}/32, {PEER_V6}/128\n\
         DNS = {GATEWAY_V4}\n\
         MTU = {DEVICE_MTU}\n\
         \n\
         [Peer]\n\
         PublicKey = {}\n\
         Endpoint = {shown}\n\
         AllowedIPs = 0.0.0.0/0, ::/0\n\
         PersistentKeepalive = 25\n",
        device.to_base64(),
        keys::encode(&server.public()),
    );
    ExitCode::SUCCESS
}

/// This machine's address on its default route (no packet is sent: a UDP `connect` only
/// picks the source address).
fn this_host_address(family: IpAddr) -> IpAddr {
    let (bind, probe): (SocketAddr, SocketAddr) = if family.is_ipv4() {
        (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 9).into())
    } else {
        (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            ("2001:db8::1".parse::<IpAddr>().unwrap_or(family), 9).into(),
        )
    };
    std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(probe).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(family)
}
