//! What every command needs: configuration, the state store, a netlink socket, the instance's
//! interface group, and the checks that must pass before anything is changed.

use anyhow::{bail, Result};

use crate::{
    base::config::Config,
    engine::reconcile::{self, Report},
    kernel::netlink::Netlink,
    kernel::topology,
    model::state::State,
    store::{Locked, Store},
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
        let ctx = Self::open_unchecked()?;
        // Before anything changes: a kernel without what the datapath cannot do without.
        crate::kernel::dataplane::features::Features::detect(&ctx.cfg.features_deny)?
            .check_required()?;
        crate::kernel::dataplane::pins::check_mount_namespace(&ctx.cfg.bpffs)?;
        crate::base::timing::mark("open");
        Ok(ctx)
    }

    /// The configuration and the state, for a listing that needs nothing of the kernel
    /// (no netlink socket opened and closed for nothing).
    pub fn read_state() -> Result<(Config, crate::model::state::State)> {
        let cfg = Config::from_env()?;
        let state = Store::new(&cfg.state_dir, cfg.lock_timeout).snapshot()?;
        Ok((cfg, state))
    }

    /// For read-only commands.
    pub fn open_unchecked() -> Result<Self> {
        let cfg = Config::from_env()?;
        let store = Store::new(&cfg.state_dir, cfg.lock_timeout);
        let group = topology::instance_group(&cfg.state_dir);
        Ok(Self {
            nl: Netlink::new()?,
            cfg,
            store,
            group,
        })
    }

    /// Whether this host is a cluster member (overlay networks).
    pub fn is_member(&self) -> bool {
        self.cfg.cluster.is_some()
    }

    /// A connection to the cluster store, for what needs one (overlay networks).
    pub fn cluster(&self) -> Result<Box<dyn crate::engine::cluster::Cluster>> {
        crate::engine::cluster::connect(self.cluster_config()?)
    }

    /// The cluster store's configuration, or the error that says how to name one.
    pub fn cluster_config(&self) -> Result<&crate::base::config::ClusterConfig> {
        match &self.cfg.cluster {
            Some(c) => Ok(c),
            None => bail!("overlay networks need a cluster store: set NETCTL_CLUSTER_STORE=etcd://IP:PORT and NETCTL_CLUSTER_ADVERTISE=IP (or --cluster-store/--cluster-advertise)"),
        }
    }

    /// Takes the state lock for a change. What a killed command left behind (links of this
    /// instance, namespace handles the state does not know) is removed first, so it never
    /// blocks this command.
    pub fn begin(&self) -> Result<Tx<'_>> {
        let locked = self.store.lock()?;
        crate::base::timing::mark("lock+read");
        if locked.interrupted {
            reconcile::remove_orphans(&self.cfg, &self.nl, locked.state())?;
        }
        Ok(Tx {
            ctx: self,
            locked,
            undo: Vec::new(),
            wait_daemon: true,
            early: Vec::new(),
            notify_daemon: false,
            released: Vec::new(),
        })
    }
}

/// A change that was neither committed nor saved is undone: an early return (`?`) leaves
/// nothing behind.
impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.undo.is_empty() || self.locked.changed() {
            self.abort();
        }
        if self.notify_daemon {
            let generation = self.locked.generation();
            crate::kernel::daemon::after_commit(
                &self.ctx.cfg,
                self.locked.state(),
                generation,
                false,
            );
        }
        // Off the lock: a slow store holds up only this command.
        if !self.released.is_empty() {
            self.locked.unlock();
            self.release_overlay_addresses();
        }
    }
}

impl Tx<'_> {
    /// Addresses of overlay endpoints the committed changes removed go back to the cluster
    /// (best effort: the daemon catches up with what the store missed).
    fn release_overlay_addresses(&self) {
        let released = self
            .ctx
            .cluster()
            .and_then(|c| c.release_gone(&self.released));
        if let Err(e) = released {
            eprintln!("netctl: warning: {e:#} (the daemon will retry)");
        }
    }
}

/// A change under the state lock: all or nothing. The command changes `state` (creating the
/// kernel objects of what it adds), then [`Tx::commit`] applies the new state to the kernel
/// and saves it; if either fails, the kernel is put back as the state was before.
pub struct Tx<'a> {
    ctx: &'a Ctx,
    pub locked: Locked,
    /// What to undo outside the kernel and the state file if the change fails (an address
    /// claimed in the cluster store).
    undo: Vec<Box<dyn FnOnce() + 'a>>,
    /// Whether the commit waits until the daemon serves the new state (names resolve when
    /// the command returns).
    wait_daemon: bool,
    /// Attachments under way to veths this change created ([`Tx::attach_early`]).
    early: Vec<std::thread::JoinHandle<()>>,
    /// The daemon is to be told of the committed state when the change ends.
    notify_daemon: bool,
    /// Overlay addresses (network, address, endpoint ID) committed changes gave up: released
    /// in the store when the change ends, after the lock.
    released: Vec<(String, std::net::Ipv4Addr, String)>,
}

