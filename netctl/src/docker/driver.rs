//! Docker's remote network driver and IPAM driver (plugin API v1.2) on netctl's state: a
//! Docker network is a netctl bridge network (named by Docker's short network ID), a joined
//! Docker endpoint a netctl container in dockerd's sandbox namespace (`dk-` and the short
//! endpoint ID), published ports eBPF DNAT. Every request is one netctl transaction.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{anyhow, bail, Context, Result};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};

use crate::{
    engine::ctx::{Ctx, Tx},
    engine::networks,
    kernel::netns,
    kernel::topology,
    model::ipam,
    model::ipam6,
    model::ports::{self, PortMapping, PortSpec, Proto},
    model::state::{self, short, Container, DockerEndpoint, DockerPool, Endpoint, Exposed, State},
};

/// Docker's keys in the requests.
const GENERIC: &str = "com.docker.network.generic";
const INTERNAL: &str = "com.docker.network.internal";
const PORTMAP: &str = "com.docker.network.portmap";
const EXPOSED: &str = "com.docker.network.endpoint.exposedports";
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

/// Answers one API call.
pub fn handle(path: &str, body: &Value) -> Result<Value> {
    let s = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    match path.trim_start_matches('/') {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        "NetworkDriver.GetCapabilities" => {
            Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
        }
        "NetworkDriver.CreateNetwork" => create_network(&s("NetworkID"), body).map(|_| json!({})),
        "NetworkDriver.DeleteNetwork" => delete_network(&s("NetworkID")).map(|_| json!({})),
        "NetworkDriver.CreateEndpoint" => create_endpoint(&s("NetworkID"), &s("EndpointID"), body),
        "NetworkDriver.DeleteEndpoint" => delete_endpoint(&s("EndpointID")).map(|_| json!({})),
        "NetworkDriver.EndpointOperInfo" => oper_info(&s("EndpointID")),
        "NetworkDriver.Join" => join(&s("EndpointID"), &s("SandboxKey")),
        "NetworkDriver.Leave" => leave(&s("EndpointID")).map(|_| json!({})),
        "NetworkDriver.ProgramExternalConnectivity" => {
            program(&s("EndpointID"), &body["Options"]).map(|_| json!({}))
        }
        "NetworkDriver.RevokeExternalConnectivity" => revoke(&s("EndpointID")).map(|_| json!({})),
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
        "IpamDriver.GetCapabilities" => Ok(json!({ "RequiresMACAddress": false })),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": "netctl",
            "GlobalDefaultAddressSpace": "netctl-global",
        })),
        "IpamDriver.RequestPool" => request_pool(body),
        "IpamDriver.ReleasePool" => release_pool(&s("PoolID")).map(|_| json!({})),
        "IpamDriver.RequestAddress" => request_address(&s("PoolID"), &s("Address"), body),
        "IpamDriver.ReleaseAddress" => {
            release_address(&s("PoolID"), &s("Address")).map(|_| json!({}))
        }
        other => bail!("netctl's plugin does not implement {other}"),
    }
}

/// A transaction on netctl's state, committed when `f` succeeds.
fn with_tx<T>(f: impl FnOnce(&Ctx, &mut Tx) -> Result<T>) -> Result<T> {
    let ctx = Ctx::open()?;
    let mut tx = ctx.begin()?;
    let out = f(&ctx, &mut tx)?;
    tx.commit()?;
    Ok(out)
}

fn network_name(state: &State, nid: &str) -> Result<String> {
    state
        .networks
        .values()
        .find(|n| n.id == nid)
        .map(|n| n.name.clone())
        .ok_or_else(|| {
            anyhow!("network {nid} not found: it was not created through netctl's driver")
        })
}

fn check_id(id: &str, what: &str) -> Result<()> {
    if !state::is_safe_id(id) {
        bail!("{what} {id:?} is not a valid ID");
    }
    Ok(())
}

