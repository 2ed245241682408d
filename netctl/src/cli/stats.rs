use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use netctl_common::stats::EndpointCounters;
use serde_json::{json, Value};

use crate::{
    engine::ctx::Ctx,
    kernel::dataplane::{maps::raw, Dataplane},
    model::state::State,
};

/// Counters of the eBPF programs: per hook, per container, per network, per published port;
/// drops by reason; conntrack occupancy
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
    /// Refresh every second, like top (Ctrl-C stops)
    #[arg(short, long)]
    watch: bool,
}

fn add(a: &mut EndpointCounters, b: &EndpointCounters) {
    a.tx_packets += b.tx_packets;
    a.tx_bytes += b.tx_bytes;
    a.rx_packets += b.rx_packets;
    a.rx_bytes += b.rx_bytes;
    a.drops += b.drops;
}

fn counters_json(c: &EndpointCounters) -> Value {
    json!({"tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes, "rx_packets": c.rx_packets,
           "rx_bytes": c.rx_bytes, "drops": c.drops})
}

/// Everything `stats` shows, as JSON (the table is printed from it).
fn collect(dp: &Dataplane, state: &State) -> Result<Value> {
    let hooks = dp.hook_stats()?;
    let drops = dp.drop_stats()?;
    let [(ct_used, ct_cap), (new_used, new_cap)] = dp.ct_occupancy()?;
    let per_ep = dp.endpoint_stats()?;
    let hits = dp.port_hits()?;
    let mut containers = serde_json::Map::new();
    let mut networks: BTreeMap<String, EndpointCounters> = state
        .networks
        .keys()
        .map(|n| (n.clone(), EndpointCounters::default()))
        .collect();
    for c in state.containers.values() {
        let mut sum = EndpointCounters::default();
        for ep in &c.endpoints {
            if let Some(v) = per_ep.get(&raw(ep.ip)) {
                add(&mut sum, v);
                add(networks.entry(ep.network.clone()).or_default(), v);
            }
        }
        containers.insert(c.name.clone(), counters_json(&sum));
    }
    let mut ports = Vec::new();
    for c in state.containers.values() {
        for p in &c.ports {
            let key = netctl_common::maps::PortKey {
                addr: raw(p.host_ip),
                port: p.host_port.to_be(),
                proto: if p.proto == crate::model::ports::Proto::Tcp {
                    6
                } else {
                    17
                },
                _pad: 0,
            };
            ports.push(
                json!({"container": c.name, "port": crate::model::ports::describe(p),
                "connections": hits.get(&key).copied().unwrap_or(0)}),
            );
        }
    }
    Ok(json!({
        "hooks": hooks.iter().map(|(h, c)| (h.name().to_string(),
            json!({"packets": c.packets, "bytes": c.bytes, "drops": c.drops}))).collect::<serde_json::Map<_, _>>(),
        "containers": containers,
        "networks": networks.iter().map(|(n, c)| (n.clone(), counters_json(c))).collect::<serde_json::Map<_, _>>(),
        "ports": ports,
        "drops": drops.iter().map(|(r, n)| (r.name().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "conntrack": {"entries": ct_used + new_used, "capacity": ct_cap,
                      "unconfirmed": new_used, "unconfirmed_capacity": new_cap},
    }))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_tables(v: &Value) {
    println!(
        "{:<16} {:>12} {:>14} {:>10}",
        "HOOK", "PACKETS", "BYTES", "DROPS"
    );
    for (h, c) in v["hooks"].as_object().into_iter().flatten() {
        println!(
            "{:<16} {:>12} {:>14} {:>10}",
            h,
            n(&c["packets"]),
            n(&c["bytes"]),
            n(&c["drops"])
        );
    }
    for (title, key) in [("CONTAINER", "containers"), ("NETWORK", "networks")] {
        let rows = v[key].as_object().cloned().unwrap_or_default();
        if rows.is_empty() {
            continue;
        }
        println!(
            "\n{title:<16} {:>10} {:>12} {:>10} {:>12} {:>8}",
            "TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES", "DROPS"
        );
        for (name, c) in rows {
            println!(
                "{name:<16} {:>10} {:>12} {:>10} {:>12} {:>8}",
                n(&c["tx_packets"]),
                n(&c["tx_bytes"]),
                n(&c["rx_packets"]),
                n(&c["rx_bytes"]),
                n(&c["drops"])
            );
        }
    }
    let ports = v["ports"].as_array().cloned().unwrap_or_default();
    if !ports.is_empty() {
        println!(
            "\n{:<16} {:<28} {:>12}",
            "CONTAINER", "PUBLISHED PORT", "CONNECTIONS"
        );
        for p in ports {
            println!(
                "{:<16} {:<28} {:>12}",
                p["container"].as_str().unwrap_or(""),
                p["port"].as_str().unwrap_or(""),
                n(&p["connections"])
            );
        }
    }
    let drops: Vec<_> = v["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .collect();
    if !drops.is_empty() {
        println!("\n{:<22} {:>10}", "DROP REASON", "PACKETS");
        for (r, count) in drops {
            println!("{r:<22} {:>10}", n(count));
        }
    }
    println!(
        "\nconntrack: {} entries ({} unconfirmed, of {}; confirmed flows hold up to {})",
        n(&v["conntrack"]["entries"]),
        n(&v["conntrack"]["unconfirmed"]),
        n(&v["conntrack"]["unconfirmed_capacity"]),
        n(&v["conntrack"]["capacity"])
    );
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    let dp = Dataplane::open(&ctx.cfg)?;
    loop {
        let state = ctx.store.snapshot()?;
        let v = collect(&dp, &state)?;
        if args.watch {
            print!("\x1b[H\x1b[2J");
        }
        if args.json {
            println!("{v}");
        } else {
            print_tables(&v);
        }
        if !args.watch {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
