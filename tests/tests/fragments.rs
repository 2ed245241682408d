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
