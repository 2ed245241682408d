//! `netctl info`: what this kernel can do, which path netctl takes for each feature and why,
//! and where the programs are attached (as `docker info` and `cilium status --verbose`).

use anyhow::Result;
use serde_json::json;

use crate::{
    base::config::{Config, XdpMode},
    kernel::dataplane::{
        features::{self, Features, FEATURES},
        Dataplane,
    },
};

/// Show the kernel's features, the datapath's choices and the attached programs
#[derive(clap::Args)]
pub struct Args {
    /// Output format: text or json
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

pub fn run(args: Args) -> Result<i32> {
    crate::engine::ctx::require_root()?;
    let cfg = Config::from_env()?;
    let f = Features::detect(&cfg.features_deny)?;
    let dp = Dataplane::open_existing(&cfg);
    let info = json!({
        "Kernel": features::kernel_release(),
        "Features": FEATURES.iter().map(|x| json!({
            "Name": x.name,
            "Present": f.has(x.name),
            "Probed": f.probed(x.name),
            "Denied": f.is_denied(x.name),
            "Since": x.since,
            "UsedFor": x.used_for,
            "Fallback": x.fallback,
        })).collect::<Vec<_>>(),
        "Required": f.check_required().err().map(|e| e.to_string()),
        "Paths": paths(&cfg, &f),
        "Attached": dp.as_ref().map(attached).unwrap_or_default(),
        "Cluster": cluster(&cfg),
    });
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(0);
    }
    println!("Kernel: {}", info["Kernel"].as_str().unwrap_or_default());
    if let Some(e) = info["Required"].as_str() {
        println!("Unusable: {e}");
    }
    println!("\nFEATURE              PRESENT  SINCE  USED FOR");
    for x in &FEATURES {
        let state = match (f.probed(x.name), f.is_denied(x.name)) {
            (_, true) => "denied",
            (true, false) => "yes",
            (false, false) => "no",
        };
        println!("{:<20} {:<8} {:<6} {}", x.name, state, x.since, x.used_for);
    }
    if let Some(c) = info["Cluster"].as_object() {
        println!(
            "\nCluster store: {} ({})",
            c["Store"].as_str().unwrap_or_default(),
            c["Security"].as_str().unwrap_or_default()
        );
        println!("Agent: {}", c["Agent"].as_str().unwrap_or_default());
        println!(
            "Encrypted overlays: {}",
            c["EncryptedOverlays"].as_str().unwrap_or_default()
        );
        if c["Fenced"] == true {
            println!(
                "Overlay traffic: fenced (the lease lapsed; until this host is registered again)"
            );
        }
        for conflict in c["AddressConflicts"].as_array().into_iter().flatten() {
            println!(
                "Address conflict: {}",
                conflict.as_str().unwrap_or_default()
            );
        }
    }
    println!("\nPATH                 CHOSEN");
    for p in info["Paths"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {}",
            p["What"].as_str().unwrap_or_default(),
            p["Chosen"].as_str().unwrap_or_default()
        );
    }
    println!("\nINTERFACE            PROGRAM              HOW");
    for a in info["Attached"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<20} {}",
            a["Interface"].as_str().unwrap_or_default(),
            a["Program"].as_str().unwrap_or_default(),
            a["How"].as_str().unwrap_or_default()
        );
    }
    Ok(0)
}

