//! `ccproxy ca`: create the local CA if needed and print where it is and how to trust it.

use crate::config::ConfigLocation;
use crate::local_ca::{trust_instructions, LocalCa};
use std::process::ExitCode;

pub fn run(location: &ConfigLocation) -> ExitCode {
    match LocalCa::load_or_create(&location.dir) {
        Ok(ca) => {
            print!("{}", trust_instructions(ca.cert_path()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ccproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
