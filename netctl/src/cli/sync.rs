use anyhow::Result;

use crate::{config::Config, reconcile};

#[derive(clap::Args)]
pub struct Args {
    /// Print nothing unless something changed
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<i32> {
    super::require_root()?;
    let cfg = Config::from_env()?;
    let changes = reconcile::sync(&cfg)?;
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
