//! Host-local clients reach published ports through the socket programs (no proxy, no
//! listener, no NAT rule), only this instance's namespaces are touched, ports published on
//! 127.0.0.1 stay local, and containers reach the host.

use std::time::Duration;

use netctl_tests::{require_sandbox, Background, Sandbox};

/// A UDP client: sends "hi" to argv[1]:argv[2] (connected when argv[3] == "connect") and
/// prints the answer and the address it came from, as the application sees it.
const UDP_PEER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
dst = (sys.argv[1], int(sys.argv[2]))
if sys.argv[3] == "connect":
    s.connect(dst)
for _ in range(3):
    if sys.argv[3] == "connect": s.send(b"hi")
    else: s.sendto(b"hi", dst)
    try:
        data, peer = s.recvfrom(2048)
        print(data.decode(), "from", "%s:%d" % peer); sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"#;

/// Connects over TCP and prints what getpeername() says.
const TCP_PEER: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print("%s:%d" % s.getpeername())
"#;

fn host_curl(sb: &Sandbox, url: &str) -> Option<String> {
    let out = sb.host_sh(&format!("curl -sf --max-time 3 {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn gateway(sb: &Sandbox, network: &str) -> String {
    sb.state()["networks"][network]["gateway"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn host_processes_reach_published_ports_on_every_host_address() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80", "8053:80/udp"], 80);
    let gw = gateway(&sb, "bridge");
    for host in [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "127.0.0.2",
        &sb.host_ip,
        &gw,
    ] {
        let body = host_curl(&sb, &format!("http://{host}:8080/"));
        // The container sees the host's own address for the bridge (no proxy in between).
        assert_eq!(body.as_deref(), Some(gw.as_str()), "curl {host}:8080");
    }
    // UDP, connected and not: the answer comes from the address the client used.
    for mode in ["connect", "sendto"] {
        let out = sb.host_sh(&format!("python3 -c '{UDP_PEER}' 127.0.0.1 8053 {mode}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("udp {gw} from 127.0.0.1:8053"),
            "{mode}"
        );
    }
    // getpeername() shows what was dialled.
    let out = sb.host_sh(&format!("python3 -c '{TCP_PEER}' 127.0.0.1 8080"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "127.0.0.1:8080"
    );
    // A socket bound to loopback is left alone: translated, it could never reach the
    // container (a loopback source does not leave the host); untranslated, nothing listens.
    let out = sb.host_sh(&format!(
        "curl -s --max-time 3 --interface 127.0.0.1 http://{}:8080/; echo rc=$?",
        sb.host_ip
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=7"),
        "refused at once, not translated: {out:?}"
    );
    // No listener on the host port, no proxy process: the socket programs did it.
    let ss = sb.host_sh("ss -ltnH");
    assert!(!String::from_utf8_lossy(&ss.stdout).contains(":8080 "));

    // Unpublished ports and ports on other addresses are not translated.
    assert!(host_curl(&sb, "http://127.0.0.1:8081/").is_none());
    // Removing the container removes the translation at once.
    sb.netctl_ok(&["rm", "-f", "web"]);
    assert!(host_curl(&sb, "http://127.0.0.1:8080/").is_none());
}

#[test]
fn other_namespaces_are_never_translated() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80"], 80);
    // The outside namespace has its own server on 127.0.0.1:8080: it must reach that one.
    let _own = Background(sb.spawn_outside(
        "timeout 20 python3 -c 'import http.server as h; h.HTTPServer((\"127.0.0.1\", 8080), type(\"H\", (h.BaseHTTPRequestHandler,), {\"do_GET\": lambda s: (s.send_response(200), s.end_headers(), s.wfile.write(b\"outside\")), \"log_message\": lambda *a: None})).serve_forever()'",
    ));
    let wait = "for i in $(seq 100); do ss -ltnH | grep -q '127.0.0.1:8080 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.outside_sh(wait).status.success());
    let out = sb.outside_sh("curl -sf --max-time 3 http://127.0.0.1:8080/");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "outside");
    // Nor is its [::1]:8080 taken to the container by the IPv6 socket programs.
    let _own6 = Background(sb.spawn_outside(&format!(
        "timeout 20 python3 -c '{}' ::1 8080 outside6",
        netctl_tests::TINY_HTTP
    )));
    let wait6 = "for i in $(seq 100); do ss -ltnH | grep -q '\\[::1\\]:8080 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.outside_sh(wait6).status.success());
    let out = sb.outside_sh("curl -sf --max-time 3 -g http://[::1]:8080/");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "outside6");
    // A container's own loopback is its own too.
    sb.whoami("peer", None, &[], 81);
    for url in ["http://127.0.0.1:8080/", "http://[::1]:8080/"] {
        let curl = [
            "exec",
            "peer",
            "--",
            "curl",
            "-sf",
            "--max-time",
            "2",
            "-g",
            url,
        ];
        let out = sb.netctl(&curl);
        assert!(
            !out.status.success(),
            "a container's {url} is not the host's"
        );
    }

    // The programs know exactly this instance's namespaces: the host and its containers.
    // The machine's root namespace (where this test runs) is not among them.
    let map = sb.pinned_map("SOCK_NETNS");
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&map)
        .output()
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cookies: Vec<u64> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let bytes: Vec<u8> = e["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect();
            u64::from_ne_bytes(bytes[..8].try_into().unwrap())
        })
        .collect();
    assert_eq!(cookies.len(), 3, "host + two containers: {cookies:?}");
    let root = netctl_tests::netns_cookie();
    assert!(
        !cookies.contains(&root),
        "the root namespace must pass untouched"
    );
}

#[test]
fn ports_published_on_loopback_stay_local() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["127.0.0.1:8080:80"], 80);
    let gw = gateway(&sb, "bridge");
    assert_eq!(
        host_curl(&sb, "http://127.0.0.1:8080/").as_deref(),
        Some(gw.as_str())
    );
    // Only 127.0.0.1 was published: the host's other addresses do not answer, from the host
    // or from outside.
    assert!(host_curl(&sb, &format!("http://{}:8080/", sb.host_ip)).is_none());
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_none());
    // A packet from the uplink that names 127.0.0.1 itself is never let in (Docker 28's fix).
    let link = sb.host_sh(&format!("ip -br link show {}", netctl_tests::UPLINK));
    let mac = String::from_utf8_lossy(&link.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let stats = |sb: &Sandbox| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap();
        v["ports"][0]["connections"].as_u64().unwrap()
    };
    let before = stats(&sb);
    let send = format!(
        "python3 -c '{}' {} {mac} {} 127.0.0.1 8080",
        netctl_tests::RAW_SYN,
        netctl_tests::UPLINK,
        sb.outside_ip
    );
    let sent = sb.outside_sh(&send);
    assert!(
        sent.status.success(),
        "{send}: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        stats(&sb),
        before,
        "a SYN to 127.0.0.1 from outside reached the container"
    );
}

