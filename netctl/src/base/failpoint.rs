//! Crash points for tests: `NETCTL_FAILPOINT=N` kills the process (SIGKILL, no clean-up) at
//! the N-th step it reaches, so a test can stop a command at every step in turn and check
//! that the next command (or `netctl sync`) repairs what it left. Unset, a step costs one
//! relaxed atomic load.

use std::sync::atomic::{AtomicU32, Ordering};

static TARGET: AtomicU32 = AtomicU32::new(u32::MAX);
static REACHED: AtomicU32 = AtomicU32::new(0);

/// Reads `NETCTL_FAILPOINT` once, at start-up.
pub fn init() {
    if let Some(n) = std::env::var("NETCTL_FAILPOINT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        TARGET.store(n, Ordering::Relaxed);
    }
}

/// A point where a real crash could leave half-done work behind.
pub fn step(what: &str) {
    let target = TARGET.load(Ordering::Relaxed);
    if target == u32::MAX {
        return;
    }
    let n = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
    if n == target {
        eprintln!("netctl: failpoint {n} ({what}): killed");
        // SAFETY: kill(2) on ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
