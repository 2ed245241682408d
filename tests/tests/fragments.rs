//! IP fragments through netctl's NAT with real traffic: large UDP datagrams out through
//! masquerade and in through a published port (both directions fragmented), and a large ping.

use std::process::Stdio;

use netctl_tests::{require_sandbox, Background, Sandbox};

/// A UDP echo server: every datagram back to its sender, whatever its size.
const ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, peer = s.recvfrom(65535); s.sendto(d, peer)
"#;

/// Sends one datagram of SIZE bytes to ADDR:PORT and prints "ok" when the same bytes come back.
const CLIENT: &str = r#"
import os, socket, sys
addr, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.settimeout(2)
data = os.urandom(size)
for _ in range(3):
    s.sendto(data, (addr, port))
    try:
        back, _ = s.recvfrom(65535)
        print("ok" if back == data else "different %d" % len(back)); break
    except socket.timeout:
        continue
else:
    print("timeout")
"#;

fn client(sb: &Sandbox, container: Option<&str>, addr: &str, port: u16, size: usize) -> String {
    let script = format!("python3 -c '{CLIENT}' {addr} {port} {size}");
    let out = match container {
        Some(c) => sb.container_sh(c, &script),
        None => sb.outside_sh(&script),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stats(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap()
}

#[test]
fn large_datagrams_and_pings_cross_nat_in_fragments() {
    require_sandbox!();
    let sb = Sandbox::new();
    // Outside: an echo server the containers reach through masquerade.
    let _outside = Background(
        sb.in_outside("python3")
            .args(["-c", ECHO, &sb.outside_ip, "9999"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A container serving UDP echo on a published port.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "-p",
        "5353:53/udp",
        "--",
        "python3",
        "-c",
        ECHO,
        "0.0.0.0",
        "53",
    ]);
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    let wait =
        "for i in $(seq 100); do ss -lunH | grep -q ':53 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.container_sh("echo", wait).status.success());
    let wait =
        "for i in $(seq 100); do ss -lunH | grep -q ':9999 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.outside_sh(wait).status.success());

    for size in [4000, 60000] {
        // Out through masquerade, the reply fragmented on the way back in.
        assert_eq!(
            client(&sb, Some("c"), &sb.outside_ip, 9999, size),
            "ok",
            "{size} bytes out and back"
        );
        // In through the published port, the reply fragmented on the way out.
        assert_eq!(
            client(&sb, None, &sb.host_ip, 5353, size),
            "ok",
            "{size} bytes in and back"
        );
    }
    // A large ping out: fragmented ICMP echo both ways.
    let ping = sb.container_sh("c", &format!("ping -c 2 -W 2 -s 3000 {}", sb.outside_ip));
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert_eq!(stats(&sb)["drops"]["fragment"].as_u64(), Some(0));
}

/// A TCP server that reads everything until the client half-closes, then answers with the
/// byte count; or, with a size, sends that many bytes to whoever connects.
const TCP_SINK: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
send = int(sys.argv[3])
while True:
    c, _ = s.accept()
    if send:
        c.recv(100); c.sendall(b"x" * send); c.close(); continue
    n = 0
    while True:
        d = c.recv(65536)
        if not d: break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
"#;

/// Connects, sends SEND bytes and half-closes (or asks and reads); prints the bytes exchanged.
const TCP_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
send = int(sys.argv[3])
if send:
    c.sendall(b"y" * send); c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())
else:
    c.sendall(b"go"); n = 0
    while True:
        d = c.recv(65536)
        if not d: break
        n += len(d)
    print(n)
"#;

#[test]
fn path_mtu_discovery_works_through_nat() {
    require_sandbox!();
    let sb = Sandbox::new();
    // A network beyond the outside namespace, behind a hop with a small MTU: the outside
    // namespace routes to it through a 1280-byte link, while both ends advertise 1460-byte
    // segments. Only "fragmentation needed" from that hop makes big transfers work.
    let far = sb.empty_namespace("far");
    let r: u8 = sb.host_ip.split('.').nth(2).unwrap().parse().unwrap();
    let (hop, far_ip) = (format!("100.99.{r}.1"), format!("100.99.{r}.2"));
    let setup = format!(
        "ip link add hop0 type veth peer name far0 netns {far} && ip link set hop0 mtu 1280 up && \
         ip addr add {hop}/24 dev hop0 && sysctl -qw net.ipv4.ip_forward=1"
    );
    assert!(sb.outside_sh(&setup).status.success());
    let setup = format!(
        "ip link set far0 up && ip addr add {far_ip}/24 dev far0 && ip route add default via {hop}"
    );
    assert!(sb.ns_sh(&far, &setup).status.success());
    let route = format!("ip route add 100.99.{r}.0/24 via {}", sb.outside_ip);
    assert!(sb.host_sh(&route).status.success());

    let spawn_far = |args: &[&str]| {
        Background(
            std::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{far}"))
                .args(["python3", "-c", TCP_SINK])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _sink = spawn_far(&[&far_ip, "7000", "0"]);
    let wait =
        "for i in $(seq 100); do ss -ltnH | grep -q ':7000 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.ns_sh(&far, wait).status.success());

    // Behind masquerade: a container uploads 300 kB to the far server.
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    let up = sb.container_sh(
        "c",
        &format!("python3 -c '{TCP_CLIENT}' {far_ip} 7000 300000"),
    );
    assert_eq!(
        String::from_utf8_lossy(&up.stdout).trim(),
        "300000",
        "upload through masquerade: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    // Behind a published port: a far client downloads 300 kB from a container.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "-p",
        "8080:8080",
        "--",
        "python3",
        "-c",
        TCP_SINK,
        "0.0.0.0",
        "8080",
        "300000",
    ]);
    let wait =
        "for i in $(seq 100); do ss -ltnH | grep -q ':8080 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.container_sh("srv", wait).status.success());
    let down = sb.ns_sh(
        &far,
        &format!("python3 -c '{TCP_CLIENT}' {} 8080 0", sb.host_ip),
    );
    assert_eq!(
        String::from_utf8_lossy(&down.stdout).trim(),
        "300000",
        "download from a published port: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    // Both containers learnt the path's MTU from the translated "fragmentation needed".
    for c in ["c", "srv"] {
        let out = sb.container_sh(c, &format!("ip route get {far_ip}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("mtu 1280"), "{c}: {text}");
    }
}
