//! The jail keeper (`ccproxy __jail-keeper`, started by `ccproxy run --inspect`): builds the
//! jail and holds it for as long as the command runs.
//!
//! In order, while still single-threaded (a multithreaded process cannot `unshare` a user
//! namespace): connect the control channel and a UDP socket to the gateway's WireGuard
//! listener (both stay usable from inside); enter new user, network and mount namespaces,
//! mapping the user to itself; give the jail its own `/etc/resolv.conf` (pointing at the
//! gateway's DNS) without writing anything to disk; create the TUN device and set `lo`, the
//! TUN's addresses and default routes through netlink. Then, with threads: run the WireGuard
//! peer between the TUN and the UDP socket, start `ccproxy __jail-init`, which puts the
//! command under a pid 1 of its own in a new pid namespace, tell the parent which TCP ports the jail listens on and carry
//! the connections the parent accepts for them, and exit with the command's status.
//!
//! The keeper dies with its parent (`PR_SET_PDEATHSIG`), init with the keeper, and every
//! process of the jail with init, so no exit path leaves anything behind.

use super::control::{Channel, Message, Setup};
use crate::wireguard::{keys, GATEWAY_V4, JAIL_MTU, PEER_V4, PEER_V6};
use boringtun::noise::{Tunn, TunnResult};
use nix::sched::CloneFlags;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The TUN device's name inside the jail.
const TUN_NAME: &str = "ccproxy0";
/// How long the gateway may take to answer the WireGuard handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the jail's listening ports are looked at.
const PORT_SCAN: Duration = Duration::from_millis(300);
/// Exit status when the jail cannot be built (as `env` and `timeout` use it).
pub const SETUP_FAILED: u8 = 125;

pub fn run(control: &str, command: &[String]) -> ExitCode {
    // Diagnostics on stderr only when asked for (`RUST_LOG=ccproxy=debug`).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    match build_and_run(control, command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ccproxy run --inspect: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn build_and_run(control: &str, command: &[String]) -> Result<u8, String> {
    let channel = Channel::connect(control)?;
    let setup: Setup = match channel.recv() {
        Ok(Some((s, _))) => s,
        _ => return Err("no setup from `ccproxy run`".to_owned()),
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("prctl: {e}"))?;
    if nix::unistd::getppid().as_raw() as u32 != setup.parent {
        return Err("`ccproxy run` has exited".to_owned());
    }
    let secret = keys::Secret::from_base64(&setup.secret).ok_or("bad jail key")?;
    let server = keys::key_bytes(&setup.server_public).ok_or("bad gateway key")?;
    let udp = gateway_socket(setup.endpoint)?;

    enter_namespaces(setup.uid, setup.gid)?;
    private_resolv_conf();
    let tun = super::tun::create(TUN_NAME)?;
    configure_network()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(hold(channel, setup, secret, server, udp, tun, command))
}

/// A UDP socket connected to the gateway's listener, made in the host's network namespace.
fn gateway_socket(endpoint: SocketAddr) -> Result<std::net::UdpSocket, String> {
    let bind: SocketAddr = match endpoint.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(ip) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let udp = std::net::UdpSocket::bind(bind).map_err(|e| format!("UDP socket: {e}"))?;
    udp.connect(endpoint)
        .map_err(|e| format!("cannot reach the gateway's WireGuard listener {endpoint}: {e}"))?;
    crate::wireguard::large_buffers(&udp);
    Ok(udp)
}

