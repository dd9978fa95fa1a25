//! Code Assist capacity fallback (spec §8.6): when Code Assist answers 429/503/500 with
//! `RESOURCE_EXHAUSTED` or `INTERNAL`, send the request again — first to the same model
//! ("sticky" retries, honouring the answer's `RetryInfo.retryDelay`, else backing off 1, 2,
//! 4… s), then to each fallback model once — all within a time budget. The client gets the
//! first success, or the original error.
//!
//! This module is the decision only ([`Plan::next`]); the retries go through the gateway's
//! one retry mechanism (`proxy::retry`), which holds the error answer back from the client
//! while it decides.

use serde_json::Value;
use std::time::{Duration, Instant};

pub use crate::config::CapacityPolicy as Policy;

/// A capacity error as Code Assist reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityError {
    /// `RetryInfo.retryDelay` of the answer.
    pub retry_delay: Option<Duration>,
}

/// `{"error": {"code": c, "status": "RESOURCE_EXHAUSTED" | "INTERNAL", "details": […]}}`
/// with `c` one of `codes`; `None` for anything else.
pub fn capacity_error(body: &[u8], codes: &[u16]) -> Option<CapacityError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let code = e.get("code")?.as_u64()?;
    if !codes.iter().any(|c| u64::from(*c) == code) {
        return None;
    }
    let status = e.get("status")?.as_str()?;
    if status != "RESOURCE_EXHAUSTED" && status != "INTERNAL" {
        return None;
    }
    let retry_delay = e
        .get("details")
        .and_then(Value::as_array)
        .and_then(|d| {
            d.iter().find(|x| {
                x.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.contains("RetryInfo"))
            })
        })
        .and_then(|x| x.get("retryDelay")?.as_str())
        .and_then(parse_delay);
    Some(CapacityError { retry_delay })
}

