//! The benchmark's load generator: persistent HTTP/1.1 connections (hyper), closed loop
//! (N connections back to back) and open loop (fixed rate, latency measured from each request's
//! intended start, so queueing is counted and not hidden by coordinated omission), plus an SSE
//! reader that timestamps every frame.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One request shape.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A kept-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    fn request(t: &Target) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::post(t.path.as_str()).header("host", t.addr.to_string());
        for (k, v) in &t.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(t.body.clone()))
            .unwrap_or_else(|e| panic!("request: {e}"))
    }

    /// Send and read the whole response; returns the status.
    pub async fn send(&mut self, t: &Target) -> Result<u16, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(Self::request(t))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }

    /// Send a streaming request; returns (time to first frame, gaps between frames, frames).
    pub async fn stream(&mut self, t: &Target) -> Result<SseTiming, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let start = Instant::now();
        let resp = self
            .sender
            .send_request(Self::request(t))
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("status {}", resp.status()));
        }
        let head = start.elapsed();
        let mut body = resp.into_body();
        let mut first = None;
        let mut last = start;
        let mut gaps = Vec::with_capacity(64);
        let mut frames = 0;
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| e.to_string())?;
            if let Some(d) = f.data_ref().filter(|d| !d.is_empty()) {
                let now = Instant::now();
                if first.is_none() {
                    first = Some(now - start);
                } else {
                    gaps.push(now - last);
                }
                last = now;
                // Count SSE events, not reads: TCP may deliver two events in one read.
                frames += d.windows(2).filter(|w| w == b"\n\n").count();
            }
        }
        Ok(SseTiming {
            head,
            first: first.unwrap_or_default(),
            gaps,
            frames,
        })
    }
}

pub struct SseTiming {
    /// Time to the response head.
    pub head: Duration,
    /// Time to the first event.
    pub first: Duration,
    pub gaps: Vec<Duration>,
    pub frames: usize,
}

/// Result of a load run.
#[derive(Default)]
pub struct Run {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub elapsed: Duration,
}

/// When a job is due: `None` for "now" (latency from the send), or the intended send time
/// (latency from then, so time spent queued behind a slow response counts).
type Due = Option<Instant>;

/// Run `conns` connection tasks pulling jobs from `next_job` (job index → due time, `None` when
/// done); requests that fail are counted and the connection is reopened.
async fn run_conns<F>(t: &Target, conns: usize, next_job: F) -> Run
where
    F: Fn(u64) -> Option<Due> + Send + Sync + 'static,
{
    let counter = Arc::new(AtomicU64::new(0));
    let next_job = Arc::new(next_job);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (t, counter, next_job) = (t.clone(), counter.clone(), next_job.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let Ok(mut c) = Conn::open(t.addr).await else {
                return (lat, 1);
            };
            while let Some(due) = next_job(counter.fetch_add(1, Ordering::Relaxed)) {
                if let Some(at) = due {
                    tokio::time::sleep_until(at.into()).await;
                }
                let from = due.unwrap_or_else(Instant::now);
                match c.send(&t).await {
                    Ok(200) => lat.push(from.elapsed()),
                    _ => {
                        errors += 1;
                        if let Ok(nc) = Conn::open(t.addr).await {
                            c = nc;
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut run = Run::default();
    for task in tasks {
        if let Ok((l, e)) = task.await {
            run.latencies.extend(l);
            run.errors += e;
        }
    }
    run.elapsed = start.elapsed();
    run
}

/// `conns` connections sending back to back until `count` requests are done.
pub async fn closed_loop(t: &Target, conns: usize, count: usize) -> Run {
    run_conns(t, conns, move |i| (i < count as u64).then_some(None)).await
}

/// Fixed `rate` (req/s) for `duration` over up to `conns` connections.
pub async fn open_loop(t: &Target, rate: f64, duration: Duration, conns: usize) -> Run {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let mut run = run_conns(t, conns, move |i| {
        (i < total).then(|| Some(start + interval.mul_f64(i as f64)))
    })
    .await;
    run.elapsed = run.elapsed.saturating_sub(Duration::from_millis(20));
    run
}

/// Percentile (0..=100) of sorted durations, in microseconds.
pub fn pct_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e6
}
