//! Overlay networks made in the cluster store.

use anyhow::{bail, Result};

/// `network create -d overlay`: picks subnet and VNI against every overlay and the subnets
/// member hosts use (`local`: this host's networks, addresses and routes), and stores it in
/// one transaction (read again and retried when another host got in between).
pub fn create_network(
    store: &crate::cluster::store::Store,
    req: &crate::model::networks::CreateRequest,
    local: &[ipnetwork::Ipv4Network],
    local6: &[ipnetwork::Ipv6Network],
    pool6: ipnetwork::Ipv6Network,
    underlay_mtu: u32,
) -> Result<crate::model::overlay::OverlayNetwork> {
    const HERE: &str = "an address, route or network of this host";
    for _ in 0..20 {
        let (existing, rev) = store.networks()?;
        let existing: Vec<crate::model::overlay::OverlayNetwork> =
            existing.into_iter().map(|v| v.value).collect();
        let mut taken = crate::model::overlay::Taken {
            v4: local.iter().map(|s| (*s, HERE.to_string())).collect(),
            v6: local6.iter().map(|s| (*s, HERE.to_string())).collect(),
            pool6,
        };
        for h in store.hosts()? {
            if h.addr != store.cfg.advertise {
                let what = format!("a local network of host {}", h.addr);
                taken
                    .v4
                    .extend(h.subnets.iter().map(|s| (*s, what.clone())));
                taken
                    .v6
                    .extend(h.subnets6.iter().map(|s| (*s, what.clone())));
            }
        }
        let net = crate::model::overlay::plan(req, &existing, &taken, underlay_mtu)?;
        if store.create_network(&net, rev)? {
            return Ok(net);
        }
    }
    bail!("the cluster's networks keep changing under this command: try again")
}