#[test]
fn containers_reach_the_host_and_each_others_published_ports() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80"], 80);
    sb.whoami("client", None, &[], 81);
    let gw = gateway(&sb, "bridge");
    // A host service, reached through the gateway address.
    let _svc = sb.host_http(&gw, 7070, "host");
    let out = sb.netctl(&[
        "exec",
        "client",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
        &format!("http://{gw}:7070/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // Hairpin: another container's published port through the host's address.
    let out = sb.netctl(&[
        "exec",
        "client",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "3",
        &format!("http://{}:8080/", sb.host_ip),
    ]);
    assert!(out.status.success(), "hairpin through the host address");
}

#[test]
fn published_ports_answer_on_every_interface_even_without_a_default_route() {
    require_sandbox!();
    let sb = Sandbox::new();
    // A host whose only routes are connected ones, with a second NIC.
    assert!(sb.host_sh("ip route del default").status.success());
    let r: u8 = sb.host_ip.split('.').nth(2).unwrap().parse().unwrap();
    let (h2, p2) = (format!("100.65.{r}.2"), format!("100.65.{r}.1"));
    let second = sb.add_peer_namespace("second", "up1", &h2, &p2);
    sb.whoami("web", None, &["8080:80"], 80);
    assert_eq!(
        sb.curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
            .as_deref(),
        Some(sb.outside_ip.as_str()),
        "first NIC"
    );
    let out = sb.ns_sh(&second, &format!("curl -sf --max-time 3 http://{h2}:8080/"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), p2, "second NIC");
    // Masquerade leaves with the address of the interface the packet leaves by.
    let _srv = Background(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{second}"))
            .args([
                "--",
                "timeout",
                "20",
                "python3",
                "-c",
                netctl_tests::WHOAMI,
                &p2,
                "9000",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait =
        "for i in $(seq 100); do ss -ltnH | grep -q ':9000 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.ns_sh(&second, wait).status.success());
    let got = sb.netctl(&[
        "exec",
        "web",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "3",
        &format!("http://{p2}:9000/"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        h2,
        "masqueraded to the second NIC's address"
    );

    // An interface that appears later is followed by the daemon at once, with no command…
    let (h3, p3) = (format!("100.66.{r}.2"), format!("100.66.{r}.1"));
    let third = sb.add_peer_namespace("third", "up2", &h3, &p3);
    let url = format!("http://{h3}:8080/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = sb.ns_sh(&third, &format!("curl -sf --max-time 1 {url}"));
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), p3, "third NIC");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not follow the third NIC"
        );
    }
    // …and caught up by sync when the daemon is not running.
    let pid = sb
        .daemon_pid()
        .expect("the daemon runs while a network exists");
    sb.host_sh(&format!("kill -9 {pid}"));
    let (h4, p4) = (format!("100.67.{r}.2"), format!("100.67.{r}.1"));
    let fourth = sb.add_peer_namespace("fourth", "up3", &h4, &p4);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!sb
        .ns_sh(&fourth, &format!("curl -sf --max-time 1 http://{h4}:8080/"))
        .status
        .success());
    sb.netctl_ok(&["sync"]);
    let out = sb.ns_sh(&fourth, &format!("curl -sf --max-time 3 http://{h4}:8080/"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        p4,
        "fourth NIC after sync"
    );
    // NETCTL_UPLINKS still restricts.
    let mut only = Sandbox::new();
    only.env("NETCTL_UPLINKS", netctl_tests::UPLINK);
    let out = only.netctl_ok(&["sync"]);
    assert!(out.contains("attached uplink_ingress to up0"), "{out}");
}

#[test]
fn another_engines_bridge_is_an_uplink_its_ports_are_left_alone() {
    require_sandbox!();
    let sb = Sandbox::new();
    let r: u8 = sb.host_ip.split('.').nth(2).unwrap().parse().unwrap();
    let (gw, client) = (format!("100.68.{r}.1"), format!("100.68.{r}.2"));
    // Another engine's bridge (docker0, cni0) with a container on it.
    let ns = sb.add_peer_namespace("other", "fv0", &gw, &client);
    let bridge = format!(
        "ip addr flush dev fv0 && ip link add fbr0 type bridge && ip link set fv0 master fbr0 \
         && ip addr add {gw}/24 dev fbr0 && ip link set fbr0 up"
    );
    assert!(sb.host_sh(&bridge).status.success());
    sb.whoami("web", None, &["8080:80"], 80);
    // Its containers reach a published port through the host's address on their bridge.
    let out = sb.ns_sh(&ns, &format!("curl -sf --max-time 3 http://{gw}:8080/"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), client);
    // The bridge carries netctl's uplink programs; its port does not.
    let index = |dev: &str| {
        let out = sb.host_sh(&format!("ip -o link show dev {dev} | cut -d: -f1"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Link pins: $NETCTL_BPFFS/v<layout>/links/<program>@<ifindex>@<hash>.
    let out = sb.host_sh(&format!("ls {}/v*/links", sb.bpffs.display()));
    let pins: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let on = |dev: &str| {
        let i = index(dev);
        pins.iter().any(|p| p.split('@').nth(1) == Some(i.as_str()))
    };
    assert!(on("fbr0"), "{pins:?}");
    assert!(!on("fv0"), "{pins:?}");
}

/// Over IPv6: connects (TCP, or UDP with connect()) to [ADDR]:PORT and prints the answer (UDP)
/// and the peer as the application sees it.
const PEER6: &str = r#"
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[3] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET6, kind); s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
if kind == socket.SOCK_DGRAM:
    s.send(b"hi"); data, peer = s.recvfrom(2048); print(data.decode(), end=" ")
print("[%s]:%d" % s.getpeername()[:2])
"#;

#[test]
fn host_processes_reach_published_ports_over_ipv6_loopback() {
    require_sandbox!();
    let sb = Sandbox::new();
    if !sb.has_feature("sk_storage") {
        eprintln!("skipped: the IPv6 socket programs need socket storage");
        return;
    }
    sb.whoami("web", None, &["8080:80", "8053:80/udp"], 80);
    sb.whoami("local", None, &["127.0.0.1:9090:80"], 80);
    let gw = gateway(&sb, "bridge");
    assert_eq!(
        host_curl(&sb, "-g http://[::1]:8080/").as_deref(),
        Some(gw.as_str())
    );
    assert_eq!(
        host_curl(&sb, "-g http://[::ffff:127.0.0.1]:8080/").as_deref(),
        Some(gw.as_str())
    );
    // The application sees what it dialled.
    let peer = |args: &[&str]| {
        let mut cmd = sb.in_host("python3");
        cmd.args(["-c", PEER6]).args(args);
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(peer(&["::1", "8080", "tcp"]), "[::1]:8080");
    assert_eq!(
        peer(&["::1", "8053", "udp"]),
        format!("udp {gw} [::1]:8053")
    );
    // Published on 127.0.0.1 only: IPv4's alone, as with Docker.
    assert!(host_curl(&sb, "-g http://[::1]:9090/").is_none());
    // Published on [::1] only (and on every IPv6 address): IPv6's alone.
    sb.whoami("local6", None, &["[::1]:9191:80"], 80);
    sb.whoami("any6", None, &["[::]:9292:80"], 80);
    for port in [9191, 9292] {
        assert_eq!(
            host_curl(&sb, &format!("-g http://[::1]:{port}/")).as_deref(),
            Some(gw.as_str()),
            "{port}"
        );
        assert!(host_curl(&sb, &format!("http://127.0.0.1:{port}/")).is_none());
    }
    assert!(sb.netctl_ok(&["port", "local6"]).contains("[::1]:9191"));
}