/// New user, network and mount namespaces; the user and group map to themselves.
fn enter_namespaces(uid: u32, gid: u32) -> Result<(), String> {
    // Not the pid namespace: a process whose children go to another pid namespace cannot
    // start threads (EINVAL), and the keeper needs them. Init enters it ([`super::init`]).
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
    nix::sched::unshare(flags).map_err(|e| {
        format!(
            "cannot create user and network namespaces: {e}. User namespaces may be disabled \
             for unprivileged users (sysctl kernel.unprivileged_userns_clone=1, \
             user.max_user_namespaces > 0; on Ubuntu 23.10+ also \
             kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| format!("/proc/self/{file}: {e}"))
    };
    write("setgroups", "deny".to_owned())?;
    write("uid_map", format!("{uid} {uid} 1"))?;
    write("gid_map", format!("{gid} {gid} 1"))
}

/// Point the jail's `/etc/resolv.conf` at the gateway's DNS. The file lives on a tmpfs that
/// exists only in this mount namespace (mounted over `/tmp` for a moment, then detached), so
/// nothing is written to the host and nothing is left when the jail ends. A failure is a
/// warning: names then resolve as the host's file says.
fn private_resolv_conf() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let result = (|| -> Result<(), String> {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make / private: {e}"))?;
        mount(
            Some("ccproxy"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=64k,mode=0755"),
        )
        .map_err(|e| format!("tmpfs: {e}"))?;
        let staged = "/tmp/resolv.conf";
        let text =
            format!("# ccproxy run --inspect: DNS through the gateway\nnameserver {GATEWAY_V4}\n");
        let bound = std::fs::write(staged, text)
            .map_err(|e| format!("{staged}: {e}"))
            .and_then(|()| {
                mount(
                    Some(staged),
                    "/etc/resolv.conf",
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind /etc/resolv.conf: {e}"))
            });
        let _ = umount2("/tmp", MntFlags::MNT_DETACH);
        bound
    })();
    if let Err(e) = result {
        eprintln!(
            "ccproxy run --inspect: warning: the jail uses the host's /etc/resolv.conf ({e})"
        );
    }
}

/// `lo` up; the TUN up with the jail's addresses and the default routes through it.
fn configure_network() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        use futures::TryStreamExt;
        use rtnetlink::{LinkUnspec, RouteMessageBuilder};
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
        tokio::spawn(connection);
        let index = |name: &'static str| {
            let handle = handle.clone();
            async move {
                handle
                    .link()
                    .get()
                    .match_name(name.to_owned())
                    .execute()
                    .try_next()
                    .await
                    .ok()
                    .flatten()
                    .map(|l| l.header.index)
                    .ok_or_else(|| format!("no interface {name} in the jail"))
            }
        };
        let lo = index("lo").await?;
        let tun = index(TUN_NAME).await?;
        let err = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(err("lo up"))?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(tun)
                    .mtu(JAIL_MTU as u32)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(err("TUN up"))?;
        handle
            .address()
            .add(tun, IpAddr::V4(PEER_V4), 32)
            .execute()
            .await
            .map_err(err("TUN address"))?;
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                    .output_interface(tun)
                    .build(),
            )
            .execute()
            .await
            .map_err(err("default route"))?;
        // IPv6 is optional (it may be disabled in the kernel).
        if handle
            .address()
            .add(tun, IpAddr::V6(PEER_V6), 128)
            .execute()
            .await
            .is_ok()
        {
            let _ = handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv6Addr>::new()
                        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
                        .output_interface(tun)
                        .build(),
                )
                .execute()
                .await;
        }
        Ok(())
    })
}

/// The WireGuard peer's shared parts. Its data path runs on two plain threads (TUN → gateway,
/// gateway → TUN) with blocking calls: one packet at a time, no reactor in between.
struct Wg {
    tunn: Mutex<Tunn>,
    udp: std::net::UdpSocket,
    tun: OwnedFd,
    /// Set once the handshake with the gateway completed.
    up: tokio::sync::watch::Sender<bool>,
}

impl Wg {
    fn send(&self, datagram: &[u8]) {
        if let Err(e) = self.udp.send(datagram) {
            tracing::debug!(error = %e, "send to the gateway failed");
        }
    }
}

async fn hold(
    channel: Channel,
    setup: Setup,
    secret: keys::Secret,
    server: [u8; 32],
    udp: std::net::UdpSocket,
    tun: OwnedFd,
    command: &[String],
) -> Result<u8, String> {
    // A keepalive every 25 s: the gateway forgets peers silent for 3 minutes, and a jail whose
    // program idles that long must keep its connections.
    let tunn = Tunn::new(
        secret.0.clone(),
        boringtun::x25519::PublicKey::from(server),
        None,
        Some(25),
        0,
        None,
    );
    let (up, mut up_rx) = tokio::sync::watch::channel(false);
    udp.set_nonblocking(false).map_err(|e| e.to_string())?;
    let wg = Arc::new(Wg {
        tunn: Mutex::new(tunn),
        udp,
        tun,
        up,
    });
    for (name, run) in [
        ("tun-to-gateway", tun_to_gateway as fn(Arc<Wg>)),
        ("gateway-to-tun", gateway_to_tun),
    ] {
        let wg = wg.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(wg))
            .map_err(|e| format!("thread: {e}"))?;
    }
    tokio::spawn(wg_timers(wg.clone()));
    let mut out = vec![0u8; 256];
    let first = match wg
        .tunn
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .format_handshake_initiation(&mut out, false)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => Vec::new(),
    };
    wg.send(&first);
    // (The `Ref` that `wait_for` returns holds the channel's lock: drop it at once.)
    let handshake_done = matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, up_rx.wait_for(|up| *up)).await,
        Ok(Ok(_))
    );
    if !handshake_done {
        return Err(format!(
            "the gateway's WireGuard listener at {} did not answer (is `ccproxy start` running \
             with this config?)",
            setup.endpoint
        ));
    }

    keep_caps_for_init()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find ccproxy itself: {e}"))?;
    let mut init = std::process::Command::new(exe);
    init.arg("__jail-init").arg("--").args(command);
    for (k, v) in &setup.env {
        init.env(k, v);
    }
    let mut child = init
        .spawn()
        .map_err(|e| format!("cannot start the jail's init: {e}"))?;
    let init_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let channel = Arc::new(channel);
    let _ = channel.send(&Message::Ready, None);
    tokio::spawn(watch_ports(channel.clone()));
    tokio::spawn(forwarded_connections(channel.clone()));
    tokio::spawn(super::forward_signals(init_pid));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(super::exit_code(status))
}

