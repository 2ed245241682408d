//! IPv6 (issue: IPv6): an outside client reaching a published port on the host's IPv6
//! address through netctl's DNAT66, against the same client routed to the container's own
//! address by the kernel with nothing in the way (plain IPv6 routing, the baseline), and
//! against Docker's ip6tables layout (DNAT to the container, FORWARD chains) — at 10,000
//! published ports, as the core's figures are taken; and the container's own connections
//! out: netctl's masquerade (NAT66) against plain routing with its own address and Docker's
//! ip6tables MASQUERADE.

use std::fmt::Write;

use anyhow::Result;

use super::Bench;

const SECTION: &str = "IPv6";
const HOST6: &str = "fd77:77::2";
const OUTSIDE6: &str = "fd77:77::1";
const SUBNET6: &str = "fd77:1::/64";
const SERVER6: &str = "fd77:1::10";
const BRIDGE6: &str = "ncbench6";
/// The server's ports published on every address (so on the host's IPv6 address too).
const HTTP6: u16 = 18081;
const IPERF6: u16 = 15211;
const FILLER6_BASE: u16 = 40000;
const PORTS: usize = 10_000;
/// The outside's servers for the masquerade half.
const OUT_IPERF: u16 = 15212;
const OUT_HTTP: u16 = 19001;

pub fn run(b: &mut Bench) -> Result<()> {
    b.netctl(&["sync", "-q"])?;
    let up = netctl_tests::UPLINK;
    for (host, addr) in [(true, HOST6), (false, OUTSIDE6)] {
        let script = format!(
            "sysctl -qw net.ipv6.conf.{up}.disable_ipv6=0 && ip -6 addr add {addr}/64 dev {up} nodad"
        );
        if host {
            b.host(&script)?;
        } else {
            super::check(b.sb.outside_sh(&script), &script)?;
        }
    }
    b.host(&format!("ip -6 route add default via {OUTSIDE6} dev {up}"))?;
    let outside = format!("ip -6 route add {SUBNET6} via {HOST6}");
    super::check(b.sb.outside_sh(&outside), &outside)?;
    b.netctl(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "172.31.0.0/24",
        "--subnet",
        SUBNET6,
        "-o",
        &format!("bridge_name={BRIDGE6}"),
        "bench6",
    ])?;
    let lg = b.loadgen.display().to_string();
    let iperf = IPERF6.to_string();
    b.netctl(&[
        "run",
        "-d",
        "--name",
        "srv6",
        "--network",
        "bench6",
        "--ip6",
        SERVER6,
        "-p",
        &format!("{HTTP6}:80"),
        "-p",
        &format!("{iperf}:{iperf}"),
        "--",
        "sh",
        "-c",
        &format!("iperf3 -s -p {iperf} -D; exec {lg} serve 80"),
    ])?;
    // 10,000 published ports in all: the server's two and a filler's.
    let fill = format!("{FILLER6_BASE}-{}", FILLER6_BASE as usize + PORTS - 3);
    b.netctl(&[
        "run",
        "-d",
        "--name",
        "filler6",
        "--network",
        "bench6",
        "-p",
        &format!("{fill}:{fill}"),
        "--",
        "sleep",
        "100000",
    ])?;
    b.sb.wait_listening("srv6", 80);
    b.sb.wait_listening("srv6", IPERF6);
    let tune = "sysctl -qw net.ipv4.tcp_tw_reuse=1";
    b.sb.outside_sh(tune);
    b.sb.container_sh("srv6", tune);
    // The masquerade half: the container's connections to servers of the outside
    // namespace (its iperf3 and load generator listen on both families).
    let _servers = [
        format!("timeout 3600 iperf3 -s -p {OUT_IPERF}"),
        format!("timeout 3600 {lg} serve {OUT_HTTP}"),
    ]
    .map(|cmd| netctl_tests::Background(b.sb.spawn_outside(&cmd)));
    let s = b.plan.secs;
    let subjects = [
        ("plain IPv6 routing to the container", SERVER6, 80, IPERF6),
        ("netctl: DNAT66 on [host]:PORT", HOST6, HTTP6, IPERF6),
        (
            "Docker's ip6tables layout: [host]:PORT",
            HOST6,
            HTTP6,
            IPERF6,
        ),
    ];
    let out_names = [
        "plain IPv6 routing from the container",
        "netctl: NAT66 masquerade",
        "Docker's ip6tables MASQUERADE",
    ];
    for round in 0..b.plan.rounds {
        eprintln!("bench: IPv6, round {}/{}", round + 1, b.plan.rounds);
        for (i, (name, addr, http, iperf)) in subjects.iter().enumerate() {
            eprintln!("bench: IPv6: {name}");
            activate(b, i)?;
            // Neighbours resolved and the path warm before the clock starts.
            let warm = format!(
                "ping -6 -c 2 -i 0.2 -W 1 {addr}; timeout 5 {lg} crr [{addr}]:{http} 0.5 1"
            );
            let _ = b.sb.outside_sh(&warm);
            let v = b.client(false, &format!("timeout 60 {lg} crr [{addr}]:{http} {s} 8"))?;
            let rate = v["rate"].as_f64().unwrap_or(0.0);
            b.extra(
                SECTION,
                "new TCP connections, 10,000 ports",
                name,
                "conn/s",
                rate,
            );
            let v = b.client(
                false,
                &format!("timeout 60 iperf3 -6 -c {addr} -p {iperf} -t {s} -J"),
            )?;
            let gbps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9;
            b.extra(SECTION, "TCP throughput, 1 stream", name, "Gbit/s", gbps);

            let name = out_names[i];
            let warm = format!("timeout 5 {lg} crr [{OUTSIDE6}]:{OUT_HTTP} 0.5 1");
            let _ = b.sb.container_sh("srv6", &warm);
            let v = in_container(
                b,
                &format!("timeout 60 {lg} crr [{OUTSIDE6}]:{OUT_HTTP} {s} 8"),
            )?;
            let rate = v["rate"].as_f64().unwrap_or(0.0);
            b.extra(
                SECTION,
                "masquerade: new TCP connections",
                name,
                "conn/s",
                rate,
            );
            let v = in_container(
                b,
                &format!("timeout 60 iperf3 -6 -c {OUTSIDE6} -p {OUT_IPERF} -t {s} -J"),
            )?;
            let gbps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9;
            b.extra(
                SECTION,
                "masquerade: TCP throughput, 1 stream",
                name,
                "Gbit/s",
                gbps,
            );
        }
    }
    activate(b, 1)?;
    for name in ["srv6", "filler6"] {
        let _ = b.sb.netctl(&["rm", "-f", name]);
    }
    let _ = b.sb.netctl(&["network", "rm", "bench6"]);
    Ok(())
}

