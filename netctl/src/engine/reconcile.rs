//! The one idempotent step every command ends with: make the kernel match the state.
//! Missing bridges, namespaces and veths are re-created, this instance's orphans removed,
//! and the eBPF programs attached where they belong. `netctl sync` runs it alone.

use std::collections::BTreeSet;

use anyhow::{anyhow, Result};

use crate::{
    base::config::Config,
    kernel::dataplane::{maps, spares, Dataplane},
    kernel::netlink::{Link, Netlink},
    kernel::netns,
    kernel::process,
    kernel::topology,
    kernel::wireguard,
    model::state::{Container, State},
};

/// The uplinks: NETCTL_UPLINKS if set, else every interface that is not netctl's own (nor an
/// ifb) —
/// published ports answer on all of them, as Docker's do. Netctl's own are loopback and the
/// links in an instance's interface group (bridges, container veths; any group with the high
/// bit set is some netctl instance's, see [`topology::instance_group`]).
pub fn uplinks(cfg: &Config, links: &[Link], state: &State) -> Result<Vec<(String, u32)>> {
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
    let own = topology::own_links(state);
    Ok(links
        .iter()
        .filter(|l| {
            l.name != "lo"
                && l.group & topology::GROUP_FLAG == 0
                && !own.contains(l.name.as_str())
                && !aggregated(l, links)
                // An ifb (the CNI bandwidth plugin's) only hands back what was redirected to
                // it; it carries none of the host's traffic.
                && l.kind != "ifb"
        })
        .map(|l| (l.name.clone(), l.index))
        .collect())
}

