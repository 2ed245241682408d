//! The desired state: networks, containers, their endpoints and published ports, and the
//! rules a state must keep ([`State::validate`]). Kept by `store`; everything
//! else — IP allocations, map entries — is derived from it.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::model::ports::{PortMapping, Proto};

pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// By name.
    pub networks: BTreeMap<String, Network>,
    /// By name.
    pub containers: BTreeMap<String, Container>,
    /// What dockerd asked of netctl's network and IPAM drivers that is not a container yet.
    #[serde(default, skip_serializing_if = "DockerState::is_empty")]
    pub docker: DockerState,
}

/// dockerd's side of things: endpoints created but not joined (their addresses are taken),
/// and the IPAM driver's pools and addresses.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DockerState {
    /// Docker's endpoint ID → the endpoint.
    #[serde(default)]
    pub endpoints: BTreeMap<String, DockerEndpoint>,
    /// Pool ID → the pool.
    #[serde(default)]
    pub pools: BTreeMap<String, DockerPool>,
}

impl DockerState {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.pools.is_empty()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DockerEndpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    /// On a network with IPv6: the address Docker's IPAM gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DockerPool {
    /// IPv4, or IPv6 (`--ipv6` with netctl's IPAM: a /64 of the host's unique local prefix
    /// unless asked for another).
    pub subnet: ipnetwork::IpNetwork,
    /// Addresses handed out (the gateway's included).
    #[serde(default)]
    pub addresses: std::collections::BTreeSet<std::net::IpAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The network's IPv4 addressing; None: an IPv6-only network (`--ipv4=false`). Its
    /// fields sit at the top of the document, where older versions kept them.
    #[serde(flatten)]
    pub ipv4: Option<Ipv4Subnet>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: u32,
    pub bridge: String,
    /// The options as the user gave them (shown by inspect, as Docker does).
    pub options: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Overlay networks: the VXLAN network identifier (the network itself lives in the
    /// cluster store; this is this host's copy while it has containers on it).
    #[serde(default)]
    pub vni: Option<u32>,
    /// `--ipv6`: the network's IPv6 subnet and gateway (dual stack); None: IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Subnet>,
}

/// A network's IPv4 addressing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ipv4Subnet {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Network>,
    /// The user chose the subnet (`--subnet`): only then may containers pick `--ip`, as in
    /// Docker. Older state files did not record it; they keep `--ip` working.
    #[serde(default = "yes")]
    pub user_subnet: bool,
}

/// A network's IPv6 addressing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ipv6Subnet {
    pub subnet: Ipv6Network,
    pub gateway: Ipv6Addr,
    /// The user chose it (`--subnet`): only then may containers pick `--ip6`.
    pub user_subnet: bool,
}

fn yes() -> bool {
    true
}

impl Network {
    /// The gateway's address as containers see it (`host-gateway`): IPv4's, on an
    /// IPv6-only network IPv6's.
    pub fn gateway(&self) -> Option<IpAddr> {
        match (&self.ipv4, &self.ipv6) {
            (Some(v4), _) => Some(IpAddr::V4(v4.gateway)),
            (None, Some(v6)) => Some(IpAddr::V6(v6.gateway)),
            (None, None) => None,
        }
    }

    /// An encrypted overlay (`-o encrypted`): its traffic crosses hosts through WireGuard.
    pub fn encrypted(&self) -> bool {
        self.vni.is_some() && crate::model::options::encrypted(&self.options)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub command: Vec<String>,
    pub detached: bool,
    pub created: u64,
    /// The process started in the container, with its start time (to tell PID reuse).
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// The boot the process was started in (`/proc/sys/kernel/random/boot_id`): after a
    /// reboot the PID means nothing.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// `run --network host`: the process runs in the host's own network namespace (no
    /// namespace, no endpoints, no published ports of its own).
    #[serde(default)]
    pub host_network: bool,
    /// A network namespace an engine made and owns (a CNI runtime's, dockerd's): netctl puts
    /// interfaces into it and never creates, removes or re-creates it, nor stops what runs in
    /// it. None for netctl's own containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_netns: Option<PathBuf>,
    /// When `engine_netns` is a process's `/proc/PID/ns/net`: that process's start time, so
    /// that a PID the kernel handed to another process is never taken for the container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_netns_start: Option<u64>,
    /// Which engine made it ("cni", "docker"); None for netctl's own. Docker containers keep
    /// Docker's own resolver at 127.0.0.11.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// In attach order; the first is `eth0`.
    pub endpoints: Vec<Endpoint>,
    /// One entry per published port (ranges are expanded).
    pub ports: Vec<PortMapping>,
    /// Names, resolver settings, links and exposed ports (older state files have none).
    #[serde(default)]
    pub options: RunOptions,
}

/// What `run` was given beyond networks and published ports (Docker's Config/HostConfig
/// parts that concern names).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunOptions {
    /// `--hostname`; empty means the short ID (Docker's default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `--dns`: this container's upstream servers (else the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// `--add-host`, with `host-gateway` already resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// `--link`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkRef>,
    /// `--expose` (ranges expanded); `-p` ports are exposed too but live in `ports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<Exposed>,
}

