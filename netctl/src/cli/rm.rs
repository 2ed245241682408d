use std::time::Duration;

use anyhow::Result;

use crate::{engine::containers, engine::ctx::Ctx, kernel::process};

/// Remove containers: stop their processes (SIGTERM, then SIGKILL after the grace period),
/// then remove their interfaces, namespace, addresses and published ports.
#[derive(clap::Args)]
pub struct Args {
    /// Kill at once (SIGKILL) instead of SIGTERM first
    #[arg(short, long)]
    force: bool,
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    /// Containers: names, IDs or unique ID prefixes
    #[arg(required = true, value_name = "CONTAINER")]
    names: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    // Check every name first: a typo removes nothing.
    let snapshot = ctx.store.snapshot()?;
    let mut found = Vec::new();
    for r in &args.names {
        found.push(snapshot.find_container(r)?.clone());
    }
    // Stop without holding the lock: the grace period must not block other commands.
    let grace = if args.force {
        Duration::ZERO
    } else {
        Duration::from_secs(args.time)
    };
    for c in &found {
        process::stop_container(&ctx.cfg.state_dir, c, grace);
    }
    crate::base::failpoint::step("rm: processes stopped");
    let mut tx = ctx.begin()?;
    for c in &found {
        if containers::remove_if_same(&ctx.nl, tx.state(), &ctx.cfg.state_dir, &c.name, &c.id)? {
            crate::base::failpoint::step("rm: container removed");
        }
    }
    tx.commit()?;
    args.names.iter().for_each(|n| println!("{n}"));
    Ok(0)
}
