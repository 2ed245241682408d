//! Bad input is refused in one line and changes nothing; concurrent commands never share an
//! address; `sync` repairs what killed commands and lost kernel objects leave.

use std::collections::BTreeSet;

use netctl_tests::{require_sandbox, Sandbox};

/// Everything a failed command must leave as it was.
fn snapshot(sb: &Sandbox) -> (String, Vec<String>, Vec<String>) {
    (sb.state_text(), sb.host_links(), sb.netns_handles())
}

fn refused(sb: &Sandbox, args: &[&str], expect: &str) {
    let before = snapshot(sb);
    let err = sb.netctl_err(args);
    assert!(
        err.contains(expect),
        "netctl {}: expected {expect:?} in {err:?}",
        args.join(" ")
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line for netctl {}: {err:?}",
        args.join(" ")
    );
    assert!(err.starts_with("netctl: "), "{err}");
    assert_eq!(
        snapshot(sb),
        before,
        "netctl {} changed something",
        args.join(" ")
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.90.0.0/24", "net"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "net",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "300",
    ]);
    let uplink_net = format!(
        "{}/24",
        sb.host_ip.rsplit_once('.').unwrap().0.to_string() + ".0"
    );

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "--subnet", "10.0.0.0/33", "x"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "--subnet", "banana", "x"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "--subnet", "10.91.0.7/24", "x"],
            "did you mean 10.91.0.0/24",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.91.0.0/24",
                "--gateway",
                "10.92.0.1",
                "x",
            ],
            "gateway 10.92.0.1 is not a usable address of subnet 10.91.0.0/24",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.91.0.0/24",
                "--gateway",
                "nope",
                "x",
            ],
            "invalid gateway",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.91.0.0/24",
                "--ip-range",
                "10.93.0.0/25",
                "x",
            ],
            "not inside subnet",
        ),
        (
            vec!["network", "create", "--subnet", "10.90.0.0/16", "x"],
            "overlaps network net",
        ),
        (
            vec!["network", "create", "--subnet", &uplink_net, "x"],
            "address or route of this host",
        ),
        (
            vec!["network", "create", "net"],
            "network net already exists",
        ),
        (
            vec!["network", "create", "bad/name"],
            "invalid network name",
        ),
        (
            vec!["network", "create", "-o", "color=blue", "x"],
            "unknown option",
        ),
        (
            vec!["network", "create", "-o", "mtu=abc", "x"],
            "invalid MTU",
        ),
        (
            vec!["network", "create", "--driver", "overlay", "x"],
            "overlay networks need a cluster store",
        ),
        (
            vec!["network", "create", "--gateway", "10.0.0.1", "x"],
            "need --subnet",
        ),
        (
            vec!["run", "-d", "--name", "a", "--", "sleep", "1"],
            "container name a is already in use",
        ),
        (
            vec!["run", "-d", "--name", "b c", "--", "sleep", "1"],
            "invalid container name",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "nope",
                "--",
                "sleep",
                "1",
            ],
            "no such network: nope",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "--ip",
                "10.99.0.5",
                "--",
                "sleep",
                "1",
            ],
            "Invalid preferred address 10.99.0.5: It does not belong to any of this network's subnets",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "--ip",
                "banana",
                "--",
                "sleep",
                "1",
            ],
            "invalid --ip",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "--ip",
                "10.90.0.2",
                "--",
                "sleep",
                "1",
            ],
            "already in use",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "-p",
                "8080:81",
                "--",
                "sleep",
                "1",
            ],
            "host port 8080/tcp on 0.0.0.0 is already published",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "-p",
                "99999:80",
                "--",
                "sleep",
                "1",
            ],
            "ports are 1-65535",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "-p",
                "80/icmp",
                "--",
                "sleep",
                "1",
            ],
            "unknown protocol",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "b",
                "--network",
                "net",
                "-p",
                "8000-8002:80-81",
                "--",
                "sleep",
                "1",
            ],
            "same length",
        ),
        (vec!["rm", "nope"], "no such container: nope"),
        (vec!["rm", "a", "nope"], "no such container: nope"),
        (vec!["network", "rm", "net"], "has containers attached (a)"),
        (vec!["network", "rm", "nope"], "no such network: nope"),
        (
            vec!["network", "connect", "nope", "a"],
            "no such network: nope",
        ),
        (
            vec!["network", "connect", "net", "nope"],
            "no such container: nope",
        ),
        (
            vec!["network", "disconnect", "net", "nope"],
            "no such container: nope",
        ),
        (
            vec!["exec", "nope", "--", "true"],
            "no such container: nope",
        ),
        (vec!["port", "nope"], "no such container: nope"),
    ];
    for (args, expect) in &cases {
        refused(&sb, args, expect);
    }
}