/// One `--add-host NAME:IP` line of /etc/hosts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtraHost {
    pub name: String,
    pub ip: IpAddr,
}

/// `--link NAME[:ALIAS]`: the target by ID (a name can be reused), its name then, the alias.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkRef {
    pub id: String,
    pub name: String,
    pub alias: String,
}

/// An exposed container port.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Exposed {
    pub port: u16,
    pub proto: Proto,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub network: String,
    pub endpoint_id: String,
    /// Inside the container: eth0, eth1, …
    pub ifname: String,
    /// Host side of the veth, on the network's bridge.
    pub host_veth: String,
    /// The container's IPv4 address; None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// On a network with IPv6: the container's global IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
    /// `--network-alias` (run) and `--alias` (network connect): more names on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl Container {
    /// The container's hostname: `--hostname`, else its short ID, as Docker's.
    pub fn hostname(&self) -> &str {
        if self.options.hostname.is_empty() {
            short(&self.id)
        } else {
            &self.options.hostname
        }
    }

    /// The network namespace the container's processes run in: its own (pinned under the
    /// state directory), the engine's, or None for `--network host` (the host's).
    pub fn netns_path(&self, state_dir: &Path) -> Option<PathBuf> {
        if let Some(ns) = &self.engine_netns {
            return Some(ns.clone());
        }
        (!self.host_network).then(|| crate::model::paths::handle_path(state_dir, &self.id))
    }
}

impl State {
    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks.get(name).with_context(|| {
            format!("network {name} not found: `netctl network ls` lists the networks")
        })
    }

    pub fn container(&self, name: &str) -> Result<&Container> {
        self.containers.get(name).with_context(|| {
            format!("container {name} not found: `netctl ps -a` lists the containers")
        })
    }

    /// A network as users name it (Docker's rule): its name, its full ID or a unique prefix
    /// of its ID.
    pub fn find_network(&self, r: &str) -> Result<&Network> {
        find(&self.networks, r, |n| &n.id).map_err(|e| e.explain("network", "netctl network ls"))
    }

    /// A container as users name it: its name, its full ID or a unique prefix of its ID.
    pub fn find_container(&self, r: &str) -> Result<&Container> {
        find(&self.containers, r, |c| &c.id).map_err(|e| e.explain("container", "netctl ps -a"))
    }

    /// Containers attached to a network, by name.
    pub fn attached(&self, network: &str) -> Vec<&Container> {
        self.containers
            .values()
            .filter(|c| c.endpoints.iter().any(|e| e.network == network))
            .collect()
    }

    /// Addresses in use on a network (gateway not included).
    pub fn used_ips(&self, network: &str) -> Vec<Ipv4Addr> {
        let pending = self.docker.endpoints.values().map(|e| (&e.network, e.ip));
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter().filter_map(|e| Some((&e.network, e.ip?))))
            .chain(pending)
            .filter(|(n, _)| *n == network)
            .map(|(_, ip)| ip)
            .collect()
    }

    /// IPv6 addresses in use on a network (gateway not included).
    pub fn used_ips6(&self, network: &str) -> Vec<Ipv6Addr> {
        let pending = self.docker.endpoints.values().map(|e| (&e.network, e.ip6));
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter().map(|e| (&e.network, e.ip6)))
            .chain(pending)
            .filter(|(n, _)| *n == network)
            .filter_map(|(_, ip)| ip)
            .collect()
    }

    pub fn all_ports(&self) -> impl Iterator<Item = (&Container, &PortMapping)> {
        self.containers
            .values()
            .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
    }
}

enum NotFound {
    Missing(String),
    Ambiguous(String, usize),
}

impl NotFound {
    fn explain(self, what: &str, list: &str) -> anyhow::Error {
        match self {
            NotFound::Missing(r) => {
                anyhow::anyhow!("no such {what}: {r} (`{list}` lists them)")
            }
            NotFound::Ambiguous(r, n) => anyhow::anyhow!(
                "{n} {what}s have an ID starting with {r}: give more of the ID, or the name"
            ),
        }
    }
}

/// Name first, then full ID, then a unique ID prefix.
fn find<'a, T>(
    by_name: &'a BTreeMap<String, T>,
    r: &str,
    id: impl Fn(&T) -> &String,
) -> std::result::Result<&'a T, NotFound> {
    if let Some(v) = by_name.get(r) {
        return Ok(v);
    }
    if r.is_empty() {
        return Err(NotFound::Missing(r.into()));
    }
    let hits: Vec<&T> = by_name.values().filter(|v| id(v).starts_with(r)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(NotFound::Missing(r.into())),
        many => {
            if let Some(exact) = many.iter().find(|v| id(v) == r) {
                return Ok(exact);
            }
            Err(NotFound::Ambiguous(r.into(), many.len()))
        }
    }
}

