//! ADD, DEL, CHECK, GC and STATUS on netctl's state, in the same transactions as the CLI's.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_json::Value;

use super::spec::{Attached, Code, Env, Error, NetConf, Result};
use crate::{
    cluster,
    engine::containers::{self, Addr, EngineAttach},
    engine::ctx::{Ctx, Tx},
    engine::networks,
    kernel::netlink::Netlink,
    kernel::netns,
    kernel::topology,
    model::networks::has_embedded_dns,
    model::ports::PortSpec,
    model::state::{Container, Endpoint, State},
};

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::new(Code::InvalidConfig, e.to_string())
}

/// Everything ADD takes from the configuration, checked before anything is touched.
pub struct Request {
    publish: Vec<PortSpec>,
    ip: Option<String>,
    ip6: Option<String>,
    mac: Option<String>,
    aliases: Vec<String>,
}

impl Request {
    /// `args`: `CNI_ARGS` (Podman's `IP=` and `MAC=`).
    pub fn of(conf: &NetConf, args: &BTreeMap<String, String>) -> Result<Request> {
        let publish = conf
            .runtime_config
            .port_mappings
            .iter()
            .map(|p| p.as_spec().parse::<PortSpec>())
            .collect::<anyhow::Result<_>>()
            .map_err(|e| invalid(format!("runtimeConfig.portMappings: {e:#}")))?;
        // The `mac` capability, else Podman's `MAC=` in CNI_ARGS.
        let mac = match conf.runtime_config.mac.as_ref().or(args.get("MAC")) {
            Some(m) => Some(check_mac(m)?),
            None => None,
        };
        let aliases = conf
            .runtime_config
            .aliases
            .get(conf.network())
            .or_else(|| conf.runtime_config.aliases.get(&conf.name))
            .cloned()
            .unwrap_or_default();
        for a in &aliases {
            crate::model::runopts::check_alias(a, "alias").map_err(invalid)?;
        }
        let (ip, ip6) = conf.requested_ips(args)?;
        conf.addressing()?;
        Ok(Request {
            publish,
            ip: ip.map(|ip| ip.to_string()),
            ip6: ip6.map(|ip| ip.to_string()),
            mac,
            aliases,
        })
    }
}

/// A unicast MAC in the usual notation, lower case.
fn check_mac(m: &str) -> Result<String> {
    if crate::kernel::topology::is_unicast_mac(m) {
        return Ok(m.to_ascii_lowercase());
    }
    Err(invalid(format!(
        "runtimeConfig.mac: {m:?} is not a unicast MAC address (like 02:42:0a:00:00:02)"
    )))
}

pub fn add(env: &Env, conf: &NetConf) -> Result<Value> {
    let req = Request::of(conf, &env.args)?;
    let netns = env.netns.clone().expect("ADD has CNI_NETNS");
    if !netns::is_live(&netns) {
        return Err(Error::new(
            Code::InvalidEnvironment,
            format!("CNI_NETNS {} is not a network namespace", netns.display()),
        ));
    }
    let ctx = Ctx::open()?;
    // An overlay's address is claimed before the lock (see `endpoints::Prepared`), under
    // the name the container gets as the state is now.
    let network = conf.network().to_string();
    let name = pick_name(&ctx.store.snapshot()?, env);
    let prepared = cluster::endpoints::prepare(&ctx, &network, req.ip.as_deref(), &env.id, &name)?;
    let mut tx = ctx.begin()?;
    // The runtime asking again for an attachment that exists: the same result. One in
    // another namespace is stale (a runtime that lost track of it, after a crash or a
    // reboot, re-adds the container without a DEL): it goes, and the ADD starts afresh.
    if let Some((c, ep)) = attachment(tx.state(), &env.id, &env.ifname) {
        if !netns::is_engines(&c, &netns) {
            detach(&ctx, tx.state(), &c, &ep)?;
        } else if ep.network == conf.network() {
            return Ok(result(tx.state(), &c, &ep, conf));
        }
    }
    if pick_name(tx.state(), env) != name {
        return Err(anyhow::anyhow!("container name {name} was taken meanwhile: try again").into());
    }
    let claimed = prepared.map(|p| p.join(&ctx, &mut tx)).transpose()?;
    if claimed.is_none() && tx.state().find_network(&network).is_err() {
        create_network(&ctx, &mut tx, conf)?;
    }
    let attach = EngineAttach {
        id: env.id.clone(),
        name,
        netns,
        ifname: env.ifname.clone(),
        network: tx.state().find_network(&network)?.name.clone(),
        mac: req.mac,
        ip6: req.ip6,
        aliases: req.aliases,
        publish: req.publish,
    };
    let addr = Addr::new(req.ip.as_deref(), claimed.as_ref());
    let (c, ep) = containers::attach_engine(&ctx.nl, tx.state(), &attach, addr, ctx.group)?;
    tx.attach_early(&ep.host_veth);
    // The runtime waits for this ADD; the resolver takes the new name a moment later.
    tx.dont_wait_for_daemon();
    tx.commit()?;
    Ok(result(tx.locked.state(), &c, &ep, conf))
}