/// Let init keep the two capabilities it needs across `exec`: `CAP_SYS_ADMIN` to enter a pid
/// namespace and `CAP_SETPCAP` to then drop every capability before the command runs. A user
/// other than root loses all capabilities at `exec` otherwise. Ambient capabilities belong to
/// the thread that spawns, which is this one (the runtime's `block_on` thread).
fn keep_caps_for_init() -> Result<(), String> {
    use caps::{CapSet, Capability};
    for cap in [Capability::CAP_SYS_ADMIN, Capability::CAP_SETPCAP] {
        caps::raise(None, CapSet::Inheritable, cap)
            .and_then(|()| caps::raise(None, CapSet::Ambient, cap))
            .map_err(|e| format!("cannot pass {cap} to the jail's init: {e}"))?;
    }
    Ok(())
}

/// Packets the jail sends: encrypt, to the gateway.
fn tun_to_gateway(wg: Arc<Wg>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut packet = vec![0u8; JAIL_MTU + 64];
    let mut out = vec![0u8; JAIL_MTU + 256];
    loop {
        let n = match nix::unistd::read(wg.tun.as_fd(), &mut packet) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(wg.tun.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fds, PollTimeout::NONE).is_err() {
                    return;
                }
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "TUN read failed; the tunnel stops");
                return;
            }
        };
        let len = match wg
            .tunn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .encapsulate(&packet[..n], &mut out)
        {
            TunnResult::WriteToNetwork(d) => d.len(),
            _ => continue,
        };
        wg.send(&out[..len]);
    }
}

/// Datagrams from the gateway: decrypt, into the jail.
fn gateway_to_tun(wg: Arc<Wg>) {
    let mut datagram = vec![0u8; 65_536];
    let mut out = vec![0u8; 65_536];
    let mut up = false;
    loop {
        let n = match wg.udp.recv(&mut datagram) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // An ICMP error from an earlier send (the gateway restarting): keep listening.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::debug!(error = %e, "receive from the gateway failed; the tunnel stops");
                return;
            }
        };
        let mut replies: Vec<Vec<u8>> = Vec::new();
        {
            let mut tunn = wg.tunn.lock().unwrap_or_else(|p| p.into_inner());
            let mut result = tunn.decapsulate(None, &datagram[..n], &mut out);
            loop {
                match result {
                    TunnResult::WriteToNetwork(d) => {
                        replies.push(d.to_vec());
                        result = tunn.decapsulate(None, &[], &mut out);
                    }
                    TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                        // A full TUN queue drops the packet; TCP sends it again.
                        let _ = nix::unistd::write(&wg.tun, p);
                        break;
                    }
                    TunnResult::Done => break,
                    TunnResult::Err(e) => {
                        tracing::debug!(error = ?e, "datagram from the gateway dropped");
                        break;
                    }
                }
            }
            if !up && tunn.stats().0.is_some() {
                up = true;
                wg.up.send_replace(true);
            }
        }
        for r in replies {
            wg.send(&r);
        }
    }
}

async fn wg_timers(wg: Arc<Wg>) {
    let mut out = vec![0u8; 256];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let send = match wg
            .tunn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update_timers(&mut out)
        {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        };
        if let Some(d) = send {
            wg.send(&d);
        }
    }
}

/// Tell the parent about TCP ports the jail starts or stops listening on.
async fn watch_ports(channel: Arc<Channel>) {
    let mut known = BTreeSet::new();
    let mut tick = tokio::time::interval(PORT_SCAN);
    loop {
        tick.tick().await;
        let now = super::ports::listening();
        for p in now.difference(&known) {
            let _ = channel.send(&Message::Listen(*p), None);
        }
        for p in known.difference(&now) {
            let _ = channel.send(&Message::Unlisten(*p), None);
        }
        known = now;
    }
}

/// Connections the parent accepted on the host for a jail port: connect them inside.
async fn forwarded_connections(channel: Arc<Channel>) {
    let Ok(incoming) = channel.incoming() else {
        return;
    };
    // Ends when the parent has gone (it would have killed us) or sent garbage.
    while let Some((msg, fd)) = incoming.next::<Message>().await {
        if let (Message::Connection(port), Some(fd)) = (msg, fd) {
            tokio::spawn(super::ports::connect_inside(port, fd));
        }
    }
}
