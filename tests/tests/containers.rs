//! `netctl run|exec|ps|port|rm` end to end, in sandboxes.

use netctl_tests::{require_sandbox, Sandbox};
use serde_json::Value;

#[test]
fn containers_on_one_network_reach_each_other_and_the_gateway() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.60.0.0/24", "net"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "net",
        "--ip",
        "10.60.0.10",
        "--",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "0.0.0.0",
        "80",
    ]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "net",
        "--",
        "sleep",
        "300",
    ]);
    sb.wait_listening("web", 80);
    let code = sb.netctl_ok(&[
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
        "5",
        "http://10.60.0.10:80/",
    ]);
    assert_eq!(code, "200");
    let ping = sb.netctl(&[
        "exec",
        "client",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "10.60.0.1",
    ]);
    assert!(ping.status.success(), "gateway unreachable");
    // eth0 has the Docker-style MAC of its address, lo is up.
    let link = sb.netctl_ok(&["exec", "web", "--", "ip", "-o", "link"]);
    assert!(link.contains("02:42:0a:3c:00:0a"), "{link}");
    assert!(link.contains("lo: <LOOPBACK,UP"), "{link}");
    // The host forwards for its containers, as Docker sets it.
    let fwd = sb.host_sh("cat /proc/sys/net/ipv4/ip_forward");
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
}

#[test]
fn default_network_is_created_on_first_use() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["run", "-d", "--name", "x", "--", "sleep", "300"]);
    let st = sb.state();
    assert_eq!(st["networks"]["bridge"]["subnet"], "172.17.0.0/16");
    assert_eq!(st["networks"]["bridge"]["bridge"], "netctl0");
    assert_eq!(st["containers"]["x"]["endpoints"][0]["ip"], "172.17.0.2");
    let r = sb.netctl_ok(&["exec", "x", "--", "ip", "route", "show", "default"]);
    assert!(r.contains("via 172.17.0.1 dev eth0"), "{r}");
    let err = sb.netctl_err(&["network", "rm", "bridge"]);
    assert!(err.contains("pre-defined network"), "{err}");
}

