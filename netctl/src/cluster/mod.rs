//! The cluster store: overlay networks and their endpoints live in etcd, shared by every host
//! that names the same store (`NETCTL_CLUSTER_STORE=etcd://IP:PORT[,…]`, dockerd's
//! `--cluster-store`). Bridge networks stay in the local state.
//!
//! Keys (all under `/netctl/v1/`):
//!
//! ```text
//! networks/<name>            an overlay network (JSON: id, subnet, gateway, VNI, …)
//! endpoints/<network>/<ip>   an address in use: host, container, name, aliases (host lease)
//! hosts/<address>            a member host: its underlay address, its local subnets (host lease)
//! rev/networks               touched by every network create/remove (guards subnet/VNI choice)
//! rev/endpoints/<network>    touched by every endpoint claim/release (guards network removal)
//! ```
//!
//! Every read-modify-write is one etcd transaction that compares what it read, so concurrent
//! commands on any number of hosts never hand out one address, subnet or VNI twice.

pub mod agent;
pub mod endpoints;
pub mod store;

use anyhow::{bail, Result};

pub use crate::base::config::ClusterConfig;

/// `network create -d overlay`: picks subnet and VNI against every overlay and the subnets
/// member hosts use (`local`: this host's networks, addresses and routes), and stores it in
/// one transaction (read again and retried when another host got in between).
pub fn create_network(
    store: &store::Store,
    req: &crate::model::networks::CreateRequest,
    local: &[ipnetwork::Ipv4Network],
    underlay_mtu: u32,
) -> Result<crate::model::overlay::OverlayNetwork> {
    for _ in 0..20 {
        let (existing, rev) = store.networks()?;
        let existing: Vec<crate::model::overlay::OverlayNetwork> =
            existing.into_iter().map(|v| v.value).collect();
        let mut taken: Vec<(ipnetwork::Ipv4Network, String)> = local
            .iter()
            .map(|s| (*s, "an address, route or network of this host".to_string()))
            .collect();
        for h in store.hosts()? {
            if h.addr != store.cfg.advertise {
                taken.extend(
                    h.subnets
                        .iter()
                        .map(|s| (*s, format!("a local network of host {}", h.addr))),
                );
            }
        }
        let net = crate::model::overlay::plan(req, &existing, &taken, underlay_mtu)?;
        if store.create_network(&net, rev)? {
            return Ok(net);
        }
    }
    bail!("the cluster's networks keep changing under this command: try again")
}

/// The engine's view of the store ([`crate::engine::cluster::Cluster`]).
struct Backend(store::Store);

impl crate::engine::cluster::Cluster for Backend {
    fn release_gone(
        &self,
        before: &crate::model::state::State,
        after: &crate::model::state::State,
    ) -> Result<()> {
        endpoints::release_gone(&self.0, &crate::model::overlay::gone(before, after))
    }

    fn overlays(&self) -> Result<Vec<crate::model::overlay::OverlayNetwork>> {
        Ok(self.0.networks()?.0.into_iter().map(|v| v.value).collect())
    }
}

/// Lets the engine reach the cluster store (the binary calls this once, at start).
pub fn install() {
    crate::engine::cluster::install(|cfg| Ok(Box::new(Backend(store::Store::connect(cfg)?))));
}

/// A connection to this host's cluster store, or the error that says how to name one.
pub fn connect(ctx: &crate::engine::ctx::Ctx) -> Result<store::Store> {
    store::Store::connect(ctx.cluster_config()?)
}
