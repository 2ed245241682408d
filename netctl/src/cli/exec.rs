use std::os::unix::process::CommandExt;

use anyhow::{bail, Result};

use crate::{engine::ctx::Ctx, kernel::process};

/// Run a command inside a container's network namespace.
#[derive(clap::Args)]
pub struct Args {
    /// Container: name, ID or unique ID prefix
    #[arg(value_name = "CONTAINER")]
    name: String,
    /// The command and its arguments (after --)
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    crate::engine::ctx::require_root()?;
    let ctx = Ctx::open_unchecked()?;
    let state = ctx.store.snapshot()?;
    let c = state.find_container(&args.name)?;
    if crate::engine::containers::Status::of(&ctx.cfg.state_dir, c)
        != crate::engine::containers::Status::Running
    {
        bail!("container {} is not running: exec needs a running container (start a new one with `netctl run`)", c.name);
    }
    let iso = process::Isolation::of(&ctx.cfg.state_dir, &state, c)?;
    let (mut cmd, _ns) = process::command(&iso, &args.command)?;
    let err = cmd.exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!(
        "netctl: cannot run {:?} in container {}: {err}",
        args.command[0], args.name
    );
    Ok(code)
}