/// A bridge network for Docker's: subnet and gateway from Docker's IPAM data, `-o` options
/// and `--internal` as `netctl network create` takes them.
fn create_network(nid: &str, body: &Value) -> Result<()> {
    check_id(nid, "network ID")?;
    let v4 = body["IPv4Data"]
        .as_array()
        .and_then(|a| a.first())
        .context("netctl needs an IPv4 subnet for the network")?;
    if body["IPv4Data"].as_array().is_some_and(|a| a.len() > 1) {
        bail!("netctl takes one IPv4 subnet per network");
    }
    let v6 = match body["IPv6Data"].as_array().map(Vec::as_slice) {
        None | Some([]) => None,
        Some([one]) => {
            let pool = one["Pool"].as_str().context("IPv6Data has no Pool")?;
            let gateway = one["Gateway"]
                .as_str()
                .map(|g| g.split('/').next().unwrap_or(g).to_string());
            Some((pool.to_string(), gateway))
        }
        Some(_) => bail!("netctl takes one IPv6 subnet per network"),
    };
    let pool = v4["Pool"].as_str().context("IPv4Data has no Pool")?;
    let gateway = v4["Gateway"]
        .as_str()
        .map(|g| g.split('/').next().unwrap_or(g).to_string());
    let opts = &body["Options"];
    let mut options = Vec::new();
    if let Some(generic) = opts[GENERIC].as_object() {
        for (k, v) in generic {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            options.push(format!("{k}={v}"));
        }
    }
    let internal =
        opts[INTERNAL].as_bool().unwrap_or(false) || opts[INTERNAL].as_str() == Some("true");
    with_tx(|ctx, tx| {
        if tx.state().networks.values().any(|n| n.id == nid) {
            return Ok(()); // asked again: it is there
        }
        let req = networks::CreateRequest {
            name: short(nid).to_string(),
            driver: "bridge".into(),
            subnet: Some(pool.to_string()),
            gateway: gateway.clone(),
            ip_range: None,
            internal,
            options: options.clone(),
            ipv6: v6.is_some(),
            subnet6: v6.as_ref().map(|v| v.0.clone()),
            gateway6: v6.as_ref().and_then(|v| v.1.clone()),
            ipv6_only: false,
        };
        let mut net = networks::plan(&ctx.nl, tx.state(), &req, ctx.group)?;
        net.id = nid.to_string();
        if !options
            .iter()
            .any(|o| o.contains("bridge_name=") || o.contains("bridge.name="))
        {
            net.bridge = format!("br-{}", short(nid));
        }
        topology::create_bridge(&ctx.nl, &net, ctx.group)?;
        tx.state().networks.insert(net.name.clone(), net);
        Ok(())
    })
}

fn delete_network(nid: &str) -> Result<()> {
    with_tx(|ctx, tx| {
        let name = network_name(tx.state(), nid)?;
        if let Some(why) = networks::why_not_removable(tx.state(), &name) {
            bail!("{why}");
        }
        networks::remove(&ctx.nl, tx.state(), &name)
    })
}

