//! Networks: plan (validate everything, touch nothing), create, remove.

use anyhow::{bail, Context, Result};
use ipnetwork::{Ipv4Network, Ipv6Network};

pub use crate::model::networks::{
    check_name, has_embedded_dns, is_predefined, plan_gateway, predefined_id, CreateRequest,
    DEFAULT_BRIDGE, DEFAULT_NETWORK, HOST, NONE, PREDEFINED,
};
use crate::{
    base::config::Config,
    kernel::netlink::Netlink,
    kernel::topology,
    model::ipam,
    model::ipam6,
    model::options,
    model::state::{self, Ipv4Subnet, Ipv6Subnet, Network, State},
};

/// Subnets a new network must not overlap: the host's addresses and routes (except those of
/// netctl's own bridges, which are networks already) and every network.
pub fn taken_subnets(nl: &Netlink, state: &State) -> Result<Vec<Ipv4Network>> {
    let mut own = Vec::new();
    for n in state.networks.values() {
        own.extend(nl.link(&n.bridge)?.map(|l| l.index));
    }
    let mut taken: Vec<Ipv4Network> = state
        .networks
        .values()
        .filter_map(|n| n.ipv4.as_ref().map(|v| v.subnet))
        .collect();
    for (index, net) in nl.addresses()? {
        if !own.contains(&index) && !net.ip().is_loopback() {
            taken.push(Ipv4Network::new(net.network(), net.prefix()).expect("valid prefix"));
        }
    }
    for (dst, oif) in nl.routes()? {
        if dst.prefix() > 0 && !oif.is_some_and(|i| own.contains(&i)) {
            taken.push(dst);
        }
    }
    Ok(taken)
}

/// IPv6 subnets a new one may not overlap: the networks' and the host's own (its bridges'
/// excepted).
pub fn taken_subnets6(nl: &Netlink, state: &State) -> Result<Vec<Ipv6Network>> {
    let mut taken: Vec<Ipv6Network> = state
        .networks
        .values()
        .filter_map(|n| n.ipv6.as_ref().map(|v| v.subnet))
        .collect();
    let own: Vec<u32> = state
        .networks
        .values()
        .filter_map(|n| nl.link(&n.bridge).ok().flatten().map(|l| l.index))
        .collect();
    for (index, net) in nl.addresses6()? {
        let ip = net.ip();
        if !own.contains(&index) && !ip.is_loopback() && !ip.is_unicast_link_local() {
            taken.push(Ipv6Network::new(net.network(), net.prefix()).expect("valid prefix"));
        }
    }
    Ok(taken)
}

/// This host's (and instance's) unique local /48, the IPv6 pool subnets come from.
pub fn ula(group: u32) -> Ipv6Network {
    ipam6::ula_prefix(&format!("{}/{group}", machine_id()))
}

/// The /48 that dual-stack overlays made on this host take their subnets from: another
/// than [`ula`]'s, so this host's later bridge networks never pick an overlay's subnet.
pub fn overlay_ula(group: u32) -> Ipv6Network {
    ipam6::ula_prefix(&format!("{}/{group}/overlay", machine_id()))
}

fn machine_id() -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    machine.trim().to_string()
}

/// The IPv6 addressing of a new network (`--ipv6`), checked against the other networks and
/// the host's own addresses; `group` names the instance (the unique local prefix is the
/// host's and the instance's).
fn plan_ipv6(
    nl: &Netlink,
    state: &State,
    req: &CreateRequest,
    group: u32,
) -> Result<Option<Ipv6Subnet>> {
    if !req.ipv6 {
        if req.subnet6.is_some() || req.gateway6.is_some() {
            bail!("an IPv6 --subnet or --gateway needs --ipv6: add --ipv6 to make a dual-stack network");
        }
        return Ok(None);
    }
    let taken = taken_subnets6(nl, state)?;
    let subnet = match &req.subnet6 {
        Some(s) => {
            let s = ipam6::parse_subnet(s, "subnet")?;
            if let Some(t) = taken.iter().find(|t| ipam6::overlaps(t, &s)) {
                bail!("subnet {s} overlaps {t}, a network or an address of this host: pick a subnet that does not");
            }
            s
        }
        None => {
            if req.gateway6.is_some() {
                bail!("an IPv6 --gateway needs an IPv6 --subnet");
            }
            ipam6::pick_subnet(ula(group), &taken)?
        }
    };
    let gateway = req
        .gateway6
        .as_deref()
        .map(|g| ipam6::parse_ip(g, "gateway"))
        .transpose()?;
    Ok(Some(Ipv6Subnet {
        subnet,
        gateway: ipam6::plan(subnet, gateway)?,
        user_subnet: req.subnet6.is_some(),
    }))
}

