use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{
    containers,
    ctx::Ctx,
    networks::{self, CreateRequest},
    state::{Network, State},
};

#[derive(Subcommand)]
pub enum Command {
    /// Create a network: a Linux bridge with a gateway address and an address pool
    #[command(
        after_help = "Options (-o KEY=VALUE), Docker's keys or the short forms:\n  \
        com.docker.network.bridge.enable_icc (icc)                   containers of the network may talk to each other [true]\n  \
        com.docker.network.bridge.enable_ip_masquerade (masquerade)  SNAT traffic leaving through the uplinks [true]\n  \
        com.docker.network.driver.mtu (mtu)                          MTU of the bridge and veths [1500]\n  \
        com.docker.network.bridge.name (bridge_name)                 bridge name [br-<id>; netctl0 for bridge]\n\n\
        Example: netctl network create --subnet 172.30.0.0/24 -o icc=false backend"
    )]
    Create {
        /// Network driver (bridge)
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form (default: the next free pool, 172.18.0.0/16 …)
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address on the bridge (default: the subnet's first address)
        #[arg(long)]
        gateway: Option<String>,
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
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while containers are attached)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Attach a running container to a further network (eth1, eth2, …)
    Connect {
        /// Static address on that network
        #[arg(long)]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Detach a container from a network
    Disconnect { network: String, container: String },
}

pub fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            opt,
            name,
        } => {
            let ctx = Ctx::open()?;
            let mut locked = ctx.store.lock()?;
            let req = CreateRequest {
                name,
                driver,
                subnet,
                gateway,
                ip_range,
                internal,
                options: opt,
            };
            let net = networks::create(&ctx.nl, &mut locked.state, &req, ctx.group)?;
            ctx.commit(&locked)?;
            println!("{}", net.id);
        }
        Command::Ls { quiet, format } => {
            let state = Ctx::open_unchecked()?.store.snapshot()?;
            match format.as_str() {
                "table" if !quiet => {
                    println!("{:<14}{:<20}{:<10}SCOPE", "NETWORK ID", "NAME", "DRIVER");
                    for n in state.networks.values() {
                        println!("{:<14}{:<20}{:<10}local", &n.id[..12], n.name, n.driver);
                    }
                }
                "table" => state
                    .networks
                    .values()
                    .for_each(|n| println!("{}", &n.id[..12])),
                "json" => {
                    for n in state.networks.values() {
                        let v = json!({"ID": &n.id[..12], "Name": n.name, "Driver": n.driver,
                            "Scope": "local", "Internal": n.internal.to_string(), "IPv6": "false"});
                        println!("{v}");
                    }
                }
                other => bail!("unknown format {other:?}: use table or json"),
            }
        }
        Command::Inspect { names } => {
            let ctx = Ctx::open_unchecked()?;
            let mut state = ctx.store.snapshot()?;
            if names.iter().any(|n| n == networks::DEFAULT_NETWORK)
                && !state.networks.contains_key(networks::DEFAULT_NETWORK)
            {
                // The default network exists from first use on, inspecting it is a use.
                let ctx = Ctx::open()?;
                let mut locked = ctx.store.lock()?;
                networks::ensure_default(&ctx.nl, &mut locked.state, ctx.group)?;
                ctx.commit(&locked)?;
                state = locked.state.clone();
            }
            let mut out = Vec::new();
            for name in &names {
                out.push(inspect(&state, state.network(name)?));
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
        }
        Command::Rm { names } => {
            let ctx = Ctx::open()?;
            let mut locked = ctx.store.lock()?;
            networks::check_removable(&locked.state, &names)?;
            for name in &names {
                networks::remove(&ctx.nl, &mut locked.state, name)?;
            }
            ctx.commit(&locked)?;
            names.iter().for_each(|n| println!("{n}"));
        }
        Command::Connect {
            ip,
            network,
            container,
        } => {
            let ctx = Ctx::open()?;
            let mut locked = ctx.store.lock()?;
            containers::connect(
                &ctx.nl,
                &mut locked.state,
                &ctx.cfg.state_dir,
                &network,
                &container,
                ip.as_deref(),
                ctx.group,
            )?;
            ctx.commit(&locked)?;
        }
        Command::Disconnect { network, container } => {
            let ctx = Ctx::open()?;
            let mut locked = ctx.store.lock()?;
            containers::disconnect(
                &ctx.nl,
                &mut locked.state,
                &ctx.cfg.state_dir,
                &network,
                &container,
            )?;
            ctx.commit(&locked)?;
        }
    }
    Ok(0)
}

/// Docker's `network inspect` object.
fn inspect(state: &State, n: &Network) -> Value {
    let mut config = json!({"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()});
    if let Some(r) = n.ip_range {
        config["IPRange"] = json!(r.to_string());
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
                    "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix()),
                    "IPv6Address": "",
                }),
            );
        }
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [config]},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": n.options,
        "Labels": {},
    })
}

/// Seconds since the epoch as RFC 3339 UTC (civil-from-days, no time zone database needed).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
