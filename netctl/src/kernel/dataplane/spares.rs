//! Spare container namespaces, each with its veth pair made and the container programs
//! attached, kept by the daemon: `run` takes one instead of making a namespace and a veth and
//! attaching to it, which waits for the kernel (a TCX attachment waits for RCU grace periods,
//! 15–40 ms, most of a `run`; moving a made veth into a namespace waits as long, so the pair
//! is made where it will stay).
//!
//! A spare `k` (8 hex digits) is a namespace pinned at `spares/<k>` in the state dir holding
//! the peer, already called `eth0`, and its host end in the daemon's (the host's) namespace:
//! `spmk<k>` while it is made, `spare<k>` once its links are pinned as
//! `spares/<program>@<k>@<hash>` in the pin dir. Both ends are down; the host end is in the
//! instance's interface group (so never taken for an uplink), and the orphan sweep leaves it
//! alone while the daemon runs. `from_container` drops what a container without map entries
//! sends, so a spare is closed as a new veth is.
//!
//! Taking one (under the state lock): the host end is renamed to the endpoint's veth (the
//! claim), the namespace pinned again at the container's handle, the pins moved to
//! `links/<program>@<ifindex>@<hash>`. A command killed in between leaves a veth and maybe a
//! handle that the next command's orphan sweep removes, and pins that the daemon removes.
//! Only with TCX: a netlink filter attaches without that wait.

use std::{
    collections::HashMap,
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    attach::{self, container_attachments, Modes},
    pins::{file_name, list, Pins},
};
use crate::kernel::{netlink::Netlink, netns};

/// The namespace handles' directory in the state dir.
const DIR: &str = "spares";
const MAKING: &str = "spmk";
const READY: &str = "spare";
/// The name of a spare's peer, which a container's first interface has.
pub const PEER: &str = "eth0";
/// The MTU spares are made with; a taken one gets its network's.
const MTU: u32 = 1500;
/// How long the pins of a spare whose handle is gone may wait for the command that took it
/// (which moves them within milliseconds) before the daemon removes them.
const ABANDONED: Duration = Duration::from_secs(10);

/// Whether this instance has spares (before anything is opened to take one).
pub fn any(state_dir: &Path) -> bool {
    fs::read_dir(state_dir.join(DIR)).is_ok_and(|mut d| d.next().is_some())
}

/// Whether `name` is a spare's host end (the orphan sweep's exception).
pub fn is_spare(name: &str) -> bool {
    [MAKING, READY]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(|k| k.len() == 8))
}

#[derive(Clone, Debug)]
pub struct Spares {
    pins: Pins,
    hash: String,
    modes: Modes,
    /// The namespace handles.
    dir: PathBuf,
}

impl Spares {
    pub(super) fn new(pins: Pins, hash: String, modes: Modes, state_dir: &Path) -> Self {
        Self {
            pins,
            hash,
            modes,
            dir: state_dir.join(DIR),
        }
    }

    fn pin(&self, program: &str, k: &str) -> PathBuf {
        self.pins
            .spares()
            .join(format!("{program}@{k}@{}", self.hash))
    }

    fn programs() -> [&'static str; 2] {
        container_attachments("", 0).map(|a| a.program)
    }

    /// Takes a ready spare for a container whose first interface is `eth0`: its host end
    /// renamed `host`, its namespace pinned at `handle`. Returns the host end's index, or
    /// None when no spare is ready or taking one failed (the caller makes its own).
    pub fn take(&self, nl: &Netlink, host: &str, handle: &Path) -> Option<u32> {
        for path in list(&self.dir) {
            let k = file_name(&path);
            // A spare of another binary's programs is left to its daemon.
            if !Self::programs().iter().all(|p| self.pin(p, &k).exists()) {
                continue;
            }
            let Ok(Some(link)) = nl.link(&format!("{READY}{k}")) else {
                continue;
            };
            // The handle first: once the host end is renamed the daemon takes the spare for
            // gone and lets go of its own handle.
            if netns::bind(&path, handle).is_err() || !netns::is_live(handle) {
                let _ = netns::remove(handle);
                return None;
            }
            if nl.rename(link.index, host).is_err() {
                let _ = netns::remove(handle);
                return None;
            }
            crate::base::failpoint::step("run: spare's veth taken");
            for att in container_attachments(host, link.index) {
                let to = attach::pin_path(&self.pins, &self.hash, &att, self.modes);
                // Left where it is, the link is the daemon's to remove; the commit attaches
                // whatever is not pinned for this veth.
                let _ = fs::rename(self.pin(att.program, &k), to);
            }
            return Some(link.index);
        }
        None
    }

