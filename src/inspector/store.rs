//! The flow store: an embedded SQLite database (a file in WAL mode, or in memory), filled by
//! one writer thread off the request path, read by the admin API, trimmed by retention.
//!
//! Captures arrive through a bounded channel ([`Writer::send`] never blocks; a full channel
//! drops the flow and counts it). The writer batches them into one transaction, turns each
//! into a [`Flow`] plus its bodies ([`super::enrich`]), and announces every change on the live
//! feed ([`Store::subscribe`]). The database is opened with an exclusive lock, so a second
//! gateway on the same file fails at startup with a message naming the file.

use super::enrich;
use super::model::{Detail, Event, Flow, Summary, Timings, PARTS};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otel::Exporter;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;

/// Schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;
/// Captures waiting for the writer; past this, new flows are dropped (and counted).
const QUEUE: usize = 8192;
/// Most bytes the queued captures may hold; past this, new flows are dropped (and counted).
const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Most captures written in one transaction.
const BATCH: usize = 1024;
/// How long the writer lets flows gather after the first of a batch arrives (also the most a
/// new flow waits before the live feed shows it). Each commit rewrites the index pages its
/// random flow ids touch, whatever the batch size, so under load a longer gather means fewer
/// page writes per flow.
const GATHER: Duration = Duration::from_millis(100);
/// Retention runs after this many flows, or this long, whichever comes first.
const RETENTION_EVERY: usize = 256;
const RETENTION_PERIOD: Duration = Duration::from_secs(1);

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("flow store {file}: {message}")]
pub struct OpenError {
    pub file: String,
    pub message: String,
}

/// Chunks smaller than this are copied rather than shared: a small chunk is often a slice of
/// a much larger read buffer, which a shared reference would keep alive while the flow waits
/// for the writer.
const SHARE_FROM: usize = 16 * 1024;

/// A body as captured: large chunks shared, small ones copied, at most the per-body cap in all,
/// and the size seen.
#[derive(Debug, Default)]
pub struct CapturedBody {
    chunks: Vec<Bytes>,
    /// Copied bytes after the last shared chunk.
    tail: Vec<u8>,
    held: usize,
    /// Bytes seen, kept or not.
    pub total: u64,
}

impl CapturedBody {
    /// A whole body (a buffered request).
    pub fn whole(body: &Bytes, max: usize) -> Self {
        let mut b = Self::default();
        b.push(body, max);
        b
    }

    /// Append `chunk`, keeping at most `max` bytes in all.
    pub fn push(&mut self, chunk: &Bytes, max: usize) {
        self.total += chunk.len() as u64;
        let keep = chunk.len().min(max.saturating_sub(self.held));
        if keep == 0 {
            return;
        }
        if keep < SHARE_FROM {
            self.tail.extend_from_slice(&chunk[..keep]);
        } else {
            if !self.tail.is_empty() {
                self.chunks
                    .push(Bytes::from(std::mem::take(&mut self.tail)));
            }
            self.chunks.push(chunk.slice(..keep));
        }
        self.held += keep;
    }

    /// Forget what was kept and seen (the client's copy of a response starts over).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Append the stored bytes to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.held);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out.extend_from_slice(&self.tail);
    }
}

/// The bodies of one flow as stored: the parts' bytes back to back in one blob (one row per
/// flow, so storing and trimming a flow touches one row), and where each part lies.
#[derive(Debug, Default)]
pub struct Bodies {
    pub data: Vec<u8>,
    parts: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl Bodies {
    /// Append `body` as `part`; returns how many bytes it stored.
    pub fn push(&mut self, part: &'static str, body: &CapturedBody) -> usize {
        let start = self.data.len();
        body.append_to(&mut self.data);
        let end = self.data.len();
        if end > start {
            self.parts.push((part, start..end));
        }
        end - start
    }

    /// The bytes of `part`, if it has any.
    pub fn get(&self, part: &str) -> Option<&[u8]> {
        self.parts
            .iter()
            .find(|(p, _)| *p == part)
            .and_then(|(_, r)| self.data.get(r.clone()))
    }

    /// Where each part lies, as stored beside the blob: `part:length` in blob order, comma
    /// separated.
    pub fn index(&self) -> String {
        let mut out = String::new();
        for (part, r) in &self.parts {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(part);
            out.push(':');
            out.push_str(&r.len().to_string());
        }
        out
    }

    /// The range of `part` in a blob described by `index` ([`Bodies::index`]).
    pub fn locate(index: &str, part: &str) -> Option<std::ops::Range<usize>> {
        let mut start = 0usize;
        for entry in index.split(',').filter(|e| !e.is_empty()) {
            let (name, len) = entry.split_once(':')?;
            let len: usize = len.parse().ok()?;
            let end = start.checked_add(len)?;
            if name == part {
                return Some(start..end);
            }
            start = end;
        }
        None
    }
}

/// A message's header lines copied out of its head: one buffer of names and values, and where
/// each ends. A cloned `HeaderMap` would share, and so keep alive while the capture waits for
/// the writer, the connection's whole header read buffer (measured: ~20 KB held per queued
/// flow whose headers are under 1 KB).
#[derive(Default)]
pub struct CapturedHeaders {
    data: Vec<u8>,
    /// (end of the name, end of the value) in `data`, per header line in order.
    ends: Vec<(usize, usize)>,
}

impl std::fmt::Debug for CapturedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be credentials (redacted only by the writer): names only.
        f.debug_list().entries(self.iter().map(|(k, _)| k)).finish()
    }
}

