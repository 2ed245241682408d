//! The foundation end to end: netctl loads its programs, pins them under the sandbox's
//! NETCTL_BPFFS, attaches them to the uplink, and their counters see real traffic.

use netctl_tests::{require_sandbox, Sandbox, UPLINK};

#[test]
fn sync_attaches_programs_to_the_uplink_and_counts_traffic() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // The sandbox uplink is a veth, where the default (auto) leaves XDP off: ask for it.
    sb.env("NETCTL_XDP", "native");
    // Pins of another layout version (an older netctl) are replaced cleanly.
    std::fs::create_dir_all(sb.bpffs.join("v0/maps")).unwrap();
    let out = sb.netctl_ok(&["sync"]);
    assert!(!sb.bpffs.join("v0").exists(), "old layout left behind");
    let layouts: Vec<_> = std::fs::read_dir(&sb.bpffs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(layouts.len(), 1, "{layouts:?}");
    let layout = layouts[0].clone();
    // XDP goes on only where the kernel lets it mark what it did (xdp_adjust_meta).
    let xdp = sb.has_feature("xdp_adjust_meta");
    let uplink_progs: &[&str] = if xdp {
        &["uplink_xdp", "uplink_ingress", "uplink_egress"]
    } else {
        &["uplink_ingress", "uplink_egress"]
    };
    assert_eq!(out.contains("uplink_xdp"), xdp, "{out}");
    for prog in uplink_progs {
        assert!(
            out.contains(&format!("attached {prog} to {UPLINK}")),
            "sync output lacks {prog}: {out}"
        );
    }
    // The socket programs go to the cgroup v2 root, once per instance (the IPv6 ones where
    // socket-address programs have socket storage).
    let mut sock_progs = vec![
        "sock_connect4",
        "sock_sendmsg4",
        "sock_recvmsg4",
        "sock_getpeername4",
    ];
    if sb.has_feature("sk_storage") {
        sock_progs.extend(["sock_connect6", "sock_recvmsg6", "sock_getpeername6"]);
    }
    for prog in &sock_progs {
        assert!(
            out.contains(&format!("attached {prog} to /")),
            "{prog}: {out}"
        );
    }
    // Pinned under this sandbox's bpffs directory, versioned.
    let links = std::fs::read_dir(layout.join("links"))
        .expect("links pinned")
        .count();
    assert_eq!(links, uplink_progs.len() + sock_progs.len());
    // Idempotent.
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");

    // Real traffic from outside passes through the programs and is counted.
    let ping = sb.outside_sh(&format!("ping -c 3 -i 0.2 -W 1 {}", sb.host_ip));
    assert!(ping.status.success(), "ping through the programs failed");
    let stats: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["stats", "--json"])).expect("stats json");
    for prog in uplink_progs {
        let hook = prog.replace('_', "-");
        let hook = hook.as_str();
        let packets = stats["hooks"][hook]["packets"].as_u64().unwrap();
        assert!(
            packets >= 3,
            "{hook} counted {packets} packets, expected >= 3"
        );
    }
}

#[test]
fn xdp_off_and_auto_on_veth_attach_tc_only() {
    require_sandbox!();
    for mode in ["off", "auto"] {
        let mut sb = Sandbox::new();
        sb.env("NETCTL_XDP", mode);
        let out = sb.netctl_ok(&["sync"]);
        assert!(!out.contains("uplink_xdp"), "{mode}: {out}");
        assert!(out.contains("attached uplink_ingress"), "{mode}: {out}");
    }
}

#[test]
fn bad_xdp_mode_is_refused_and_nothing_is_pinned() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_XDP", "turbo");
    let err = sb.netctl_err(&["sync"]);
    assert!(err.contains("NETCTL_XDP=turbo is not valid"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!sb.bpffs.exists(), "nothing pinned on bad input");
}
