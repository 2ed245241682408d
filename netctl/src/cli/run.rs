use anyhow::Result;

use crate::{
    engine::containers::{self, CreateRequest},
    engine::ctx::Ctx,
    kernel::process,
};

/// Run a command in a new container: a network namespace attached to a network, with
/// published ports.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    netctl run -d --name web -p 8080:80 -- python3 -m http.server 80\n  \
    netctl run --name once --network backend -- ping -c1 172.18.0.1\n\n\
    Exit status: the command's own; 125 when netctl fails, 126 when the command cannot be \
    executed, 127 when it is not found (as docker run).")]
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
    /// Static IPv4 address on the network (networks created with --subnet only)
    #[arg(long)]
    ip: Option<String>,
    /// Static IPv6 address on the network (networks created with --ipv6 and an IPv6 --subnet)
    #[arg(long)]
    ip6: Option<String>,
    /// Publish ports: [IP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]; no HOSTPORT picks
    /// a free ephemeral port; no IP publishes on every address of both families, an IPv6 IP
    /// goes in brackets ([::1]:8080:80: this host's clients only)
    #[arg(short, long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Publish every exposed port (--expose) on a free ephemeral host port
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Expose a port or a range: PORT[-END][/tcp|udp] (for -P and links)
    #[arg(long, value_name = "PORT")]
    expose: Vec<String>,
    /// Hostname inside the container (RFC 1123) [default: the short container ID]
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Another name of the container on its network (user-defined networks resolve it)
    #[arg(long = "network-alias", value_name = "ALIAS")]
    network_alias: Vec<String>,
    /// An /etc/hosts entry: NAME:IP, or NAME:host-gateway for the network's gateway
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Upstream DNS server for the container (instead of the host's)
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// Link to another container: NAME[:ALIAS] (hosts entry and variables on the default
    /// network, a name on user-defined ones)
    #[arg(long, value_name = "NAME[:ALIAS]")]
    link: Vec<String>,
    /// The command and its arguments (after --)
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `docker run`'s exit status when the failure is netctl's own.
pub const FAILED: i32 = 125;

pub fn run(args: Args) -> Result<i32> {
    if !args.detach {
        // A signal while the container is made is for the command, not the end of netctl.
        process::catch_signals();
    }
    let ctx = Ctx::open()?;
    if !args.publish.is_empty() || args.publish_all {
        if let Err(e) = crate::kernel::dataplane::socket_programs(&ctx.cfg) {
            eprintln!("netctl: warning: published ports answer other hosts only, not this host's own clients: {e}");
        }
    }
    let mut req = CreateRequest {
        name: args.name,
        network: args.network,
        ip: args.ip,
        ip6: args.ip6,
        publish: args.publish,
        command: args.command,
        detach: args.detach,
        publish_all: args.publish_all,
        expose: args.expose,
        hostname: args.hostname,
        aliases: args.network_alias,
        add_hosts: args.add_host,
        dns: args.dns,
        links: args.link,
        ..Default::default()
    };
    // An overlay's address is claimed before the lock (see `endpoints::Prepared`).
    let id = crate::model::state::random_id();
    let prepared = match &req.network {
        Some(net) => {
            crate::cluster::endpoints::prepare(&ctx, net, req.ip.as_deref(), &id, &req.name)?
        }
        None => None,
    };
    let mut tx = ctx.begin()?;
    if let Some(p) = prepared {
        req.claimed = Some(p.join(&ctx, &mut tx)?);
        req.id = Some(id);
    }
    let c = containers::create(&ctx.nl, tx.state(), &ctx.cfg, &req, ctx.group)?;
    for ep in &c.endpoints {
        tx.attach_early(&ep.host_veth);
    }
    tx.commit()?;
    let ns = c.netns_path(&ctx.cfg.state_dir);
    let dir = containers::dir(&ctx.cfg.state_dir, &c.id);
    let iso = process::Isolation::of(&ctx.cfg.state_dir, tx.locked.state(), &c)?;

    let started = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| {
            if req.detach {
                process::spawn_detached(
                    &iso,
                    &req.command,
                    &containers::log_path(&ctx.cfg.state_dir, &c.id),
                    &containers::exit_path(&ctx.cfg.state_dir, &c.id),
                )
                .map(|pid| (pid, None))
            } else {
                process::spawn_foreground(&iso, &req.command).map(|child| (child.id(), Some(child)))
            }
        });
    crate::base::timing::mark("process");
    crate::base::failpoint::step("run: process started");
    let (pid, child) = match started {
        Ok(s) => s,
        Err(e) => {
            // Nothing ran: the container goes, as if it never was.
            containers::remove(&ctx.nl, tx.state(), &ctx.cfg.state_dir, &c.name)?;
            tx.commit()?;
            let code = e
                .downcast_ref::<process::StartError>()
                .map_or(FAILED, |s| s.code);
            eprintln!("netctl: {e:#}");
            return Ok(code);
        }
    };
    let entry = tx
        .state()
        .containers
        .get_mut(&c.name)
        .expect("just created");
    entry.pid = Some(pid);
    entry.pid_start = process::start_time(pid);
    entry.boot_id = process::boot_id();
    tx.save_for_this_boot()?;
    drop(tx);

    let Some(mut child) = child else {
        println!("{}", c.id);
        return Ok(0);
    };
    let code = process::exit_code(child.wait()?);
    if let Some(ns) = &ns {
        process::stop_all(ns, std::time::Duration::ZERO);
    }
    let mut tx = ctx.begin()?;
    if containers::remove_if_same(&ctx.nl, tx.state(), &ctx.cfg.state_dir, &c.name, &c.id)? {
        tx.commit()?;
    }
    Ok(code)
}
