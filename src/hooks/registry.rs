//! The static table of built-in hooks, looked up by the name used in `ccproxy.yaml`.
//!
//! Each [`HookSpec`] carries what the DAG and `ccproxy status` need (stage, reads, writes) and a
//! constructor that validates the entry's params. Adding a hook = one entry in [`BUILTIN`].

use super::builtin;
use super::{Hook, Stage};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Constructor: params (if any) → hook, or `(key path inside params, message)`.
pub type BuildFn = fn(Option<&serde_yaml::Value>) -> Result<Arc<dyn Hook>, (String, String)>;

/// A built-in hook's descriptor.
pub struct HookSpec {
    pub name: &'static str,
    pub stage: Stage,
    pub reads: &'static [&'static str],
    pub writes: &'static [&'static str],
    pub summary: &'static str,
    pub build: BuildFn,
}

/// Every built-in hook.
pub static BUILTIN: &[HookSpec] = &[
    builtin::forward_oauth::SPEC,
    builtin::extract_session_id::SPEC,
    builtin::verbose_mode::SPEC,
    builtin::commitbee_compat::SPEC,
    builtin::gemini_cli::SPEC,
];

pub fn find(name: &str) -> Option<&'static HookSpec> {
    BUILTIN.iter().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|s| s.name).collect()
}

/// Deserialize a hook's params strictly, reporting the key path of a bad value.
/// Absent params = `P::default()`.
pub fn parse_params<P: DeserializeOwned + Default>(
    params: Option<&serde_yaml::Value>,
) -> Result<P, (String, String)> {
    match params {
        None | Some(serde_yaml::Value::Null) => Ok(P::default()),
        Some(v) => serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, e.into_inner().to_string())
        }),
    }
}

/// For hooks without params: any non-empty params are an error.
pub fn no_params(params: Option<&serde_yaml::Value>) -> Result<(), (String, String)> {
    match params {
        None | Some(serde_yaml::Value::Null) => Ok(()),
        Some(serde_yaml::Value::Mapping(m)) if m.is_empty() => Ok(()),
        Some(_) => Err((String::new(), "takes no params".to_owned())),
    }
}
