//! Dual-stack networks (`network create --ipv6`): addresses, inspect, IPv6 between the
//! containers of a network and to the host, the isolation rules for IPv6 — and a root
//! process in a container forging IPv6 (another's address, neighbour advertisements for a
//! neighbour's address, router advertisements, routing headers).

use netctl_tests::{drop_count as drops, require_sandbox, Sandbox};
use serde_json::Value;

fn inspect_network(sb: &Sandbox, name: &str) -> Value {
    let out = sb.netctl_ok(&["network", "inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn inspect_container(sb: &Sandbox, name: &str, network: &str) -> Value {
    let out = sb.netctl_ok(&["inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0]["NetworkSettings"]["Networks"][network].clone()
}

fn dual(sb: &Sandbox, name: &str, v4: &str, v6: &str, extra: &[&str]) {
    let mut args = vec![
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6,
    ];
    args.extend(extra);
    args.push(name);
    sb.netctl_ok(&args);
}

#[test]
fn a_dual_stack_network_carries_ipv6_between_its_containers_and_to_its_gateway() {
    require_sandbox!();
    let sb = Sandbox::new();
    dual(&sb, "dual", "10.61.0.0/24", "fd61:1::/64", &[]);
    let n = inspect_network(&sb, "dual");
    assert_eq!(n["EnableIPv6"], true);
    assert_eq!(n["EnableIPv4"], true);
    let configs = n["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 2, "{n}");
    assert_eq!(configs[1]["Subnet"], "fd61:1::/64");
    assert_eq!(configs[1]["Gateway"], "fd61:1::1");
    sb.serve6("web", "dual", None, 8080);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "dual",
        "--ip6",
        "fd61:1::99",
        "--",
        "sleep",
        "300",
    ]);
    let web = inspect_container(&sb, "web", "dual");
    assert_eq!(web["GlobalIPv6Address"], "fd61:1::2");
    assert_eq!(web["GlobalIPv6PrefixLen"], 64);
    assert_eq!(web["IPv6Gateway"], "fd61:1::1");
    assert!(web["LinkLocalIPv6Address"]
        .as_str()
        .unwrap()
        .starts_with("fe80::"));
    assert_eq!(sb.ip6_of("client", "dual"), "fd61:1::99");
    let n = inspect_network(&sb, "dual");
    let eps: Vec<&Value> = n["Containers"].as_object().unwrap().values().collect();
    assert!(
        eps.iter().any(|e| e["IPv6Address"] == "fd61:1::99/64"),
        "{n}"
    );
    // The container has the address, the gateway as its default route, its link-local.
    let addrs = sb.container_sh(
        "client",
        "ip -6 addr show dev eth0; ip -6 route show default",
    );
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    assert!(addrs.contains("fd61:1::99/64"), "{addrs}");
    assert!(addrs.contains("fe80::"), "{addrs}");
    assert!(addrs.contains("default via fd61:1::1"), "{addrs}");
    // TCP between the containers over IPv6; the server sees the client's own address.
    assert_eq!(sb.connect6("client", "fd61:1::2", 8080), "fd61:1::99");
    // By link-local address too.
    let ll = inspect_container(&sb, "web", "dual")["LinkLocalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sb.connect6("client", &format!("{ll}%eth0"), 8080),
        format!(
            "{}",
            inspect_container(&sb, "client", "dual")["LinkLocalIPv6Address"]
                .as_str()
                .unwrap()
        )
    );
    // The gateway answers ping; the host's service on the gateway address is reachable.
    assert!(sb
        .container_sh("client", "ping -6 -c 2 -W 2 fd61:1::1")
        .status
        .success());
    let _srv = sb.host_http("::", 2280, "host-hello");
    let out = sb.container_sh("client", "curl -s -g --max-time 3 http://[fd61:1::1]:2280/");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("host-hello"),
        "{out:?}"
    );
    // IPv4 as before.
    assert!(sb
        .container_sh("client", "ping -c 1 -W 2 10.61.0.2")
        .status
        .success());
    // Nothing of all that was dropped: neighbour discovery and listener reports included.
    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert_eq!(netctl_tests::all_drops(&stats), 0, "{stats}");
}

fn ping6(sb: &Sandbox, from: &str, to: &str) -> bool {
    sb.container_sh(from, &format!("ping -6 -c 1 -W 1 {to}"))
        .status
        .success()
}

#[test]
fn ipv6_keeps_to_the_isolation_rules_of_ipv4() {
    require_sandbox!();
    let sb = Sandbox::new();
    dual(&sb, "a", "10.62.1.0/24", "fd62:1::/64", &[]);
    dual(&sb, "b", "10.62.2.0/24", "fd62:2::/64", &[]);
    dual(
        &sb,
        "quiet",
        "10.62.3.0/24",
        "fd62:3::/64",
        &["-o", "icc=false"],
    );
    dual(&sb, "priv", "10.62.4.0/24", "fd62:4::/64", &["--internal"]);
    for (c, n) in [
        ("a1", "a"),
        ("b1", "b"),
        ("q1", "quiet"),
        ("i1", "priv"),
        ("i2", "priv"),
    ] {
        sb.sleeper(c, n);
    }
    sb.serve6("a2", "a", None, 8080);
    sb.serve6("q2", "quiet", None, 8080);
    // Within a network: yes. Between networks: no, by the global address or the link-local.
    assert_eq!(sb.connect6("a1", "fd62:1::3", 8080), "fd62:1::2");
    assert!(sb.connect6("b1", "fd62:1::3", 8080).starts_with("failed"));
    assert!(!ping6(&sb, "b1", "fd62:1::2"));
    // ICC off: not the neighbour, but the gateway.
    assert!(sb.connect6("q1", "fd62:3::3", 8080).starts_with("failed"));
    assert!(ping6(&sb, "q1", "fd62:3::1"));
    // Internal: the neighbour, not the gateway.
    assert!(ping6(&sb, "i1", "fd62:4::3"));
    assert!(!ping6(&sb, "i1", "fd62:4::1"));
    // Beyond the host: not routed yet, said so by the drop.
    assert!(!ping6(&sb, "a1", "fd99::1"));
    let stats = sb.netctl_ok(&["stats", "--json"]);
    for reason in ["isolation", "icc-off", "internal-network", "ipv6-unrouted"] {
        assert!(drops(&stats, reason) >= 1, "{reason}: {stats}");
    }
}

/// Frames a root process builds itself (AF_PACKET on eth0): argv KIND SRC DST DST_MAC
/// SRC_MAC ARG, each sent three times.
const FORGE6: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
a6 = lambda x: socket.inet_pton(socket.AF_INET6, x)
mac = lambda x: bytes.fromhex(x.replace(":", ""))
kind, src, dst, dmac, smac, arg = sys.argv[1:7]
def icmp6(t, body, final):
    pl = struct.pack("!BBH", t, 0, 0) + body
    c = csum(a6(src) + a6(final) + struct.pack("!I3xB", len(pl), 58) + pl)
    return pl[:2] + struct.pack("!H", c) + pl[4:]
def ip6(nh, payload, hl=255):
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, hl) + a6(src) + a6(dst) + payload
if kind == "na":  # an overriding advertisement that ARG is at SRC_MAC
    pkt = ip6(58, icmp6(136, struct.pack("!I", 0x20000000) + a6(arg) + b"\x02\x01" + mac(smac), dst))
elif kind == "ns":  # a solicitation for ARG claiming the link-layer address DST_MAC
    pkt = ip6(58, icmp6(135, b"\0" * 4 + a6(arg) + b"\x01\x01" + mac(dmac), dst))
elif kind == "ra":  # a default router with the prefix fd66::/64 for autoconfiguration
    body = struct.pack("!BBHII", 64, 0, 1800, 0, 0) + bytes([3, 4, 64, 0xc0])
    body += struct.pack("!III", 86400, 14400, 0) + a6("fd66::") + b"\x01\x01" + mac(smac)
    pkt = ip6(58, icmp6(134, body, dst))
elif kind == "rh0":  # an echo request to DST with a routing header on to ARG
    echo = icmp6(128, struct.pack("!HH", 7, 1) + b"x" * 8, arg)
    pkt = ip6(43, bytes([58, 2, 0, 1]) + b"\0" * 4 + a6(arg) + echo, 64)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
for _ in range(3): s.send(mac(dmac if kind != "ns" else "33:33:00:00:00:01") + mac(smac) + b"\x86\xdd" + pkt)
"#;

fn forge(sb: &Sandbox, from: &str, args: &[&str]) {
    let mut cmd = vec!["exec", from, "--", "python3", "-c", FORGE6];
    cmd.extend(args);
    let out = sb.netctl(&cmd);
    assert!(out.status.success(), "{out:?}");
}

fn mac_of(sb: &Sandbox, name: &str, network: &str) -> String {
    inspect_container(sb, name, network)["MacAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_root_process_in_a_container_cannot_forge_its_way_around_ipv6_isolation() {
    require_sandbox!();
    let sb = Sandbox::new();
    dual(&sb, "flat", "10.63.1.0/24", "fd63:1::/64", &[]);
    dual(&sb, "other", "10.63.2.0/24", "fd63:2::/64", &[]);
    sb.sleeper("victim", "flat");
    sb.sleeper("evil", "flat");
    sb.sleeper("far", "other");
    let victim = sb.ip6_of("victim", "flat");
    let evil = sb.ip6_of("evil", "flat");
    let (victim_mac, evil_mac) = (mac_of(&sb, "victim", "flat"), mac_of(&sb, "evil", "flat"));
    // The host knows the victim (a neighbour entry to poison), evil knows the gateway's MAC.
    assert!(sb
        .host_sh(&format!("ping -6 -c 1 -W 2 {victim}"))
        .status
        .success());
    assert!(ping6(&sb, "evil", "fd63:1::1"));
    let gw_mac = sb.container_sh("evil", "ip -6 neigh show fd63:1::1 | awk '{print $5}'");
    let gw_mac = String::from_utf8_lossy(&gw_mac.stdout).trim().to_string();
    assert_eq!(gw_mac.len(), 17, "gateway MAC {gw_mac:?}");

    // 1. The victim's address as its own: nothing leaves.
    let out = sb.container_sh(
        "evil",
        &format!(
            "ip -6 addr add {victim}/128 dev eth0 nodad; ping -6 -c 2 -W 1 -I {victim} fd63:1::1"
        ),
    );
    assert!(!out.status.success(), "{out:?}");
    sb.container_sh("evil", &format!("ip -6 addr del {victim}/128 dev eth0"));
    // 2. Advertisements that the victim's address is at evil's MAC, to every node; and a
    //    solicitation from evil's address claiming the victim's MAC.
    forge(
        &sb,
        "evil",
        &[
            "na",
            &evil,
            "ff02::1",
            "33:33:00:00:00:01",
            &evil_mac,
            &victim,
        ],
    );
    forge(
        &sb,
        "evil",
        &[
            "ns",
            &evil,
            "ff02::1:ff00:1",
            &victim_mac,
            &evil_mac,
            "fd63:1::1",
        ],
    );
    let neigh = sb.host_sh(&format!("ip -6 neigh show {victim}"));
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    assert!(
        !neigh.contains(&evil_mac),
        "the host's entry was poisoned: {neigh}"
    );
    assert!(
        sb.host_sh(&format!("ping -6 -c 1 -W 2 {victim}"))
            .status
            .success(),
        "the victim is still reachable from the host"
    );
    // 3. A router advertisement: no default route and no address from it, on the host or
    //    in the victim.
    forge(
        &sb,
        "evil",
        &[
            "ra",
            &format!("fe80::{}", "1"),
            "ff02::1",
            "33:33:00:00:00:01",
            &evil_mac,
            "-",
        ],
    );
    let ll = inspect_container(&sb, "evil", "flat")["LinkLocalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    forge(
        &sb,
        "evil",
        &["ra", &ll, "ff02::1", "33:33:00:00:00:01", &evil_mac, "-"],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let host = sb.host_sh("ip -6 route show default; ip -6 addr show | grep fd66");
    assert!(
        String::from_utf8_lossy(&host.stdout).trim().is_empty(),
        "{host:?}"
    );
    let v = sb.container_sh(
        "victim",
        "ip -6 route show default; ip -6 addr show | grep fd66",
    );
    let v = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(!v.contains("fd66") && v.contains("via fd63:1::1"), "{v}");
    // 4. A routing header through the gateway on to the other network's container.
    let far = sb.ip6_of("far", "other");
    forge(
        &sb,
        "evil",
        &["rh0", &evil, "fd63:1::1", &gw_mac, &evil_mac, &far],
    );

    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert!(drops(&stats, "spoofed-source") >= 8, "{stats}");
    assert!(drops(&stats, "ipv6-router") >= 9, "{stats}");
}

#[test]
fn ipv6_on_a_network_without_it_goes_nowhere() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.64.0.0/24", "v4only"]);
    sb.sleeper("quiet", "v4only");
    sb.sleeper("loud", "v4only");
    // IPv6 is off on the interfaces of an IPv4 network; a root process turns it on.
    let off = sb.container_sh("loud", "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6");
    assert_eq!(String::from_utf8_lossy(&off.stdout).trim(), "1");
    let out = sb.container_sh(
        "loud",
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -6 addr add fd64::5/64 dev eth0 nodad; \
         sleep 0.5; ping -6 -c 2 -W 1 -I fd64::5 ff02::1%eth0; ping -6 -c 1 -W 1 fd64::1",
    );
    // Its own answer to the all-nodes ping comes back inside it; nobody else's does.
    let heard = String::from_utf8_lossy(&out.stdout).into_owned();
    let others = heard
        .lines()
        .filter(|l| l.contains("bytes from") && !l.contains("from fd64::5"));
    assert_eq!(others.count(), 0, "{heard}");
    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert!(drops(&stats, "spoofed-source") >= 2, "{stats}");
}

#[test]
fn bad_ipv6_requests_say_what_is_wrong_and_change_nothing() {
    require_sandbox!();
    let sb = Sandbox::new();
    let before = sb.host_links();
    for (args, words) in [
        (
            vec!["network", "create", "--subnet", "fd65::/64", "n1"],
            "needs --ipv6",
        ),
        (
            vec![
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "fd65::5/64",
                "n1",
            ],
            "host bits",
        ),
        (
            vec!["network", "create", "--ipv6", "--subnet", "fe80::/64", "n1"],
            "link-local",
        ),
        (
            vec![
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "fd65::/64",
                "--subnet",
                "fd66::/64",
                "n1",
            ],
            "twice",
        ),
        (
            vec!["network", "create", "--ipv4=false", "n1"],
            "--ipv4=false needs --ipv6",
        ),
        (
            vec![
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "10.65.0.0/24",
                "--gateway",
                "fd67::1",
                "n1",
            ],
            "IPv6 --subnet",
        ),
    ] {
        let e = sb.netctl_err(&args);
        assert!(e.contains(words), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    assert_eq!(sb.host_links(), before);
    dual(&sb, "n1", "10.65.0.0/24", "fd65::/64", &[]);
    sb.netctl_ok(&["network", "create", "--ipv6", "auto"]);
    let auto = inspect_network(&sb, "auto");
    let subnet = auto["IPAM"]["Config"][1]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        subnet.starts_with("fd") && subnet.ends_with("::/64"),
        "{auto}"
    );
    let e = sb.netctl_err(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.66.0.0/24",
        "--subnet",
        &subnet,
        "clash",
    ]);
    assert!(e.contains("overlaps"), "{e}");
    sb.netctl_ok(&["network", "create", "--subnet", "10.68.0.0/24", "plain"]);
    let before = (sb.host_links(), sb.netns_handles());
    for (args, words) in [
        (
            vec!["--ip6", "fd99::5"],
            "Invalid preferred address fd99::5",
        ),
        (vec!["--ip6", "fd65::1"], "reserved"),
        (vec!["--ip6", "nonsense"], "invalid --ip6"),
    ] {
        let mut cmd = vec!["run", "-d", "--name", "c", "--network", "n1"];
        cmd.extend(args);
        cmd.extend(["--", "sleep", "30"]);
        let e = sb.netctl_err(&cmd);
        assert!(e.contains(words), "{e}");
    }
    let e = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "auto",
        "--ip6",
        "fd00::5",
        "--",
        "sleep",
        "30",
    ]);
    assert!(
        e.contains("Invalid preferred address") || e.contains("user configured"),
        "{e}"
    );
    let e = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "plain",
        "--ip6",
        "fd65::9",
        "--",
        "sleep",
        "30",
    ]);
    assert!(e.contains("--ipv6"), "{e}");
    assert_eq!((sb.host_links(), sb.netns_handles()), before);
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
    // The address is taken once.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "n1",
        "--ip6",
        "fd65::9",
        "--",
        "sleep",
        "30",
    ]);
    let e = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "d",
        "--network",
        "n1",
        "--ip6",
        "fd65::9",
        "--",
        "sleep",
        "30",
    ]);
    assert!(e.contains("already in use"), "{e}");
}

