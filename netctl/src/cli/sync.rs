use anyhow::{bail, Result};

use crate::{engine::containers, engine::ctx::Ctx, kernel::process};

/// Make the kernel match the saved state: re-create missing bridges, namespaces and veths,
/// remove this instance's orphans, attach the eBPF programs, refill the maps. Run it at boot
/// (see contrib/netctl-sync.service) or to repair after a command was killed halfway.
#[derive(clap::Args)]
pub struct Args {
    /// Print nothing unless something changed
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut tx = ctx.begin()?;
    let report = tx.commit_full()?;
    // Processes of an earlier boot (or killed with their shim) are gone for good.
    for c in tx.state().containers.values() {
        let exit = containers::exit_path(&ctx.cfg.state_dir, &c.id);
        if c.pid.is_some()
            && containers::Status::of(&ctx.cfg.state_dir, c)
                == containers::Status::Exited(255, None)
        {
            let _ = std::fs::create_dir_all(containers::dir(&ctx.cfg.state_dir, &c.id));
            if process::record_exit(&exit, 255).is_ok() {
                println!("container {} marked exited: its process is gone", c.name);
            }
        }
    }
    if report.changes.is_empty() {
        if !args.quiet {
            println!("in sync: nothing to change");
        }
    } else {
        for c in &report.changes {
            println!("{c}");
        }
    }
    if !report.problems.is_empty() {
        bail!(
            "{} object(s) could not be restored (see the warnings above)",
            report.problems.len()
        );
    }
    Ok(0)
}
