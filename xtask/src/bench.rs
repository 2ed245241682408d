//! `cargo xtask bench`: netctl's dataplane against Docker's iptables layout (nf_tables and
//! legacy backends), an nftables verdict map and plain routing (no NAT), on one sandbox, the
//! same server process, interleaved over rounds. Reports medians, spreads and ratios, as a
//! markdown table, JSON and an SVG chart under target/bench/.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netctl_tests::{Background, Sandbox};
use serde_json::{json, Value};

mod busy;
mod cni;
mod dns;
mod docker;
mod host_local;
mod ipv6;
mod nat64;
mod overlay;

const SUBNET: &str = "172.30.0.0/24";
const SERVER_IP: &str = "172.30.0.2";
const BRIDGE: &str = "ncbench0";
const HTTP_PORT: u16 = 8080;
const IPERF_PORT: u16 = 5201;
const FILLER_BASE: u16 = 20000;
/// The features a Debian 11 (5.10) kernel lacks, for the compat dataplane.
const COMPAT_DENY: &str = "tcx,loop,atomics,xdp_adjust_meta,xdp_load_bytes";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dp {
    NetctlXdp,
    NetctlTc,
    NetctlCompat,
    NetctlTrace,
    NetctlNoToContainer,
    IptablesNft,
    IptablesLegacy,
    NftMap,
    NoNat,
}

impl Dp {
    const ALL: [Dp; 9] = [
        Dp::NetctlXdp,
        Dp::NetctlTc,
        Dp::NetctlCompat,
        Dp::NetctlTrace,
        Dp::NetctlNoToContainer,
        Dp::IptablesNft,
        Dp::IptablesLegacy,
        Dp::NftMap,
        Dp::NoNat,
    ];

    fn name(self) -> &'static str {
        match self {
            Dp::NetctlXdp => "netctl (xdp native)",
            Dp::NetctlTc => "netctl (default: tc)",
            Dp::NetctlCompat => "netctl (5.10 path: tc netlink, compat)",
            Dp::NetctlTrace => "netctl (tc, tracing on)",
            Dp::NetctlNoToContainer => "netctl (tc, no to_container: the path before it)",
            Dp::IptablesNft => "iptables (nf_tables)",
            Dp::IptablesLegacy => "iptables-legacy",
            Dp::NftMap => "nftables map",
            Dp::NoNat => "no NAT (routing)",
        }
    }
}

struct Plan {
    rounds: usize,
    port_counts: Vec<usize>,
    secs: f64,
}

/// One measured number.
#[derive(Clone, Debug)]
struct Sample {
    dp: Dp,
    ports: usize,
    figure: &'static str,
    unit: &'static str,
    value: f64,
    /// Kernel CPU (system + irq + softirq) seconds per unit of work, if meaningful.
    cpu: Option<f64>,
}

/// Kernel CPU seconds (system + irq + softirq) since boot, all CPUs.
fn kernel_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq
    let hz = 100.0;
    (f.get(2).unwrap_or(&0.0) + f.get(5).unwrap_or(&0.0) + f.get(6).unwrap_or(&0.0)) / hz
}

/// CPU seconds spent by everything (user, system, interrupts) since boot, all CPUs: a proxy
/// process's work counts too.
fn busy_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
    busy / 100.0
}

/// A figure outside the dataplane table: (section, figure, subject, unit) → one value per
/// round. The first subject recorded for a (section, figure) is the baseline of its ratios.
struct Extra {
    section: &'static str,
    figure: &'static str,
    subject: String,
    unit: &'static str,
    value: f64,
}

struct Bench {
    sb: Sandbox,
    loadgen: PathBuf,
    plan: Plan,
    samples: Vec<Sample>,
    extras: Vec<Extra>,
    control: Vec<(String, f64)>,
    _outside: Vec<Background>,
    trace: Option<Background>,
}