#[test]
fn foreground_run_passes_the_exit_code_and_cleans_up() {
    require_sandbox!();
    let sb = Sandbox::new();
    let out = sb.netctl(&[
        "run",
        "--name",
        "fg",
        "--",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).contains("172.17.0.2/16"));
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
    assert!(sb.netns_handles().is_empty());
    assert!(
        !sb.host_links().iter().any(|l| l.starts_with("veth")),
        "{:?}",
        sb.host_links()
    );
    // A command that does not exist: 127, and nothing left.
    let out = sb.netctl(&["run", "--name", "nope", "--", "/no/such/binary"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
}

#[test]
fn ps_port_and_rm() {
    require_sandbox!();
    let sb = Sandbox::new();
    let id = sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:5353:53/udp",
        "-p",
        "9000-9001:90-91",
        "-p",
        "7000",
        "--",
        "sleep",
        "300",
    ]);
    let id = id.trim().to_string();
    let ports = sb.netctl_ok(&["port", "svc"]);
    let lines: Vec<&str> = ports.lines().collect();
    assert!(lines.contains(&"80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(lines.contains(&"53/udp -> 127.0.0.1:5353"), "{ports}");
    assert!(lines.contains(&"90/tcp -> 0.0.0.0:9000"), "{ports}");
    assert!(lines.contains(&"91/tcp -> 0.0.0.0:9001"), "{ports}");
    assert_eq!(sb.netctl_ok(&["port", "svc", "80"]).trim(), "0.0.0.0:8080");
    assert_eq!(
        sb.netctl_ok(&["port", "svc", "53/udp"]).trim(),
        "127.0.0.1:5353"
    );
    // The ephemeral port comes from the namespace's ip_local_port_range.
    let range = sb.host_sh("cat /proc/sys/net/ipv4/ip_local_port_range");
    let range: Vec<u16> = String::from_utf8_lossy(&range.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let eph: u16 = sb
        .netctl_ok(&["port", "svc", "7000"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        eph >= range[0] && eph <= range[1],
        "{eph} outside {range:?}"
    );
    let err = sb.netctl_err(&["port", "svc", "81"]);
    assert!(err.contains("no public port"), "{err}");

    // ps: running by default, -q ids, json lines.
    let ps = sb.netctl_ok(&["ps"]);
    assert!(
        ps.contains("svc") && ps.contains(" Up ") && ps.contains("0.0.0.0:8080->80/tcp"),
        "{ps}"
    );
    assert_eq!(sb.netctl_ok(&["ps", "-q"]).trim(), &id[..12]);
    let j: Value = serde_json::from_str(sb.netctl_ok(&["ps", "--format", "json"]).trim()).unwrap();
    assert_eq!(j["Names"], "svc");
    assert_eq!(j["State"], "running");
    assert_eq!(j["IPAddresses"][0], "172.17.0.2");

    // An exited container shows with -a only, with its exit status.
    sb.netctl_ok(&["run", "-d", "--name", "short", "--", "sh", "-c", "exit 7"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!sb.netctl_ok(&["ps"]).contains("short"));
    let all = sb.netctl_ok(&["ps", "-a"]);
    assert!(all.contains("Exited (7)"), "{all}");

    // rm stops the process (SIGTERM), removes veth, namespace, log, ports and addresses.
    let pid = sb.state()["containers"]["svc"]["pid"].as_u64().unwrap();
    sb.netctl_ok(&["rm", "svc", "short"]);
    assert!(
        !netctl_tests::process_alive(pid as u32),
        "process {pid} still running"
    );
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
    assert!(sb.netns_handles().is_empty());
    assert!(!sb.host_links().iter().any(|l| l.starts_with("veth")));
    assert!(std::fs::read_dir(sb.state_dir.join("containers"))
        .unwrap()
        .next()
        .is_none());
    // Ports and address are free again.
    sb.netctl_ok(&[
        "run", "-d", "--name", "again", "-p", "8080:80", "--", "sleep", "300",
    ]);
    assert_eq!(
        sb.state()["containers"]["again"]["endpoints"][0]["ip"],
        "172.17.0.2"
    );
}

#[test]
fn detached_output_goes_to_a_log_and_exec_sees_the_namespace() {
    require_sandbox!();
    let sb = Sandbox::new();
    let id = sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        "--",
        "sh",
        "-c",
        "echo hello-from-container; sleep 300",
    ]);
    let log = sb.state_dir.join("containers").join(id.trim()).join("log");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(text.contains("hello-from-container"), "log: {text:?}");
    let out = sb.netctl(&["exec", "talk", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn teardown_leaves_no_kernel_object() {
    require_sandbox!();
    let sb = Sandbox::new();
    let before = sb.host_links();
    sb.netctl_ok(&["network", "create", "n1"]);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n1",
        "--",
        "sleep",
        "300",
    ]);
    sb.netctl_ok(&["run", "-d", "--name", "b", "--", "sleep", "300"]);
    sb.netctl_ok(&["network", "connect", "n1", "b"]);
    sb.netctl_ok(&["rm", "-f", "a", "b"]);
    sb.netctl_ok(&["network", "rm", "n1"]);
    let after: Vec<String> = sb
        .host_links()
        .into_iter()
        .filter(|l| l != "netctl0")
        .collect();
    assert_eq!(before, after);
    assert!(sb.netns_handles().is_empty());
}

#[test]
fn network_none_has_only_loopback() {
    require_sandbox!();
    let sb = Sandbox::new();
    let out = sb.netctl(&[
        "run",
        "--name",
        "lonely",
        "--network",
        "none",
        "--",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "quiet",
        "--network",
        "none",
        "--",
        "sleep",
        "300",
    ]);
    assert!(sb.netctl_ok(&["ps"]).contains("none"));
    assert!(
        sb.state()["networks"].as_object().unwrap().is_empty(),
        "no network created"
    );
    let err = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "p",
        "--network",
        "none",
        "-p",
        "80",
        "--",
        "sleep",
        "1",
    ]);
    assert!(err.contains("--network none"), "{err}");
    let err = sb.netctl_err(&["network", "create", "none"]);
    assert!(err.contains("already exists"), "{err}");
    sb.netctl_ok(&["rm", "-f", "quiet"]);
    assert!(sb.netns_handles().is_empty());
}
