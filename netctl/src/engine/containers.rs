//! Containers: a network namespace with endpoints on networks, published ports, and the
//! process started in it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::{
    base::config::Config,
    engine::networks::{self, check_name},
    kernel::dataplane::spares::{self, Spares},
    kernel::netlink::Netlink,
    kernel::netns,
    kernel::process,
    kernel::topology,
    model::ipam,
    model::ipam6,
    model::ports::{self, PortSpec},
    model::state::{self, Container, Endpoint, Network, State},
};

pub use crate::model::runopts::CreateRequest;

/// Plans an endpoint on `net` for container `c`: next free `ethN`, a static or allocated address.
/// How an endpoint gets its address.
#[derive(Clone, Copy, Debug)]
pub enum Addr<'a> {
    /// The lowest free address of the network.
    Auto,
    /// The user's `--ip`.
    Static(&'a str),
    /// Claimed in the cluster store already (overlay networks): (address, endpoint ID).
    Claimed(&'a (Ipv4Addr, String)),
}

/// The addresses an endpoint is asked for: IPv4's (above) and a static IPv6 one (`--ip6`).
#[derive(Clone, Copy, Debug)]
pub struct Addrs<'a> {
    pub v4: Addr<'a>,
    pub ip6: Option<&'a str>,
}

impl<'a> Addr<'a> {
    pub fn new(ip: Option<&'a str>, claimed: Option<&'a (Ipv4Addr, String)>) -> Self {
        match (claimed, ip) {
            (Some(c), _) => Addr::Claimed(c),
            (None, Some(ip)) => Addr::Static(ip),
            (None, None) => Addr::Auto,
        }
    }
}

fn plan_endpoint(
    state: &State,
    c_endpoints: &[Endpoint],
    net: &Network,
    addr: Addr,
    ip6: Option<&str>,
) -> Result<Endpoint> {
    let used = state.used_ips(&net.name);
    if let Addr::Claimed(c) = addr {
        if ip6.is_some() {
            bail!("--ip6 on overlay network {}: its containers' IPv6 addresses follow their IPv4 ones, so give --ip instead", net.name);
        }
        let ip6 = crate::model::overlay::endpoint_ip6(net, c.0);
        return Ok(claimed_endpoint(c_endpoints, net, c, ip6));
    }
    let ip6 = plan_ip6(state, net, ip6)?;
    let ip = match addr {
        Addr::Static(ip) => Some(ip),
        _ => None,
    };
    let ip = match ip {
        Some(ip) => {
            let ip = ipam::parse_ip(ip, "--ip")?;
            if net.ipv4.as_ref().is_some_and(|v4| !v4.user_subnet)
                || net.name == networks::DEFAULT_NETWORK
            {
                bail!("user specified IP address is supported only when connecting to networks with user configured subnets");
            }
            ipam::check_static(net, ip, &used)?;
            Some(ip)
        }
        None => ipam::allocate(net, &used)?,
    };
    let mac = match (ip, ip6) {
        (Some(ip), _) => state::mac_for(ip),
        (None, Some(ip6)) => state::mac_for6(ip6),
        (None, None) => bail!("network {} has no addressing", net.name),
    };
    let ifname = next_ifname(c_endpoints);
    let endpoint_id = state::random_id();
    Ok(Endpoint {
        network: net.name.clone(),
        host_veth: topology::host_veth_name(&endpoint_id),
        endpoint_id,
        ifname,
        ip,
        ip6,
        mac,
        aliases: Vec::new(),
    })
}

/// An endpoint whose address was checked and claimed cluster-wide already (on an IPv6-only
/// overlay, its place: the endpoint has the IPv6 address alone).
fn claimed_endpoint(
    c_endpoints: &[Endpoint],
    net: &Network,
    (ip, endpoint_id): &(Ipv4Addr, String),
    ip6: Option<Ipv6Addr>,
) -> Endpoint {
    let (ip, mac) = match (&net.ipv4, ip6) {
        (None, Some(ip6)) => (None, state::mac_for6(ip6)),
        _ => (Some(*ip), state::mac_for(*ip)),
    };
    Endpoint {
        network: net.name.clone(),
        host_veth: topology::host_veth_name(endpoint_id),
        endpoint_id: endpoint_id.clone(),
        ifname: next_ifname(c_endpoints),
        ip,
        ip6,
        mac,
        aliases: Vec::new(),
    }
}

