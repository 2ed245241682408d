use anyhow::Result;

use crate::{
    containers::{self, CreateRequest},
    ctx::Ctx,
    process,
};

/// Run a command in a new container: a network namespace attached to a network, with
/// published ports.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    netctl run -d --name web -p 8080:80 -- python3 -m http.server 80\n  \
    netctl run --name once --network backend -- ping -c1 172.18.0.1")]
pub struct Args {
    /// Run in the background and print the container ID (output goes to a log file)
    #[arg(short, long)]
    detach: bool,
    /// Container name (letters, digits, '_', '.', '-')
    #[arg(long)]
    name: String,
    /// Network to attach to [default: bridge, created on first use]
    #[arg(long)]
    network: Option<String>,
    /// Static IPv4 address on the network
    #[arg(long)]
    ip: Option<String>,
    /// Publish ports: [IP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]; no HOSTPORT picks
    /// a free ephemeral port
    #[arg(short, long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// The command and its arguments (after --)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    let req = CreateRequest {
        name: args.name,
        network: args.network,
        ip: args.ip,
        publish: args.publish,
        command: args.command,
        detach: args.detach,
    };
    let mut locked = ctx.store.lock()?;
    let c = containers::create(
        &ctx.nl,
        &mut locked.state,
        &ctx.cfg.state_dir,
        &req,
        ctx.group,
    )?;
    let ns = crate::netns::handle_path(&ctx.cfg.state_dir, &c.id);
    if let Err(e) = ctx.commit(&locked) {
        // Saved but not applied: leave it to `sync` only if removal fails too.
        let _ = containers::remove(&ctx.nl, &mut locked.state, &ctx.cfg.state_dir, &c.name);
        let _ = ctx.commit(&locked);
        return Err(e);
    }

    if req.detach {
        let log = containers::log_path(&ctx.cfg.state_dir, &c.id);
        std::fs::create_dir_all(log.parent().expect("log dir"))?;
        match process::spawn_detached(&ns, &req.command, &log) {
            Ok(pid) => {
                let entry = locked
                    .state
                    .containers
                    .get_mut(&c.name)
                    .expect("just created");
                entry.pid = Some(pid);
                entry.pid_start = process::start_time(pid);
                locked.save()?;
                println!("{}", c.id);
                Ok(0)
            }
            Err(e) => {
                containers::remove(&ctx.nl, &mut locked.state, &ctx.cfg.state_dir, &c.name)?;
                ctx.commit(&locked)?;
                Err(e)
            }
        }
    } else {
        let child = process::spawn_foreground(&ns, &req.command);
        if let Ok(child) = &child {
            let entry = locked
                .state
                .containers
                .get_mut(&c.name)
                .expect("just created");
            entry.pid = Some(child.id());
            entry.pid_start = process::start_time(child.id());
            locked.save()?;
        }
        drop(locked);
        // Ctrl-C reaches the container's process; netctl stays to clean up after it.
        ignore_interrupts();
        let code = match child {
            Ok(mut child) => {
                let status = child.wait()?;
                status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                })
            }
            Err(e) => {
                eprintln!("netctl: {e:#}");
                127
            }
        };
        process::stop_all(&ns, std::time::Duration::ZERO);
        let mut locked = ctx.store.lock()?;
        if locked
            .state
            .containers
            .get(&c.name)
            .is_some_and(|x| x.id == c.id)
        {
            containers::remove(&ctx.nl, &mut locked.state, &ctx.cfg.state_dir, &c.name)?;
            ctx.commit(&locked)?;
        }
        Ok(code)
    }
}

fn ignore_interrupts() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
        let _ = signal(Signal::SIGQUIT, SigHandler::SigIgn);
    }
}
