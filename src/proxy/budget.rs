//! The global budget for buffered request bodies (`max_buffered_body_bytes`).
//!
//! Every request body is read whole before routing (see [`super::replay`]), so without a ceiling
//! `max_request_body_bytes` × concurrency is unbounded. A request reserves its declared length
//! before reading (or grows its reservation chunk by chunk when the length is not declared); when
//! the budget cannot cover it the request gets `503` with `retry-after`, and
//! `ccproxy_body_budget_rejections_total` counts it. The reservation ([`BodyPermit`]) is released
//! when the request's context is dropped, on every path.

use prometheus::{IntCounter, IntGauge};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of request bodies held at once, over all requests.
pub struct BodyBudget {
    limit: u64,
    used: AtomicU64,
    /// `ccproxy_buffered_body_bytes`.
    gauge: IntGauge,
    /// `ccproxy_body_budget_rejections_total`.
    rejections: IntCounter,
}

impl BodyBudget {
    pub fn new(limit: u64, gauge: IntGauge, rejections: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            gauge,
            rejections,
        })
    }

    /// The configured ceiling.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: u64) -> bool {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(bytes).filter(|n| *n <= self.limit) else {
                self.rejections.inc();
                return false;
            };
            match self.used.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.gauge.add(bytes as i64);
                    return true;
                }
                Err(seen) => current = seen,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.sub(bytes as i64);
    }

    /// Reserve `bytes`; `None` when the budget cannot cover them.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<BodyPermit> {
        self.take(bytes).then(|| BodyPermit {
            budget: self.clone(),
            bytes,
        })
    }
}

/// A request's share of the budget; released on drop.
pub struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl BodyPermit {
    /// Make sure the permit covers `total` bytes; `false` when the budget cannot.
    pub fn cover(&mut self, total: u64) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        if self.budget.take(more) {
            self.bytes = total;
            true
        } else {
            false
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> Arc<BodyBudget> {
        BodyBudget::new(
            limit,
            IntGauge::new("g", "g").unwrap(),
            IntCounter::new("c", "c").unwrap(),
        )
    }

    #[test]
    fn reservations_are_bounded_and_released_on_drop() {
        let b = budget(100);
        let p = b.reserve(60).unwrap();
        assert!(b.reserve(50).is_none());
        assert_eq!(b.rejections.get(), 1);
        let mut q = b.reserve(40).unwrap();
        assert!(!q.cover(41));
        assert!(q.cover(40));
        drop(p);
        assert!(q.cover(100));
        assert_eq!(b.used(), 100);
        assert_eq!(b.gauge.get(), 100);
        drop(q);
        assert_eq!(b.used(), 0);
        assert_eq!(b.gauge.get(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let b = budget(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(p) = b.reserve(300) {
                            assert!(b.used() <= 1000);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0);
    }
}