/// Docker's IPAM chose the address (ours or its own); the endpoint waits for its Join.
fn create_endpoint(nid: &str, eid: &str, body: &Value) -> Result<Value> {
    check_id(eid, "endpoint ID")?;
    let iface = &body["Interface"];
    let addr = iface["Address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .context("the endpoint has no IPv4 address: netctl needs one from IPAM")?;
    let ip = parse_addr(addr)?;
    let ip6 = match iface["AddressIPv6"].as_str().filter(|a| !a.is_empty()) {
        Some(a) => Some(ipam6::parse_ip(
            a.split('/').next().unwrap_or(a),
            "AddressIPv6",
        )?),
        None => None,
    };
    let given_mac = iface["MacAddress"].as_str().filter(|m| !m.is_empty());
    if let Some(m) = given_mac.filter(|m| !topology::is_unicast_mac(m)) {
        bail!("MacAddress {m:?} is not a unicast MAC address (like 02:42:0a:00:00:02)");
    }
    let mac = given_mac.map_or_else(|| state::mac_for(ip), str::to_lowercase);
    with_tx(|_, tx| {
        let network = network_name(tx.state(), nid)?;
        if let Some(e) = tx.state().docker.endpoints.get(eid) {
            if e.network == network && e.ip == ip && e.ip6 == ip6 {
                return Ok(()); // asked again
            }
            bail!("endpoint {eid} exists with another address");
        }
        let net = tx
            .state()
            .networks
            .get(&network)
            .cloned()
            .with_context(|| format!("network {network} is gone"))?;
        ipam::check_static(&net, ip, &tx.state().used_ips(&network))?;
        match (ip6, &net.ipv6) {
            (Some(ip6), Some(_)) => ipam6::check_static(&net, ip6, &tx.state().used_ips6(&network))?,
            (Some(_), None) => bail!("network {network} has no IPv6: the endpoint cannot have {}", ip6.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED)),
            (None, Some(_)) => bail!("the endpoint has no IPv6 address on a network with IPv6: netctl needs one from IPAM"),
            (None, None) => {}
        }
        tx.state().docker.endpoints.insert(
            eid.to_string(),
            DockerEndpoint {
                network,
                ip,
                ip6,
                mac: mac.clone(),
            },
        );
        Ok(())
    })?;
    // The MAC is ours to give only when Docker did not choose one.
    Ok(match given_mac {
        Some(_) => json!({}),
        None => json!({ "Interface": { "MacAddress": mac } }),
    })
}

fn delete_endpoint(eid: &str) -> Result<()> {
    with_tx(|ctx, tx| {
        if tx.state().docker.endpoints.remove(eid).is_none() {
            bail!("endpoint {eid} not found");
        }
        // Left without a Leave (a crashed dockerd): its container goes too.
        if let Some(c) = joined(tx.state(), eid) {
            crate::engine::containers::remove(&ctx.nl, tx.state(), &ctx.cfg.state_dir, &c.name)?;
        }
        Ok(())
    })
}

/// The netctl container of a joined endpoint.
fn joined(state: &State, eid: &str) -> Option<Container> {
    state
        .containers
        .values()
        .find(|c| c.id == eid && c.engine.as_deref() == Some("docker"))
        .cloned()
}

fn oper_info(eid: &str) -> Result<Value> {
    let ctx = Ctx::open()?;
    let state = ctx.store.snapshot()?;
    let e = state
        .docker
        .endpoints
        .get(eid)
        .with_context(|| format!("endpoint {eid} not found"))?;
    let ports = joined(&state, eid).map(|c| c.ports).unwrap_or_default();
    Ok(json!({ "Value": {
        "ip": e.ip.to_string(),
        "mac": e.mac,
        PORTMAP: ports.iter().map(port_binding).collect::<Vec<_>>(),
    }}))
}

/// Docker's `types.PortBinding` of a published port.
fn port_binding(p: &PortMapping) -> Value {
    json!({
        "Proto": match p.proto { Proto::Tcp => 6, Proto::Udp => 17 },
        "IP": "",
        "Port": p.container_port,
        "HostIP": if p.host_ip.is_unspecified() { String::new() } else { p.host_ip.to_string() },
        "HostPort": p.host_port,
        "HostPortEnd": p.host_port,
    })
}

