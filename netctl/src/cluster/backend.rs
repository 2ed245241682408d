//! The cluster store as the engine and the front-ends reach it.

use anyhow::Result;

use crate::cluster::store::Store;

/// The engine's view of the store ([`crate::engine::cluster::Cluster`]).
struct Backend(Store);

impl crate::engine::cluster::Cluster for Backend {
    fn release_gone(&self, gone: &[(String, std::net::Ipv4Addr, String)]) -> Result<()> {
        crate::cluster::endpoints::release_gone(&self.0, gone)
    }

    fn overlays(&self) -> Result<Vec<crate::model::overlay::OverlayNetwork>> {
        Ok(self.0.networks()?.0.into_iter().map(|v| v.value).collect())
    }
}

/// Lets the engine reach the cluster store (the binary calls this once, at start).
pub fn install() {
    crate::engine::cluster::install(|cfg| Ok(Box::new(Backend(Store::connect(cfg)?))));
}

/// A connection to this host's cluster store, or the error that says how to name one.
pub fn connect(ctx: &crate::engine::ctx::Ctx) -> Result<Store> {
    Store::connect(ctx.cluster_config()?)
}