impl CapturedHeaders {
    /// Copy every header line of `map`.
    pub fn copy(map: &http::HeaderMap) -> Self {
        let size = map.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        let mut data = Vec::with_capacity(size);
        let mut ends = Vec::with_capacity(map.len());
        for (k, v) in map {
            data.extend_from_slice(k.as_str().as_bytes());
            let name_end = data.len();
            data.extend_from_slice(v.as_bytes());
            ends.push((name_end, data.len()));
        }
        Self { data, ends }
    }

    /// (name, value) in order; names are lowercase.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, end)| {
            let name = std::str::from_utf8(&self.data[start..name_end]).unwrap_or("");
            let value = &self.data[name_end..end];
            start = end;
            (name, value)
        })
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Memory held.
    fn weight(&self) -> usize {
        self.data.capacity() + self.ends.capacity() * std::mem::size_of::<(usize, usize)>()
    }
}

/// One HTTP message as captured.
#[derive(Debug, Default)]
pub struct CapturedMessage {
    pub method: Option<String>,
    pub url: Option<String>,
    pub status: Option<u16>,
    pub headers: CapturedHeaders,
    pub body: Option<CapturedBody>,
}

/// Everything a capture collected, handed to the writer.
#[derive(Debug)]
pub struct Captured {
    pub id: String,
    pub seq: u64,
    pub ingress: &'static str,
    pub started_wall: SystemTime,
    pub host: String,
    pub path: String,
    pub url: String,
    pub session_id: Option<String>,
    pub client_format: Option<&'static str>,
    pub client_model: Option<String>,
    pub client_request: Option<CapturedMessage>,
    pub forwarded_request: Option<CapturedMessage>,
    pub provider_response: Option<CapturedMessage>,
    pub client_response: Option<CapturedMessage>,
    pub client_same_as_provider: bool,
    pub attempts: u32,
    /// Why each attempt after the first was made.
    pub retries: Vec<String>,
    pub timings: Timings,
    pub status: u16,
    pub provider: String,
    pub action: &'static str,
    pub provider_format: Option<&'static str>,
    pub loss: Vec<String>,
    pub hooks: Vec<super::model::HookRun>,
    pub error: Option<(String, String)>,
}

impl Default for Captured {
    fn default() -> Self {
        Self {
            id: String::new(),
            seq: 0,
            ingress: "reverse",
            started_wall: SystemTime::UNIX_EPOCH,
            host: String::new(),
            path: String::new(),
            url: String::new(),
            session_id: None,
            client_format: None,
            client_model: None,
            client_request: None,
            forwarded_request: None,
            provider_response: None,
            client_response: None,
            client_same_as_provider: false,
            attempts: 0,
            retries: Vec::new(),
            timings: Timings::default(),
            status: 0,
            provider: "none".to_owned(),
            action: "none",
            provider_format: None,
            loss: Vec::new(),
            hooks: Vec::new(),
            error: None,
        }
    }
}

impl Captured {
    /// The list entry of a flow that just arrived.
    pub fn summary_at_start(&self) -> Summary {
        let started_ms = epoch_ms(self.started_wall);
        let (method, user_agent, request_bytes) =
            self.client_request
                .as_ref()
                .map_or((String::new(), None, 0), |m| {
                    (
                        m.method.clone().unwrap_or_default(),
                        m.headers
                            .get("user-agent")
                            .map(|v| String::from_utf8_lossy(v).into_owned()),
                        m.body.as_ref().map_or(0, |b| b.total),
                    )
                });
        Summary {
            id: self.id.clone(),
            seq: self.seq,
            started_at: rfc3339_ms(self.started_wall),
            started_ms,
            ingress: self.ingress.to_owned(),
            state: "open".to_owned(),
            method,
            host: self.host.clone(),
            path: self.path.clone(),
            status: 0,
            provider: self.provider.clone(),
            action: self.action.to_owned(),
            client_format: self.client_format.map(str::to_owned),
            provider_format: self.provider_format.map(str::to_owned),
            model: self.client_model.clone(),
            session_id: self.session_id.clone(),
            user_agent,
            replay_of: self.client_request.as_ref().and_then(|m| {
                m.headers
                    .get(super::model::REPLAY_HEADER)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            }),
            request_bytes,
            ..Summary::default()
        }
    }
}

