//! Network namespace handles: a container's namespace is kept alive by a bind mount of its
//! nsfs file under `$NETCTL_STATE_DIR/netns/`, as `ip netns` does under /run/netns.

use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

const NSFS_MAGIC: i64 = 0x6e736673;

pub use crate::model::paths::{handle_path, handles_dir};
use crate::model::state::Container;

/// True when `path` is a live namespace handle (a mounted nsfs file), false for a plain file
/// left by a reboot or a killed run.
pub fn is_live(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// The start time of the process whose `/proc/PID/ns/net` `path` is, recorded with an
/// engine's namespace; None for a pinned namespace file.
pub fn owner_start(path: &Path) -> Option<u64> {
    crate::kernel::pids::start_time(crate::model::paths::proc_ns_pid(path)?)
}

/// True when the engine's namespace of `c` is `path` and still the one recorded: a
/// `/proc/PID/ns/net` only while PID is the process it was (same start time).
pub fn is_engines(c: &Container, path: &Path) -> bool {
    c.engine_netns.as_deref() == Some(path)
        && match crate::model::paths::proc_ns_pid(path) {
            None => true,
            Some(_) => c.engine_netns_start.is_some() && owner_start(path) == c.engine_netns_start,
        }
}

/// The namespace of `c` as netctl may enter it: its own handle, the engine's, or None on the
/// host network. An engine's `/proc/PID/ns/net` whose process exited is refused: the kernel
/// may have given PID to another process, whose namespace is not the container's.
pub fn of(c: &Container, state_dir: &Path) -> Result<Option<PathBuf>> {
    if let Some(ns) = &c.engine_netns {
        if !is_engines(c, ns) {
            anyhow::bail!(
                "the namespace {} of container {} is gone: its process exited",
                ns.display(),
                c.name
            );
        }
    }
    Ok(c.netns_path(state_dir))
}

/// Creates a new network namespace and pins it at `path`.
pub fn create(path: &Path) -> Result<()> {
    fs::create_dir_all(path.parent().expect("handle has a directory"))?;
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let target = path.to_path_buf();
    let res = std::thread::spawn(move || -> Result<()> {
        // Only this short-lived thread moves to the new namespace.
        unshare(CloneFlags::CLONE_NEWNET).context("creating a network namespace")?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the namespace on {}", target.display()))
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?;
    if res.is_err() {
        let _ = fs::remove_file(path);
    }
    res
}

/// Pins the namespace pinned at `from` at `to` as well.
pub fn bind(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to.parent().expect("handle has a directory"))?;
    File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let res = mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>);
    if res.is_err() {
        let _ = fs::remove_file(to);
    }
    res.with_context(|| format!("bind-mounting {} on {}", from.display(), to.display()))
}

/// Unpins a namespace handle; the namespace goes when its last process and interface do.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // Not a mount point (a plain file left by a reboot or a killed run), or gone.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        // Whatever is mounted there goes: a bind of something else would keep the file
        // busy for every command after this one.
        r => r.with_context(|| format!("unmounting {}", path.display()))?,
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

pub fn open(path: &Path) -> Result<File> {
    if !is_live(path) {
        anyhow::bail!(
            "network namespace {} is gone (reboot or killed command): run `netctl sync`",
            path.display()
        );
    }
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// Runs `f` on a thread inside the namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).context("entering the container's namespace")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("namespace thread panicked"))?
    })
}

/// The network namespace cookie of the calling thread's namespace (`SO_NETNS_COOKIE`): how
/// the socket programs recognise this instance's namespaces.
pub fn own_cookie() -> Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("creating a socket");
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .context("reading the network namespace cookie (SO_NETNS_COOKIE needs Linux 5.14)");
    }
    Ok(cookie)
}

/// The cookies of the namespaces pinned at `paths` (None where a namespace is gone), read
/// from one thread that visits each in turn.
pub fn cookies(paths: &[PathBuf], cache: &Path) -> Vec<Option<u64>> {
    if paths.is_empty() {
        return Vec::new();
    }
    // A namespace's cookie never changes: remembered by path and namespace inode (inodes of
    // dead namespaces are reused), so only new namespaces cost a setns — thousands of
    // containers make that add up.
    let inode = |p: &PathBuf| {
        fs::metadata(p)
            .ok()
            .map(|m| format!("{}:{}", m.ino(), p.display()))
    };
    let known: std::collections::BTreeMap<String, u64> = fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let found: Vec<(Option<String>, Option<u64>)> = std::thread::scope(|s| {
        s.spawn(|| {
            paths
                .iter()
                .map(|p| {
                    let ino = inode(p);
                    if let Some(c) = ino.as_ref().and_then(|i| known.get(i)) {
                        return (ino, Some(*c));
                    }
                    let ns = open(p).ok();
                    let cookie = ns.and_then(|ns| {
                        setns(&ns, CloneFlags::CLONE_NEWNET).ok()?;
                        own_cookie().ok()
                    });
                    (ino, cookie)
                })
                .collect()
        })
        .join()
        .unwrap_or_default()
    });
    let now: std::collections::BTreeMap<String, u64> = found
        .iter()
        .filter_map(|(i, c)| Some((i.clone()?, (*c)?)))
        .collect();
    if now != known {
        // Only a cache: a failed write costs the next command a few setns calls.
        let _ = crate::base::atomic_file::write_cache(
            cache,
            &serde_json::to_vec(&now).unwrap_or_default(),
            0o600,
        );
    }
    found.into_iter().map(|(_, c)| c).collect()
}

/// Processes whose network namespace is the one pinned at `path`.
pub fn pids_in(path: &Path) -> Vec<i32> {
    let Ok(target) = fs::metadata(path).map(|m| (m.dev(), m.ino())) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let m = fs::metadata(e.path().join("ns/net")).ok()?;
            (pid != me && (m.dev(), m.ino()) == target).then_some(pid)
        })
        .collect()
}
