//! Overlay networks as the cluster store holds them, and the pure choices made when one is
//! created: its subnet (Docker swarm's default pool, 10.0.0.0/8 in /24s, when none is given),
//! its gateway and its VXLAN network identifier.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Context, Result};
use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::{
    model::ipam,
    model::ipam6,
    model::networks::CreateRequest,
    model::options,
    model::state::{self, Endpoint, State},
};

/// VXLAN overhead (outer Ethernet is not counted: IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// WireGuard's overhead on an encrypted overlay, whose frames cross as bare IP packets
/// (IPv4 20 + UDP 8 + WireGuard's header and tag 32).
pub const WIREGUARD_OVERHEAD: u32 = 60;
/// IPv4's minimum MTU (RFC 791): an underlay too small for VXLAN still gets a valid one.
const MIN_MTU: u32 = 576;
/// IPv6's (RFC 8200): below it Linux turns IPv6 off on the interface.
const IPV6_MIN_MTU: u32 = 1280;
/// The underlay's MTU when the advertise address is on no local interface (a NAT'd host).
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;
/// First VNI handed out (Docker's overlay driver starts at 4096 too).
pub const FIRST_VNI: u32 = 4096;
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OverlayNetwork {
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Network>,
    pub internal: bool,
    pub icc: bool,
    pub vni: u32,
    pub mtu: u32,
    pub options: BTreeMap<String, String>,
    pub created: u64,
    pub user_subnet: bool,
    /// `--ipv6`: the IPv6 subnet of a dual-stack overlay. A container's IPv6 address is the
    /// one at its IPv4 address's offset in it ([`ip6_at`]), so the cluster-wide claim of
    /// the IPv4 address is the IPv6 address's too, and every host knows a remote
    /// container's IPv6 address from its IPv4 record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Network>,
    /// False: an IPv6-only overlay (`--ipv6 --ipv4=false`). Its containers have no IPv4
    /// address; `subnet` is then [`places`], where the cluster store keeps their claims.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ipv4: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The places of an IPv6-only overlay's containers: never addresses, only the keys under
/// which the cluster store claims them (the same claims as a dual-stack overlay's IPv4
/// addresses), each container's IPv6 address being its place's offset in the IPv6 subnet.
pub fn places() -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 16).expect("valid prefix")
}

/// The gateway's place on an IPv6-only overlay (its IPv6 gateway is at offset 1).
const PLACES_GATEWAY: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);

/// The subnet and gateway an overlay's claims are made in, from its local copy `net`: its
/// IPv4 ones, or an IPv6-only overlay's [`places`].
pub fn claim_space(net: &state::Network) -> Option<(Ipv4Network, Ipv4Addr)> {
    match (&net.ipv4, net.vni, &net.ipv6) {
        (Some(v4), _, _) => Some((v4.subnet, v4.gateway)),
        (None, Some(_), Some(_)) => Some((places(), PLACES_GATEWAY)),
        _ => None,
    }
}

/// The claim (the store's key) of a local overlay endpoint `ep` of network `net`: its IPv4
/// address, or on an IPv6-only overlay its place, from its IPv6 address.
pub fn claim_of(net: &state::Network, ep: &Endpoint) -> Option<Ipv4Addr> {
    if net.ipv4.is_some() {
        return ep.ip;
    }
    let (space, _) = claim_space(net)?;
    let host_bits = 32 - u32::from(space.prefix());
    let offset = (u128::from(ep.ip6?) & ((1u128 << host_bits) - 1)) as u32;
    Some(Ipv4Addr::from(u32::from(space.network()) | offset))
}

/// The IPv6 address of a dual-stack overlay's container at IPv4 `ip` of `subnet`: at the
/// same offset in `subnet6` (which [`plan`] and [`network_problem`] make at least as large).
pub fn ip6_at(subnet6: Ipv6Network, subnet: Ipv4Network, ip: Ipv4Addr) -> Ipv6Addr {
    let host_bits = 32 - u32::from(subnet.prefix());
    let offset = u32::from(ip) & ((1u64 << host_bits) - 1) as u32;
    Ipv6Addr::from(u128::from(subnet6.network()) | u128::from(offset))
}

/// The IPv6 address of an overlay endpoint at IPv4 `ip` on the local copy `net` of the
/// overlay (None: the overlay has no IPv6).
pub fn endpoint_ip6(net: &state::Network, ip: Ipv4Addr) -> Option<Ipv6Addr> {
    let (space, _) = claim_space(net)?;
    Some(ip6_at(net.ipv6.as_ref()?.subnet, space, ip))
}

