//! IPv6 beyond the host: a dual-stack network's containers reach IPv6 servers outside
//! through masquerade (NAT66) to the uplink's address, a published port answers on the
//! host's IPv6 address with the client's address kept (DNAT66), and nothing from outside
//! reaches a container's IPv6 address directly — the host's IPv6 forwarding stays off.

use netctl_tests::{
    drop_count as drops, require_sandbox, Background, Sandbox, CONNECT6, UPLINK, WHOAMI6,
};

/// The sandbox's uplink with IPv6 on both ends (`HOST6` and `OUTSIDE6`, one /64) and the
/// host's IPv6 default route through the outside namespace.
const HOST6: &str = "fd64:77::2";
const OUTSIDE6: &str = "fd64:77::1";

fn ipv6_uplink(sb: &Sandbox) {
    for (host, addr) in [(true, HOST6), (false, OUTSIDE6)] {
        let run = if host {
            Sandbox::host_sh
        } else {
            Sandbox::outside_sh
        };
        let out = run(
            sb,
            &format!("ip -6 addr add {addr}/64 dev {UPLINK} nodad && sysctl -qw net.ipv6.conf.{UPLINK}.disable_ipv6=0"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sb.host_sh(&format!(
        "ip -6 route add default via {OUTSIDE6} dev {UPLINK}"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn outside_server(sb: &Sandbox, port: u16) -> Background {
    let bg = Background(sb.spawn_outside(&format!("timeout 60 python3 -c '{WHOAMI6}' {port}")));
    let wait = format!(
        "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.05; done; exit 1"
    );
    assert!(
        sb.outside_sh(&wait).status.success(),
        "outside server did not start"
    );
    bg
}

fn connect_from_outside(sb: &Sandbox, addr: &str, port: u16) -> String {
    let out = sb.outside_sh(&format!("python3 -c '{CONNECT6}' {addr} {port}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stats(sb: &Sandbox) -> String {
    sb.netctl_ok(&["stats", "--json"])
}

#[test]
fn containers_reach_ipv6_outside_through_masquerade_and_published_ports_answer_on_ipv6() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.64.0.0/24",
        "--subnet",
        "fd64:1::/64",
        "dual",
    ]);
    sb.serve6("web", "dual", Some("8081:8081"), 8081);
    let _server = outside_server(&sb, 9090);

    // Out: the outside server sees the host's uplink address, not the container's.
    assert_eq!(sb.connect6("web", OUTSIDE6, 9090), HOST6);
    // Again (a new flow, a new source port) and ICMPv6 echo both ways.
    assert_eq!(sb.connect6("web", OUTSIDE6, 9090), HOST6);
    let ping = sb.netctl(&[
        "exec", "web", "--", "ping", "-6", "-c", "1", "-W", "2", OUTSIDE6,
    ]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // In: the published port on the host's IPv6 address, the client's address kept.
    assert_eq!(connect_from_outside(&sb, HOST6, 8081), OUTSIDE6);

    // No way in: a route to the container's subnet through the host gets nothing through
    // (the host does not forward IPv6, and the datapath drops it as no flow's).
    let web6 = sb.ip6_of("web", "dual");
    let web6 = web6.as_str();
    assert!(web6.starts_with("fd64:1::"), "{web6}");
    let out = sb.outside_sh(&format!("ip -6 route add fd64:1::/64 via {HOST6}"));
    assert!(out.status.success());
    let before = drops(&stats(&sb), "no-way-in");
    assert!(connect_from_outside(&sb, web6, 8081).starts_with("failed"));
    assert!(drops(&stats(&sb), "no-way-in") > before);
    // The host's own IPv6 forwarding is still off.
    let fwd = sb.host_sh("sysctl -n net.ipv6.conf.all.forwarding");
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "0");

    // A bridge made by an older netctl (its own IPv6 forwarding off) is repaired by sync.
    let br = sb.host_sh("ip -o -6 addr show to fd64:1::1/128 | awk '{print $2}'");
    let br = String::from_utf8_lossy(&br.stdout).trim().to_string();
    assert!(!br.is_empty());
    let fwd = format!("/proc/sys/net/ipv6/conf/{br}/forwarding");
    assert!(sb.host_sh(&format!("echo 0 > {fwd}")).status.success());
    assert!(sb.connect6("web", OUTSIDE6, 9090).starts_with("failed"));
    let synced = sb.netctl_ok(&["sync"]);
    assert!(synced.contains("IPv6 forwarding"), "{synced}");
    assert_eq!(sb.connect6("web", OUTSIDE6, 9090), HOST6);

    // Forged from outside: a container's address as the source is dropped on the uplink.
    let before = drops(&stats(&sb), "spoofed-source");
    let forge = format!(
        "ip -6 addr add {web6}/128 dev {UPLINK} nodad && \
         python3 -c 'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind((\"{web6}\", 5353)); s.sendto(b\"x\", (\"{HOST6}\", 8081))'; \
         ip -6 addr del {web6}/128 dev {UPLINK}"
    );
    sb.outside_sh(&forge);
    assert!(drops(&stats(&sb), "spoofed-source") > before);
}

#[test]
fn ipv6_flows_show_in_trace_with_both_tuples_and_names() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.66.0.0/24",
        "--subnet",
        "fd66:1::/64",
        "dual",
    ]);
    sb.serve6("web", "dual", Some("8081:8081"), 8081);
    let web6 = sb.ip6_of("web", "dual");
    let _server = outside_server(&sb, 9090);
    let mut trace = sb
        .netctl_cmd(&[
            "trace",
            "--flows",
            "--json",
            "--count",
            "3",
            "--duration",
            "10s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = std::io::BufReader::new(trace.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("tracing"), "{line}");
    assert_eq!(sb.connect6("web", OUTSIDE6, 9090), HOST6);
    assert_eq!(connect_from_outside(&sb, HOST6, 8081), OUTSIDE6);
    let out = trace.wait_with_output().unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == "flow-new" && e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} flow in {events:?}"))
    };
    let starts = |e: &serde_json::Value, field: &str, prefix: String| {
        let v = e[field].as_str().unwrap_or_default();
        assert!(v.starts_with(&prefix), "{field} {v}, not {prefix}…: {e}");
    };
    let out = find("masquerade");
    starts(out, "src", format!("[{web6}]:"));
    assert_eq!(out["dst"], format!("[{OUTSIDE6}]:9090"));
    assert_eq!(out["src_name"], "web");
    starts(out, "translated_src", format!("[{HOST6}]:"));
    let inn = find("published-port");
    starts(inn, "src", format!("[{OUTSIDE6}]:"));
    assert_eq!(inn["dst"], format!("[{HOST6}]:8081"));
    assert_eq!(inn["dst_name"], "web:8081");
    assert_eq!(inn["translated_dst"], format!("[{web6}]:8081"));
    assert_eq!(inn["translated_dst_name"], "web");
    // And in the container's counters (it has no IPv4 traffic here: all of it is IPv6's).
    let st: serde_json::Value = serde_json::from_str(&stats(&sb)).unwrap();
    let web = &st["containers"]["web"];
    assert!(web["rx_packets"].as_u64().unwrap() >= 3, "{web}");
    assert!(web["tx_packets"].as_u64().unwrap() >= 6, "{web}");
    assert!(web["rx_bytes"].as_u64().unwrap() > 0, "{web}");
}

#[test]
fn ports_published_on_one_ipv6_address_answer_there_only() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    let other6 = "fd64:77::3";
    let out = sb.host_sh(&format!("ip -6 addr add {other6}/64 dev {UPLINK} nodad"));
    assert!(out.status.success());
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.65.0.0/24",
        "--subnet",
        "fd65:1::/64",
        "dual",
    ]);
    let one = format!("[{HOST6}]:8081:8081");
    sb.serve6("one", "dual", Some(&one), 8081);
    sb.serve6("every6", "dual", Some("[::]:8083:8083"), 8083);
    let host4 = sb.host_ip.clone();
    // On that address only; every IPv6 address, and no IPv4 one.
    assert_eq!(connect_from_outside(&sb, HOST6, 8081), OUTSIDE6);
    assert!(connect_from_outside(&sb, other6, 8081).starts_with("failed"));
    assert!(connect_from_outside(&sb, &host4, 8081).starts_with("failed"));
    assert_eq!(connect_from_outside(&sb, HOST6, 8083), OUTSIDE6);
    assert_eq!(connect_from_outside(&sb, other6, 8083), OUTSIDE6);
    assert!(connect_from_outside(&sb, &host4, 8083).starts_with("failed"));
    assert!(sb
        .netctl_ok(&["port", "one"])
        .contains(&format!("[{HOST6}]:8081")));
    let st: serde_json::Value = serde_json::from_str(&stats(&sb)).unwrap();
    let hits = st["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["container"] == "one")
        .map(|p| p["connections"].as_u64().unwrap());
    assert_eq!(hits, Some(1), "{st}");

    // Taken: every address includes this one; [::] takes [::1]. Not the host's: refused.
    // Each refusal leaves nothing behind.
    for (spec, err) in [
        ("8081:80", "already published"),
        ("[::1]:8083:80", "already published"),
        ("[fd64:77::99]:8084:80", "cannot assign requested address"),
    ] {
        let out = sb.netctl(&[
            "run",
            "-d",
            "--name",
            "no",
            "--network",
            "dual",
            "-p",
            spec,
            "--",
            "sleep",
            "60",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(err),
            "{spec}: {stderr}"
        );
        assert!(!sb.netctl_ok(&["ps", "-a"]).contains(" no"), "{spec}");
    }
    // IPv4's loopback is another socket.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "lo4",
        "--network",
        "dual",
        "-p",
        "127.0.0.1:8083:80",
        "--",
        "sleep",
        "60",
    ]);
}

