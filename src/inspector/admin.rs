//! The admin listener (`inspector.listen`): the JSON API over the flow store, the live feed
//! (SSE), HAR export and the embedded web viewer.
//!
//! Every `/api/` route needs the bearer token (`Authorization: Bearer …`, or `?token=…` for
//! `EventSource` and links); without it the answer is `401` JSON. The viewer page at `/` holds
//! no data (it asks for the token and then uses the API), so it is served without one. Store
//! calls run on Tokio's blocking pool; the live feed is a broadcast of the writer's changes.

use super::har;
use super::model::{Event, PARTS};
use super::store::{Lookup, Query, Store};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The viewer, embedded in the binary.
const VIEWER: &str = include_str!("web/index.html");
/// Default and largest page of a flow list.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Most flows in one HAR.
const MAX_HAR: usize = 1000;
/// A comment line on the live feed this often, so a gone client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Largest request body the admin API reads (it takes none today).
const MAX_BODY: usize = 64 * 1024;

/// The admin HTTP app.
pub struct AdminApp {
    store: Arc<Store>,
    token: String,
}

impl AdminApp {
    pub fn new(store: Arc<Store>, token: String) -> Self {
        Self { store, token }
    }
}

/// An answer of the admin API.
struct Reply {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            content_type: "application/json".to_owned(),
            body: Bytes::from(v.to_string()),
        }
    }

    fn error(status: u16, kind: &str, message: impl Into<String>) -> Self {
        Self::json(
            status,
            &json!({"error": {"type": kind, "message": message.into()}}),
        )
    }
}

