//! Built-in hooks (spec §5.7). Each submodule owns one hook: its [`super::HookSpec`], params and
//! behaviour.

pub mod commitbee_compat;
pub mod extract_session_id;
pub mod forward_oauth;
pub mod gemini_cli;
pub mod verbose_mode;
