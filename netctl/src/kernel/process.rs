//! The processes of containers: started inside the container's namespace (without netctl's
//! own environment), watched by a shim when detached, stopped with SIGTERM then SIGKILL.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStringExt, fs::OpenOptionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub use super::pids::start_time;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{
    kernel::netns,
    model::state::{Container, State},
};

/// Where a container's process runs: its network namespace (None: the host's, for
/// `--network host`), its own /etc/hosts, /etc/resolv.conf and /etc/hostname bound in a
/// private mount namespace, its hostname in a UTS namespace, and its link variables.
#[derive(Clone, Debug, Default)]
pub struct Isolation {
    pub netns: Option<PathBuf>,
    /// The directory holding the container's files (`etc::FILES`); None: the host's files.
    pub etc_dir: Option<PathBuf>,
    /// None: the host's hostname (no UTS namespace).
    pub hostname: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Isolation {
    /// How `c`'s processes run (`run` and `exec` alike).
    pub fn of(state_dir: &Path, state: &State, c: &Container) -> Result<Self> {
        if c.host_network {
            return Ok(Self::default());
        }
        Ok(Isolation {
            netns: crate::kernel::netns::of(c, state_dir)?,
            etc_dir: Some(crate::model::paths::container_dir(state_dir, &c.id)),
            hostname: Some(c.hostname().to_string()),
            env: crate::model::links::env(state, c),
        })
    }

    /// The container shim's arguments that carry this (the variables go in its environment).
    fn shim_args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        if let Some(ns) = &self.netns {
            out.extend(["--netns".into(), ns.clone().into_os_string()]);
        }
        if let Some(d) = &self.etc_dir {
            out.extend(["--etc".into(), d.clone().into_os_string()]);
        }
        if let Some(h) = &self.hostname {
            out.extend(["--hostname".into(), h.into()]);
        }
        out
    }

    /// The bind mounts to make, as C strings built before the fork: (source, target) for each
    /// of the container's files that exists, over a host file that exists (a host without
    /// /etc/hostname gets none: nothing is ever created on the host).
    fn binds(&self) -> Result<Vec<(CString, CString)>> {
        let Some(dir) = &self.etc_dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (file, target) in crate::kernel::etc::FILES {
            let src = dir.join(file);
            if src.is_file() && Path::new(target).exists() {
                out.push((
                    CString::new(src.into_os_string().into_vec())?,
                    CString::new(target)?,
                ));
            }
        }
        Ok(out)
    }
}

/// A command that will run as a container's process (see [`Isolation`]). The returned File
/// (the namespace) must outlive the spawn: the caller keeps it.
pub fn command(iso: &Isolation, argv: &[String]) -> Result<(Command, Option<File>)> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // The container's environment is the user's, not netctl's configuration.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(iso.env.iter().map(|(k, v)| (k, v)));
    let ns = iso.netns.as_deref().map(netns::open).transpose()?;
    let fd = ns.as_ref().map(|f| f.as_raw_fd());
    let binds = iso.binds()?;
    let hostname = iso.hostname.as_deref().map(CString::new).transpose()?;
    if fd.is_none() && binds.is_empty() && hostname.is_none() {
        return Ok((cmd, None));
    }
    // SAFETY: between fork and exec only async-signal-safe system calls run (setns, unshare,
    // mount, sethostname), on data built before the fork.
    unsafe {
        cmd.pre_exec(move || enter(fd, &binds, hostname.as_deref()));
    }
    Ok((cmd, ns))
}

