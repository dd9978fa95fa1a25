//! `ccproxy run -- cmd…` (plain mode): point the usual SDK base-URL variables at the gateway
//! and replace this process with the command, so its exit code is ccproxy's. With `--inspect`
//! the command runs in the jail instead ([`crate::jail`]).

use crate::config::ConfigLocation;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

/// Variables set to the gateway's base URL, with the suffix each SDK expects. The Anthropic SDK
/// appends `/v1/messages`; OpenAI SDKs append only `/chat/completions`, so their base carries
/// `/v1` (deliberate: the original set all three without `/v1`, which sent OpenAI SDK traffic to
/// `/chat/completions`, a path no provider route matches).
pub const BASE_URL_VARS: [(&str, &str); 3] = [
    ("ANTHROPIC_BASE_URL", ""),
    ("OPENAI_BASE_URL", "/v1"),
    ("OPENAI_API_BASE", "/v1"),
];

pub fn run(location: ConfigLocation, inspect: bool, command: &[String]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("ccproxy run: no command given (usage: ccproxy run -- <command> [args…])");
        return ExitCode::FAILURE;
    };
    let Some(config) = super::load_config(location) else {
        return ExitCode::FAILURE;
    };
    if inspect {
        return crate::jail::run_inspect(&config, command);
    }
    let url = config.base_url();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (var, suffix) in BASE_URL_VARS {
        cmd.env(var, format!("{url}{suffix}"));
    }
    // Only returns on failure.
    let err = cmd.exec();
    eprintln!("ccproxy run: cannot run {program}: {err}");
    ExitCode::FAILURE
}