fn check(out: std::process::Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Bench {
    fn netctl(&self, args: &[&str]) -> Result<String> {
        check(self.sb.netctl(args), &format!("netctl {}", args.join(" ")))
    }

    fn timed_netctl(&self, args: &[&str]) -> Result<f64> {
        let t = Instant::now();
        self.netctl(args)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    }

    fn host(&self, script: &str) -> Result<String> {
        check(self.sb.host_sh(script), script)
    }

    /// Runs a client in the sandbox's host namespace and returns its JSON.
    fn host_json(&self, script: &str) -> Result<Value> {
        let text = self.host(script)?;
        serde_json::from_str(text.trim()).with_context(|| format!("{script}: {text}"))
    }

    fn extra(
        &mut self,
        section: &'static str,
        figure: &'static str,
        subject: &str,
        unit: &'static str,
        value: f64,
    ) {
        self.extras.push(Extra {
            section,
            figure,
            subject: subject.to_string(),
            unit,
            value,
        });
    }

    fn setup(&mut self) -> Result<()> {
        let ms = self.timed_netctl(&[
            "network",
            "create",
            "--subnet",
            SUBNET,
            "-o",
            &format!("bridge_name={BRIDGE}"),
            "bench",
        ])?;
        self.control.push(("netctl network create".into(), ms));
        let lg = self.loadgen.display().to_string();
        let serve = format!("iperf3 -s -p {IPERF_PORT} -D; exec {lg} serve 80");
        let ms = self.timed_netctl(&[
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "bench",
            "--ip",
            SERVER_IP,
            "-p",
            "8080:80",
            "-p",
            "8080:80/udp",
            "-p",
            &format!("{IPERF_PORT}:{IPERF_PORT}"),
            "--",
            "sh",
            "-c",
            &serve,
        ])?;
        self.control
            .push(("netctl run -d with -p (3 ports)".into(), ms));
        let ms = self.timed_netctl(&[
            "run",
            "-d",
            "--name",
            "client",
            "--network",
            "bench",
            "--",
            "sleep",
            "100000",
        ])?;
        self.control.push(("netctl run -d without -p".into(), ms));
        self.sb.wait_listening("srv", 80);
        self.sb.wait_listening("srv", IPERF_PORT);
        // Clients open connections faster than TIME_WAIT frees ports: let them reuse, in the
        // sandbox's namespaces only.
        let tune = "sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range='1024 60999'";
        self.sb.outside_sh(tune);
        self.sb.container_sh("client", tune);
        self.sb.container_sh("srv", tune);
        // Outside: servers for masquerade runs, and a route for the no-NAT runs.
        self.sb
            .outside_sh(&format!("ip route add {SUBNET} via {}", self.sb.host_ip));
        self._outside.push(Background(
            self.sb.spawn_outside("timeout 3600 iperf3 -s -p 5202"),
        ));
        self._outside.push(Background(
            self.sb
                .spawn_outside(&format!("timeout 3600 {lg} serve 9000")),
        ));
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Ports of the filler container (published before the server's, so the server's are the
    /// last rules installed) for a total of `n` published ports.
    fn filler_ports(n: usize) -> Vec<u16> {
        (0..n.saturating_sub(1))
            .map(|i| FILLER_BASE + i as u16)
            .collect()
    }

    fn set_filler(&mut self, n: usize) -> Result<()> {
        let _ = self.sb.netctl(&["rm", "-f", "filler"]);
        let ports = Self::filler_ports(n);
        if ports.is_empty() {
            return Ok(());
        }
        let range = format!("{}-{}", ports[0], ports[ports.len() - 1]);
        let spec = format!("{range}:{range}");
        let ms = self.timed_netctl(&[
            "run",
            "-d",
            "--name",
            "filler",
            "--network",
            "bench",
            "-p",
            &spec,
            "--",
            "sleep",
            "100000",
        ])?;
        self.control.push((
            format!("netctl run -d publishing {} ports", ports.len()),
            ms,
        ));
        Ok(())
    }

    fn deactivate_all(&mut self) -> Result<()> {
        self.trace = None;
        self.sb.detach_programs();
        let _ = self.sb.host_sh("nft flush ruleset; iptables-legacy -t nat -F; iptables-legacy -t nat -X; iptables-legacy -F; iptables-legacy -X; iptables-legacy -P FORWARD ACCEPT");
        Ok(())
    }

    fn docker_rules(&self, n: usize) -> String {
        let filler_ip = "172.30.0.4";
        let mut dnat = String::new();
        let mut accept = String::new();
        let mut add = |proto: &str, hp: u16, ip: &str, cp: u16| {
            let _ = writeln!(dnat, "-A DOCKER ! -i {BRIDGE} -p {proto} -m {proto} --dport {hp} -j DNAT --to-destination {ip}:{cp}");
            let _ = writeln!(accept, "-A DOCKER -d {ip}/32 ! -i {BRIDGE} -o {BRIDGE} -p {proto} -m {proto} --dport {cp} -j ACCEPT");
        };
        for p in Self::filler_ports(n) {
            add("tcp", p, filler_ip, p);
        }
        add("tcp", IPERF_PORT, SERVER_IP, IPERF_PORT);
        add("udp", HTTP_PORT, SERVER_IP, 80);
        add("tcp", HTTP_PORT, SERVER_IP, 80);
        format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A POSTROUTING -s {SUBNET} ! -o {BRIDGE} -j MASQUERADE\n\
             -A DOCKER -i {BRIDGE} -j RETURN\n{dnat}COMMIT\n\
             *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
             -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
             -A FORWARD -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A FORWARD -o {BRIDGE} -j DOCKER\n-A FORWARD -i {BRIDGE} ! -o {BRIDGE} -j ACCEPT\n-A FORWARD -i {BRIDGE} -o {BRIDGE} -j ACCEPT\n\
             {accept}\
             -A DOCKER-ISOLATION-STAGE-1 -i {BRIDGE} ! -o {BRIDGE} -j DOCKER-ISOLATION-STAGE-2\n-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
             -A DOCKER-ISOLATION-STAGE-2 -o {BRIDGE} -j DROP\n-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
        )
    }

    fn nft_rules(&self, n: usize) -> String {
        let mut tcp: Vec<String> = Self::filler_ports(n)
            .iter()
            .map(|p| format!("{p} : 172.30.0.4 . {p}"))
            .collect();
        tcp.push(format!("{IPERF_PORT} : {SERVER_IP} . {IPERF_PORT}"));
        tcp.push(format!("{HTTP_PORT} : {SERVER_IP} . 80"));
        format!(
            "table ip ncbench {{\n\
               map pub_tcp {{ type inet_service : ipv4_addr . inet_service; elements = {{ {} }} }}\n\
               map pub_udp {{ type inet_service : ipv4_addr . inet_service; elements = {{ {HTTP_PORT} : {SERVER_IP} . 80 }} }}\n\
               chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
                 fib daddr type local dnat ip to tcp dport map @pub_tcp\n\
                 fib daddr type local dnat ip to udp dport map @pub_udp\n }}\n\
               chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 ip saddr {SUBNET} oifname != \"{BRIDGE}\" masquerade\n }}\n}}\n",
            tcp.join(", ")
        )
    }

    /// Installs a ruleset from a file in the sandbox's host namespace; returns milliseconds.
    fn load_rules(&self, tool: &str, text: &str, name: &str) -> Result<f64> {
        let path = self.sb.state_dir.join(name);
        std::fs::write(&path, text)?;
        let t = Instant::now();
        self.host(&format!("{tool} {}", path.display()))?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    }

    fn activate(&mut self, dp: Dp, ports: usize) -> Result<()> {
        self.deactivate_all()?;
        match dp {
            Dp::NetctlXdp => {
                self.sb.env("NETCTL_XDP", "native");
                self.netctl(&["sync", "-q"])?;
                self.sb.env("NETCTL_XDP", "auto");
            }
            Dp::NetctlTc | Dp::NetctlTrace => {
                self.netctl(&["sync", "-q"])?;
            }
            Dp::NetctlNoToContainer => {
                // The datapath as it was before the hook on the way into containers: the
                // same programs, its links unpinned (which detaches them).
                self.netctl(&["sync", "-q"])?;
                let links = format!("{}/v*/links/to_container@*", self.sb.bpffs.display());
                self.host(&format!("rm -f {links}"))?;
                let left = self.host(&format!("ls {links} 2>/dev/null | wc -l"))?;
                if left.trim() != "0" {
                    bail!("to_container still attached: {left}");
                }
            }
            Dp::NetctlCompat => {
                // What a Debian 11 kernel runs: cls_bpf filters, the _compat programs, TC only.
                self.sb.env("NETCTL_FEATURES_DENY", COMPAT_DENY);
                self.netctl(&["sync", "-q"])?;
                self.sb.env("NETCTL_FEATURES_DENY", "");
            }
            Dp::IptablesNft => {
                let ms = self.load_rules(
                    "iptables-restore",
                    &self.docker_rules(ports),
                    "docker.rules",
                )?;
                self.control
                    .push((format!("iptables-restore (nf_tables) {ports} ports"), ms));
            }
            Dp::IptablesLegacy => {
                let ms = self.load_rules(
                    "iptables-legacy-restore",
                    &self.docker_rules(ports),
                    "docker.rules",
                )?;
                self.control
                    .push((format!("iptables-legacy-restore {ports} ports"), ms));
            }
            Dp::NftMap => {
                let ms = self.load_rules("nft -f", &self.nft_rules(ports), "map.nft")?;
                self.control
                    .push((format!("nft -f (verdict map) {ports} ports"), ms));
            }
            Dp::NoNat => {}
        }
        if dp == Dp::NetctlTrace {
            let mut cmd = self
                .sb
                .netctl_cmd(&["trace", "--flows", "--drops", "--json"]);
            let child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            let mut bg = Background(child);
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(bg.0.stderr.take().unwrap()),
                &mut line,
            )?;
            self.trace = Some(bg);
        }
        Ok(())
    }

    /// Runs a client in the outside namespace (or in the container) and returns its JSON.
    fn client(&self, from_container: bool, script: &str) -> Result<Value> {
        let out = if from_container {
            self.sb.container_sh("client", script)
        } else {
            self.sb.outside_sh(script)
        };
        let text = check(out, script)?;
        serde_json::from_str(text.trim()).with_context(|| format!("{script}: {text}"))
    }

    fn record(
        &mut self,
        dp: Dp,
        ports: usize,
        figure: &'static str,
        unit: &'static str,
        value: f64,
        cpu: Option<f64>,
    ) {
        self.samples.push(Sample {
            dp,
            ports,
            figure,
            unit,
            value,
            cpu,
        });
    }

    /// An iperf3 run: Gbit/s received, and kernel CPU seconds per GB.
    fn throughput(
        &mut self,
        dp: Dp,
        ports: usize,
        figure: &'static str,
        from_container: bool,
        script: &str,
    ) -> Result<()> {
        let cpu0 = kernel_cpu_secs();
        let v = self.client(from_container, script)?;
        let cpu = kernel_cpu_secs() - cpu0;
        let sum = &v["end"]["sum_received"];
        let bytes = sum["bytes"].as_f64().unwrap_or(0.0);
        let gbps = sum["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
        let per_gb = (bytes > 0.0).then(|| cpu / (bytes / 1e9));
        self.record(dp, ports, figure, "Gbit/s", gbps, per_gb);
        Ok(())
    }

    fn measure(&mut self, dp: Dp, ports: usize, with_masquerade: bool) -> Result<()> {
        let (addr, http, iperf) = if dp == Dp::NoNat {
            (SERVER_IP.to_string(), 80, IPERF_PORT)
        } else {
            (self.sb.host_ip.clone(), HTTP_PORT, IPERF_PORT)
        };
        let s = self.plan.secs;
        let lg = self.loadgen.display().to_string();
        for (figure, streams) in [
            ("TCP throughput, 1 stream", 1),
            ("TCP throughput, 4 streams", 4),
        ] {
            let script = format!("timeout 60 iperf3 -c {addr} -p {iperf} -t {s} -P {streams} -J");
            self.throughput(dp, ports, figure, false, &script)?;
        }
        let cpu0 = kernel_cpu_secs();
        let v = self.client(false, &format!("timeout 60 {lg} crr {addr}:{http} {s} 8"))?;
        let cpu = kernel_cpu_secs() - cpu0;
        let ops = v["ops"].as_f64().unwrap_or(0.0);
        self.record(
            dp,
            ports,
            "new TCP connections",
            "conn/s",
            v["rate"].as_f64().unwrap_or(0.0),
            (ops > 0.0).then(|| cpu / (ops / 1e4)),
        );
        let v = self.client(false, &format!("timeout 60 {lg} rr {addr}:{http} {s} 4"))?;
        self.record(
            dp,
            ports,
            "TCP request/response",
            "trans/s",
            v["rate"].as_f64().unwrap_or(0.0),
            None,
        );
        self.record(
            dp,
            ports,
            "TCP request/response p50",
            "µs",
            v["p50_us"].as_f64().unwrap_or(0.0),
            None,
        );
        self.record(
            dp,
            ports,
            "TCP request/response p99",
            "µs",
            v["p99_us"].as_f64().unwrap_or(0.0),
            None,
        );
        let v = self.client(false, &format!("timeout 60 {lg} udp {addr}:{http} {s} 4"))?;
        self.record(
            dp,
            ports,
            "UDP request/response",
            "trans/s",
            v["rate"].as_f64().unwrap_or(0.0),
            None,
        );
        // 4,000-byte datagrams: every one crosses NAT as three fragments each way.
        let v = self.client(false, &format!("timeout 60 {lg} udp4k {addr}:{http} {s} 1"))?;
        self.record(
            dp,
            ports,
            "UDP 4,000-byte request/response",
            "trans/s",
            v["rate"].as_f64().unwrap_or(0.0),
            None,
        );
        let v = self.client(false, &format!("timeout 60 {lg} udp4k {addr}:{http} {s} 8"))?;
        self.record(
            dp,
            ports,
            "UDP 4,000-byte echo throughput, 8 clients",
            "Mbit/s",
            v["rate"].as_f64().unwrap_or(0.0) * 4000.0 * 8.0 / 1e6,
            None,
        );
        if with_masquerade {
            let out = self.sb.outside_ip.clone();
            let script = format!("timeout 60 iperf3 -c {out} -p 5202 -t {s} -J");
            self.throughput(dp, ports, "masquerade TCP throughput", true, &script)?;
            let v = self.client(true, &format!("timeout 60 {lg} crr {out}:9000 {s} 8"))?;
            self.record(
                dp,
                ports,
                "masquerade new connections",
                "conn/s",
                v["rate"].as_f64().unwrap_or(0.0),
                None,
            );
        }
        Ok(())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Sections to run besides the core: each measures one feature against its peers.
pub const SECTIONS: [&str; 9] = [
    "dataplane",
    "ipv6",
    "nat64",
    "host-local",
    "overlay",
    "dns",
    "cni",
    "docker",
    "busy",
];

pub fn run(netctl: &Path, loadgen: &Path, quick: bool, only: &[String]) -> Result<()> {
    if let Some(bad) = only.iter().find(|o| !SECTIONS.contains(&o.as_str())) {
        bail!("unknown section {bad:?}: use {}", SECTIONS.join(", "));
    }
    let wants = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    if let Some(reason) = netctl_tests::unavailable() {
        bail!("the benchmark {reason}");
    }
    for tool in [
        "iperf3",
        "iptables-restore",
        "iptables-legacy-restore",
        "nft",
    ] {
        if !crate::setup::is_cmd(tool) {
            bail!("{tool} is missing: run cargo xtask setup");
        }
    }
    let plan = if quick {
        Plan {
            rounds: 1,
            port_counts: vec![1, 10_000],
            secs: 1.0,
        }
    } else {
        Plan {
            rounds: 3,
            port_counts: vec![1, 1_000, 10_000],
            secs: 1.5,
        }
    };
    let started = Instant::now();
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    let mut b = Bench {
        sb,
        loadgen: loadgen.to_path_buf(),
        plan,
        samples: Vec::new(),
        extras: Vec::new(),
        control: Vec::new(),
        _outside: Vec::new(),
        trace: None,
    };
    b.setup()?;
    let counts = if wants("dataplane") {
        control_plane(&mut b)?;
        b.plan.port_counts.clone()
    } else {
        Vec::new()
    };
    for (i, ports) in counts.iter().enumerate() {
        b.activate(Dp::NetctlTc, *ports)?;
        b.set_filler(*ports)?;
        for round in 0..b.plan.rounds {
            eprintln!(
                "bench: {ports} published ports, round {}/{}",
                round + 1,
                b.plan.rounds
            );
            for dp in Dp::ALL {
                b.activate(dp, *ports)?;
                b.measure(dp, *ports, i == 0)?;
            }
        }
    }
    if wants("ipv6") {
        ipv6::run(&mut b)?;
    }
    if wants("nat64") {
        nat64::run(&mut b)?;
    }
    if wants("host-local") {
        host_local::run(&mut b)?;
    }
    if wants("overlay") {
        overlay::run(&mut b, netctl)?;
    }
    if wants("dns") {
        dns::run(&mut b)?;
    }
    if wants("cni") {
        cni::run(&mut b, netctl)?;
    }
    if wants("docker") {
        docker::run(&mut b, netctl)?;
    }
    if wants("busy") {
        busy::run(&mut b, netctl)?;
    }
    b.deactivate_all()?;
    let _ = b.netctl(&["sync", "-q"]);
    report(&b, started.elapsed())
}

/// Publishing cost: netctl vs the rule loaders, at 1, 100 and 10,000 ports, plus one more
/// port on a host that already publishes 10,000.
fn control_plane(b: &mut Bench) -> Result<()> {
    for n in [1usize, 100, 10_000] {
        let spec = format!("{}-{}:{}-{}", 40000, 40000 + n - 1, 40000, 40000 + n - 1);
        let ms = b.timed_netctl(&[
            "run",
            "-d",
            "--name",
            "cp",
            "--network",
            "bench",
            "-p",
            &spec,
            "--",
            "sleep",
            "1000",
        ])?;
        b.control
            .push((format!("netctl: publish {n} ports (run -d -p)"), ms));
        if n == 10_000 {
            let ms = b.timed_netctl(&[
                "run",
                "-d",
                "--name",
                "one-more",
                "--network",
                "bench",
                "-p",
                "30000:80",
                "--",
                "sleep",
                "1000",
            ])?;
            b.control.push((
                "netctl: one more port with 10000 published (run -d -p)".into(),
                ms,
            ));
            b.netctl(&["rm", "-f", "one-more"])?;
        }
        b.netctl(&["rm", "-f", "cp"])?;
    }
    Ok(())
}

fn report(b: &Bench, took: Duration) -> Result<()> {
    let out_dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    // (figure, ports, dp) → values
    let mut groups: BTreeMap<(&str, usize, Dp), Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<(&str, usize, Dp), Vec<f64>> = BTreeMap::new();
    let mut units: BTreeMap<&str, &str> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for s in &b.samples {
        groups
            .entry((s.figure, s.ports, s.dp))
            .or_default()
            .push(s.value);
        if let Some(c) = s.cpu {
            cpu.entry((s.figure, s.ports, s.dp)).or_default().push(c);
        }
        units.insert(s.figure, s.unit);
        if !order.contains(&s.figure) {
            order.push(s.figure);
        }
    }
    let mut md = String::new();
    if !b.samples.is_empty() {
        let _ = writeln!(md, "| figure | published ports | dataplane | median | spread (min–max) | × no NAT | × iptables | kernel CPU |");
        let _ = writeln!(
            md,
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
        );
    }
    let mut rows = Vec::new();
    for figure in &order {
        for ports in b.plan.port_counts.iter() {
            let med = |dp: Dp| {
                groups
                    .get(&(*figure, *ports, dp))
                    .map(|v| median(&mut v.clone()))
            };
            let base_nonat = med(Dp::NoNat);
            let base_ipt = med(Dp::IptablesNft);
            for dp in Dp::ALL {
                let Some(vals) = groups.get(&(*figure, *ports, dp)) else {
                    continue;
                };
                let m = median(&mut vals.clone());
                let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = vals.iter().cloned().fold(0.0, f64::max);
                let ratio = |base: Option<f64>| base.filter(|b| *b > 0.0).map(|b| m / b);
                let c = cpu
                    .get(&(*figure, *ports, dp))
                    .map(|v| median(&mut v.clone()));
                let unit = units[figure];
                let cpu_unit = if unit == "Gbit/s" {
                    "s/GB"
                } else {
                    "s/10k conn"
                };
                let _ = writeln!(
                    md,
                    "| {figure} | {ports} | {} | {m:.2} {unit} | {lo:.2}–{hi:.2} | {} | {} | {} |",
                    dp.name(),
                    ratio(base_nonat).map_or("–".into(), |r| format!("{r:.2}")),
                    ratio(base_ipt).map_or("–".into(), |r| format!("{r:.2}")),
                    c.map_or("–".into(), |c| format!("{c:.3} {cpu_unit}")),
                );
                rows.push(
                    json!({"figure": figure, "ports": ports, "dataplane": dp.name(), "unit": unit,
                    "median": m, "min": lo, "max": hi, "samples": vals,
                    "ratio_to_no_nat": ratio(base_nonat), "ratio_to_iptables": ratio(base_ipt),
                    "kernel_cpu": c}),
                );
            }
        }
    }
    // What the hook on the way into containers costs: the same run, with and without it.
    if let Some(ports) = b.plan.port_counts.iter().max() {
        let med = |figure: &str, dp: Dp| {
            groups
                .get(&(figure, *ports, dp))
                .map(|v| median(&mut v.clone()))
        };
        let mut first = true;
        for figure in [
            "new TCP connections",
            "TCP throughput, 1 stream",
            "TCP throughput, 4 streams",
        ] {
            let (Some(with), Some(without)) = (
                med(figure, Dp::NetctlTc),
                med(figure, Dp::NetctlNoToContainer),
            ) else {
                continue;
            };
            if first {
                let _ = writeln!(md, "\n| to_container at {ports} ports | with | without | × |\n| --- | ---: | ---: | ---: |");
                first = false;
            }
            let unit = units[figure];
            let _ = writeln!(
                md,
                "| {figure} | {with:.2} {unit} | {without:.2} {unit} | {:.3} |",
                if without > 0.0 { with / without } else { 0.0 }
            );
        }
    }
    extras_table(&mut md, &b.extras);
    let _ = writeln!(
        md,
        "\n| control plane | median ms | runs |\n| --- | ---: | ---: |"
    );
    let mut control: Vec<(&str, Vec<f64>)> = Vec::new();
    for (what, ms) in &b.control {
        match control.iter_mut().find(|(w, _)| w == what) {
            Some((_, v)) => v.push(*ms),
            None => control.push((what, vec![*ms])),
        }
    }
    for (what, v) in &mut control {
        let _ = writeln!(md, "| {what} | {:.1} | {} |", median(v), v.len());
    }
    let uname = check(Command::new("uname").arg("-r").output()?, "uname")?;
    let header = format!(
        "netctl benchmark, {} rounds, {} s per run, kernel {}, {} CPUs, took {:.0} s\n",
        b.plan.rounds,
        b.plan.secs,
        uname.trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        took.as_secs_f64()
    );
    let md = format!("{header}\n{md}");
    println!("{md}");
    std::fs::write(out_dir.join("results.md"), &md)?;
    let extras: Vec<Value> = b
        .extras
        .iter()
        .map(|e| json!({"section": e.section, "figure": e.figure, "subject": e.subject, "unit": e.unit, "value": e.value}))
        .collect();
    let j = json!({"header": header.trim(), "results": rows, "extras": extras,
        "control_plane_ms": b.control.iter().map(|(w, ms)| json!({"what": w, "ms": ms})).collect::<Vec<_>>()});
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&j)?,
    )?;
    std::fs::write(
        out_dir.join("connections.svg"),
        svg(&groups, &b.plan.port_counts),
    )?;
    eprintln!(
        "bench: wrote {}/results.{{md,json}} and connections.svg",
        out_dir.display()
    );
    Ok(())
}

