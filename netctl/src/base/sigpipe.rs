//! SIGPIPE: the CLI dies of it quietly when its reader goes away (`netctl ps | head`), as
//! other tools do; a peer that closes a connection must not kill netctl that way. Vectored
//! socket writes (hyper/tonic, the etcd client) raise SIGPIPE where `send` would not.

/// For the long-running front-ends (the daemon, the Docker plugin): a closed connection is
/// an error on that connection, never the process's end.
pub fn ignore() {
    // SAFETY: installing SIG_IGN for one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Blocks SIGPIPE on this thread while it lives (a write to a closed socket then fails with
/// EPIPE); one raised meanwhile is discarded before the thread's mask is restored.
pub struct Blocked {
    old: libc::sigset_t,
}

impl Blocked {
    pub fn new() -> Self {
        // SAFETY: sigset operations on local values; pthread_sigmask on this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            Blocked { old }
        }
    }
}

impl Default for Blocked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: as above; sigtimedwait with a zero timeout only takes a pending SIGPIPE.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