/// What the writer thread is told.
pub enum StoreMsg {
    /// A request arrived (the live feed shows it at once).
    Begin(Box<Summary>),
    /// A request is over.
    Finish(Box<Captured>),
}

impl StoreMsg {
    /// Approximate memory a queued message holds.
    fn weight(&self) -> usize {
        match self {
            StoreMsg::Begin(_) => 512,
            StoreMsg::Finish(c) => {
                let message = |m: &Option<CapturedMessage>| {
                    m.as_ref().map_or(0, |m| {
                        m.headers.weight() + m.body.as_ref().map_or(0, |b| b.held)
                    })
                };
                1024 + message(&c.client_request)
                    + message(&c.forwarded_request)
                    + message(&c.provider_response)
                    + message(&c.client_response)
            }
        }
    }
}

/// The capture side's handle on the writer thread.
///
/// Nothing here takes a lock the writer also takes: the writer runs at idle priority, and a
/// request thread waiting on a lock held by a preempted idle-class thread would wait until a
/// core has nothing better to do. The channel is only polled by the writer (never blocked on,
/// so a sender never touches its waker lock), an idle writer is woken with `unpark`, and
/// live-feed listeners are counted in an atomic instead of asking the broadcast channel.
pub struct Writer {
    /// `None` only while dropping (so the writer sees the queue closed when woken).
    tx: Option<SyncSender<StoreMsg>>,
    /// Approximate bytes held by queued captures (bounded by [`QUEUE_BYTES`]).
    queued_bytes: Arc<AtomicUsize>,
    /// Live-feed clients connected.
    listeners: Arc<AtomicUsize>,
    /// The writer is parked waiting for work (then a send unparks it).
    idle: Arc<AtomicBool>,
    thread: std::thread::Thread,
    seq: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// The next flow's sequence number.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a live-feed client is connected (only then is a flow announced when it starts).
    pub fn has_listeners(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Queue `msg` for the writer; never blocks (a full queue drops the flow, counted in
    /// `ccproxy_flows_dropped_total`).
    pub fn send(&self, msg: StoreMsg) {
        let size = msg.weight();
        if self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.metrics.flows_dropped.inc();
            return;
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(msg) {
            Ok(()) => {
                // Pairs with the fence in `next_message`: either the writer sees this flow
                // when it looks again, or this sees it idle and wakes it.
                std::sync::atomic::fence(Ordering::SeqCst);
                if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
                    self.thread.unpark();
                }
            }
            Err(TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.metrics.flows_dropped.inc();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            }
        }
    }
}

/// A live-feed client's receiver of store changes.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    listeners: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next change (`Lagged` when this reader fell behind and missed some).
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        self.rx.recv().await
    }

    /// Like [`Self::recv`], for a thread outside the async runtime.
    pub fn blocking_recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        self.rx.blocking_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Close the queue, then wake the writer so it finishes what is queued and stops now
        // rather than at the end of its idle wait.
        self.tx = None;
        self.thread.unpark();
    }
}

/// Retention limits.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_flows: u64,
    pub max_age: Duration,
    pub max_bytes: u64,
}

/// A list query (every field optional).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub status: Option<u16>,
    pub session: Option<String>,
    /// Text searched in the path, the model and every body.
    pub text: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: usize,
    pub offset: usize,
}

/// The result of looking a flow up by id or id prefix.
#[derive(Debug)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    /// The prefix names more than one flow.
    Ambiguous,
}

/// The flow database.
pub struct Store {
    conn: Mutex<Connection>,
    /// Live-feed clients connected (see [`Subscription`]).
    listeners: Arc<AtomicUsize>,
    /// Sum of the stored flows' sizes, kept up to date instead of summed by retention.
    bytes: std::sync::atomic::AtomicI64,
    events: broadcast::Sender<Event>,
    /// Where it lives (`None`: in memory).
    pub path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn db_error(file: &str, e: rusqlite::Error) -> OpenError {
    let message = match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
            "the database is locked (is another ccproxy using it?)".to_owned()
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            "not a ccproxy flow database (corrupt or another kind of file); move it away or set inspector.store".to_owned()
        }
        _ => e.to_string(),
    };
    OpenError {
        file: file.to_owned(),
        message,
    }
}