/// The network the configuration names, made as `netctl network create` would.
fn create_network(ctx: &Ctx, tx: &mut Tx, conf: &NetConf) -> Result<()> {
    let name = conf.network();
    if name == networks::DEFAULT_NETWORK {
        networks::ensure_default(&ctx.nl, tx.state(), ctx.group, &ctx.cfg)?;
        return Ok(());
    }
    if networks::is_predefined(name) {
        return Err(invalid(format!(
            "network {name} has no interfaces to give: name a bridge or overlay network"
        )));
    }
    networks::check_name(name, "network").map_err(invalid)?;
    let addressing = conf.addressing()?;
    let req = networks::CreateRequest {
        name: name.to_string(),
        driver: "bridge".into(),
        subnet: addressing.v4.0,
        gateway: addressing.v4.1,
        ipv6: addressing.v6.is_some(),
        subnet6: addressing.v6.clone().and_then(|v| v.0),
        gateway6: addressing.v6.and_then(|v| v.1),
        ipv6_only: addressing.v6_only,
        ip_range: None,
        internal: conf.internal,
        options: conf.options(),
    };
    if ctx.is_member() {
        networks::check_against_overlays(ctx, &req)?;
    }
    networks::create(&ctx.nl, tx.state(), &req, ctx.group).map_err(invalid)?;
    Ok(())
}

/// The container's name: the one the runtime gives (Podman's `K8S_POD_NAME`) when it is
/// free, else its ID.
fn pick_name(state: &State, env: &Env) -> String {
    if let Some(c) = state.containers.values().find(|c| c.id == env.id) {
        return c.name.clone();
    }
    env.args
        .get("K8S_POD_NAME")
        .filter(|n| networks::check_name(n, "container").is_ok())
        .filter(|n| !state.containers.contains_key(n.as_str()))
        .cloned()
        .unwrap_or_else(|| env.id.clone())
}

fn is_cni(c: &Container) -> bool {
    c.engine.as_deref() == Some("cni")
}

/// The CNI plugin's attachment `ifname` of container `id`: only containers a CNI runtime
/// made (never a `netctl run` container or a Docker driver endpoint of the same ID).
fn attachment(state: &State, id: &str, ifname: &str) -> Option<(Container, Endpoint)> {
    let c = state
        .containers
        .values()
        .find(|c| c.id == id && is_cni(c))?;
    let ep = c.endpoints.iter().find(|e| e.ifname == ifname)?;
    Some((c.clone(), ep.clone()))
}

fn result(state: &State, c: &Container, ep: &Endpoint, conf: &NetConf) -> Value {
    let net = &state.networks[&ep.network];
    let netns = c.engine_netns.clone().unwrap_or_default();
    Attached {
        host_veth: &ep.host_veth,
        ifname: &ep.ifname,
        mac: &ep.mac,
        netns: &netns.to_string_lossy(),
        ip: net
            .ipv4
            .as_ref()
            .zip(ep.ip)
            .map(|(v4, ip)| (ip, v4.subnet.prefix(), v4.gateway)),
        ip6: net
            .ipv6
            .as_ref()
            .zip(ep.ip6)
            .map(|(v6, ip)| (ip, v6.subnet.prefix(), v6.gateway)),
        default_route: topology::is_gateway_endpoint(&state.networks, c, ep, false),
        default_route6: topology::is_gateway_endpoint(&state.networks, c, ep, true),
        dns: net.gateway().filter(|_| has_embedded_dns(&net.name)),
    }
    .to_json(&conf.cni_version)
}

/// DEL: idempotent — an attachment that is not there (a second DEL, a DEL after a reboot)
/// is success.
pub fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let ctx = Ctx::open()?;
    let mut tx = ctx.begin()?;
    let Some((c, ep)) = attachment(tx.state(), &env.id, &env.ifname) else {
        return Ok(());
    };
    if ep.network != conf.network() {
        return Ok(()); // another configuration's attachment
    }
    detach(&ctx, tx.state(), &c, &ep)?;
    tx.commit()?;
    Ok(())
}

