use anyhow::Result;
use serde_json::json;

use crate::{config::Config, dataplane::Dataplane};

/// Packet, byte and drop counters of the eBPF programs, drops by reason, conntrack occupancy
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    crate::ctx::require_root()?;
    let cfg = Config::from_env()?;
    let dp = Dataplane::open(&cfg)?;
    let hooks = dp.hook_stats()?;
    let drops = dp.drop_stats()?;
    let (ct_used, ct_cap) = dp.ct_occupancy()?;
    if args.json {
        let hooks: serde_json::Map<String, serde_json::Value> = hooks
            .iter()
            .map(|(h, c)| {
                (
                    h.name().to_string(),
                    json!({"packets": c.packets, "bytes": c.bytes, "drops": c.drops}),
                )
            })
            .collect();
        let drops: serde_json::Map<String, serde_json::Value> = drops
            .iter()
            .map(|(r, n)| (r.name().to_string(), json!(n)))
            .collect();
        let v = json!({
            "hooks": hooks,
            "drops": drops,
            "conntrack": {"entries": ct_used, "capacity": ct_cap},
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{:<16} {:>12} {:>14} {:>10}",
        "HOOK", "PACKETS", "BYTES", "DROPS"
    );
    for (h, c) in &hooks {
        println!(
            "{:<16} {:>12} {:>14} {:>10}",
            h.name(),
            c.packets,
            c.bytes,
            c.drops
        );
    }
    let nonzero: Vec<_> = drops.iter().filter(|(_, n)| *n > 0).collect();
    if !nonzero.is_empty() {
        println!("\n{:<22} {:>10}", "DROP REASON", "PACKETS");
        for (r, n) in nonzero {
            println!("{:<22} {:>10}", r.name(), n);
        }
    }
    println!("\nconntrack: {ct_used} of {ct_cap} entries");
    Ok(0)
}
