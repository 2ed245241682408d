//! The datapath under attack and misuse, with real traffic in sandboxes: a SYN flood against a
//! published port, an internal network knocking on its gateway's published ports, forged
//! ICMP errors aimed at containers, the host's own connections on published ports, and the
//! host as a router for the outside.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use netctl_tests::{require_sandbox, Background, Sandbox, TINY_HTTP};

/// Small Python programs the tests run inside namespaces, in a directory of their own.
struct Scripts(PathBuf);

impl Scripts {
    fn new(sb: &Sandbox) -> Self {
        let dir = std::env::temp_dir().join(format!("netctl-hardening-{}", sb.id));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            ("echo.py", ECHO),
            ("clients.py", CLIENTS),
            ("synflood.py", SYN_FLOOD),
            ("udp_wait.py", UDP_WAIT),
            ("icmp_forge.py", ICMP_FORGE),
            ("udp_sink.py", UDP_SINK),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Scripts(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// TCP echo server: `echo.py PORT`.
const ECHO: &str = r#"
import socketserver, sys
class H(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(4096)
            if not d: return
            self.request.sendall(d)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

/// `clients.py ADDR PORT N READY GO`: opens N connections and echoes one message on each,
/// writes READY, waits (at most 60 s) for the file GO, echoes again on every connection.
/// Prints "ok" when every exchange worked.
const CLIENTS: &str = r#"
import os, socket, sys, time
addr, port, n, ready, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
conns = []
for i in range(n):
    s = socket.create_connection((addr, port), timeout=5)
    s.sendall(b"before%d" % i)
    assert s.recv(100) == b"before%d" % i
    conns.append(s)
open(ready, "w").close()
deadline = time.time() + 60
while not os.path.exists(go):
    if time.time() > deadline: sys.exit("no go")
    time.sleep(0.05)
for i, s in enumerate(conns):
    s.sendall(b"after%d" % i)
    got = s.recv(100)
    if got != b"after%d" % i: sys.exit("connection %d: %r" % (i, got))
print("ok")
"#;

/// `synflood.py DST PORT COUNT`: COUNT SYNs from spoofed sources (198.18.0.0/15).
const SYN_FLOOD: &str = r#"
import random, socket, struct, sys
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
d = socket.inet_aton(dst)
for i in range(count):
    src = socket.inet_aton("198.%d.%d.%d" % (18 + (i >> 16) % 2, (i >> 8) & 255, i & 255 or 1))
    sport = 1024 + i % 60000
    tcp = struct.pack("!HHIIBBHHH", sport, port, random.getrandbits(32), 0, 5 << 4, 2, 65535, 0, 0)
    c = csum(src + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xffff, 0, 64, 6, 0, src, d)
    raw.sendto(ip + tcp, (dst, 0))
"#;

/// `udp_wait.py DST PORT PORTFILE SECS`: a connected UDP socket sends one datagram, writes
/// its local port to PORTFILE, and prints what came back within SECS: "data", "refused"
/// (an ICMP port unreachable reached it) or "timeout".
const UDP_WAIT: &str = r#"
import os, socket, sys
dst, port, portfile, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, port))
s.send(b"x")
open(portfile + ".tmp", "w").write(str(s.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
s.settimeout(secs)
try:
    s.recv(100); print("data")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

/// `icmp_forge.py TO QSRC QSPORT QDST QDPORT`: an ICMP port unreachable to TO, quoting a UDP
/// datagram QSRC:QSPORT → QDST:QDPORT.
const ICMP_FORGE: &str = r#"
import socket, struct, sys
to, qsrc, qsport, qdst, qdport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 29, 7, 0, 63, 17, 0, socket.inet_aton(qsrc), socket.inet_aton(qdst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
udp = struct.pack("!HHHH", qsport, qdport, 9, 0)
msg = struct.pack("!BBHI", 3, 3, 0, 0) + ip + udp
msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(msg, (to, 0))
"#;

/// `udp_sink.py ADDR PORT`: receives datagrams and never answers.
const UDP_SINK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True: s.recv(2048)
"#;

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stats(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap()
}

fn container_ip(sb: &Sandbox, name: &str) -> String {
    sb.state()["containers"][name]["endpoints"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_syn_flood_does_not_break_established_connections() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // A small table (1,024 unconfirmed flows) so the flood overflows it many times.
    sb.env("NETCTL_CT_ENTRIES", "4096");
    let sc = Scripts::new(&sb);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "-p",
        "7000:7000",
        "--",
        "python3",
        &sc.path("echo.py"),
        "7000",
    ]);
    sb.wait_listening("echo", 7000);
    let (ready, go) = (sc.0.join("ready"), sc.0.join("go"));
    // Bounded by `timeout` (and by the GO file the test writes).
    let clients = sb
        .in_outside("timeout")
        .args([
            "90",
            "python3",
            &sc.path("clients.py"),
            &sb.host_ip,
            "7000",
            "5",
        ])
        .arg(&ready)
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready, "the clients' first exchange");
    let flood = sb.outside_sh(&format!(
        "timeout 60 python3 {} {} 7000 20000",
        sc.path("synflood.py"),
        sb.host_ip
    ));
    assert!(
        flood.status.success(),
        "flood: {}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let during = stats(&sb);
    std::fs::write(&go, "").unwrap();
    let out = clients.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "established connections broke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The flood went through the unconfirmed table only; new connections still work.
    let ct = &during["conntrack"];
    let (unconfirmed, cap) = (
        ct["unconfirmed"].as_u64().unwrap(),
        ct["unconfirmed_capacity"].as_u64().unwrap(),
    );
    assert!(
        unconfirmed <= cap && unconfirmed > cap / 2,
        "the flood filled it: {ct}"
    );
    let conflicts = stats(&sb)["drops"]["conntrack-conflict"].as_u64().unwrap();
    assert_eq!(conflicts, 0);
    let again = sb.outside_sh(&format!(
        "timeout 20 python3 {} {} 7000 1 {} {}",
        sc.path("clients.py"),
        sb.host_ip,
        sc.0.join("r2").display(),
        go.display()
    ));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "ok");
}

#[test]
fn internal_networks_never_reach_published_ports_through_their_gateway() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80", "5353:80/udp"], 80);
    sb.netctl_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.64.0.0/24",
        "priv",
    ]);
    sb.whoami("inside", Some("priv"), &[], 80);
    let get = |url: &str| {
        sb.container_sh("inside", &format!("curl -sf --max-time 3 {url}"))
            .status
            .success()
    };
    // Its own gateway is a host address, and 8080 is published on every host address.
    assert!(!get("http://10.64.0.1:8080/"), "hairpinned into web");
    let udp = sb.container_sh(
        "inside",
        &format!("python3 -c '{}' 10.64.0.1 5353", netctl_tests::UDP_CLIENT),
    );
    assert!(!udp.status.success(), "UDP hairpinned into web");
    assert!(stats(&sb)["drops"]["internal-network"].as_u64().unwrap() >= 2);
    // The published port itself works from outside and from a normal network.
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_some());
    let other = sb.container_sh(
        "web",
        &format!("curl -sf --max-time 3 http://{}:8080/", sb.host_ip),
    );
    assert!(other.status.success());
}