/// The child's side of [`command`]: into the network namespace, then a private mount
/// namespace (made a slave of the host's first, so no mount ever propagates back) with the
/// container's files bound over the host's, and a UTS namespace with its hostname.
fn enter(
    netns: Option<std::os::fd::RawFd>,
    binds: &[(CString, CString)],
    hostname: Option<&std::ffi::CStr>,
) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on valid C strings and an open descriptor.
    unsafe {
        if let Some(fd) = netns {
            check(libc::setns(fd, libc::CLONE_NEWNET))?;
        }
        let mut flags = 0;
        if !binds.is_empty() {
            flags |= libc::CLONE_NEWNS;
        }
        if hostname.is_some() {
            flags |= libc::CLONE_NEWUTS;
        }
        if flags == 0 {
            return Ok(());
        }
        check(libc::unshare(flags))?;
        if !binds.is_empty() {
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            for (src, target) in binds {
                check(libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
        }
        if let Some(h) = hostname {
            check(libc::sethostname(h.as_ptr(), h.to_bytes().len()))?;
        }
    }
    Ok(())
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
    iso: &Isolation,
    argv: &[String],
    log: &Path,
    exit_file: &Path,
) -> Result<u32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let mut shim = Command::new("/proc/self/exe");
    shim.arg("container-shim")
        .args(iso.shim_args())
        .envs(iso.env.iter().map(|(k, v)| (k, v)));
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
pub fn shim(iso: &Isolation, exit_file: &Path, argv: &[String]) -> i32 {
    let _ = nix::unistd::setsid();
    let mut report = std::io::stdout();
    let spawned = command(iso, argv).and_then(|(mut cmd, _ns)| {
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
    crate::base::atomic_file::write(
        path,
        format!("{code} {}\n", crate::model::state::now()).as_bytes(),
        0o600,
    )
}

/// (exit code, finished at) as recorded by the shim.
pub fn recorded_exit(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

static FOREGROUND: AtomicI32 = AtomicI32::new(0);
/// A signal that came before the foreground process existed: it gets it once started.
static EARLY: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let pid = FOREGROUND.load(Ordering::Relaxed);
    if pid <= 0 {
        EARLY.store(sig, Ordering::Relaxed);
        return;
    }
    // A terminal's Ctrl-C already reached the process (same process group); only signals
    // sent to netctl itself (kill, timeout, a supervisor) are passed on.
    // SAFETY: the kernel hands a valid siginfo to SA_SIGINFO handlers.
    let from_terminal = unsafe { (*info).si_code } == libc::SI_KERNEL;
    if !from_terminal {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// From here on, signals sent to netctl (SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1/2) are
/// for the foreground process [`spawn_foreground`] starts, as Docker's sig-proxy does: one
/// that comes while the container is being made is kept and handed to the process as it
/// starts (netctl is never killed half way, leaving the container behind).
pub fn catch_signals() {
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
        // SAFETY: the handler only touches atomics and calls kill (async-signal-safe).
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
}

/// Starts a foreground process attached to our stdio (signals: [`catch_signals`]).
pub fn spawn_foreground(iso: &Isolation, argv: &[String]) -> Result<Child> {
    catch_signals();
    let (mut cmd, _ns) = command(iso, argv)?;
    let child = cmd.spawn().map_err(|e| start_error(&argv[0], &e))?;
    FOREGROUND.store(child.id() as i32, Ordering::Relaxed);
    let early = EARLY.swap(0, Ordering::Relaxed);
    if early != 0 {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, early) };
    }
    Ok(child)
}

/// This boot's ID: PIDs and start times of another boot mean nothing.
pub fn boot_id() -> Option<String> {
    // Read once per process: `ps` asks for every container.
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

/// This process as a file names the one that wrote it: "PID START_TIME" (a recycled PID has
/// another start time).
pub fn own_mark() -> String {
    let me = std::process::id();
    format!("{me} {}", start_time(me).unwrap_or(0))
}

/// The PID an [`own_mark`] text names, while that process lives.
pub fn marked_alive(text: &str) -> Option<u32> {
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    is_running(Some(pid), Some(start), None).then_some(pid)
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
    // A killed process is usually gone (reaped) within a millisecond or two: look soon, then
    // less often, for a second at most.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_millis(1);
    while Instant::now() < deadline {
        if !signal_all(Signal::SIGKILL) {
            return;
        }
        std::thread::sleep(pause);
        if all_gone() {
            return;
        }
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills the shim of a container being removed (or that this instance no longer knows: a
/// `run` killed after it started the shim) before its namespace's processes are stopped:
/// otherwise a shim still starting the command could put it there afterwards. Its command
/// line names the container's directory.
pub fn stop_shim(state_dir: &Path, id_prefix: &str) {
    let marker = dir_of(state_dir, id_prefix);
    let me = std::process::id() as i32;
    let pids = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd);
                (pid != me && cmd.contains("container-shim") && cmd.contains(&marker))
                    .then_some(pid)
            })
            .collect()
    };
    stop(pids, Duration::ZERO);
}

/// The start of a container's directory path (`…/containers/<id…>`), for a prefix of its ID.
fn dir_of(state_dir: &Path, id_prefix: &str) -> String {
    crate::model::paths::containers_dir(state_dir)
        .join(id_prefix)
        .display()
        .to_string()
}

/// Stops a container's processes, however it is networked.
pub fn stop_container(state_dir: &Path, c: &crate::model::state::Container, grace: Duration) {
    if c.engine_netns.is_some() {
        return; // the engine's processes are the engine's business
    }
    stop_shim(state_dir, &c.id);
    match c.netns_path(state_dir) {
        Some(ns) => stop_all(&ns, grace),
        None => stop_group(c.pid, c.pid_start, c.boot_id.as_deref(), grace),
    }
}
