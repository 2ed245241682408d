//! Command line: clap definitions and dispatch. Each verb lives in its own module.

mod exec;
mod info;
mod inspect;
mod network;
pub mod pcap;
mod port;
mod ps;
mod rm;
mod run;
mod stats;
mod sync;
mod trace;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "netctl",
    version,
    about = "Docker-style container networks with an eBPF dataplane (no iptables)",
    long_about = "Docker-style container networks with an eBPF dataplane (no iptables).\n\n\
        netctl acts on the network namespace it runs in. State lives in NETCTL_STATE_DIR \
        (default /var/lib/netctl), pinned eBPF objects in NETCTL_BPFFS (default \
        /sys/fs/bpf/netctl). Uplinks are every interface that is not netctl's own nor a bridge or bond port, or NETCTL_UPLINKS \
        (comma list) to restrict them. NETCTL_XDP=auto|native|generic|off picks how XDP attaches (auto: \
        native on physical NICs, TC only on veth and other virtual uplinks). \
        NETCTL_FASTPATH=off routes published-port traffic through the bridge and host stack. \
        NETCTL_CT_ENTRIES sizes connection tracking (default 262144) when the maps are made; \
        new flows are refused past 7/8 of it, and past NETCTL_CT_ENDPOINT_ENTRIES (default a \
        quarter of it) for one container. \
        NETCTL_ICC=false makes the default network without inter-container communication \
        (dockerd's --icc=false). NETCTL_RESOLV_CONF names the host's resolver configuration \
        (default /etc/resolv.conf): containers' upstream DNS servers. NETCTL_SPARES=N (default 0) has the daemon keep N \
        spare container namespaces ready, each with its veth (`spareXXXXXXXX` on the host) and \
        programs attached (kernels with TCX), so that `run` need not wait for the kernel's \
        attachment (15-40 ms)."
)]
pub struct Cli {
    /// The cluster store for overlay networks: etcd://IP:PORT[,IP:PORT...] (dockerd's
    /// --cluster-store; also NETCTL_CLUSTER_STORE)
    #[arg(long, global = true, value_name = "URL")]
    cluster_store: Option<String>,
    /// This host's underlay address, where other hosts send its containers' traffic (also
    /// NETCTL_CLUSTER_ADVERTISE)
    #[arg(long, global = true, value_name = "IP")]
    cluster_advertise: Option<String>,
    /// How to reach the cluster store, repeatable (also NETCTL_CLUSTER_STORE_OPT, comma-
    /// separated): kv.cacertfile=CA.pem (TLS), kv.certfile=CERT.pem and kv.keyfile=KEY.pem
    /// (client certificate), kv.username=NAME and kv.passwordfile=FILE (etcd user), or
    /// kv.insecure=true (plain http)
    #[arg(long, global = true, value_name = "KEY=VALUE")]
    cluster_store_opt: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage networks
    #[command(subcommand)]
    Network(network::Command),
    /// Run a command in a new container
    Run(run::Args),
    /// Run a command in a running container's network namespace
    Exec(exec::Args),
    /// List containers
    Ps(ps::Args),
    /// Show containers in detail (JSON, Docker's shape)
    Inspect(inspect::Args),
    /// List a container's published ports
    Port(port::Args),
    /// Remove containers
    Rm(rm::Args),
    /// Make the kernel match the saved state: programs, attachments, bridges, veths, maps
    Sync(sync::Args),
    /// Counters: per hook, per container, per network, per published port; drops by reason
    Stats(stats::Args),
    /// Stream flows, drops and packets from the datapath, live (or to a pcapng file)
    Trace(trace::Args),
    /// Show the kernel's features, the datapath's choices and where programs are attached
    Info(info::Args),
    /// Serve dockerd as its network and IPAM driver `netctl` (foreground)
    #[command(after_help = "Start it before dockerd needs it, then:\n  \
        docker network create -d netctl --ipam-driver netctl --subnet 10.20.0.0/24 web\n  \
        docker run -d --network web -p 8080:80 IMAGE\n\n\
        With --socket elsewhere, tell dockerd with a spec file holding unix://PATH, named\n\
        after the driver: /etc/docker/plugins/NAME.spec (then `-d NAME`).\n\
        dockerd should run with --iptables=false --ip-masq=false --userland-proxy=false:\n\
        netctl's eBPF does the NAT.")]
    DockerPlugin {
        /// The unix socket dockerd connects to; its file name is the driver's name
        #[arg(long, default_value = crate::base::config::DOCKER_PLUGIN_SOCKET)]
        socket: std::path::PathBuf,
    },
    /// (internal) The embedded DNS resolver and watchers; started and stopped by netctl itself
    #[command(hide = true)]
    Daemon,
    /// (debugging) Print the saved state as one JSON document, as one moment of the database
    #[command(hide = true)]
    StateDump,
    /// (internal) Watches a detached container's process and records its exit status
    #[command(hide = true)]
    ContainerShim {
        #[arg(long)]
        netns: Option<std::path::PathBuf>,
        #[arg(long)]
        etc: Option<std::path::PathBuf>,
        #[arg(long)]
        hostname: Option<String>,
        exit_file: std::path::PathBuf,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

/// The long-running front-ends that `netctl` also starts, handed in by the binary so the CLI
/// imports neither.
pub struct Servers {
    pub daemon: fn() -> anyhow::Result<i32>,
    pub docker_plugin: fn(&std::path::Path) -> anyhow::Result<i32>,
}

/// Runs the CLI and returns the process exit code. Errors print as one line on stderr.
pub fn main(servers: Servers) -> i32 {
    crate::base::failpoint::init();
    crate::base::timing::mark("start");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // The flags win over the environment; everything below reads the environment.
    for (flag, var) in [
        (&cli.cluster_store, "NETCTL_CLUSTER_STORE"),
        (&cli.cluster_advertise, "NETCTL_CLUSTER_ADVERTISE"),
    ] {
        if let Some(v) = flag {
            std::env::set_var(var, v);
        }
    }
    if !cli.cluster_store_opt.is_empty() {
        std::env::set_var("NETCTL_CLUSTER_STORE_OPT", cli.cluster_store_opt.join(","));
    }
    let result = match cli.command {
        Command::Network(c) => network::run(c),
        // docker run's convention: 125 when the failure is the runner's, not the command's.
        Command::Run(a) => run::run(a).or_else(|e| {
            eprintln!("netctl: {}", crate::model::text::one_line(&e));
            Ok(run::FAILED)
        }),
        Command::ContainerShim {
            netns,
            etc,
            hostname,
            exit_file,
            command,
        } => {
            let iso = crate::kernel::process::Isolation {
                netns,
                etc_dir: etc,
                hostname,
                env: Vec::new(), // in the shim's own environment
            };
            Ok(crate::kernel::process::shim(&iso, &exit_file, &command))
        }
        Command::Daemon => (servers.daemon)(),
        Command::StateDump => state_dump(),
        Command::DockerPlugin { socket } => (servers.docker_plugin)(&socket),
        Command::Exec(a) => exec::run(a),
        Command::Ps(a) => ps::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Port(a) => port::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Sync(a) => sync::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Info(a) => info::run(a),
    };
    crate::base::timing::report();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netctl: {}", crate::model::text::one_line(&e));
            1
        }
    }
}

fn state_dump() -> anyhow::Result<i32> {
    let state = crate::engine::ctx::Ctx::open_unchecked()?
        .store
        .snapshot()?;
    println!("{}", serde_json::to_string(&state)?);
    Ok(0)
}

/// Help and version go to stdout with status 0; a usage error is one line naming what is
/// wrong (Docker's "unknown flag: --x" for an unknown option) and the help to read, with
/// status 125 for `run` (as `docker run`) and 2 otherwise.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            2
        } else {
            0
        };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verb: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .take(2)
        .map(String::as_str)
        .collect();
    let verb = match verb.as_slice() {
        ["network", sub, ..] => format!("network {sub}"),
        [v, ..] => v.to_string(),
        [] => String::new(),
    };
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let what = match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            format!("unknown flag: {}", arg.split('=').next().unwrap_or(&arg))
        }
        _ => e
            .render()
            .to_string()
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ")
            .to_string(),
    };
    eprintln!("netctl {verb}: {what} (see `netctl {verb} --help`)");
    if verb == "run" {
        run::FAILED
    } else {
        2
    }
}
