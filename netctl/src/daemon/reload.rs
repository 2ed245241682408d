//! What the daemon serves follows the saved state. Commands tell it (SIGHUP) after every
//! commit and wait for `daemon.loaded` to name the generation they saved (or a later one); a
//! cheap poll of the generation and the files it depends on catches anything else (a missed
//! signal, the host's resolv.conf changing, the cluster agent's names).

use std::path::PathBuf;

use anyhow::Result;

use super::dns::table::RemoteName;
use crate::{
    base::config::Config, kernel::daemon::identity, kernel::resolvconf::ResolvConf,
    model::state::State, store::Store,
};

/// Everything a reload reads.
pub struct Snapshot {
    pub state: State,
    /// The state's generation, as the daemon acknowledges it.
    pub generation: u64,
    pub remote: Vec<RemoteName>,
    pub host: ResolvConf,
}

/// Reads the state (one moment of it, and that moment's generation), the cluster's names and
/// the host's resolv.conf.
pub fn load(cfg: &Config) -> Result<Snapshot> {
    let (state, generation) = Store::new(&cfg.state_dir, cfg.lock_timeout).snapshot_at()?;
    let mut remote: Vec<RemoteName> = std::fs::read(crate::cluster::agent::remote_names_path(cfg))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // The cache is checked like the store it comes from (an older netctl wrote it unchecked).
    remote.retain(|r| usable(&state, r));
    Ok(Snapshot {
        state,
        generation,
        remote,
        host: ResolvConf::read(&cfg.resolv_conf),
    })
}

/// What a reload depends on — the state's generation and the files beside it — and whether
/// any changed since the last look.
pub struct Watch {
    store: Store,
    files: Vec<PathBuf>,
    seen: (u64, Vec<String>),
}

impl Watch {
    pub fn new(cfg: &Config) -> Self {
        let files = vec![
            crate::cluster::agent::remote_names_path(cfg),
            cfg.resolv_conf.clone(),
        ];
        let mut w = Self {
            store: Store::new(&cfg.state_dir, cfg.lock_timeout),
            files,
            seen: (0, Vec::new()),
        };
        w.seen = w.now();
        w
    }

    fn now(&self) -> (u64, Vec<String>) {
        (
            self.store.generation().unwrap_or(0),
            self.files.iter().map(|f| identity(f)).collect(),
        )
    }

    pub fn changed(&mut self) -> bool {
        let now = self.now();
        let changed = now != self.seen;
        self.seen = now;
        changed
    }
}

/// A remote name the resolver may serve: of an overlay network of this host, at a container
/// address of it, with a valid ID, name and aliases.
fn usable(state: &State, r: &RemoteName) -> bool {
    use crate::model::overlay::{address_problem, claim_space, naming_problem};
    let Some((net, (subnet, gateway))) = state
        .networks
        .get(&r.network)
        .filter(|n| n.vni.is_some())
        .and_then(|n| Some((n, claim_space(n)?)))
    else {
        return false;
    };
    address_problem(&net.name, subnet, gateway, r.ip).is_none()
        && naming_problem(&r.container_id, &r.container, &r.aliases).is_none()
}
