//! `netctl trace` and `netctl stats` against real traffic.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    time::Duration,
};

use netctl_tests::{require_sandbox, Sandbox};
use serde_json::Value;

/// A running `netctl trace`, ready (its "tracing …" line seen) when returned.
struct Trace(Child);

impl Trace {
    fn start(sb: &Sandbox, args: &[&str]) -> Self {
        let mut all = vec!["trace"];
        all.extend(args);
        let mut child = sb
            .netctl_cmd(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("tracing"), "trace did not start: {line}");
        Trace(child)
    }

    /// Waits for the trace to end (by its --duration/--count) and returns its JSON lines.
    fn events(mut self) -> Vec<Value> {
        let out = std::mem::replace(
            &mut self.0,
            std::process::Command::new("true").spawn().unwrap(),
        )
        .wait_with_output()
        .unwrap();
        assert!(out.status.success(), "trace failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn whoami(sb: &Sandbox, name: &str, network: &str, publish: Option<&str>) {
    sb.whoami(name, Some(network), publish.as_slice(), 80);
}

#[test]
fn why_cannot_a_reach_b() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.71.0.0/24", "left"]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.72.0.0/24", "right"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "left",
        "--",
        "sleep",
        "300",
    ]);
    whoami(&sb, "b", "right", None);
    let trace = Trace::start(
        &sb,
        &[
            "--drops",
            "--json",
            "--container",
            "a",
            "--count",
            "1",
            "--duration",
            "10s",
        ],
    );
    sb.container_sh("a", "curl -s --max-time 1 http://10.72.0.2/");
    let events = trace.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["type"], "drop");
    assert_eq!(e["reason"], "isolation");
    assert_eq!(e["hook"], "from-container");
    assert_eq!(e["src_name"], "a");
    assert_eq!(e["dst_name"], "b");
    assert_eq!(e["dst"], "10.72.0.2:80");
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn who_is_hitting_port_8080() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.73.0.0/24", "front"]);
    whoami(&sb, "web", "front", Some("8080:80"));
    let trace = Trace::start(
        &sb,
        &[
            "--flows",
            "--json",
            "--port",
            "8080",
            "--count",
            "1",
            "--duration",
            "10s",
        ],
    );
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_some());
    let events = trace.events();
    let e = &events[0];
    assert_eq!(e["type"], "flow-new");
    assert_eq!(e["kind"], "published-port");
    assert_eq!(
        e["src"].as_str().unwrap().split(':').next().unwrap(),
        sb.outside_ip
    );
    assert_eq!(e["dst"], format!("{}:8080", sb.host_ip));
    assert_eq!(e["dst_name"], "web:80");
    assert_eq!(e["translated_dst"], "10.73.0.2:80");
    assert_eq!(e["translated_dst_name"], "web");
    assert_eq!(e["reply_src"], "10.73.0.2:80");
    // Readable lines too.
    let out = sb.netctl(&["trace", "--flows", "--count", "1", "--duration", "3s"]);
    assert!(out.status.success());
}

