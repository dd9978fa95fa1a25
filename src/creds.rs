//! Provider credentials: where they come from ([`CredentialSource`]) and the resolved value
//! ([`Secret`]).
//!
//! A source is a shell command (`sh -c`, 5 s timeout, trimmed stdout) or a file (trimmed
//! content). Resolution is single-flight per provider and cached: a command result for
//! `cache_seconds` (default 30 s, `0` = run on every request as the original did), a file until its
//! modification time or size changes. Secrets never reach logs: [`Secret`]'s `Debug` is redacted
//! and errors carry no credential bytes.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a credential command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default reuse window of a command's output.
pub const DEFAULT_COMMAND_CACHE: Duration = Duration::from_secs(30);

/// A credential value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for putting on the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a credential could not be resolved. Messages never contain the credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential command could not start: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("credential command timed out after {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("credential command exited with {status}{stderr}")]
    CommandFailed { status: String, stderr: String },
    #[error("credential command printed nothing")]
    CommandEmpty,
    #[error("credential file {path} could not be read: {source}")]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credential file {path} is empty")]
    FileEmpty { path: PathBuf },
}

impl Error {
    /// The error without command output or paths, for clients (details stay in the log).
    pub fn summary(&self) -> String {
        match self {
            Error::Spawn(_) => "credential command could not start".to_owned(),
            Error::Timeout => self.to_string(),
            Error::CommandFailed { status, .. } => {
                format!("credential command exited with {status}")
            }
            Error::CommandEmpty => self.to_string(),
            Error::FileRead { .. } => "credential file could not be read".to_owned(),
            Error::FileEmpty { .. } => "credential file is empty".to_owned(),
        }
    }
}

/// Where a provider's credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Command(String),
    File(PathBuf),
}

#[derive(Clone)]
struct Cached {
    secret: Arc<Secret>,
    fetched: Instant,
    file_stamp: Option<(SystemTime, u64)>,
}

/// A credential source with its cache.
pub struct CredentialSource {
    kind: SourceKind,
    header: Option<http::HeaderName>,
    ttl: Duration,
    state: Arc<State>,
}

/// Cache shared with background refreshes.
#[derive(Default)]
struct State {
    cached: RwLock<Option<Cached>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSource")
            .field("kind", &self.kind)
            .field("header", &self.header)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CredentialSource {
    pub fn new(kind: SourceKind, header: Option<http::HeaderName>, ttl: Option<Duration>) -> Self {
        Self {
            kind,
            header,
            ttl: ttl.unwrap_or(DEFAULT_COMMAND_CACHE),
            state: Arc::default(),
        }
    }

    pub fn kind(&self) -> &SourceKind {
        &self.kind
    }

    /// The header the credential goes in; `None` = `Authorization: Bearer`.
    pub fn header(&self) -> Option<&http::HeaderName> {
        self.header.as_ref()
    }

    /// Forget the cached value so the next [`resolve`](Self::resolve) reads the source again.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.state.cached.write() {
            *c = None;
        }
    }

    /// The current credential, from cache when still fresh.
    ///
    /// A command result older than `cache_seconds` but younger than twice that is still served
    /// while one background task runs the command again, so requests do not wait for `sh` every
    /// time the cache turns over; only an empty or much older cache makes a request wait.
    pub async fn resolve(&self) -> Result<Arc<Secret>, Error> {
        let stamp = self.file_stamp();
        match self.lookup(stamp) {
            Lookup::Fresh(s) => return Ok(s),
            Lookup::Stale(s) => {
                self.refresh_in_background();
                return Ok(s);
            }
            Lookup::Missing => {}
        }
        // Single flight: one reader of the source at a time; the others reuse its result.
        let _guard = self.state.refresh.lock().await;
        if let Lookup::Fresh(s) = self.lookup(stamp) {
            return Ok(s);
        }
        fetch(&self.kind, &self.state, stamp).await
    }

    fn refresh_in_background(&self) {
        let Ok(guard) = self.state.refresh.clone().try_lock_owned() else {
            return; // a refresh is already running
        };
        let (kind, state) = (self.kind.clone(), self.state.clone());
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = fetch(&kind, &state, None).await {
                tracing::warn!(error = %e, "background credential refresh failed; keeping the previous value for now");
            }
        });
    }

    fn lookup(&self, stamp: Option<(SystemTime, u64)>) -> Lookup {
        let Ok(guard) = self.state.cached.read() else {
            return Lookup::Missing;
        };
        let Some(c) = guard.as_ref() else {
            return Lookup::Missing;
        };
        match self.kind {
            SourceKind::File(_) if stamp.is_some() && c.file_stamp == stamp => {
                Lookup::Fresh(c.secret.clone())
            }
            SourceKind::File(_) => Lookup::Missing,
            SourceKind::Command(_) => {
                let age = c.fetched.elapsed();
                if age < self.ttl {
                    Lookup::Fresh(c.secret.clone())
                } else if age < self.ttl * 2 {
                    Lookup::Stale(c.secret.clone())
                } else {
                    Lookup::Missing
                }
            }
        }
    }

    fn file_stamp(&self) -> Option<(SystemTime, u64)> {
        match &self.kind {
            SourceKind::File(p) => {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            }
            SourceKind::Command(_) => None,
        }
    }
}

