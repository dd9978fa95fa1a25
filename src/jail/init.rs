//! The jail's init, in two steps, both `ccproxy __jail-init`:
//! 1. the door (started by the keeper): enters a new pid namespace and starts step 2, which
//!    becomes its pid 1; it relays signals to it and exits with its status. It stays
//!    single-threaded (after `unshare(CLONE_NEWPID)` no thread can be created) and waits with
//!    `sigwait`;
//! 2. pid 1 (`--pid1`): drops every capability (the command cannot change the jail's network),
//!    runs the command, passes on `SIGTERM`/`SIGHUP`/`SIGUSR1`/`SIGUSR2`, reaps every orphan,
//!    and exits with the command's status. When it exits the kernel kills whatever the command
//!    left running in the jail.
//!
//! Ctrl-C is not relayed: the terminal sends `SIGINT` to the whole foreground process group,
//! which includes the command, and relaying it would deliver it twice. Pid 1 ignores signals
//! it has no handler for, so init itself outlives the `SIGINT` and reports the command's exit.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::process::ExitCode;

pub fn run(pid1: bool, command: &[String]) -> ExitCode {
    if !pid1 {
        return door(command);
    }
    // The door blocked these signals to wait for them; a child inherits the mask.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    // Die with the keeper (its death takes the whole jail down).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if let Err(e) = drop_capabilities() {
        eprintln!("ccproxy run --inspect: cannot drop capabilities: {e}");
        return ExitCode::from(super::keeper::SETUP_FAILED);
    }
    let Some((program, args)) = command.split_first() else {
        return ExitCode::from(super::keeper::SETUP_FAILED);
    };
    let child = match std::process::Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ccproxy run: cannot run {program}: {e}");
            // As shells report it: 127 not found, 126 found but not runnable.
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return ExitCode::from(code);
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(super::keeper::SETUP_FAILED),
    };
    ExitCode::from(rt.block_on(supervise(pid)))
}

/// Relay signals to `pid` and reap children until `pid` exits; its exit code.
async fn supervise(pid: Pid) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(super::forward_signals(pid));
    let Ok(mut chld) = signal(SignalKind::child()) else {
        // Without SIGCHLD notifications, block on the command alone.
        return match waitpid(pid, None) {
            Ok(s) => wait_code(s).unwrap_or(1),
            Err(_) => 1,
        };
    };
    loop {
        // Reap everything that has exited (orphans are re-parented to init).
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(pid) {
                        if let Some(code) = wait_code(status) {
                            return code;
                        }
                    }
                }
            }
        }
        if chld.recv().await.is_none() {
            return 1;
        }
    }
}

/// Step 1: a new pid namespace, step 2 as its pid 1; relay signals, return its status.
fn door(command: &[String]) -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
        eprintln!("ccproxy run --inspect: cannot create a pid namespace: {e}");
        return ExitCode::from(super::keeper::SETUP_FAILED);
    }
    let mut waited = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        waited.add(sig);
    }
    // Blocked before the child exists, so its exit cannot be missed (the child inherits the
    // mask and unblocks them first thing).
    if waited.thread_block().is_err() {
        return ExitCode::from(super::keeper::SETUP_FAILED);
    }
    let child = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("__jail-init")
            .arg("--pid1")
            .arg("--")
            .args(command)
            .spawn()
    });
    let pid = match child {
        Ok(c) => Pid::from_raw(c.id() as i32),
        Err(e) => {
            eprintln!("ccproxy run --inspect: cannot start the jail's init: {e}");
            return ExitCode::from(super::keeper::SETUP_FAILED);
        }
    };
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    if let Some(code) = wait_code(status) {
                        return ExitCode::from(code);
                    }
                }
            }
            // The terminal's signals reach the command directly (see the module docs).
            Ok(Signal::SIGINT | Signal::SIGQUIT) => {}
            Ok(sig) => {
                let _ = nix::sys::signal::kill(pid, sig);
            }
            Err(_) => return ExitCode::from(super::keeper::SETUP_FAILED),
        }
    }
}

fn wait_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128u8.wrapping_add(sig as u8)),
        _ => None,
    }
}

/// Empty every capability set, the bounding set first (a root user would otherwise regain the
/// bounding set at `exec`). The keeper passed `CAP_SETPCAP` down (as an ambient capability)
/// for this.
fn drop_capabilities() -> Result<(), String> {
    use caps::CapSet;
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    if permitted.is_empty() {
        return Ok(());
    }
    let supported = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    for cap in supported {
        caps::drop(None, CapSet::Bounding, cap).map_err(|e| e.to_string())?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| e.to_string())?;
    }
    Ok(())
}
