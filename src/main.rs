//! The `ccproxy` binary: parse the command line and hand over to [`ccproxy::cli`].

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    ccproxy::cli::dispatch(ccproxy::cli::Cli::parse())
}