fn init(conn: &Connection, file: &str, on_disk: bool) -> Result<(), OpenError> {
    let err = |e| db_error(file, e);
    // A gateway that is stopping releases the file within moments; wait that long for it.
    conn.busy_timeout(Duration::from_secs(3)).map_err(err)?;
    // 8 MiB of page cache (SQLite's default is 2 MiB): the writer's index lookups stay in memory.
    conn.pragma_update(None, "cache_size", -8192).map_err(err)?;
    if on_disk {
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
        use_page_size(conn, file)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Checkpoint every 32 MiB of WAL instead of SQLite's 1,000 pages: the index pages a
        // batch touches are copied into the database once per checkpoint, not once per few
        // batches, and the checkpoint's fsync comes less often. The WAL file keeps its size
        // after a checkpoint; past 64 MiB it is truncated back.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_BYTES / PAGE_SIZE)
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", 2 * WAL_CHECKPOINT_BYTES)
            .map_err(err)?;
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version == 1 {
        // Schema 1 (a bodies table with a row per part) lived on main for a day before any
        // release; its flows are dropped rather than converted.
        tracing::warn!(
            file,
            "flow store: schema 1 from an earlier build; its flows are dropped"
        );
        conn.execute_batch("DROP TABLE IF EXISTS bodies; DROP TABLE IF EXISTS flows;")
            .map_err(err)?;
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError {
            file: file.to_owned(),
            message: format!(
                "written by a newer ccproxy (schema {version}, this one reads {SCHEMA_VERSION})"
            ),
        });
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS flows (
           seq INTEGER PRIMARY KEY,
           id TEXT NOT NULL UNIQUE,
           started_ms INTEGER NOT NULL,
           size INTEGER NOT NULL,
           state TEXT NOT NULL,
           provider TEXT NOT NULL,
           model TEXT,
           status INTEGER NOT NULL,
           session_id TEXT,
           path TEXT NOT NULL,
           summary TEXT NOT NULL,
           detail TEXT,
           parts TEXT,
           bodies BLOB
         );
         -- Only flows that carry a session id are indexed (a `session_id = ?` filter implies it),
         -- so flows without one cost no index entry on insert and delete.
         DROP INDEX IF EXISTS flows_session;
         CREATE INDEX IF NOT EXISTS flows_session_set ON flows(session_id) WHERE session_id IS NOT NULL;
         -- Retention walks this from the oldest flow: a row of the table is a page or more,
         -- an entry here a few bytes (and new entries only ever append).
         CREATE INDEX IF NOT EXISTS flows_age ON flows(seq, started_ms, size);
         PRAGMA user_version = 2;
         COMMIT;",
    )
    .map_err(err)?;
    Ok(())
}

/// SQLite page size of the store. A flow row is ~2 KB of summary, detail and bodies; with
/// SQLite's default 4 KiB pages every batch writes (and every checkpoint copies) about one page
/// per flow in separate calls. 16 KiB pages measured 31 → 19 µs of CPU per stored flow
/// (insert, commit, checkpoint and retention delete, 10,000 flows kept).
const PAGE_SIZE: i64 = 16 * 1024;
/// WAL bytes between automatic checkpoints.
const WAL_CHECKPOINT_BYTES: i64 = 32 * 1024 * 1024;

/// Give a new store [`PAGE_SIZE`] pages, and convert an existing one written with another size
/// (a one-time `VACUUM`, which can only change the page size outside WAL mode).
fn use_page_size(conn: &Connection, file: &str) -> Result<(), OpenError> {
    let err = |e| db_error(file, e);
    let current: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(err)?;
    if current == PAGE_SIZE {
        return Ok(());
    }
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(err)?;
    if tables > 0 {
        tracing::info!(
            file,
            from = current,
            to = PAGE_SIZE,
            "flow store: converting to larger pages (once)"
        );
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(err)?;
    }
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(err)?;
    if tables > 0 {
        conn.execute_batch("VACUUM").map_err(err)?;
    }
    Ok(())
}

