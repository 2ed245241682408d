//! The processes of containers: started inside the container's namespace (without netctl's
//! own environment), watched by a shim when detached, stopped with SIGTERM then SIGKILL.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    os::{
        fd::AsRawFd,
        unix::{fs::OpenOptionsExt, process::CommandExt},
    },
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sched::{setns, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::netns;

/// A command that will run inside the namespace at `netns_path` (None: the host's own,
/// for `--network host`).
pub fn command(netns_path: Option<&Path>, argv: &[String]) -> Result<(Command, Option<File>)> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // The container's environment is the user's, not netctl's configuration.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETCTL_") {
            cmd.env_remove(k);
        }
    }
    let Some(netns_path) = netns_path else {
        return Ok((cmd, None));
    };
    let ns = netns::open(netns_path)?;
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    // The File must outlive the spawn: the caller keeps it.
    Ok((cmd, Some(ns)))
}

/// Why a command could not start, with Docker's exit status for it: 127 not found,
/// 126 found but not executable.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

fn start_error(argv0: &str, e: &std::io::Error) -> StartError {
    let (code, why) = match e.kind() {
        std::io::ErrorKind::NotFound => (127, "executable file not found"),
        std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
        _ => (126, "cannot execute"),
    };
    StartError {
        code,
        message: format!("cannot start {argv0:?}: {why} ({e})"),
    }
}

/// The exit status as a shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })
}

/// Starts a detached container process through a shim (`netctl container-shim`): the shim
/// gets its own session, starts the process, waits for it and records its exit status in
/// `exit_file`. Output goes to `log`. Returns the container process's PID.
pub fn spawn_detached(
    netns_path: Option<&Path>,
    argv: &[String],
    log: &Path,
    exit_file: &Path,
) -> Result<u32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let mut shim = Command::new("/proc/self/exe");
    shim.arg("container-shim");
    if let Some(ns) = netns_path {
        shim.arg("--netns").arg(ns);
    }
    let mut shim = shim
        .arg(exit_file)
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(out)
        .spawn()
        .context("starting the container shim")?;
    let mut line = String::new();
    BufReader::new(shim.stdout.take().expect("piped"))
        .read_line(&mut line)
        .context("reading from the container shim")?;
    match line.trim().split_once(' ') {
        Some(("pid", pid)) => pid.parse().context("the container shim sent a bad pid"),
        Some(("error", rest)) => {
            let _ = shim.wait();
            let (code, message) = rest.split_once(' ').unwrap_or(("126", rest));
            Err(StartError {
                code: code.parse().unwrap_or(126),
                message: message.to_string(),
            }
            .into())
        }
        _ => {
            let _ = shim.wait();
            bail!(
                "the container shim failed (see the container's log {})",
                log.display()
            )
        }
    }
}

/// The shim's body (`netctl container-shim [--netns NETNS] EXIT_FILE -- CMD…`): a session of
/// its own, the container process started (in a process group of its own, which is how a
/// host-network container's processes are found) and reported on stdout, its exit status
/// recorded.
pub fn shim(netns_path: Option<&Path>, exit_file: &Path, argv: &[String]) -> i32 {
    let _ = nix::unistd::setsid();
    let mut report = std::io::stdout();
    let spawned = command(netns_path, argv).and_then(|(mut cmd, _ns)| {
        // Output goes where the shim's stderr goes: the log.
        let out = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned()?;
        cmd.stdin(Stdio::null())
            .stdout(File::from(out))
            .stderr(Stdio::inherit())
            .process_group(0);
        cmd.spawn().map_err(|e| start_error(&argv[0], &e).into())
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = e.downcast_ref::<StartError>().map_or(126, |s| s.code);
            let _ = writeln!(report, "error {code} {e:#}");
            return 1;
        }
    };
    let _ = writeln!(report, "pid {}", child.id());
    let _ = report.flush();
    // Nobody reads any more: let the caller go.
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto our own stdout.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let code = match child.wait() {
        Ok(status) => exit_code(status),
        Err(_) => 255,
    };
    let _ = record_exit(exit_file, code);
    0
}

/// Writes "CODE FINISHED_AT" atomically.
pub fn record_exit(path: &Path, code: i32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{code} {}", crate::state::now())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// (exit code, finished at) as recorded by the shim.
pub fn recorded_exit(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

static FOREGROUND: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A terminal's Ctrl-C already reached the process (same process group); only signals
    // sent to netctl itself (kill, timeout, a supervisor) are passed on.
    // SAFETY: the kernel hands a valid siginfo to SA_SIGINFO handlers.
    let from_terminal = unsafe { (*info).si_code } == libc::SI_KERNEL;
    let pid = FOREGROUND.load(Ordering::Relaxed);
    if pid > 0 && !from_terminal {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Starts a foreground process attached to our stdio; signals sent to netctl (SIGTERM,
/// SIGHUP, SIGINT, SIGQUIT, SIGUSR1/2) are passed on to it, as Docker's sig-proxy does.
pub fn spawn_foreground(netns_path: Option<&Path>, argv: &[String]) -> Result<Child> {
    let (mut cmd, _ns) = command(netns_path, argv)?;
    let child = cmd.spawn().map_err(|e| start_error(&argv[0], &e))?;
    FOREGROUND.store(child.id() as i32, Ordering::Relaxed);
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::SigAction(forward),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
    Ok(child)
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

/// This boot's ID: PIDs and start times of another boot mean nothing.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn is_running(pid: Option<u32>, start: Option<u64>, boot: Option<&str>) -> bool {
    if boot.is_some_and(|b| boot_id().as_deref() != Some(b)) {
        return false;
    }
    match (pid, start) {
        (Some(pid), Some(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Stops every process in the container's namespace: SIGTERM, then SIGKILL for what is still
/// there after `grace` (at once when `grace` is zero).
pub fn stop_all(netns_path: &Path, grace: Duration) {
    stop(|| netns::pids_in(netns_path), grace)
}

/// Stops a host-network container: the process group its shim started it in (it has no
/// namespace of its own to find its processes by). Only a group whose leader is still the
/// recorded process (same start time) is signalled.
pub fn stop_group(pid: Option<u32>, start: Option<u64>, boot: Option<&str>, grace: Duration) {
    let Some(pgid) = pid.filter(|_| is_running(pid, start, boot)) else {
        return;
    };
    stop(|| group_members(pgid as i32), grace)
}

fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            nix::unistd::getpgid(Some(Pid::from_raw(*pid))).ok() == Some(Pid::from_raw(pgid))
        })
        .collect()
}

fn stop(pids: impl Fn() -> Vec<i32>, grace: Duration) {
    let signal_all = |sig| {
        let pids = pids();
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
        !pids.is_empty()
    };
    let all_gone = || pids().iter().all(|p| start_time(*p as u32).is_none());
    if !grace.is_zero() && signal_all(Signal::SIGTERM) {
        // A grace period past any deadline we can represent is as good as forever.
        let deadline = Instant::now().checked_add(grace);
        while deadline.is_none_or(|d| Instant::now() < d) {
            if all_gone() {
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
        if all_gone() {
            return;
        }
    }
}

/// Stops a container's processes, however it is networked.
pub fn stop_container(state_dir: &Path, c: &crate::state::Container, grace: Duration) {
    match c.netns_path(state_dir) {
        Some(ns) => stop_all(&ns, grace),
        None => stop_group(c.pid, c.pid_start, c.boot_id.as_deref(), grace),
    }
}