#[test]
fn forged_icmp_errors_never_reach_containers_real_ones_do() {
    require_sandbox!();
    let sb = Sandbox::new();
    let sc = Scripts::new(&sb);
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    let cip = container_ip(&sb, "c");
    // The outside can route to the container network (it gets nowhere but the uplink).
    sb.outside_sh(&format!("ip route add 172.17.0.0/16 via {}", sb.host_ip));
    let _sink = Background(sb.spawn_outside(&format!(
        "timeout 60 python3 {} {} 9998",
        sc.path("udp_sink.py"),
        sb.outside_ip
    )));
    std::thread::sleep(Duration::from_millis(300));

    // A real error: nothing listens on 9999 outside; the port unreachable comes back
    // through masquerade and reaches the container's socket.
    let pf = sc.0.join("port-real");
    let real = sb.netctl(&[
        "exec",
        "c",
        "--",
        "python3",
        &sc.path("udp_wait.py"),
        &sb.outside_ip,
        "9999",
        pf.to_str().unwrap(),
        "3",
    ]);
    assert_eq!(String::from_utf8_lossy(&real.stdout).trim(), "refused");

    // Forged: the sink never answers, but the outside forges a port unreachable about the
    // container's datagram and sends it to the container's own address.
    let pf = sc.0.join("port-forged");
    let waiter = sb
        .netctl_cmd(&[
            "exec",
            "c",
            "--",
            "python3",
            &sc.path("udp_wait.py"),
            &sb.outside_ip,
            "9998",
            pf.to_str().unwrap(),
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&pf, "the container's socket");
    let sport = std::fs::read_to_string(&pf).unwrap();
    for to in [cip.as_str(), sb.host_ip.as_str()] {
        let forge = sb.outside_sh(&format!(
            "python3 {} {to} {cip} {sport} {} 9998",
            sc.path("icmp_forge.py"),
            sb.outside_ip
        ));
        assert!(forge.status.success());
    }
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "timeout");
    assert!(stats(&sb)["drops"]["no-way-in"].as_u64().unwrap() >= 1);
}

/// Answers UDP datagrams with "host": `udp_host.py PORT`.
const UDP_HOST: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d, peer = s.recvfrom(2048); s.sendto(b"host", peer)
"#;

