//! Older kernels on this one: `NETCTL_FEATURES_DENY` makes the probes report features absent,
//! so each fallback (netlink TC filters, bounded NAT port search, plain flag updates, no XDP
//! mark, no socket programs) runs end to end here; a missing required feature is a clear
//! error that changes nothing, and forwarding is never left on without the guards.

use netctl_tests::{require_sandbox, Sandbox, UPLINK};

/// What a Debian 11 (5.10) kernel lacks of what netctl uses.
const LIKE_5_10: &str = "tcx,loop,atomics,xdp_load_bytes,so_netns_cookie,kfree_skb_reason";

fn forwarding(sb: &Sandbox) -> String {
    let out = sb.host_sh("cat /proc/sys/net/ipv4/ip_forward");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tc_filters(sb: &Sandbox, dev: &str, dir: &str) -> String {
    let out = sb.host_sh(&format!("tc filter show dev {dev} {dir}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_5_10_feature_set_runs_everything_through_netlink_filters() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_FEATURES_DENY", LIKE_5_10);
    sb.env("NETCTL_XDP", "native");
    sb.netctl_ok(&["network", "create", "--subnet", "10.71.0.0/24", "one"]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.72.0.0/24", "two"]);
    sb.whoami("web", Some("one"), &["8080:80"], 80);
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "other",
        "--network",
        "two",
        "--",
        "sleep",
        "300",
    ]);

    // The uplink's and the container's programs are cls_bpf filters (direct-action), with
    // their records pinned; no TCX link anywhere.
    let info: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["info", "--format", "json"])).unwrap();
    let hows: Vec<(String, String)> = info["Attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["Program"].as_str().unwrap().into(),
                a["How"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        hows.iter()
            .any(|(p, h)| p == "uplink_ingress" && h == "tc netlink"),
        "{hows:?}"
    );
    assert!(
        hows.iter()
            .any(|(p, h)| p == "from_container" && h == "tc netlink"),
        "{hows:?}"
    );
    assert!(!hows.iter().any(|(_, h)| h == "tcx"), "{hows:?}");
    let ingress = tc_filters(&sb, UPLINK, "ingress");
    let egress = tc_filters(&sb, UPLINK, "egress");
    assert!(
        ingress.contains("uplink_ingress") && ingress.contains("direct-action"),
        "{ingress}"
    );
    assert!(egress.contains("uplink_egress"), "{egress}");
    let paths = info["Paths"].to_string();
    assert!(
        paths.contains("netlink cls_bpf filters") && paths.contains("_compat"),
        "{paths}"
    );

    // Published port with the client's address, masquerade out, isolation: as on any kernel.
    let body = sb.curl_from_outside_within(&format!("http://{}:8080/", sb.host_ip), 10);
    assert!(body.contains(&sb.outside_ip), "client address kept: {body}");
    let _server = sb.outside_whoami_server(9090, 30);
    let out = sb.container_sh(
        "other",
        &format!("curl -sf --max-time 5 http://{}:9090/", sb.outside_ip),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&sb.host_ip),
        "masqueraded to the host address: {out:?}"
    );
    let out = sb.container_sh("other", "ping -c 1 -W 1 10.71.0.2");
    assert!(!out.status.success(), "isolation between networks");
    let stats: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).unwrap();
    assert!(
        stats["drops"]["isolation"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );

    // An upgrade of the programs (other features) moves the filters in place.
    sb.env("NETCTL_FEATURES_DENY", "tcx");
    sb.netctl_ok(&["sync"]);
    assert!(tc_filters(&sb, UPLINK, "ingress").contains("uplink_ingress"));
    let body = sb.curl_from_outside_within(&format!("http://{}:8080/", sb.host_ip), 10);
    assert!(body.contains(&sb.outside_ip));

    // Back to TCX: the filters go, links come.
    sb.env("NETCTL_FEATURES_DENY", "");
    sb.netctl_ok(&["sync"]);
    assert!(!tc_filters(&sb, UPLINK, "ingress").contains("uplink_ingress"));
    sb.curl_from_outside_within(&format!("http://{}:8080/", sb.host_ip), 10);

    // Containers removed in netlink mode leave no record behind (their filters went with
    // their veths).
    sb.env("NETCTL_FEATURES_DENY", LIKE_5_10);
    sb.netctl_ok(&["sync"]);
    assert!(tc_filters(&sb, UPLINK, "ingress").contains("uplink_ingress"));
    sb.netctl_ok(&["rm", "-f", "web", "other"]);
    let info = sb.netctl_ok(&["info", "--format", "json"]);
    assert!(!info.contains("from_container"), "{info}");
    assert!(
        info.contains("uplink_ingress"),
        "the uplink stays guarded: {info}"
    );
}

