//! The one idempotent step every command ends with: make the kernel match the state.

use anyhow::{anyhow, Result};

use crate::{config::Config, dataplane::Dataplane, netlink::Netlink};

/// The uplinks: NETCTL_UPLINKS if set, else the interfaces carrying default routes.
pub fn uplinks(cfg: &Config, nl: &Netlink) -> Result<Vec<(String, u32)>> {
    let links = nl.links()?;
    if !cfg.uplinks.is_empty() {
        return cfg
            .uplinks
            .iter()
            .map(|name| {
                links
                    .iter()
                    .find(|l| &l.name == name)
                    .map(|l| (l.name.clone(), l.index))
                    .ok_or_else(|| anyhow!("uplink {name} (from NETCTL_UPLINKS) does not exist"))
            })
            .collect();
    }
    let indexes = nl.default_route_interfaces()?;
    Ok(links
        .iter()
        .filter(|l| indexes.contains(&l.index))
        .map(|l| (l.name.clone(), l.index))
        .collect())
}

/// Loads what is missing and attaches the programs; returns what changed.
pub fn sync(cfg: &Config) -> Result<Vec<String>> {
    let nl = Netlink::new()?;
    let dp = Dataplane::open(cfg)?;
    let uplinks = uplinks(cfg, &nl)?;
    dp.reconcile_attachments(&uplinks, &[])
}