/// The veth for the sandbox: both ends here, the peer for dockerd to move into the
/// container and name `ethN`; the endpoint becomes a netctl container.
fn join(eid: &str, sandbox: &str) -> Result<Value> {
    if sandbox.is_empty() {
        bail!("Join without a SandboxKey");
    }
    let peer = topology::engine_peer_name(eid);
    let (gateway, gateway6, internal) = with_tx(|ctx, tx| {
        let e = tx
            .state()
            .docker
            .endpoints
            .get(eid)
            .cloned()
            .with_context(|| format!("endpoint {eid} not found"))?;
        if joined(tx.state(), eid).is_some() {
            bail!("endpoint {eid} is joined already");
        }
        // The network may have gone (DeleteNetwork of a never-joined endpoint's network).
        let net = tx
            .state()
            .networks
            .get(&e.network)
            .cloned()
            .with_context(|| format!("network {} of endpoint {eid} is gone", e.network))?;
        let ep = Endpoint {
            network: e.network.clone(),
            endpoint_id: eid.to_string(),
            ifname: "eth0".into(),
            host_veth: topology::host_veth_name(eid),
            ip: Some(e.ip),
            ip6: e.ip6,
            mac: e.mac.clone(),
            aliases: Vec::new(),
        };
        let index = ctx.nl.add_veth_pair(
            &ep.host_veth,
            &peer,
            topology::parse_mac(&e.mac),
            net.mtu,
            ctx.group,
        )?;
        let bridge = ctx
            .nl
            .link(&net.bridge)?
            .with_context(|| format!("bridge {} is missing: run `netctl sync`", net.bridge))?;
        let attached = ctx
            .nl
            .set_controller(index, bridge.index)
            .and_then(|_| ctx.nl.pin_bridge_port(index, topology::parse_mac(&e.mac)))
            .and_then(|_| ctx.nl.set_up(index));
        if let Err(err) = attached {
            let _ = ctx.nl.del_link(index);
            return Err(err);
        }
        tx.attach_early(&ep.host_veth);
        let name = format!("dk-{}", short(eid));
        let mut c = crate::engine::containers::engine_container(
            eid,
            &name,
            PathBuf::from(sandbox),
            "docker",
        );
        c.endpoints.push(ep);
        tx.state().containers.insert(name, c);
        Ok((
            net.ipv4.map(|v| v.gateway),
            net.ipv6.map(|v| v.gateway),
            net.internal,
        ))
    })?;
    let mut out = json!({
        "InterfaceName": { "SrcName": peer, "DstPrefix": "eth" },
        "DisableGatewayService": false,
    });
    if !internal {
        if let Some(gw) = gateway {
            out["Gateway"] = json!(gw.to_string());
        }
        if let Some(gw6) = gateway6 {
            out["GatewayIPv6"] = json!(gw6.to_string());
        }
    }
    Ok(out)
}

fn leave(eid: &str) -> Result<()> {
    with_tx(|ctx, tx| {
        let c = joined(tx.state(), eid).with_context(|| format!("endpoint {eid} is not joined"))?;
        crate::engine::containers::remove(&ctx.nl, tx.state(), &ctx.cfg.state_dir, &c.name)
    })
}

/// Published ports (`-p`) and exposed ports of the container's gateway endpoint.
fn program(eid: &str, options: &Value) -> Result<()> {
    let mut specs = Vec::new();
    for b in options[PORTMAP].as_array().into_iter().flatten() {
        specs.push(binding_spec(b)?.parse::<PortSpec>()?);
    }
    let exposed: Vec<Exposed> = options[EXPOSED]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let proto = match e["Proto"].as_u64() {
                Some(17) => Proto::Udp,
                _ => Proto::Tcp,
            };
            Some(Exposed {
                port: u16::try_from(e["Port"].as_u64()?).ok()?,
                proto,
            })
        })
        .collect();
    with_tx(|_, tx| {
        let c = joined(tx.state(), eid).with_context(|| format!("endpoint {eid} is not joined"))?;
        let taken: Vec<_> = tx
            .state()
            .all_ports()
            .filter(|(o, _)| o.id != c.id)
            .map(|(_, p)| *p)
            .collect();
        let mapped = ports::allocate(
            &specs,
            &taken,
            ports::ephemeral_range(),
            &crate::model::ports::HostSockets::read_for(&specs),
        )?;
        let ifname = interface_in_sandbox(&c);
        let c = tx.state().containers.get_mut(&c.name).expect("found");
        c.ports = mapped;
        c.options.exposed = exposed.clone();
        if let Some(name) = ifname {
            c.endpoints[0].ifname = name;
        }
        Ok(())
    })
}

