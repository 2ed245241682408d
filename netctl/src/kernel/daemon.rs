//! The commands' side of the daemon: nobody starts it by hand. After every commit the
//! command makes the daemon match the state it saved — starts it when some network needs it
//! and it is not running (or died), tells a running one to reload and waits until it serves
//! the new state, so `rm` returns only once the container no longer resolves. A daemon no
//! network needs exits by itself at that reload.

use std::os::unix::fs::MetadataExt;
use std::{
    fs::OpenOptions,
    os::unix::{fs::OpenOptionsExt, process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::kernel::pidfile;
use crate::{base::config::Config, model::state::State};

pub const LOG: &str = "daemon.log";
/// The log is started afresh past this size.
pub const LOG_MAX: u64 = 1 << 20;
/// How long a command waits for a running daemon to take a new state, and for a new one to
/// come up.
const RELOAD_WAIT: Duration = Duration::from_secs(1);
const START_WAIT: Duration = Duration::from_secs(3);

/// Some network needs the daemon: every network follows the host's interfaces (published
/// ports answer on new NICs), user-defined ones have embedded DNS, overlays the cluster agent.
pub fn needed(state: &State) -> bool {
    !state.networks.is_empty()
}

/// Makes the daemon serve `state`, just saved. Problems are warnings: the bridge basics
/// work without the daemon.
/// `generation` is the state's, as committed.
pub fn after_commit(cfg: &Config, state: &State, generation: u64, wait: bool) {
    if let Err(e) = follow(cfg, state, generation, wait) {
        eprintln!(
            "netctl: warning: {e:#} (container names may not resolve; see {})",
            cfg.state_dir.join(LOG).display()
        );
    }
}

fn follow(cfg: &Config, state: &State, want: u64, wait: bool) -> Result<()> {
    let need = needed(state);
    if cfg.save_daemon_settings()? {
        // New settings: a new daemon takes them (the running one read its own at start).
        stop(&cfg.state_dir);
    }
    match pidfile::running(&cfg.state_dir) {
        Some(pid) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
            if need && wait && !wait_loaded(&cfg.state_dir, want, RELOAD_WAIT, false) {
                // It may have been on its way out (nothing needed it a moment ago).
                if pidfile::running(&cfg.state_dir).is_some() {
                    bail!(
                        "the netctl daemon (pid {pid}) did not take the new state within {} s",
                        RELOAD_WAIT.as_secs()
                    );
                }
                start(cfg, want)?;
            }
        }
        None if need => start(cfg, want)?,
        None => {}
    }
    Ok(())
}

/// Stops the running daemon (SIGTERM) and waits until it is gone, at most a few seconds.
fn stop(state_dir: &Path) {
    let Some(pid) = pidfile::running(state_dir) else {
        return;
    };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + START_WAIT;
    while pidfile::running(state_dir).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True once the daemon says it serves `want` (or a later change); false after `limit` or
/// when it is gone. `starting`: one just started, which is not gone before it was there (on
/// a busy host it may take longer than a check's interval to write its pidfile).
fn wait_loaded(state_dir: &Path, want: u64, limit: Duration, starting: bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut n = 0u32;
    let mut seen = !starting;
    while Instant::now() < deadline {
        if loaded(state_dir).is_some_and(|g| g >= want) {
            return true;
        }
        n += 1;
        if n.is_multiple_of(50) {
            match pidfile::running(state_dir) {
                Some(_) => seen = true,
                None if seen => return false,
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Starts `netctl daemon` in this namespace, detached (a session of its own, re-parented
/// away from the command), logging to `daemon.log`, and waits until it serves `want`.
fn start(cfg: &Config, want: u64) -> Result<()> {
    let log_path = cfg.state_dir.join(LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    if log.metadata().is_ok_and(|m| m.len() > LOG_MAX) {
        let _ = log.set_len(0);
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A test's crash point is for the command, never for the daemon it starts; a CNI
        // runtime's request is for the plugin that starts it, not for the daemon.
        .env_remove("NETCTL_FAILPOINT");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(key);
        }
    }
    // SAFETY: fork, _exit and setsid are async-signal-safe. The middle process exits at once
    // (reaped below), so the daemon is nobody's child and never a zombie of a long `run`.
    unsafe {
        cmd.pre_exec(|| {
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            libc::setsid();
            Ok(())
        });
    }
    let mut middle = cmd.spawn().context("starting the netctl daemon")?;
    let _ = middle.wait();
    if !wait_loaded(&cfg.state_dir, want, START_WAIT, true) {
        bail!("the netctl daemon did not come up");
    }
    Ok(())
}

pub const LOADED: &str = "daemon.loaded";

/// A file as it is now: inode, modification time and size ("-" when missing).
pub fn identity(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{}:{}.{}:{}", m.ino(), m.mtime(), m.mtime_nsec(), m.len()),
        Err(_) => "-".into(),
    }
}

/// The state generation the daemon last loaded.
pub fn loaded(state_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(state_dir.join(LOADED))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Says which state is being served (atomically: a command never reads half a line).
pub fn acknowledge(state_dir: &Path, generation: u64) -> Result<()> {
    crate::base::atomic_file::write_cache(
        &state_dir.join(LOADED),
        format!("{generation}\n").as_bytes(),
        0o600,
    )
}