/// One line per choice: what was chosen and, where it is a fallback, why.
fn paths(cfg: &Config, f: &Features) -> Vec<serde_json::Value> {
    let why = |name: &str| {
        if f.is_denied(name) {
            format!("{name} denied by NETCTL_FEATURES_DENY")
        } else {
            format!("the kernel has no {name}")
        }
    };
    let choose = |name: &str, yes: &str, no: &str| {
        if f.has(name) {
            yes.to_string()
        } else {
            format!("{no} ({})", why(name))
        }
    };
    let xdp = match cfg.xdp {
        _ if !f.has(features::XDP) => format!(
            "off: TC does all the uplink's work ({})",
            why(features::XDP)
        ),
        _ if !f.has(features::XDP_ADJUST_META) => format!(
            "off: TC does all the uplink's work ({})",
            why(features::XDP_ADJUST_META)
        ),
        XdpMode::Off => "off (NETCTL_XDP=off)".to_string(),
        XdpMode::Auto => "NAT in XDP on physical NICs, TC on virtual devices".to_string(),
        XdpMode::Native => "native XDP on every uplink (NETCTL_XDP=native)".to_string(),
        XdpMode::Generic => "generic XDP on every uplink (NETCTL_XDP=generic)".to_string(),
    };
    let sock = match f.socket_programs() {
        Ok(()) => "attached at the cgroup v2 root, scoped to this instance's namespaces".into(),
        Err(e) => format!("not loaded: published ports answer other hosts only ({e})"),
    };
    let flows = match [features::LOOP, features::ATOMICS]
        .into_iter()
        .find(|n| !f.has(n))
    {
        None => "bpf_loop over the whole NAT port range, atomic flag updates".to_string(),
        Some(missing) => format!(
            "the _compat twins: 32 NAT ports from a random start, plain flag updates ({})",
            why(missing)
        ),
    };
    let rows = [
        (
            "tc attach",
            choose(features::TCX, "tcx links", "netlink cls_bpf filters"),
        ),
        ("uplink xdp", xdp),
        ("flow programs", flows),
        ("host-local ports", sock),
        (
            "kernel drops",
            choose(
                features::KFREE_SKB_REASON,
                "traced by `trace --drops`",
                "not traced: netctl's own drops only",
            ),
        ),
    ];
    rows.into_iter()
        .map(|(what, chosen)| json!({ "What": what, "Chosen": chosen }))
        .collect()
}

fn attached(dp: &Dataplane) -> Vec<serde_json::Value> {
    dp.attachments()
        .into_iter()
        .map(|(program, ifindex, how)| {
            let name = match ifindex {
                0 => "cgroup root".to_string(),
                i => nix::net::if_::if_indextoname(i)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("ifindex {i}")),
            };
            json!({ "Interface": name, "Ifindex": ifindex, "Program": program, "How": how })
        })
        .collect()
}

/// The cluster membership as the daemon's agent last reported it (null: not a member).
fn cluster(cfg: &Config) -> serde_json::Value {
    let Some(c) = &cfg.cluster else {
        return serde_json::Value::Null;
    };
    let daemon = crate::kernel::pidfile::running(&cfg.state_dir).is_some();
    let status = crate::cluster::agent::read_status(&cfg.state_dir);
    let now = crate::model::state::now();
    let age = status
        .as_ref()
        .filter(|s| s.renewed > 0)
        .map(|s| now.saturating_sub(s.renewed));
    // Renewed within the lease's time: the agent is alive and this host's keys are held.
    let running = daemon
        && status.as_ref().is_some_and(|s| s.connected)
        && age.is_some_and(|a| a <= c.lease_ttl as u64);
    let agent = match (&status, daemon) {
        (_, false) => "not running (no daemon: it starts with the first network)".to_string(),
        (Some(s), true) if running => format!(
            "connected, lease {} renewed {} s ago",
            s.lease,
            age.unwrap_or_default()
        ),
        (Some(s), true) => format!(
            "not connected: {}",
            s.error
                .as_deref()
                .unwrap_or("no renewal within the lease time")
        ),
        (None, true) => "starting".to_string(),
    };
    json!({
        "Store": c.display,
        "Security": c.security.describe(),
        "Advertise": c.advertise.to_string(),
        "AgentRunning": running,
        "Agent": agent,
        "Lease": status.as_ref().map(|s| s.lease.clone()),
        "LeaseRenewed": status.as_ref().filter(|s| s.renewed > 0).map(|s| crate::model::text::rfc3339(s.renewed)),
        "SecondsSinceRenewal": age,
        "Fenced": status.as_ref().is_some_and(|s| s.fenced),
        "AddressConflicts": status.as_ref().map(|s| s.conflicts.clone()).unwrap_or_default(),
        "EncryptedOverlays": encryption(cfg),
    })
}

/// How this host would carry encrypted overlays (`-o encrypted`), or why it cannot.
fn encryption(cfg: &Config) -> String {
    use crate::kernel::wireguard::{transport, Transport};
    match transport(&cfg.wireguard) {
        Ok(Transport::Kernel) => format!("the kernel's WireGuard, UDP {}", cfg.wireguard.port),
        Ok(Transport::Userspace) => format!(
            "WireGuard in userspace (the kernel has none; the daemon serves a TUN device), UDP {}",
            cfg.wireguard.port
        ),
        Err(e) => format!("unavailable: {e:#}"),
    }
}
