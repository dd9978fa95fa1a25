//! `ccproxy logs [-f] [-n N]`: print the tail of the gateway's log file, optionally following it.

use crate::config::ConfigLocation;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(location: ConfigLocation, follow: bool, lines: usize) -> ExitCode {
    let Some(config) = super::load_config(location) else {
        return ExitCode::FAILURE;
    };
    let Some(path) = config.log_file else {
        eprintln!("No log file: log_file is disabled in the config");
        return ExitCode::FAILURE;
    };
    if !path.is_file() {
        eprintln!("No log file at {}", path.display());
        return ExitCode::FAILURE;
    }
    match tail(&path, lines, follow) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ccproxy logs: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The last `n` lines of `data`.
pub fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

fn tail(path: &Path, n: usize, follow: bool) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let mut out = std::io::stdout().lock();
    out.write_all(last_lines(&data, n))?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut pos = data.len() as u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(pos);
        if len < pos {
            // Truncated (the daemon restarted): start over.
            f = std::fs::File::open(path)?;
            pos = 0;
        }
        f.seek(SeekFrom::Start(pos))?;
        let read = f.read(&mut buf)?;
        if read == 0 {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        out.write_all(&buf[..read])?;
        out.flush()?;
        pos += read as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }
}
