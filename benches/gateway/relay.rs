//! A plain TCP byte relay: the cost of the extra socket hops a proxy adds, without any HTTP
//! work. S1 subtracts it from ccproxy's added latency to check `ccproxy_overhead_seconds`.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// Relay every connection on a fresh `127.0.0.1` port to `target`; returns the relay's address.
pub fn spawn(target: SocketAddr) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay bind");
    let addr = std_listener.local_addr().expect("relay addr");
    std_listener.set_nonblocking(true).ok();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("relay runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("relay listener");
            while let Ok((mut client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
    });
    addr
}