/// Whether `subnet6` holds every offset of `subnet` (a dual-stack overlay's addresses).
fn holds(subnet6: &Ipv6Network, subnet: &Ipv4Network) -> bool {
    128 - u32::from(subnet6.prefix()) >= 32 - u32::from(subnet.prefix())
}

/// An address in use on an overlay network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointRecord {
    /// The underlay address of the host the container runs on.
    pub host: Ipv4Addr,
    pub container_id: String,
    pub container: String,
    pub endpoint_id: String,
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Who an overlay address belongs to, kept without a lease (`held/<network>/<ip>`): when the
/// owner's lease runs out its endpoint record goes, this stays, and the address is not given
/// to anyone else until the owner comes back for it, gives it back, or a quarantine longer
/// than the owner can go without noticing has passed (no split brain after an outage).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub host: Ipv4Addr,
    pub endpoint_id: String,
    /// Someone found the address orphaned and started its quarantine (a leased key that
    /// lives [`quarantine_secs`]); once that key is gone too, the address is free.
    #[serde(default)]
    pub quarantined: bool,
}

/// How long an orphaned address waits before it is given again (from when someone first
/// wants it, at least one lease time after its owner's last renewal): longer than a cut-off
/// host takes to fence itself ([`fence_after_secs`]), with a lease time to spare.
pub fn quarantine_secs(lease_ttl: i64) -> i64 {
    lease_ttl * 3
}

/// How long a host goes without renewing its lease before it fences its overlay endpoints.
pub fn fence_after_secs(lease_ttl: i64) -> u64 {
    lease_ttl as u64 * 2
}

/// What an allocation on a network must avoid and what it should start quarantining:
/// addresses with an endpoint record, and held ones whose quarantine is not over (not begun,
/// or its key still there); held addresses without an endpoint record whose quarantine has
/// not begun are the ones to quarantine.
pub fn held_addresses(
    endpoints: &std::collections::BTreeSet<Ipv4Addr>,
    holders: &std::collections::BTreeMap<Ipv4Addr, Holder>,
    in_quarantine: &std::collections::BTreeSet<Ipv4Addr>,
) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let mut busy: Vec<Ipv4Addr> = endpoints.iter().copied().collect();
    let mut orphaned = Vec::new();
    for (ip, h) in holders {
        if endpoints.contains(ip) {
            continue;
        }
        if !h.quarantined {
            orphaned.push(*ip);
        }
        if !h.quarantined || in_quarantine.contains(ip) {
            busy.push(*ip);
        }
    }
    busy.sort();
    (busy, orphaned)
}

/// A member host: where its containers' packets go, and which subnets it uses locally (an
/// overlay must not overlap them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostRecord {
    pub addr: Ipv4Addr,
    pub subnets: Vec<Ipv4Network>,
    /// Its local networks' IPv6 subnets (absent from hosts before dual-stack overlays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets6: Vec<Ipv6Network>,
    /// Where and with which key its encrypted overlays' traffic is received (absent: the
    /// host cannot take part in encrypted overlays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardPeer>,
}

/// A member host's WireGuard identity, as it publishes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WireguardPeer {
    /// Its public key, base64 as `wg` prints keys.
    pub public_key: String,
    /// The UDP port it receives on (at its underlay address).
    pub port: u16,
}

impl OverlayNetwork {
    /// The network as this host runs it: a local bridge (the same gateway address on every
    /// host: each host routes its own containers' traffic out) joined to the others by VXLAN.
    pub fn local(&self) -> state::Network {
        state::Network {
            id: self.id.clone(),
            name: self.name.clone(),
            driver: "overlay".into(),
            ipv4: self.ipv4.then(|| self.claims()),
            internal: self.internal,
            icc: self.icc,
            masquerade: true,
            mtu: self.mtu,
            bridge: format!("ov-{}", crate::model::ids::short(&self.id)),
            options: self.options.clone(),
            created: self.created,
            vni: Some(self.vni),
            ipv6: self.subnet6.map(|subnet6| state::Ipv6Subnet {
                subnet: subnet6,
                gateway: ip6_at(subnet6, self.subnet, self.gateway),
                // Containers' IPv6 addresses follow their IPv4 ones: no `--ip6`.
                user_subnet: false,
            }),
        }
    }