#[test]
fn pcap_of_a_request_reads_in_tcpdump() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.74.0.0/24", "front"]);
    whoami(&sb, "web", "front", Some("8080:80"));
    let file = sb.state_dir.join("capture.pcapng");
    let trace = Trace::start(
        &sb,
        &[
            "--pcap",
            file.to_str().unwrap(),
            "--container",
            "web",
            "--duration",
            "2s",
        ],
    );
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/hello", sb.host_ip))
        .is_some());
    drop(trace.events());
    let out = std::process::Command::new("tcpdump")
        .args(["-nn", "-A", "-r"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tcpdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("GET /hello"),
        "request not in capture:\n{text}"
    );
    // Each packet as the program left it: handed to the container translated, and the
    // reply leaving with the host's address and published port.
    assert!(text.contains("> 10.74.0.2.80:"), "{text}");
    assert!(
        text.contains(&format!("{}.8080 > {}", sb.host_ip, sb.outside_ip)),
        "{text}"
    );
    let ifaces = std::process::Command::new("tcpdump")
        .args(["-nn", "-e", "-r"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(ifaces.status.success());
}

#[test]
fn stats_count_what_was_sent() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // The daemon's metrics also on an address (inside the sandbox's host namespace).
    sb.env("NETCTL_METRICS_ADDR", "127.0.0.1:9417");
    // An upstream that is not there (nothing listens on the outside namespace's port 53):
    // forwarded questions fail, and the metrics say so.
    let nowhere = sb.outside_ip.clone();
    sb.host_dns(&[&nowhere]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.75.0.0/24", "front"]);
    whoami(&sb, "web", "front", Some("8080:80"));
    let before: Value = serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap();
    let ping = sb.container_sh("web", "ping -c 5 -i 0.2 -W 1 10.75.0.1");
    assert!(ping.status.success());
    for _ in 0..3 {
        assert!(sb
            .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
            .is_some());
    }
    let after: Value = serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap();
    let tx = |v: &Value| v["containers"]["web"]["tx_packets"].as_u64().unwrap();
    assert!(
        tx(&after) >= tx(&before) + 5 + 3,
        "tx {} -> {}",
        tx(&before),
        tx(&after)
    );
    let rx = |v: &Value| v["containers"]["web"]["rx_packets"].as_u64().unwrap();
    assert!(
        rx(&after) >= rx(&before) + 3,
        "rx {} -> {}",
        rx(&before),
        rx(&after)
    );
    assert_eq!(
        after["networks"]["front"]["tx_packets"],
        after["containers"]["web"]["tx_packets"]
    );
    let hits = after["ports"][0]["connections"].as_u64().unwrap();
    assert_eq!(hits, 3, "{after}");
    assert!(after["conntrack"]["capacity"].as_u64().unwrap() > 0);
    let table = sb.netctl_ok(&["stats"]);
    assert!(table.contains("80/tcp -> 0.0.0.0:8080"), "{table}");

    // Questions to the embedded DNS: one it answers, one it forwards in vain.
    let dig = sb.container_sh(
        "web",
        "dig +short +tries=1 +time=5 web; dig +tries=1 +time=5 nowhere.example | grep -c SERVFAIL",
    );
    let said = String::from_utf8_lossy(&dig.stdout);
    assert!(
        said.contains("10.75.0.") && said.trim_end().ends_with('1'),
        "{said}"
    );

    // The same for Prometheus: printed once, and scraped from the daemon's socket.
    let port = r#"netctl_published_port_connections_total{container="web",port="80/tcp -> 0.0.0.0:8080"} 3"#;
    let printed = sb.netctl_ok(&["stats", "--format", "prometheus"]);
    assert!(printed.contains(port), "{printed}");
    assert!(printed.contains("netctl_dns_queries_total"), "{printed}");
    let sock = sb.state_dir.join("metrics.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the metrics socket is root's");
    let scraped = netctl_tests::scrape_metrics(&sock);
    for want in [
        port,
        "# TYPE netctl_drops_total counter",
        r#"netctl_hook_packets_total{hook="from-container"}"#,
        r#"netctl_container_tx_packets_total{container="web"}"#,
        "netctl_conntrack_capacity ",
        "netctl_conntrack_evictions_total ",
        r#"netctl_dns_queries_total{network="front"} 2"#,
        r#"netctl_dns_local_answers_total{network="front"} 1"#,
        r#"netctl_dns_forwarded_total{network="front"} 1"#,
        r#"netctl_dns_forward_errors_total{network="front"} 1"#,
        r#"netctl_dns_response_seconds_count{network="front"} 2"#,
    ] {
        assert!(scraped.contains(want), "{want} not in:\n{scraped}");
    }
    let over_tcp = sb.host_sh("curl -s --max-time 5 http://127.0.0.1:9417/metrics");
    assert!(
        String::from_utf8_lossy(&over_tcp.stdout).contains(port),
        "{over_tcp:?}"
    );
    // Every sample line is `name{labels} value` or `name value`, a number last.
    for line in scraped.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn lost_events_are_reported_when_the_reader_stalls() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["sync"]);
    let trace = Trace::start(&sb, &["--packets", "--json", "--duration", "6s"]);
    let pid = nix::unistd::Pid::from_raw(trace.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Far more packets (two events each: in and out of the uplink) than the ring buffer holds
    // while nobody reads. Bounded in count and time, to the sandbox's own host address.
    let out = sb.outside_sh(&format!("ping -f -q -c 20000 -w 10 {}", sb.host_ip));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        out.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(100));
    let events = trace.events();
    let lost: u64 = events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!(
        lost > 0,
        "no lost-event report among {} events",
        events.len()
    );
    assert!(
        events.iter().any(|e| e["type"] == "packet"),
        "the delivered events still come"
    );
}

#[test]
fn published_port_replies_take_the_fast_path_out() {
    require_sandbox!();
    for fast in [true, false] {
        let mut sb = Sandbox::new();
        if !fast {
            sb.env("NETCTL_FASTPATH", "off");
        }
        sb.netctl_ok(&["network", "create", "--subnet", "10.76.0.0/24", "front"]);
        whoami(&sb, "web", "front", Some("8080:80"));
        let trace = Trace::start(&sb, &["--packets", "--json", "--duration", "2s"]);
        assert!(sb
            .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
            .is_some());
        let events = trace.events();
        let from_web: Vec<&Value> = events
            .iter()
            .filter(|e| e["hook"] == "from-container" && e["src"] == "10.76.0.2:80")
            .collect();
        assert!(!from_web.is_empty(), "no reply seen leaving web");
        let redirected = from_web.iter().all(|e| e["verdict"] == "redirect");
        let passed = from_web.iter().all(|e| e["verdict"] == "pass");
        assert!(
            if fast { redirected } else { passed },
            "fast path {fast}: {from_web:?}"
        );
        // Either way the uplink gives the replies the host's address and port.
        let out = events
            .iter()
            .find(|e| e["hook"] == "uplink-egress" && e["src"] == "10.76.0.2:80")
            .expect("reply on the uplink");
        assert_eq!(out["out_src"], format!("{}:8080", sb.host_ip));
    }
}

#[test]
fn the_kernels_own_drops_of_container_packets_show_with_its_reason() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.75.0.0/24", "front"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "front",
        "--",
        "sleep",
        "300",
    ]);
    let trace = Trace::start(
        &sb,
        &[
            "--drops",
            "--json",
            "--container",
            "a",
            "--count",
            "1",
            "--duration",
            "10s",
        ],
    );
    // A datagram to a port nobody listens on at the gateway: netctl passes it, the kernel
    // drops it (no socket).
    sb.container_sh(
        "a",
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"10.75.0.1\", 9))'",
    );
    let events = trace.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["type"], "drop");
    assert_eq!(e["hook"], "kernel");
    assert_eq!(e["reason"], "NO_SOCKET", "{e}");
    assert_eq!(e["src_name"], "a");
    assert_eq!(e["dst"], "10.75.0.1:9");
    // Not tracing: the tracer is gone with the command (nothing attached to kfree_skb).
    let attached = std::process::Command::new("bpftool")
        .args(["link", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&attached.stdout);
    assert!(!text.contains("kernel_drop"), "{text}");
}

