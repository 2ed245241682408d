//! Spare container namespaces (`NETCTL_SPARES`): the daemon keeps veth pairs made and the
//! container programs attached, `run` takes one. What a container gets from a spare must be
//! what it gets from a veth made for it — its own namespace, its addresses, MTU and MAC,
//! policed from the first packet — and the spares must come and go with the daemon.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use netctl_tests::{ns_inode, require_sandbox, Sandbox};

fn spare_links(sb: &Sandbox) -> Vec<String> {
    let mut v: Vec<String> = sb
        .host_links()
        .into_iter()
        .filter(|l| l.starts_with("spare") || l.starts_with("spmk"))
        .collect();
    v.sort();
    v
}

fn layout(sb: &Sandbox) -> PathBuf {
    sb.pinned_map("x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The ready spares: (key, inode of its namespace, inodes of its pinned links).
fn ready_spares(sb: &Sandbox) -> Vec<(String, u64, BTreeSet<u64>)> {
    let pins = layout(sb).join("spares");
    spare_links(sb)
        .iter()
        .filter_map(|l| l.strip_prefix("spare"))
        .filter_map(|k| {
            let ns = ns_inode(&sb.state_dir.join("spares").join(k))?;
            let links: BTreeSet<u64> = std::fs::read_dir(&pins)
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(&format!("@{k}@")))
                .map(|e| e.metadata().unwrap().ino())
                .collect();
            (links.len() == 2).then(|| (k.to_string(), ns, links))
        })
        .collect()
}

fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    netctl_tests::wait_for(what, Duration::from_secs(10), ok);
}

fn inodes_in(dir: &Path, ifindex: &str) -> BTreeSet<u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.starts_with("from_container@") || n.starts_with("to_container@"))
                && n.split('@').nth(1) == Some(ifindex)
        })
        .map(|e| e.metadata().unwrap().ino())
        .collect()
}

fn drops(sb: &Sandbox, reason: &str) -> u64 {
    netctl_tests::drop_count(&sb.netctl_ok(&["stats", "--json"]), reason)
}

#[test]
fn a_container_made_from_a_spare_is_its_own_and_policed_and_spares_go_with_the_daemon() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // Off unless asked for: a daemon keeps none.
    sb.netctl_ok(&["network", "create", "--subnet", "10.93.0.0/24", "plain"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(spare_links(&sb).is_empty(), "{:?}", spare_links(&sb));
    let err = sb
        .netctl_cmd(&["ps"])
        .env("NETCTL_SPARES", "many")
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("NETCTL_SPARES=many is not valid"),
        "{err:?}"
    );
    sb.netctl_ok(&["network", "rm", "plain"]);

    sb.env("NETCTL_SPARES", "2");
    sb.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.94.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "small",
    ]);
    sb.netctl_ok(&["network", "create", "--subnet", "10.95.0.0/24", "other"]);
    if !sb.has_feature("tcx") {
        eprintln!("skipped: spares need TCX");
        return;
    }
    wait_for("two ready spares", || ready_spares(&sb).len() == 2);
    // Never in the machine's namespace, never an uplink, nothing for `sync` to change.
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
    let before = ready_spares(&sb);

    sb.sleeper("web", "small");
    sb.sleeper("far", "other");
    let st = sb.state();
    let web = &st["containers"]["web"];
    let id = web["id"].as_str().unwrap();
    let veth = web["endpoints"][0]["host_veth"].as_str().unwrap();
    // The container's namespace and programs are a spare's (the same kernel objects).
    let ns = ns_inode(&sb.state_dir.join("netns").join(&id[..12])).unwrap();
    let index = String::from_utf8_lossy(&sb.host_sh(&format!("ip -o link show {veth}")).stdout)
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let links = inodes_in(&layout(&sb).join("links"), &index);
    assert!(
        before.iter().any(|(_, n, l)| *n == ns && *l == links),
        "web was not made from a spare: {before:?} vs ns {ns}, links {links:?}"
    );

    // Its interfaces are as a new veth's: eth0 only (and lo), the network's MTU on both
    // ends, its address and MAC, no IPv6, the host end up in the bridge.
    let inside = sb.container_sh("web", "ip -o link; ip -o addr");
    let inside = String::from_utf8_lossy(&inside.stdout).into_owned();
    assert_eq!(inside.matches(": eth0").count(), 2, "{inside}");
    assert_eq!(
        inside.lines().filter(|l| l.contains("link/")).count(),
        2,
        "{inside}"
    );
    assert!(inside.contains("mtu 1400"), "{inside}");
    assert!(inside.contains("inet 10.94.0.2/24"), "{inside}");
    assert!(!inside.contains("inet6 fe80"), "{inside}");
    assert!(
        inside.contains(web["endpoints"][0]["mac"].as_str().unwrap()),
        "{inside}"
    );
    let host = sb.host_sh(&format!("ip -o link show {veth}"));
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    assert!(
        host.contains("mtu 1400") && host.contains("master br-") && host.contains("UP"),
        "{host}"
    );
    assert!(sb
        .container_sh("web", "ping -c 1 -W 2 10.94.0.1")
        .status
        .success());

    // Policed from the start: another network stays out of reach, and a forged source
    // address is dropped.
    let far = sb.container_ip("far");
    assert!(!sb
        .container_sh("web", &format!("ping -c 1 -W 1 {far}"))
        .status
        .success());
    let spoofed = drops(&sb, "spoofed-source");
    sb.container_sh(
        "web",
        "ip addr add 10.94.0.200/24 dev eth0; ping -c 2 -i 0.2 -W 1 -I 10.94.0.200 10.94.0.1",
    );
    assert!(drops(&sb, "spoofed-source") > spoofed);

    // The taken spare is replaced; the taken one's handle and pins are the container's only.
    wait_for("two ready spares again", || {
        let now = ready_spares(&sb);
        now.len() == 2 && !now.iter().any(|(_, n, _)| *n == ns)
    });
    sb.netctl_ok(&["rm", "-f", "web", "far"]);
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");

    // A daemon killed leaves its spares: the next command removes them as orphans, and the
    // next daemon makes its own.
    let pid = sb.daemon_pid().expect("a daemon");
    let dead: Vec<String> = spare_links(&sb);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the daemon to die", || sb.daemon_pid().is_none());
    sb.sleeper("again", "other");
    wait_for("the dead daemon's spares to go", || {
        let now = spare_links(&sb);
        !dead.iter().any(|d| now.contains(d)) && ready_spares(&sb).len() == 2
    });
    sb.netctl_ok(&["rm", "-f", "again"]);

    // Killed again, and the next daemon is to keep none: it removes the dead one's.
    let pid = sb.daemon_pid().expect("a daemon");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the daemon to die", || sb.daemon_pid().is_none());
    sb.env("NETCTL_SPARES", "");
    sb.sleeper("plain", "other");
    let handles = |sb: &Sandbox| {
        std::fs::read_dir(sb.state_dir.join("spares"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_for("no spares", || {
        spare_links(&sb).is_empty() && handles(&sb) == 0
    });
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
    sb.netctl_ok(&["rm", "-f", "plain"]);

    // The daemon's end takes the spares with it: links, namespaces, pins.
    sb.netctl_ok(&["network", "rm", "small", "other"]);
    wait_for("the daemon to exit", || sb.daemon_pid().is_none());
    assert!(spare_links(&sb).is_empty(), "{:?}", spare_links(&sb));
    assert_eq!(handles(&sb), 0);
    let pins = std::fs::read_dir(layout(&sb).join("spares"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pins, 0);
}
