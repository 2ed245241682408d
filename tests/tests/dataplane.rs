//! The eBPF dataplane with real traffic: published ports (TCP, UDP, ranges), masquerade,
//! isolation, ICC, internal networks, hairpin — in every XDP/fast-path mode, and with no
//! iptables or nftables rule anywhere.

use netctl_tests::{require_sandbox, Sandbox};

fn published_ports_work(sb: &Sandbox) {
    sb.whoami(
        "web",
        None,
        &["8080:80", "5353:80/udp", "9000-9001:80-81"],
        80,
    );
    let url = format!("http://{}:8080/", sb.host_ip);
    // The container sees the real client, not a proxy.
    assert_eq!(
        sb.curl_from_outside(&url).as_deref(),
        Some(sb.outside_ip.as_str())
    );
    assert_eq!(
        sb.udp_from_outside(&sb.host_ip, 5353).as_deref(),
        Some(format!("udp {}", sb.outside_ip).as_str())
    );
    assert_eq!(
        sb.curl_from_outside(&format!("http://{}:9000/", sb.host_ip))
            .as_deref(),
        Some(sb.outside_ip.as_str())
    );
    // Nothing listens on the range's second container port: refused, not hung.
    assert!(sb
        .curl_from_outside(&format!("http://{}:9001/", sb.host_ip))
        .is_none());
    // Not published: the host answers (refuses) itself.
    assert!(sb
        .curl_from_outside(&format!("http://{}:8081/", sb.host_ip))
        .is_none());
    // No way in straight to the container address, even with a route to it.
    let web_ip = sb.state()["containers"]["web"]["endpoints"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    sb.outside_sh(&format!("ip route add 172.17.0.0/16 via {}", sb.host_ip));
    assert!(sb
        .curl_from_outside(&format!("http://{web_ip}:80/"))
        .is_none());
    let stats: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap();
    assert!(
        stats["drops"]["no-way-in"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["conntrack"]["entries"].as_u64().unwrap() >= 2,
        "{stats}"
    );
}

#[test]
fn published_ports_default_mode() {
    require_sandbox!();
    published_ports_work(&Sandbox::new());
}

#[test]
fn published_ports_xdp_native() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_XDP", "native");
    published_ports_work(&sb);
}

#[test]
fn published_ports_tc_only() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_XDP", "off");
    published_ports_work(&sb);
}

#[test]
fn published_ports_xdp_generic_without_fast_path() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_XDP", "generic");
    sb.env("NETCTL_FASTPATH", "off");
    published_ports_work(&sb);
}

#[test]
fn a_stream_through_a_published_port() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.iperf_server("perf", 5201);
    let out = sb.outside_sh(&format!(
        "timeout 20 iperf3 -c {} -p 5201 -t 1 -J",
        sb.host_ip
    ));
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "only {bytes} bytes went through");
}

