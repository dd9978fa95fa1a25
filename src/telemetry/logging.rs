//! Logging: `tracing` to stderr and, for the daemon, to the configured log file (truncated at each
//! start, spec §13). Pingora logs through the `log` crate; tracing-subscriber's `tracing-log`
//! bridge carries those records into the same outputs. Never log secrets here or anywhere.

use crate::config::LogLevel;
use std::fs::File;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `verbosity` (from `-v` flags) raises the level; `RUST_LOG`
/// overrides everything. Returns an error message if the log file cannot be created.
pub fn init(level: LogLevel, verbosity: u8, file: Option<&Path>) -> Result<(), String> {
    let level = match verbosity {
        0 => level,
        1 => LogLevel::Debug.min_with(level),
        _ => LogLevel::Trace,
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_directives(level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
            }
            let f = File::create(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            let f = Arc::new(f);
            builder
                .with_ansi(false)
                .with_writer(std::io::stderr.and(f))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // Already initialised (tests start several gateways in one process): keep the first.
    let _ = result;
    Ok(())
}

fn default_directives(level: LogLevel) -> String {
    // Pingora is chatty at info (per-connection lines); keep it one notch quieter.
    let pingora = match level {
        LogLevel::Trace | LogLevel::Debug => level.as_filter(),
        _ => "warn",
    };
    format!(
        "{},pingora_core={pingora},pingora_proxy={pingora},pingora={pingora}",
        level.as_filter()
    )
}

impl LogLevel {
    /// The more verbose of the two.
    fn min_with(self, other: LogLevel) -> LogLevel {
        use LogLevel::*;
        let rank = |l: LogLevel| match l {
            Trace => 0,
            Debug => 1,
            Info => 2,
            Warn => 3,
            Error => 4,
        };
        if rank(self) <= rank(other) {
            self
        } else {
            other
        }
    }
}
