//! The embedded DNS (issue 10): latency one query at a time and capacity with many
//! outstanding, for a container's name and for a name forwarded upstream, measured by
//! dnsperf (the usual DNS load tool) from a container of a user-defined network, against
//! Podman's aardvark-dns and dnsmasq serving the same names on the same gateway (other ports).
//! netctl is asked at 127.0.0.11, as its containers ask it. The upstream is a dnsmasq in the
//! sandbox's outside namespace: nothing leaves the sandbox. Then netctl again while another
//! container hoards 1,000 idle TCP connections to it (issue 26), and `run -d` on a
//! user-defined network, which writes the container's files and waits for the resolver.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context, Result};

use super::{Bench, SERVER_IP};

const SECTION: &str = "embedded DNS";
const GATEWAY: &str = "172.30.0.1";
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
const AARDVARK_PORT: u16 = 5353;
const DNSMASQ_PORT: u16 = 5354;
const FORWARDED: &str = "fwd.example";
const FORWARDED_IP: &str = "192.0.2.80";
/// dnsperf's loads. One query at a time gives latency (dnsperf paces itself there: its q/s
/// mean nothing, so the rate is capped to keep the run short); many outstanding, from 4
/// clients, gives capacity.
const ONE: &[&str] = &["-q", "1", "-c", "1", "-Q", "2000", "-v"];
const MANY: &[&str] = &["-q", "200", "-c", "4"];
/// (name asked, figures: mean latency and p99 one at a time; rate, mean latency and the
/// server's CPU time per query with many outstanding).
const QUERIES: [(&str, [&str; 5]); 2] = [
    (
        "srv",
        [
            "container name, 1 outstanding: mean latency",
            "container name, 1 outstanding: p99",
            "container name, 200 outstanding: queries/s",
            "container name, 200 outstanding: mean latency",
            "container name: server CPU per query",
        ],
    ),
    (
        FORWARDED,
        [
            "forwarded name, 1 outstanding: mean latency",
            "forwarded name, 1 outstanding: p99",
            "forwarded name, 200 outstanding: queries/s",
            "forwarded name, 200 outstanding: mean latency",
            "forwarded name: server CPU per query",
        ],
    ),
];
/// A neighbour hoarding connections (issue 26): another container holds this many idle TCP
/// connections to the resolver while the client asks for a container name.
const IDLE_CONNECTIONS: usize = 1000;
const HOARD: [&str; 2] = [
    "container name beside 1,000 idle TCP connections: queries/s",
    "container name beside 1,000 idle TCP connections: p99 (1 outstanding)",
];
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
    // (name, address, port, pid of the serving process: its CPU time per query is measured
    // too). netctl is asked where its containers ask it: 127.0.0.11, which the socket
    // programs lead to the resolver.
    let mut subjects = vec![("netctl (embedded DNS)", "127.0.0.11", 53u16, daemon)];
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
        subjects.push(("aardvark-dns", GATEWAY, AARDVARK_PORT, pid));
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
        subjects.push(("dnsmasq", GATEWAY, DNSMASQ_PORT, child.id()));
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
    let queries = b.sb.state_dir.with_extension("dnsperf");
    std::fs::create_dir_all(&queries)?;
    for (qname, _) in QUERIES {
        std::fs::write(queries.join(qname), format!("{qname} A\n"))?;
    }
    b.netctl(&[
        "run",
        "-d",
        "--name",
        "hoarder",
        "--network",
        "bench",
        "--",
        "sleep",
        "100000",
    ])?;
    for round in 0..b.plan.rounds {
        eprintln!("bench: embedded DNS, round {}/{}", round + 1, b.plan.rounds);
        for (name, addr, port, pid) in &subjects {
            for (qname, figures) in QUERIES {
                let file = queries.join(qname);
                let one = dnsperf(b, addr, *port, &file, s, ONE)?;
                let cpu0 = cpu_secs(*pid);
                let many = dnsperf(b, addr, *port, &file, s, MANY)?;
                let cpu = cpu_secs(*pid) - cpu0;
                let [one_mean, one_p99, qps, mean, per_query] = figures;
                b.extra(SECTION, one_mean, name, "µs", one.mean_us);
                b.extra(SECTION, one_p99, name, "µs", one.p99_us);
                b.extra(SECTION, qps, name, "q/s", many.rate);
                b.extra(SECTION, mean, name, "µs", many.mean_us);
                b.extra(
                    SECTION,
                    per_query,
                    name,
                    "µs",
                    cpu * 1e6 / many.completed.max(1.0),
                );
            }
        }
        // The same questions to netctl, first alone, then while the hoarder holds idle TCP
        // connections (the resolver keeps 16 per container and closes the rest).
        let file = queries.join(QUERIES[0].0);
        let (_, addr, port, _) = &subjects[0];
        for hoarding in [false, true] {
            let _hoard = hoarding
                .then(|| hoard(b, &lg, addr, s * 2.0 + 5.0))
                .transpose()?;
            let subject = match hoarding {
                false => "netctl, no idle connections",
                true => "netctl, 1,000 idle TCP connections held",
            };
            let many = dnsperf(b, addr, *port, &file, s, MANY)?;
            let one = dnsperf(b, addr, *port, &file, s, ONE)?;
            b.extra(SECTION, HOARD[0], subject, "q/s", many.rate);
            b.extra(SECTION, HOARD[1], subject, "µs", one.p99_us);
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
    if let Some((_, _, _, pid)) = subjects.iter().find(|s| s.0 == "aardvark-dns") {
        let _ = b.host(&format!("kill {pid} 2>/dev/null"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&queries);
    Ok(())
}

/// What one dnsperf run measured.
struct Perf {
    rate: f64,
    completed: f64,
    mean_us: f64,
    /// From the per-answer latencies of a verbose run (0 otherwise).
    p99_us: f64,
}

/// dnsperf from the client container against `addr`:`port`, asking the question in `file`
/// for `secs` with `load`'s arguments; lost queries are reported, not hidden.
fn dnsperf(
    b: &Bench,
    addr: &str,
    port: u16,
    file: &Path,
    secs: f64,
    load: &[&str],
) -> Result<Perf> {
    let cmd = format!(
        "timeout {} dnsperf -s {addr} -p {port} -d {} -l {secs} {}",
        secs as u64 + 30,
        file.display(),
        load.join(" ")
    );
    let out = b.sb.container_sh("client", &cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
        line.split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (Some(rate), Some(completed), Some(mean)) = (
        field("Queries per second"),
        field("Queries completed"),
        field("Average Latency (s)"),
    ) else {
        bail!(
            "dnsperf against {addr}:{port} printed no statistics: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Those still out when the time is up count as lost too: only more is worth a word.
    if let Some(lost) = field("Queries lost").filter(|l| *l > completed / 100.0) {
        eprintln!("bench: dnsperf against {addr}:{port}: {lost} queries lost");
    }
    // Verbose runs print one "> RCODE NAME TYPE SECONDS" line per answer.
    let mut lat: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    lat.sort_by(f64::total_cmp);
    let p99 = lat
        .get((lat.len().max(1) - 1) * 99 / 100)
        .copied()
        .unwrap_or(0.0);
    Ok(Perf {
        rate,
        completed,
        mean_us: mean * 1e6,
        p99_us: p99 * 1e6,
    })
}

/// Starts the hoarder container's idle TCP connections to `addr`:53 for `secs`; they are
/// open when this returns and closed when the handle is dropped.
fn hoard(b: &Bench, loadgen: &str, addr: &str, secs: f64) -> Result<netctl_tests::Background> {
    let child =
        b.sb.netctl_cmd(&[
            "exec",
            "hoarder",
            "--",
            "sh",
            "-c",
            &format!("ulimit -n 4096; exec {loadgen} hold {addr}:53 {IDLE_CONNECTIONS} {secs}"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Connections the resolver refuses are closed at once: a second is plenty to open all.
    std::thread::sleep(Duration::from_secs(2));
    Ok(netctl_tests::Background(child))
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
