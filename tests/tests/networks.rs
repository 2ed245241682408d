//! `netctl network …` end to end, in sandboxes.

use netctl_tests::{require_sandbox, Sandbox};
use serde_json::Value;

fn inspect(sb: &Sandbox, name: &str) -> Value {
    let v: Value = serde_json::from_str(&sb.netctl_ok(&["network", "inspect", name])).unwrap();
    v[0].clone()
}

#[test]
fn create_inspect_ls_rm() {
    require_sandbox!();
    let sb = Sandbox::new();
    let id = sb.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.254",
        "--ip-range",
        "10.77.0.128/25",
        "-o",
        "com.docker.network.bridge.name=nctest0",
        "-o",
        "mtu=1400",
        "-o",
        "icc=false",
        "front",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "prints the network id: {id}");

    let n = inspect(&sb, "front");
    assert_eq!(n["Name"], "front");
    assert_eq!(n["Id"], id);
    assert_eq!(n["Driver"], "bridge");
    assert_eq!(n["Scope"], "local");
    assert_eq!(n["Internal"], false);
    assert_eq!(n["IPAM"]["Driver"], "default");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24");
    assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "10.77.0.254");
    assert_eq!(n["IPAM"]["Config"][0]["IPRange"], "10.77.0.128/25");
    assert_eq!(n["Options"]["com.docker.network.bridge.name"], "nctest0");
    assert_eq!(n["Options"]["icc"], "false");
    assert!(n["Containers"].as_object().unwrap().is_empty());

    // The bridge is real: name, gateway address, MTU, up.
    let link = sb.host_sh("ip -o addr show dev nctest0; ip -o link show dev nctest0");
    let text = String::from_utf8_lossy(&link.stdout);
    assert!(text.contains("10.77.0.254/24"), "{text}");
    assert!(text.contains("mtu 1400"), "{text}");

    // Containers take addresses from the ip-range.
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
    let n = inspect(&sb, "front");
    let c = n["Containers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(c["Name"], "a");
    assert_eq!(c["IPv4Address"], "10.77.0.128/24");
    assert_eq!(c["MacAddress"], "02:42:0a:4d:00:80");
    assert_eq!(c["EndpointID"].as_str().unwrap().len(), 64);

    let ls = sb.netctl_ok(&["network", "ls"]);
    assert!(ls.lines().next().unwrap().starts_with("NETWORK ID"), "{ls}");
    assert!(ls.contains(&id[..12]) && ls.contains("front"), "{ls}");
    let rows: Vec<Value> = sb
        .netctl_ok(&["network", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Docker's pre-defined networks are always listed, by name with the others.
    let names: Vec<&str> = rows.iter().map(|r| r["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bridge", "front", "host", "none"]);
    assert_eq!(rows[2]["Driver"], "host");
    assert_eq!(rows[3]["Driver"], "null");
    let ids = sb.netctl_ok(&["network", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 4);
    assert!(ids.lines().any(|l| l == &id[..12]), "{ids}");

    // rm refuses while a container is attached, and says which.
    let err = sb.netctl_err(&["network", "rm", "front"]);
    assert!(err.contains("has containers attached (a)"), "{err}");
    sb.netctl_ok(&["rm", "-f", "a"]);
    sb.netctl_ok(&["network", "rm", "front"]);
    assert!(!sb.host_links().contains(&"nctest0".to_string()));
    assert!(sb.state()["networks"].as_object().unwrap().is_empty());
    let err = sb.netctl_err(&["network", "inspect", "front"]);
    assert!(err.contains("no such network: front"), "{err}");
}

#[test]
fn pools_skip_networks_and_host_routes() {
    require_sandbox!();
    let sb = Sandbox::new();
    // A host route over the first pool (172.18/16) must push new networks past it.
    assert!(sb
        .host_sh(&format!("ip route add 172.18.4.0/24 via {}", sb.outside_ip))
        .status
        .success());
    sb.netctl_ok(&["network", "create", "one"]);
    sb.netctl_ok(&["network", "create", "two"]);
    assert_eq!(
        inspect(&sb, "one")["IPAM"]["Config"][0]["Subnet"],
        "172.19.0.0/16"
    );
    assert_eq!(
        inspect(&sb, "one")["IPAM"]["Config"][0]["Gateway"],
        "172.19.0.1"
    );
    assert_eq!(
        inspect(&sb, "two")["IPAM"]["Config"][0]["Subnet"],
        "172.20.0.0/16"
    );
    // The default network prefers 172.17.0.0/16 and uses the bridge netctl0. Inspecting it
    // shows it without making it; its first use makes it, with the same ID.
    let d = inspect(&sb, "bridge");
    assert_eq!(d["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert!(!sb.host_links().contains(&"netctl0".to_string()));
    sb.netctl_ok(&["run", "-d", "--name", "c", "--", "sleep", "60"]);
    assert!(sb.host_links().contains(&"netctl0".to_string()));
    assert_eq!(inspect(&sb, "bridge")["Id"], d["Id"]);
}

#[test]
fn internal_and_option_flags_are_recorded() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&[
        "network",
        "create",
        "--internal",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "priv",
    ]);
    let n = inspect(&sb, "priv");
    assert_eq!(n["Internal"], true);
    let st = sb.state();
    assert_eq!(st["networks"]["priv"]["masquerade"], false);
    assert_eq!(st["networks"]["priv"]["internal"], true);
    // An internal network gives containers no default route.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "p",
        "--network",
        "priv",
        "--",
        "sleep",
        "300",
    ]);
    let routes = sb.netctl_ok(&["exec", "p", "--", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
}

#[test]
fn connect_and_disconnect() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.81.0.0/24", "a"]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.82.0.0/24", "b"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "a",
        "--",
        "sleep",
        "300",
    ]);
    sb.netctl_ok(&["network", "connect", "--ip", "10.82.0.50", "b", "c"]);
    let addrs = sb.netctl_ok(&["exec", "c", "--", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains("eth0") && addrs.contains("10.81.0.2/24"),
        "{addrs}"
    );
    assert!(
        addrs.contains("eth1") && addrs.contains("10.82.0.50/24"),
        "{addrs}"
    );
    let err = sb.netctl_err(&["network", "connect", "b", "c"]);
    assert!(err.contains("already connected"), "{err}");
    // The default route stays on eth0; after eth0 goes, eth1 carries it.
    let r = sb.netctl_ok(&["exec", "c", "--", "ip", "route", "show", "default"]);
    assert!(r.contains("10.81.0.1"), "{r}");
    sb.netctl_ok(&["network", "disconnect", "a", "c"]);
    let r = sb.netctl_ok(&["exec", "c", "--", "ip", "route", "show", "default"]);
    assert!(r.contains("10.82.0.1 dev eth1"), "{r}");
    let addrs = sb.netctl_ok(&["exec", "c", "--", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("10.81.0.2"), "{addrs}");
    // The address went back to the pool.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "d",
        "--network",
        "a",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(
        sb.state()["containers"]["d"]["endpoints"][0]["ip"],
        "10.81.0.2"
    );
    let err = sb.netctl_err(&["network", "disconnect", "a", "c"]);
    assert!(err.contains("not connected"), "{err}");
}
