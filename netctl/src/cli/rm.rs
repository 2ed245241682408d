use std::time::Duration;

use anyhow::Result;

use crate::{containers, ctx::Ctx, netns, process};

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
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    // Check every name first: a typo removes nothing.
    let snapshot = ctx.store.snapshot()?;
    let mut ids = Vec::new();
    for name in &args.names {
        ids.push(snapshot.container(name)?.id.clone());
    }
    // Stop without holding the lock: the grace period must not block other commands.
    let grace = if args.force {
        Duration::ZERO
    } else {
        Duration::from_secs(args.time)
    };
    for id in &ids {
        process::stop_all(&netns::handle_path(&ctx.cfg.state_dir, id), grace);
    }
    let mut locked = ctx.store.lock()?;
    for (name, id) in args.names.iter().zip(&ids) {
        // Another command may have removed (or re-created) it meanwhile.
        if locked
            .state
            .containers
            .get(name)
            .is_some_and(|c| &c.id == id)
        {
            containers::remove(&ctx.nl, &mut locked.state, &ctx.cfg.state_dir, name)?;
        }
    }
    ctx.commit(&locked)?;
    args.names.iter().for_each(|n| println!("{n}"));
    Ok(0)
}