/// A port of a bridge or bond (another engine's container veth on its bridge, a NIC in br0 or
/// bond0): what it receives for the host arrives on the bridge or bond, which is the uplink.
/// netctl leaves such ports alone.
fn aggregated(l: &Link, links: &[Link]) -> bool {
    l.controller.is_some_and(|c| {
        links
            .iter()
            .any(|m| m.index == c && matches!(m.kind.as_str(), "bridge" | "bond" | "team"))
    })
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Whether IPv4 forwarding was on before netctl first ran in this namespace, recorded the
/// first time (`$NETCTL_STATE_DIR/forwarding-before`): a host that was a router before keeps
/// forwarding everything, as with Docker; on a host netctl made a router, the datapath drops
/// forwarded traffic that is no container's (Docker's FORWARD policy DROP).
fn forwarding_before(state_dir: &std::path::Path) -> Result<bool> {
    let record = state_dir.join("forwarding-before");
    match std::fs::read_to_string(&record) {
        Ok(v) => Ok(v.trim() == "1"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let on = forwarding()?;
            crate::base::atomic_file::write(&record, if on { b"1\n" } else { b"0\n" }, 0o600)?;
            Ok(on)
        }
        Err(e) => Err(anyhow!("reading {}: {e}", record.display())),
    }
}

fn forwarding() -> Result<bool> {
    std::fs::read_to_string(IP_FORWARD)
        .map(|v| v.trim() == "1")
        .map_err(|e| anyhow!("reading {IP_FORWARD}: {e}"))
}

fn set_forwarding(on: bool) -> Result<()> {
    if forwarding()? != on {
        std::fs::write(IP_FORWARD, if on { "1" } else { "0" })
            .map_err(|e| anyhow!("setting {IP_FORWARD}: {e}"))?;
    }
    Ok(())
}

/// What a reconcile did and what it could not do. A broken object (a bridge name someone
/// else took, a namespace that cannot be re-created) is a problem reported for that object;
/// the rest of the state is still applied, so it never blocks commands about other objects.
#[derive(Debug, Default)]
pub struct Report {
    pub changes: Vec<String>,
    pub problems: Vec<String>,
}

/// Applies `state` to the kernel. `full` re-reads every map from the kernel instead of
/// trusting the record of the last apply (`netctl sync`). Errors are the datapath's (programs,
/// maps): then the kernel may be half-way and the caller restores the previous state.
pub fn apply(cfg: &Config, nl: &Netlink, state: &State, full: bool) -> Result<Report> {
    apply_after(cfg, nl, state, None, full, Vec::new())
}

/// [`apply`], attaching programs only once the attachments `early` started are done.
///
/// Containers route through the host (IPv4 forwarding on), and fail closed: forwarding is
/// switched on only once the programs that guard it are attached and their maps filled; when
/// the apply fails, a namespace that netctl made a router stops routing until an apply
/// succeeds (the caller's restore of the previous state, or `netctl sync`).
/// `before`: the state the kernel was last made to match, if the caller knows it (a change):
/// the published-port maps then take only the entries that differ.
pub fn apply_after(
    cfg: &Config,
    nl: &Netlink,
    state: &State,
    before: Option<&State>,
    full: bool,
    early: Vec<std::thread::JoinHandle<()>>,
) -> Result<Report> {
    let forward_open = forwarding_before(&cfg.state_dir)?;
    match apply_guarded(cfg, nl, state, before, full, early, forward_open) {
        Ok(r) => {
            if !state.networks.is_empty() {
                set_forwarding(true)?;
            }
            Ok(r)
        }
        Err(e) if !forward_open => match set_forwarding(false) {
            Ok(()) => Err(e),
            Err(off) => Err(e.context(format!("forwarding could not be turned off: {off:#}"))),
        },
        Err(e) => Err(e),
    }
}

fn apply_guarded(
    cfg: &Config,
    nl: &Netlink,
    state: &State,
    before: Option<&State>,
    full: bool,
    early: Vec<std::thread::JoinHandle<()>>,
    forward_open: bool,
) -> Result<Report> {
    let group = topology::instance_group(&cfg.state_dir);
    let mut r = Report::default();

    let mut links = topology::scan_links(nl, state, group)?;
    let names: BTreeSet<String> = links.iter().map(|l| l.name.clone()).collect();
    let mut recreated = BTreeSet::new();
    for net in state.networks.values() {
        if !names.contains(&net.bridge) {
            match topology::create_bridge(nl, net, group) {
                Ok(()) => {
                    recreated.insert(net.bridge.as_str());
                    r.changes.push(format!(
                        "re-created bridge {} of network {}",
                        net.bridge, net.name
                    ))
                }
                Err(e) => r.problems.push(format!("network {}: {e:#}", net.name)),
            }
        } else if net.ipv6.is_some() {
            match topology::bridge_routes_ipv6(&net.bridge) {
                Ok(true) => r.changes.push(format!(
                    "turned on IPv6 forwarding of bridge {} (network {})",
                    net.bridge, net.name
                )),
                Ok(false) => {}
                Err(e) => r.problems.push(format!("network {}: {e:#}", net.name)),
            }
        }
    }

    if let Some(mtu) = topology::vxlan_mtu(&state.networks) {
        let found = links.iter().find(|l| l.name == topology::VXLAN_DEV);
        let create = || {
            nl.add_vxlan_external(topology::VXLAN_DEV, topology::VXLAN_PORT, mtu, group)
                .map(drop)
        };
        let dev = (topology::VXLAN_DEV, "VXLAN");
        tunnel_device(nl, &mut r, found, dev, "overlay networks", mtu, create);
    }
    if let Some(mtu) = topology::wireguard_mtu(&state.networks) {
        match links.iter().find(|l| l.name == wireguard::DEV) {
            // Never someone else's link of that name: encrypted frames would go into it.
            Some(dev) if !wireguard::is_ours(dev, group) => r.problems.push(format!(
                "encrypted overlay networks: interface {} is not this instance's WireGuard device: remove or rename it",
                wireguard::DEV
            )),
            found => {
                let create = || wireguard::create(nl, &cfg.wireguard, mtu, group);
                let dev = (wireguard::DEV, "WireGuard");
                let networks = "encrypted overlay networks";
                tunnel_device(nl, &mut r, found, dev, networks, mtu, create);
            }
        }
    }

    for c in state.containers.values() {
        if let Err(e) = restore_container(cfg, nl, state, c, &names, group, &mut r.changes) {
            r.problems.push(format!("container {}: {e:#}", c.name));
        }
    }
    if let Err(e) = reattach(nl, state, &links, &recreated, &mut r.changes) {
        r.problems.push(format!("{e:#}"));
    }

    r.changes
        .extend(remove_orphans_among(cfg, nl, state, &links, group)?);
    crate::base::failpoint::step("reconcile: links and namespaces done");
    if !r.changes.is_empty() {
        links = topology::scan_links(nl, state, group)?; // indexes of what was re-created
    }

    crate::base::timing::mark("links");
    let dp = Dataplane::open(cfg)?;
    crate::base::timing::mark("open datapath");
    let uplinks: Uplinks = uplinks(cfg, &links, state)?
        .into_iter()
        .map(|(name, index)| {
            let xdp = links
                .iter()
                .find(|l| l.index == index)
                .is_some_and(|l| dp.wants_xdp(l));
            (name, index, xdp)
        })
        .collect();
    let by_name: std::collections::HashMap<&str, &crate::kernel::netlink::Link> =
        links.iter().map(|l| (l.name.as_str(), l)).collect();
    let veths: Vec<(String, u32)> = state
        .containers
        .values()
        .flat_map(|c| c.endpoints.iter())
        .filter_map(|e| by_name.get(e.host_veth.as_str()).copied())
        .map(|l| (l.name.clone(), l.index))
        .collect();
    let tunnels: Vec<(&'static str, String, u32)> = links
        .iter()
        .filter_map(|l| {
            match l.name.as_str() {
                topology::VXLAN_DEV => Some(netctl_common::programs::TUNNEL_INGRESS),
                wireguard::DEV if wireguard::is_ours(l, group) => {
                    Some(netctl_common::programs::WG_INGRESS)
                }
                _ => None,
            }
            .map(|p| (p, l.name.clone(), l.index))
        })
        .collect();
    let tunnel = &tunnels[..];
    // Attaching to a new interface waits for an RCU grace period (TCX, ~10 ms): the maps
    // are computed and written meanwhile, on this thread, for the uplinks as planned.
    let planned = uplinks.clone();
    let (attached, mapped) = std::thread::scope(|s| {
        let attaching = s.spawn(|| {
            let t = std::time::Instant::now();
            for h in early {
                let _ = h.join();
            }
            let attached = attach_programs(cfg, &dp, uplinks, &veths, tunnel);
            crate::base::timing::add("attach", t.elapsed());
            attached
        });
        let t = std::time::Instant::now();
        let sockets = dp.features.socket_programs().is_ok();
        let mapped = MapInputs::read(cfg, nl, state, sockets).and_then(|inputs| {
            // The host's addresses come from a netlink dump, which waits while an attachment
            // holds the kernel's rtnl lock: that wait is the attachment's.
            crate::base::timing::add("host addresses", t.elapsed());
            let t = std::time::Instant::now();
            let host = inputs.view(cfg, &links, &planned, forward_open, dp.features.modern());
            let ports = maps::ports(state, before.filter(|_| !full), dp.ports_applied(full));
            let changes = dp.apply(&maps::desired(state, &host, ports), full)?;
            let reserved = reserve_ports(cfg, state);
            crate::base::timing::add("maps", t.elapsed());
            Ok((inputs, changes, reserved))
        });
        let attached = attaching
            .join()
            .unwrap_or_else(|_| Err(anyhow!("attaching the programs failed (panic)")));
        (attached, mapped)
    });
    let (changes, uplinks) = attached?;
    r.changes.extend(changes);
    crate::base::failpoint::step("reconcile: programs attached");
    let (inputs, changes, reserved) = mapped?;
    r.changes.extend(changes);
    match reserved {
        Ok(change) => r.changes.extend(change),
        Err(e) => r.problems.push(format!("reserving ports: {e:#}")),
    }
    if uplinks != planned {
        // XDP fell back to TC: the uplinks' map entries say so.
        let host = inputs.view(cfg, &links, &uplinks, forward_open, dp.features.modern());
        let ports = maps::ports(state, None, dp.ports_applied(false));
        r.changes
            .extend(dp.apply(&maps::desired(state, &host, ports), false)?);
    }

    Ok(r)
}

/// The host never picks a published port or a NAT source port for its own connections.
fn reserve_ports(cfg: &Config, state: &State) -> Result<Option<String>> {
    let mut ours: crate::model::ports::PortSet =
        state.all_ports().map(|(_, p)| p.host_port).collect();
    if !state.networks.is_empty() {
        ours.extend(maps::NAT_PORTS.0..=maps::NAT_PORTS.1);
    }
    let reserved = crate::kernel::hostports::reserve(&cfg.state_dir.join("reserved-ports"), &ours)?;
    Ok(reserved.then(|| "updated net.ipv4.ip_local_reserved_ports".to_string()))
}

/// An overlay tunnel device `dev` (name, kind): made when missing, its MTU following the
/// networks' (the datapath checks tunnelled packets against it).
fn tunnel_device(
    nl: &Netlink,
    r: &mut Report,
    found: Option<&Link>,
    (name, kind): (&str, &str),
    networks: &str,
    mtu: u32,
    create: impl FnOnce() -> Result<()>,
) {
    match found {
        None => match create() {
            Ok(()) => r.changes.push(format!("created {kind} device {name}")),
            Err(e) => r.problems.push(format!("{networks}: {e:#}")),
        },
        Some(dev) if dev.mtu != mtu => match nl.set_mtu(dev.index, mtu) {
            Ok(()) => r.changes.push(format!("{kind} device {name}: MTU {mtu}")),
            Err(e) => r.problems.push(format!("{networks}: {e:#}")),
        },
        Some(_) => {}
    }
}

/// Uplinks as the attachments take them: name, ifindex, with XDP.
type Uplinks = Vec<(String, u32, bool)>;

/// Attaches the programs; with NETCTL_XDP=auto a NIC whose driver refuses native XDP runs TC
/// only. Returns the uplinks as attached.
fn attach_programs(
    cfg: &Config,
    dp: &Dataplane,
    mut uplinks: Uplinks,
    veths: &[(String, u32)],
    tunnel: &[(&'static str, String, u32)],
) -> Result<(Vec<String>, Uplinks)> {
    match dp.reconcile_attachments(&uplinks, veths, tunnel) {
        Ok(c) => Ok((c, uplinks)),
        Err(e) if cfg.xdp == crate::base::config::XdpMode::Auto => {
            uplinks.iter_mut().for_each(|u| u.2 = false);
            let mut c = dp.reconcile_attachments(&uplinks, veths, tunnel)?;
            c.push(format!("XDP not attached ({e:#}); the uplinks run TC only"));
            Ok((c, uplinks))
        }
        Err(e) => Err(e),
    }
}

/// What the maps take from the host besides its links.
struct MapInputs {
    addrs: Vec<(u32, std::net::Ipv4Addr)>,
    addrs6: Vec<(u32, std::net::Ipv6Addr)>,
    container_cookies: std::collections::BTreeMap<String, u64>,
    host_cookie: u64,
}

impl MapInputs {
    /// `sockets`: whether the socket programs run (else no namespace cookie is needed, and a
    /// kernel before 5.14 could not tell it).
    fn read(cfg: &Config, nl: &Netlink, state: &State, sockets: bool) -> Result<Self> {
        let addrs = nl
            .addresses()?
            .into_iter()
            .map(|(i, n)| (i, n.ip()))
            .collect();
        // IPv6 addresses only where a network has IPv6: every veth has a link-local one,
        // thousands of messages on a busy host for nothing.
        let addrs6 = match state.networks.values().any(|n| n.ipv6.is_some()) {
            true => nl
                .addresses6()?
                .into_iter()
                .map(|(i, n)| (i, n.ip()))
                .collect(),
            false => Vec::new(),
        };
        let (ids, paths): (Vec<String>, Vec<std::path::PathBuf>) = state
            .containers
            .values()
            .filter_map(|c| Some((c.id.clone(), netns::of(c, &cfg.state_dir).ok()??)))
            .unzip();
        if !sockets {
            return Ok(Self {
                addrs,
                addrs6,
                container_cookies: Default::default(),
                host_cookie: 0,
            });
        }
        let container_cookies = ids
            .into_iter()
            .zip(netns::cookies(&paths, &cfg.state_dir.join("netns-cookies")))
            .filter_map(|(id, c)| Some((id, c?)))
            .collect();
        Ok(Self {
            addrs,
            addrs6,
            container_cookies,
            host_cookie: netns::own_cookie()?,
        })
    }

    fn view<'a>(
        &'a self,
        cfg: &Config,
        links: &'a [Link],
        uplinks: &'a [(String, u32, bool)],
        forward_open: bool,
        nat64: bool,
    ) -> maps::HostView<'a> {
        maps::HostView {
            links,
            addrs: &self.addrs,
            addrs6: &self.addrs6,
            uplinks,
            fast_path: cfg.fast_path,
            host_cookie: self.host_cookie,
            container_cookies: &self.container_cookies,
            xdp_generic: cfg.xdp == crate::base::config::XdpMode::Generic,
            forward_open,
            ct_endpoint_entries: cfg.ct_endpoint_entries,
            group: crate::kernel::topology::instance_group(&cfg.state_dir),
            nat64,
        }
    }
}

/// Re-creates a container's namespace (after a reboot or a killed run) and its missing veths.
fn restore_container(
    cfg: &Config,
    nl: &Netlink,
    state: &State,
    c: &Container,
    names: &BTreeSet<String>,
    group: u32,
    changes: &mut Vec<String>,
) -> Result<()> {
    let ns = match netns::of(c, &cfg.state_dir) {
        Ok(Some(ns)) => ns,
        Ok(None) => return Ok(()), // --network host: nothing of its own
        Err(_) => return Ok(()),   // the engine's process is gone: its DEL, or a GC, removes it
    };
    let complete = c.endpoints.iter().all(|e| names.contains(&e.host_veth));
    if complete && c.engine_netns.is_some() {
        return Ok(()); // nothing to re-create, and an engine's namespace is never netctl's
    }
    let fresh = !netns::is_live(&ns);
    if fresh && c.engine_netns.is_some() {
        // The engine's container is gone (a reboot): its DEL, or a GC, removes it here.
        return Ok(());
    }
    if fresh {
        netns::remove(&ns)?;
        netns::create(&ns)?;
        changes.push(format!("re-created the namespace of container {}", c.name));
    }
    for ep in &c.endpoints {
        if fresh || !names.contains(&ep.host_veth) {
            // A veth of the lost namespace may still be here (its processes kept it).
            nl.del_link_by_name(&ep.host_veth)?;
            let net = state.network(&ep.network)?;
            let default_route = topology::is_gateway_endpoint(&state.networks, c, ep, false);
            topology::create_endpoint(nl, &ns, net, ep, default_route, group, None)?;
            changes.push(format!("re-created {} of container {}", ep.ifname, c.name));
        }
    }
    Ok(())
}

/// Puts container veths that are off their network's bridge back on it: a bridge deleted and
/// re-created leaves its ports behind, up but connected to nothing.
fn reattach(
    nl: &Netlink,
    state: &State,
    links: &[Link],
    recreated: &BTreeSet<&str>,
    changes: &mut Vec<String>,
) -> Result<()> {
    let index = |name: &str| links.iter().find(|l| l.name == name);
    for c in state.containers.values() {
        for ep in &c.endpoints {
            let (Some(veth), Some(net)) = (index(&ep.host_veth), state.networks.get(&ep.network))
            else {
                continue;
            };
            let bridge = index(&net.bridge).map(|b| b.index);
            if !recreated.contains(net.bridge.as_str())
                && bridge.is_some()
                && veth.controller == bridge
            {
                continue;
            }
            // Fresh indexes: the bridge (and a veth `restore_container` made) are new.
            let (Some(veth), Some(bridge)) = (nl.link(&ep.host_veth)?, nl.link(&net.bridge)?)
            else {
                continue;
            };
            if veth.controller == Some(bridge.index) {
                continue;
            }
            nl.set_controller(veth.index, bridge.index)?;
            nl.pin_bridge_port(veth.index, topology::parse_mac(&ep.mac))?;
            nl.set_up(veth.index)?;
            changes.push(format!(
                "put {} of container {} back on bridge {}",
                ep.ifname, c.name, net.bridge
            ));
        }
    }
    Ok(())
}

/// Removes what the state does not know: links in this instance's interface group (left by a
/// killed command, or by a command whose change was undone) and namespace handles. Every
/// command runs it right after taking the lock, so leftovers never block it.
pub fn remove_orphans(cfg: &Config, nl: &Netlink, state: &State) -> Result<Vec<String>> {
    let group = topology::instance_group(&cfg.state_dir);
    let links = topology::scan_links(nl, state, group)?;
    remove_orphans_among(cfg, nl, state, &links, group)
}

fn remove_orphans_among(
    cfg: &Config,
    nl: &Netlink,
    state: &State,
    links: &[Link],
    group: u32,
) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    let wanted = topology::own_links(state);
    // The daemon's spare veths are its own (a dead daemon's are orphans).
    let daemon_runs = || crate::kernel::pidfile::running(&cfg.state_dir).is_some();
    // Veths first: a bridge goes last, after its ports.
    let mut orphans: Vec<_> = links
        .iter()
        .filter(|l| l.group == group && !wanted.contains(l.name.as_str()))
        .filter(|l| !(spares::is_spare(&l.name) && daemon_runs()))
        .collect();
    orphans.sort_by_key(|l| l.kind == "bridge");
    for l in orphans {
        nl.del_link(l.index)?;
        changes.push(format!(
            "removed orphaned {} {}",
            if l.kind.is_empty() { "link" } else { &l.kind },
            l.name
        ));
    }
    let handles: BTreeSet<_> = state
        .containers
        .values()
        .filter_map(|c| c.netns_path(&cfg.state_dir))
        .collect();
    for entry in std::fs::read_dir(netns::handles_dir(&cfg.state_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if !handles.contains(&path) {
            if let Some(id) = path.file_name().and_then(|n| n.to_str()) {
                process::stop_shim(&cfg.state_dir, id);
            }
            process::stop_all(&path, std::time::Duration::ZERO);
            netns::remove(&path)?;
            changes.push(format!("removed orphaned namespace {}", path.display()));
        }
    }
    Ok(changes)
}
