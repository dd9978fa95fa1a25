//! The `ccproxy` binary: parse the command line and hand over to [`ccproxy::cli`].

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: Pingora allocates on every request; glibc's malloc spends a fifth of the
/// gateway's instructions there, mimalloc about half that (benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ccproxy::cli::dispatch(ccproxy::cli::Cli::parse())
}
