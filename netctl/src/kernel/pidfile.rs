//! One daemon per instance: `daemon.pid` in the state directory, held with an exclusive
//! flock for the daemon's whole life. Whoever holds the lock is the daemon; the pid in the
//! file only says whom to signal.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

pub const PIDFILE: &str = "daemon.pid";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(PIDFILE)
}

/// The daemon's hold on the pidfile; released when the process ends.
pub struct Claim {
    _lock: Flock<File>,
}

/// Takes the pidfile for this process, or None when another daemon holds it. A command
/// checking liveness holds a shared lock for an instant: a few tries ride that out.
pub fn claim(state_dir: &Path) -> Result<Option<Claim>> {
    let p = path(state_dir);
    for _ in 0..20 {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0)?;
                lock.rewind()?;
                writeln!(lock, "{}", crate::kernel::process::own_mark())?;
                return Ok(Some(Claim { _lock: lock }));
            }
            Err((_, Errno::EWOULDBLOCK)) => std::thread::sleep(Duration::from_millis(10)),
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", p.display())),
        }
    }
    Ok(None)
}

/// The live daemon's pid, or None when no daemon holds the pidfile.
pub fn running(state_dir: &Path) -> Option<u32> {
    let mut f = File::open(path(state_dir)).ok()?;
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        // Nobody holds it: no daemon (the lock goes with `_free`).
        Ok(_free) => None,
        // The pid is the daemon's only while it has the recorded start time.
        Err((_, Errno::EWOULDBLOCK)) => crate::kernel::process::marked_alive(&text),
        Err(_) => None,
    }
}
