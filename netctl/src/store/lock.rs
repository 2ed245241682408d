//! The host-wide state lock (`state.lock`, flock): held by a command for its whole change —
//! the rows it reads and writes and the kernel objects that go with them — so changes happen
//! one after another. The holder writes its pid and command line into the file and empties it
//! on release: a name found there on locking is a holder that was killed.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

const LOCK_FILE: &str = "state.lock";

pub struct StateLock {
    /// The previous holder died holding it: it may have left kernel objects the state does
    /// not know.
    pub interrupted: bool,
    lock: nix::fcntl::Flock<File>,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.lock.set_len(0);
    }
}

/// Takes the lock in `dir`, waiting for other netctl commands at most `timeout`.
pub fn take(dir: &Path, timeout: Duration) -> Result<StateLock> {
    private_dir(dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + timeout;
    let mut announced = false;
    loop {
        let file = open_lock_file(&lock_path)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // The file may have been replaced while we waited (see open_lock_file): then
                // this lock protects nothing; take the new one.
                let ours = lock.metadata()?.ino();
                if fs::metadata(&lock_path).map(|m| m.ino()).ok() != Some(ours) {
                    continue;
                }
                let mut previous = String::new();
                let _ = lock.read_to_string(&mut previous);
                let me = format!("{} {}\n", std::process::id(), own_command());
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = lock.write_all(me.as_bytes());
                return Ok(StateLock {
                    interrupted: !previous.trim().is_empty(),
                    lock,
                });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = lock_holder(&lock_path);
                if Instant::now() >= deadline {
                    bail!(
                        "gave up after {} s waiting for the state lock {}, held by {holder}: \
                         wait for it to finish, stop it, or raise NETCTL_LOCK_TIMEOUT",
                        timeout.as_secs(),
                        lock_path.display()
                    );
                }
                if !announced {
                    eprintln!("netctl: waiting for the state lock, held by {holder}");
                    announced = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path.display()))
            }
        }
    }
}

/// Creates the state directory if needed and keeps it root-only (containers' command lines
/// and logs are in there, and so is the lock every command takes).
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let meta = fs::metadata(dir)?;
    // Someone else's directory (planted, or reached through their symlink) could hand them
    // the lock, the state and containers' command lines.
    if meta.uid() != 0 {
        bail!(
            "state directory {} is owned by uid {}, not root: chown it to root or set NETCTL_STATE_DIR elsewhere",
            dir.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
    }
    Ok(())
}

/// Opens the lock file, root-only. A lock file others could open (left by an older netctl
/// with mode 0644, or planted) is replaced by a fresh one: whoever holds the old one's flock
/// then blocks nobody.
fn open_lock_file(path: &Path) -> Result<File> {
    let private = |m: &fs::Metadata| m.uid() == 0 && m.permissions().mode() & 0o077 == 0;
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file() || !private(&m)) {
        let tmp = path.with_extension("lock.new");
        let _ = fs::remove_file(&tmp);
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// "pid 1234 (netctl run …)" from the lock file, as its holder wrote it.
fn lock_holder(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    match text.trim().split_once(' ') {
        Some((pid, cmd)) => format!("pid {pid} ({cmd})"),
        None if !text.trim().is_empty() => format!("pid {}", text.trim()),
        None => "another process".into(),
    }
}

fn own_command() -> String {
    let line: Vec<String> = std::env::args().collect();
    let line = line.join(" ");
    line.chars().take(120).collect()
}