/// `a=1&b=x%20y` into pairs, percent- and plus-decoded.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Constant-time comparison of the presented token with the expected one.
fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession, query: &[(String, String)]) -> bool {
        let header = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let given = header.or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.as_str())
        });
        given.is_some_and(|g| token_matches(g, &self.token))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Reply> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Reply::error(500, "store_error", format!("flow store: {e}"))),
            Err(e) => Err(Reply::error(500, "store_error", format!("flow store: {e}"))),
        }
    }

    /// The full id `id` names, or the 404/409 answer.
    async fn resolve(&self, id: &str) -> Result<String, Reply> {
        let wanted = id.to_owned();
        match self.blocking(move |s| s.resolve(&wanted)).await? {
            Lookup::Found(full) => Ok(full),
            Lookup::NotFound => Err(Reply::error(
                404,
                "not_found",
                format!("no flow with id {id}"),
            )),
            Lookup::Ambiguous => Err(Reply::error(
                409,
                "ambiguous_id",
                format!("id prefix {id} matches more than one flow; give more of it"),
            )),
        }
    }

    async fn route(&self, method: &str, path: &str, query: &[(String, String)]) -> Reply {
        let segments: Vec<&str> = path
            .trim_start_matches("/api/")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let result = match (method, segments.as_slice()) {
            ("GET", ["status"]) => self.status().await,
            ("GET", ["flows"]) => self.list(query).await,
            ("DELETE", ["flows"]) | ("POST", ["clear"]) => self.clear().await,
            ("GET", ["flows", id]) => self.get(id).await,
            ("DELETE", ["flows", id]) => self.delete(id).await,
            ("GET", ["flows", id, part, "body"]) => self.body(id, part).await,
            ("GET", ["har"]) => self.har(query).await,
            (_, ["status" | "flows" | "clear" | "har" | "events"])
            | (_, ["flows", _])
            | (_, ["flows", _, _, "body"]) => Err(Reply::error(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(Reply::error(
                404,
                "not_found",
                format!("no admin route {path}"),
            )),
        };
        result.unwrap_or_else(|e| e)
    }

    async fn status(&self) -> Result<Reply, Reply> {
        let n = self.blocking(Store::count).await?;
        Ok(Reply::json(
            200,
            &json!({
                "version": env!("CARGO_PKG_VERSION"),
                "flows": n,
                "store": self.store.path.as_ref().map(|p| p.display().to_string()),
                "live_clients": self.store.live_clients(),
            }),
        ))
    }

    async fn list(&self, query: &[(String, String)]) -> Result<Reply, Reply> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (k, v) in query {
            let bad = |what: &str| {
                Reply::error(
                    400,
                    "bad_request",
                    format!("query parameter {k}={v:?}: {what}"),
                )
            };
            let v = v.trim();
            match k.as_str() {
                "provider" if !v.is_empty() => q.provider = Some(v.to_owned()),
                "model" if !v.is_empty() => q.model = Some(v.to_owned()),
                "session" if !v.is_empty() => q.session = Some(v.to_owned()),
                "q" if !v.is_empty() => q.text = Some(v.to_owned()),
                "status" if !v.is_empty() => {
                    q.status = Some(v.parse().map_err(|_| bad("not a status code"))?)
                }
                "since" if !v.is_empty() => {
                    q.since_ms = Some(v.parse().map_err(|_| bad("not epoch milliseconds"))?)
                }
                "until" if !v.is_empty() => {
                    q.until_ms = Some(v.parse().map_err(|_| bad("not epoch milliseconds"))?)
                }
                "limit" if !v.is_empty() => {
                    let n: usize = v.parse().map_err(|_| bad("not a number"))?;
                    q.limit = n.clamp(1, MAX_LIMIT);
                }
                "offset" if !v.is_empty() => {
                    q.offset = v.parse().map_err(|_| bad("not a number"))?
                }
                _ => {}
            }
        }
        let (flows, total) = self.blocking(move |s| s.list(&q)).await?;
        Ok(Reply::json(200, &json!({"flows": flows, "total": total})))
    }

    async fn get(&self, id: &str) -> Result<Reply, Reply> {
        let full = self.resolve(id).await?;
        match self.blocking(move |s| s.get(&full)).await? {
            Lookup::Found(flow) => Ok(Reply::json(200, &json!(flow))),
            _ => Err(Reply::error(
                404,
                "not_found",
                format!("no flow with id {id}"),
            )),
        }
    }

    async fn body(&self, id: &str, part: &str) -> Result<Reply, Reply> {
        if !PARTS.contains(&part) {
            return Err(Reply::error(
                404,
                "not_found",
                format!("no body part {part} (use one of {})", PARTS.join(", ")),
            ));
        }
        let full = self.resolve(id).await?;
        let (p, f) = (part.to_owned(), full.clone());
        let bytes = self.blocking(move |s| s.body(&f, &p)).await?;
        let (p, f) = (part.to_owned(), full);
        let flow = self.blocking(move |s| s.get(&f)).await?;
        let ctype = match &flow {
            Lookup::Found(flow) => flow
                .message(&p)
                .and_then(|m| m.body.as_ref())
                .and_then(|b| b.content_type.clone()),
            _ => None,
        };
        match bytes {
            Some(b) => Ok(Reply {
                status: 200,
                content_type: ctype.unwrap_or_else(|| "application/octet-stream".to_owned()),
                body: Bytes::from(b),
            }),
            None => Err(Reply::error(
                404,
                "not_found",
                format!("flow {id} has no {part} body"),
            )),
        }
    }

    async fn delete(&self, id: &str) -> Result<Reply, Reply> {
        let full = self.resolve(id).await?;
        let n = self.blocking(move |s| s.delete(&full)).await?;
        Ok(Reply::json(200, &json!({"deleted": n})))
    }

    async fn clear(&self) -> Result<Reply, Reply> {
        let n = self.blocking(Store::clear).await?;
        Ok(Reply::json(200, &json!({"deleted": n})))
    }

    async fn har(&self, query: &[(String, String)]) -> Result<Reply, Reply> {
        let ids: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "ids" || k == "id")
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect();
        let mut full = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            // Every flow, oldest first.
            let q = Query {
                limit: MAX_HAR,
                ..Query::default()
            };
            let (mut flows, _) = self.blocking(move |s| s.list(&q)).await?;
            flows.reverse();
            full.extend(flows.into_iter().map(|f| f.id));
        } else {
            if ids.len() > MAX_HAR {
                return Err(Reply::error(
                    400,
                    "bad_request",
                    format!("at most {MAX_HAR} flows per HAR"),
                ));
            }
            for id in &ids {
                full.push(self.resolve(id).await?);
            }
        }
        let flows = self
            .blocking(move |s| {
                let mut out = Vec::with_capacity(full.len());
                for id in full {
                    if let Lookup::Found(flow) = s.get(&id)? {
                        let mut bodies = Vec::new();
                        for part in PARTS {
                            if let Some(b) = s.body(&id, part)? {
                                bodies.push((part.to_owned(), b));
                            }
                        }
                        out.push(har::FlowWithBodies { flow, bodies });
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(Reply::json(200, &har::document(&flows)))
    }

    /// The live feed: one SSE event per store change until the client goes or the server
    /// stops.
    async fn events(&self, session: &mut ServerSession, shutdown: &ShutdownWatch) {
        let mut rx = self.store.subscribe();
        let mut head = match ResponseHeader::build(200, Some(4)) {
            Ok(h) => h,
            Err(_) => return,
        };
        let _ = head.insert_header(http::header::CONTENT_TYPE, "text/event-stream");
        let _ = head.insert_header(http::header::CACHE_CONTROL, "no-cache");
        let _ = head.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        session.set_keepalive(None);
        if session.write_response_header(Box::new(head)).await.is_err() {
            return;
        }
        if session
            .write_response_body(Bytes::from_static(b": connected\n\n"), false)
            .await
            .is_err()
        {
            return;
        }
        let mut shutdown = shutdown.clone();
        loop {
            let chunk = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => frame(&ev),
                    // A slow reader missed events: tell it to reload.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        "event: lagged\ndata: {}\n\n".to_owned()
                    }
                    Err(_) => break,
                },
                _ = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_owned(),
                _ = shutdown.changed() => break,
            };
            if session
                .write_response_body(Bytes::from(chunk), false)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = session.write_response_body(Bytes::new(), true).await;
    }
}

