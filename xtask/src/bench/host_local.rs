//! Host-local clients (issue: host access): a process on the host dialling a published port
//! on 127.0.0.1, against the same client dialling the container directly and against Docker's
//! userland proxy (`docker-proxy`, Debian's docker.io), plus what the socket programs cost a
//! connect that is not to a published port.

use std::time::Duration;

use anyhow::Result;

use super::{Bench, IPERF_PORT, SERVER_IP};

const SECTION: &str = "host-local clients";
const PROXY_HTTP: u16 = 18080;
const PROXY_IPERF: u16 = 15201;
const DOCKER_PROXY: &str = "/usr/sbin/docker-proxy";

pub fn run(b: &mut Bench) -> Result<()> {
    b.netctl(&["sync", "-q"])?;
    b.host("sysctl -qw net.ipv4.tcp_tw_reuse=1")?;
    let lg = b.loadgen.display().to_string();
    let proxies = if std::path::Path::new(DOCKER_PROXY).exists() {
        // docker-proxy reports readiness on fd 3 (a pipe from dockerd) and closes it: give
        // it one, or it closes its own listener.
        let spawn = |port: u16, cport: u16| {
            b.sb.in_host("sh")
                .arg("-c")
                .arg(format!(
                    "exec {DOCKER_PROXY} -proto tcp -host-ip 127.0.0.1 -host-port {port} \
                     -container-ip {SERVER_IP} -container-port {cport} 3>/dev/null"
                ))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
        };
        let p = vec![
            netctl_tests::Background(spawn(PROXY_HTTP, 80)?),
            netctl_tests::Background(spawn(PROXY_IPERF, IPERF_PORT)?),
        ];
        std::thread::sleep(Duration::from_millis(300));
        p
    } else {
        eprintln!("bench: {DOCKER_PROXY} not found (cargo xtask setup installs docker.io); no docker-proxy figures");
        Vec::new()
    };
    let s = b.plan.secs;
    let subjects: Vec<(&str, String, u16, u16)> = {
        let mut v = vec![
            (
                "direct to the container (no translation)",
                SERVER_IP.to_string(),
                80,
                IPERF_PORT,
            ),
            (
                "netctl: 127.0.0.1:PORT (socket programs)",
                "127.0.0.1".into(),
                super::HTTP_PORT,
                IPERF_PORT,
            ),
        ];
        if !proxies.is_empty() {
            v.push((
                "docker-proxy: 127.0.0.1:PORT",
                "127.0.0.1".into(),
                PROXY_HTTP,
                PROXY_IPERF,
            ));
        }
        v
    };
    for round in 0..b.plan.rounds {
        eprintln!(
            "bench: host-local clients, round {}/{}",
            round + 1,
            b.plan.rounds
        );
        for (name, addr, http, iperf) in &subjects {
            let cpu0 = super::busy_cpu_secs();
            let v = b.host_json(&format!("timeout 60 {lg} crr {addr}:{http} {s} 8"))?;
            let cpu = super::busy_cpu_secs() - cpu0;
            let ops = v["ops"].as_f64().unwrap_or(0.0);
            let rate = v["rate"].as_f64().unwrap_or(0.0);
            b.extra(SECTION, "new TCP connections", name, "conn/s", rate);
            if ops > 0.0 {
                // Client, server and whatever translates: all of the machine's CPU time.
                let per = cpu / (ops / 1e4);
                b.extra(
                    SECTION,
                    "CPU per 10k connections (all processes)",
                    name,
                    "s",
                    per,
                );
            }
            let v = b.host_json(&format!("timeout 60 {lg} rr {addr}:{http} {s} 4"))?;
            b.extra(
                SECTION,
                "TCP request/response p99",
                name,
                "µs",
                v["p99_us"].as_f64().unwrap_or(0.0),
            );
            let v = b.host_json(&format!("timeout 60 iperf3 -c {addr} -p {iperf} -t {s} -J"))?;
            let gbps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9;
            b.extra(SECTION, "TCP throughput, 1 stream", name, "Gbit/s", gbps);
        }
        // What the programs cost a connect they do not translate: the same direct client with
        // the socket programs detached (their links unpinned), then attached again.
        let figure = "new TCP connections, not to a published port";
        let links =
            b.sb.pinned_map("x")
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("links");
        for attached in [false, true] {
            if !attached {
                for e in std::fs::read_dir(&links)?.flatten() {
                    if e.file_name().to_string_lossy().starts_with("sock_") {
                        std::fs::remove_file(e.path())?;
                    }
                }
            } else {
                b.netctl(&["sync", "-q"])?;
            }
            let name = if attached {
                "socket programs attached"
            } else {
                "socket programs detached"
            };
            let v = b.host_json(&format!("timeout 60 {lg} crr {SERVER_IP}:80 {s} 8"))?;
            b.extra(
                SECTION,
                figure,
                name,
                "conn/s",
                v["rate"].as_f64().unwrap_or(0.0),
            );
        }
    }
    drop(proxies);
    Ok(())
}