    /// Where its containers' claims are made: its IPv4 addressing, or an IPv6-only overlay's
    /// [`places`].
    pub fn claims(&self) -> state::Ipv4Subnet {
        state::Ipv4Subnet {
            subnet: self.subnet,
            gateway: self.gateway,
            ip_range: self.ip_range,
            user_subnet: self.user_subnet,
        }
    }

    /// The MAC of its container claimed at `ip`: Docker's from the IPv4 address, on an
    /// IPv6-only overlay from the IPv6 one (as on IPv6-only bridge networks).
    pub fn mac_of(&self, ip: Ipv4Addr) -> String {
        match (self.ipv4, self.ip6_of(ip)) {
            (false, Some(ip6)) => state::mac_for6(ip6),
            _ => state::mac_for(ip),
        }
    }

    /// The IPv6 address of this overlay's container at IPv4 `ip` (None: no IPv6 here).
    pub fn ip6_of(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        self.subnet6.map(|s6| ip6_at(s6, self.subnet, ip))
    }
}

/// Docker swarm's default address pool: 10.0.0.0/8 carved into /24s.
fn pools() -> impl Iterator<Item = Ipv4Network> {
    (0u32..65536).map(|i| {
        Ipv4Network::new(Ipv4Addr::from(0x0a00_0000u32 + (i << 8)), 24).expect("valid /24")
    })
}

/// What an overlay's subnets must not overlap besides the other overlays: the subnets member
/// hosts use locally, each with a description for the error, and the pool of this host's
/// automatic IPv6 subnets.
pub struct Taken {
    pub v4: Vec<(Ipv4Network, String)>,
    pub v6: Vec<(Ipv6Network, String)>,
    pub pool6: Ipv6Network,
}

/// Validates a `network create -d overlay` request against the overlays that exist and the
/// subnets member hosts use (`taken`), and picks subnets, gateway and VNI.
pub fn plan(
    req: &CreateRequest,
    existing: &[OverlayNetwork],
    taken: &Taken,
    underlay_mtu: u32,
) -> Result<OverlayNetwork> {
    crate::model::networks::check_name(&req.name, "network")?;
    if crate::model::networks::is_predefined(&req.name) {
        bail!(
            "network with name {} already exists (a pre-defined network): pick another name",
            req.name
        );
    }
    if existing.iter().any(|n| n.name == req.name) {
        bail!(
            "network {} already exists in the cluster: pick another name or `netctl network rm` it",
            req.name
        );
    }
    let opts = options::parse(&req.options)?;
    let req = &crate::model::networks::with_family_options(req, &opts)?;
    let clashes = |s: &Ipv4Network| -> Option<String> {
        // (An IPv6-only overlay's places are no addresses.)
        let v4 = existing.iter().filter(|n| n.ipv4);
        if let Some(n) = v4.clone().find(|n| ipam::overlaps(&n.subnet, s)) {
            return Some(format!("overlay network {} ({})", n.name, n.subnet));
        }
        taken
            .v4
            .iter()
            .find(|(t, _)| ipam::overlaps(t, s))
            .map(|(t, what)| format!("{t}, {what}"))
    };
    let subnet = match &req.subnet {
        _ if req.ipv6_only => {
            if !req.ipv6 {
                bail!("--ipv4=false needs --ipv6: an overlay needs one address family");
            }
            if req.subnet.is_some() || req.gateway.is_some() || req.ip_range.is_some() {
                bail!("an IPv6-only overlay has no IPv4 --subnet, --gateway or --ip-range: give its IPv6 --subnet alone");
            }
            places()
        }
        Some(s) => {
            let s = ipam::parse_subnet(s, "subnet")?;
            if let Some(c) = clashes(&s) {
                bail!("subnet {s} overlaps {c}: pick a subnet that does not");
            }
            s
        }
        None => {
            if req.gateway.is_some() || req.ip_range.is_some() {
                bail!("--gateway and --ip-range need --subnet");
            }
            pools()
                .find(|p| clashes(p).is_none())
                .context("no free /24 left in 10.0.0.0/8 for an overlay network: give --subnet")?
        }
    };
    let (gateway, ip_range) = match req.ipv6_only {
        true => (PLACES_GATEWAY, None),
        false => crate::model::networks::plan_gateway(subnet, req)?,
    };
    let subnet6 = plan_subnet6(req, opts.encrypted, existing, taken, subnet)?;
    let vni = (FIRST_VNI..=MAX_VNI)
        .find(|v| !existing.iter().any(|n| n.vni == *v))
        .context("every VXLAN network identifier is in use")?;
    // What the underlay carries less the encapsulation, so no container packet makes the
    // host fragment its VXLAN packets.
    let overhead = match opts.encrypted {
        true => WIREGUARD_OVERHEAD,
        false => VXLAN_OVERHEAD,
    };
    let mtu = if opts.raw.keys().any(|k| k == options::MTU || k == "mtu") {
        opts.mtu
    } else {
        underlay_mtu.saturating_sub(overhead).max(MIN_MTU)
    };
    if subnet6.is_some() && mtu < IPV6_MIN_MTU {
        bail!("an overlay with IPv6 needs an MTU of {IPV6_MIN_MTU} or more (IPv6's minimum), and this one's is {mtu}: raise -o mtu or the underlay's MTU, or leave out --ipv6");
    }
    Ok(OverlayNetwork {
        id: state::random_id(),
        name: req.name.clone(),
        subnet,
        gateway,
        ip_range,
        internal: req.internal,
        icc: opts.icc,
        vni,
        mtu,
        options: opts.raw,
        created: state::now(),
        user_subnet: req.subnet.is_some(),
        subnet6,
        ipv4: !req.ipv6_only,
    })
}

