//! The state as one JSON file (`state.json`) under `NETCTL_STATE_DIR`, changed only under an
//! exclusive lock (`state.lock`, flock) held for the whole read-modify-write and the kernel
//! changes that go with it, and written atomically (temp file, fsync, rename, fsync of the
//! directory).

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::model::state::{State, STATE_VERSION};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "state.lock";

/// The state directory and its lock.
pub struct Store {
    dir: PathBuf,
    timeout: Duration,
}

/// The state, read under the exclusive lock; the lock is released on drop.
pub struct Locked {
    pub state: State,
    /// The previous holder of the lock died holding it (its name is still in the lock
    /// file): it may have left kernel objects the state does not know.
    pub interrupted: bool,
    path: PathBuf,
    lock: nix::fcntl::Flock<File>,
}

/// The holder's name leaves the lock file with the lock: a name found there on locking is
/// a holder that was killed.
impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.lock.set_len(0);
    }
}

impl Store {
    /// The store in `dir`, whose lock a command waits for at most `timeout`
    /// (`Config::lock_timeout`).
    pub fn new(dir: &Path, timeout: Duration) -> Self {
        Self {
            dir: dir.to_path_buf(),
            timeout,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the lock (waiting for other netctl commands, at most the timeout) and reads
    /// the state.
    pub fn lock(&self) -> Result<Locked> {
        private_dir(&self.dir)?;
        let lock_path = self.dir.join(LOCK_FILE);
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut announced = false;
        let (lock, interrupted) = loop {
            let file = open_lock_file(&lock_path)?;
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    // The file may have been replaced while we waited (see open_lock_file):
                    // then this lock protects nothing; take the new one.
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
                    break (lock, !previous.trim().is_empty());
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
        };
        let path = self.dir.join(STATE_FILE);
        let state = read(&path)?;
        Ok(Locked {
            state,
            interrupted,
            path,
            lock,
        })
    }

    /// Reads the state without the lock (for read-only commands: a snapshot that may be
    /// a moment old, never a torn file, because writes are atomic renames).
    pub fn snapshot(&self) -> Result<State> {
        read(&self.dir.join(STATE_FILE))
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

fn read(path: &Path) -> Result<State> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                version: STATE_VERSION,
                ..Default::default()
            })
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let state: State = serde_json::from_str(&text).with_context(|| {
        format!(
            "state file {} is unreadable; it was left untouched: repair or move it away",
            path.display()
        )
    })?;
    if state.version != STATE_VERSION {
        bail!(
            "state file {} has version {}, this netctl reads version {STATE_VERSION}",
            path.display(),
            state.version
        );
    }
    state.validate().with_context(|| {
        format!(
            "state file {} is inconsistent; it was left untouched: repair or move it away",
            path.display()
        )
    })?;
    Ok(state)
}

/// An ID that is safe as a file name and long enough for a short ID: 12 to 128 of
/// letters, digits, '_', '.', '-', starting with a letter or digit (so never `..` or `/`).
impl Locked {
    /// Writes the state atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self) -> Result<()> {
        self.write()?.publish()
    }

    /// The slow half of [`Locked::save`]: the state written beside the state file and
    /// synced, for [`Written::publish`] to put in place (a commit does this while the kernel
    /// is being changed).
    pub fn write(&self) -> Result<Written> {
        let tmp = self.path.with_extension("json.tmp");
        // Compact: with thousands of published ports every byte is parsed and fsynced per command.
        let text = serde_json::to_string(&self.state)?;
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        Ok(Written {
            tmp,
            path: self.path.clone(),
        })
    }
}

/// A state written and synced, not yet in place (removed if never published).
pub struct Written {
    tmp: PathBuf,
    path: PathBuf,
}

impl Written {
    /// Replaces the state file (atomically) and makes the rename durable.
    pub fn publish(self) -> Result<()> {
        let dir = self.path.parent().expect("state file has a directory");
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        // After publish the temporary name is gone already.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::model::state::{random_id, Network};

    #[test]
    fn save_then_lock_round_trips() {
        let dir = std::env::temp_dir().join(format!("netctl-state-{}", random_id()));
        let store = Store::new(&dir, Duration::from_secs(30));
        {
            let mut l = store.lock().unwrap();
            assert!(l.state.networks.is_empty());
            l.state.networks.insert(
                "n".into(),
                Network {
                    id: random_id(),
                    name: "n".into(),
                    driver: "bridge".into(),
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    gateway: "10.1.0.1".parse().unwrap(),
                    ip_range: None,
                    internal: false,
                    icc: true,
                    masquerade: true,
                    mtu: 1500,
                    bridge: "br-x".into(),
                    options: BTreeMap::new(),
                    created: 1,
                    user_subnet: true,
                    vni: None,
                },
            );
            l.save().unwrap();
        }
        let again = store.lock().unwrap();
        assert_eq!(again.state.networks["n"].bridge, "br-x");
        assert_eq!(again.state.version, STATE_VERSION);
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_state_is_an_error_and_is_kept() {
        let dir = std::env::temp_dir().join(format!("netctl-state-{}", random_id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), "{not json").unwrap();
        let err = Store::new(&dir, Duration::from_secs(30))
            .lock()
            .err()
            .expect("must fail");
        assert!(
            format!("{err:#}").contains("state.json is unreadable"),
            "{err:#}"
        );
        assert_eq!(
            fs::read_to_string(dir.join(STATE_FILE)).unwrap(),
            "{not json"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