#[test]
fn a_routed_ipv6_network_leaves_with_its_own_addresses_and_lets_in_only_published_ports() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.66.0.0/24",
        "--subnet",
        "fd66:1::/64",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv6=routed",
        "routed",
    ]);
    // Docker's words for a bad mode: refused in one line, nothing made.
    let err = sb.netctl_err(&[
        "network",
        "create",
        "--ipv6",
        "-o",
        "gateway_mode_ipv6=bridged",
        "bad",
    ]);
    assert!(err.contains("use nat or routed"), "{err}");
    assert!(!sb.netctl_ok(&["network", "ls"]).contains("bad"));
    sb.serve6("web", "routed", Some("8081:8081"), 8081);
    let web6 = sb.ip6_of("web", "routed");
    // The outside knows the route to the network, as a routed setup needs.
    let out = sb.outside_sh(&format!("ip -6 route add fd66:1::/64 via {HOST6}"));
    assert!(out.status.success());
    let _server = outside_server(&sb, 9092);
    // Out with the container's own address.
    assert_eq!(sb.connect6("web", OUTSIDE6, 9092), web6);
    // In: the published container port at the container's address, and ping.
    assert_eq!(connect_from_outside(&sb, &web6, 8081), OUTSIDE6);
    let ping = sb.outside_sh(&format!("ping -6 -c 1 -W 2 {web6}"));
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // Not a container that publishes nothing, on the same port.
    sb.serve6("quiet", "routed", None, 8081);
    let quiet6 = sb.ip6_of("quiet", "routed");
    let before = drops(&stats(&sb), "no-way-in");
    assert!(connect_from_outside(&sb, &quiet6, 8081).starts_with("failed"));
    assert!(drops(&stats(&sb), "no-way-in") > before);
}