/// Docker's `PortBinding` in `-p` syntax (HostPort 0: an ephemeral port).
pub fn binding_spec(b: &Value) -> Result<String> {
    let proto = match b["Proto"].as_u64() {
        Some(6) | None => "tcp",
        Some(17) => "udp",
        Some(p) => bail!("published port with protocol {p}: netctl publishes TCP and UDP"),
    };
    let port = b["Port"].as_u64().context("port binding without Port")?;
    let ip = b["HostIP"].as_str().unwrap_or_default();
    let host = b["HostPort"].as_u64().unwrap_or(0);
    let end = b["HostPortEnd"].as_u64().unwrap_or(host).max(host);
    let hosts = match (host, end) {
        (0, _) => String::new(),
        (h, e) if e > h => format!("{h}-{e}:"),
        (h, _) => format!("{h}:"),
    };
    // Every address: dockerd hands `-p 8080:80` over as 0.0.0.0 and as `::`, which netctl's
    // every-address mapping covers (both families).
    let ip = match ip {
        "" | "0.0.0.0" | "::" => return Ok(format!("{hosts}{port}/{proto}")),
        ip => ip
            .parse::<std::net::IpAddr>()
            .map_err(|_| anyhow!("published port with host address {ip:?}: not an IP address"))?,
    };
    // An address without a host port: an ephemeral port on it (`IP::PORT`).
    let hosts = if hosts.is_empty() { ":".into() } else { hosts };
    let ip = match ip {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    };
    Ok(format!("{ip}:{hosts}{port}/{proto}"))
}

/// The name dockerd gave the interface in the sandbox (found by its MAC).
fn interface_in_sandbox(c: &Container) -> Option<String> {
    let ns = c
        .engine_netns
        .clone()
        .filter(|ns| netns::is_engines(c, ns))?;
    let mac = topology::parse_mac(&c.endpoints.first()?.mac).to_vec();
    netns::run_in(&ns, move || {
        let nl = crate::kernel::netlink::Netlink::new()?;
        Ok(nl
            .links()?
            .into_iter()
            .find(|l| l.mac == mac)
            .map(|l| l.name))
    })
    .ok()
    .flatten()
}

fn revoke(eid: &str) -> Result<()> {
    with_tx(|_, tx| {
        if let Some(c) = joined(tx.state(), eid) {
            let c = tx.state().containers.get_mut(&c.name).expect("found");
            c.ports.clear();
        }
        Ok(())
    })
}

// ---- IPAM ----

fn request_pool(body: &Value) -> Result<Value> {
    let asked = body["Pool"].as_str().filter(|p| !p.is_empty());
    if body["SubPool"].as_str().is_some_and(|p| !p.is_empty()) {
        bail!("netctl's IPAM does not take --ip-range: leave it out");
    }
    let v6 = body["V6"].as_bool() == Some(true);
    with_tx(|ctx, tx| {
        let pools: Vec<IpNetwork> = tx.state().docker.pools.values().map(|p| p.subnet).collect();
        let subnet = if v6 {
            let mut taken = networks::taken_subnets6(&ctx.nl, tx.state())?;
            taken.extend(pools.into_iter().filter_map(|p| match p {
                IpNetwork::V6(p) => Some(p),
                IpNetwork::V4(_) => None,
            }));
            IpNetwork::V6(match asked {
                Some(p) => {
                    let s = ipam6::parse_subnet(p, "subnet")?;
                    if let Some(t) = taken.iter().find(|t| ipam6::overlaps(t, &s)) {
                        bail!("subnet {s} overlaps {t}, a network or an address of this host: pick another");
                    }
                    s
                }
                None => ipam6::pick_subnet(networks::ula(ctx.group), &taken)?,
            })
        } else {
            let mut taken = networks::taken_subnets(&ctx.nl, tx.state())?;
            taken.extend(pools.into_iter().filter_map(|p| match p {
                IpNetwork::V4(p) => Some(p),
                IpNetwork::V6(_) => None,
            }));
            IpNetwork::V4(match asked {
                Some(p) => {
                    let s = ipam::parse_subnet(p, "subnet")?;
                    if let Some(t) = taken.iter().find(|t| ipam::overlaps(t, &s)) {
                        bail!("subnet {s} overlaps {t}, a network or route of this host: pick another");
                    }
                    s
                }
                None => ipam::pick_pool(None, &taken)?,
            })
        };
        let id = format!("netctl-{subnet}");
        tx.state().docker.pools.insert(
            id.clone(),
            DockerPool {
                subnet,
                addresses: BTreeSet::new(),
            },
        );
        Ok(json!({ "PoolID": id, "Pool": subnet.to_string(), "Data": {} }))
    })
}

