use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{
    engine::containers,
    engine::ctx::Ctx,
    engine::networks::{self, CreateRequest},
    model::networks::has_embedded_dns,
    model::overlay::OverlayNetwork,
    model::state::{short, Network, State},
};

#[derive(Subcommand)]
pub enum Command {
    /// Create a network: a Linux bridge with a gateway address and an address pool
    #[command(
        after_help = "Options (-o KEY=VALUE), Docker's keys or the short forms:\n  \
        com.docker.network.bridge.enable_icc (icc)                   containers of the network may talk to each other [true]\n  \
        com.docker.network.bridge.enable_ip_masquerade (masquerade)  SNAT traffic leaving through the uplinks [true]\n  \
        com.docker.network.bridge.gateway_mode_ipv6 (gateway_mode_ipv6)  nat, or routed: IPv6 leaves with the containers' own\n  \
                                                                 addresses and only published ports and ping get in [nat]\n  \
        com.docker.network.driver.mtu (mtu)                          MTU of the bridge and veths [1500]\n  \
        com.docker.network.bridge.name (bridge_name)                 bridge name [br-<id>; netctl0 for bridge]\n  \
        encrypted                                                    overlay only: traffic between hosts through WireGuard [off]\n  \
        com.docker.network.enable_ipv6 (enable_ipv6)                 as --ipv6\n  \
        com.docker.network.enable_ipv4 (enable_ipv4)                 false: as --ipv4=false\n\n\
        Example: netctl network create --subnet 172.30.0.0/24 -o icc=false backend\n\
        Example: netctl network create -d overlay -o encrypted --subnet 10.52.0.0/24 secure\n\
        Example: netctl network create --ipv6 --ipv4=false v6only   (IPv4 servers through NAT64)\n\
        Example: netctl network create -d overlay --ipv6 --subnet 10.52.1.0/24 --subnet fd52:1::/64 dual"
    )]
    Create {
        /// Network driver: bridge (this host) or overlay (every host of the cluster store)
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form, one per address family (default: the next free pool,
        /// 172.18.0.0/16 …; with --ipv6 a /64 of this host's fdXX:XXXX:XXXX::/48)
        #[arg(long)]
        subnet: Vec<String>,
        /// Gateway address on the bridge, one per family (default: the subnet's first address)
        #[arg(long)]
        gateway: Vec<String>,
        /// Dual stack: IPv6 addresses for the containers besides IPv4 (on an overlay, each
        /// container's IPv6 address is its IPv4 address's offset in the IPv6 subnet)
        #[arg(long)]
        ipv6: bool,
        /// IPv4 on the network; --ipv4=false with --ipv6 makes an IPv6-only network
        /// (containers get no IPv4 address; their names resolve at the IPv6 gateway; IPv4
        /// servers are reached at 64:ff9b::/96 through NAT64, with DNS64, on Linux 5.17+)
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        ipv4: Option<bool>,
        /// Allocate container addresses from this sub-range of the subnet
        #[arg(long)]
        ip_range: Option<String>,
        /// No traffic in or out of the network: containers only reach each other
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE (see below)
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only print network IDs
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json (one object per line)
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show networks in detail, as a JSON array in Docker's shape
    Inspect {
        /// Networks: names, IDs or unique ID prefixes
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Remove networks (refused while containers are attached; pre-defined ones stay)
    #[command(alias = "remove")]
    Rm {
        /// Networks: names, IDs or unique ID prefixes
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Attach a running container to a further network (eth1, eth2, …)
    Connect {
        /// Static address on that network (networks created with --subnet only)
        #[arg(long)]
        ip: Option<String>,
        /// Static IPv6 address on that network (networks made with --ipv6 and an IPv6 --subnet)
        #[arg(long)]
        ip6: Option<String>,
        /// Another name of the container on that network (its embedded DNS resolves it)
        #[arg(long, value_name = "ALIAS")]
        alias: Vec<String>,
        /// Network: name, ID or unique ID prefix
        network: String,
        /// Container: name, ID or unique ID prefix
        container: String,
    },
    /// Detach a container from a network
    Disconnect {
        /// Network: name, ID or unique ID prefix
        network: String,
        /// Container: name, ID or unique ID prefix
        container: String,
    },
}

/// A network as listed: one of the state's, or a pre-defined one the state does not hold
/// (`host`, `none`, and `bridge` before its first use).
enum Listed<'a> {
    Stored(&'a Network),
    Predefined {
        name: &'static str,
        driver: &'static str,
        id: String,
    },
    /// An overlay network of the cluster store.
    Overlay(OverlayNetwork),
}

impl Listed<'_> {
    fn name(&self) -> &str {
        match self {
            Listed::Stored(n) => &n.name,
            Listed::Predefined { name, .. } => name,
            Listed::Overlay(n) => &n.name,
        }
    }
    fn id(&self) -> &str {
        match self {
            Listed::Stored(n) => &n.id,
            Listed::Predefined { id, .. } => id,
            Listed::Overlay(n) => &n.id,
        }
    }
    fn driver(&self) -> &str {
        match self {
            Listed::Stored(n) => &n.driver,
            Listed::Predefined { driver, .. } => driver,
            Listed::Overlay(_) => "overlay",
        }
    }
    fn internal(&self) -> bool {
        match self {
            Listed::Stored(n) => n.internal,
            Listed::Overlay(n) => n.internal,
            Listed::Predefined { .. } => false,
        }
    }
    fn scope(&self) -> &'static str {
        match self {
            Listed::Overlay(_) => "global",
            Listed::Stored(n) if n.vni.is_some() => "global",
            _ => "local",
        }
    }
}

/// The cluster's overlay networks when this host is a member: None (with a warning) when the
/// store cannot be reached, so local networks are still listed.
fn overlays(ctx: &Ctx) -> Option<Vec<OverlayNetwork>> {
    ctx.cfg.cluster.as_ref()?;
    match crate::cluster::backend::connect(ctx).and_then(|s| s.networks()) {
        Ok((nets, _)) => Some(nets.into_iter().map(|v| v.value).collect()),
        Err(e) => {
            eprintln!("netctl: warning: overlay networks not listed: {e:#}");
            None
        }
    }
}

/// Every network, the pre-defined ones first (as Docker lists them by name). Overlays come
/// from the cluster store; this host's copies of them only when the store is out of reach.
fn listed<'a>(
    state: &'a State,
    group: u32,
    overlays: Option<Vec<OverlayNetwork>>,
) -> Vec<Listed<'a>> {
    let have_overlays = overlays.is_some();
    let mut out: Vec<Listed> = networks::PREDEFINED
        .iter()
        .filter(|(name, _)| !state.networks.contains_key(*name))
        .map(|(name, driver)| Listed::Predefined {
            name,
            driver,
            id: networks::predefined_id(group, name),
        })
        .collect();
    out.extend(
        state
            .networks
            .values()
            .filter(|n| !(have_overlays && n.vni.is_some()))
            .map(Listed::Stored),
    );
    out.extend(overlays.into_iter().flatten().map(Listed::Overlay));
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

