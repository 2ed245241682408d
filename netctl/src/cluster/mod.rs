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

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

/// Where the cluster store is and who this host is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs (http://IP:PORT).
    pub endpoints: Vec<String>,
    /// As given, for messages.
    pub display: String,
    /// This host's underlay address: where other hosts send its containers' VXLAN packets.
    pub advertise: Ipv4Addr,
}

impl ClusterConfig {
    /// From `NETCTL_CLUSTER_STORE` / `NETCTL_CLUSTER_ADVERTISE`; None when no store is named.
    pub fn from_env() -> Result<Option<Self>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let Some(store) = var("NETCTL_CLUSTER_STORE") else {
            if var("NETCTL_CLUSTER_ADVERTISE").is_some() {
                bail!("NETCTL_CLUSTER_ADVERTISE is set but NETCTL_CLUSTER_STORE is not: name the store too (etcd://IP:PORT)");
            }
            return Ok(None);
        };
        let endpoints = parse_store(&store)?;
        let Some(adv) = var("NETCTL_CLUSTER_ADVERTISE") else {
            bail!("NETCTL_CLUSTER_STORE is set but NETCTL_CLUSTER_ADVERTISE is not: give this host's underlay address (--cluster-advertise IP)");
        };
        let advertise = parse_advertise(&adv)?;
        Ok(Some(Self {
            endpoints,
            display: store.trim().to_string(),
            advertise,
        }))
    }
}

/// `etcd://IP:PORT[,IP:PORT…]` → client URLs.
pub fn parse_store(s: &str) -> Result<Vec<String>> {
    let usage = "use etcd://IP:PORT[,IP:PORT...]";
    let Some(rest) = s.trim().strip_prefix("etcd://") else {
        bail!("cluster store {s:?} is not valid: {usage}");
    };
    let mut out = Vec::new();
    for part in rest.split(',').map(str::trim) {
        let ok = part
            .parse::<std::net::SocketAddrV4>()
            .is_ok_and(|a| a.port() != 0);
        if !ok {
            bail!("cluster store {s:?} is not valid ({part:?} is not IP:PORT): {usage}");
        }
        out.push(format!("http://{part}"));
    }
    Ok(out)
}

/// The advertised address: an IPv4 address (dockerd also takes an interface name; the
/// address is what ends up on the wire, so netctl asks for it).
pub fn parse_advertise(s: &str) -> Result<Ipv4Addr> {
    let s = s.trim();
    let s = s.split_once(':').map_or(s, |(ip, _)| ip);
    match s.parse::<Ipv4Addr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() && !ip.is_multicast() => Ok(ip),
        _ => bail!(
            "cluster advertise address {s:?} is not valid: give this host's underlay IPv4 address"
        ),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_advertise_forms() {
        assert_eq!(
            parse_store("etcd://10.0.0.2:2379,10.0.0.3:2379").unwrap(),
            ["http://10.0.0.2:2379", "http://10.0.0.3:2379"]
        );
        for bad in [
            "10.0.0.2:2379",
            "etcd://",
            "etcd://host:2379",
            "etcd://10.0.0.2",
            "consul://1.2.3.4:8500",
        ] {
            let e = parse_store(bad).unwrap_err().to_string();
            assert!(e.contains("etcd://IP:PORT"), "{bad}: {e}");
        }
        assert_eq!(
            parse_advertise("192.0.2.7").unwrap(),
            Ipv4Addr::new(192, 0, 2, 7)
        );
        assert_eq!(
            parse_advertise("192.0.2.7:2376").unwrap(),
            Ipv4Addr::new(192, 0, 2, 7)
        );
        for bad in ["eth0", "0.0.0.0", "127.0.0.1", ""] {
            assert!(parse_advertise(bad).is_err(), "{bad}");
        }
    }
}