/// The figures of the other sections (host-local clients, DNS, CNI, …): medians, spreads
/// and the ratio to the section's baseline (its first subject).
fn extras_table(md: &mut String, extras: &[Extra]) {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for e in extras {
        if !keys.contains(&(e.section, e.figure)) {
            keys.push((e.section, e.figure));
        }
    }
    let mut section = "";
    for (sec, fig) in keys {
        if sec != section {
            section = sec;
            let _ = writeln!(
                md,
                "\n| {sec}: figure | subject | median | spread (min–max) | × first |\n| --- | --- | ---: | ---: | ---: |"
            );
        }
        let mut subjects: Vec<&str> = Vec::new();
        for e in extras
            .iter()
            .filter(|e| e.section == sec && e.figure == fig)
        {
            if !subjects.contains(&e.subject.as_str()) {
                subjects.push(&e.subject);
            }
        }
        let med = |subj: &str| {
            let mut v: Vec<f64> = extras
                .iter()
                .filter(|e| e.section == sec && e.figure == fig && e.subject == subj)
                .map(|e| e.value)
                .collect();
            let (lo, hi) = (
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(0.0, f64::max),
            );
            (median(&mut v), lo, hi)
        };
        let base = med(subjects[0]).0;
        let unit = extras
            .iter()
            .find(|e| e.section == sec && e.figure == fig)
            .map_or("", |e| e.unit);
        for subj in subjects {
            let (m, lo, hi) = med(subj);
            let ratio = if base > 0.0 {
                format!("{:.2}", m / base)
            } else {
                "–".into()
            };
            let _ = writeln!(
                md,
                "| {fig} | {subj} | {m:.2} {unit} | {lo:.2}–{hi:.2} | {ratio} |"
            );
        }
    }
}