#[test]
fn the_hosts_own_sockets_on_published_ports_keep_their_traffic() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80", "5353:80/udp"], 80);
    let _srv = sb.outside_whoami_server(9000, 60);
    // A host client whose connection happens to leave from source port 8080: the server's
    // SYN-ACK (and everything after it) is the client's, not web's.
    let out = sb.host_sh(&format!(
        "curl -sf --max-time 5 --local-port 8080 http://{}:9000/",
        sb.outside_ip
    ));
    assert!(
        out.status.success(),
        "host client from port 8080: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), sb.host_ip);
    // Meanwhile the published port keeps serving the outside.
    let url = format!("http://{}:8080/", sb.host_ip);
    assert_eq!(
        sb.curl_from_outside(&url).as_deref(),
        Some(sb.outside_ip.as_str())
    );

    // A UDP socket the host binds on the published port gets the datagrams for it.
    assert_eq!(
        sb.udp_from_outside(&sb.host_ip, 5353).as_deref(),
        Some(format!("udp {}", sb.outside_ip).as_str()),
        "before: the container answers"
    );
    let script = std::env::temp_dir().join(format!("netctl-udp-host-{}.py", sb.id));
    std::fs::write(&script, UDP_HOST).unwrap();
    let _host = Background(
        sb.in_host("timeout")
            .args(["60", "python3"])
            .arg(&script)
            .arg("5353")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb.host_sh("ss -lunH | grep -q ':5353 '").status.success() {
        assert!(Instant::now() < deadline, "the host socket did not bind");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = sb.udp_from_outside(&sb.host_ip, 5353);
    let _ = std::fs::remove_file(&script);
    assert_eq!(answer.as_deref(), Some("host"));
}

/// A namespace beyond the host (behind it, not on an uplink): a veth `bey0` in the host
/// namespace, 100.64.N.1/24, and its peer 100.64.N.2 with a default route back, running an
/// HTTP server on 8000. It lives as long as a process of its own (no name to leave behind).
struct Beyond {
    holder: Background,
    _server: Background,
    addr: String,
}

impl Beyond {
    fn new(sb: &Sandbox, n: u8) -> Self {
        let holder = Background(
            std::process::Command::new("unshare")
                .args(["--net", "sleep", "120"])
                .spawn()
                .unwrap(),
        );
        let pid = holder.0.id();
        let ns = format!("/proc/{pid}/ns/net");
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&ns).map_or(true, |l| l == ours) {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let addr = format!("100.64.{n}.2");
        let host = sb.host_sh(&format!(
            "ip link add bey0 type veth peer name bey1 netns {pid} && \
             ip addr add 100.64.{n}.1/24 dev bey0 && ip link set bey0 up"
        ));
        assert!(
            host.status.success(),
            "{}",
            String::from_utf8_lossy(&host.stderr)
        );
        let inside = |script: &str| {
            std::process::Command::new("nsenter")
                .arg(format!("--net={ns}"))
                .args(["sh", "-c", script])
                .output()
                .unwrap()
        };
        let set = inside(&format!(
            "ip link set lo up && ip addr add {addr}/24 dev bey1 && ip link set bey1 up && \
             ip route add default via 100.64.{n}.1"
        ));
        assert!(
            set.status.success(),
            "{}",
            String::from_utf8_lossy(&set.stderr)
        );
        let server = Background(
            std::process::Command::new("nsenter")
                .arg(format!("--net={ns}"))
                // Directly, not under timeout: killing a timeout would orphan the server.
                .args(["python3", "-c", TINY_HTTP, &addr, "8000", "beyond"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !inside("ss -ltnH | grep -q ':8000 '").status.success() {
            if Instant::now() > deadline {
                let o = inside("ss -ltn; ip addr; ps aux | grep http.server");
                panic!(
                    "the server beyond did not start: {}",
                    String::from_utf8_lossy(&o.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sb.outside_sh(&format!("ip route add 100.64.{n}.0/24 via {}", sb.host_ip));
        Beyond {
            holder,
            _server: server,
            addr,
        }
    }

    fn pid(&self) -> u32 {
        self.holder.0.id()
    }
}

#[test]
fn the_host_routes_nothing_for_the_outside_unless_it_did_before() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    assert_eq!(
        std::fs::read_to_string(sb.state_dir.join("forwarding-before")).unwrap(),
        "0\n",
        "a fresh namespace does not forward"
    );
    let beyond = Beyond::new(&sb, 7);
    let url = format!("http://{}:8000/", beyond.addr);
    // The outside cannot reach the namespace behind the host through it…
    assert!(
        sb.curl_from_outside(&url).is_none(),
        "routed through the host"
    );
    // …nor can that namespace get out through the host.
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", beyond.pid()))
        .args(["ping", "-c", "1", "-W", "1", &sb.outside_ip])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the namespace beyond got out");
    assert!(stats(&sb)["drops"]["forward-denied"].as_u64().unwrap() >= 2);
    // Containers still get out, and published ports still answer.
    let srv = sb.outside_whoami_server(9999, 60);
    let got = sb.container_sh(
        "c",
        &format!("curl -sf --max-time 5 http://{}:9999/", sb.outside_ip),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout), sb.host_ip);
    drop(srv);
    sb.whoami("web", None, &["8080:80"], 80);
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_some());

    // A host that was a router before netctl came stays one.
    let sb = Sandbox::new();
    assert!(sb
        .host_sh("sysctl -qw net.ipv4.ip_forward=1")
        .status
        .success());
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    assert_eq!(
        std::fs::read_to_string(sb.state_dir.join("forwarding-before")).unwrap(),
        "1\n"
    );
    let beyond = Beyond::new(&sb, 8);
    let url = format!("http://{}:8000/", beyond.addr);
    assert!(
        sb.curl_from_outside(&url).is_some(),
        "the router stopped routing"
    );
}