/// The IPv6 subnet of a dual-stack overlay (`--ipv6`): the one asked for, or a /64 of this
/// host's unique local prefix; never overlapping another overlay's or a member's network.
fn plan_subnet6(
    req: &CreateRequest,
    encrypted: bool,
    existing: &[OverlayNetwork],
    taken: &Taken,
    subnet: Ipv4Network,
) -> Result<Option<Ipv6Network>> {
    if !req.ipv6 {
        if req.subnet6.is_some() || req.gateway6.is_some() {
            bail!("an IPv6 --subnet or --gateway needs --ipv6: add --ipv6 to make a dual-stack overlay");
        }
        return Ok(None);
    }
    if encrypted {
        bail!("encrypted overlays carry IPv4 only: leave out --ipv6 or -o encrypted");
    }
    if req.gateway6.is_some() {
        bail!("an overlay's IPv6 gateway is its IPv4 gateway's offset in the IPv6 subnet: leave out the IPv6 --gateway");
    }
    let mut busy: Vec<(Ipv6Network, String)> = existing
        .iter()
        .filter_map(|n| {
            let s6 = n.subnet6?;
            Some((s6, format!("overlay network {} ({s6})", n.name)))
        })
        .collect();
    busy.extend(taken.v6.iter().cloned());
    let subnet6 = match &req.subnet6 {
        Some(s) => {
            let s6 = ipam6::parse_subnet(s, "subnet")?;
            if let Some((t, what)) = busy.iter().find(|(t, _)| ipam6::overlaps(t, &s6)) {
                bail!("subnet {s6} overlaps {t}, {what}: pick a subnet that does not");
            }
            s6
        }
        None => {
            let nets: Vec<Ipv6Network> = busy.iter().map(|(t, _)| *t).collect();
            ipam6::pick_subnet(taken.pool6, &nets)?
        }
    };
    if !holds(&subnet6, &subnet) && req.ipv6_only {
        bail!(
            "IPv6 subnet {subnet6} is too small for an overlay: give a /{} or larger",
            128 - (32 - u32::from(subnet.prefix()))
        );
    }
    if !holds(&subnet6, &subnet) {
        bail!(
            "IPv6 subnet {subnet6} is smaller than IPv4 subnet {subnet}: an overlay's IPv6 addresses are its IPv4 ones' offsets, so give a /{} or larger",
            128 - (32 - u32::from(subnet.prefix()))
        );
    }
    Ok(Some(subnet6))
}

/// Overlay endpoints in `before` that `after` no longer has: their addresses go back to the
/// cluster.
pub fn gone(before: &State, after: &State) -> Vec<(String, Ipv4Addr, String)> {
    let overlay = |ep: &Endpoint| {
        before
            .networks
            .get(&ep.network)
            .is_some_and(|n| n.vni.is_some())
    };
    let kept: std::collections::HashSet<&str> = after
        .containers
        .values()
        .flat_map(|c| c.endpoints.iter())
        .filter(|e| overlay(e))
        .map(|e| e.endpoint_id.as_str())
        .collect();
    before
        .containers
        .values()
        .flat_map(|c| c.endpoints.iter())
        .filter(|ep| overlay(ep) && !kept.contains(ep.endpoint_id.as_str()))
        .filter_map(|ep| {
            let ip = claim_of(before.networks.get(&ep.network)?, ep)?;
            Some((ep.network.clone(), ip, ep.endpoint_id.clone()))
        })
        .collect()
}

