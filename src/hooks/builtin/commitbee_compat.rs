//! `commitbee_compat` (outbound): tells commit-message generators to answer with bare JSON.
//!
//! Guard: the `system` prompt (a string, or any text block) contains the commitbee marker. The
//! instruction is appended to the string, or to the last block that contains the marker.

use crate::hooks::registry::{no_params, HookSpec};
use crate::hooks::{Hook, HookContext, HookError, Stage};
use serde_json::Value;
use std::sync::Arc;

pub const MARKER: &str = "You generate Conventional Commit messages from git diffs";

pub const INSTRUCTION: &str = "\n\nCRITICAL FORMATTING RULE: You MUST output ONLY the raw JSON object. Do NOT use ```json code fences. Do NOT use any markdown formatting. Your entire response must be parseable by JSON.parse() with zero preprocessing.";

pub const SPEC: HookSpec = HookSpec {
    name: "commitbee_compat",
    stage: Stage::Outbound,
    reads: &["system"],
    writes: &["system"],
    summary: "force raw-JSON answers for commitbee commit-message prompts",
    build: |p| {
        no_params(p)?;
        Ok(Arc::new(CommitbeeCompat))
    },
};

struct CommitbeeCompat;

fn block_has_marker(b: &Value) -> bool {
    b.get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| t.contains(MARKER))
}

fn matches(system: &Value) -> bool {
    match system {
        Value::String(s) => s.contains(MARKER),
        Value::Array(blocks) => blocks.iter().any(block_has_marker),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Hook for CommitbeeCompat {
    fn guard(&self, cx: &HookContext<'_>) -> bool {
        // Cheap pre-checks on the raw text (the marker has no characters JSON escapes).
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARKER));
        if !cx.body.may_contain(&FINDER)
            || !cx
                .body
                .field_raw("system")
                .is_some_and(|s| s.contains(MARKER))
        {
            return false;
        }
        cx.body
            .field::<Value>("system")
            .is_some_and(|s| matches(&s))
    }

    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError> {
        let Some(system) = cx.body.json_mut().and_then(|b| b.get_mut("system")) else {
            return Ok(());
        };
        match system {
            Value::String(s) if s.contains(MARKER) => s.push_str(INSTRUCTION),
            Value::Array(blocks) => {
                if let Some(Value::String(t)) = blocks
                    .iter_mut()
                    .rev()
                    .find(|b| block_has_marker(b))
                    .and_then(|b| b.get_mut("text"))
                {
                    t.push_str(INSTRUCTION);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