impl<'a> Tx<'a> {
    /// The commit only tells the daemon (it serves the new state a moment later): for an
    /// addition whose caller does not need its names at once (a CNI runtime's ADD).
    pub fn dont_wait_for_daemon(&mut self) {
        self.wait_daemon = false;
    }

    /// Starts attaching the datapath to a container veth this change created, so that the
    /// kernel's wait for the attachment overlaps the rest of the change. Best effort: the
    /// commit's reconcile attaches whatever this did not.
    pub fn attach_early(&mut self, host_veth: &str) {
        // Loading the programs (the first container) is left to the reconcile.
        let Some(dp) = crate::kernel::dataplane::Dataplane::open_existing(&self.ctx.cfg) else {
            return;
        };
        let name = host_veth.to_string();
        self.early.push(std::thread::spawn(move || {
            if let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) {
                let _ = dp.attach_container_veth(&name, index);
            }
        }));
    }

    /// Waits for the attachments [`Tx::attach_early`] started.
    fn join_early(&mut self) {
        for h in self.early.drain(..) {
            let _ = h.join();
        }
    }

    pub fn state(&mut self) -> &mut State {
        self.locked.state_mut()
    }

    /// Applies and saves the state; prints problems with other objects as warnings.
    pub fn commit(&mut self) -> Result<Report> {
        self.finish(false)
    }

    /// Like [`Tx::commit`], re-reading every map from the kernel (`netctl sync`).
    pub fn commit_full(&mut self) -> Result<Report> {
        self.finish(true)
    }

    /// Saves a change that needs no kernel change and matters only until the next reboot
    /// (a process's pid): see [`crate::store::Locked::save_for_this_boot`].
    pub fn save_for_this_boot(&mut self) -> Result<()> {
        self.locked.save_for_this_boot()?;
        crate::base::timing::mark("save");
        Ok(())
    }

    /// Registers something to undo if the change fails.
    pub fn on_abort(&mut self, f: Box<dyn FnOnce() + 'a>) {
        self.undo.push(f);
    }

    /// Undoes the kernel side of the changes made so far (the state was not saved).
    fn abort(&mut self) {
        self.join_early();
        self.locked.roll_back();
        let _ = reconcile::apply(&self.ctx.cfg, &self.ctx.nl, self.locked.state(), false);
        for f in self.undo.drain(..).rev() {
            f();
        }
    }

    fn finish(&mut self, full: bool) -> Result<Report> {
        // A host leaves an overlay network with its last container there.
        let state = self.state();
        for name in crate::model::overlay::idle_overlays(state) {
            state.networks.remove(&name);
        }
        // The state is saved once the kernel has it: a command killed in between leaves the
        // kernel ahead of the state, which the next command's orphan sweep or `netctl sync`
        // puts back.
        let early = std::mem::take(&mut self.early);
        let (cfg, nl) = (&self.ctx.cfg, &self.ctx.nl);
        crate::base::timing::mark("plan");
        let (state, before) = (self.locked.state(), Some(self.locked.saved()));
        let res = reconcile::apply_after(cfg, nl, state, before, full, early).and_then(|r| {
            crate::base::timing::mark("maps and attach");
            crate::base::failpoint::step("commit: applied, not saved");
            let before = self.locked.save()?;
            crate::base::timing::mark("save");
            crate::base::failpoint::step("commit: saved");
            Ok((r, before))
        });
        match res {
            Ok((r, before)) => {
                for p in &r.problems {
                    eprintln!("netctl: warning: {p}");
                }
                crate::kernel::etc::follow(cfg, &before, self.locked.state(), full);
                let gone = crate::model::overlay::gone(&before, self.locked.state());
                self.released.extend(gone);
                crate::base::timing::mark("after save");
                if self.wait_daemon {
                    let generation = self.locked.generation();
                    crate::kernel::daemon::after_commit(cfg, self.locked.state(), generation, true);
                    crate::base::timing::mark("daemon");
                } else {
                    // Told as the command ends, so that its reload does not compete with
                    // the rest of the command for the CPU.
                    self.notify_daemon = true;
                }
                self.undo.clear();
                Ok(r)
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }
}

/// netctl changes links, namespaces and eBPF programs: all need root.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("netctl must run as root (it creates interfaces, namespaces and eBPF programs): try sudo");
    }
    Ok(())
}