/// Local copies of overlay networks no local container uses any more: the host leaves them
/// (the network stays in the cluster).
pub fn idle_overlays(state: &State) -> Vec<String> {
    state
        .networks
        .values()
        .filter(|n| n.vni.is_some() && state.attached(&n.name).is_empty())
        .map(|n| n.name.clone())
        .collect()
}

/// What one host may put in the store: more endpoint records than this are not used (the
/// remote-container map and the names stay within bounds whatever a member writes).
pub const MAX_RECORDS_PER_HOST: usize = 4096;
/// Aliases one endpoint record may carry.
pub const MAX_ALIASES: usize = 64;

/// Why an overlay network read from the cluster store (or its cache) cannot be used; None
/// when it can. Nothing of a record that fails here reaches the kernel, the names or the
/// state.
pub fn network_problem(n: &OverlayNetwork) -> Option<String> {
    if !state::is_safe_id(&n.id) {
        return Some(format!("ID {:?} is not a valid ID", n.id));
    }
    if crate::model::networks::check_name(&n.name, "network").is_err() || n.name.len() > 128 {
        return Some(format!("name {:?} is not a valid network name", n.name));
    }
    if !(FIRST_VNI..=MAX_VNI).contains(&n.vni) {
        return Some(format!("VNI {} is outside {FIRST_VNI}-{MAX_VNI}", n.vni));
    }
    if !n.subnet.contains(n.gateway) {
        return Some(format!("gateway {} is outside {}", n.gateway, n.subnet));
    }
    if n.ip_range
        .is_some_and(|r| !ipam::overlaps(&r, &n.subnet) || r.prefix() < n.subnet.prefix())
    {
        return Some(format!("ip-range is outside {}", n.subnet));
    }
    if !(68..=65535).contains(&n.mtu) {
        return Some(format!("MTU {} is not valid", n.mtu));
    }
    if let Some(s6) = &n.subnet6 {
        if !holds(s6, &n.subnet) || ipam6::parse_subnet(&s6.to_string(), "subnet").is_err() {
            return Some(format!("IPv6 subnet {s6} is not usable for {}", n.subnet));
        }
    }
    if !n.ipv4 && (n.subnet != places() || n.gateway != PLACES_GATEWAY || n.subnet6.is_none()) {
        return Some("an IPv6-only overlay without its IPv6 subnet or places".into());
    }
    if n.subnet6.is_some() && options::encrypted(&n.options) {
        return Some("an encrypted overlay with IPv6".into());
    }
    if n.subnet6.is_some() && n.mtu < IPV6_MIN_MTU {
        return Some(format!("MTU {} is below IPv6's minimum", n.mtu));
    }
    None
}

/// Why an endpoint record at `ip` of overlay network `net` cannot be used; None when it can.
pub fn record_problem(net: &OverlayNetwork, ip: Ipv4Addr, r: &EndpointRecord) -> Option<String> {
    address_problem(&net.name, net.subnet, net.gateway, ip)
        .or_else(|| {
            (r.host.is_unspecified() || r.host.is_loopback() || r.host.is_multicast())
                .then(|| format!("host {} is not a member host's address", r.host))
        })
        .or_else(|| {
            (!state::is_safe_id(&r.endpoint_id)).then(|| "endpoint ID is not a valid ID".into())
        })
        .or_else(|| naming_problem(&r.container_id, &r.container, &r.aliases))
}

/// Why `ip` is no container address of network `name` (`subnet`, `gateway`).
pub fn address_problem(
    name: &str,
    subnet: Ipv4Network,
    gateway: Ipv4Addr,
    ip: Ipv4Addr,
) -> Option<String> {
    let s = subnet;
    (!s.contains(ip) || ip == gateway || ip == s.network() || ip == s.broadcast())
        .then(|| format!("{ip} is no container address of {name} ({s})"))
}