/// The first 12 characters of an ID, as Docker shows it.
pub use crate::model::ids::short;

pub fn is_safe_id(id: &str) -> bool {
    (12..=128).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':', NUL or whitespace, not "." or "..".
pub fn is_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

impl State {
    /// What a hand-edited or corrupted file could break: every reference resolves, every ID
    /// and interface name is safe to use in paths and netlink requests.
    pub fn validate(&self) -> Result<()> {
        for (key, n) in &self.networks {
            if key != &n.name {
                bail!(
                    "network {key:?} is stored under another name ({:?})",
                    n.name
                );
            }
            if !is_safe_id(&n.id) {
                bail!("network {key}: ID {:?} is not a valid ID", n.id);
            }
            if n.ipv4.is_none() && n.ipv6.is_none() {
                bail!("network {key} has neither IPv4 nor IPv6 addressing");
            }
            if !is_ifname(&n.bridge) {
                bail!(
                    "network {key}: bridge name {:?} is not an interface name",
                    n.bridge
                );
            }
        }
        for (key, c) in &self.containers {
            if key != &c.name {
                bail!(
                    "container {key:?} is stored under another name ({:?})",
                    c.name
                );
            }
            if !is_safe_id(&c.id) {
                bail!("container {key}: ID {:?} is not a valid ID", c.id);
            }
            for ep in &c.endpoints {
                if !self.networks.contains_key(&ep.network) {
                    bail!(
                        "container {key} is attached to network {:?}, which does not exist",
                        ep.network
                    );
                }
                if !is_ifname(&ep.ifname) || !is_ifname(&ep.host_veth) {
                    bail!(
                        "container {key}: interface names {:?}/{:?} are not valid",
                        ep.ifname,
                        ep.host_veth
                    );
                }
                if !is_safe_id(&ep.endpoint_id) {
                    bail!(
                        "container {key}: endpoint ID {:?} is not a valid ID",
                        ep.endpoint_id
                    );
                }
            }
        }
        Ok(())
    }
}

/// `N` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf))?;
    Ok(buf)
}

/// A random 64-hex-digit id, as Docker's.
pub fn random_id() -> String {
    let buf: [u8; 32] = random_bytes().expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Docker's MAC for an address: 02:42 followed by the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The MAC of an interface with no IPv4 address (IPv6-only networks): 02:42 followed by the
/// last four bytes of its IPv6 address, unique on its network as an IPv4 one's would be.
pub fn mac_for6(ip: Ipv6Addr) -> String {
    let o = ip.octets();
    format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        o[12], o[13], o[14], o[15]
    )
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_docker_style() {
        assert_eq!(mac_for("172.17.0.2".parse().unwrap()), "02:42:ac:11:00:02");
        assert_eq!(
            mac_for6("fd00::a:b0c:2".parse().unwrap()),
            "02:42:0b:0c:00:02"
        );
    }

    #[test]
    fn ipv4_addressing_is_where_older_versions_kept_it_and_absent_when_ipv6_only() {
        let old = r#"{"id":"n","name":"n","driver":"bridge","subnet":"10.1.0.0/24",
            "gateway":"10.1.0.1","ip_range":null,"internal":false,"icc":true,
            "masquerade":true,"mtu":1500,"bridge":"br-n","options":{},"created":0}"#;
        let n: Network = serde_json::from_str(old).unwrap();
        let v4 = n.ipv4.as_ref().unwrap();
        assert_eq!(
            (v4.subnet.to_string(), v4.user_subnet),
            ("10.1.0.0/24".into(), true)
        );
        let text = serde_json::to_value(&n).unwrap();
        assert_eq!(text["subnet"], "10.1.0.0/24");
        assert_eq!(text["gateway"], "10.1.0.1");

        let mut six = n.clone();
        six.ipv4 = None;
        six.ipv6 = Some(Ipv6Subnet {
            subnet: "fd00:1::/64".parse().unwrap(),
            gateway: "fd00:1::1".parse().unwrap(),
            user_subnet: false,
        });
        let text = serde_json::to_string(&six).unwrap();
        assert!(!text.contains("\"subnet\":\"10."), "{text}");
        let back: Network = serde_json::from_str(&text).unwrap();
        assert_eq!(back, six);
        assert_eq!(back.gateway(), Some("fd00:1::1".parse().unwrap()));

        let ep = r#"{"network":"n","endpoint_id":"e","ifname":"eth0","host_veth":"v",
            "ip6":"fd00:1::2","mac":"02:42:00:00:00:02"}"#;
        let ep: Endpoint = serde_json::from_str(ep).unwrap();
        assert_eq!(ep.ip, None);
    }
}
