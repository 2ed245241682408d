use std::io::Write;

use anyhow::{bail, Result};
use serde_json::json;

use crate::{
    engine::containers::Status,
    engine::ctx::Ctx,
    model::ports,
    model::state::{self, short, Container},
};

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

/// Docker's STATUS column: "Up 5 minutes", "Exited (0) 3 seconds ago", "Created".
fn status_text(s: Status, created: u64) -> String {
    let now = state::now();
    match s {
        Status::Running => format!("Up {}", human(now.saturating_sub(created))),
        Status::Exited(code, Some(at)) => {
            format!("Exited ({code}) {} ago", human(now.saturating_sub(at)))
        }
        Status::Exited(code, None) => format!("Exited ({code})"),
        Status::Created => "Created".into(),
    }
}

/// A duration the way Docker's ps words it.
fn human(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        0 => "Less than a second".into(),
        1..=59 => plural(secs, "second"),
        60..=119 => "About a minute".into(),
        120..=3599 => plural(secs / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => plural(secs / 3600, "hour"),
        172_800..=1_209_599 => plural(secs / 86400, "day"),
        1_209_600..=5_183_999 => plural(secs / 604_800, "week"),
        5_184_000..=63_071_999 => plural(secs / 2_592_000, "month"),
        _ => plural(secs / 31_536_000, "year"),
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

/// `text` left-aligned in a column of `width` characters (what `{:<width}` does, without
/// the formatter's character-by-character padding: 10,000 lines have 60,000 cells).
fn cell(line: &mut String, text: &str, width: usize) {
    const SPACES: &str = "                              ";
    line.push_str(text);
    let pad = width.saturating_sub(text.chars().count());
    line.push_str(&SPACES[..pad.min(SPACES.len())]);
}

pub fn run(args: Args) -> Result<i32> {
    let (cfg, state) = Ctx::read_state()?;
    let dirs: std::collections::HashSet<std::ffi::OsString> =
        std::fs::read_dir(crate::model::paths::containers_dir(&cfg.state_dir))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
    let shown: Vec<(&Container, Status)> = state
        .containers
        .values()
        .map(|c| {
            let has_dir = dirs.contains(std::ffi::OsStr::new(&c.id));
            (c, Status::of_with(&cfg.state_dir, c, has_dir))
        })
        .filter(|(_, s)| args.all || *s == Status::Running)
        .collect();
    let networks = |c: &Container| -> String {
        if c.host_network {
            return "host".into();
        }
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
            .filter_map(primary_address)
            .collect::<Vec<_>>()
            .join(",")
    };
    // Docker's PORTS: published ports, then exposed ones nobody publishes ("80/tcp").
    let port_list = |c: &Container| {
        let published = c.ports.iter().map(|p| {
            format!(
                "{}->{}/{}",
                crate::model::ports::host_port(p.host_ip, p.host_port),
                p.container_port,
                p.proto
            )
        });
        let exposed = c
            .options
            .exposed
            .iter()
            .filter(|e| {
                !c.ports
                    .iter()
                    .any(|p| p.container_port == e.port && p.proto == e.proto)
            })
            .map(|e| format!("{}/{}", e.port, e.proto));
        published.chain(exposed).collect::<Vec<_>>().join(", ")
    };
    // One write for the listing, not one per line (10,000 containers are 10,000 lines).
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.quiet {
        for (c, _) in &shown {
            writeln!(out, "{}", short(&c.id))?;
        }
        out.flush()?;
        return Ok(0);
    }
    match args.format.as_str() {
        "table" => {
            writeln!(
                out,
                "{:<14}{:<16}{:<26}{:<16}{:<18}{:<30}COMMAND",
                "CONTAINER ID", "NAME", "STATUS", "NETWORKS", "IP ADDRESS", "PORTS"
            )?;
            let mut line = String::new();
            for (c, st) in shown {
                line.clear();
                cell(&mut line, short(&c.id), 14);
                cell(&mut line, &c.name, 16);
                cell(&mut line, &status_text(st, c.created), 26);
                cell(&mut line, &networks(c), 16);
                cell(&mut line, &ips(c), 18);
                cell(&mut line, &port_list(c), 30);
                line.push_str(&short_command(&c.command));
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
        }
        "json" => {
            for (c, st) in shown {
                let v = json!({
                    "ID": short(&c.id),
                    "Names": c.name,
                    "State": st.word(),
                    "Status": status_text(st, c.created),
                    "ExitCode": match st { Status::Exited(code, _) => Some(code), _ => None },
                    "Pid": c.pid,
                    "Networks": networks(c),
                    "IPAddresses": c.endpoints.iter().filter_map(primary_address).collect::<Vec<_>>(),
                    "Ports": port_list(c),
                    "PortMappings": c.ports.iter().map(ports::describe).collect::<Vec<_>>(),
                    "Command": c.command.join(" "),
                });
                writeln!(out, "{v}")?;
            }
        }
        other => bail!("unknown format {other:?}: use table or json"),
    }
    out.flush()?;
    // The process ends here: freeing 10,000 containers one by one would cost more than a
    // tenth of the listing.
    std::mem::forget(state);
    Ok(0)
}

/// The address `ps` shows for an endpoint: its IPv4 address, on an IPv6-only network its
/// IPv6 one.
fn primary_address(e: &crate::model::state::Endpoint) -> Option<String> {
    e.ip.map(|ip| ip.to_string())
        .or_else(|| e.ip6.map(|ip| ip.to_string()))
}
