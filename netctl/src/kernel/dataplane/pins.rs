//! The pin directory: `$NETCTL_BPFFS/v<LAYOUT_VERSION>/{maps,progs-<hash>,links}`.
//!
//! Maps live as long as the layout version; programs are pinned per object hash so a new
//! netctl binary loads its programs beside the old ones and swaps every link over atomically.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use netctl_common::LAYOUT_VERSION;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const SYS_FS_BPF: &str = "/sys/fs/bpf";

#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
    layout: PathBuf,
}

impl Pins {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            layout: root.join(format!("v{LAYOUT_VERSION}")),
        }
    }

    pub fn maps(&self) -> PathBuf {
        self.layout.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn progs(&self, hash: &str) -> PathBuf {
        self.layout.join(format!("progs-{hash}"))
    }

    pub fn links(&self) -> PathBuf {
        self.layout.join("links")
    }

    /// The links of the daemon's spare veths (see [`super::spares`]).
    pub fn spares(&self) -> PathBuf {
        self.layout.join("spares")
    }

    /// Every directory of this layout version holding programs of another object.
    pub fn stale_progs(&self, hash: &str) -> Vec<PathBuf> {
        let keep = self.progs(hash);
        list(&self.layout)
            .into_iter()
            .filter(|p| p != &keep && file_name(p).starts_with("progs-"))
            .collect()
    }

    /// Pin directories of other layout versions (left by older or newer netctl binaries).
    pub fn other_layouts(&self) -> Vec<PathBuf> {
        list(&self.root)
            .into_iter()
            .filter(|p| p != &self.layout && file_name(p).starts_with('v'))
            .collect()
    }

    /// Makes sure the pin root is on a bpf filesystem and exists.
    pub fn prepare(&self) -> Result<()> {
        ensure_bpffs(&self.root)?;
        for dir in [self.maps(), self.links()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.maps().is_dir()
    }
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// The pin root, or the nearest of its directories that exists.
fn nearest_existing(root: &Path) -> PathBuf {
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    probe
}

/// Refuses to work where a bpffs would have to be mounted in a mount namespace that the
/// process that started netctl does not share: `ip netns exec` gives every command a private
/// one with a fresh /sys, so netctl's pins (and with them every attachment: the programs
/// would be gone, the containers unpoliced) and its namespace handles would vanish as the
/// command ends. (The processes above are compared, as far as they can be read, rather than
/// the first process, which may not be readable.)
pub fn check_mount_namespace(root: &Path) -> Result<()> {
    if is_bpffs(&nearest_existing(root)) {
        return Ok(());
    }
    let ns = |pid: &str| {
        fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
    };
    let Ok(own) = ns("self") else {
        return Ok(());
    };
    let mut pid = std::process::id();
    // Bounded: a PID can only be as deep as the process tree.
    for _ in 0..64 {
        let Some(parent) = crate::kernel::pids::parent(pid) else {
            break;
        };
        match ns(&parent.to_string()) {
            Ok(theirs) if theirs != own => bail!(
                "NETCTL_BPFFS={} is not on a bpf filesystem in this mount namespace, which is \
                 not the one of the process that started netctl (`ip netns exec` gives each \
                 command its own, with a fresh /sys): what netctl pins and mounts here would \
                 vanish when it exits; enter the network namespace only (`nsenter \
                 --net=/run/netns/NAME netctl …`), or mount bpffs where that process sees it",
                root.display()
            ),
            Ok(_) => pid = parent,
            Err(_) => break,
        }
    }
    Ok(())
}

/// Mounts bpffs where the pin root needs it: on /sys/fs/bpf when the root is below it (the
/// usual place, unmounted on some systems), else on the root directory itself.
fn ensure_bpffs(root: &Path) -> Result<()> {
    check_mount_namespace(root)?;
    let probe = nearest_existing(root);
    if is_bpffs(&probe) {
        return fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()));
    }
    let target = if root.starts_with(SYS_FS_BPF) {
        PathBuf::from(SYS_FS_BPF)
    } else {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        root.to_path_buf()
    };
    nix::mount::mount(
        Some("bpf"),
        &target,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mounting bpffs on {} (needed for NETCTL_BPFFS={}); run as root or mount it yourself",
            target.display(),
            root.display()
        )
    })?;
    if !is_bpffs(&target) {
        bail!(
            "{} is not a bpf filesystem after mounting it",
            target.display()
        );
    }
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))
}