fn frame(ev: &Event) -> String {
    format!("event: {}\ndata: {}\n\n", ev.name(), ev.data())
}

async fn write(session: &mut ServerSession, reply: Reply, head_only: bool) -> bool {
    let Ok(mut head) = ResponseHeader::build(reply.status, Some(3)) else {
        return false;
    };
    let ok = head
        .insert_header(http::header::CONTENT_TYPE, reply.content_type.as_str())
        .and_then(|()| head.insert_header(http::header::CONTENT_LENGTH, reply.body.len()))
        .and_then(|()| head.insert_header(http::header::CACHE_CONTROL, "no-store"))
        .is_ok();
    if !ok || session.write_response_header(Box::new(head)).await.is_err() {
        return false;
    }
    if head_only || reply.body.is_empty() {
        return session.finish_body().await.is_ok();
    }
    session.write_response_body(reply.body, true).await.is_ok()
}

#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            _ => return None,
        }
        // Drain a (small) request body so the connection stays usable; the API takes none.
        let mut seen = 0usize;
        loop {
            match session.read_request_body().await {
                Ok(Some(b)) => {
                    seen += b.len();
                    if seen > MAX_BODY {
                        let reply = Reply::error(
                            413,
                            "body_too_large",
                            "the admin API takes no request body",
                        );
                        session.set_keepalive(None);
                        write(&mut session, reply, false).await;
                        return None;
                    }
                }
                Ok(None) => break,
                Err(_) => return None,
            }
        }
        let req = session.req_header();
        let method = req.method.as_str().to_owned();
        let path = req.uri.path().to_owned();
        let query = query_pairs(req.uri.query().unwrap_or(""));
        let head_only = method == "HEAD";
        let reply = if path == "/" || path == "/index.html" {
            Reply {
                status: 200,
                content_type: "text/html; charset=utf-8".to_owned(),
                body: Bytes::from_static(VIEWER.as_bytes()),
            }
        } else if !path.starts_with("/api/") {
            Reply::error(
                404,
                "not_found",
                format!("no admin route {path} (the API is under /api/)"),
            )
        } else if !self.authorized(&session, &query) {
            Reply::error(
                401,
                "unauthorized",
                "missing or wrong admin token: send Authorization: Bearer <token> (see inspector.token; by default <config dir>/inspector.token)",
            )
        } else if method == "GET" && path.trim_end_matches('/') == "/api/events" {
            self.events(&mut session, shutdown).await;
            return None;
        } else {
            let m = if head_only { "GET" } else { method.as_str() };
            self.route(m, &path, &query).await
        };
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(60));
        }
        if !write(&mut session, reply, head_only).await {
            return None;
        }
        let settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(s)) => Some(ReusedHttpStream::from_reusable_stream(s, settings)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs("q=a%20b+c&ids=x,y&bad=%zz&end=%4"),
            vec![
                ("q".to_owned(), "a b c".to_owned()),
                ("ids".to_owned(), "x,y".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
                ("end".to_owned(), "%4".to_owned()),
            ]
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
    }
}