/// Docker (26+) turns IPv6 off on a container's interface of an IPv4 network: no link-local
/// address, no solicitations. Here that also means an idle network traces no drop (the
/// datapath drops IPv6, and each new container's neighbour and router solicitations used to
/// fill `trace --drops`).
#[test]
fn an_idle_network_traces_no_drop_and_its_interfaces_have_no_ipv6() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.76.0.0/24", "idle"]);
    sb.sleeper("a", "idle");
    let trace = Trace::start(&sb, &["--drops", "--json", "--duration", "6s"]);
    sb.sleeper("b", "idle");
    let v6 = sb.container_sh(
        "b",
        "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -6 -o addr show dev eth0; \
         ip -6 -o addr show dev lo",
    );
    let v6 = String::from_utf8_lossy(&v6.stdout).to_string();
    let mut lines = v6.lines();
    assert_eq!(lines.next(), Some("1"), "{v6}");
    let addrs: Vec<&str> = lines.collect();
    assert!(
        addrs.iter().all(|l| !l.contains("eth0")),
        "eth0 has IPv6: {v6}"
    );
    assert!(
        addrs.iter().any(|l| l.contains("::1/128")),
        "lo keeps ::1 (/etc/hosts names it): {v6}"
    );
    let events = trace.events();
    assert!(events.is_empty(), "drops on an idle network: {events:?}");
    // And IPv4 between them works as ever.
    let b = sb.container_ip("b");
    let ping = sb.container_sh("a", &format!("ping -c 2 -W 1 {b}"));
    assert!(ping.status.success(), "{ping:?}");
}

#[test]
fn ipv6_drops_name_who_sent_what_and_a_busy_dual_stack_network_drops_nothing() {
    require_sandbox!();
    let sb = Sandbox::new();
    for (name, v4, v6) in [
        ("a", "10.74.1.0/24", "fd74:1::/64"),
        ("b", "10.74.2.0/24", "fd74:2::/64"),
    ] {
        sb.netctl_ok(&[
            "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, name,
        ]);
    }
    sb.sleeper("a1", "a");
    sb.sleeper("a2", "a");
    sb.sleeper("b1", "b");
    // Neighbour discovery, listener reports, pings among a's containers and to its gateway:
    // nothing of it is a drop.
    let quiet = Trace::start(&sb, &["--drops", "--json", "--duration", "3s"]);
    for (from, to) in [
        ("a1", "fd74:1::3"),
        ("a2", "fd74:1::2"),
        ("a1", "fd74:1::1"),
    ] {
        let out = sb.container_sh(from, &format!("ping -6 -c 2 -i 0.2 -W 1 {to}"));
        assert!(out.status.success(), "{from} → {to}: {out:?}");
    }
    let events = quiet.events();
    assert!(events.is_empty(), "{events:?}");
    // b1 tries a2 over TCP: one isolation drop, with both ends named.
    let trace = Trace::start(
        &sb,
        &[
            "--drops",
            "--json",
            "--container",
            "a2",
            "--count",
            "1",
            "--duration",
            "10s",
        ],
    );
    sb.container_sh(
        "b1",
        "python3 -c 'import socket; socket.create_connection((\"fd74:1::3\", 8080), timeout=1)'",
    );
    let events = trace.events();
    let e = &events[0];
    assert_eq!(e["reason"], "isolation", "{e}");
    assert_eq!(e["proto"], "tcp");
    assert!(
        e["src"].as_str().unwrap().starts_with("[fd74:2::2]:"),
        "{e}"
    );
    assert_eq!(e["dst"], "[fd74:1::3]:8080");
    assert_eq!(e["src_name"], "b1");
    assert_eq!(e["dst_name"], "a2");
}
