//! `ccproxy fingerprint [--profile P] [--insecure] URL`: connect with a browser profile (or the
//! default TLS stack), and print the JA4/JA3 of the ClientHello ccproxy wrote, the negotiated
//! protocol and the server's answer status.

use crate::fingerprint::profile::Profile;
use std::process::ExitCode;

pub fn run(profile: Option<&str>, insecure: bool, url: &str) -> ExitCode {
    let profile = match profile.map(Profile::by_name).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ccproxy fingerprint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccproxy fingerprint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let probe = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            crate::fingerprint::probe(url, profile, insecure),
        )
        .await
    });
    match probe {
        Ok(Ok(p)) => {
            println!(
                "profile   {}",
                profile.map_or("none (default TLS stack)", Profile::name)
            );
            println!("JA4       {}", p.ja4);
            println!("JA3       {}", p.ja3_md5);
            println!("JA3 text  {}", p.ja3);
            println!(
                "TLS       {} {} ALPN {}",
                p.tls_version,
                p.cipher,
                p.alpn.as_deref().unwrap_or("none")
            );
            println!("status    {}", p.status);
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("ccproxy fingerprint: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("ccproxy fingerprint: {url} did not answer within 20 s");
            ExitCode::FAILURE
        }
    }
}