enum Lookup {
    Fresh(Arc<Secret>),
    /// Past its TTL but still usable while a refresh runs.
    Stale(Arc<Secret>),
    Missing,
}

/// Read the source and store the result in the cache.
async fn fetch(
    kind: &SourceKind,
    state: &State,
    stamp: Option<(SystemTime, u64)>,
) -> Result<Arc<Secret>, Error> {
    let value = match kind {
        SourceKind::Command(cmd) => run_command(cmd).await?,
        SourceKind::File(path) => read_file(path).await?,
    };
    let secret = Arc::new(Secret(value));
    if let Ok(mut c) = state.cached.write() {
        *c = Some(Cached {
            secret: secret.clone(),
            fetched: Instant::now(),
            file_stamp: stamp,
        });
    }
    Ok(secret)
}

async fn run_command(cmd: &str) -> Result<String, Error> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        let stderr = if first.is_empty() {
            String::new()
        } else {
            let cut: String = first.chars().take(200).collect();
            format!(": {cut}")
        };
        return Err(Error::CommandFailed {
            status: out.status.to_string(),
            stderr,
        });
    }
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if value.is_empty() {
        return Err(Error::CommandEmpty);
    }
    Ok(value)
}

async fn read_file(path: &PathBuf) -> Result<String, Error> {
    let raw = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| Error::FileRead {
            path: path.clone(),
            source,
        })?;
    let value = raw.trim().to_owned();
    if value.is_empty() {
        return Err(Error::FileEmpty { path: path.clone() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("very"));
    }

    #[tokio::test]
    async fn command_output_is_trimmed_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; echo '  tok123  '", counter.display());
        let src = CredentialSource::new(SourceKind::Command(cmd), None, None);
        assert_eq!(src.resolve().await.unwrap().expose(), "tok123");
        assert_eq!(src.resolve().await.unwrap().expose(), "tok123");
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        assert_eq!(runs, 1, "second resolve must come from cache");
        src.invalidate();
        src.resolve().await.unwrap();
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        assert_eq!(runs, 2);
    }

    #[tokio::test]
    async fn stale_value_is_served_while_one_background_refresh_runs() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; wc -l < {0}", counter.display());
        let ttl = Duration::from_millis(50);
        let src = CredentialSource::new(SourceKind::Command(cmd), None, Some(ttl));
        assert_eq!(src.resolve().await.unwrap().expose(), "1");
        // Age the cache past its TTL (but within the grace window) without sleeping.
        if let Ok(mut c) = src.state.cached.write() {
            if let Some(c) = c.as_mut() {
                c.fetched -= ttl + Duration::from_millis(1);
            }
        }
        // The stale value comes back at once; a refresh runs in the background.
        assert_eq!(src.resolve().await.unwrap().expose(), "1");
        // Wait for the refresh to finish (it holds the refresh lock while running).
        drop(src.state.refresh.lock().await);
        assert_eq!(src.resolve().await.unwrap().expose(), "2");
        // Much older than the TTL: the request waits for a fresh value.
        if let Ok(mut c) = src.state.cached.write() {
            if let Some(c) = c.as_mut() {
                c.fetched -= ttl * 3;
            }
        }
        assert_eq!(src.resolve().await.unwrap().expose(), "3");
    }

    #[tokio::test]
    async fn zero_ttl_runs_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let cmd = format!("echo x >> {0}; echo tok", counter.display());
        let src = CredentialSource::new(SourceKind::Command(cmd), None, Some(Duration::ZERO));
        src.resolve().await.unwrap();
        src.resolve().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&counter).unwrap().lines().count(),
            2
        );
    }

    #[tokio::test]
    async fn failing_command_reports_status_without_stdout() {
        let src = CredentialSource::new(
            SourceKind::Command("echo secret-out; echo oops >&2; exit 3".into()),
            None,
            None,
        );
        let err = src.resolve().await.unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("oops"), "{err}");
        assert!(!err.contains("secret-out"), "{err}");
    }

    #[tokio::test]
    async fn empty_command_output_is_an_error() {
        let src = CredentialSource::new(SourceKind::Command("true".into()), None, None);
        assert!(matches!(src.resolve().await, Err(Error::CommandEmpty)));
    }

    #[tokio::test]
    async fn file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "first\n").unwrap();
        let src = CredentialSource::new(SourceKind::File(p.clone()), None, None);
        assert_eq!(src.resolve().await.unwrap().expose(), "first");
        std::fs::write(&p, "second-longer\n").unwrap();
        assert_eq!(src.resolve().await.unwrap().expose(), "second-longer");
    }

    #[tokio::test]
    async fn missing_file_names_the_path() {
        let src = CredentialSource::new(SourceKind::File("/nonexistent/x".into()), None, None);
        let err = src.resolve().await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x"), "{err}");
    }
}
