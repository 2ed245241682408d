//! Names (issue 10): each container's own /etc/hosts, /etc/resolv.conf and hostname; the
//! embedded DNS on user-defined networks, asked at 127.0.0.11 as a container does; the
//! daemon that serves it; legacy links, --expose and -P; bad input.

use std::time::{Duration, Instant};

use netctl_tests::{require_sandbox, Sandbox};

/// `dig +short NAME` (TYPE A unless given) from a container, through its resolv.conf
/// (127.0.0.11 on user-defined networks): the answer lines.
fn dig(sb: &Sandbox, container: &str, args: &str) -> String {
    let out = sb.container_sh(container, &format!("dig +short +time=2 +tries=1 {args}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The status dig reports (NOERROR, NXDOMAIN, REFUSED, SERVFAIL…).
fn dig_status(sb: &Sandbox, container: &str, args: &str) -> String {
    let out = sb.container_sh(
        container,
        &format!("dig +time=2 +tries=1 {args} | sed -n 's/.*status: \\([A-Z]*\\).*/\\1/p'"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A detached container that just sleeps.
fn idle(sb: &Sandbox, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend(extra);
    args.extend(["--", "sleep", "600"]);
    sb.netctl_ok(&args).trim().to_string()
}

fn ip_of(sb: &Sandbox, container: &str, network: &str) -> String {
    let st = sb.state();
    st["containers"][container]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network"] == network)
        .map(|e| e["ip"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn containers_resolve_names_of_their_networks_only() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "front"]);
    sb.netctl_ok(&["network", "create", "back"]);
    let web_id = idle(
        &sb,
        "web",
        &["--network", "front", "--network-alias", "site"],
    );
    idle(
        &sb,
        "web2",
        &["--network", "front", "--network-alias", "site"],
    );
    idle(&sb, "db", &["--network", "back"]);
    idle(&sb, "client", &["--network", "front"]);
    let web = ip_of(&sb, "web", "front");
    let web2 = ip_of(&sb, "web2", "front");

    // A container's resolv.conf points at Docker's 127.0.0.11.
    let rc = sb.container_sh("client", "cat /etc/resolv.conf");
    let rc = String::from_utf8_lossy(&rc.stdout).to_string();
    assert!(rc.contains("nameserver 127.0.0.11\n"), "{rc}");
    assert!(rc.contains("options ndots:0"), "{rc}");

    assert_eq!(dig(&sb, "client", "web"), web);
    assert_eq!(dig(&sb, "client", "web.front"), web);
    assert_eq!(dig(&sb, "client", &web_id[..12]), web, "short ID");
    let mut both: Vec<String> = dig(&sb, "client", "site")
        .lines()
        .map(str::to_string)
        .collect();
    both.sort();
    let mut want = vec![web.clone(), web2.clone()];
    want.sort();
    assert_eq!(both, want, "one alias on two containers: both addresses");
    // PTR: the address back to name.network.
    let rev = dig(&sb, "client", &format!("-x {web}"));
    assert_eq!(rev, "web.front.");
    // db is on back only: NXDOMAIN from front, never forwarded.
    assert_eq!(dig_status(&sb, "client", "db"), "NXDOMAIN");
    assert_eq!(dig_status(&sb, "client", "db.back"), "NXDOMAIN");
    // The host itself (not a container) gets nothing from the resolver.
    let gw = sb.state()["networks"]["front"]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let out = sb.host_sh(&format!(
        "dig +time=2 +tries=1 @{gw} web | grep -o 'status: [A-Z]*'"
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "status: REFUSED"
    );
    // getaddrinfo (curl, ping…) resolves through the same path.
    let out = sb.container_sh("client", "getent hosts web");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&web),
        "{out:?}"
    );
}

#[test]
fn curl_by_name_on_a_user_defined_network() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "front"]);
    sb.whoami("web", Some("front"), &[], 80);
    let out = sb.netctl_ok(&[
        "run",
        "--name",
        "probe",
        "--network",
        "front",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "5",
        "http://web/",
    ]);
    let client: std::net::Ipv4Addr = out.trim().parse().expect("whoami answers the address");
    assert!(client
        .to_string()
        .starts_with(ip_of(&sb, "web", "front").rsplit_once('.').unwrap().0));
}

#[test]
fn removed_and_disconnected_containers_stop_resolving_at_once() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // Names the resolver no longer knows go upstream: an NXDOMAIN-for-all server here.
    let _upstream = sb.upstream_dns(&[]);
    sb.host_dns(&[&sb.outside_ip.clone()]);
    sb.netctl_ok(&["network", "create", "front"]);
    sb.netctl_ok(&["network", "create", "other"]);
    idle(&sb, "web", &["--network", "front"]);
    idle(&sb, "api", &["--network", "other"]);
    sb.netctl_ok(&["network", "connect", "--alias", "svc", "front", "api"]);
    idle(&sb, "client", &["--network", "front"]);
    let api = ip_of(&sb, "api", "front");
    assert_eq!(dig(&sb, "client", "svc"), api);
    assert_eq!(dig(&sb, "client", "api"), api);

    sb.netctl_ok(&["network", "disconnect", "front", "api"]);
    let t = Instant::now();
    assert_eq!(dig_status(&sb, "client", "api"), "NXDOMAIN");
    assert_eq!(dig_status(&sb, "client", "svc"), "NXDOMAIN");
    sb.netctl_ok(&["rm", "-f", "web"]);
    assert_eq!(dig_status(&sb, "client", "web"), "NXDOMAIN");
    assert!(t.elapsed() < Duration::from_secs(5));
}