    /// Removes every spare: host ends, namespaces, pins (the daemon's start and end).
    pub fn remove(&self, nl: &Netlink) {
        for path in list(&self.dir) {
            let k = file_name(&path);
            for name in [MAKING, READY] {
                let _ = nl.del_link_by_name(&format!("{name}{k}"));
            }
            let _ = netns::remove(&path);
        }
        let _ = fs::remove_dir_all(self.pins.spares());
    }

    /// Makes spares until `target` are ready (side by side: each waits for the kernel), and
    /// forgets taken ones: their handles, and pins no command moved.
    pub fn fill(
        &self,
        nl: &Netlink,
        target: usize,
        group: u32,
        gone: &mut HashMap<String, Instant>,
    ) -> Result<()> {
        fs::create_dir_all(self.pins.spares())
            .with_context(|| format!("creating {}", self.pins.spares().display()))?;
        let mut ready = 0;
        for path in list(&self.dir) {
            let k = file_name(&path);
            if nl.link(&format!("{READY}{k}"))?.is_some() {
                ready += 1;
            } else if nl.link(&format!("{MAKING}{k}"))?.is_none() {
                // Taken (the container has its own handle) or lost.
                netns::remove(&path)?;
            }
        }
        let now = Instant::now();
        for path in list(&self.pins.spares()) {
            let name = file_name(&path);
            let k = name.split('@').nth(1).unwrap_or_default();
            if self.dir.join(k).exists() {
                continue;
            }
            let since = *gone.entry(k.to_string()).or_insert(now);
            if now.duration_since(since) > ABANDONED {
                let _ = fs::remove_file(&path);
            }
        }
        gone.retain(|_, since| now.duration_since(*since) <= 2 * ABANDONED);
        let wanted = target.saturating_sub(ready);
        std::thread::scope(|s| {
            let makers: Vec<_> = (0..wanted)
                .map(|_| s.spawn(|| self.make(&new_key(), group)))
                .collect();
            makers.into_iter().try_for_each(|m| {
                m.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("making a spare panicked")))
            })
        })
    }

    /// One spare (on a thread of its own: a netlink socket each).
    fn make(&self, k: &str, group: u32) -> Result<()> {
        let nl = Netlink::new()?;
        let handle = self.dir.join(k);
        netns::create(&handle)?;
        let making = format!("{MAKING}{k}");
        let res = (|| {
            let ns = netns::open(&handle)?;
            let index = nl.add_veth(&making, PEER, ns.as_raw_fd(), MTU, group)?;
            std::thread::scope(|s| {
                let attaching: Vec<_> = container_attachments(&making, index)
                    .into_iter()
                    .map(|att| {
                        let target = self.pin(att.program, k);
                        s.spawn(move || {
                            attach::attach_at(&self.pins, &self.hash, &att, self.modes, &target)
                        })
                    })
                    .collect();
                for a in attaching {
                    a.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("attaching panicked")))?;
                }
                Ok::<_, anyhow::Error>(())
            })?;
            nl.rename(index, &format!("{READY}{k}"))
        })();
        if res.is_err() {
            let _ = nl.del_link_by_name(&making);
            let _ = netns::remove(&handle);
            for program in Self::programs() {
                let _ = fs::remove_file(self.pin(program, k));
            }
        }
        res
    }
}

fn new_key() -> String {
    crate::model::state::random_id()[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::is_spare;

    #[test]
    fn only_spare_names_are_spares() {
        assert!(is_spare("spare0a1b2c3d"));
        assert!(is_spare("spmk0a1b2c3d"));
        // A container's veth, a shorter or longer name, another tool's link.
        for name in ["veth0a1b2c3d", "spare", "spare0a1b2c3d4", "spmk1", "spareX"] {
            assert!(!is_spare(name), "{name}");
        }
    }
}
