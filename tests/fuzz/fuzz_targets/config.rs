//! The config loader: any text as `ccproxy.yaml`; a config or one error line, never a panic.
#![no_main]

use ccproxy::config::{Config, ConfigLocation};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loc = ConfigLocation {
        dir: PathBuf::from("/nonexistent-ccproxy-fuzz"),
        file: PathBuf::from("/nonexistent-ccproxy-fuzz/ccproxy.yaml"),
    };
    match Config::from_yaml_with_env(text, loc, true, |_| None) {
        Ok(c) => {
            // The server's half of loading: the hook pipeline.
            let _ = ccproxy::proxy::server::pipeline(&c);
        }
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "config errors are one line: {line:?}");
        }
    }
});