#[test]
fn a_failed_first_run_does_not_leave_the_default_network() {
    require_sandbox!();
    let sb = Sandbox::new();
    refused(
        &sb,
        &[
            "run", "-d", "--name", "b", "--ip", "10.1.2.3", "--", "sleep", "1",
        ],
        "user specified IP address is supported only when connecting to networks with user configured subnets",
    );
    assert!(!sb.host_links().contains(&"netctl0".to_string()));
}

#[test]
fn a_full_bridge_is_a_clear_error_and_changes_nothing() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // The interfaces filling the bridge are no uplinks.
    sb.env("NETCTL_UPLINKS", netctl_tests::UPLINK);
    sb.netctl_ok(&["network", "create", "--subnet", "10.77.0.0/16", "big"]);
    let bridge = sb.state()["networks"]["big"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    // A Linux bridge takes 1,023 ports: fill it with someone else's.
    let batch: String = (0..1023)
        .map(|i| {
            format!("link add fx{i} type veth peer name fy{i}\nlink set fx{i} master {bridge}\n")
        })
        .collect();
    let path = sb.state_dir.join("fill-bridge.batch"); // gone with the sandbox
    std::fs::write(&path, batch).unwrap();
    let out = sb.host_sh(&format!("ip -batch {}", path.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (The daemon may hold the lock for a moment: 2,046 new interfaces to look at.)
    let before = snapshot(&sb);
    let run = [
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "big",
        "--",
        "sleep",
        "1",
    ];
    let err = sb.netctl_err(&run);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("netctl: ")
            && last.contains("bridge is full")
            && last.contains("another network"),
        "{err}"
    );
    assert_eq!(snapshot(&sb), before, "a refused run changed something");
}

#[test]
fn not_root_is_refused() {
    require_sandbox!();
    let sb = Sandbox::new();
    let out = sb
        .in_host("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(netctl_tests::netctl_bin())
        .args(["network", "create", "x"])
        .env("NETCTL_STATE_DIR", &sb.state_dir)
        .env("NETCTL_BPFFS", &sb.bpffs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as root"), "{err}");
    assert!(!sb.state_dir.join("state.db").exists());
}

#[test]
fn concurrent_runs_get_distinct_addresses() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.70.0.0/24", "net"]);
    let children: Vec<_> = (0..32)
        .map(|i| {
            sb.netctl_cmd(&[
                "run",
                "-d",
                "--name",
                &format!("c{i}"),
                "--network",
                "net",
                "--",
                "sleep",
                "300",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let st = sb.state();
    let containers = st["containers"].as_object().unwrap();
    assert_eq!(containers.len(), 32);
    let ips: BTreeSet<String> = containers
        .values()
        .map(|c| c["endpoints"][0]["ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 32, "addresses handed out twice: {ips:?}");
    let veths = sb
        .host_links()
        .iter()
        .filter(|l| l.starts_with("veth"))
        .count();
    assert_eq!(veths, 32);
    assert_eq!(sb.netns_handles().len(), 32);
    // Each container really has its address.
    let c7 = containers["c7"]["endpoints"][0]["ip"].as_str().unwrap();
    let addr = sb.netctl_ok(&["exec", "c7", "--", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{c7}/24")), "{addr}");
}

/// Every kernel object matches the state: no orphans, nothing missing.
fn assert_consistent(sb: &Sandbox) {
    let st = sb.state();
    let links: BTreeSet<String> = sb.host_links().into_iter().collect();
    let mut veths = BTreeSet::new();
    let mut handles = BTreeSet::new();
    for c in st["containers"].as_object().unwrap().values() {
        handles.insert(c["id"].as_str().unwrap()[..12].to_string());
        for ep in c["endpoints"].as_array().unwrap() {
            veths.insert(ep["host_veth"].as_str().unwrap().to_string());
        }
    }
    let live_veths: BTreeSet<String> = links
        .iter()
        .filter(|l| l.starts_with("veth"))
        .cloned()
        .collect();
    assert_eq!(live_veths, veths, "veths vs state");
    let live_handles: BTreeSet<String> = sb.netns_handles().into_iter().collect();
    assert_eq!(live_handles, handles, "namespace handles vs state");
    for n in st["networks"].as_object().unwrap().values() {
        assert!(
            links.contains(n["bridge"].as_str().unwrap()),
            "bridge {} missing",
            n["bridge"]
        );
    }
}

#[test]
fn sync_repairs_runs_killed_halfway() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["run", "-d", "--name", "first", "--", "sleep", "300"]);
    for i in 0..12u64 {
        let mut child = sb
            .netctl_cmd(&[
                "run",
                "-d",
                "--name",
                &format!("k{i}"),
                "-p",
                &format!("{}:80", 9000 + i),
                "--",
                "sleep",
                "300",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at different points of the run (nsenter execs netctl: this is netctl's pid).
        std::thread::sleep(std::time::Duration::from_millis(3 + i * 6));
        let _ = child.kill();
        let _ = child.wait();
    }
    sb.netctl_ok(&["sync"]);
    assert_consistent(&sb);
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
    // The state is still usable: a new container and rm of everything work.
    sb.netctl_ok(&["run", "-d", "--name", "after", "--", "sleep", "300"]);
    let names: Vec<String> = sb.state()["containers"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    sb.netctl_ok(&args);
    assert_consistent(&sb);
}

#[test]
fn sync_recreates_lost_bridges_veths_and_namespaces() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.88.0.0/24", "n"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    let st = sb.state();
    let bridge = st["networks"]["n"]["bridge"].as_str().unwrap().to_string();
    let veth_a = st["containers"]["a"]["endpoints"][0]["host_veth"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sb
        .host_sh(&format!("ip link del {veth_a}; ip link del {bridge}"))
        .status
        .success());
    // A "reboot" of b: its process and namespace are gone, the handle file stays.
    let b_handle = sb
        .state_dir
        .join("netns")
        .join(&st["containers"]["b"]["id"].as_str().unwrap()[..12]);
    sb.netctl_ok(&["exec", "b", "--", "true"]);
    // What a reboot does to b's processes (they would otherwise outlive the test).
    let inode = netctl_tests::ns_inode(&b_handle).unwrap();
    netctl_tests::kill_in_namespaces(&[inode]);
    nix::mount::umount2(&b_handle, nix::mount::MntFlags::MNT_DETACH).unwrap();

    let out = sb.netctl_ok(&["sync"]);
    assert!(
        out.contains(&format!("re-created bridge {bridge}")),
        "{out}"
    );
    assert!(out.contains("re-created eth0 of container a"), "{out}");
    assert!(
        out.contains("re-created the namespace of container b"),
        "{out}"
    );
    assert_consistent(&sb);
    // Repaired for real: a reaches the gateway and b over the rebuilt bridge.
    let ping = sb.netctl(&["exec", "a", "--", "ping", "-c", "1", "-W", "2", "10.88.0.1"]);
    assert!(ping.status.success(), "gateway unreachable after sync");
    let ping = sb.netctl(&["exec", "a", "--", "ping", "-c", "1", "-W", "2", "10.88.0.3"]);
    assert!(ping.status.success(), "b unreachable after sync");
}
