//! `verbose_mode` (outbound): keeps thinking visible by dropping `redact-thinking-*` betas.
//!
//! Applies to Anthropic requests (guard: `anthropic-version` present). Items of the comma-separated
//! `anthropic-beta` header that start with one of `strip_prefixes` are removed; the header is
//! rewritten only if something was removed, and removed entirely if nothing is left.

use crate::hooks::registry::{parse_params, HookSpec};
use crate::hooks::{Hook, HookContext, HookError, Stage};
use serde::Deserialize;
use std::sync::Arc;

pub const SPEC: HookSpec = HookSpec {
    name: "verbose_mode",
    stage: Stage::Outbound,
    reads: &["anthropic-beta"],
    writes: &["anthropic-beta"],
    summary: "drop redact-thinking-* items from anthropic-beta",
    build: |p| {
        let params: Params = parse_params(p)?;
        if params.strip_prefixes.iter().any(String::is_empty) {
            return Err((
                "strip_prefixes".to_owned(),
                "an empty prefix would strip every beta".to_owned(),
            ));
        }
        Ok(Arc::new(VerboseMode { params }))
    },
};

/// Params of `verbose_mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Beta names starting with any of these are removed.
    pub strip_prefixes: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            strip_prefixes: vec!["redact-thinking-".to_owned()],
        }
    }
}

struct VerboseMode {
    params: Params,
}

/// The beta list without stripped items, or `None` when nothing changes.
pub fn filter_betas(value: &str, prefixes: &[String]) -> Option<String> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    let kept: Vec<&str> = items
        .iter()
        .copied()
        .filter(|i| !prefixes.iter().any(|p| i.starts_with(p.as_str())))
        .collect();
    (kept.len() != items.len()).then(|| kept.join(","))
}

#[async_trait::async_trait]
impl Hook for VerboseMode {
    fn guard(&self, cx: &HookContext<'_>) -> bool {
        const ANTHROPIC_VERSION: http::HeaderName =
            http::HeaderName::from_static("anthropic-version");
        cx.headers.headers.contains_key(ANTHROPIC_VERSION)
    }

    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError> {
        let Some(current) = cx.header("anthropic-beta") else {
            return Ok(());
        };
        let Some(next) = filter_betas(current, &self.params.strip_prefixes) else {
            return Ok(());
        };
        if next.is_empty() {
            cx.headers.remove_header("anthropic-beta");
        } else {
            cx.headers
                .insert_header("anthropic-beta", next)
                .map_err(|e| HookError::soft(format!("cannot set anthropic-beta: {e}")))?;
        }
        Ok(())
    }

    fn describe_params(&self) -> Vec<(String, String)> {
        vec![(
            "strip_prefixes".to_owned(),
            self.params.strip_prefixes.join(", "),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_redact_thinking() {
        let p = Params::default().strip_prefixes;
        assert_eq!(
            filter_betas("redact-thinking-2025,foo", &p).as_deref(),
            Some("foo")
        );
        assert_eq!(
            filter_betas("a, redact-thinking-x ,b", &p).as_deref(),
            Some("a,b")
        );
        assert_eq!(filter_betas("foo,bar", &p), None);
        assert_eq!(filter_betas("redact-thinking-1", &p).as_deref(), Some(""));
    }
}
