//! The benchmark's mock LLM upstream: OpenAI chat, Anthropic Messages and Gemini
//! `generateContent`, chosen by path, in three modes chosen by the `x-mock-mode` request header:
//! `instant` (default), `delay` (answers after 20 ms) and `sse` (64 frames, 20 ms apart).
//!
//! Each path validates that the body is in its own format (Anthropic needs `messages` and
//! `max_tokens`, OpenAI `messages`, Gemini `contents`) and answers 400 otherwise, so an
//! untranslated pass-through can never pass for a translation.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

pub const FRAME_COUNT: usize = 64;
pub const FRAME_INTERVAL: Duration = Duration::from_millis(20);
pub const DELAY: Duration = Duration::from_millis(20);

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
    Gemini,
}

fn api_of(path: &str) -> Option<Api> {
    let path = path.split('?').next().unwrap_or(path);
    if path.ends_with("/chat/completions") {
        Some(Api::OpenAi)
    } else if path.ends_with("/v1/messages") {
        Some(Api::Anthropic)
    } else if path.contains("/models/") && path.contains(":") {
        Some(Api::Gemini)
    } else {
        None
    }
}

fn valid(api: Api, body: &Value) -> bool {
    match api {
        Api::OpenAi => body.get("messages").is_some_and(Value::is_array),
        Api::Anthropic => {
            body.get("messages").is_some_and(Value::is_array) && body.get("max_tokens").is_some()
        }
        Api::Gemini => body.get("contents").is_some_and(Value::is_array),
    }
}

fn full(status: u16, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn reply(api: Api) -> Value {
    match api {
        Api::OpenAi => {
            json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})
        }
        Api::Anthropic => {
            json!({"id": "msg_bench", "type": "message", "role": "assistant", "model": "bench",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 1}})
        }
        Api::Gemini => {
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1}})
        }
    }
}

fn frame(api: Api, i: usize) -> String {
    match api {
        Api::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
        ),
        Api::Anthropic => format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t{i}\"}}}}\n\n"
        ),
        Api::Gemini => format!(
            "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\"t{i}\"}}]}}}}]}}\n\n"
        ),
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let mode = req
        .headers()
        .get("x-mock-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("instant")
        .to_owned();
    if req.method() == hyper::Method::GET {
        return Ok(full(200, "text/plain", "mock up"));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(full(400, "text/plain", "body read failed")),
    };
    let Some(api) = api_of(&path) else {
        return Ok(full(404, "application/json", r#"{"error":"unknown path"}"#));
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !valid(api, &parsed) {
        return Ok(full(
            400,
            "application/json",
            r#"{"error":{"message":"body is not in this endpoint's format"}}"#,
        ));
    }
    match mode.as_str() {
        "sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FRAME_INTERVAL);
                for i in 0..FRAME_COUNT {
                    tick.tick().await;
                    if tx
                        .send(Ok(Frame::data(Bytes::from(frame(api, i)))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let stream = tokio_stream(rx);
            let resp = Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()));
            Ok(resp)
        }
        "delay" => {
            tokio::time::sleep(DELAY).await;
            Ok(full(200, "application/json", reply(api).to_string()))
        }
        _ => Ok(full(200, "application/json", reply(api).to_string())),
    }
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Serve on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, hyper::service::service_fn(handle))
                    .await;
        });
    }
}

/// Serve TLS on `listener` (HTTP/1.1 or h2 by ALPN) until the runtime stops.
pub async fn serve_tls(listener: TcpListener, acceptor: std::sync::Arc<boring::ssl::SslAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = tokio_boring::accept(&acceptor, stream).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, hyper::service::service_fn(handle))
                    .await;
        });
    }
}

/// Start a TLS mock on `addr` (e.g. `127.0.0.1:443`) on its own runtime thread.
pub fn spawn_tls(addr: &str, acceptor: boring::ssl::SslAcceptor) -> Result<SocketAddr, String> {
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let bound = std_listener.local_addr().map_err(|e| e.to_string())?;
    std_listener.set_nonblocking(true).ok();
    let acceptor = std::sync::Arc::new(acceptor);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("mock runtime: {e}"));
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap_or_else(|e| panic!("{e}"));
            serve_tls(listener, acceptor).await;
        });
    });
    Ok(bound)
}

/// Start the mock on its own runtime thread (pinned by the caller if wanted); returns its address.
pub fn spawn(threads: usize) -> SocketAddr {
    let std_listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("mock bind: {e}"),
    };
    let addr = std_listener
        .local_addr()
        .unwrap_or_else(|e| panic!("mock addr: {e}"));
    std_listener.set_nonblocking(true).ok();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("mock runtime: {e}"));
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap_or_else(|e| panic!("{e}"));
            serve(listener).await;
        });
    });
    addr
}