/// The endpoint's IPv6 address on a network with IPv6: `--ip6`, checked, or the lowest free.
fn plan_ip6(state: &State, net: &Network, ip6: Option<&str>) -> Result<Option<Ipv6Addr>> {
    let used = || state.used_ips6(&net.name);
    match ip6 {
        Some(ip) => {
            let ip = ipam6::parse_ip(ip, "--ip6")?;
            if net.name == networks::DEFAULT_NETWORK {
                bail!("user specified IP address is supported on user defined networks only");
            }
            ipam6::check_static(net, ip, &used())?;
            Ok(Some(ip))
        }
        None if net.ipv6.is_some() => ipam6::allocate(net, &used()).map(Some),
        None => Ok(None),
    }
}

fn next_ifname(c_endpoints: &[Endpoint]) -> String {
    (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !c_endpoints.iter().any(|e| &e.ifname == n))
        .expect("a free name")
}

/// Validates a `run` request and creates the container's namespace and endpoint; the caller
/// saves the state. On error nothing is left behind.
pub fn create(
    nl: &Netlink,
    state: &mut State,
    cfg: &Config,
    req: &CreateRequest,
    group: u32,
) -> Result<Container> {
    let state_dir = cfg.state_dir.as_path();
    check_name(&req.name, "container")?;
    if req.command.is_empty() {
        bail!("no command given: netctl run --name NAME -- CMD [ARG...]");
    }
    if state.containers.contains_key(&req.name) {
        bail!(
            "container name {} is already in use: pick another name or `netctl rm` it",
            req.name
        );
    }
    // Parse everything before touching anything.
    let mut specs: Vec<PortSpec> = req
        .publish
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_>>()?;
    let names = crate::model::runopts::plan(state, req)?;
    if req.publish_all {
        specs.extend(names.publish_all(&specs));
    }
    let net_name = req.network.as_deref().unwrap_or(networks::DEFAULT_NETWORK);
    if let Some(ip) = &req.ip {
        ipam::parse_ip(ip, "--ip")?;
    }
    if let Some(ip) = &req.ip6 {
        ipam6::parse_ip(ip, "--ip6")?;
    }
    if net_name == networks::NONE {
        return create_isolated(state, state_dir, req, &specs, names);
    }
    if net_name == networks::HOST {
        return create_host_network(state, req, &specs, names);
    }
    let created_default =
        net_name == networks::DEFAULT_NETWORK && !state.networks.contains_key(net_name);
    if created_default {
        networks::ensure_default(nl, state, group, cfg)?;
    }
    let result = (|| {
        let net = state.find_network(net_name)?.clone();
        let addr = Addr::new(req.ip.as_deref(), req.claimed.as_ref());
        let ep = plan_endpoint(state, &[], &net, addr, req.ip6.as_deref())?;
        if ep.ip.is_none() {
            // Nothing translates IPv4 to IPv6: an IPv4 host address could never reach it.
            let v4 = |s: &&PortSpec| matches!(s.host_ip, IpAddr::V4(a) if !a.is_unspecified());
            if let Some(s) = specs.iter().find(v4) {
                bail!(
                    "cannot publish on {}: network {} is IPv6-only and the container has no IPv4 address; publish on an IPv6 host address (-p [::]:8080:80) or on every address (-p 8080:80)",
                    s.host_ip,
                    net.name
                );
            }
        }
        let taken: Vec<_> = state.all_ports().map(|(_, p)| *p).collect();
        check_host_ips(nl, &specs)?;
        let ports = ports::allocate(
            &specs,
            &taken,
            ports::ephemeral_range(),
            &crate::model::ports::HostSockets::read_for(&specs),
        )?;
        let id = req.id.clone().unwrap_or_else(state::random_id);
        let mut c = new_container(req, id.clone(), vec![ep.clone()], ports);
        names.apply(&mut c, net.gateway());
        let ns = netns::handle_path(state_dir, &id);
        crate::base::timing::mark("plan");
        // A spare namespace with its veth ready, when the daemon has one; else made here.
        let spare = spares(cfg)
            .filter(|_| ep.ifname == spares::PEER)
            .and_then(|s| s.take(nl, &ep.host_veth, &ns));
        if spare.is_none() {
            netns::create(&ns)?;
        }
        crate::base::failpoint::step("run: namespace created");
        let default_route = !net.internal;
        let made = topology::create_endpoint(nl, &ns, &net, &ep, default_route, group, spare);
        if let Err(e) = made {
            let _ = netns::remove(&ns);
            return Err(e);
        }
        crate::base::timing::mark("namespace+veth");
        Ok(c)
    })();
    match result {
        Ok(c) => {
            state.containers.insert(c.name.clone(), c.clone());
            Ok(c)
        }
        Err(e) => {
            if created_default {
                let _ = networks::remove(nl, state, networks::DEFAULT_NETWORK);
            }
            Err(e)
        }
    }
}