fn release_pool(id: &str) -> Result<()> {
    with_tx(|_, tx| {
        tx.state()
            .docker
            .pools
            .remove(id)
            .map(|_| ())
            .with_context(|| format!("pool {id} not found"))
    })
}

fn request_address(pool: &str, addr: &str, body: &Value) -> Result<Value> {
    let gateway = body["Options"]["RequestAddressType"].as_str() == Some(GATEWAY_REQUEST);
    with_tx(|_, tx| {
        let p = tx
            .state()
            .docker
            .pools
            .get(pool)
            .cloned()
            .with_context(|| format!("pool {pool} not found"))?;
        let ip = match addr {
            "" if gateway => first_host(&p.subnet),
            "" => {
                free_address(&p).with_context(|| format!("no free address left in {}", p.subnet))?
            }
            a => {
                let ip = parse_pool_addr(a)?;
                if !p.subnet.contains(ip) || !usable(&p.subnet, ip) {
                    bail!(
                        "Invalid address {ip}: It does not belong to any of this network's subnets"
                    );
                }
                if p.addresses.contains(&ip) {
                    bail!("Address already in use: {ip}");
                }
                ip
            }
        };
        let entry = tx.state().docker.pools.get_mut(pool).expect("found");
        entry.addresses.insert(ip);
        Ok(json!({ "Address": format!("{ip}/{}", p.subnet.prefix()), "Data": {} }))
    })
}

/// An IPv4 address, with or without its prefix length (Docker sends both).
pub fn parse_addr(a: &str) -> Result<Ipv4Addr> {
    a.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("{a:?} is not an IPv4 address"))
}

/// An address of a pool, of either family, with or without its prefix length.
fn parse_pool_addr(a: &str) -> Result<IpAddr> {
    a.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("{a:?} is not an IP address"))
}

fn first_host(net: &IpNetwork) -> IpAddr {
    nth(net, 1)
}

/// The subnet's `n`th address.
fn nth(net: &IpNetwork, n: u32) -> IpAddr {
    match net {
        IpNetwork::V4(v4) => Ipv4Addr::from(u32::from(v4.network()) + n).into(),
        IpNetwork::V6(v6) => Ipv6Addr::from(u128::from(v6.network()) + u128::from(n)).into(),
    }
}

/// Whether an address of the subnet may be handed out: not its network address (IPv6's
/// subnet-router anycast), nor IPv4's broadcast.
fn usable(net: &IpNetwork, ip: IpAddr) -> bool {
    ip != net.network() && !matches!(net, IpNetwork::V4(v4) if IpAddr::V4(v4.broadcast()) == ip)
}

/// The lowest address not handed out: at most one more than are handed out is looked at.
fn free_address(p: &DockerPool) -> Option<IpAddr> {
    (1..=p.addresses.len() as u32 + 1)
        .map(|n| nth(&p.subnet, n))
        .take_while(|ip| p.subnet.contains(*ip) && usable(&p.subnet, *ip))
        .find(|ip| !p.addresses.contains(ip))
}

