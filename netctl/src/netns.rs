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

pub fn handles_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("netns")
}

pub fn handle_path(state_dir: &Path, container_id: &str) -> PathBuf {
    handles_dir(state_dir).join(&container_id[..12.min(container_id.len())])
}

/// True when `path` is a live namespace handle (a mounted nsfs file), false for a plain file
/// left by a reboot or a killed run.
pub fn is_live(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
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

/// Unpins a namespace handle; the namespace goes when its last process and interface do.
pub fn remove(path: &Path) -> Result<()> {
    if is_live(path) {
        umount2(path, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", path.display()))?;
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