#[test]
fn a_missing_required_feature_is_one_line_and_changes_nothing() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_FEATURES_DENY", "redirect_peer");
    let before = sb.host_links();
    let err = sb.netctl_err(&["network", "create", "--subnet", "10.73.0.0/24", "one"]);
    assert!(
        err.contains("redirect_peer") && err.contains("5.10") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(sb.host_links(), before, "no bridge");
    assert_eq!(forwarding(&sb), "0");
    let err = sb.netctl_err(&["sync"]);
    assert!(err.contains("redirect_peer"), "{err}");
    assert_eq!(forwarding(&sb), "0");
    // A name the probes do not know is refused as well.
    sb.env("NETCTL_FEATURES_DENY", "warp-drive");
    let err = sb.netctl_err(&["network", "ls"]);
    assert!(err.contains("warp-drive") && err.contains("tcx"), "{err}");
}

#[test]
fn forwarding_goes_on_only_after_the_guards_and_off_when_they_fail() {
    require_sandbox!();
    // Killed at each step of a first `network create` in turn: while the reconcile has not
    // finished (programs, maps), the namespace never routes.
    let mut killed_inside = 0;
    for step in 1..=20 {
        let mut sb = Sandbox::new();
        sb.env("NETCTL_FAILPOINT", &step.to_string());
        let out = sb.netctl(&["network", "create", "--subnet", "10.74.0.0/24", "one"]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("(reconcile:") || err.contains("(dataplane:") {
            killed_inside += 1;
            assert_eq!(forwarding(&sb), "0", "routing after {err}");
        }
    }
    assert!(killed_inside >= 3, "the reconcile's steps were reached");

    let mut sb = Sandbox::new();
    assert_eq!(forwarding(&sb), "0");
    sb.netctl_ok(&["network", "create", "--subnet", "10.74.0.0/24", "one"]);
    assert_eq!(forwarding(&sb), "1");
    // A failed apply (an uplink that does not exist): netctl turned forwarding on, so it
    // turns it off until an apply succeeds.
    sb.env("NETCTL_UPLINKS", "nosuch0");
    let err = sb.netctl_err(&["sync"]);
    assert!(err.contains("nosuch0"), "{err}");
    assert_eq!(forwarding(&sb), "0", "fails closed");
    sb.env("NETCTL_UPLINKS", "");
    sb.netctl_ok(&["sync"]);
    assert_eq!(forwarding(&sb), "1");
}

#[test]
fn without_socket_programs_containers_ask_the_gateway_and_run_p_warns() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_FEATURES_DENY", "getpeername4");
    sb.netctl_ok(&["network", "create", "--subnet", "10.75.0.0/24", "one"]);
    let out = sb.netctl(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "one",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "300",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("getpeername4") && err.contains("5.8"),
        "{err}"
    );
    let rc = sb.container_sh("web", "cat /etc/resolv.conf");
    let rc = String::from_utf8_lossy(&rc.stdout);
    assert!(
        rc.contains("nameserver 10.75.0.1") && !rc.contains("127.0.0.11"),
        "{rc}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["info", "--format", "json"])).unwrap();
    assert!(
        !info["Attached"].to_string().contains("sock_connect4"),
        "no socket program attached: {info}"
    );
    // Names still resolve, through the resolver on the gateway.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "one",
        "--",
        "sleep",
        "300",
    ]);
    let out = sb.container_sh("web", "nslookup db 10.75.0.1 || getent hosts db");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.75.0."),
        "{out:?}"
    );
}

#[test]
fn info_reports_every_feature_and_the_denied_ones() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_FEATURES_DENY", "loop,tcx");
    let info: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["info", "--format", "json"])).unwrap();
    let features = info["Features"].as_array().unwrap();
    assert!(features.len() >= 16);
    let loop_ = features.iter().find(|f| f["Name"] == "loop").unwrap();
    assert_eq!(
        (loop_["Present"].as_bool(), loop_["Denied"].as_bool()),
        (Some(false), Some(true))
    );
    let text = sb.netctl_ok(&["info"]);
    assert!(
        text.contains("Kernel:") && text.contains("denied") && text.contains("tc attach"),
        "{text}"
    );
}
