//! dockerd with netctl's driver against dockerd's own bridge driver (iptables DNAT, no
//! userland proxy), the same dockerd: how long `docker run -d -p` takes, and new connections
//! per second through the published port with 1 and 1,000 published ports.

use std::{path::Path, time::Instant};

use anyhow::{bail, Context, Result};
use netctl_tests::{docker::Docker, Sandbox};
use serde_json::Value;

use super::Bench;

const SECTION: &str = "dockerd: netctl driver vs Docker's bridge";
const NETCTL: &str = "netctl driver (eBPF)";
const BRIDGE: &str = "Docker bridge driver (iptables)";
/// The filler published ports beside the measured one.
const FILLER: usize = 999;

struct Subject {
    name: &'static str,
    network: &'static str,
    /// The measured published port, and the first of the filler range.
    port: u16,
    filler_base: u16,
}

const SUBJECTS: [Subject; 2] = [
    Subject {
        name: NETCTL,
        network: "nnet",
        port: 8081,
        filler_base: 20000,
    },
    Subject {
        name: BRIDGE,
        network: "dnet",
        port: 8082,
        filler_base: 22000,
    },
];

pub fn run(b: &mut Bench, netctl: &Path) -> Result<()> {
    if !Path::new(netctl_tests::docker::DOCKERD).exists() {
        bail!("dockerd is missing: run cargo xtask setup");
    }
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    let d = Docker::start(&sb, true);
    let drv = d.driver.clone();
    d.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--subnet",
        "10.85.0.0/16",
        "nnet",
    ]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.86.0.0/16",
        "dnet",
    ]);
    let lg = b.loadgen.display().to_string();
    let lib_mounts = ["-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro", "-v"];
    let loadgen_mount = format!("{lg}:/loadgen:ro");

    // Start time: run -d -p on each network, interleaved.
    for round in 0..b.plan.rounds.max(3) {
        for s in &SUBJECTS {
            let name = format!("start{round}");
            let spec = format!("{}:80", s.port);
            let t = Instant::now();
            d.ok(&[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                s.network,
                "-p",
                &spec,
                "busybox:local",
                "sleep",
                "600",
            ]);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            b.extra(SECTION, "docker run -d -p 8080:80", s.name, "ms", ms);
            d.ok(&["rm", "-f", &name]);
        }
    }

    // The servers: loadgen in a busybox container (the host's libraries mounted).
    for s in &SUBJECTS {
        let spec = format!("{}:80", s.port);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            s.network,
            "--network",
            s.network,
            "-p",
            &spec,
        ];
        args.extend(lib_mounts);
        args.extend([
            loadgen_mount.as_str(),
            "busybox:local",
            "/loadgen",
            "serve",
            "80",
        ]);
        d.ok(&args);
    }
    let tune = "sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range='1024 60999'";
    sb.outside_sh(tune);
    for ports in [1usize, 1 + FILLER] {
        if ports > 1 {
            for s in &SUBJECTS {
                let range = format!(
                    "{}-{}:{}-{}",
                    s.filler_base,
                    s.filler_base as usize + FILLER - 1,
                    s.filler_base,
                    s.filler_base as usize + FILLER - 1
                );
                let name = format!("filler-{}", s.network);
                d.ok(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--network",
                    s.network,
                    "-p",
                    &range,
                    "busybox:local",
                    "sleep",
                    "100000",
                ]);
            }
        }
        let figure: &'static str = if ports == 1 {
            "new connections/s, 1 published port"
        } else {
            "new connections/s, 1,000 published ports"
        };
        for round in 0..b.plan.rounds {
            eprintln!(
                "bench: dockerd, {ports} ports, round {}/{}",
                round + 1,
                b.plan.rounds
            );
            for s in &SUBJECTS {
                let target = format!("{}:{}", sb.host_ip, s.port);
                let out = sb
                    .in_outside(&lg)
                    .args(["crr", &target, &b.plan.secs.to_string(), "8"])
                    .output()?;
                let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
                    format!("loadgen: {}", String::from_utf8_lossy(&out.stderr))
                })?;
                b.extra(
                    SECTION,
                    figure,
                    s.name,
                    "conn/s",
                    v["rate"].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
    Ok(())
}
