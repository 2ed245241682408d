use anyhow::{bail, Result};
use serde_json::json;

use crate::{ctx::Ctx, ports, process, state::Container};

/// List containers
#[derive(clap::Args)]
pub struct Args {
    /// Show all containers (default: only running ones)
    #[arg(short, long)]
    all: bool,
    /// Only print container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table or json (one object per line)
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn status(c: &Container) -> &'static str {
    if process::is_running(c.pid, c.pid_start) {
        "running"
    } else if c.pid.is_some() {
        "exited"
    } else {
        "created"
    }
}

/// The command on one line, cut at 40 characters (as `docker ps` does without --no-trunc).
fn short_command(argv: &[String]) -> String {
    let line = argv
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > 40 {
        format!("{}…", line.chars().take(39).collect::<String>())
    } else {
        line
    }
}

pub fn run(args: Args) -> Result<i32> {
    let state = Ctx::open_unchecked()?.store.snapshot()?;
    let shown: Vec<&Container> = state
        .containers
        .values()
        .filter(|c| args.all || status(c) == "running")
        .collect();
    let networks = |c: &Container| -> String {
        if c.endpoints.is_empty() {
            return "none".into();
        }
        c.endpoints
            .iter()
            .map(|e| e.network.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let ips = |c: &Container| {
        c.endpoints
            .iter()
            .map(|e| e.ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let port_list = |c: &Container| {
        c.ports
            .iter()
            .map(|p| {
                format!(
                    "{}:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.proto
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if args.quiet {
        shown.iter().for_each(|c| println!("{}", &c.id[..12]));
        return Ok(0);
    }
    match args.format.as_str() {
        "table" => {
            println!(
                "{:<14}{:<16}{:<10}{:<16}{:<18}{:<30}COMMAND",
                "CONTAINER ID", "NAME", "STATUS", "NETWORKS", "IP ADDRESS", "PORTS"
            );
            for c in shown {
                println!(
                    "{:<14}{:<16}{:<10}{:<16}{:<18}{:<30}{}",
                    &c.id[..12],
                    c.name,
                    status(c),
                    networks(c),
                    ips(c),
                    port_list(c),
                    short_command(&c.command)
                );
            }
        }
        "json" => {
            for c in shown {
                let v = json!({
                    "ID": &c.id[..12],
                    "Names": c.name,
                    "State": status(c),
                    "Pid": c.pid,
                    "Networks": networks(c),
                    "IPAddresses": c.endpoints.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(),
                    "Ports": port_list(c),
                    "PortMappings": c.ports.iter().map(ports::describe).collect::<Vec<_>>(),
                    "Command": c.command.join(" "),
                });
                println!("{v}");
            }
        }
        other => bail!("unknown format {other:?}: use table or json"),
    }
    Ok(0)
}