#[test]
fn a_container_reaches_a_published_port_on_the_hosts_ipv6_address() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    for (name, v4, v6) in [
        ("front", "10.67.0.0/24", "fd67:1::/64"),
        ("back", "10.67.1.0/24", "fd67:2::/64"),
    ] {
        sb.netctl_ok(&[
            "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, name,
        ]);
    }
    sb.serve6("web", "back", Some("8081:8081"), 8081);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "--",
        "sleep",
        "300",
    ]);
    // Hairpin through the host's uplink address and the client's own gateway: the backend
    // sees its network's IPv6 gateway (as Docker's hairpin NAT shows it), the client the
    // address it dialled.
    for host in [HOST6, "fd67:1::1"] {
        assert_eq!(sb.connect6("client", host, 8081), "fd67:2::1", "via {host}");
    }
    // A port nobody published is the host's: refused by the host itself, no drop.
    assert!(sb.connect6("client", HOST6, 8090).starts_with("failed"));
}

/// Accepts one connection on [::]:PORT, prints the client's address and port, keeps it open.
const HOLD6: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(1)
c, peer = s.accept(); print(peer[0], peer[1], flush=True); time.sleep(30)
"#;

/// Sends an ICMPv6 packet too big (MTU 1280) to ARGV1 quoting a TCP segment from
/// [ARGV1]:ARGV2 to [ARGV3]:ARGV4 (the kernel computes the ICMPv6 checksum).
const TOO_BIG: &str = r#"
import socket, struct, sys
src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x10, 65535, 0x1234, 0)
ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
msg = struct.pack("!BBHI", 2, 0, 0, 1280) + ip + tcp
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.sendto(msg, (src, 0))
"#;

