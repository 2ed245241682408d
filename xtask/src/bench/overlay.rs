//! Overlay networks across two hosts (namespaces on one underlay bridge, a real etcd):
//! container to container through netctl's eBPF-driven VXLAN, against the kernel's own VXLAN
//! bridged with static FDB entries (the limit: the same encapsulation, no eBPF) and against
//! plain routing between the hosts (no encapsulation at all). An encrypted overlay
//! (`-o encrypted`) against the kernel's own WireGuard with a static configuration where the
//! kernel has it (in userspace, it is compared with the plain overlay). Also how long a new
//! container on host A takes to become reachable from host B.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netctl_tests::{cluster::Cluster, ns_sh, Background};
use serde_json::Value;

use super::Bench;

const SECTION: &str = "overlay across two hosts";
const KERNEL_VXLAN: &str = "kernel VXLAN, static FDB";
const NETCTL: &str = "netctl overlay (eBPF tunnel)";
const ROUTED: &str = "plain routing, no tunnel";
const KERNEL_WG: &str = "kernel WireGuard, static config";

fn ok(out: std::process::Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A "container" the peers use: a namespace with `eth0` (veth to `host_if` in `host_ns`).
fn peer_container(
    c: &Cluster,
    tag: &str,
    host: usize,
    host_if: &str,
    addr: &str,
    mtu: u32,
) -> Result<String> {
    let ns = c.namespace(tag);
    let hns = &c.hosts[host].ns;
    ok(ns_sh(hns, &format!("ip link add {host_if} type veth peer name eth0 netns {ns} && ip link set {host_if} mtu {mtu} up")), "veth")?;
    ok(
        ns_sh(
            &ns,
            &format!("ip link set eth0 mtu {mtu} up && ip addr add {addr} dev eth0"),
        ),
        "container address",
    )?;
    Ok(ns)
}

/// The kernel's VXLAN: a bridge per host with a VXLAN port (VNI 42, UDP 4790: netctl's
/// device holds 4789) whose FDB sends everything to the other host.
fn kernel_vxlan(c: &Cluster) -> Result<(String, String)> {
    let mut nss = Vec::new();
    for i in 0..2 {
        let hns = c.hosts[i].ns.clone();
        let other = &c.hosts[1 - i].ip;
        let me = &c.hosts[i].ip;
        ok(
            ns_sh(
                &hns,
                &format!(
                    "ip link add kbr type bridge && ip link set kbr up && \
             ip link add kvx type vxlan id 42 dstport 4790 local {me} nolearning && \
             ip link set kvx master kbr mtu 1450 up && \
             bridge fdb append 00:00:00:00:00:00 dev kvx dst {other}"
                ),
            ),
            "kernel vxlan",
        )?;
        let ns = peer_container(
            c,
            &format!("k{i}"),
            i,
            &format!("kv{i}"),
            &format!("10.98.0.{}/24", 10 + i),
            1450,
        )?;
        ok(
            ns_sh(&hns, &format!("ip link set kv{i} master kbr")),
            "bridge port",
        )?;
        nss.push(ns);
    }
    Ok((nss.remove(0), nss.remove(0)))
}

/// The kernel's WireGuard with a static configuration (`wg set`), where the kernel has it:
/// each host routes the other's container address into its `kwg` device. None where the
/// kernel has no WireGuard (or `wg` is missing).
fn kernel_wireguard(c: &Cluster) -> Result<Option<(String, String)>> {
    let mut keys = Vec::new();
    for h in &c.hosts[..2] {
        let made = ns_sh(&h.ns, "ip link add kwg type wireguard && wg genkey");
        if !made.status.success() {
            return Ok(None);
        }
        let private = String::from_utf8_lossy(&made.stdout).trim().to_string();
        let public = ok(
            ns_sh(&h.ns, &format!("echo {private} | wg pubkey")),
            "wg pubkey",
        )?;
        keys.push((private, public.trim().to_string()));
    }
    let mut nss = Vec::new();
    for i in 0..2 {
        let hns = c.hosts[i].ns.clone();
        let other = &c.hosts[1 - i].ip;
        let (private, _) = &keys[i];
        let (_, peer) = &keys[1 - i];
        let ns = peer_container(
            c,
            &format!("w{i}"),
            i,
            &format!("wv{i}"),
            &format!("10.94.{i}.2/24"),
            1440,
        )?;
        ok(
            ns_sh(&ns, &format!("ip route add default via 10.94.{i}.1")),
            "route",
        )?;
        ok(
            ns_sh(
                &hns,
                &format!(
                    "echo {private} > /tmp/kwg-{i}.key && \
                     wg set kwg listen-port 51900 private-key /tmp/kwg-{i}.key \
                        peer {peer} endpoint {other}:51900 allowed-ips 10.94.{o}.0/24 && \
                     rm /tmp/kwg-{i}.key && ip link set kwg mtu 1440 up && \
                     ip addr add 10.94.{i}.1/24 dev wv{i} && ip route add 10.94.{o}.0/24 dev kwg",
                    o = 1 - i
                ),
            ),
            "kernel WireGuard",
        )?;
        nss.push(ns);
    }
    Ok(Some((nss.remove(0), nss.remove(0))))
}

/// Plain routing: each host routes the other's container subnet to the other host.
fn routed(c: &Cluster) -> Result<(String, String)> {
    let mut nss = Vec::new();
    for i in 0..2 {
        let hns = c.hosts[i].ns.clone();
        let other = &c.hosts[1 - i].ip;
        let ns = peer_container(
            c,
            &format!("r{i}"),
            i,
            &format!("rv{i}"),
            &format!("10.97.{i}.2/24"),
            1500,
        )?;
        ok(
            ns_sh(&ns, &format!("ip route add default via 10.97.{i}.1")),
            "route",
        )?;
        ok(ns_sh(&hns, &format!(
            "ip addr add 10.97.{i}.1/24 dev rv{i} && ip route add 10.97.{}.0/24 via {other} && sysctl -qw net.ipv4.ip_forward=1",
            1 - i
        )), "host routes")?;
        nss.push(ns);
    }
    Ok((nss.remove(0), nss.remove(0)))
}

fn client_json(ns_or_container: &Client, script: &str) -> Result<Value> {
    let text = match ns_or_container {
        Client::Ns(ns) => ok(ns_sh(ns, script), script)?,
        Client::Container(c, host, name) => ok(c.container_sh(*host, name, script), script)?,
    };
    serde_json::from_str(text.trim()).with_context(|| format!("{script}: {text}"))
}

enum Client<'a> {
    Ns(String),
    Container(&'a Cluster, usize, String),
}

fn serve(servers: &mut Vec<Background>, spawn: std::process::Command) -> Result<()> {
    let mut spawn = spawn;
    servers.push(Background(
        spawn
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    ));
    Ok(())
}

pub fn run(b: &mut Bench, netctl: &Path) -> Result<()> {
    let c = Cluster::with_netctl(2, netctl.to_path_buf());
    let lg = b.loadgen.display().to_string();
    let mut servers = Vec::new();
    // The hosts route for the plain-routing peer: routers before netctl came, so netctl's
    // forwarding guard leaves their routing alone.
    for h in &c.hosts {
        ok(
            ns_sh(&h.ns, "sysctl -qw net.ipv4.ip_forward=1"),
            "forwarding",
        )?;
    }
    // netctl: an overlay with a server on host 0 and a client on host 1.
    c.overlay(0, &["--subnet", "10.96.0.0/24", "ov"]);
    let serve_cmd = format!("iperf3 -s -D; exec {lg} serve 80");
    c.netctl_ok(
        0,
        &[
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "ov",
            "--ip",
            "10.96.0.10",
            "--",
            "sh",
            "-c",
            &serve_cmd,
        ],
    );
    c.netctl_ok(
        1,
        &[
            "run",
            "-d",
            "--name",
            "cli",
            "--network",
            "ov",
            // Fixed, as the later containers' are (overlay addresses are otherwise random).
            "--ip",
            "10.96.0.11",
            "--",
            "sleep",
            "100000",
        ],
    );
    // The same pair on an encrypted overlay.
    c.overlay(0, &["--subnet", "10.95.0.0/24", "-o", "encrypted", "sov"]);
    for (host, name, ip, cmd) in [
        (0, "ssrv", "10.95.0.10", serve_cmd.as_str()),
        (1, "scli", "10.95.0.11", "sleep 100000"),
    ] {
        c.netctl_ok(
            host,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "sov",
                "--ip",
                ip,
                "--",
                "sh",
                "-c",
                cmd,
            ],
        );
    }
    let transport = c.host_sh(0, "ip -d link show nctl-wg");
    let encrypted = if String::from_utf8_lossy(&transport.stdout).contains("wireguard") {
        "netctl encrypted overlay (kernel WireGuard)"
    } else {
        "netctl encrypted overlay (userspace WireGuard)"
    };
    let (k0, k1) = kernel_vxlan(&c)?;
    let (r0, r1) = routed(&c)?;
    let wg = kernel_wireguard(&c)?;
    let mut peers = vec![&k0, &r0];
    if let Some((w0, _)) = &wg {
        peers.push(w0);
    }
    for ns in peers {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).args([
            "--",
            "sh",
            "-c",
            &format!("iperf3 -s -D; exec {lg} serve 80"),
        ]);
        serve(&mut servers, cmd)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let tune = "sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range='1024 60999'";
    for ns in [&k1, &r1] {
        ns_sh(ns, tune);
    }
    c.container_sh(1, "cli", tune);
    c.container_sh(1, "scli", tune);
    let mut subjects: Vec<(&str, Client, &str)> = vec![
        (KERNEL_VXLAN, Client::Ns(k1.clone()), "10.98.0.10"),
        (NETCTL, Client::Container(&c, 1, "cli".into()), "10.96.0.10"),
        (ROUTED, Client::Ns(r1.clone()), "10.97.0.2"),
        (
            encrypted,
            Client::Container(&c, 1, "scli".into()),
            "10.95.0.10",
        ),
    ];
    if let Some((_, w1)) = &wg {
        ns_sh(w1, tune);
        subjects.push((KERNEL_WG, Client::Ns(w1.clone()), "10.94.0.2"));
    }
    // The overlay needs the daemons to have told each host where the other's containers are.
    for (cli, srv) in [("cli", "10.96.0.10"), ("scli", "10.95.0.10")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c
            .container_sh(1, cli, &format!("ping -c1 -W1 {srv}"))
            .status
            .success()
        {
            if Instant::now() > deadline {
                bail!("the overlay container {srv} on host 0 is not reachable from host 1");
            }
        }
    }
    let s = b.plan.secs;
    for round in 0..b.plan.rounds {
        eprintln!("bench: overlay, round {}/{}", round + 1, b.plan.rounds);
        for (name, client, server) in &subjects {
            let v = client_json(client, &format!("timeout 60 iperf3 -c {server} -t {s} -J"))?;
            let gbps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9;
            b.extra(SECTION, "TCP throughput, 1 stream", name, "Gbit/s", gbps);
            let v = client_json(client, &format!("timeout 60 {lg} crr {server}:80 {s} 8"))?;
            b.extra(
                SECTION,
                "new TCP connections",
                name,
                "conn/s",
                v["rate"].as_f64().unwrap_or(0.0),
            );
            let v = client_json(client, &format!("timeout 60 {lg} rr {server}:80 {s} 4"))?;
            b.extra(
                SECTION,
                "TCP request/response p99",
                name,
                "µs",
                v["p99_us"].as_f64().unwrap_or(0.0),
            );
        }
        // A new container on host 0: how long until host 1 reaches it.
        let name = format!("new{round}");
        let ip = format!("10.96.0.{}", 100 + round);
        let t = Instant::now();
        c.netctl_ok(
            0,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "ov",
                "--ip",
                &ip,
                "--",
                "sleep",
                "100000",
            ],
        );
        let mut reached = None;
        while t.elapsed() < Duration::from_secs(10) {
            if c.container_sh(1, "cli", &format!("ping -c1 -W0.2 {ip}"))
                .status
                .success()
            {
                reached = Some(t.elapsed());
                break;
            }
        }
        let ms = reached
            .context("a new overlay container was not reachable from the other host within 10 s")?;
        b.extra(
            SECTION,
            "run on host A until reachable from host B",
            NETCTL,
            "ms",
            ms.as_secs_f64() * 1000.0,
        );
    }
    drop(servers);
    Ok(())
}