/// Open (or create) the store, start its writer thread, and return both handles.
pub fn open(
    path: Option<&Path>,
    retention: Retention,
    metrics: Arc<Metrics>,
    otel: Option<Exporter>,
) -> Result<(Arc<Store>, Arc<Writer>), OpenError> {
    let file = path.map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
    let conn = match path {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| OpenError {
                    file: file.clone(),
                    message: format!("cannot create its directory: {e}"),
                })?;
            }
            Connection::open(p)
        }
        None => Connection::open_in_memory(),
    }
    .map_err(|e| db_error(&file, e))?;
    init(&conn, &file, path.is_some())?;
    let next: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM flows", [], |r| {
            r.get(0)
        })
        .map_err(|e| db_error(&file, e))?;
    let (events, _) = broadcast::channel(1024);
    let bytes: i64 = conn
        .query_row("SELECT COALESCE(SUM(size), 0) FROM flows", [], |r| r.get(0))
        .map_err(|e| db_error(&file, e))?;
    let store = Arc::new(Store {
        bytes: std::sync::atomic::AtomicI64::new(bytes),
        conn: Mutex::new(conn),
        listeners: Arc::new(AtomicUsize::new(0)),
        events,
        path: path.map(Path::to_path_buf),
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let idle = Arc::new(AtomicBool::new(false));
    let thread_store = store.clone();
    let (thread_queued, thread_idle, thread_metrics) =
        (queued_bytes.clone(), idle.clone(), metrics.clone());
    let handle = std::thread::Builder::new()
        .name("ccproxy-flows".to_owned())
        .spawn(move || {
            write_loop(
                &thread_store,
                &Inbox {
                    rx,
                    idle: thread_idle,
                },
                &thread_queued,
                retention,
                &thread_metrics,
                otel.as_ref(),
            )
        })
        .map_err(|e| OpenError {
            file,
            message: format!("cannot start the writer thread: {e}"),
        })?;
    let writer = Arc::new(Writer {
        tx: Some(tx),
        queued_bytes,
        listeners: store.listeners.clone(),
        idle,
        thread: handle.thread().clone(),
        seq: AtomicU64::new(u64::try_from(next).unwrap_or(1)),
        metrics,
    });
    Ok((store, writer))
}

/// The writer's end of the queue.
struct Inbox {
    rx: Receiver<StoreMsg>,
    /// Set while the writer is parked waiting for work.
    idle: Arc<AtomicBool>,
}

impl Inbox {
    /// The next capture, waiting at most `limit` (parked; a send unparks it).
    fn next_message(&self, limit: Duration) -> Result<StoreMsg, RecvTimeoutError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Ok(m),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            self.idle.store(true, Ordering::Relaxed);
            // Pairs with the fence in `Writer::send` (see there).
            std::sync::atomic::fence(Ordering::SeqCst);
            let again = self.rx.try_recv();
            if !matches!(again, Err(TryRecvError::Empty)) {
                self.idle.store(false, Ordering::Relaxed);
                return again.map_err(|_| RecvTimeoutError::Disconnected);
            }
            let now = Instant::now();
            if now >= deadline {
                self.idle.store(false, Ordering::Relaxed);
                return Err(RecvTimeoutError::Timeout);
            }
            std::thread::park_timeout(deadline - now);
            self.idle.store(false, Ordering::Relaxed);
        }
    }

    fn try_next(&self) -> Option<StoreMsg> {
        self.rx.try_recv().ok()
    }
}

/// The writer thread: batches of captures, one transaction each, until every sender is gone.
fn write_loop(
    store: &Store,
    rx: &Inbox,
    queued_bytes: &AtomicUsize,
    retention: Retention,
    metrics: &Metrics,
    otel: Option<&Exporter>,
) {
    lower_priority();
    let mut last_retention = Instant::now();
    let mut since_retention = 0usize;
    // Flows announced as started (a row exists) and not finished yet.
    let mut open: std::collections::HashSet<u64> = std::collections::HashSet::new();
    // The previous batch took all it could: flows are waiting, so gathering would only add delay.
    let mut backlog = false;
    loop {
        let first = match rx.next_message(RETENTION_PERIOD) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                // Quiet: apply retention (also ages flows out when nothing new arrives; it
                // reads only the oldest row when nothing is due).
                since_retention = 0;
                last_retention = Instant::now();
                if let Err(e) = store.apply_retention(retention, SystemTime::now()) {
                    tracing::warn!(error = %e, "flow store: retention failed");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Let the flows of the next moments gather: one wake-up and one transaction per batch
        // instead of per flow.
        if !backlog {
            std::thread::sleep(GATHER);
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_next() {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        backlog = batch.len() == BATCH;
        let weight: usize = batch.iter().map(StoreMsg::weight).sum();
        queued_bytes.fetch_sub(weight, Ordering::Relaxed);
        // Parsing happens before the lock is taken, so readers wait only for the writes.
        let prepared: Vec<Prepared> = batch
            .into_iter()
            .map(|m| match m {
                StoreMsg::Begin(s) => Prepared::Begin(s),
                StoreMsg::Finish(c) => {
                    let (flow, bodies) = enrich::finish(*c);
                    if let Some(x) = otel {
                        x.send(&flow.summary);
                    }
                    if let Some(u) = &flow.summary.usage {
                        metrics.count_tokens(
                            &flow.summary.provider,
                            flow.summary.model.as_deref().unwrap_or(""),
                            u,
                        );
                    }
                    Prepared::Finish(Box::new(flow), bodies)
                }
            })
            .collect();
        let n = prepared.len();
        let events = match store.write(prepared, &mut open) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "flow store: write failed; {n} flow(s) not stored");
                continue;
            }
        };
        if store.listeners.load(Ordering::Relaxed) > 0 {
            for e in events {
                let _ = store.events.send(e);
            }
        }
        // Retention scans the (seq, size) index: at most once a second, or after every
        // RETENTION_EVERY flows when they come faster (so a burst cannot overshoot much).
        since_retention += n;
        if since_retention >= RETENTION_EVERY || last_retention.elapsed() >= RETENTION_PERIOD {
            since_retention = 0;
            last_retention = Instant::now();
            match store.apply_retention(retention, SystemTime::now()) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "flow store: retention"),
                Err(e) => tracing::warn!(error = %e, "flow store: retention failed"),
            }
        }
    }
}