/// The daemon's spare namespaces, when it keeps some (whatever this command's NETCTL_SPARES
/// says: the daemon's setting is the saved one).
fn spares(cfg: &Config) -> Option<Spares> {
    if !spares::any(&cfg.state_dir) {
        return None;
    }
    crate::kernel::dataplane::Dataplane::open_existing(cfg)?.spares(&cfg.state_dir)
}

/// A container as `run` records it, before its process starts.
fn new_container(
    req: &CreateRequest,
    id: String,
    endpoints: Vec<Endpoint>,
    ports: Vec<ports::PortMapping>,
) -> Container {
    Container {
        id,
        name: req.name.clone(),
        command: req.command.clone(),
        detached: req.detach,
        created: state::now(),
        pid: None,
        pid_start: None,
        boot_id: None,
        host_network: false,
        engine_netns: None,
        engine_netns_start: None,
        engine: None,
        endpoints,
        ports,
        options: Default::default(),
    }
}

/// An engine's container joining a network (CNI ADD): the namespace is the engine's, the
/// interface name (and MAC, if it chose one) too.
#[derive(Clone, Debug)]
pub struct EngineAttach {
    pub id: String,
    /// The name the container gets on its first attachment (names resolve by it).
    pub name: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub network: String,
    pub mac: Option<String>,
    /// A requested IPv6 address (on a network with IPv6).
    pub ip6: Option<String>,
    pub aliases: Vec<String>,
    /// Published on the container's first attachment (the address ports lead to).
    pub publish: Vec<PortSpec>,
}

/// A container an engine made (its namespace, its processes), before its first endpoint.
pub fn engine_container(id: &str, name: &str, ns: PathBuf, engine: &str) -> Container {
    let mut c = new_container(
        &CreateRequest::default(),
        id.to_string(),
        Vec::new(),
        Vec::new(),
    );
    c.name = name.to_string();
    c.detached = true;
    c.engine_netns_start = netns::owner_start(&ns);
    c.engine_netns = Some(ns);
    c.engine = Some(engine.to_string());
    c
}

/// Records the engine's container on its first attachment and creates the interface in its
/// namespace; the caller saves the state. On error nothing is left behind.
pub fn attach_engine(
    nl: &Netlink,
    state: &mut State,
    a: &EngineAttach,
    addr: Addr,
    group: u32,
) -> Result<(Container, Endpoint)> {
    let net = state.find_network(&a.network)?.clone();
    let mut c = match state.containers.values().find(|c| c.id == a.id) {
        Some(c) if !netns::is_engines(c, &a.netns) => bail!(
            "container {} is attached in another namespace ({})",
            a.id,
            c.netns_path(Path::new("")).unwrap_or_default().display()
        ),
        Some(c) => c.clone(),
        None => {
            check_name(&a.name, "container")?;
            if state.containers.contains_key(&a.name) {
                bail!("container name {} is already in use", a.name);
            }
            engine_container(&a.id, &a.name, a.netns.clone(), "cni")
        }
    };
    if c.endpoints.iter().any(|e| e.network == net.name) {
        bail!(
            "container {} is already attached to network {}",
            a.id,
            net.name
        );
    }
    let mut ep = plan_endpoint(state, &c.endpoints, &net, addr, a.ip6.as_deref())?;
    ep.ifname = a.ifname.clone();
    if let Some(mac) = &a.mac {
        ep.mac = mac.clone();
    }
    ep.aliases = a.aliases.clone();
    if c.endpoints.is_empty() {
        check_host_ips(nl, &a.publish)?;
        let taken: Vec<_> = state.all_ports().map(|(_, p)| *p).collect();
        c.ports = ports::allocate(
            &a.publish,
            &taken,
            ports::ephemeral_range(),
            &crate::model::ports::HostSockets::read_for(&a.publish),
        )?;
    }
    c.endpoints.push(ep.clone());
    let default_route = topology::is_gateway_endpoint(&state.networks, &c, &ep, false);
    topology::create_endpoint(nl, &a.netns, &net, &ep, default_route, group, None)?;
    state.containers.insert(c.name.clone(), c.clone());
    Ok((c, ep))
}