/// A client's JSON from inside the server's container.
fn in_container(b: &Bench, script: &str) -> Result<serde_json::Value> {
    let text = super::check(b.sb.container_sh("srv6", script), script)?;
    Ok(serde_json::from_str(text.trim())?)
}

/// Subject `i`: 0 the kernel routes (forwarding on, nothing translates), 1 netctl, 2 the
/// kernel routes through Docker's ip6tables rules.
fn activate(b: &mut Bench, i: usize) -> Result<()> {
    b.sb.detach_programs();
    let _ = b.sb.host_sh("ip6tables-legacy -t nat -F; ip6tables-legacy -t nat -X; ip6tables-legacy -F; ip6tables-legacy -X; ip6tables-legacy -P FORWARD ACCEPT; nft flush ruleset");
    let fwd = |on: u8| format!("sysctl -qw net.ipv6.conf.all.forwarding={on}");
    match i {
        0 => b.host(&fwd(1)).map(drop),
        1 => {
            b.host(&fwd(0))?;
            b.netctl(&["sync", "-q"]).map(drop)
        }
        _ => {
            b.host(&fwd(1))?;
            let path = b.sb.state_dir.join("docker6.rules");
            std::fs::write(&path, docker6_rules())?;
            b.host(&format!("ip6tables-restore {}", path.display()))
                .map(drop)
        }
    }
}

/// Docker 27's ip6tables rules for the network (its DNAT per published port, FORWARD
/// chains and isolation), as dockerd writes them for `-p`.
fn docker6_rules() -> String {
    let mut dnat = String::new();
    let mut accept = String::new();
    let mut add = |hp: u16, cp: u16| {
        let _ = writeln!(dnat, "-A DOCKER ! -i {BRIDGE6} -p tcp -m tcp --dport {hp} -j DNAT --to-destination [{SERVER6}]:{cp}");
        let _ = writeln!(accept, "-A DOCKER -d {SERVER6}/128 ! -i {BRIDGE6} -o {BRIDGE6} -p tcp -m tcp --dport {cp} -j ACCEPT");
    };
    for p in FILLER6_BASE..FILLER6_BASE + (PORTS - 2) as u16 {
        add(p, p);
    }
    add(IPERF6, IPERF6);
    add(HTTP6, 80);
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s {SUBNET6} ! -o {BRIDGE6} -j MASQUERADE\n\
         -A DOCKER -i {BRIDGE6} -j RETURN\n{dnat}COMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o {BRIDGE6} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o {BRIDGE6} -j DOCKER\n-A FORWARD -i {BRIDGE6} ! -o {BRIDGE6} -j ACCEPT\n-A FORWARD -i {BRIDGE6} -o {BRIDGE6} -j ACCEPT\n\
         {accept}\
         -A DOCKER-ISOLATION-STAGE-1 -i {BRIDGE6} ! -o {BRIDGE6} -j DOCKER-ISOLATION-STAGE-2\n-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o {BRIDGE6} -j DROP\n-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
    )
}
