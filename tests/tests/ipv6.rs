//! Dual-stack networks (`network create --ipv6`): addresses, inspect, IPv6 between the
//! containers of a network and to the host, the isolation rules for IPv6 — and a root
//! process in a container forging IPv6 (another's address, neighbour advertisements for a
//! neighbour's address, router advertisements, routing headers).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use netctl_tests::{drop_count as drops, require_sandbox, Sandbox};
use serde_json::Value;

/// A TCP server on [::]:PORT answering each connection with the client's address.
const WHOAMI6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(16)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"#;

/// Connects to [ADDR]:PORT and prints what the server said (or "failed").
const CONNECT6: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(c.recv(100).decode())
except OSError as e:
    print("failed", e)
"#;

fn inspect_network(sb: &Sandbox, name: &str) -> Value {
    let out = sb.netctl_ok(&["network", "inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn inspect_container(sb: &Sandbox, name: &str, network: &str) -> Value {
    let out = sb.netctl_ok(&["inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0]["NetworkSettings"]["Networks"][network]
        .clone()
}

fn ip6_of(sb: &Sandbox, name: &str, network: &str) -> String {
    let v = inspect_container(sb, name, network);
    v["GlobalIPv6Address"].as_str().unwrap().to_string()
}

fn serve(sb: &Sandbox, name: &str, network: &str, port: u16) {
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--",
        "python3",
        "-c",
        WHOAMI6,
        &port.to_string(),
    ]);
    let wait = format!(
        "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.05; done; exit 1"
    );
    assert!(sb.container_sh(name, &wait).status.success());
}

fn connect(sb: &Sandbox, from: &str, addr: &str, port: u16) -> String {
    let out = sb.netctl(&[
        "exec",
        from,
        "--",
        "python3",
        "-c",
        CONNECT6,
        addr,
        &port.to_string(),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_dual_stack_network_carries_ipv6_between_its_containers_and_to_its_gateway() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.61.0.0/24",
        "--subnet",
        "fd61:1::/64",
        "dual",
    ]);
    let n = inspect_network(&sb, "dual");
    assert_eq!(n["EnableIPv6"], true);
    assert_eq!(n["EnableIPv4"], true);
    let configs = n["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 2, "{n}");
    assert_eq!(configs[1]["Subnet"], "fd61:1::/64");
    assert_eq!(configs[1]["Gateway"], "fd61:1::1");
    serve(&sb, "web", "dual", 8080);
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
    assert_eq!(ip6_of(&sb, "client", "dual"), "fd61:1::99");
    let n = inspect_network(&sb, "dual");
    let eps: Vec<&Value> = n["Containers"].as_object().unwrap().values().collect();
    assert!(
        eps.iter().any(|e| e["IPv6Address"] == "fd61:1::99/64"),
        "{n}"
    );
    // The container has the address, the gateway as its default route, its link-local.
    let addrs = sb.container_sh("client", "ip -6 addr show dev eth0; ip -6 route show default");
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    assert!(addrs.contains("fd61:1::99/64"), "{addrs}");
    assert!(addrs.contains("fe80::"), "{addrs}");
    assert!(addrs.contains("default via fd61:1::1"), "{addrs}");
    // TCP between the containers over IPv6; the server sees the client's own address.
    assert_eq!(connect(&sb, "client", "fd61:1::2", 8080), "fd61:1::99");
    // By link-local address too.
    let ll = inspect_container(&sb, "web", "dual")["LinkLocalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        connect(&sb, "client", &format!("{ll}%eth0"), 8080),
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
    let v: Value = serde_json::from_str(&stats).unwrap();
    let dropped: u64 = v["drops"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(dropped, 0, "{stats}");
}