/// `-p ADDR:…` needs ADDR to be one of the host's addresses (or loopback).
fn check_host_ips(nl: &Netlink, specs: &[PortSpec]) -> Result<()> {
    let wanted: Vec<IpAddr> = specs
        .iter()
        .map(|s| s.host_ip)
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .collect();
    let mut have: Vec<IpAddr> = Vec::new();
    if wanted.iter().any(IpAddr::is_ipv4) {
        have.extend(nl.addresses()?.into_iter().map(|(_, n)| IpAddr::V4(n.ip())));
    }
    if wanted.iter().any(IpAddr::is_ipv6) {
        have.extend(
            nl.addresses6()?
                .into_iter()
                .map(|(_, n)| IpAddr::V6(n.ip())),
        );
    }
    if let Some(ip) = wanted.iter().find(|ip| !have.contains(ip)) {
        let (v, lo) = if ip.is_ipv4() {
            (4, "127.0.0.1")
        } else {
            (6, "[::1]")
        };
        let at = crate::model::ports::host_port(*ip, 0);
        let at = at.trim_end_matches(":0");
        bail!("listen tcp{v} {at}: bind: cannot assign requested address (-p {at}:…: the host has no such address; use one of its own, {lo} or none)");
    }
    Ok(())
}

/// `--network host`: the process runs in the host's own namespace; nothing is created.
fn create_host_network(
    state: &mut State,
    req: &CreateRequest,
    specs: &[PortSpec],
    names: crate::model::runopts::Planned,
) -> Result<Container> {
    if req.ip6.is_some() {
        bail!(
            "--ip6 needs a network made with --ipv6; the host network has the host's own addresses"
        );
    }
    if req.ip.is_some() {
        bail!("--ip needs a network with user configured subnets; the host network has the host's own addresses");
    }
    if !specs.is_empty() {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
    }
    let mut c = new_container(req, state::random_id(), Vec::new(), Vec::new());
    c.host_network = true;
    names.apply(&mut c, None);
    state.containers.insert(c.name.clone(), c.clone());
    Ok(c)
}

/// `--network none`: a namespace with only `lo`, as Docker's none network.
fn create_isolated(
    state: &mut State,
    state_dir: &Path,
    req: &CreateRequest,
    specs: &[PortSpec],
    names: crate::model::runopts::Planned,
) -> Result<Container> {
    if !specs.is_empty() || req.ip.is_some() || req.ip6.is_some() {
        bail!("--network none has no interface to publish ports or set --ip on: drop -p/--ip or pick a network");
    }
    let id = state::random_id();
    let ns = netns::handle_path(state_dir, &id);
    netns::create(&ns)?;
    let up = netns::run_in(&ns, || {
        let nl = Netlink::new()?;
        let lo = nl.link("lo")?.context("no lo in the container namespace")?;
        nl.set_up(lo.index)
    });
    if let Err(e) = up {
        let _ = netns::remove(&ns);
        return Err(e);
    }
    let mut c = new_container(req, id, Vec::new(), Vec::new());
    names.apply(&mut c, None);
    state.containers.insert(c.name.clone(), c.clone());
    Ok(c)
}

/// Removes a container's kernel objects, its files and its state entry (processes already
/// stopped).
pub fn remove(nl: &Netlink, state: &mut State, state_dir: &Path, name: &str) -> Result<()> {
    let c = state.containers.remove(name).expect("checked");
    let _ = std::fs::remove_dir_all(dir(state_dir, &c.id));
    // An engine's namespace stays: the engine removes it.
    let own_ns = c.netns_path(state_dir).filter(|_| c.engine_netns.is_none());
    topology::remove_container(nl, own_ns.as_deref(), &c)
}

/// Removes container `name` if it is still the one with `id` (another command may have
/// removed it, or made a new one with that name, meanwhile). True when it did.
pub fn remove_if_same(
    nl: &Netlink,
    state: &mut State,
    state_dir: &Path,
    name: &str,
    id: &str,
) -> Result<bool> {
    if state.containers.get(name).is_none_or(|c| c.id != id) {
        return Ok(false);
    }
    remove(nl, state, state_dir, name)?;
    Ok(true)
}