/// `^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$`; a bare number is seconds.
pub fn parse_delay(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mut parts = num.split('.');
    let whole = parts.next()?;
    let frac = parts.next();
    if whole.is_empty()
        || parts.next().is_some()
        || frac.is_some_and(|f| f.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = n * scale;
    (secs.is_finite() && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// What to do after a capacity error.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Wait `delay`, then send the request to `model`.
    Retry { model: String, delay: Duration },
    /// Give up: the client gets the original error.
    Stop,
}

/// The retries of one request: candidates `(model, attempts)` in order and where we are.
#[derive(Debug, Clone)]
pub struct Plan {
    candidates: Vec<(String, u32)>,
    index: usize,
    /// Attempts made on the current candidate.
    made: u32,
    deadline: Instant,
    policy: Policy,
}

impl Plan {
    /// The plan for a request to `model` that just failed for capacity at `now`.
    pub fn new(policy: &Policy, model: &str, now: Instant) -> Self {
        let mut candidates = vec![(model.to_owned(), policy.sticky_attempts)];
        candidates.extend(
            policy
                .fallback_models
                .iter()
                .filter(|m| *m != model)
                .map(|m| (m.clone(), 1)),
        );
        Self {
            candidates,
            index: 0,
            made: 0,
            deadline: now + policy.budget,
            policy: policy.clone(),
        }
    }

    /// The next attempt after a capacity error whose `retryDelay` was `retry_delay`.
    pub fn next(&mut self, retry_delay: Option<Duration>, now: Instant) -> Decision {
        loop {
            let Some((model, attempts)) = self.candidates.get(self.index) else {
                return Decision::Stop;
            };
            if self.made >= *attempts {
                self.index += 1;
                self.made = 0;
                continue;
            }
            let delay = if self.index > 0 && self.made == 0 {
                // A fallback model's first attempt goes at once.
                Duration::ZERO
            } else {
                retry_delay.unwrap_or_else(|| match self.made {
                    0 => Duration::ZERO,
                    k => Duration::from_secs(1u64 << (k - 1).min(20)),
                })
            };
            if delay > self.policy.terminal_delay {
                return Decision::Stop;
            }
            if delay > self.policy.sticky_max_delay {
                self.index += 1;
                self.made = 0;
                continue;
            }
            if now + delay > self.deadline {
                return Decision::Stop;
            }
            self.made += 1;
            return Decision::Retry {
                model: model.clone(),
                delay,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(sticky: u32, fallback: &[&str]) -> Policy {
        Policy {
            retry_status_codes: vec![429, 503, 500],
            fallback_models: fallback.iter().map(|s| (*s).to_owned()).collect(),
            sticky_attempts: sticky,
            sticky_max_delay: Duration::from_secs(60),
            terminal_delay: Duration::from_secs(300),
            budget: Duration::from_secs(120),
        }
    }

    /// Run a plan where every attempt fails with `delay`; returns (model, delay) of each retry.
    fn run(p: &Policy, delay: Option<Duration>) -> Vec<(String, f64)> {
        let now = Instant::now();
        let mut plan = Plan::new(p, "orig", now);
        let mut out = Vec::new();
        let mut t = now;
        while let Decision::Retry { model, delay: d } = plan.next(delay, t) {
            t += d;
            out.push((model, d.as_secs_f64()));
        }
        out
    }

    #[test]
    fn spec_examples() {
        let seven = capacity_error(
            br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}"#,
            &[429, 503, 500],
        )
        .unwrap();
        assert_eq!(seven.retry_delay, Some(Duration::from_secs(7)));
        assert_eq!(
            run(&policy(3, &["gemini-2.5-pro"]), seven.retry_delay)[0],
            ("orig".to_owned(), 7.0)
        );
        // No delay, 4 sticky: sleeps 1, 2, 4 (the first retry goes at once).
        let sleeps: Vec<f64> = run(&policy(4, &[]), None)
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| *d > 0.0)
            .collect();
        assert_eq!(sleeps, [1.0, 2.0, 4.0]);
        // Sticky 2: the models sent after the original are orig, orig, then the fallback.
        let models: Vec<String> = run(&policy(2, &["gemini-2.5-pro"]), None)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(models, ["orig", "orig", "gemini-2.5-pro"]);
    }

    #[test]
    fn delays_past_the_limits_move_on_or_stop() {
        // Over the sticky maximum: straight to the fallback (which goes at once).
        let r = run(&policy(3, &["fb"]), Some(Duration::from_secs(90)));
        assert_eq!(r, [("fb".to_owned(), 0.0)]);
        // Over the terminal threshold: stop.
        assert!(run(&policy(3, &["fb"]), Some(Duration::from_secs(301))).is_empty());
        // The budget: 50 s delays fit twice into 120 s.
        let mut p = policy(3, &[]);
        p.sticky_max_delay = Duration::from_secs(100);
        assert_eq!(run(&p, Some(Duration::from_secs(50))).len(), 2);
    }

    #[test]
    fn only_capacity_errors_count() {
        let codes = [429, 503, 500];
        assert!(capacity_error(br#"{"error":{"code":500,"status":"INTERNAL"}}"#, &codes).is_some());
        assert!(capacity_error(
            br#"{"error":{"code":400,"status":"RESOURCE_EXHAUSTED"}}"#,
            &codes
        )
        .is_none());
        assert!(capacity_error(
            br#"{"error":{"code":429,"status":"PERMISSION_DENIED"}}"#,
            &codes
        )
        .is_none());
        assert!(capacity_error(b"not json", &codes).is_none());
    }

    #[test]
    fn delay_syntax() {
        assert_eq!(parse_delay("7s"), Some(Duration::from_secs(7)));
        assert_eq!(parse_delay(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_delay("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_delay("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "1.", ".5", "-1s", "1d", "1.2.3"] {
            assert_eq!(parse_delay(bad), None, "{bad}");
        }
    }
}