fn snmp6(sb: &Sandbox, container: &str, counter: &str) -> u64 {
    let out = sb.netctl(&["exec", container, "--", "cat", "/proc/net/snmp6"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(counter)
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

#[test]
fn a_packet_too_big_from_outside_reaches_the_masqueraded_container_intact() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.68.0.0/24",
        "--subnet",
        "fd68:1::/64",
        "dual",
    ]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "dual",
        "--",
        "sleep",
        "300",
    ]);
    let mut server = sb.spawn_outside(&format!("timeout 40 python3 -c '{HOLD6}' 9093"));
    let wait =
        "for i in $(seq 100); do ss -ltnH | grep -q ':9093 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.outside_sh(wait).status.success());
    let client = format!(
        "import socket, time; c = socket.create_connection(('{OUTSIDE6}', 9093)); time.sleep(20)"
    );
    let mut held = sb
        .netctl_cmd(&["exec", "c", "--", "python3", "-c", &client])
        .spawn()
        .unwrap();
    // What the outside saw: the host's address and the NAT port.
    let mut line = String::new();
    let stdout = server.stdout.take().expect("piped");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let mut seen = line.split_whitespace();
    assert_eq!(seen.next(), Some(HOST6), "{line}");
    let nat_port = seen.next().unwrap().to_string();
    let before = snmp6(&sb, "c", "Icmp6InPktTooBigs");
    let csum_before = snmp6(&sb, "c", "Icmp6InCsumErrors");
    let out = sb.outside_sh(&format!(
        "python3 -c '{TOO_BIG}' {HOST6} {nat_port} {OUTSIDE6} 9093"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while snmp6(&sb, "c", "Icmp6InPktTooBigs") == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        snmp6(&sb, "c", "Icmp6InPktTooBigs") > before,
        "the error did not arrive"
    );
    assert_eq!(
        snmp6(&sb, "c", "Icmp6InCsumErrors"),
        csum_before,
        "checksum broken"
    );
    let _ = held.kill();
    let _ = held.wait();
    let _ = server.kill();
    let _ = server.wait();
}

