//! Keeps spare veth pairs ready for the commands (see [`crate::kernel::dataplane::spares`]):
//! a thread that tops them up after every change of the state (commands that took one just
//! made a change) and now and then, and removes them as the daemon ends.

use std::{
    sync::mpsc::{self, RecvTimeoutError},
    time::Duration,
};

use super::log::say;
use crate::{
    base::config::Config,
    kernel::dataplane::{
        spares::{self, Spares},
        Dataplane,
    },
    kernel::netlink::Netlink,
    model::instance::instance_group,
};

/// How often the spares are looked at without a change.
const EVERY: Duration = Duration::from_secs(5);

pub struct Keeper {
    poke: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

pub fn start(cfg: &Config) -> Keeper {
    let (poke, woken) = mpsc::channel();
    let cfg = cfg.clone();
    let thread = std::thread::spawn(move || keep(&cfg, &woken));
    Keeper { poke, thread }
}

impl Keeper {
    /// The state changed: a spare may have been taken.
    pub fn poke(&self) {
        let _ = self.poke.send(());
    }

    /// Removes the spares (after the one top-up under way, if any).
    pub fn stop(self) {
        drop(self.poke);
        let _ = self.thread.join();
    }
}

fn keep(cfg: &Config, woken: &mpsc::Receiver<()>) {
    let leftovers = spares::any(&cfg.state_dir);
    if cfg.spares == 0 && !leftovers {
        return;
    }
    let Ok(nl) = Netlink::new() else { return };
    // A killed daemon's spares go first, whether this one keeps any or not.
    if leftovers {
        if let Some(s) = find(cfg) {
            s.remove(&nl);
        }
    }
    if cfg.spares == 0 {
        return;
    }
    let group = instance_group(&cfg.state_dir);
    let mut spares: Option<Spares> = None;
    let mut failing = false;
    let mut gone = std::collections::HashMap::new();
    loop {
        // Once the commands have loaded the programs; never without TCX.
        if spares.is_none() {
            spares = find(cfg);
        }
        if let Some(s) = &spares {
            match s.fill(&nl, cfg.spares, group, &mut gone) {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    say(&format!("spare veths: {e:#} (commands make their own)"));
                }
                Err(_) => {}
            }
        }
        match woken.recv_timeout(EVERY) {
            Err(RecvTimeoutError::Disconnected) => break,
            _ => while woken.try_recv().is_ok() {},
        }
    }
    if let Some(s) = spares {
        s.remove(&nl);
    }
}

fn find(cfg: &Config) -> Option<Spares> {
    Dataplane::open_existing(cfg).and_then(|d| d.spares(&cfg.state_dir))
}
