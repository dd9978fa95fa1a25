//! The jail's TUN device: opened through `/dev/net/tun` inside the jail's network namespace
//! (`TUNSETIFF`, no packet-info header), non-blocking, for the WireGuard peer to read and write
//! IP packets. Addresses and routes are set with netlink ([`super::keeper`]).
//!
//! This is the crate's one `ioctl`: no well-kept crate creates a TUN device without also
//! configuring it through ioctls of its own, which the design leaves to rtnetlink.

use std::os::fd::{AsRawFd, OwnedFd};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// The `struct ifreq` prefix `TUNSETIFF` reads: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Create the TUN device `name` in the current network namespace and return its queue.
pub fn create(name: &str) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "/dev/net/tun does not exist (load the tun module: `modprobe tun`)".to_owned()
            }
            std::io::ErrorKind::PermissionDenied => format!(
                "/dev/net/tun is not accessible to this user ({e}); most distributions ship it \
                 as mode 0666 (`sudo chmod 0666 /dev/net/tun`)"
            ),
            _ => format!("/dev/net/tun: {e}"),
        })?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name {name:?} is too long"));
    }
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF reads a `struct ifreq` (name, then flags) from the pointer, which is
    // valid for the whole call and at least as large as the kernel's `struct ifreq` (40 bytes).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(format!(
            "cannot create the TUN device {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(OwnedFd::from(file))
}