/// New connections per second against published ports, one line per dataplane.
fn svg(groups: &BTreeMap<(&str, usize, Dp), Vec<f64>>, counts: &[usize]) -> String {
    let (w, h, left, bottom) = (720.0, 420.0, 70.0, 50.0);
    let figure = "new TCP connections";
    let series: Vec<(Dp, Vec<f64>)> = Dp::ALL
        .iter()
        .map(|dp| {
            (
                *dp,
                counts
                    .iter()
                    .map(|c| {
                        groups
                            .get(&(figure, *c, *dp))
                            .map(|v| median(&mut v.clone()))
                            .unwrap_or(0.0)
                    })
                    .collect(),
            )
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().cloned())
        .fold(1.0, f64::max)
        * 1.1;
    let x = |i: usize| left + (w - left - 200.0) * (i as f64) / ((counts.len().max(2) - 1) as f64);
    let y = |v: f64| (h - bottom) - (h - bottom - 20.0) * v / max;
    let colors = [
        "#1f77b4", "#2ca02c", "#bcbd22", "#17becf", "#d62728", "#ff7f0e", "#9467bd", "#7f7f7f",
    ];
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n");
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"{left}\" y=\"14\">New TCP connections/s through a published port vs ports published</text>");
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - 200.0,
        h - bottom
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = writeln!(s, "<text x=\"5\" y=\"{:.1}\">{:.0}</text>", y(v) + 4.0, v);
    }
    for (i, c) in counts.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{c}</text>",
            x(i),
            h - bottom + 18.0
        );
    }
    for (n, (dp, vals)) in series.iter().enumerate() {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            colors[n % colors.len()],
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>",
            w - 190.0,
            40.0 + 18.0 * n as f64,
            colors[n % colors.len()],
            dp.name()
        );
    }
    s.push_str("</svg>\n");
    s
}