#[test]
fn masquerade_and_routed_networks() {
    require_sandbox!();
    let sb = Sandbox::new();
    let _srv = sb.outside_whoami_server(9999, 60);
    let url = format!("http://{}:9999/", sb.outside_ip);
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    // The outside sees the uplink address.
    let out = sb.container_sh("c", &format!("curl -sf --max-time 5 {url}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), sb.host_ip);
    let ping = sb.container_sh("c", &format!("ping -c 2 -i 0.2 -W 2 {}", sb.outside_ip));
    assert!(ping.status.success(), "ping through masquerade failed");
    let udp = sb.container_sh(
        "c",
        &format!(
            "python3 -c '{}' {} 9999",
            netctl_tests::UDP_CLIENT,
            sb.outside_ip
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&udp.stdout).trim(),
        format!("udp {}", sb.host_ip)
    );

    // Masquerade off: routed as is; the outside needs (and gets) a route back.
    sb.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.66.0.0/24",
        "-o",
        "masquerade=false",
        "routed",
    ]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "--network",
        "routed",
        "--",
        "sleep",
        "300",
    ]);
    sb.outside_sh(&format!("ip route add 10.66.0.0/24 via {}", sb.host_ip));
    let out = sb.container_sh("r", &format!("curl -sf --max-time 5 {url}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "10.66.0.2");
}

#[test]
fn isolation_between_networks_icc_and_internal() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "one"]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.62.0.0/24", "two"]);
    sb.whoami("a", Some("one"), &[], 80);
    sb.whoami("b", Some("two"), &["8080:80"], 80);
    let get = |from: &str, url: &str| {
        let out = sb.container_sh(from, &format!("curl -sf --max-time 3 {url}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Different networks cannot talk…
    assert_eq!(get("a", "http://10.62.0.2/"), None);
    assert_eq!(get("b", "http://10.61.0.2/"), None);
    // …except through a published port (hairpin), and a container on both reaches both.
    assert!(get("a", &format!("http://{}:8080/", sb.host_ip)).is_some());
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "both",
        "--network",
        "one",
        "--",
        "sleep",
        "300",
    ]);
    sb.netctl_ok(&["network", "connect", "two", "both"]);
    assert_eq!(
        get("both", "http://10.61.0.2/").as_deref(),
        Some("10.61.0.3")
    );
    assert_eq!(
        get("both", "http://10.62.0.2/").as_deref(),
        Some("10.62.0.3")
    );
    // The gateway stays reachable.
    assert!(sb
        .container_sh("a", "ping -c 1 -W 2 10.61.0.1")
        .status
        .success());

    // ICC off: no talking inside the network, but published ports still answer.
    sb.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.63.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    sb.whoami("q1", Some("quiet"), &["8181:80"], 80);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "q2",
        "--network",
        "quiet",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(get("q2", "http://10.63.0.2/"), None);
    assert_eq!(
        get("q2", &format!("http://{}:8181/", sb.host_ip)).as_deref(),
        Some("10.63.0.1")
    );
    assert_eq!(
        sb.curl_from_outside(&format!("http://{}:8181/", sb.host_ip))
            .as_deref(),
        Some(sb.outside_ip.as_str())
    );

    // Internal: nothing out, nothing in, the network itself works.
    sb.netctl_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.64.0.0/24",
        "priv",
    ]);
    sb.whoami("i1", Some("priv"), &[], 80);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "i2",
        "--network",
        "priv",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(get("i2", "http://10.64.0.2/").as_deref(), Some("10.64.0.3"));
    assert_eq!(get("i2", &format!("http://{}:8080/", sb.host_ip)), None);
    assert!(!sb
        .container_sh("i2", &format!("ping -c 1 -W 1 {}", sb.outside_ip))
        .status
        .success());
    // Even a container that adds a default route itself gets nowhere: the datapath drops it.
    assert!(sb
        .container_sh("i2", "ip route add default via 10.64.0.1")
        .status
        .success());
    assert!(!sb
        .container_sh("i2", &format!("ping -c 1 -W 1 {}", sb.outside_ip))
        .status
        .success());
    assert_eq!(get("i2", &format!("http://{}:8080/", sb.host_ip)), None);
    sb.outside_sh(&format!("ip route add 10.64.0.0/24 via {}", sb.host_ip));
    assert!(sb.curl_from_outside("http://10.64.0.2/").is_none());

    let stats: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap();
    for reason in ["isolation", "icc-off", "internal-network"] {
        assert!(
            stats["drops"][reason].as_u64().unwrap() >= 1,
            "{reason}: {stats}"
        );
    }
}

#[test]
fn hairpin_to_self_and_others() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80"], 80);
    sb.netctl_ok(&["run", "-d", "--name", "client", "--", "sleep", "300"]);
    let url = format!("http://{}:8080/", sb.host_ip);
    for from in ["client", "web"] {
        let out = sb.container_sh(from, &format!("curl -sf --max-time 5 {url}"));
        // The target sees its network's gateway (hairpin is masqueraded, as Docker does).
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "172.17.0.1",
            "from {from}"
        );
    }
}

#[test]
fn ports_survive_sync_and_container_recreation() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80"], 80);
    let url = format!("http://{}:8080/", sb.host_ip);
    assert!(sb.curl_from_outside(&url).is_some());
    sb.netctl_ok(&["sync"]);
    assert!(sb.curl_from_outside(&url).is_some());
    sb.netctl_ok(&["rm", "-f", "web"]);
    assert!(
        sb.curl_from_outside(&url).is_none(),
        "port still answers after rm"
    );
    sb.whoami("web2", None, &["8080:80"], 80);
    assert_eq!(
        sb.curl_from_outside(&url).as_deref(),
        Some(sb.outside_ip.as_str())
    );
    // Even after the programs were detached and maps emptied: sync restores everything.
    sb.detach_programs();
    // The kernel releases unpinned links from a work queue: give it a moment.
    let detached = (0..20).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        sb.curl_from_outside(&url).is_none()
    });
    assert!(detached, "the port still answers without the programs");
    sb.netctl_ok(&["sync"]);
    assert_eq!(
        sb.curl_from_outside(&url).as_deref(),
        Some(sb.outside_ip.as_str())
    );
}

#[test]
fn no_iptables_or_nftables_rules() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80"], 80);
    sb.netctl_ok(&["network", "create", "--internal", "priv"]);
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_some());
    let ipt = sb.host_sh("iptables-save 2>/dev/null; iptables-legacy-save 2>/dev/null");
    let rules: Vec<String> = String::from_utf8_lossy(&ipt.stdout)
        .lines()
        .filter(|l| l.starts_with("-A") || l.starts_with("-N"))
        .map(str::to_string)
        .collect();
    assert!(rules.is_empty(), "iptables rules: {rules:?}");
    let nft = sb.host_sh("nft list ruleset");
    assert!(nft.status.success());
    assert!(
        String::from_utf8_lossy(&nft.stdout).trim().is_empty(),
        "nft: {}",
        String::from_utf8_lossy(&nft.stdout)
    );
}
