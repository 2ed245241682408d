//! The state database under load from every front-end at once, and the move from an older
//! netctl's `state.json`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::{Child, Stdio},
};

use netctl_tests::{require_sandbox, sleeper_args, Sandbox};
use serde_json::{json, Value};

const SUBNET: &str = "10.71.0.0/24";

fn cni_conf() -> String {
    json!({"cniVersion": "1.1.0", "name": "shared", "type": "netctl", "subnet": SUBNET}).to_string()
}

fn cni_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}cccccccccccccccc")
}

/// A CNI ADD or DEL as a runtime starts it: its own process, the config on stdin.
fn cni(sb: &Sandbox, command: &str, id: &str, ns: &str) -> Child {
    let mut child = sb
        .netctl_cmd(&[])
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/run/netns/{ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("NETCTL_LOCK_TIMEOUT", "600")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cni_conf().as_bytes())
        .unwrap();
    child
}

fn netctl(sb: &Sandbox, args: &[&str]) -> Child {
    sb.netctl_cmd(args)
        .env("NETCTL_LOCK_TIMEOUT", "600")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ok(what: &str, child: Child) -> Vec<u8> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn two_hundred_concurrent_runs_removals_and_cni_calls_never_share_an_address() {
    require_sandbox!();
    let sb = Sandbox::new();
    // Before: 50 containers to remove and 50 CNI attachments to delete, on one network that
    // CNI and `run` share.
    let old_ns: Vec<String> = (0..50)
        .map(|i| sb.empty_namespace(&format!("o{i}")))
        .collect();
    for (i, ns) in old_ns.iter().enumerate() {
        wait_ok("ADD", cni(&sb, "ADD", &cni_id("0", i), ns));
    }
    for i in 0..50 {
        let name = format!("old{i}");
        sb.sleeper(&name, "shared");
    }
    // At once: 50 runs, 50 removals, 50 ADDs, 50 DELs, each its own process.
    let new_ns: Vec<String> = (0..50)
        .map(|i| sb.empty_namespace(&format!("n{i}")))
        .collect();
    let mut children: Vec<(String, Child)> = Vec::new();
    for i in 0..50 {
        let (new, old) = (format!("new{i}"), format!("old{i}"));
        children.push((
            format!("run {new}"),
            netctl(&sb, &sleeper_args(&new, "shared")),
        ));
        children.push((format!("rm {old}"), netctl(&sb, &["rm", "-f", &old])));
        children.push((
            format!("ADD {i}"),
            cni(&sb, "ADD", &cni_id("1", i), &new_ns[i]),
        ));
        children.push((
            format!("DEL {i}"),
            cni(&sb, "DEL", &cni_id("0", i), &old_ns[i]),
        ));
    }
    assert_eq!(children.len(), 200);
    let mut added: BTreeMap<String, String> = BTreeMap::new();
    for (what, child) in children {
        let out = wait_ok(&what, child);
        if let Some(i) = what.strip_prefix("ADD ") {
            let r: Value = serde_json::from_slice(&out).unwrap();
            let addr = r["ips"][0]["address"].as_str().unwrap();
            added.insert(i.to_string(), addr.trim_end_matches("/24").to_string());
        }
    }

    // The state: exactly the new ones, every address once.
    let st = sb.state();
    let containers = st["containers"].as_object().unwrap();
    assert_eq!(containers.len(), 100, "{:?}", containers.keys());
    let ips: Vec<String> = containers
        .values()
        .map(|c| c["endpoints"][0]["ip"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 100, "an address handed out twice: {ips:?}");
    // What the runtimes were told is what the state has, and what the kernel has.
    for (i, ns) in new_ns.iter().enumerate() {
        let addr = &added[&i.to_string()];
        assert!(ips.contains(addr), "ADD {i} was told {addr}");
        let shown = sb.ns_sh(ns, "ip -o -4 addr show eth0");
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains(&format!("{addr}/24")),
            "ADD {i}: {addr}"
        );
    }
    for i in (0..50).step_by(7) {
        let name = format!("new{i}");
        let ip = st["containers"][&name]["endpoints"][0]["ip"]
            .as_str()
            .unwrap();
        let shown = sb.netctl_ok(&[
            "exec", &name, "--", "ip", "-o", "-4", "addr", "show", "eth0",
        ]);
        assert!(shown.contains(&format!("{ip}/24")), "{name}: {shown}");
    }
    let veths = sb
        .host_links()
        .iter()
        .filter(|l| l.starts_with("veth"))
        .count();
    assert_eq!(veths, 100);
    for ns in old_ns {
        let left = sb.ns_sh(&ns, "ip -o link show eth0");
        assert!(!left.status.success(), "DEL left eth0 in {ns}");
    }
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
}

#[test]
fn a_state_json_of_an_older_netctl_is_moved_into_the_database() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.72.0.0/24", "front"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "300",
    ]);
    let before = sb.state();
    // What an older netctl kept: the same state as one JSON file, no database.
    sb.replace_state(&before.to_string());
    // Read-only commands read the file and leave it.
    assert!(sb.netctl_ok(&["ps"]).contains("web"));
    assert!(sb.state_dir.join("state.json").exists());
    assert!(!sb.state_dir.join("state.db").exists());
    // The first change moves it in, and works on it.
    let out = sb.netctl(&sleeper_args("api", "front"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("moved the state"));
    assert!(sb.state_dir.join("state.db").exists());
    assert!(!sb.state_dir.join("state.json").exists());
    assert!(sb.state_dir.join("state.json.migrated").exists());
    let after = sb.state();
    assert_eq!(after["containers"]["web"], before["containers"]["web"]);
    assert_eq!(after["networks"]["front"], before["networks"]["front"]);
    assert_ne!(
        after["containers"]["api"]["endpoints"][0]["ip"],
        before["containers"]["web"]["endpoints"][0]["ip"]
    );
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
    assert!(sb.netctl_ok(&["port", "web"]).contains("8080"));
}
