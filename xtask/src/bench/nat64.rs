//! NAT64 (issue: IPv6): an IPv6-only container's connections to an IPv4 server of the
//! outside namespace at 64:ff9b::X through netctl's NAT64 in eBPF, against tayga (Debian's
//! NAT64: a TUN device, its dynamic pool masqueraded by iptables, the host forwarding IPv6)
//! and against netctl's own IPv4 masquerade of the same flows from a container with IPv4.

use anyhow::Result;

use super::Bench;

const SECTION: &str = "NAT64";
const SUBNET6: &str = "fd64:6::/64";
/// tayga's own addresses and pool.
const TAYGA_V4: &str = "192.168.255.1";
const TAYGA_POOL: &str = "192.168.255.0/24";
const TAYGA_V6: &str = "fd64:ff::1";
const TUN: &str = "nctlnat64";
/// The outside namespace's servers (the core's setup starts them, on both families).
const OUT_IPERF: u16 = 5202;
const OUT_HTTP: u16 = 9000;

pub fn run(b: &mut Bench) -> Result<()> {
    if !crate::setup::is_cmd("tayga") {
        anyhow::bail!("tayga is missing: run cargo xtask setup");
    }
    b.netctl(&["sync", "-q"])?;
    b.netctl(&[
        "network",
        "create",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        SUBNET6,
        "bench64",
    ])?;
    b.netctl(&[
        "run",
        "-d",
        "--name",
        "six",
        "--network",
        "bench64",
        "--",
        "sleep",
        "100000",
    ])?;
    let tune = "sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range='1024 60999'";
    b.sb.container_sh("six", tune);
    let out4 = b.sb.outside_ip.clone();
    let x = format!("64:ff9b::{out4}");
    let lg = b.loadgen.display().to_string();
    let s = b.plan.secs;
    let subjects = [
        (
            "netctl: IPv4 masquerade from a container with IPv4",
            "client",
            out4.clone(),
        ),
        (
            "netctl: NAT64 from an IPv6-only container",
            "six",
            format!("[{x}]"),
        ),
        ("tayga (TUN) + iptables MASQUERADE", "six", format!("[{x}]")),
    ];
    let conf = b.sb.state_dir.join("tayga.conf");
    let data = b.sb.state_dir.join("tayga");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        &conf,
        format!(
            "tun-device {TUN}\nipv4-addr {TAYGA_V4}\nipv6-addr {TAYGA_V6}\nprefix 64:ff9b::/96\n\
             dynamic-pool {TAYGA_POOL}\ndata-dir {}\n",
            data.display()
        ),
    )?;
    for round in 0..b.plan.rounds {
        eprintln!("bench: NAT64, round {}/{}", round + 1, b.plan.rounds);
        for (i, (name, from, addr)) in subjects.iter().enumerate() {
            eprintln!("bench: NAT64: {name}");
            let _tayga = activate(b, i, &conf)?;
            let warm = format!("timeout 5 {lg} crr {addr}:{OUT_HTTP} 0.5 1");
            let _ = b.sb.container_sh(from, &warm);
            // A run that fails is reported and recorded as nothing (a peer's trouble does not
            // end the whole benchmark).
            let crr = format!("timeout 60 {lg} crr {addr}:{OUT_HTTP} {s} 8");
            match in_container(b, from, &crr) {
                Ok(v) => {
                    let rate = v["rate"].as_f64().unwrap_or(0.0);
                    b.extra(SECTION, "new TCP connections", name, "conn/s", rate);
                }
                Err(e) => eprintln!("bench: NAT64: {name}: {e:#}"),
            }
            let host = addr.trim_matches(['[', ']']);
            let iperf = format!("timeout 60 iperf3 -c {host} -p {OUT_IPERF} -t {s} -J");
            match in_container(b, from, &iperf) {
                Ok(v) => {
                    let gbps = v["end"]["sum_received"]["bits_per_second"]
                        .as_f64()
                        .unwrap_or(0.0)
                        / 1e9;
                    b.extra(SECTION, "TCP throughput, 1 stream", name, "Gbit/s", gbps);
                }
                Err(e) => eprintln!("bench: NAT64: {name}: {e:#}"),
            }
        }
    }
    let _ = activate(b, 0, &conf)?;
    let _ = b.sb.netctl(&["rm", "-f", "six"]);
    let _ = b.sb.netctl(&["network", "rm", "bench64"]);
    Ok(())
}

fn in_container(b: &Bench, name: &str, script: &str) -> Result<serde_json::Value> {
    let text = super::check(b.sb.container_sh(name, script), script)?;
    Ok(serde_json::from_str(text.trim())?)
}

/// Subject `i`: 0 and 1 netctl's programs; 2 tayga, with the programs off, IPv6 forwarding
/// on and tayga's pool masqueraded to the uplink (returned: tayga runs while it lives).
fn activate(
    b: &mut Bench,
    i: usize,
    conf: &std::path::Path,
) -> Result<Option<netctl_tests::Background>> {
    b.sb.detach_programs();
    let _ = b.sb.host_sh(&format!(
        "iptables-legacy -t nat -F; iptables-legacy -F; nft flush ruleset; \
         ip link del {TUN} 2>/dev/null; sysctl -qw net.ipv6.conf.all.forwarding=0"
    ));
    if i < 2 {
        b.netctl(&["sync", "-q"])?;
        return Ok(None);
    }
    let c = conf.display();
    b.host(&format!(
        "tayga --mktun -c {c} && ip link set {TUN} up && ip route add {TAYGA_POOL} dev {TUN} && \
         ip route add 64:ff9b::/96 dev {TUN} && sysctl -qw net.ipv6.conf.all.forwarding=1 && \
         iptables-legacy -t nat -A POSTROUTING -s {TAYGA_POOL} -o {} -j MASQUERADE",
        netctl_tests::UPLINK
    ))?;
    let tayga =
        b.sb.in_host("tayga")
            .args(["-n", "-c"])
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
    let tayga = netctl_tests::Background(tayga);
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Some(tayga))
}
