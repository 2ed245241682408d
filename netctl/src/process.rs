//! The processes of containers: started inside the container's namespace, stopped with
//! SIGTERM then SIGKILL.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::{
    sched::{setns, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::netns;

/// A command that will run inside the namespace at `netns_path`.
pub fn command(netns_path: &Path, argv: &[String]) -> Result<(Command, File)> {
    let ns = netns::open(netns_path)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    // The File must outlive the spawn: the caller keeps it.
    Ok((cmd, ns))
}

/// Starts a detached process: own session, stdin from /dev/null, output to `log`.
pub fn spawn_detached(netns_path: &Path, argv: &[String], log: &Path) -> Result<u32> {
    let (mut cmd, _ns) = command(netns_path, argv)?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", argv[0]))?;
    Ok(child.id())
}

/// Starts a foreground process attached to our stdio.
pub fn spawn_foreground(netns_path: &Path, argv: &[String]) -> Result<Child> {
    let (mut cmd, _ns) = command(netns_path, argv)?;
    cmd.spawn()
        .with_context(|| format!("starting {:?}", argv[0]))
}

/// Start time of a process (clock ticks since boot), to tell a PID that was reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

pub fn is_running(pid: Option<u32>, start: Option<u64>) -> bool {
    match (pid, start) {
        (Some(pid), Some(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Stops every process in the container's namespace: SIGTERM, then SIGKILL for what is still
/// there after `grace` (at once when `grace` is zero).
pub fn stop_all(netns_path: &Path, grace: Duration) {
    let signal_all = |sig| {
        let pids = netns::pids_in(netns_path);
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
        !pids.is_empty()
    };
    if !grace.is_zero() && signal_all(Signal::SIGTERM) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if netns::pids_in(netns_path)
                .iter()
                .all(|p| start_time(*p as u32).is_none())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for _ in 0..50 {
        if !signal_all(Signal::SIGKILL) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
        if netns::pids_in(netns_path)
            .iter()
            .all(|p| start_time(*p as u32).is_none())
        {
            return;
        }
    }
}