/// `--ipv4=false` (Docker 28's IPv6-only networks): containers have IPv6 alone, reach one
/// another by name (AAAA from the resolver on the IPv6 gateway), the outside through NAT66;
/// their published ports answer on the host's IPv6 addresses, from outside and from the host
/// itself; a root process that gives itself an IPv4 address gets nowhere with it.
#[test]
fn an_ipv6_only_network_carries_everything_over_ipv6() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        "fd68:1::/64",
        "only6",
    ]);
    let n: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "only6"])).unwrap();
    assert_eq!(n[0]["EnableIPv4"], false, "{n}");
    assert_eq!(n[0]["EnableIPv6"], true, "{n}");
    let configs = n[0]["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{n}");
    assert_eq!(configs[0]["Subnet"], "fd68:1::/64");
    // The bridge has no IPv4 address.
    let br = sb.host_sh("ip -o -6 addr show to fd68:1::1/128 | awk '{print $2}'");
    let br = String::from_utf8_lossy(&br.stdout).trim().to_string();
    let v4 = sb.host_sh(&format!("ip -o -4 addr show dev {br}"));
    assert!(
        v4.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&v4.stdout)
    );

    sb.serve6("web", "only6", Some("8082:8082"), 8082);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "only6",
        "--network-alias",
        "front",
        "--add-host",
        "gw:host-gateway",
        "--",
        "sleep",
        "300",
    ]);
    let c: serde_json::Value = serde_json::from_str(&sb.netctl_ok(&["inspect", "client"])).unwrap();
    let ep = &c[0]["NetworkSettings"]["Networks"]["only6"];
    assert_eq!(ep["IPAddress"], "", "{ep}");
    assert_eq!(ep["Gateway"], "", "{ep}");
    assert_eq!(ep["IPv6Gateway"], "fd68:1::1", "{ep}");
    let client6 = sb.ip6_of("client", "only6");
    let inside = sb.container_sh(
        "client",
        "ip -4 addr show dev eth0; ip -4 route; echo ---; ip -6 route show default; cat /etc/resolv.conf /etc/hosts",
    );
    let inside = String::from_utf8_lossy(&inside.stdout).into_owned();
    let (v4, rest) = inside.split_once("---").unwrap();
    assert!(v4.trim().is_empty(), "{inside}");
    assert!(rest.contains("default via fd68:1::1"), "{inside}");
    assert!(rest.contains("nameserver fd68:1::1"), "{inside}");
    assert!(rest.contains(&format!("{client6}\t")), "{inside}");

    // By name (the resolver answers AAAA, and NODATA for A), the server sees the client.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = sb.connect6("client", "web", 8082);
        if got == client6 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "web by name: {got}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let a = sb.container_sh("client", "getent ahostsv4 web");
    assert!(!a.status.success(), "{a:?}");
    // Its alias, from the other container; `host-gateway` is the IPv6 gateway.
    let alias = sb.container_sh("web", "getent ahostsv6 front");
    assert!(
        String::from_utf8_lossy(&alias.stdout).contains(&client6),
        "{alias:?}"
    );
    assert!(rest.contains("fd68:1::1\tgw"), "{inside}");
    // An idle IPv6-only network and everything above dropped nothing.
    assert_eq!(netctl_tests::all_drops(&stats(&sb)), 0, "{}", stats(&sb));

    // Out through NAT66; in through the published port on the host's IPv6 address.
    let _server = outside_server(&sb, 9090);
    assert_eq!(sb.connect6("client", OUTSIDE6, 9090), HOST6);
    assert_eq!(connect_from_outside(&sb, HOST6, 8082), OUTSIDE6);
    // Nothing turns IPv4 into IPv6: the host's IPv4 address has nothing there.
    let v4 = sb.outside_sh(&format!("python3 -c '{CONNECT6}' {} 8082", sb.host_ip));
    assert!(String::from_utf8_lossy(&v4.stdout).starts_with("failed"));
    // The host's own clients, over ::1 (the backend sees the network's gateway), where the
    // IPv6 socket programs run (socket storage).
    let local = sb.host_sh(&format!("python3 -c '{CONNECT6}' ::1 8082"));
    let local = String::from_utf8_lossy(&local.stdout).trim().to_string();
    match sb.has_feature("sk_storage") {
        true => assert_eq!(local, "fd68:1::1"),
        false => assert!(local.starts_with("failed"), "{local}"),
    }
    let st: serde_json::Value = serde_json::from_str(&stats(&sb)).unwrap();
    let port = st["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["container"] == "web")
        .unwrap()
        .clone();
    let counted = 1 + u64::from(sb.has_feature("sk_storage"));
    assert!(port["connections"].as_u64().unwrap() >= counted, "{port}");
    assert!(
        st["containers"]["client"]["tx_packets"].as_u64().unwrap() > 0,
        "{st}"
    );

    // Isolation as for every network: a container of another network gets nothing through.
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.68.1.0/24",
        "--subnet",
        "fd68:2::/64",
        "other",
    ]);
    sb.sleeper("stranger", "other");
    let web6 = sb.ip6_of("web", "only6");
    let before = drops(&stats(&sb), "isolation");
    assert!(sb.connect6("stranger", &web6, 8082).starts_with("failed"));
    assert!(drops(&stats(&sb), "isolation") > before);

    // A root process that gives itself an IPv4 address: its packets are forged.
    let before = drops(&stats(&sb), "spoofed-source");
    sb.container_sh(
        "client",
        "ip addr add 10.68.0.9/24 dev eth0 && ping -c 2 -W 1 10.68.0.1",
    );
    assert!(drops(&stats(&sb), "spoofed-source") > before);

    // What an IPv6-only network cannot give is refused, and nothing is left.
    let before = sb.state_text();
    let run = |opts: &[&str]| {
        let mut args = vec!["run", "-d", "--name", "x", "--network", "only6"];
        args.extend(opts);
        args.extend(["--", "true"]);
        sb.netctl_err(&args)
    };
    let e = run(&["--ip", "10.68.0.5"]);
    assert!(e.contains("IPv6-only") && e.contains("--ip6"), "{e}");
    let e = run(&["-p", "127.0.0.1:8083:80"]);
    assert!(e.contains("IPv6-only") && e.contains("[::]"), "{e}");
    let e = sb.netctl_err(&[
        "network",
        "create",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        "10.68.0.0/24",
        "mixed",
    ]);
    assert!(e.contains("--ipv4=false"), "{e}");
    assert_eq!(sb.state_text(), before);
}

