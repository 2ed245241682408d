//! Names for what the datapath reports: container and network names for addresses, the
//! container behind a published port, interface names.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnetwork::Ipv4Network;

use crate::{model::addr::from_raw, model::ports::Proto, model::state::State};

pub struct Names {
    /// Address → (container, network).
    containers: BTreeMap<Ipv4Addr, (String, String)>,
    gateways: BTreeMap<Ipv4Addr, String>,
    /// The same for IPv6 (link-local addresses included).
    containers6: BTreeMap<Ipv6Addr, (String, String)>,
    gateways6: BTreeMap<Ipv6Addr, String>,
    subnets: Vec<(Ipv4Network, String)>,
    /// (host port, proto) → (container, container port).
    published: BTreeMap<(u16, u8), (String, u16)>,
    ifnames: BTreeMap<u32, String>,
}

impl Names {
    pub fn new(state: &State, ifnames: BTreeMap<u32, String>) -> Self {
        let mut n = Names {
            containers: BTreeMap::new(),
            gateways: BTreeMap::new(),
            containers6: BTreeMap::new(),
            gateways6: BTreeMap::new(),
            subnets: Vec::new(),
            published: BTreeMap::new(),
            ifnames,
        };
        for net in state.networks.values() {
            if let Some(v4) = &net.ipv4 {
                n.gateways.insert(v4.gateway, net.name.clone());
                n.subnets.push((v4.subnet, net.name.clone()));
            }
            if let Some(v6) = &net.ipv6 {
                n.gateways6.insert(v6.gateway, net.name.clone());
            }
        }
        for c in state.containers.values() {
            for ep in &c.endpoints {
                if let Some(ip) = ep.ip {
                    n.containers
                        .insert(ip, (c.name.clone(), ep.network.clone()));
                }
                if let Some(ip6) = ep.ip6 {
                    let ll =
                        crate::model::ipam6::link_local(crate::model::addr::parse_mac(&ep.mac));
                    for a in [ip6, ll] {
                        n.containers6
                            .insert(a, (c.name.clone(), ep.network.clone()));
                    }
                }
            }
            for p in &c.ports {
                let proto = match p.proto {
                    Proto::Tcp => 6,
                    Proto::Udp => 17,
                };
                n.published
                    .insert((p.host_port, proto), (c.name.clone(), p.container_port));
            }
        }
        n
    }

    /// "web", "gateway:front", or "" for an address netctl does not know.
    pub fn addr(&self, raw: u32) -> String {
        let ip = from_raw(raw);
        if let Some((c, _)) = self.containers.get(&ip) {
            return c.clone();
        }
        if let Some(net) = self.gateways.get(&ip) {
            return format!("gateway:{net}");
        }
        String::new()
    }

    /// The same for an IPv6 address.
    pub fn addr6(&self, ip: Ipv6Addr) -> String {
        if let Some((c, _)) = self.containers6.get(&ip) {
            return c.clone();
        }
        if let Some(net) = self.gateways6.get(&ip) {
            return format!("gateway:{net}");
        }
        String::new()
    }

    /// The container and network of an IPv6 address.
    pub fn of6(&self, ip: Ipv6Addr) -> Option<(&str, &str)> {
        self.containers6
            .get(&ip)
            .map(|(c, n)| (c.as_str(), n.as_str()))
    }

    /// The container a host port is published for: "web:80".
    pub fn published(&self, port: u16, proto: u8) -> Option<String> {
        self.published
            .get(&(port, proto))
            .map(|(c, p)| format!("{c}:{p}"))
    }

    pub fn container_of(&self, raw: u32) -> Option<&str> {
        self.containers.get(&from_raw(raw)).map(|(c, _)| c.as_str())
    }

    pub fn published_by(&self, port: u16, proto: u8) -> Option<&str> {
        self.published.get(&(port, proto)).map(|(c, _)| c.as_str())
    }

    /// The network an address belongs to (a container's, or inside a subnet).
    pub fn network_of(&self, raw: u32) -> Option<&str> {
        let ip = from_raw(raw);
        if let Some((_, net)) = self.containers.get(&ip) {
            return Some(net);
        }
        self.subnets
            .iter()
            .find(|(s, _)| s.contains(ip))
            .map(|(_, n)| n.as_str())
    }

    pub fn ifname(&self, ifindex: u32) -> String {
        self.ifnames
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{ifindex}"))
    }
}
