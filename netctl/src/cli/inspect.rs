use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::{
    engine::containers::Status,
    engine::ctx::Ctx,
    model::state::{Container, State},
};

/// Show containers in detail, as a JSON array in Docker's shape (the networking parts)
#[derive(clap::Args)]
pub struct Args {
    /// Containers: names, IDs or unique ID prefixes
    #[arg(required = true, value_name = "CONTAINER")]
    names: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open_unchecked()?;
    let state = ctx.store.snapshot()?;
    // Docker prints what it found, then fails for the rest.
    let mut out = Vec::new();
    let mut missing = None;
    for r in &args.names {
        match state.find_container(r) {
            Ok(c) => out.push(inspect(&state, c, Status::of(&ctx.cfg.state_dir, c))),
            Err(e) => missing = Some(e),
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
    missing.map_or(Ok(0), Err)
}

fn inspect(state: &State, c: &Container, status: Status) -> Value {
    let o = &c.options;
    let mut exposed = Map::new();
    let mut ports = Map::new();
    for e in &o.exposed {
        exposed.insert(format!("{}/{}", e.port, e.proto), json!({}));
        ports.insert(format!("{}/{}", e.port, e.proto), Value::Null);
    }
    for p in &c.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        exposed.insert(key.clone(), json!({}));
        let binding = json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()});
        match ports.get_mut(&key) {
            Some(Value::Array(v)) => v.push(binding),
            _ => {
                ports.insert(key, json!([binding]));
            }
        }
    }
    let mut networks = Map::new();
    for ep in &c.endpoints {
        let net = state.networks.get(&ep.network);
        let v6 = net.and_then(|n| n.ipv6.as_ref()).zip(ep.ip6);
        let v4 = net.and_then(|n| n.ipv4.as_ref()).zip(ep.ip);
        networks.insert(
            ep.network.clone(),
            json!({
                "Aliases": ep.aliases,
                "NetworkID": net.map(|n| n.id.clone()),
                "EndpointID": ep.endpoint_id,
                "Gateway": v4.map(|(n, _)| n.gateway.to_string()).unwrap_or_default(),
                "IPAddress": v4.map(|(_, ip)| ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": v4.map_or(0, |(n, _)| n.subnet.prefix()),
                "IPv6Gateway": v6.map(|(n, _)| n.gateway.to_string()).unwrap_or_default(),
                "GlobalIPv6Address": v6.map(|(_, ip)| ip.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": v6.map_or(0, |(n, _)| n.subnet.prefix()),
                "LinkLocalIPv6Address": v6
                    .map(|_| crate::model::ipam6::link_local(crate::model::addr::parse_mac(&ep.mac)).to_string())
                    .unwrap_or_default(),
                "MacAddress": ep.mac,
            }),
        );
    }
    let env: Vec<String> = crate::model::links::env(state, c)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let exit_code = match status {
        Status::Exited(code, _) => code,
        _ => 0,
    };
    json!({
        "Id": c.id,
        "Created": crate::model::text::rfc3339(c.created),
        "Name": format!("/{}", c.name),
        "State": {
            "Status": status.word(),
            "Running": status == Status::Running,
            "Pid": if status == Status::Running { c.pid.unwrap_or(0) } else { 0 },
            "ExitCode": exit_code,
        },
        "Config": {
            "Hostname": if c.host_network { String::new() } else { c.hostname().to_string() },
            "ExposedPorts": exposed,
            "Env": env,
            "Cmd": c.command,
        },
        "HostConfig": {
            "NetworkMode": if c.host_network { "host".to_string() } else if c.endpoints.is_empty() { "none".to_string() } else { c.endpoints[0].network.clone() },
            "Dns": o.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "ExtraHosts": o.extra_hosts.iter().map(|h| format!("{}:{}", h.name, h.ip)).collect::<Vec<_>>(),
            "Links": o.links.iter().map(|l| format!("/{}:/{}/{}", l.name, c.name, l.alias)).collect::<Vec<_>>(),
        },
        "NetworkSettings": {
            "Ports": ports,
            "Networks": networks,
        },
    })
}