/// A network as users name it: name, full ID or unique ID prefix, pre-defined ones included.
fn resolve<'a>(all: &'a [Listed<'a>], r: &str) -> Result<&'a Listed<'a>> {
    if let Some(n) = all.iter().find(|n| n.name() == r) {
        return Ok(n);
    }
    let hits: Vec<&Listed> = all
        .iter()
        .filter(|n| !r.is_empty() && n.id().starts_with(r))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => bail!("no such network: {r} (`netctl network ls` lists them)"),
        many => bail!(
            "{} networks have an ID starting with {r}: give more of the ID, or the name",
            many.len()
        ),
    }
}

/// `--subnet`/`--gateway` given for either family: (IPv4, IPv6), at most one of each.
fn by_family(values: Vec<String>, flag: &str) -> Result<(Option<String>, Option<String>)> {
    let (v6, v4): (Vec<String>, Vec<String>) = values.into_iter().partition(|v| v.contains(':'));
    if v4.len() > 1 || v6.len() > 1 {
        bail!(
            "{flag} given twice for one address family: give one IPv4 and at most one IPv6 {flag}"
        );
    }
    Ok((v4.into_iter().next(), v6.into_iter().next()))
}

pub fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Create {
            driver,
            subnet,
            gateway,
            ipv6,
            ipv4,
            ip_range,
            internal,
            opt,
            name,
        } => {
            let (subnet, subnet6) = by_family(subnet, "--subnet")?;
            let (gateway, gateway6) = by_family(gateway, "--gateway")?;
            let ctx = Ctx::open()?;
            let req = CreateRequest {
                name,
                driver,
                subnet,
                gateway,
                ip_range,
                internal,
                options: opt,
                ipv6,
                subnet6,
                gateway6,
                ipv6_only: ipv4 == Some(false),
            };
            if req.driver == "overlay" {
                // Nothing local yet: each host makes its part when a container joins.
                let store = crate::cluster::backend::connect(&ctx)?;
                let snapshot = ctx.store.snapshot()?;
                if snapshot.networks.contains_key(&req.name) {
                    bail!(
                        "network {} already exists on this host: pick another name",
                        req.name
                    );
                }
                let local = networks::taken_subnets(&ctx.nl, &snapshot)?;
                if crate::model::options::parse(&req.options)?.encrypted {
                    // Never an overlay that this host could only carry in the clear.
                    crate::kernel::wireguard::transport(&ctx.cfg.wireguard)?;
                    // Nor one that a member host would: a netctl before encrypted overlays
                    // ignores the option and would send its frames as plain VXLAN.
                    if let Some(h) = store.hosts()?.iter().find(|h| h.wireguard.is_none()) {
                        bail!(
                            "host {} publishes no WireGuard key (a netctl without encrypted overlays, or its daemon could not make a key): upgrade it before making an encrypted overlay",
                            h.addr
                        );
                    }
                }
                let underlay_mtu = ctx
                    .nl
                    .mtu_of_address(store.cfg.advertise)?
                    .unwrap_or(crate::model::overlay::DEFAULT_UNDERLAY_MTU);
                let local6 = networks::taken_subnets6(&ctx.nl, &snapshot)?;
                let net = crate::cluster::network::create_network(
                    &store,
                    &req,
                    &local,
                    &local6,
                    networks::overlay_ula(ctx.group),
                    underlay_mtu,
                )?;
                println!("{}", net.id);
                return Ok(0);
            }
            let mut tx = ctx.begin()?;
            if ctx.is_member() {
                // A member's local network must not overlap an overlay.
                networks::check_against_overlays(&ctx, &req)?;
            }
            let net = networks::create(&ctx.nl, tx.state(), &req, ctx.group)?;
            tx.commit()?;
            println!("{}", net.id);
        }
        Command::Ls { quiet, format } => {
            let ctx = Ctx::open_unchecked()?;
            let state = ctx.store.snapshot()?;
            let all = listed(&state, ctx.group, overlays(&ctx));
            match format.as_str() {
                "table" if !quiet => {
                    println!("{:<14}{:<20}{:<10}SCOPE", "NETWORK ID", "NAME", "DRIVER");
                    for n in &all {
                        println!(
                            "{:<14}{:<20}{:<10}{}",
                            short(n.id()),
                            n.name(),
                            n.driver(),
                            n.scope()
                        );
                    }
                }
                "table" => all.iter().for_each(|n| println!("{}", short(n.id()))),
                "json" => {
                    for n in &all {
                        let v = json!({"ID": short(n.id()), "Name": n.name(), "Driver": n.driver(),
                            "Scope": n.scope(), "Internal": n.internal().to_string(),
                            "IPv6": matches!(n, Listed::Stored(s) if s.ipv6.is_some()).to_string()});
                        println!("{v}");
                    }
                }
                other => bail!("unknown format {other:?}: use table or json"),
            }
        }
        Command::Inspect { names } => {
            let ctx = Ctx::open_unchecked()?;
            let state = ctx.store.snapshot()?;
            let all = listed(&state, ctx.group, overlays(&ctx));
            // Docker prints what it found, then fails for the rest.
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for r in &names {
                match resolve(&all, r) {
                    Ok(Listed::Stored(n)) => out.push(inspect(&state, n)),
                    Ok(Listed::Predefined { name, .. }) if *name == networks::DEFAULT_NETWORK => {
                        // Not used yet: shown as it will be made, without making it.
                        let planned = networks::plan_default(&ctx.nl, &state, ctx.group, &ctx.cfg)?;
                        out.push(inspect(&state, &planned));
                    }
                    Ok(Listed::Predefined { name, driver, id }) => {
                        out.push(inspect_predefined(&state, name, driver, id))
                    }
                    Ok(Listed::Overlay(n)) => {
                        let peers = crate::cluster::backend::connect(&ctx)?.endpoints(&n.name)?;
                        out.push(inspect_overlay(&state, n, &peers));
                    }
                    Err(e) => missing.push(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
            if let Some(e) = missing.into_iter().next_back() {
                return Err(e);
            }
        }
        Command::Rm { names } => {
            let ctx = Ctx::open()?;
            let mut tx = ctx.begin()?;
            // Unknown names are bad input: nothing is removed. Networks that cannot go
            // (pre-defined, in use) are reported, and the others removed, as Docker does.
            let overlay_list = overlays(&ctx);
            let targets: Vec<(String, bool)> = {
                let all = listed(tx.locked.state(), ctx.group, overlay_list);
                names
                    .iter()
                    .map(|r| {
                        resolve(&all, r)
                            .map(|n| (n.name().to_string(), matches!(n, Listed::Overlay(_))))
                    })
                    .collect::<Result<_>>()?
            };
            let mut refused = Vec::new();
            let mut removed = Vec::new();
            for (name, overlay) in &targets {
                if let Some(why) = networks::why_not_removable(tx.locked.state(), name) {
                    refused.push(why);
                    continue;
                }
                if *overlay {
                    // Refused by the store while any host has endpoints on it.
                    if let Err(e) = crate::cluster::backend::connect(&ctx)?.remove_network(name) {
                        refused.push(format!("{e:#}"));
                        continue;
                    }
                }
                if tx.state().networks.contains_key(name) {
                    networks::remove(&ctx.nl, tx.state(), name)?;
                }
                removed.push(name.clone());
            }
            tx.commit()?;
            for (r, (name, _)) in names.iter().zip(&targets) {
                if removed.contains(name) {
                    println!("{r}");
                }
            }
            match refused.len() {
                0 => {}
                1 => bail!("{}", refused[0]),
                _ => {
                    for why in &refused[..refused.len() - 1] {
                        eprintln!("netctl: {why}");
                    }
                    bail!("{}", refused[refused.len() - 1]);
                }
            }
        }
        Command::Connect {
            ip,
            ip6,
            alias,
            network,
            container,
        } => {
            for a in &alias {
                crate::model::runopts::check_alias(a, "--alias")?;
            }
            let ctx = Ctx::open()?;
            // An overlay's address is claimed before the lock (see `endpoints::Prepared`),
            // for the container as it is now.
            let before = ctx.store.snapshot()?.find_container(&container)?.clone();
            let prepared = crate::cluster::endpoints::prepare(
                &ctx,
                &network,
                ip.as_deref(),
                &before.id,
                &before.name,
            )?;
            let mut tx = ctx.begin()?;
            if network == networks::DEFAULT_NETWORK {
                networks::ensure_default(&ctx.nl, tx.state(), ctx.group, &ctx.cfg)?;
            }
            let c = tx.state().find_container(&container)?.clone();
            if c.id != before.id {
                bail!("container {container} was replaced meanwhile: try again");
            }
            let claimed = prepared.map(|p| p.join(&ctx, &mut tx)).transpose()?;
            containers::connect(
                &ctx.nl,
                tx.state(),
                &ctx.cfg.state_dir,
                &network,
                &container,
                containers::Addrs {
                    v4: containers::Addr::new(ip.as_deref(), claimed.as_ref()),
                    ip6: ip6.as_deref(),
                },
                ctx.group,
            )?;
            let network = tx.state().find_network(&network)?.name.clone();
            if !alias.is_empty() && !has_embedded_dns(&network) {
                bail!("network-scoped alias is supported only for containers in user defined networks");
            }
            containers::set_aliases(tx.state(), &c.name, &network, &alias);
            tx.commit()?;
        }
        Command::Disconnect { network, container } => {
            let ctx = Ctx::open()?;
            let mut tx = ctx.begin()?;
            containers::disconnect(
                &ctx.nl,
                tx.state(),
                &ctx.cfg.state_dir,
                &network,
                &container,
            )?;
            tx.commit()?;
        }
    }
    Ok(0)
}

/// An overlay network: the cluster's view, this host's containers, and the peers (hosts with
/// endpoints on it), as Docker shows them.
fn inspect_overlay(
    state: &State,
    n: &OverlayNetwork,
    endpoints: &[crate::cluster::store::Listed],
) -> Value {
    let local = n.local();
    let mut v = inspect(state, &local);
    v["Scope"] = json!("global");
    v["Driver"] = json!("overlay");
    v["Id"] = json!(n.id);
    let mut options = serde_json::Map::new();
    for (k, val) in &n.options {
        options.insert(k.clone(), json!(val));
    }
    options.insert(
        "com.docker.network.driver.overlay.vxlanid_list".into(),
        json!(n.vni.to_string()),
    );
    v["Options"] = Value::Object(options);
    let mut hosts: Vec<String> = endpoints
        .iter()
        .map(|(_, _, e)| e.value.host.to_string())
        .collect();
    hosts.sort();
    hosts.dedup();
    v["Peers"] = json!(hosts
        .iter()
        .map(|h| json!({"Name": h, "IP": h}))
        .collect::<Vec<_>>());
    v
}

/// `host` and `none`: no addresses; their containers are listed.
fn inspect_predefined(state: &State, name: &str, driver: &str, id: &str) -> Value {
    let mut containers = serde_json::Map::new();
    for c in state.containers.values() {
        let on = if name == networks::HOST {
            c.host_network
        } else {
            !c.host_network && c.endpoints.is_empty()
        };
        if on {
            containers.insert(
                c.id.clone(),
                json!({"Name": c.name, "EndpointID": "", "MacAddress": "",
                    "IPv4Address": "", "IPv6Address": ""}),
            );
        }
    }
    json!({
        "Name": name,
        "Id": id,
        "Created": crate::model::text::rfc3339(0),
        "Scope": "local",
        "Driver": driver,
        "EnableIPv4": name == networks::DEFAULT_NETWORK,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": {},
        "Labels": {},
    })
}

/// Docker's `network inspect` object.
fn inspect(state: &State, n: &Network) -> Value {
    let mut configs = Vec::new();
    if let Some(v4) = &n.ipv4 {
        let mut config =
            json!({"Subnet": v4.subnet.to_string(), "Gateway": v4.gateway.to_string()});
        if let Some(r) = v4.ip_range {
            config["IPRange"] = json!(r.to_string());
        }
        configs.push(config);
    }
    if let Some(v6) = &n.ipv6 {
        configs.push(json!({"Subnet": v6.subnet.to_string(), "Gateway": v6.gateway.to_string()}));
    }
    let mut containers = serde_json::Map::new();
    for c in state.attached(&n.name) {
        for ep in c.endpoints.iter().filter(|e| e.network == n.name) {
            containers.insert(
                c.id.clone(),
                json!({
                    "Name": c.name,
                    "EndpointID": ep.endpoint_id,
                    "MacAddress": ep.mac,
                    "IPv4Address": n.ipv4.as_ref().zip(ep.ip)
                        .map(|(v4, ip)| format!("{ip}/{}", v4.subnet.prefix()))
                        .unwrap_or_default(),
                    "IPv6Address": n.ipv6.as_ref().zip(ep.ip6)
                        .map(|(v6, ip)| format!("{ip}/{}", v6.subnet.prefix()))
                        .unwrap_or_default(),
                }),
            );
        }
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": crate::model::text::rfc3339(n.created),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv4": n.ipv4.is_some(),
        "EnableIPv6": n.ipv6.is_some(),
        "IPAM": {"Driver": "default", "Options": {}, "Config": configs},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": n.options,
        "Labels": {},
    })
}
