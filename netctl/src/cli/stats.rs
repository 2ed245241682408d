use anyhow::Result;

use crate::{config::Config, dataplane::Dataplane};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    crate::ctx::require_root()?;
    let cfg = Config::from_env()?;
    let dp = Dataplane::open(&cfg)?;
    let stats = dp.hook_stats()?;
    if args.json {
        let hooks: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|(h, c)| {
                (
                    h.name().to_string(),
                    serde_json::json!({"packets": c.packets, "bytes": c.bytes, "drops": c.drops}),
                )
            })
            .collect();
        println!("{}", serde_json::json!({ "hooks": hooks }));
    } else {
        println!(
            "{:<16} {:>12} {:>14} {:>10}",
            "HOOK", "PACKETS", "BYTES", "DROPS"
        );
        for (h, c) in stats {
            println!(
                "{:<16} {:>12} {:>14} {:>10}",
                h.name(),
                c.packets,
                c.bytes,
                c.drops
            );
        }
    }
    Ok(0)
}