/// An IPv6-only network as every other network: connected to a container of an IPv4 network
/// (which keeps its IPv4) and disconnected again, internal (its containers talk, nothing
/// leaves), and restored by `sync` after its bridge is gone.
#[test]
fn ipv6_only_networks_connect_disconnect_go_internal_and_come_back_with_sync() {
    require_sandbox!();
    let sb = Sandbox::new();
    ipv6_uplink(&sb);
    let create = |name: &str, subnet: &str, extra: &[&str]| {
        let mut args = vec![
            "network",
            "create",
            "--ipv6",
            "--ipv4=false",
            "--subnet",
            subnet,
        ];
        args.extend(extra);
        args.push(name);
        sb.netctl_ok(&args);
    };
    create("only6", "fd69:1::/64", &[]);
    create("inner6", "fd69:2::/64", &["--internal"]);
    // Docker's options for the families do what the flags do; contradictions are refused.
    let (v6, v4) = (
        "com.docker.network.enable_ipv6",
        "com.docker.network.enable_ipv4",
    );
    sb.netctl_ok(&[
        "network",
        "create",
        "-o",
        &format!("{v6}=true"),
        "-o",
        &format!("{v4}=false"),
        "--subnet",
        "fd69:3::/64",
        "byopts",
    ]);
    let n: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "byopts"])).unwrap();
    assert_eq!(
        (n[0]["EnableIPv4"].clone(), n[0]["EnableIPv6"].clone()),
        (false.into(), true.into())
    );
    let e = sb.netctl_err(&[
        "network",
        "create",
        "--ipv6",
        "-o",
        &format!("{v6}=false"),
        "x",
    ]);
    assert!(e.contains("contradict"), "{e}");
    sb.netctl_ok(&["network", "create", "--subnet", "10.69.5.0/24", "plain"]);
    sb.serve6("web", "only6", None, 8080);
    sb.sleeper("box", "plain");
    let box4 = sb.container_ip("box");

    // Connected: an IPv6 address and route on only6, its IPv4 as before.
    sb.netctl_ok(&["network", "connect", "only6", "box"]);
    let box6 = sb.ip6_of("box", "only6");
    let web6 = sb.ip6_of("web", "only6");
    assert_eq!(sb.connect6("box", &web6, 8080), box6);
    assert_eq!(sb.container_ip("box"), box4);
    let eth1 = sb.container_sh("box", "ip -4 addr show dev eth1");
    assert!(eth1.stdout.is_empty(), "{eth1:?}");
    // Disconnected: gone again.
    sb.netctl_ok(&["network", "disconnect", "only6", "box"]);
    assert!(sb.connect6("box", &web6, 8080).starts_with("failed"));
    assert_eq!(sb.container_ip("box"), box4);

    // A container that started on it gets its IPv4 default route from the IPv4 network it
    // is connected to (the IPv6-only network carries none).
    sb.sleeper("v6first", "only6");
    sb.netctl_ok(&["network", "connect", "plain", "v6first"]);
    let routes = sb.container_sh(
        "v6first",
        "ip -4 route show default; ip -6 route show default",
    );
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains("default via 10.69.5.1 dev eth1"),
        "{routes}"
    );
    assert!(
        routes.contains("default via fd69:1::1 dev eth0"),
        "{routes}"
    );

    // Internal: its containers reach one another, nothing beyond it.
    sb.serve6("in1", "inner6", None, 8080);
    sb.sleeper("in2", "inner6");
    let in1 = sb.ip6_of("in1", "inner6");
    assert_eq!(sb.connect6("in2", &in1, 8080), sb.ip6_of("in2", "inner6"));
    let _server = outside_server(&sb, 9090);
    assert!(sb.connect6("in2", OUTSIDE6, 9090).starts_with("failed"));
    assert!(sb.connect6("in2", &web6, 8080).starts_with("failed"));

    // The bridge deleted behind netctl's back: `sync` makes it and its endpoints again.
    let br = sb.host_sh("ip -o -6 addr show to fd69:1::1/128 | awk '{print $2}'");
    let br = String::from_utf8_lossy(&br.stdout).trim().to_string();
    assert!(sb.host_sh(&format!("ip link del {br}")).status.success());
    sb.netctl_ok(&["sync"]);
    sb.sleeper("late", "only6");
    assert_eq!(sb.connect6("late", &web6, 8080), sb.ip6_of("late", "only6"));
    assert_eq!(sb.connect6("web", OUTSIDE6, 9090), HOST6);
}