/// Why another host's container cannot be named as it says: its ID, its name or an alias.
pub fn naming_problem(container_id: &str, container: &str, aliases: &[String]) -> Option<String> {
    if !state::is_safe_id(container_id) {
        return Some("container ID is not a valid ID".into());
    }
    if crate::model::networks::check_name(container, "container").is_err() || container.len() > 128
    {
        return Some(format!("container name {container:?} is not valid"));
    }
    if aliases.len() > MAX_ALIASES {
        return Some(format!("{} aliases (at most {MAX_ALIASES})", aliases.len()));
    }
    aliases
        .iter()
        .find(|a| !crate::model::runopts::is_dns_name(a))
        .map(|a| format!("alias {a:?} is not a DNS name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_addresses_wait_out_their_quarantine() {
        let ip = |n: u8| Ipv4Addr::new(10, 0, 0, n);
        let holder = |q: bool| Holder {
            host: ip(200),
            endpoint_id: "e".into(),
            quarantined: q,
        };
        let endpoints = [ip(2)].into();
        // 2: in use; 3: orphaned, quarantine not begun; 4: in quarantine; 5: quarantine over.
        let holders = [
            (ip(2), holder(false)),
            (ip(3), holder(false)),
            (ip(4), holder(true)),
            (ip(5), holder(true)),
        ]
        .into();
        let (busy, orphaned) = held_addresses(&endpoints, &holders, &[ip(4)].into());
        assert_eq!(busy, [ip(2), ip(3), ip(4)]);
        assert_eq!(orphaned, [ip(3)]);
    }

    fn free() -> Taken {
        Taken {
            v4: Vec::new(),
            v6: Vec::new(),
            pool6: "fd12:3456:789a::/48".parse().unwrap(),
        }
    }

    fn taken4(subnet: &str) -> Taken {
        Taken {
            v4: vec![(
                subnet.parse().unwrap(),
                "a local network of host 192.0.2.9".to_string(),
            )],
            ..free()
        }
    }

    fn req(name: &str, subnet: Option<&str>) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            driver: "overlay".into(),
            subnet: subnet.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn picks_free_subnets_and_vnis() {
        let a = plan(&req("a", None), &[], &free(), 1500).unwrap();
        assert_eq!(a.subnet.to_string(), "10.0.0.0/24");
        assert_eq!(a.gateway, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.vni, FIRST_VNI);
        assert_eq!(a.mtu, 1450, "container MTU lowered by the VXLAN overhead");
        let jumbo = plan(&req("j", None), &[], &free(), 9000).unwrap();
        assert_eq!(jumbo.mtu, 8950, "from the underlay's MTU");
        let tiny = plan(&req("t", None), &[], &free(), 600).unwrap();
        assert_eq!(tiny.mtu, 576, "never below IPv4's minimum");
        let mut given = req("g", None);
        given.options = vec!["mtu=1400".into()];
        assert_eq!(plan(&given, &[], &free(), 9000).unwrap().mtu, 1400);
        let taken = taken4("10.0.1.0/24");
        let b = plan(&req("b", None), std::slice::from_ref(&a), &taken, 1500).unwrap();
        assert_eq!(
            b.subnet.to_string(),
            "10.0.2.0/24",
            "skips a and the host's subnet"
        );
        assert_eq!(b.vni, FIRST_VNI + 1);
        let local = b.local();
        assert_eq!(
            (local.driver.as_str(), local.vni),
            ("overlay", Some(FIRST_VNI + 1))
        );
    }

    fn record() -> EndpointRecord {
        EndpointRecord {
            host: Ipv4Addr::new(192, 0, 2, 9),
            container_id: "c".repeat(64),
            container: "web".into(),
            endpoint_id: "e".repeat(64),
            mac: "02:42:0a:00:00:05".into(),
            aliases: vec!["api".into()],
        }
    }

    #[test]
    fn records_from_the_store_are_checked_before_use() {
        let net = plan(&req("ov", Some("10.9.0.0/24")), &[], &free(), 1500).unwrap();
        assert_eq!(network_problem(&net), None);
        let ip = Ipv4Addr::new(10, 9, 0, 5);
        assert_eq!(record_problem(&net, ip, &record()), None);
        // Addresses outside the subnet, or the gateway's: someone else's traffic.
        for bad in ["8.8.8.8", "10.9.0.1", "10.9.0.0", "10.9.0.255"] {
            assert!(
                record_problem(&net, bad.parse().unwrap(), &record()).is_some(),
                "{bad}"
            );
        }
        // A name cut inside a character, a path in an ID, a bad alias, too many aliases.
        let mut r = record();
        r.container_id = "aaaaaaaaaaa\u{e9}bbbb".into();
        assert!(record_problem(&net, ip, &r).is_some());
        let mut r = record();
        r.container = "../x".into();
        assert!(record_problem(&net, ip, &r).is_some());
        let mut r = record();
        r.aliases = vec!["a b".into()];
        assert!(record_problem(&net, ip, &r).is_some());
        let mut r = record();
        r.aliases = vec!["a".into(); MAX_ALIASES + 1];
        assert!(record_problem(&net, ip, &r).is_some());
        let mut r = record();
        r.host = Ipv4Addr::LOCALHOST;
        assert!(record_problem(&net, ip, &r).is_some());
        // Networks: a short or strange ID, a VNI out of range, a gateway elsewhere.
        let mut n = net.clone();
        n.id = "abc".into();
        assert!(network_problem(&n).is_some());
        let mut n = net.clone();
        n.vni = 1;
        assert!(network_problem(&n).is_some());
        let mut n = net.clone();
        n.gateway = Ipv4Addr::new(10, 10, 0, 1);
        assert!(network_problem(&n).is_some());
    }

    #[test]
    fn refuses_overlaps_and_names_in_use() {
        let a = plan(&req("a", Some("10.9.0.0/16")), &[], &free(), 1500).unwrap();
        let e = plan(
            &req("b", Some("10.9.3.0/24")),
            std::slice::from_ref(&a),
            &free(),
            1500,
        )
        .unwrap_err();
        assert!(e.to_string().contains("overlaps overlay network a"), "{e}");
        let taken = taken4("172.20.0.0/16");
        let e = plan(&req("b", Some("172.20.5.0/24")), &[], &taken, 1500).unwrap_err();
        assert!(
            e.to_string().contains("local network of host 192.0.2.9"),
            "{e}"
        );
        let e = plan(&req("a", None), std::slice::from_ref(&a), &free(), 1500).unwrap_err();
        assert!(
            e.to_string().contains("already exists in the cluster"),
            "{e}"
        );
        assert!(plan(&req("host", None), &[], &free(), 1500).is_err());
    }

    #[test]
    fn dual_stack_overlays_put_ipv6_addresses_at_their_ipv4_offsets() {
        let mut r = req("d", Some("10.9.0.0/24"));
        r.ipv6 = true;
        r.subnet6 = Some("fd00:9::/64".into());
        let d = plan(&r, &[], &free(), 1500).unwrap();
        assert_eq!(d.subnet6, Some("fd00:9::/64".parse().unwrap()));
        assert_eq!(
            d.ip6_of(Ipv4Addr::new(10, 9, 0, 77)),
            Some("fd00:9::4d".parse().unwrap())
        );
        let local = d.local();
        let v6 = local.ipv6.as_ref().unwrap();
        assert_eq!(v6.gateway, "fd00:9::1".parse::<Ipv6Addr>().unwrap());
        assert!(!v6.user_subnet, "no --ip6 on an overlay");
        assert_eq!(
            endpoint_ip6(&local, Ipv4Addr::new(10, 9, 0, 200)),
            Some("fd00:9::c8".parse().unwrap())
        );
        assert_eq!(network_problem(&d), None);
        // The IPv6 subnet must hold every IPv4 offset: /120 holds a /24, /121 does not.
        r.subnet6 = Some("fd00:9::/120".into());
        assert!(plan(&r, &[], &free(), 1500).is_ok());
        r.subnet6 = Some("fd00:9::/121".into());
        let e = plan(&r, &[], &free(), 1500).unwrap_err();
        assert!(e.to_string().contains("give a /120 or larger"), "{e}");
        let mut bad = d.clone();
        bad.subnet6 = Some("fd00:9::/121".parse().unwrap());
        assert!(
            network_problem(&bad).is_some(),
            "a record that could overflow"
        );
        bad.subnet6 = Some("ff02::/64".parse().unwrap());
        assert!(network_problem(&bad).is_some(), "multicast");
        // Automatic: a /64 of the pool that overlaps no overlay and no member's network.
        let mut auto = req("e", Some("10.8.0.0/24"));
        auto.ipv6 = true;
        let mut taken = free();
        taken.v6 = vec![(
            "fd12:3456:789a:1::/64".parse().unwrap(),
            "a local network of host 192.0.2.9".to_string(),
        )];
        let mut first = d.clone();
        first.name = "first".into();
        first.vni = FIRST_VNI + 7;
        first.subnet = "10.7.0.0/24".parse().unwrap();
        first.subnet6 = Some("fd12:3456:789a::/64".parse().unwrap());
        let e6 = plan(&auto, &[first.clone()], &taken, 1500).unwrap();
        assert_eq!(e6.subnet6, Some("fd12:3456:789a:2::/64".parse().unwrap()));
        // A given one that overlaps either is refused, naming it.
        auto.subnet6 = Some("fd12:3456:789a:1::/64".into());
        let e = plan(&auto, &[first.clone()], &taken, 1500).unwrap_err();
        assert!(
            e.to_string().contains("local network of host 192.0.2.9"),
            "{e}"
        );
        auto.subnet6 = Some("fd12:3456:789a::/56".into());
        let e = plan(&auto, &[first], &taken, 1500).unwrap_err();
        assert!(e.to_string().contains("overlay network first"), "{e}");
        // Encrypted, an IPv6 gateway: refused.
        let mut enc = req("f", None);
        enc.ipv6 = true;
        enc.options = vec!["encrypted".into()];
        assert!(plan(&enc, &[], &free(), 1500).is_err());
        let mut gw = req("f", None);
        gw.ipv6 = true;
        gw.gateway6 = Some("fd00::1".into());
        assert!(plan(&gw, &[], &free(), 1500).is_err());
        // IPv6 needs an MTU of 1280 at least; an encrypted record with IPv6 is unusable.
        let mut small = req("m", None);
        small.ipv6 = true;
        small.options = vec!["mtu=1200".into()];
        let e = plan(&small, &[], &free(), 1500).unwrap_err();
        assert!(e.to_string().contains("MTU of 1280"), "{e}");
        let mut bad = d.clone();
        bad.options.insert("encrypted".into(), String::new());
        assert!(network_problem(&bad).is_some());
        // Docker's option alone makes it dual stack.
        let mut opt = req("g", None);
        opt.options = vec!["com.docker.network.enable_ipv6=true".into()];
        assert!(plan(&opt, &[], &free(), 1500).unwrap().subnet6.is_some());
    }

    #[test]
    fn ipv6_only_overlays_claim_places_and_have_ipv6_addresses_alone() {
        let mut only = req("v6", None);
        only.options = vec![
            "com.docker.network.enable_ipv6=true".into(),
            "com.docker.network.enable_ipv4=false".into(),
        ];
        only.subnet6 = Some("fd00:6::/64".into());
        let o = plan(&only, &[], &free(), 1500).unwrap();
        assert!(!o.ipv4);
        assert_eq!((o.subnet, o.gateway), (places(), Ipv4Addr::new(0, 0, 0, 1)));
        assert_eq!(network_problem(&o), None);
        let local = o.local();
        assert!(local.ipv4.is_none());
        assert_eq!(
            local.ipv6.as_ref().unwrap().gateway,
            "fd00:6::1".parse::<Ipv6Addr>().unwrap()
        );
        // A place's IPv6 address, its MAC from that, and back from the endpoint.
        let place = Ipv4Addr::new(0, 0, 1, 2);
        let ip6: Ipv6Addr = "fd00:6::102".parse().unwrap();
        assert_eq!(endpoint_ip6(&local, place), Some(ip6));
        assert_eq!(o.mac_of(place), "02:42:00:00:01:02");
        let ep = Endpoint {
            network: "v6".into(),
            endpoint_id: "e".into(),
            host_veth: "v".into(),
            ifname: "eth0".into(),
            ip: None,
            ip6: Some(ip6),
            mac: o.mac_of(place),
            aliases: Vec::new(),
        };
        assert_eq!(claim_of(&local, &ep), Some(place));
        assert_eq!(
            claim_space(&local),
            Some((places(), Ipv4Addr::new(0, 0, 0, 1)))
        );
        // Two of them: their places are no addresses, so they never overlap.
        only.name = "v6b".into();
        only.subnet6 = Some("fd00:7::/64".into());
        assert!(plan(&only, std::slice::from_ref(&o), &free(), 1500).is_ok());
        // And IPv4 overlays take any subnet beside them.
        assert!(plan(&req("v4", None), std::slice::from_ref(&o), &free(), 1500).is_ok());
        // No IPv4 --subnet on it, no IPv4-less overlay without --ipv6, room for 2^16 places.
        let mut bad = only.clone();
        bad.subnet = Some("10.1.0.0/24".into());
        assert!(plan(&bad, &[], &free(), 1500).is_err());
        let mut bad = req("x", None);
        bad.ipv6_only = true;
        assert!(plan(&bad, &[], &free(), 1500).is_err());
        let mut small = only.clone();
        small.subnet6 = Some("fd00:8::/113".into());
        let e = plan(&small, &[], &free(), 1500).unwrap_err();
        assert!(e.to_string().contains("give a /112 or larger"), "{e}");
        // A record from the store that says IPv6-only but claims elsewhere: unusable.
        let mut forged = o.clone();
        forged.subnet = "10.0.0.0/16".parse().unwrap();
        assert!(network_problem(&forged).is_some());
    }
}
