//! The cluster store as the engine needs it, behind a trait: `cluster/` implements it and
//! the binary installs it at start, so nothing in the engine or below imports the cluster.

use std::{net::Ipv4Addr, sync::OnceLock};

use anyhow::{bail, Result};

use crate::{base::config::ClusterConfig, model::overlay::OverlayNetwork};

pub trait Cluster {
    /// Gives the cluster back overlay addresses (network, address, endpoint ID) that a
    /// committed change no longer uses (`model::overlay::gone`).
    fn release_gone(&self, gone: &[(String, Ipv4Addr, String)]) -> Result<()>;
    /// Every overlay network of the cluster.
    fn overlays(&self) -> Result<Vec<OverlayNetwork>>;
}

type Connect = fn(&ClusterConfig) -> Result<Box<dyn Cluster>>;

static CONNECT: OnceLock<Connect> = OnceLock::new();

/// Makes `connect` how the engine reaches a cluster store (once, at start).
pub fn install(connect: Connect) {
    let _ = CONNECT.set(connect);
}

/// A connection to the store `cfg` names.
pub fn connect(cfg: &ClusterConfig) -> Result<Box<dyn Cluster>> {
    match CONNECT.get() {
        Some(connect) => connect(cfg),
        None => bail!(
            "this program was built without cluster support: overlay networks are not available"
        ),
    }
}
