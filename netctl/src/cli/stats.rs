use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::{
    engine::{ctx::Ctx, stats::collect},
    kernel::dataplane::Dataplane,
};

/// Counters of the eBPF programs: per hook, per container, per network, per published port;
/// drops by reason; conntrack occupancy
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
    /// Output format: table, json, or prometheus (the text the daemon serves on
    /// STATE_DIR/metrics.sock, DNS counts included; the datapath's alone without a daemon)
    #[arg(long, value_parser = ["table", "json", "prometheus"])]
    format: Option<String>,
    /// Refresh every second, like top (Ctrl-C stops)
    #[arg(short, long)]
    watch: bool,
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

/// The daemon's metrics text, if it serves them (the DNS counts live in its memory).
fn from_daemon(state_dir: &std::path::Path) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(crate::model::paths::metrics_socket(state_dir))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
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
        match args.format.as_deref() {
            Some("prometheus") => match from_daemon(&ctx.cfg.state_dir) {
                Some(text) => print!("{text}"),
                None => print!("{}", crate::engine::stats::prometheus(&v)),
            },
            Some("json") => println!("{v}"),
            _ if args.json => println!("{v}"),
            _ => print_tables(&v),
        }
        if !args.watch {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
