//! What every command needs: configuration, the state store, a netlink socket, the instance's
//! interface group, and the checks that must pass before anything is changed.

use anyhow::{bail, Result};

use crate::{
    config::Config,
    netlink::Netlink,
    reconcile,
    state::{Locked, Store},
    topology,
};

pub struct Ctx {
    pub cfg: Config,
    pub store: Store,
    pub nl: Netlink,
    pub group: u32,
}

impl Ctx {
    /// For commands that change things: root and a capable kernel are required.
    pub fn open() -> Result<Self> {
        require_root()?;
        check_kernel(&kernel_release(), std::path::Path::new(BTF).exists())?;
        Self::open_unchecked()
    }

    /// For read-only commands.
    pub fn open_unchecked() -> Result<Self> {
        let cfg = Config::from_env()?;
        let store = Store::new(&cfg.state_dir);
        let group = topology::instance_group(&cfg.state_dir);
        Ok(Self {
            nl: Netlink::new()?,
            cfg,
            store,
            group,
        })
    }

    /// Saves the state and makes the kernel match it, still under the lock.
    pub fn commit(&self, locked: &Locked) -> Result<Vec<String>> {
        locked.save()?;
        reconcile::apply(&self.cfg, &self.nl, &locked.state, false)
    }

    /// Like [`Ctx::commit`], re-reading every map from the kernel (`netctl sync`).
    pub fn commit_full(&self, locked: &Locked) -> Result<Vec<String>> {
        locked.save()?;
        reconcile::apply(&self.cfg, &self.nl, &locked.state, true)
    }
}

const BTF: &str = "/sys/kernel/btf/vmlinux";

/// netctl changes links, namespaces and eBPF programs: all need root.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("netctl must run as root (it creates interfaces, namespaces and eBPF programs): try sudo");
    }
    Ok(())
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// TCX links need Linux 6.6; the programs need BTF.
pub fn check_kernel(release: &str, btf: bool) -> Result<()> {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if (major, minor) < (6, 6) {
        bail!("kernel {release} is too old: netctl needs Linux 6.6 or newer (TCX links for its eBPF programs)");
    }
    if !btf {
        bail!("the kernel has no BTF ({BTF} is missing): netctl needs a kernel built with CONFIG_DEBUG_INFO_BTF");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_checks() {
        assert!(check_kernel("6.18.44-fc-v769", true).is_ok());
        assert!(check_kernel("6.6.0", true).is_ok());
        let e = check_kernel("5.15.0-91-generic", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("5.15.0") && e.contains("6.6"), "{e}");
        assert!(check_kernel("6.5.9", true).is_err());
        assert!(check_kernel("6.18.0", false)
            .unwrap_err()
            .to_string()
            .contains("BTF"));
    }
}
