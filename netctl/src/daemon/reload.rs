//! What the daemon serves follows the saved state. Commands tell it (SIGHUP) after every
//! commit and wait for `daemon.loaded` to name the state file they saved; a cheap poll of
//! the files it depends on catches anything else (a command of an older netctl, a missed
//! signal, the host's resolv.conf changing, the cluster agent's names).

use std::path::PathBuf;

use anyhow::Result;

use super::dns::table::RemoteName;
use crate::{
    base::config::Config,
    kernel::daemon::{identity, state_identity, STATE_FILE},
    kernel::resolvconf::ResolvConf,
    model::state::State,
    store::state_file::Store,
};

/// Everything a reload reads.
pub struct Snapshot {
    pub state: State,
    pub state_identity: String,
    pub remote: Vec<RemoteName>,
    pub host: ResolvConf,
}

/// Reads the state (checking that it did not change while being read, so the identity
/// acknowledged is the one served), the cluster's names and the host's resolv.conf.
pub fn load(cfg: &Config) -> Result<Snapshot> {
    let store = Store::new(&cfg.state_dir, cfg.lock_timeout);
    let mut tries = 0;
    let (state, state_identity) = loop {
        let before = state_identity(&cfg.state_dir);
        let state = store.snapshot()?;
        let after = state_identity(&cfg.state_dir);
        tries += 1;
        if before == after || tries == 10 {
            break (state, after);
        }
    };
    let mut remote: Vec<RemoteName> = std::fs::read(crate::cluster::agent::remote_names_path(cfg))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // The cache is checked like the store it comes from (an older netctl wrote it unchecked).
    remote.retain(|r| usable(&state, r));
    Ok(Snapshot {
        state,
        state_identity,
        remote,
        host: ResolvConf::read(&cfg.resolv_conf),
    })
}

/// The files a reload depends on, and whether any changed since the last look.
pub struct Watch {
    files: Vec<PathBuf>,
    seen: Vec<String>,
}

impl Watch {
    pub fn new(cfg: &Config) -> Self {
        let files = vec![
            cfg.state_dir.join(STATE_FILE),
            crate::cluster::agent::remote_names_path(cfg),
            cfg.resolv_conf.clone(),
        ];
        let seen = files.iter().map(|f| identity(f)).collect();
        Self { files, seen }
    }

    pub fn changed(&mut self) -> bool {
        let now: Vec<String> = self.files.iter().map(|f| identity(f)).collect();
        let changed = now != self.seen;
        self.seen = now;
        changed
    }
}

/// A remote name the resolver may serve: of an overlay network of this host, at a container
/// address of it, with a valid ID, name and aliases.
fn usable(state: &State, r: &RemoteName) -> bool {
    let Some(net) = state.networks.get(&r.network).filter(|n| n.vni.is_some()) else {
        return false;
    };
    use crate::model::overlay::{address_problem, naming_problem};
    address_problem(&net.name, net.subnet, net.gateway, r.ip).is_none()
        && naming_problem(&r.container_id, &r.container, &r.aliases).is_none()
}