#[test]
fn names_resolve_to_both_families() {
    require_sandbox!();
    let sb = Sandbox::new();
    dual(&sb, "named", "10.69.0.0/24", "fd69::/64", &[]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.70.0.0/24", "old"]);
    sb.sleeper("peer", "named");
    sb.sleeper("v4peer", "old");
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "asker",
        "--network",
        "named",
        "--add-host",
        "extra:fd70::7",
        "--",
        "sleep",
        "300",
    ]);
    sb.netctl_ok(&["network", "connect", "old", "asker"]);
    let hosts = sb.container_sh("asker", "cat /etc/hosts");
    let hosts = String::from_utf8_lossy(&hosts.stdout).into_owned();
    let own = sb.ip6_of("asker", "named");
    assert!(hosts.contains(&format!("{own}\t")), "{hosts}");
    assert!(hosts.contains("fd70::7\textra"), "{hosts}");
    // AAAA from the embedded DNS (retried while the daemon takes the new container in).
    let peer = sb.ip6_of("peer", "named");
    let script = "import socket,sys\n\
        try: print(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], None, socket.AF_INET6)}))\n\
        except OSError as e: print('none', e)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = sb.netctl(&["exec", "asker", "--", "python3", "-c", script, "peer"]);
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.contains(&peer) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no AAAA for peer: {got}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A name of an IPv4 network has no AAAA record, and its A record still resolves.
    let out = sb.netctl(&["exec", "asker", "--", "python3", "-c", script, "v4peer"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("none"),
        "{out:?}"
    );
    let out = sb.container_sh("asker", "getent ahostsv4 v4peer");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.70.0."),
        "{out:?}"
    );
    // Reverse: the address's name.
    let out = sb.container_sh(
        "asker",
        &format!("python3 -c 'import socket; print(socket.gethostbyaddr(\"{peer}\")[0])'"),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("peer.named"),
        "{out:?}"
    );
}