/// Make the calling thread idle-time work (`SCHED_IDLE`): on a machine with few cores, the
/// writer's parsing and SQLite work must never keep a core from the request path. At
/// `SCHED_BATCH`/nice 19 a gateway thread woken on the writer's core could still wait out
/// the writer's time slice (EEVDF protects a running slice; measured: p99 ~4 ms on 2 vCPUs);
/// an idle-class thread is preempted at once. Under sustained full load the writer falls
/// behind and the bounded queue drops flows (counted), rather than slowing requests.
fn lower_priority() {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        batch,
    ) {
        tracing::debug!(error = ?e, "flow store: cannot lower the writer's priority");
    }
}

/// A capture made ready for the database.
enum Prepared {
    Begin(Box<Summary>),
    Finish(Box<Flow>, Bodies),
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many live-feed clients are connected.
    pub fn live_clients(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Every change from now on (counted as a live-feed client until dropped).
    pub fn subscribe(&self) -> Subscription {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.events.subscribe(),
            listeners: self.listeners.clone(),
        }
    }

    fn write(
        &self,
        batch: Vec<Prepared>,
        open: &mut std::collections::HashSet<u64>,
    ) -> rusqlite::Result<Vec<Event>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut events = Vec::with_capacity(batch.len());
        let mut added = 0i64;
        for p in batch {
            match p {
                Prepared::Begin(s) => {
                    let n = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO flows (seq, id, started_ms, size, state, provider, model, status, session_id, path, summary)
                             VALUES (?1, ?2, ?3, 0, 'open', ?4, ?5, 0, ?6, ?7, ?8)",
                        )?
                        .execute(params![s.seq, s.id, s.started_ms, s.provider, s.model, s.session_id, s.path, json(&s)])?;
                    if n > 0 {
                        open.insert(s.seq);
                        events.push(Event::Created(s));
                    }
                }
                Prepared::Finish(flow, bodies) => {
                    let (s, detail) = flow.split();
                    let summary = json(&s);
                    let detail = json(&detail);
                    let size = summary.len() + detail.len() + bodies.data.len();
                    let existed = open.remove(&s.seq);
                    let sql = if existed {
                        "UPDATE flows SET id = ?2, started_ms = ?3, size = ?4, state = 'done', provider = ?5, model = ?6, status = ?7, session_id = ?8, path = ?9, summary = ?10, detail = ?11, parts = ?12, bodies = ?13 WHERE seq = ?1"
                    } else {
                        "INSERT INTO flows (seq, id, started_ms, size, state, provider, model, status, session_id, path, summary, detail, parts, bodies)
                         VALUES (?1, ?2, ?3, ?4, 'done', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                    };
                    added += size as i64;
                    tx.prepare_cached(sql)?.execute(params![
                        s.seq,
                        s.id,
                        s.started_ms,
                        size as i64,
                        s.provider,
                        s.model,
                        s.status,
                        s.session_id,
                        s.path,
                        summary,
                        detail,
                        bodies.index(),
                        (!bodies.data.is_empty()).then_some(bodies.data.as_slice()),
                    ])?;
                    let s = Box::new(s);
                    events.push(if existed {
                        Event::Updated(s)
                    } else {
                        Event::Created(s)
                    });
                }
            }
        }
        tx.commit()?;
        self.bytes.fetch_add(added, Ordering::Relaxed);
        Ok(events)
    }

    /// Remove the oldest flows past any retention limit; returns how many went. Every rule
    /// walks from the oldest flow, so only the rows that go (and one more) are read.
    pub fn apply_retention(&self, r: Retention, now: SystemTime) -> rusqlite::Result<usize> {
        let conn = self.lock();
        let cutoff = epoch_ms(now).saturating_sub(r.max_age.as_millis() as u64) as i64;
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM flows", [], |x| x.get(0))?;
        let mut excess_flows = count - r.max_flows as i64;
        let mut excess_bytes = self.bytes.load(Ordering::Relaxed) - r.max_bytes as i64;
        let mut last: Option<i64> = None;
        {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, started_ms, size FROM flows INDEXED BY flows_age ORDER BY seq ASC",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (seq, started, size): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
                if excess_flows <= 0 && excess_bytes <= 0 && started >= cutoff {
                    break;
                }
                last = Some(seq);
                excess_flows -= 1;
                excess_bytes -= size;
            }
        }
        let Some(last) = last else {
            return Ok(0);
        };
        let mut stmt = conn.prepare_cached("DELETE FROM flows WHERE seq <= ?1 RETURNING size")?;
        let sizes: Vec<i64> = stmt
            .query_map(params![last], |x| x.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        self.bytes
            .fetch_sub(sizes.iter().sum::<i64>(), Ordering::Relaxed);
        Ok(sizes.len())
    }

    /// Flows matching `q`, newest first, and how many match in all.
    pub fn list(&self, q: &Query) -> rusqlite::Result<(Vec<Summary>, u64)> {
        let mut sql = String::from(" FROM flows WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut add = |clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(p) = &q.provider {
            add(" AND provider = ?", p.clone().into());
        }
        if let Some(m) = &q.model {
            add(" AND model = ?", m.clone().into());
        }
        if let Some(s) = q.status {
            add(" AND status = ?", i64::from(s).into());
        }
        if let Some(s) = &q.session {
            add(" AND session_id = ?", s.clone().into());
        }
        if let Some(t) = q.since_ms {
            add(" AND started_ms >= ?", (t as i64).into());
        }
        if let Some(t) = q.until_ms {
            add(" AND started_ms <= ?", (t as i64).into());
        }
        if let Some(text) = q.text.as_ref().filter(|t| !t.is_empty()) {
            args.push(text.clone().into());
            let n = args.len();
            sql.push_str(&format!(
                " AND (instr(path, ?{n}) > 0 OR instr(COALESCE(model, ''), ?{n}) > 0 OR instr(COALESCE(bodies, X''), CAST(?{n} AS BLOB)) > 0)"
            ));
        }
        let conn = self.lock();
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*){sql}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT summary{sql} ORDER BY seq DESC LIMIT {} OFFSET {}",
            q.limit, q.offset
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(s) = serde_json::from_str::<Summary>(&r?) {
                out.push(s);
            }
        }
        Ok((out, total as u64))
    }

    /// The full id of the flow `id` names (the id itself or a unique prefix of one).
    pub fn resolve(&self, id: &str) -> rusqlite::Result<Lookup<String>> {
        if id.is_empty() {
            return Ok(Lookup::NotFound);
        }
        let conn = self.lock();
        // The first two ids from `id` on, in the id index's order: the ones that start with it
        // come first.
        let mut stmt =
            conn.prepare_cached("SELECT id FROM flows WHERE id >= ?1 ORDER BY id LIMIT 2")?;
        let ids: Vec<String> = stmt
            .query_map(params![id], |r| r.get::<_, String>(0))?
            .filter(|r| r.as_ref().map_or(true, |i| i.starts_with(id)))
            .collect::<rusqlite::Result<_>>()?;
        Ok(match ids.len() {
            0 => Lookup::NotFound,
            1 => ids
                .into_iter()
                .next()
                .map_or(Lookup::NotFound, Lookup::Found),
            _ if ids.iter().any(|i| i == id) => Lookup::Found(id.to_owned()),
            _ => Lookup::Ambiguous,
        })
    }

    /// The flow with id (or unique prefix) `id`.
    pub fn get(&self, id: &str) -> rusqlite::Result<Lookup<Flow>> {
        let full = match self.resolve(id)? {
            Lookup::Found(f) => f,
            Lookup::NotFound => return Ok(Lookup::NotFound),
            Lookup::Ambiguous => return Ok(Lookup::Ambiguous),
        };
        let conn = self.lock();
        let row: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT summary, detail FROM flows WHERE id = ?1",
                params![full],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((summary, detail)) = row else {
            return Ok(Lookup::NotFound);
        };
        let Ok(summary) = serde_json::from_str::<Summary>(&summary) else {
            return Ok(Lookup::NotFound);
        };
        let flow = match detail {
            Some(d) => serde_json::from_str::<Detail>(&d)
                .ok()
                .map(|d| Flow::join(summary, d)),
            // Still in flight: only the summary exists.
            None => Some(Flow {
                summary,
                ..Flow::default()
            }),
        };
        Ok(flow.map_or(Lookup::NotFound, Lookup::Found))
    }

    /// The stored bytes of body `part` of flow `id` (full id).
    pub fn body(&self, id: &str, part: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        if !PARTS.contains(&part) {
            return Ok(None);
        }
        let conn = self.lock();
        let row: Option<(Option<String>, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT parts, bodies FROM flows WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((Some(index), Some(mut data))) = row else {
            return Ok(None);
        };
        Ok(Bodies::locate(&index, part)
            .filter(|r| r.end <= data.len())
            .map(|r| {
                data.truncate(r.end);
                data.split_off(r.start)
            }))
    }

    /// Delete flow `id` (full id); returns how many flows went (0 or 1).
    pub fn delete(&self, id: &str) -> rusqlite::Result<usize> {
        let n = {
            let conn = self.lock();
            let size: Option<i64> = conn
                .query_row(
                    "DELETE FROM flows WHERE id = ?1 RETURNING size",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(size) = size {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
            }
            usize::from(size.is_some())
        };
        if n > 0 {
            let _ = self.events.send(Event::Deleted(id.to_owned()));
        }
        Ok(n)
    }

    /// Delete every flow; returns how many went.
    pub fn clear(&self) -> rusqlite::Result<usize> {
        let n = {
            let conn = self.lock();
            let n = conn.execute("DELETE FROM flows", [])?;
            self.bytes.store(0, Ordering::Relaxed);
            n
        };
        let _ = self.events.send(Event::Cleared);
        Ok(n)
    }

    /// Number of flows stored.
    pub fn count(&self) -> rusqlite::Result<u64> {
        let conn = self.lock();
        conn.query_row("SELECT COUNT(*) FROM flows", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    }
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 UTC with milliseconds (`2026-12-03T14:00:00.123Z`).
pub fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8]) -> CapturedBody {
        CapturedBody::whole(&Bytes::copy_from_slice(bytes), usize::MAX)
    }

    /// A store at `path` (`None`: in memory) with small retention limits, and its writer.
    fn small_store(path: Option<&std::path::Path>) -> (Arc<Store>, Arc<Writer>) {
        let retention = Retention {
            max_flows: 10,
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 20,
        };
        open(path, retention, Arc::new(Metrics::new().unwrap()), None).unwrap()
    }

    #[test]
    fn bodies_share_one_blob_and_are_found_by_their_index() {
        let mut b = Bodies::default();
        assert_eq!(b.push("client_request", &body(b"{\"a\":1}")), 7);
        assert_eq!(b.push("forwarded_request", &body(b"")), 0);
        assert_eq!(b.push("provider_response", &body(b"data: x\n\n")), 9);
        assert_eq!(b.index(), "client_request:7,provider_response:9");
        assert_eq!(b.get("provider_response"), Some(&b"data: x\n\n"[..]));
        assert_eq!(b.get("forwarded_request"), None);
        let index = b.index();
        let r = Bodies::locate(&index, "provider_response").unwrap();
        assert_eq!(&b.data[r], b"data: x\n\n");
        assert_eq!(Bodies::locate(&index, "client_response"), None);
        // A damaged index finds nothing rather than a wrong slice.
        assert_eq!(Bodies::locate("client_request:x", "client_request"), None);
    }

    #[test]
    fn a_schema_1_store_is_replaced_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE flows (seq INTEGER PRIMARY KEY, id TEXT, summary TEXT, detail TEXT);
                 CREATE TABLE bodies (flow_id TEXT, part TEXT, data BLOB);
                 INSERT INTO flows VALUES (1, 'old', '{}', NULL);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let (store, _writer) = small_store(Some(&path));
        assert_eq!(store.count().unwrap(), 0);
        let version: i64 = store
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn captured_headers_are_copied_in_order_and_debug_shows_no_values() {
        let mut map = http::HeaderMap::new();
        map.append("x-api-key", "sk-ant-api03-secret".parse().unwrap());
        map.append("accept", "a".parse().unwrap());
        map.append("accept", "b".parse().unwrap());
        map.append("content-type", "application/json".parse().unwrap());
        let h = CapturedHeaders::copy(&map);
        drop(map);
        let lines: Vec<(&str, &[u8])> = h.iter().collect();
        assert_eq!(
            lines,
            vec![
                ("x-api-key", &b"sk-ant-api03-secret"[..]),
                ("accept", b"a"),
                ("accept", b"b"),
                ("content-type", b"application/json"),
            ]
        );
        assert_eq!(h.get("accept"), Some(&b"a"[..]));
        assert_eq!(h.get("cookie"), None);
        assert_eq!(h.len(), 4);
        let debug = format!("{h:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("x-api-key"), "{debug}");
    }

    #[test]
    fn live_feed_clients_are_counted_until_their_subscription_is_dropped() {
        let (store, writer) = small_store(None);
        assert!(!writer.has_listeners());
        let mut feed = store.subscribe();
        assert_eq!(store.live_clients(), 1);
        assert!(writer.has_listeners());
        // A flow queued to the idle writer reaches the listener.
        writer.send(StoreMsg::Finish(Box::new(Captured {
            id: "feedfeedfeedfeed".into(),
            seq: writer.next_seq(),
            ..Captured::default()
        })));
        match feed.blocking_recv() {
            Ok(Event::Created(s)) => assert_eq!(s.id, "feedfeedfeedfeed"),
            other => panic!("{:?}", other.map(|e| e.name())),
        }
        drop(feed);
        assert_eq!(store.live_clients(), 0);
        assert!(!writer.has_listeners());
    }

    #[test]
    fn a_session_filter_uses_the_partial_session_index() {
        let (store, _writer) = small_store(None);
        let conn = store.lock();
        let plan: Vec<String> = conn
            .prepare("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM flows WHERE 1=1 AND session_id = ?1")
            .unwrap()
            .query_map(["s"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains("flows_session_set")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_store_with_small_pages_is_converted_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;
                 CREATE TABLE kept (x TEXT); INSERT INTO kept VALUES ('still here');",
            )
            .unwrap();
        }
        let (store, _writer) = small_store(Some(&path));
        let conn = store.lock();
        let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap();
        assert_eq!(
            q("SELECT CAST(page_size AS TEXT) FROM pragma_page_size"),
            "16384"
        );
        assert_eq!(q("PRAGMA journal_mode"), "wal");
        assert_eq!(q("SELECT x FROM kept"), "still here");
    }
}
