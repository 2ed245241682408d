//! cgroups: where the socket programs attach (the v2 root), and the daemon's own group, so
//! that stopping whatever started it (a runtime's unit, a Podman service) leaves DNS and the
//! cluster agent running.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the cgroup v2 hierarchy is mounted (its root covers every process): /sys/fs/cgroup
/// on a unified host, /sys/fs/cgroup/unified on a hybrid one.
pub fn root() -> Option<String> {
    // The usual places first: /proc/mounts lists every namespace handle too (thousands).
    for dir in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if mounted(Path::new(dir), nix::sys::statfs::CGROUP2_SUPER_MAGIC) {
            return Some(dir.to_string());
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| dir.replace("\\040", " "))
        })
        .min_by_key(|d| d.len())
}

/// Whether a cgroup hierarchy of this kind (v2, or v1) is mounted at `dir`.
fn mounted(dir: &Path, kind: nix::sys::statfs::FsType) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type() == kind)
}

/// The v1 hierarchy systemd tracks units by on a hybrid host (`name=systemd`).
const SYSTEMD_V1: &str = "/sys/fs/cgroup/systemd";

/// Moves this process into a group of its own, `name`, at the root of every hierarchy that
/// tracks services (the v2 one, and systemd's v1 one on a hybrid host). Returns the groups
/// made, for [`leave`].
pub fn own_group(name: &str) -> Result<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = root().map(PathBuf::from).into_iter().collect();
    let systemd_v1 = Path::new(SYSTEMD_V1);
    if mounted(systemd_v1, nix::sys::statfs::CGROUP_SUPER_MAGIC) {
        roots.push(systemd_v1.to_path_buf());
    }
    let mut made = Vec::new();
    for root in roots {
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating cgroup {}", dir.display()))
            }
            _ => {}
        }
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("moving into cgroup {}", dir.display()))?;
        made.push(dir);
    }
    Ok(made)
}

/// Leaves the groups [`own_group`] made, for their roots, and removes them (as the process
/// ends; a group still holding another process stays).
pub fn leave(groups: &[PathBuf]) {
    for dir in groups {
        if let Some(root) = dir.parent() {
            let _ = std::fs::write(root.join("cgroup.procs"), std::process::id().to_string());
        }
        let _ = std::fs::remove_dir(dir);
    }
}