#[test]
fn the_default_network_has_ipv6_when_the_daemon_settings_say_so() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_IPV6", "true");
    sb.env("NETCTL_FIXED_CIDR_V6", "fd71:1::/64");
    sb.sleeper("one", "bridge");
    sb.sleeper("two", "bridge");
    let n = inspect_network(&sb, "bridge");
    assert_eq!(n["EnableIPv6"], true, "{n}");
    assert_eq!(n["IPAM"]["Config"][1]["Subnet"], "fd71:1::/64");
    assert_eq!(sb.ip6_of("two", "bridge"), "fd71:1::3");
    assert!(ping6(&sb, "one", "fd71:1::3"));
    let e = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "x",
        "--ip6",
        "fd71:1::9",
        "--",
        "sleep",
        "9",
    ]);
    assert!(e.contains("user defined networks"), "{e}");
    // A bad setting is one clear line.
    sb.env("NETCTL_IPV6", "maybe");
    let e = sb.netctl_err(&["network", "ls"]);
    assert!(e.contains("NETCTL_IPV6=maybe"), "{e}");
}

/// Sends UDP "ping" to [ff02::1%eth0]:5999 from the container (argv: count).
const MCAST6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.sendto(b"ping", ("ff02::1%eth0", 5999))
"#;

#[test]
fn an_internal_network_reaches_no_host_service_by_multicast_and_probes_take_no_address() {
    require_sandbox!();
    let sb = Sandbox::new();
    dual(&sb, "priv", "10.66.1.0/24", "fd66:1::/64", &["--internal"]);
    sb.sleeper("inside", "priv");
    // A UDP service of the host on every IPv6 address.
    let listener = sb
        .in_host("python3")
        .args([
            "-c",
            "import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); \
             s.bind(('::', 5999)); s.settimeout(3)\n\
try: print(s.recvfrom(100))\nexcept OSError: print('nothing')",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = sb.netctl(&["exec", "inside", "--", "python3", "-c", MCAST6, "3"]);
    assert!(out.status.success(), "{out:?}");
    let heard = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&heard.stdout).trim(), "nothing");
    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert!(drops(&stats, "internal-network") >= 3, "{stats}");
    // A duplicate address probe (source ::) for the gateway's address, and for a
    // neighbour's: dropped, so neither gives its address up.
    sb.sleeper("peer", "priv");
    let mac = mac_of(&sb, "inside", "priv");
    let peer = sb.ip6_of("peer", "priv");
    for target in ["fd66:1::1", peer.as_str()] {
        forge(
            &sb,
            "inside",
            &["ns", "::", "ff02::1:ff00:1", &mac, &mac, target],
        );
    }
    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert!(drops(&stats, "spoofed-source") >= 6, "{stats}");
    assert!(ping6(&sb, "inside", &peer));
}
