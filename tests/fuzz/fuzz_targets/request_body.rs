//! The request-body path on hostile bytes: the raw request (head and body, any framing) goes
//! through Pingora's HTTP/1 parser and ccproxy's body reader (size limit, body budget), then the
//! lazy JSON body (field index, fields, tree, re-serialization) and path-based format detection.
#![no_main]

use bytes::Bytes;
use ccproxy::hooks::Body;
use ccproxy::proxy::budget::BodyBudget;
use ccproxy::proxy::replay::{self, ReadBody};
use ccproxy::proxy::route;
use libfuzzer_sys::fuzz_target;
use pingora::protocols::http::ServerSession;
use tokio::io::AsyncWriteExt;

fn body_checks(raw: Bytes) {
    let mut body = Body::new(raw.clone());
    let _ = body.is_json_object();
    let _ = body.str_field("model");
    let _ = body.field::<serde_json::Value>("metadata");
    let forked = body.fork();
    assert_eq!(forked.raw(), &raw);
    if let Some(v) = body.json_mut() {
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), "x".into());
        }
    }
    if body.is_dirty() {
        let wire = body.to_wire();
        assert!(serde_json::from_slice::<serde_json::Value>(&wire).is_ok());
    } else {
        assert_eq!(body.to_wire(), raw);
    }
    let _ = forked.fork().take_json();
}

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = route::detect_format(path);
        let _ = route::path_action(path);
        let _ = route::routing_model(&Body::default(), path);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|_| std::process::abort());
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let input = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
        });
        let mut session = ServerSession::new_http1(Box::new(server));
        if matches!(session.read_request().await, Ok(true)) {
            let budget = BodyBudget::new(
                1 << 20,
                prometheus::IntGauge::new("g", "g").unwrap_or_else(|_| std::process::abort()),
                prometheus::IntCounter::new("c", "c").unwrap_or_else(|_| std::process::abort()),
            );
            let declared = replay::declared_length(&session);
            if let Some(mut permit) = budget.reserve(declared.unwrap_or(0).min(1 << 20)) {
                if let ReadBody::Complete(bytes) =
                    replay::read_body(&mut session, 64 * 1024, declared, &mut permit).await
                {
                    assert!(bytes.len() <= 64 * 1024);
                    body_checks(bytes);
                }
            }
        }
        let _ = writer.await;
    });
    body_checks(Bytes::copy_from_slice(data));
});
