//! The control plane on a busy host (the state database issue): one more published port with
//! 10,000 published, `run -d -p` with 1,000 containers, `ps -a` with 10,000 containers — each
//! command timed whole, and split by `NETCTL_TIMINGS=1` into the state's and maps' part
//! (lock and read, planning, maps and links, save) and the container's own namespace and veth.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use netctl_tests::Sandbox;
use serde_json::json;

use super::Bench;

const SECTION: &str = "Control plane on a busy host";
/// Commands timed per figure (the median is reported).
const MEASURED: usize = 5;
/// The steps of `NETCTL_TIMINGS` that are the state's and the maps' work (the programs'
/// attachment to the new veth runs beside the maps and is the container's own, as its
/// namespace and veth are).
const STATE_AND_MAPS: [&str; 4] = ["lock+read", "plan", "maps", "save"];

/// A command timed whole, and its own account of where the time went.
struct Timed {
    ms: f64,
    steps: Vec<(String, f64)>,
}

impl Timed {
    fn step(&self, names: &[&str]) -> f64 {
        self.steps
            .iter()
            .filter(|(s, _)| names.contains(&s.as_str()))
            .map(|(_, ms)| ms)
            .sum()
    }
}

fn timed(sb: &Sandbox, args: &[&str]) -> Result<Timed> {
    let t = Instant::now();
    let out = sb.netctl_cmd(args).env("NETCTL_TIMINGS", "1").output()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "netctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "netctl: timings: open 1.20 ms, lock+read 0.41 ms, …"
    let stderr = String::from_utf8_lossy(&out.stderr);
    let steps = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("netctl: timings: "))
        .flat_map(|l| l.split(", "))
        .filter_map(|s| {
            let (name, ms) = s.strip_suffix(" ms")?.rsplit_once(' ')?;
            Some((name.to_string(), ms.parse().ok()?))
        })
        .collect();
    eprintln!("bench: netctl {}: {ms:.2} ms; {steps:?}", args[0]);
    Ok(Timed { ms, steps })
}

/// `run -d -p PORT:80` of a sleeping container `name` on network `busy`.
fn run_args<'a>(name: &'a str, port: &'a str) -> [&'a str; 11] {
    [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "busy",
        "-p",
        port,
        "--",
        "sleep",
        "100000",
    ]
}