/// Removes one attachment; the container goes with its last one. The namespace, and what
/// runs in it, stay the runtime's.
fn detach(ctx: &Ctx, state: &mut State, c: &Container, ep: &Endpoint) -> anyhow::Result<()> {
    if c.endpoints.len() == 1 {
        return containers::remove(&ctx.nl, state, &ctx.cfg.state_dir, &c.name);
    }
    let live = c
        .engine_netns
        .as_deref()
        .is_some_and(|ns| netns::is_engines(c, ns) && netns::is_live(ns));
    if live {
        return containers::disconnect(&ctx.nl, state, &ctx.cfg.state_dir, &ep.network, &c.name);
    }
    ctx.nl.del_link_by_name(&ep.host_veth)?;
    let after = state.containers.get_mut(&c.name).expect("found above");
    after.endpoints.retain(|e| e.endpoint_id != ep.endpoint_id);
    Ok(())
}

/// CHECK: the attachment is in the state, its namespace alive, the interface there with its
/// address, and the host side on the network's bridge.
pub fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let ctx = Ctx::open()?;
    let state = ctx.store.snapshot()?;
    let gone = |what: String| Error::new(Code::UnknownContainer, what);
    let (c, ep) = attachment(&state, &env.id, &env.ifname)
        .filter(|(_, ep)| ep.network == conf.network())
        .ok_or_else(|| {
            gone(format!(
                "container {} has no interface {} on network {}",
                env.container_id,
                env.ifname,
                conf.network()
            ))
        })?;
    let ns = env.netns.clone().expect("CHECK has CNI_NETNS");
    if !netns::is_engines(&c, &ns) || !netns::is_live(&ns) {
        return Err(gone(format!(
            "container {} is not attached in {}",
            env.container_id,
            ns.display()
        )));
    }
    let (ifname, ip, ip6) = (ep.ifname.clone(), ep.ip, ep.ip6);
    let inside = netns::run_in(&ns, move || {
        let nl = Netlink::new()?;
        let link = nl
            .link(&ifname)?
            .with_context(|| format!("{ifname} is missing in the container"))?;
        if let Some(ip) = ip {
            let has = nl
                .addresses()?
                .iter()
                .any(|(i, n)| *i == link.index && n.ip() == ip);
            anyhow::ensure!(has, "{ifname} lost its address {ip}");
        }
        if let Some(ip6) = ip6 {
            let has = nl
                .addresses6()?
                .iter()
                .any(|(i, n)| *i == link.index && n.ip() == ip6);
            anyhow::ensure!(has, "{ifname} lost its address {ip6}");
        }
        Ok(())
    });
    inside.map_err(|e| Error::new(Code::Failed, format!("{e:#}")))?;
    let bridge = &state.networks[&ep.network].bridge;
    let bridge = ctx.nl.link(bridge)?.map(|l| l.index);
    let host = ctx.nl.link(&ep.host_veth)?;
    if host.is_none() || host.and_then(|l| l.controller) != bridge {
        return Err(Error::new(
            Code::Failed,
            format!(
                "{} is not on network {}'s bridge: run `netctl sync`",
                ep.host_veth, ep.network
            ),
        ));
    }
    Ok(())
}

/// GC: every attachment of this network that the runtime does not list as valid goes.
pub fn gc(conf: &NetConf) -> Result<()> {
    let Some(valid) = &conf.valid_attachments else {
        return Ok(());
    };
    let valid: BTreeSet<(String, &str)> = valid
        .iter()
        .map(|a| (super::spec::state_id(&a.container_id), a.ifname.as_str()))
        .collect();
    let ctx = Ctx::open()?;
    let mut tx = ctx.begin()?;
    let stale: Vec<(Container, Endpoint)> = tx
        .state()
        .containers
        .values()
        .filter(|c| is_cni(c))
        .flat_map(|c| c.endpoints.iter().map(move |e| (c, e)))
        .filter(|(c, e)| {
            e.network == conf.network() && !valid.contains(&(c.id.clone(), e.ifname.as_str()))
        })
        .map(|(c, e)| (c.clone(), e.clone()))
        .collect();
    for (c, ep) in &stale {
        // The container as it is now (an earlier detach may have changed it).
        let now = tx.state().containers.get(&c.name).cloned();
        if let Some(now) = now {
            detach(&ctx, tx.state(), &now, ep)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// STATUS: ready when the datapath is loaded (it is loaded here if it was not yet).
pub fn status() -> Result<()> {
    let not_available = |e: anyhow::Error| {
        Error::new(
            Code::NotAvailable,
            format!("netctl's datapath cannot be loaded: {e:#}"),
        )
    };
    let ctx = Ctx::open().map_err(not_available)?;
    crate::kernel::dataplane::Dataplane::open(&ctx.cfg).map_err(not_available)?;
    Ok(())
}