/// The IPv4 addressing of a new network: the `--subnet` asked for (checked against the other
/// networks and the host's addresses and routes) or the next free pool; None for
/// `--ipv4=false`.
fn plan_ipv4(nl: &Netlink, state: &State, req: &CreateRequest) -> Result<Option<Ipv4Subnet>> {
    if req.ipv6_only {
        if req.subnet.is_some() || req.gateway.is_some() || req.ip_range.is_some() {
            bail!("an IPv4 --subnet, --gateway or --ip-range needs IPv4: leave out --ipv4=false");
        }
        return Ok(None);
    }
    let taken = taken_subnets(nl, state)?;
    let subnet = match &req.subnet {
        Some(s) => {
            let s = ipam::parse_subnet(s, "subnet")?;
            if let Some((n, v4)) = state
                .networks
                .values()
                .filter_map(|n| Some((n, n.ipv4.as_ref()?)))
                .find(|(_, v4)| ipam::overlaps(&v4.subnet, &s))
            {
                bail!(
                    "subnet {s} overlaps network {} ({}): pick a subnet that does not",
                    n.name,
                    v4.subnet
                );
            }
            if let Some(t) = taken.iter().find(|t| ipam::overlaps(t, &s)) {
                bail!("subnet {s} overlaps {t}, an address or route of this host: pick a subnet that does not");
            }
            s
        }
        None => {
            if req.gateway.is_some() || req.ip_range.is_some() {
                bail!("--gateway and --ip-range need --subnet");
            }
            let preferred = (req.name == DEFAULT_NETWORK)
                .then(|| ipam::DEFAULT_BRIDGE_SUBNET.parse().expect("valid"));
            ipam::pick_pool(preferred, &taken)?
        }
    };
    let (gateway, ip_range) = plan_gateway(subnet, req)?;
    Ok(Some(Ipv4Subnet {
        subnet,
        gateway,
        ip_range,
        user_subnet: req.subnet.is_some(),
    }))
}

/// Validates a request against the state and the host and returns the network to create.
pub fn plan(nl: &Netlink, state: &State, req: &CreateRequest, group: u32) -> Result<Network> {
    check_name(&req.name, "network")?;
    match req.driver.as_str() {
        "bridge" => {}
        "overlay" => bail!("overlay networks are made in the cluster store: `netctl network create -d overlay` with NETCTL_CLUSTER_STORE set"),
        other => bail!("unknown driver {other:?}: use --driver bridge or overlay"),
    }
    if req.name == NONE || req.name == HOST {
        bail!(
            "network with name {} already exists (a pre-defined network, for run --network {}): pick another name",
            req.name,
            req.name
        );
    }
    if state.networks.contains_key(&req.name) {
        bail!(
            "network {} already exists: pick another name or `netctl network rm` it",
            req.name
        );
    }
    let opts = options::parse(&req.options)?;
    if opts.encrypted {
        bail!("-o encrypted is for overlay networks (-d overlay): a bridge network's traffic never leaves this host");
    }
    let req = &crate::model::networks::with_family_options(req, &opts)?;
    let ipv4 = plan_ipv4(nl, state, req)?;
    let ipv6 = plan_ipv6(nl, state, req, group)?;
    if ipv4.is_none() && ipv6.is_none() {
        bail!("--ipv4=false needs --ipv6: a network has IPv4, IPv6 or both");
    }
    let id = state::random_id();
    let bridge = match (&opts.bridge_name, req.name == DEFAULT_NETWORK) {
        (Some(b), _) => b.clone(),
        (None, true) => DEFAULT_BRIDGE.to_string(),
        (None, false) => format!("br-{}", &id[..12]),
    };
    if let Some(n) = state.networks.values().find(|n| n.bridge == bridge) {
        bail!(
            "bridge name {bridge} is used by network {}: pick another with -o {}",
            n.name,
            options::BRIDGE_NAME
        );
    }
    if nl.link(&bridge)?.is_some() {
        bail!(
            "bridge name {bridge} is taken by an existing interface: pick another with -o {}",
            options::BRIDGE_NAME
        );
    }
    Ok(Network {
        id,
        name: req.name.clone(),
        driver: req.driver.clone(),
        ipv4,
        internal: req.internal,
        icc: opts.icc,
        masquerade: opts.masquerade,
        mtu: opts.mtu,
        bridge,
        options: opts.raw,
        created: state::now(),
        vni: None,
        ipv6,
    })
}