/// Times [`MEASURED`] more `run -d -p` in `sb` three ways: whole, the state and maps part,
/// the container's namespace, veth and attachment (`figures` in that order): containers
/// `prefix`0… publishing `first_port`… on port 80, each after `pause`.
fn measure_runs(
    b: &mut Bench,
    sb: &Sandbox,
    figures: [&'static str; 3],
    (prefix, first_port): (&str, usize),
    pause: Duration,
) -> Result<()> {
    for k in 0..MEASURED {
        std::thread::sleep(pause);
        let (name, port) = (format!("{prefix}{k}"), format!("{}:80", first_port + k));
        let t = timed(sb, &run_args(&name, &port))?;
        let [whole, state, ns] = figures;
        b.extra(SECTION, whole, "netctl", "ms", t.ms);
        b.extra(SECTION, state, "netctl", "ms", t.step(&STATE_AND_MAPS));
        b.extra(
            SECTION,
            ns,
            "netctl",
            "ms",
            t.step(&["namespace+veth", "attach"]),
        );
    }
    Ok(())
}

pub fn run(b: &mut Bench, netctl: &Path) -> Result<()> {
    let containers = if b.plan.rounds == 1 { 100 } else { 1000 };
    more_ports(b, netctl)?;
    many_containers(b, netctl, containers)?;
    listing(b, netctl)
}

/// One more port on a host that publishes 10,000 (one container with 10,000 ports).
fn more_ports(b: &mut Bench, netctl: &Path) -> Result<()> {
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    sb.netctl_ok(&["network", "create", "--subnet", "10.88.0.0/16", "busy"]);
    eprintln!("bench: busy host: 10,000 published ports");
    sb.netctl_ok(&run_args("many", "40000-49999:40000-49999"));
    measure_runs(
        b,
        &sb,
        [
            "one more port with 10,000 published: run -d -p",
            "one more port with 10,000 published: state and maps",
            "one more port with 10,000 published: namespace, veth and attach",
        ],
        ("m", 30000),
        Duration::ZERO,
    )
}

/// `run -d -p` on a host with `n` containers (each with a published port).
fn many_containers(b: &mut Bench, netctl: &Path, n: usize) -> Result<()> {
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    sb.netctl_ok(&["network", "create", "--subnet", "10.89.0.0/16", "busy"]);
    eprintln!("bench: busy host: {n} containers first");
    for k in 0..n {
        let (name, port) = (format!("bg{k}"), format!("{}:80", 20000 + k));
        sb.netctl_ok(&run_args(&name, &port));
    }
    let figures = if n == 1000 {
        [
            "run -d -p with 1,000 containers",
            "run -d -p with 1,000 containers: state and maps",
            "run -d -p with 1,000 containers: namespace, veth and attach",
        ]
    } else {
        [
            "run -d -p with 100 containers",
            "run -d -p with 100 containers: state and maps",
            "run -d -p with 100 containers: namespace, veth and attach",
        ]
    };
    measure_runs(b, &sb, figures, ("m", 30000), Duration::ZERO)?;
    // The same host with the daemon's spare namespaces (`NETCTL_SPARES`), each `run` arriving
    // once the daemon has replaced the spare the previous one took (back to back, `run`s
    // drain the spares and wait for the kernel as above).
    let mut sb = sb;
    sb.env("NETCTL_SPARES", "4");
    sb.netctl_ok(&["network", "create", "--subnet", "10.91.0.0/24", "spared"]);
    let figures = if n == 1000 {
        [
            "run -d -p with 1,000 containers, NETCTL_SPARES=4",
            "run -d -p with 1,000 containers, NETCTL_SPARES=4: state and maps",
            "run -d -p with 1,000 containers, NETCTL_SPARES=4: namespace, veth and attach",
        ]
    } else {
        [
            "run -d -p with 100 containers, NETCTL_SPARES=4",
            "run -d -p with 100 containers, NETCTL_SPARES=4: state and maps",
            "run -d -p with 100 containers, NETCTL_SPARES=4: namespace, veth and attach",
        ]
    };
    measure_runs(b, &sb, figures, ("s", 30100), Duration::from_millis(300))
}

/// `ps -a` with 10,000 containers: exited ones (nothing of them in the kernel), written as an
/// older netctl's `state.json` and moved into the database by a first command.
fn listing(b: &mut Bench, netctl: &Path) -> Result<()> {
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    let containers: serde_json::Map<String, serde_json::Value> = (0..10_000)
        .map(|k| {
            let name = format!("c{k}");
            let c = json!({
                "id": format!("{k:08x}{}", "0".repeat(56)), "name": name,
                "command": ["sleep", "100000"], "detached": true, "created": 1_700_000_000u64 + k,
                "pid": null, "pid_start": null, "host_network": true,
                "endpoints": [], "ports": [],
            });
            (name, c)
        })
        .collect();
    let state = json!({"version": 1, "networks": {}, "containers": containers});
    std::fs::create_dir_all(&sb.state_dir)?;
    std::fs::write(sb.state_dir.join("state.json"), state.to_string())?;
    sb.netctl_ok(&["network", "create", "--subnet", "10.90.0.0/24", "moved"]);
    for _ in 0..MEASURED {
        let t = timed(&sb, &["ps", "-a"])?;
        b.extra(
            SECTION,
            "ps -a with 10,000 containers",
            "netctl",
            "ms",
            t.ms,
        );
    }
    Ok(())
}
