use anyhow::Result;

use crate::ctx::Ctx;

/// Make the kernel match the saved state: re-create missing bridges, namespaces and veths,
/// remove this instance's orphans, attach the eBPF programs. Run it after a reboot, or to
/// repair after a command was killed halfway.
#[derive(clap::Args)]
pub struct Args {
    /// Print nothing unless something changed
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    let locked = ctx.store.lock()?;
    let changes = ctx.commit_full(&locked)?;
    if changes.is_empty() {
        if !args.quiet {
            println!("in sync: nothing to change");
        }
    } else {
        for c in changes {
            println!("{c}");
        }
    }
    Ok(0)
}