/// NAT64 (beyond Docker): a container of an IPv6-only network reaches an IPv4-only server at
/// 64:ff9b::X — TCP, UDP and ping — which sees the host's uplink address; its name resolves
/// to that address through the resolver's DNS64. Nothing of it is routed in the clear, and a
/// dual-stack network's container gets no NAT64.
#[test]
fn an_ipv6_only_container_reaches_ipv4_servers_through_nat64_and_dns64() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    let outside4 = sb.outside_ip.clone();
    sb.host_dns(&[&outside4]);
    let _upstream = sb.upstream_dns(&[("v4only.example", &outside4)]);
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        "fd6b:1::/64",
        "only6",
    ]);
    sb.sleeper("client", "only6");
    let _server = sb.outside_whoami_server(9091, 60);
    let x = format!("64:ff9b::{outside4}");
    let curl = format!("curl -s -g --max-time 3 http://[{x}]:9091/");
    if !(sb.has_feature("loop") && sb.has_feature("atomics")) {
        // The `_compat` programs (no bpf_loop) have no NAT64: dropped, never routed in the
        // clear, and the resolver synthesizes nothing.
        let out = sb.container_sh("client", &curl);
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(drops(&stats(&sb), "ipv6-unrouted") > 0);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let out = sb.container_sh("client", "getent ahostsv6 v4only.example");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("64:ff9b"),
            "{out:?}"
        );
        return;
    }

    // TCP: the IPv4 server sees the host's uplink address.
    let out = sb.container_sh("client", &curl);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sb.host_ip,
        "{out:?}"
    );
    // UDP and echo.
    let udp = format!(
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b\"hi\", (\"{x}\", 9091)); print(s.recv(100).decode())'"
    );
    let out = sb.container_sh("client", &udp);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("udp {}", sb.host_ip),
        "{out:?}"
    );
    let ping = sb.container_sh("client", &format!("ping -6 -c 2 -W 2 {x}"));
    assert!(ping.status.success(), "{ping:?}");
    // The server's ICMP error about a flow (port unreachable) reaches the container as
    // ICMPv6, quoting its own packet: its socket is refused at once.
    let closed = format!(
        "python3 -c 'import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
s.connect((\"{x}\", 9)); s.send(b\"hi\")
try:
    s.recv(100); print(\"answered\")
except ConnectionRefusedError:
    print(\"refused\")
except socket.timeout:
    print(\"timeout\")
'"
    );
    let out = sb.container_sh("client", &closed);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "{out:?}"
    );
    // DNS64: the IPv4-only name has a synthesized AAAA record; by name all the way through.
    let canonical = x.parse::<std::net::Ipv6Addr>().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = sb.container_sh("client", "getent ahostsv6 v4only.example");
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.starts_with(&format!("{canonical} ")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no AAAA from DNS64: {got}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = sb.container_sh("client", "curl -s --max-time 3 http://v4only.example:9091/");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sb.host_ip,
        "{out:?}"
    );
    assert_eq!(netctl_tests::all_drops(&stats(&sb)), 0, "{}", stats(&sb));

    // As the attacker: NAT64 leads beyond the host only — not to another network's IPv4
    // container, not to the host's own addresses or loopback.
    sb.netctl_ok(&["network", "create", "--subnet", "10.6.12.0/24", "plain"]);
    sb.serve6("v4web", "plain", None, 8080);
    let v4web = sb.container_ip("v4web");
    let _host_srv = sb.host_http("0.0.0.0", 2281, "host-hello");
    let before = drops(&stats(&sb), "ipv6-unrouted");
    for (target, port) in [
        (v4web.as_str(), 8080),
        (&sb.host_ip, 2281),
        ("127.0.0.1", 2281),
    ] {
        let got = sb.connect6("client", &format!("64:ff9b::{target}"), port);
        assert!(got.starts_with("failed"), "{target}:{port}: {got}");
    }
    assert!(drops(&stats(&sb), "ipv6-unrouted") > before);

    // A dual-stack network has no NAT64 (its containers have IPv4), nor DNS64.
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.6.11.0/24",
        "--subnet",
        "fd6b:2::/64",
        "dual",
    ]);
    sb.sleeper("both", "dual");
    let out = sb.container_sh("both", &curl);
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(drops(&stats(&sb), "ipv6-unrouted") > 0);
    let out = sb.container_sh("both", "getent ahostsv6 v4only.example");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("64:ff9b"),
        "{out:?}"
    );
}