fn release_address(pool: &str, addr: &str) -> Result<()> {
    let ip = parse_pool_addr(addr)?;
    with_tx(|_, tx| {
        let p = tx
            .state()
            .docker
            .pools
            .get_mut(pool)
            .with_context(|| format!("pool {pool} not found"))?;
        p.addresses.remove(&ip);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bindings_become_port_specs() {
        let b = |v: Value| binding_spec(&v).unwrap();
        assert_eq!(
            b(json!({"Proto":6,"Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080})),
            "8080:80/tcp"
        );
        assert_eq!(
            b(json!({"Proto":17,"Port":53,"HostIP":"127.0.0.1","HostPort":5353})),
            "127.0.0.1:5353:53/udp"
        );
        assert_eq!(b(json!({"Proto":6,"Port":80,"HostPort":0})), "80/tcp");
        assert_eq!(
            b(json!({"Proto":6,"Port":80,"HostIP":"0.0.0.0","HostPort":9000,"HostPortEnd":9005})),
            "9000-9005:80/tcp"
        );
        assert!(binding_spec(&json!({"Proto":132,"Port":80})).is_err());
        // An address without a host port: an ephemeral port on it, never the address taken
        // for a port (found by the docker_body fuzz target's check).
        assert_eq!(
            b(json!({"Port":80,"HostIP":"10.0.0.5"})),
            "10.0.0.5::80/tcp"
        );
        assert_eq!(
            b(json!({"Port":80,"HostIP":"::","HostPort":8080})),
            "8080:80/tcp"
        );
        assert!(binding_spec(&json!({"Port":80,"HostIP":"8080"})).is_err());
        assert_eq!(
            binding_spec(&json!({"Port":80,"HostIP":"fd00::1","HostPort":1})).unwrap(),
            "[fd00::1]:1:80/tcp"
        );
        assert!(binding_spec(&json!({"Port":80,"HostIP":"fd00::zz","HostPort":1})).is_err());
        for s in [
            "8080:80/tcp",
            "127.0.0.1:5353:53/udp",
            "80/tcp",
            "9000-9005:80/tcp",
        ] {
            s.parse::<PortSpec>().unwrap();
        }
        let p = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(port_binding(&p)["HostPort"], 8080);
        assert_eq!(port_binding(&p)["Proto"], 6);
    }

    #[test]
    fn pool_addresses() {
        let mut p = DockerPool {
            subnet: "10.5.0.0/29".parse().unwrap(),
            addresses: BTreeSet::new(),
        };
        assert_eq!(first_host(&p.subnet), "10.5.0.1".parse::<IpAddr>().unwrap());
        for _ in 0..6 {
            let ip = free_address(&p).unwrap();
            p.addresses.insert(ip);
        }
        assert_eq!(
            free_address(&p),
            None,
            "network and broadcast never handed out"
        );
        // IPv6: from ::1 up, the gaps first; the subnet-router anycast address never.
        let mut p = DockerPool {
            subnet: "fd00:1::/64".parse().unwrap(),
            addresses: BTreeSet::new(),
        };
        assert_eq!(
            first_host(&p.subnet),
            "fd00:1::1".parse::<IpAddr>().unwrap()
        );
        for a in ["fd00:1::1", "fd00:1::2", "fd00:1::4"] {
            p.addresses.insert(a.parse().unwrap());
        }
        assert_eq!(free_address(&p), Some("fd00:1::3".parse().unwrap()));
        assert!(!usable(&p.subnet, "fd00:1::".parse().unwrap()));
        assert_eq!(
            parse_pool_addr("fd00:1::9/64").unwrap(),
            "fd00:1::9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn endpoint_macs_are_checked_before_anything_is_written() {
        for mac in [
            "01:00:5e:00:00:01",
            "02:42:0a",
            "zz:42:0a:00:00:02",
            "02:42:0a:00:00:02:03",
        ] {
            let body = json!({ "Interface": { "Address": "10.5.0.2/24", "MacAddress": mac } });
            let e = create_endpoint("n", "0123456789abcdef0123", &body).unwrap_err();
            assert!(e.to_string().contains("not a unicast MAC"), "{mac}: {e}");
        }
    }

    #[test]
    fn unknown_calls_are_errors() {
        assert!(handle("/NetworkDriver.Frobnicate", &Value::Null).is_err());
        assert_eq!(
            handle("/Plugin.Activate", &Value::Null).unwrap()["Implements"][0],
            "NetworkDriver"
        );
    }
}