/// On a cluster member, a local network's subnet must not overlap an overlay network.
pub fn check_against_overlays(ctx: &crate::engine::ctx::Ctx, req: &CreateRequest) -> Result<()> {
    if req.subnet.is_none() && req.subnet6.is_none() {
        return Ok(());
    }
    let subnet = req
        .subnet
        .as_deref()
        .map(|s| ipam::parse_subnet(s, "subnet"))
        .transpose()?;
    let subnet6 = req
        .subnet6
        .as_deref()
        .map(|s| ipam6::parse_subnet(s, "subnet"))
        .transpose()?;
    // Local networks do not depend on the store: without it, say what was not checked.
    let overlays = match ctx.cluster().and_then(|c| c.overlays()) {
        Ok(overlays) => overlays,
        Err(e) => {
            eprintln!("netctl: warning: subnet not checked against overlay networks: {e:#}");
            return Ok(());
        }
    };
    for o in &overlays {
        if let Some(s) = subnet.filter(|s| o.ipv4 && ipam::overlaps(&o.subnet, s)) {
            bail!(
                "subnet {s} overlaps overlay network {} ({}): pick a subnet that does not",
                o.name,
                o.subnet
            );
        }
        let o6 = o
            .subnet6
            .filter(|o6| subnet6.is_some_and(|s| ipam6::overlaps(o6, &s)));
        if let (Some(o6), Some(s)) = (o6, subnet6) {
            bail!(
                "subnet {s} overlaps overlay network {} ({o6}): pick a subnet that does not",
                o.name
            );
        }
    }
    Ok(())
}

/// Plans and creates a network; the caller saves the state.
pub fn create(nl: &Netlink, state: &mut State, req: &CreateRequest, group: u32) -> Result<Network> {
    let net = plan(nl, state, req, group)?;
    topology::create_bridge(nl, &net, group)?;
    state.networks.insert(net.name.clone(), net.clone());
    Ok(net)
}

/// The default network as it would be created now (inspect shows it before first use), as
/// the daemon's settings say: ICC (dockerd's `--icc`) and IPv6 (`--ipv6`, `--fixed-cidr-v6`).
pub fn plan_default(nl: &Netlink, state: &State, group: u32, cfg: &Config) -> Result<Network> {
    let req = CreateRequest {
        name: DEFAULT_NETWORK.into(),
        driver: "bridge".into(),
        ipv6: cfg.default_ipv6.is_some(),
        subnet6: cfg.default_ipv6.flatten().map(|s| s.to_string()),
        ..Default::default()
    };
    let mut net = plan(nl, state, &req, group).context("planning the default network bridge")?;
    net.id = predefined_id(group, DEFAULT_NETWORK);
    if !cfg.default_icc {
        net.icc = false;
        net.options
            .insert(options::ICC.to_string(), "false".to_string());
    }
    Ok(net)
}

/// Creates the default network if it does not exist yet.
pub fn ensure_default(nl: &Netlink, state: &mut State, group: u32, cfg: &Config) -> Result<()> {
    if state.networks.contains_key(DEFAULT_NETWORK) {
        return Ok(());
    }
    let net = plan_default(nl, state, group, cfg)?;
    topology::create_bridge(nl, &net, group).context("creating the default network bridge")?;
    state.networks.insert(net.name.clone(), net);
    Ok(())
}

/// Why a network cannot be removed now (pre-defined, or containers attached).
pub fn why_not_removable(state: &State, name: &str) -> Option<String> {
    if is_predefined(name) {
        return Some(format!(
            "{name} is a pre-defined network and cannot be removed"
        ));
    }
    let attached: Vec<&str> = state
        .attached(name)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    (!attached.is_empty()).then(|| {
        format!(
            "network {name} has containers attached ({}): `netctl rm` them or `netctl network disconnect` them first",
            attached.join(", ")
        )
    })
}

pub fn remove(nl: &Netlink, state: &mut State, name: &str) -> Result<()> {
    let net = state.networks.remove(name).expect("checked");
    nl.del_link_by_name(&net.bridge)
}
