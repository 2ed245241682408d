//! The embedded DNS (issue 10): queries per second and latency for a container's name and
//! for a name forwarded upstream, from a container of a user-defined network, against
//! Podman's aardvark-dns and dnsmasq serving the same names on the same gateway (other
//! ports), same client, same rounds. The upstream is a dnsmasq in the sandbox's outside
//! namespace: nothing leaves the sandbox. Also `run -d` on a user-defined network, which now
//! writes the container's files and waits for the resolver to take the new state.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{Bench, SERVER_IP};

const SECTION: &str = "embedded DNS";
const GATEWAY: &str = "172.30.0.1";
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
const AARDVARK_PORT: u16 = 5353;
const DNSMASQ_PORT: u16 = 5354;
const FORWARDED: &str = "fwd.example";
const FORWARDED_IP: &str = "192.0.2.80";
/// (what, name asked, figures: rate, median and 99th percentile latency, the server's CPU
/// time per query).
const QUERIES: [(&str, &str, [&str; 4]); 2] = [
    (
        "container name",
        "srv",
        [
            "container name: queries/s",
            "container name: p50",
            "container name: p99",
            "container name: server CPU per query",
        ],
    ),
    (
        "forwarded name",
        FORWARDED,
        [
            "forwarded name: queries/s",
            "forwarded name: p50",
            "forwarded name: p99",
            "forwarded name: server CPU per query",
        ],
    ),
];
/// Concurrent clients: enough to keep one resolver thread busy on 2 cores.
const WORKERS: usize = 4;
/// `run -d` timings per round.
const RUNS: usize = 5;
const RUN_FIGURE: &str = "run -d on a user-defined network";
const BASELINE: &str = "netctl before (NETCTL_BENCH_BASELINE)";

pub fn run(b: &mut Bench) -> Result<()> {
    let _upstream = b.sb.upstream_dns(&[(FORWARDED, FORWARDED_IP)]);
    let up = b.sb.outside_ip.clone();
    b.sb.host_dns(&[&up]);
    b.netctl(&["sync", "-q"])?;
    let lg = b.loadgen.display().to_string();
    let client_ip = b.sb.state()["containers"]["client"]["endpoints"][0]["ip"]
        .as_str()
        .context("the bench client's address")?
        .to_string();

    let mut peers = Vec::new();
    let daemon =
        b.sb.daemon_pid()
            .context("the netctl daemon is not running")?;
    // (name, port, pid of the serving process: its CPU time per query is measured too)
    let mut subjects = vec![("netctl (embedded DNS)", 53u16, daemon)];
    let dir = b.sb.state_dir.with_extension("aardvark");
    if std::path::Path::new(AARDVARK).exists() {
        // Podman's config: listening address and upstream, then one line per container.
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("bench"),
            format!(
                "{GATEWAY} {up}\n{} {SERVER_IP}  srv\n{} {client_ip}  client\n",
                "a".repeat(64),
                "b".repeat(64)
            ),
        )?;
        let child =
            b.sb.in_host("sh")
                .arg("-c")
                .arg(format!(
                    "exec {AARDVARK} --config {} -p {AARDVARK_PORT} run",
                    dir.display()
                ))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        // aardvark-dns may fork away from its shell: its pid file says where it went.
        let pid = std::fs::read_to_string(dir.join("aardvark.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(child.id());
        peers.push(netctl_tests::Background(child));
        subjects.push(("aardvark-dns", AARDVARK_PORT, pid));
    } else {
        eprintln!("bench: {AARDVARK} not found (cargo xtask setup installs aardvark-dns)");
    }
    if crate::setup::is_cmd("dnsmasq") {
        let child =
            b.sb.in_host("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--bind-interfaces",
                    "--user=root",
                    "--pid-file=",
                    // Forwarding is measured, not dnsmasq's cache.
                    "--cache-size=0",
                    &format!("--port={DNSMASQ_PORT}"),
                    &format!("--listen-address={GATEWAY}"),
                    &format!("--host-record=srv,{SERVER_IP}"),
                    &format!("--server={up}"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
        // nsenter execs dnsmasq: the child is the server.
        subjects.push(("dnsmasq", DNSMASQ_PORT, child.id()));
        peers.push(netctl_tests::Background(child));
    } else {
        eprintln!("bench: dnsmasq not found (cargo xtask setup installs dnsmasq-base)");
    }
    std::thread::sleep(Duration::from_millis(500));

    let baseline = match std::env::var_os("NETCTL_BENCH_BASELINE") {
        Some(bin) => {
            let sb = netctl_tests::Sandbox::with_netctl(bin.into());
            for args in [
                &["network", "create", "--subnet", "172.30.0.0/24", "bench"][..],
                // The first run loads and attaches the programs: not measured.
                &[
                    "run",
                    "-d",
                    "--name",
                    "warm",
                    "--network",
                    "bench",
                    "--",
                    "sleep",
                    "1000",
                ],
            ] {
                super::check(sb.netctl(args), "baseline setup")?;
            }
            Some(sb)
        }
        None => None,
    };
    let s = b.plan.secs;
    for round in 0..b.plan.rounds {
        eprintln!("bench: embedded DNS, round {}/{}", round + 1, b.plan.rounds);
        for (name, port, pid) in &subjects {
            for (what, qname, figures) in QUERIES {
                let cpu0 = cpu_secs(*pid);
                let cmd = format!("timeout 60 {lg} dns {GATEWAY}:{port} {s} {WORKERS} {qname}");
                let out = b.sb.container_sh("client", &cmd);
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let v: serde_json::Value = serde_json::from_str(text.trim())
                    .with_context(|| format!("{name} {what}: {text}"))?;
                let errors = v["errors"].as_f64().unwrap_or(0.0);
                if errors > 0.0 {
                    eprintln!("bench: {name} {what}: {errors} unanswered queries");
                }
                let cpu = cpu_secs(*pid) - cpu0;
                let [qps, p50, p99, per_query] = figures;
                let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
                b.extra(SECTION, qps, name, "q/s", num("rate"));
                b.extra(SECTION, p50, name, "µs", num("p50_us"));
                b.extra(SECTION, p99, name, "µs", num("p99_us"));
                let ops = num("ops").max(1.0);
                b.extra(SECTION, per_query, name, "µs", cpu * 1e6 / ops);
            }
        }
        // `run -d` on a user-defined network: files, state, the resolver's reload; beside
        // the same with the binary named by NETCTL_BENCH_BASELINE (netctl before this
        // issue), each in a sandbox of its own, interleaved.
        const RUN: [&str; 9] = [
            "run",
            "-d",
            "--name",
            "dns-run",
            "--network",
            "bench",
            "--",
            "sleep",
            "1000",
        ];
        for _ in 0..RUNS {
            let ms = b.timed_netctl(&RUN)?;
            b.extra(SECTION, RUN_FIGURE, "netctl", "ms", ms);
            b.netctl(&["rm", "-f", "dns-run"])?;
            if let Some(base) = &baseline {
                let t = std::time::Instant::now();
                super::check(base.netctl(&RUN), "baseline run")?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                b.extra(SECTION, RUN_FIGURE, BASELINE, "ms", ms);
                super::check(base.netctl(&["rm", "-f", "dns-run"]), "baseline rm")?;
            }
        }
    }
    drop(peers);
    if let Some((_, _, pid)) = subjects.iter().find(|s| s.0 == "aardvark-dns") {
        let _ = b.host(&format!("kill {pid} 2>/dev/null"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// User + system CPU seconds a process has used (/proc/PID/stat, clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}
