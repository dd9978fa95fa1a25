//! `extract_session_id` (inbound): reads the client's session id from `metadata.user_id`.
//!
//! Claude Code sends either a JSON object string (`{"session_id": …}`) or
//! `user_<hash>_account_<uuid>_session_<uuid>`; the id goes to the request metadata (logs, later
//! the flow store), never into the body.

use crate::hooks::registry::{no_params, HookSpec};
use crate::hooks::{Hook, HookContext, HookError, Stage};
use std::sync::Arc;

pub const SPEC: HookSpec = HookSpec {
    name: "extract_session_id",
    stage: Stage::Inbound,
    reads: &["metadata.user_id"],
    writes: &[],
    summary: "remember the client session id from metadata.user_id",
    build: |p| {
        no_params(p)?;
        Ok(Arc::new(ExtractSessionId))
    },
};

struct ExtractSessionId;

fn user_id(cx: &HookContext<'_>) -> Option<String> {
    // Most requests carry no user id: a byte search keeps them from paying for a JSON scan.
    // (A key spelled with escapes, `"user\u005fid"`, is not looked for; clients do not send that.)
    static USER_ID: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"user_id\""));
    if !cx.body.may_contain(&USER_ID) {
        return None;
    }
    let metadata: serde_json::Value = cx.body.field("metadata")?;
    metadata.get("user_id")?.as_str().map(str::to_owned)
}

/// The session id inside a `metadata.user_id` value.
pub fn parse_session_id(user_id: &str) -> Option<String> {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(user_id) {
        return o
            .get("session_id")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
    }
    let parts: Vec<&str> = user_id.split("_session_").collect();
    match parts.as_slice() {
        [_, sid] if !sid.is_empty() => Some((*sid).to_owned()),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Hook for ExtractSessionId {
    fn guard(&self, cx: &HookContext<'_>) -> bool {
        user_id(cx).is_some_and(|u| !u.is_empty())
    }

    async fn run(&self, cx: &mut HookContext<'_>) -> Result<(), HookError> {
        let Some(uid) = user_id(cx) else {
            return Ok(());
        };
        match parse_session_id(&uid) {
            Some(sid) => {
                cx.meta.session_id = Some(sid);
                Ok(())
            }
            None => Err(HookError::soft(
                "metadata.user_id has no session id (neither JSON with session_id nor *_session_<id>)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_session_id;

    #[test]
    fn legacy_user_id_format() {
        assert_eq!(
            parse_session_id("user_abc_account_123_session_9f8e").as_deref(),
            Some("9f8e")
        );
        assert_eq!(parse_session_id("user_abc"), None);
        assert_eq!(parse_session_id("a_session_b_session_c"), None);
    }

    #[test]
    fn json_user_id_format() {
        assert_eq!(
            parse_session_id(r#"{"device_id":"d","session_id":"s-1"}"#).as_deref(),
            Some("s-1")
        );
        assert_eq!(parse_session_id(r#"{"device_id":"d"}"#), None);
    }
}
