//! What both benchmark binaries (`gateway`, `intercept`) need to run ccproxy: the binary under
//! test, free ports, and waiting for a listener.

use std::time::{Duration, Instant};

/// The ccproxy binary under test: `CCPROXY_BENCH_BIN`, else this build's.
pub fn ccproxy_bin() -> String {
    std::env::var("CCPROXY_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ccproxy").to_owned())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether something accepts on `127.0.0.1:port` within `limit`.
pub fn wait_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