pub use crate::model::paths::{container_dir as dir, exit_path, log_path};

/// What `ps` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    /// Exit code and when (seconds since the epoch, when known).
    Exited(i32, Option<u64>),
    Created,
}

impl Status {
    pub fn of(state_dir: &Path, c: &Container) -> Status {
        Self::of_with(state_dir, c, true)
    }

    /// [`Status::of`], told whether the container has a directory of its own (where an exit
    /// status would be): a listing reads the directory once instead of trying one missing
    /// file per container.
    pub fn of_with(state_dir: &Path, c: &Container, has_dir: bool) -> Status {
        // An engine's container runs as long as its namespace does.
        if let Some(ns) = &c.engine_netns {
            return match netns::is_engines(c, ns) && netns::is_live(ns) {
                true => Status::Running,
                false => Status::Exited(255, None),
            };
        }
        if process::is_running(c.pid, c.pid_start, c.boot_id.as_deref()) {
            return Status::Running;
        }
        if let Some((code, at)) = has_dir
            .then(|| process::recorded_exit(&exit_path(state_dir, &c.id)))
            .flatten()
        {
            return Status::Exited(code, Some(at));
        }
        if c.pid.is_some() {
            // Gone without a recorded status (a reboot, a killed shim): Docker's 255.
            return Status::Exited(255, None);
        }
        Status::Created
    }

    /// Docker's `State`: running, exited, created.
    pub fn word(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Exited(..) => "exited",
            Status::Created => "created",
        }
    }
}

/// `network connect`: a further interface (eth1, …) on a container.
pub fn connect(
    nl: &Netlink,
    state: &mut State,
    state_dir: &Path,
    network: &str,
    container: &str,
    addrs: Addrs,
    group: u32,
) -> Result<Endpoint> {
    let net = state.find_network(network)?.clone();
    let c = state.find_container(container)?.clone();
    let network = net.name.as_str();
    if c.endpoints.iter().any(|e| e.network == network) {
        bail!("container {container} is already connected to network {network}");
    }
    let ep = plan_endpoint(state, &c.endpoints, &net, addrs.v4, addrs.ip6)?;
    let mut after = c.clone();
    after.endpoints.push(ep.clone());
    let ns = netns::of(&c, state_dir)?
        .context("a container on the host network has no interfaces of its own")?;
    let default_route = topology::is_gateway_endpoint(&state.networks, &after, &ep, false);
    topology::create_endpoint(nl, &ns, &net, &ep, default_route, group, None)?;
    state.containers.insert(c.name.clone(), after);
    Ok(ep)
}

/// `network connect --alias`: more names of the container on that network (its endpoint
/// there, just made).
pub fn set_aliases(state: &mut State, container: &str, network: &str, aliases: &[String]) {
    if let Some(ep) = state
        .containers
        .get_mut(container)
        .and_then(|c| c.endpoints.iter_mut().find(|e| e.network == network))
    {
        ep.aliases = aliases.to_vec();
    }
}

/// `network disconnect`: removes the container's interface on that network.
pub fn disconnect(
    nl: &Netlink,
    state: &mut State,
    state_dir: &Path,
    network: &str,
    container: &str,
) -> Result<()> {
    let network = state.find_network(network)?.name.clone();
    let network = network.as_str();
    let c = state.find_container(container)?.clone();
    let Some(pos) = c.endpoints.iter().position(|e| e.network == network) else {
        bail!("container {container} is not connected to network {network}");
    };
    nl.del_link_by_name(&c.endpoints[pos].host_veth)?;
    let mut after = c.clone();
    after.endpoints.remove(pos);
    state.containers.insert(c.name.clone(), after.clone());
    // If the default route went with it, the next endpoint with a way out carries it.
    if let Some(ep) = after
        .endpoints
        .iter()
        .find(|e| topology::is_gateway_endpoint(&state.networks, &after, e, false))
    {
        if let (Some(v4), Ok(Some(ns))) =
            (&state.networks[&ep.network].ipv4, netns::of(&c, state_dir))
        {
            topology::ensure_default_route(&ns, v4.gateway)
                .context("restoring the default route")?;
        }
    }
    Ok(())
}

/// The address published ports lead to: the first endpoint's.
pub fn primary_ip(c: &Container) -> Option<Ipv4Addr> {
    c.endpoints.first().and_then(|e| e.ip)
}
