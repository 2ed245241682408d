//! Overlay networks across hosts on a real etcd: three hosts as namespaces on one underlay.

use std::time::{Duration, Instant};

use netctl_tests::{cluster::Cluster, require_sandbox, sleeper_args};
use serde_json::Value;

fn ls_json(c: &Cluster, i: usize) -> Vec<Value> {
    c.netctl_ok(i, &["network", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn overlay_networks_are_shared_by_every_host() {
    require_sandbox!();
    let c = Cluster::new(3);
    let id = c.overlay(0, &["--subnet", "10.50.0.0/24", "ov1"]);
    let id = id.trim();
    for i in 0..3 {
        let rows = ls_json(&c, i);
        let ov = rows
            .iter()
            .find(|r| r["Name"] == "ov1")
            .expect("listed on every host");
        assert_eq!(
            (ov["Driver"].as_str(), ov["Scope"].as_str()),
            (Some("overlay"), Some("global"))
        );
        assert_eq!(ov["ID"], &id[..12]);
        let v: Value =
            serde_json::from_str(&c.netctl_ok(i, &["network", "inspect", "ov1"])).unwrap();
        assert_eq!(v[0]["Scope"], "global");
        assert_eq!(v[0]["Driver"], "overlay");
        assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.50.0.0/24");
        assert_eq!(
            v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
            "4096"
        );
    }
    // Names and subnets are the cluster's: no second ov1, no overlap, from any host.
    let err = c.netctl_err(1, &["network", "create", "-d", "overlay", "ov1"]);
    assert!(err.contains("already exists in the cluster"), "{err}");
    let err = c.netctl_err(
        2,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.50.0.128/25",
            "ov2",
        ],
    );
    assert!(err.contains("overlaps overlay network ov1"), "{err}");
    // A local network of a member may not take an overlay's subnet either.
    let err = c.netctl_err(
        1,
        &["network", "create", "--subnet", "10.50.0.0/16", "local"],
    );
    assert!(err.contains("overlaps overlay network ov1"), "{err}");
    // Removed from another host; gone everywhere.
    c.netctl_ok(2, &["network", "rm", "ov1"]);
    for i in 0..3 {
        assert!(!ls_json(&c, i).iter().any(|r| r["Name"] == "ov1"));
    }
}

#[test]
fn concurrent_creates_on_three_hosts_get_distinct_subnets_and_vnis() {
    require_sandbox!();
    let c = Cluster::new(3);
    let children: Vec<_> = (0..9)
        .map(|k| {
            c.netctl_cmd(
                k % 3,
                &["network", "create", "-d", "overlay", &format!("n{k}")],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut subnets = std::collections::BTreeSet::new();
    let mut vnis = std::collections::BTreeSet::new();
    for k in 0..9 {
        let v: Value =
            serde_json::from_str(&c.netctl_ok(0, &["network", "inspect", &format!("n{k}")]))
                .unwrap();
        subnets.insert(
            v[0]["IPAM"]["Config"][0]["Subnet"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        vnis.insert(
            v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!((subnets.len(), vnis.len()), (9, 9), "{subnets:?} {vnis:?}");
}

#[test]
fn an_unreachable_store_fails_fast_naming_it_and_changes_nothing() {
    require_sandbox!();
    let mut c = Cluster::new(1);
    c.stop_etcd();
    let t = Instant::now();
    let err = c.netctl_err(0, &["network", "create", "-d", "overlay", "ov"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        err.contains(&c.store_url()) && err.contains("unreachable"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Local networks keep working without the store.
    c.netctl_ok(0, &["network", "create", "--subnet", "10.60.0.0/24", "loc"]);
    let ls = c.netctl(0, &["network", "ls"]);
    assert!(ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("loc"));
    c.start_etcd();
    c.netctl_ok(0, &["network", "create", "-d", "overlay", "ov"]);
    // Bad cluster settings are one-line errors.
    let out = c
        .netctl_cmd(0, &["network", "ls"])
        .env("NETCTL_CLUSTER_STORE", "consul://1.2.3.4:8500")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcd://IP:PORT"));
}

#[test]
fn containers_on_three_hosts_get_unique_addresses_from_the_cluster() {
    require_sandbox!();
    let c = Cluster::new(3);
    c.overlay(0, &["--subnet", "10.51.0.0/24", "ov"]);
    let children: Vec<_> = (0..12)
        .map(|k| {
            c.netctl_cmd(
                k % 3,
                &[
                    "run",
                    "-d",
                    "--name",
                    &format!("c{k}"),
                    "--network",
                    "ov",
                    "--",
                    "sleep",
                    "300",
                ],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/endpoints/ov/"]);
    let keys: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    // Every container has the address the cluster gave it.
    for k in 0..12 {
        let ip = c.container_ip(k % 3, &format!("c{k}"));
        assert!(
            keys.contains(&format!("/netctl/v1/endpoints/ov/{ip}")),
            "c{k}: {ip}"
        );
    }
    let out = c.container_sh(0, "c0", "ip -o -4 addr show eth0");
    assert!(String::from_utf8_lossy(&out.stdout).contains("/24"));
    // The MTU leaves room for the VXLAN header.
    let out = c.container_sh(0, "c0", "ip -o link show eth0");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mtu 1450"),
        "{out:?}"
    );
    // Removing containers gives their addresses back; the host leaves the network with its
    // last container. In use on other hosts, no host may remove the network.
    for k in [1, 4, 7, 10] {
        c.netctl_ok(1, &["rm", "-f", &format!("c{k}")]);
    }
    let err = c.netctl_err(1, &["network", "rm", "ov"]);
    assert!(err.contains("active endpoints (8 on host"), "{err}");
    for k in 0..12 {
        if k % 3 != 1 {
            c.netctl_ok(k % 3, &["rm", "-f", &format!("c{k}")]);
        }
    }
    let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/endpoints/"]);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    for i in 0..3 {
        let links = String::from_utf8_lossy(&c.host_sh(i, "ip -o link").stdout).to_string();
        assert!(
            !links.contains("ov-") && !links.contains("nctl-vxlan"),
            "host {i}: {links}"
        );
    }
    c.netctl_ok(1, &["network", "rm", "ov"]);
}

/// Waits (bounded) until `f` holds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn containers_on_different_hosts_talk_over_vxlan_by_address_and_name() {
    require_sandbox!();
    let c = Cluster::new(2);
    // The creating host's underlay carries 1400 bytes: the overlay's MTU follows it.
    assert!(c.host_sh(0, "ip link set up0 mtu 1400").status.success());
    c.overlay(0, &["--subnet", "10.52.0.0/24", "ov"]);
    c.whoami(0, "web", "ov", &[]);
    c.sleeper(1, "client", "ov");
    let web = c.container_ip(0, "web");
    let client = c.container_ip(1, "client");
    // `netctl info` shows the agent alive: connected, its lease renewed moments ago.
    assert!(
        eventually(5, || {
            let info: Value =
                serde_json::from_str(&c.netctl_ok(1, &["info", "--format", "json"])).unwrap();
            info["Cluster"]["AgentRunning"] == true
                && info["Cluster"]["Lease"]
                    .as_str()
                    .is_some_and(|l| !l.is_empty())
                && info["Cluster"]["SecondsSinceRenewal"]
                    .as_u64()
                    .is_some_and(|a| a <= 15)
        }),
        "{}",
        c.netctl_ok(1, &["info"])
    );
    // The daemon's metrics say the same: a lease renewed within its time.
    let scraped = netctl_tests::scrape_metrics(&c.hosts[1].state_dir.join("metrics.sock"));
    let age = scraped
        .lines()
        .find_map(|l| l.strip_prefix("netctl_cluster_lease_age_seconds "))
        .and_then(|v| v.parse::<i64>().ok());
    assert!(age.is_some_and(|a| (0..=15).contains(&a)), "{scraped}");
    // (ip, not /sys: the sysfs mounted here is the machine's namespace's.)
    for (host, name) in [(0, "web"), (1, "client")] {
        let mtu = c.container_sh(host, name, "ip -o link show eth0");
        assert!(
            String::from_utf8_lossy(&mtu.stdout).contains(" mtu 1350 "),
            "{name}: {mtu:?}"
        );
        let dev = c.host_sh(host, "ip -o link show nctl-vxlan");
        assert!(
            String::from_utf8_lossy(&dev.stdout).contains(" mtu 1350 "),
            "{dev:?}"
        );
    }
    // VXLAN on the underlay while they talk.
    let cap = c
        .underlay_cmd("timeout 10 tcpdump -c 2 -nni ul0 udp port 4789")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        eventually(5, || c
            .container_sh(1, "client", &format!("ping -c1 -W1 {web}"))
            .status
            .success()),
        "ping across hosts"
    );
    assert_eq!(
        c.curl(1, "client", &format!("http://{web}/")).as_deref(),
        Some(client.as_str()),
        "the container sees its real peer"
    );
    let dump = cap.wait_with_output().unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("VXLAN") && dump.contains("vni 4096"),
        "{dump}"
    );
    // By name, whichever host: the resolver reads the other hosts' endpoints from the store.
    assert!(
        eventually(5, || c.curl(1, "client", "http://web/").as_deref()
            == Some(client.as_str())),
        "by name across hosts"
    );
    assert_eq!(
        c.curl(1, "client", "http://web.ov/").as_deref(),
        Some(client.as_str())
    );
    // No flooding: the client's neighbour entry for web came from its own host.
    let neigh = c.container_sh(1, "client", &format!("ip neigh show {web}"));
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    let mac: String = web
        .split('.')
        .map(|o| format!(":{:02x}", o.parse::<u8>().unwrap()))
        .collect();
    assert!(neigh.contains(&format!("02:42{mac}")), "{neigh}");
    // Gone with its container: the other host stops reaching it.
    c.netctl_ok(0, &["rm", "-f", "web"]);
    assert!(eventually(5, || c.host_sh(1, "true").status.success()
        && !c
            .container_sh(1, "client", &format!("ping -c1 -W1 {web}"))
            .status
            .success()));
}

fn ping(c: &Cluster, host: usize, name: &str, addr: &str) -> bool {
    c.container_sh(host, name, &format!("ping -c1 -W1 {addr}"))
        .status
        .success()
}

fn stats(c: &Cluster, host: usize) -> Value {
    serde_json::from_str(&c.netctl_ok(host, &["stats", "--json"])).unwrap()
}

#[test]
fn overlays_are_isolated_reach_out_through_their_host_and_publish_on_it() {
    require_sandbox!();
    let c = Cluster::new(2);
    c.overlay(0, &["--subnet", "10.53.0.0/24", "ov"]);
    c.overlay(0, &["--subnet", "10.54.0.0/24", "other"]);
    c.overlay(0, &["--internal", "--subnet", "10.55.0.0/24", "closed"]);
    c.whoami(0, "web", "ov", &["8080:80"]);
    let web = c.container_ip(0, "web");
    c.sleeper(1, "peer", "ov");
    c.sleeper(1, "stranger", "other");
    c.sleeper(1, "local", "bridge");
    c.sleeper(1, "inside", "closed");
    c.sleeper(0, "inside0", "closed");
    assert!(eventually(5, || ping(&c, 1, "peer", &web)), "same overlay");

    // Another overlay and a bridge network on the same host never reach web.
    assert!(!ping(&c, 1, "stranger", &web));
    assert!(c.curl(1, "stranger", &format!("http://{web}/")).is_none());
    assert!(!ping(&c, 1, "local", &web));
    assert!(stats(&c, 1)["drops"]["isolation"].as_u64().unwrap() >= 2);
    // A forged VXLAN packet from the underlay (right VNI, wrong sender) is refused.
    let before = stats(&c, 0)["drops"]["tunnel-rejected"].as_u64().unwrap();
    let vni = c.netctl_ok(0, &["network", "inspect", "ov"]);
    let vni: Value = serde_json::from_str(&vni).unwrap();
    let vni = vni[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no vxlanid in {vni}"));
    let forge = format!(
        "python3 -c '
import socket, struct
inner = bytes.fromhex(\"0242{mac}\") + bytes.fromhex(\"02420a35006e\") + b\"\\x08\\x00\"
ip = bytes([0x45,0,0,28,0,0,0,0,64,1,0,0]) + socket.inet_aton(\"10.53.0.110\") + socket.inet_aton(\"{web}\")
icmp = bytes([8,0,0xf7,0xff,0,0,0,0])
hdr = struct.pack(\"!II\", 0x08000000, int(\"{vni}\") << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(hdr + inner + ip + icmp, (\"{h0}\", 4789))
'",
        mac = web
            .split('.')
            .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
            .collect::<String>(),
        h0 = c.hosts[0].ip,
    );
    assert!(c.underlay_sh(&forge).status.success());
    assert!(eventually(3, || stats(&c, 0)["drops"]["tunnel-rejected"]
        .as_u64()
        .unwrap()
        > before));

    // Out through its own host's uplink, masqueraded as that host.
    let _srv = c.underlay_whoami(9000, 60);
    let out = format!("http://{}:9000/", c.underlay_ip);
    assert_eq!(
        c.curl(1, "peer", &out).as_deref(),
        Some(c.hosts[1].ip.as_str())
    );
    // In through a port published on the host that runs it; the client's address is kept.
    let got = c.underlay_sh(&format!(
        "curl -sf --max-time 3 http://{}:8080/",
        c.hosts[0].ip
    ));
    assert_eq!(String::from_utf8_lossy(&got.stdout), c.underlay_ip);
    // An internal overlay: across hosts yes, out no.
    let inside0 = c.container_ip(0, "inside0");
    assert!(eventually(5, || ping(&c, 1, "inside", &inside0)));
    assert!(c.curl(1, "inside", &out).is_none());
    assert!(!ping(&c, 1, "inside", &c.underlay_ip));
}

#[test]
fn a_dead_hosts_endpoints_expire_and_a_restarted_store_is_resynced() {
    require_sandbox!();
    let mut c = Cluster::new(2);
    c.env.push(("NETCTL_CLUSTER_TTL".into(), "3".into()));
    c.overlay(0, &["--subnet", "10.56.0.0/24", "ov"]);
    c.sleeper(0, "a", "ov");
    c.sleeper(1, "b", "ov");
    let a = c.container_ip(0, "a");
    assert!(eventually(5, || ping(&c, 1, "b", &a)));

    // etcd goes away: what runs keeps running; a command that needs the store fails fast
    // naming it; when etcd is back the daemons resync by themselves.
    c.stop_etcd();
    assert!(ping(&c, 1, "b", &a), "the datapath does not need the store");
    // `netctl info` says the agent lost the store (its lease is 3 s here).
    assert!(
        eventually(10, || {
            let info: Value =
                serde_json::from_str(&c.netctl_ok(1, &["info", "--format", "json"])).unwrap();
            info["Cluster"]["AgentRunning"] == false
                && info["Cluster"]["Agent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("not connected"))
        }),
        "{}",
        c.netctl_ok(1, &["info"])
    );
    let t = Instant::now();
    let err = c.netctl_err(
        0,
        &[
            "run",
            "-d",
            "--name",
            "late",
            "--network",
            "ov",
            "--",
            "true",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        err.contains(&c.etcd_ip) && err.lines().count() == 1,
        "{err}"
    );
    c.start_etcd();
    c.sleeper(0, "after", "ov");
    let after = c.container_ip(0, "after");
    assert!(
        eventually(10, || ping(&c, 1, "b", &after)),
        "the other host learnt the new container after the store came back"
    );

    // Host 0 dies (its daemon and containers with it): its lease runs out and its endpoints
    // leave the store and the other host's map.
    c.kill_host_processes(0);
    assert!(eventually(15, || {
        let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/endpoints/ov/"]);
        !String::from_utf8_lossy(&out.stdout).contains(&a)
    }));
    assert!(eventually(5, || !ping(&c, 1, "b", &a)));
    let names = c.container_sh(1, "b", "getent hosts a || echo gone");
    assert!(String::from_utf8_lossy(&names.stdout).contains("gone"));
}

#[test]
fn a_frozen_store_stalls_only_the_commands_that_need_it() {
    require_sandbox!();
    let c = Cluster::new(1);
    c.overlay(0, &["--subnet", "10.68.0.0/24", "ov"]);
    c.netctl_ok(0, &["network", "create", "--subnet", "10.69.0.0/24", "loc"]);
    c.sleeper(0, "warm", "loc");
    c.sleeper(0, "leaving", "ov");
    // etcd stops answering: its connections stay open, nothing comes back. Meanwhile a
    // command that needs it (a run that claims an address, an rm that gives one back) waits
    // for it, and a command on a local network neither waits for the store nor for the lock.
    c.freeze_etcd(true);
    let slow = |args: &[&str]| {
        c.netctl_cmd(0, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let claiming = slow(&sleeper_args("o", "ov"));
    let releasing = slow(&["rm", "-f", "leaving"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    for name in ["l1", "l2"] {
        let out = c.netctl(0, &sleeper_args(name, "loc"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("waiting for the state lock"), "{err}");
    }
    let claiming = claiming.wait_with_output().unwrap();
    let releasing = releasing.wait_with_output().unwrap();
    c.freeze_etcd(false);
    // The claim fails and changes nothing; the removal is done, its address given back later
    // (by the agent) if the store missed it.
    let err = String::from_utf8_lossy(&claiming.stderr);
    assert!(
        !claiming.status.success() && err.contains("cluster store"),
        "{err}"
    );
    let err = String::from_utf8_lossy(&releasing.stderr);
    assert!(releasing.status.success(), "{err}");
    let ps = c.netctl_ok(0, &["ps", "-a"]);
    assert!(
        ps.contains(" l1") && !ps.contains(" o ") && !ps.contains("leaving"),
        "{ps}"
    );
}

/// etcd away for three lease times and back (frozen: the leases run out as it resumes, as
/// after a long partition): a host whose lease lapsed sends nothing into the tunnel until it
/// is registered again, nobody else gets its containers' addresses meanwhile, and it gets them
/// back; an address whose owner never comes back is given again only after its quarantine.
#[test]
fn an_outage_longer_than_the_lease_gives_no_address_twice() {
    require_sandbox!();
    let mut c = Cluster::new(2);
    c.env.push(("NETCTL_CLUSTER_TTL".into(), "3".into()));
    c.overlay(0, &["--subnet", "10.57.0.0/24", "ov"]);
    c.sleeper(0, "a", "ov");
    c.sleeper(1, "b", "ov");
    let a = c.container_ip(0, "a");
    let b = c.container_ip(1, "b");
    assert!(eventually(5, || ping(&c, 1, "b", &a)));
    let info = |i: usize| -> Value {
        serde_json::from_str(&c.netctl_ok(i, &["info", "--format", "json"])).unwrap()
    };

    c.freeze_etcd(true);
    // Past the lease time both hosts fence themselves: nothing goes into the tunnel.
    assert!(
        eventually(10, || info(0)["Cluster"]["Fenced"] == true
            && info(1)["Cluster"]["Fenced"] == true),
        "{}",
        c.netctl_ok(0, &["info"])
    );
    assert!(!ping(&c, 0, "a", &b), "a fenced host sent into the tunnel");
    std::thread::sleep(Duration::from_secs(5));
    c.freeze_etcd(false);

    // As the store comes back, host 1 wants a's address: refused (held by host 0, or already
    // claimed again by it), and new containers get other addresses.
    let err = c.netctl_err(
        1,
        &[
            "run",
            "-d",
            "--name",
            "thief",
            "--network",
            "ov",
            "--ip",
            &a,
            "--",
            "sleep",
            "60",
        ],
    );
    assert!(err.contains(&a) && err.lines().count() == 1, "{err}");
    for i in 0..3 {
        c.sleeper(1, &format!("n{i}"), "ov");
        assert_ne!(c.container_ip(1, &format!("n{i}")), a);
    }
    // Host 0 is registered again with its address: traffic flows, to the right host.
    assert!(eventually(15, || ping(&c, 1, "b", &a) && ping(&c, 0, "a", &b)));
    assert_eq!(info(0)["Cluster"]["Fenced"], false);
    assert_eq!(
        info(0)["Cluster"]["AddressConflicts"],
        serde_json::json!([])
    );
    let owner = c.etcdctl(&[
        "get",
        "--print-value-only",
        &format!("/netctl/v1/endpoints/ov/{a}"),
    ]);
    let owner: Value = serde_json::from_slice(&owner.stdout).unwrap();
    assert_eq!(owner["host"], c.hosts[0].ip.as_str());

    // Host 0 dies and stays away: its address is quarantined when host 1 first asks for it,
    // and given once the quarantine (three lease times) is over.
    c.kill_host_processes(0);
    assert!(eventually(15, || {
        let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/endpoints/ov/"]);
        !String::from_utf8_lossy(&out.stdout).contains(&format!("/{a}\n"))
    }));
    let run_at_a = || {
        c.netctl(
            1,
            &[
                "run",
                "-d",
                "--name",
                "heir",
                "--network",
                "ov",
                "--ip",
                &a,
                "--",
                "sleep",
                "60",
            ],
        )
    };
    let first = run_at_a();
    assert!(!first.status.success());
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(
        said.contains("lease ran out") && said.contains("9 s"),
        "{said}"
    );
    let t = std::time::Instant::now();
    assert!(eventually(20, || run_at_a().status.success()));
    assert!(
        t.elapsed() >= Duration::from_secs(7),
        "given after {:?}",
        t.elapsed()
    );
    assert_eq!(c.container_ip(1, "heir"), a);
}

/// `netctl inspect` of container `name` on host `i`: its endpoint on network `net`.
fn endpoint_of(c: &Cluster, i: usize, name: &str, net: &str) -> Value {
    let v: Value = serde_json::from_str(&c.netctl_ok(i, &["inspect", name])).unwrap();
    v[0]["NetworkSettings"]["Networks"][net].clone()
}

#[test]
fn a_dual_stack_overlay_carries_ipv6_across_hosts_and_keeps_its_rules() {
    require_sandbox!();
    let c = Cluster::new(2);
    // Refused, and nothing is made: IPv6-only with an IPv4 subnet, encrypted, an IPv6 subnet
    // too small, and an IPv6 gateway of its own.
    for (args, says) in [
        (
            &["--ipv6", "--ipv4=false", "--subnet", "10.57.0.0/24", "bad"][..],
            "has no IPv4 --subnet",
        ),
        (
            &["--ipv6", "-o", "encrypted", "bad"][..],
            "encrypted overlays",
        ),
        (
            &[
                "--ipv6",
                "--subnet",
                "10.57.0.0/24",
                "--subnet",
                "fd57::/121",
                "bad",
            ][..],
            "smaller than IPv4 subnet",
        ),
        (
            &[
                "--ipv6",
                "--subnet",
                "fd57::/64",
                "--gateway",
                "fd57::9",
                "bad",
            ][..],
            "leave out the IPv6 --gateway",
        ),
    ] {
        let mut all = vec!["network", "create", "-d", "overlay"];
        all.extend(args);
        let err = c.netctl_err(0, &all);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // (By name: an ID's hex digits may spell "bad".)
    assert!(!ls_json(&c, 1).iter().any(|n| n["Name"] == "bad"));

    c.overlay(
        0,
        &[
            "--ipv6",
            "--subnet",
            "10.56.0.0/24",
            "--subnet",
            "fd56::/64",
            "ov6",
        ],
    );
    // An automatic IPv6 subnet when none is given: a /64 of a unique local prefix.
    c.overlay(1, &["--ipv6", "--subnet", "10.58.0.0/24", "other6"]);
    let other: Value =
        serde_json::from_str(&c.netctl_ok(0, &["network", "inspect", "other6"])).unwrap();
    let configs = other[0]["IPAM"]["Config"].as_array().unwrap().clone();
    assert_eq!(configs.len(), 2, "{other}");
    assert!(
        configs[1]["Subnet"].as_str().unwrap().starts_with("fd"),
        "{other}"
    );
    assert!(
        configs[1]["Subnet"].as_str().unwrap().ends_with("/64"),
        "{other}"
    );
    let inspect: Value =
        serde_json::from_str(&c.netctl_ok(1, &["network", "inspect", "ov6"])).unwrap();
    assert_eq!(inspect[0]["EnableIPv6"], true, "{inspect}");
    assert_eq!(inspect[0]["IPAM"]["Config"][1]["Subnet"], "fd56::/64");
    assert_eq!(inspect[0]["IPAM"]["Config"][1]["Gateway"], "fd56::1");

    c.whoami(0, "web", "ov6", &[]);
    c.serve6(0, "web6", "ov6", 8080);
    c.sleeper(1, "client", "ov6");
    c.sleeper(1, "stranger", "other6");
    // --ip6 has no place on an overlay (the address follows --ip): refused, nothing left.
    let err = c.netctl_err(
        1,
        &[
            "run",
            "-d",
            "--name",
            "pinned",
            "--network",
            "ov6",
            "--ip6",
            "fd56::99",
            "--",
            "sleep",
            "60",
        ],
    );
    assert!(err.contains("--ip6 on overlay network ov6"), "{err}");
    assert!(!c.netctl_ok(1, &["ps", "-a"]).contains("pinned"));

    // Each container's IPv6 address is its IPv4 address's offset in the IPv6 subnet.
    let web = endpoint_of(&c, 0, "web6", "ov6");
    let client = endpoint_of(&c, 1, "client", "ov6");
    let offset = |v4: &Value| v4.as_str().unwrap().rsplit('.').next().unwrap().to_string();
    let web6 = format!(
        "fd56::{:x}",
        offset(&web["IPAddress"]).parse::<u8>().unwrap()
    );
    let client6 = format!(
        "fd56::{:x}",
        offset(&client["IPAddress"]).parse::<u8>().unwrap()
    );
    assert_eq!(web["GlobalIPv6Address"], web6.as_str(), "{web}");
    assert_eq!(client["GlobalIPv6Address"], client6.as_str(), "{client}");
    assert_eq!(client["IPv6Gateway"], "fd56::1", "{client}");

    // Across hosts over IPv6: ping, TCP with the client's own address, by name (AAAA).
    assert!(
        eventually(8, || c
            .container_sh(1, "client", &format!("ping -6 -c1 -W1 {web6}"))
            .status
            .success()),
        "ping6 across hosts"
    );
    assert_eq!(
        c.connect6(1, "client", &web6, 8080),
        client6,
        "the server sees its real peer"
    );
    assert!(
        eventually(5, || {
            let out = c.container_sh(1, "client", "getent ahostsv6 web6");
            String::from_utf8_lossy(&out.stdout).starts_with(&format!("{web6} "))
        }),
        "AAAA across hosts"
    );
    assert_eq!(c.connect6(1, "client", "web6", 8080), client6);
    // Its neighbour entry came from its own host, with the remote's MAC: nothing flooded.
    let neigh = c.container_sh(1, "client", &format!("ip -6 neigh show {web6}"));
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    let mac = format!(
        "0242{}",
        netctl_tests::container_mac_hex(web["IPAddress"].as_str().unwrap())
    );
    let mac: Vec<String> = (0..6).map(|i| mac[2 * i..2 * i + 2].to_string()).collect();
    assert!(neigh.contains(&mac.join(":")), "{neigh}");

    // All of that, neighbour discovery and listener reports included, dropped nothing on
    // either host.
    for host in [0, 1] {
        let drops = stats(&c, host)["drops"].clone();
        let total: u64 = drops
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 0, "host {host}: {drops}");
    }
    // Another overlay's container reaches none of it, over either family.
    assert!(!c
        .container_sh(1, "stranger", &format!("ping -6 -c1 -W1 {web6}"))
        .status
        .success());
    assert!(c.connect6(1, "stranger", &web6, 8080).starts_with("failed"));
    assert!(stats(&c, 1)["drops"]["isolation"].as_u64().unwrap() >= 2);

    // A forged VXLAN frame from the underlay with an inner IPv6 source that is no container
    // of that host: refused.
    let before = stats(&c, 0)["drops"]["tunnel-rejected"].as_u64().unwrap();
    let vni = inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .unwrap()
        .to_string();
    let forge = format!(
        "python3 -c '
import socket, struct
inner = bytes.fromhex(\"{mac}\") + bytes.fromhex(\"02420a38006e\") + b\"\\x86\\xdd\"
icmp = bytes([128,0,0,0,0,1,0,1])
ip = struct.pack(\"!IHBB\", 0x60000000, len(icmp), 58, 64) + socket.inet_pton(socket.AF_INET6, \"fd56::6e\") + socket.inet_pton(socket.AF_INET6, \"{web6}\")
hdr = struct.pack(\"!II\", 0x08000000, int(\"{vni}\") << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(hdr + inner + ip + icmp, (\"{h0}\", 4789))
'",
        mac = mac.join(""),
        h0 = c.hosts[0].ip,
    );
    assert!(c.underlay_sh(&forge).status.success());
    assert!(eventually(3, || stats(&c, 0)["drops"]["tunnel-rejected"]
        .as_u64()
        .unwrap()
        > before));

    // Out through its own host over IPv4 as before; gone with its container.
    c.netctl_ok(0, &["rm", "-f", "web6"]);
    assert!(eventually(5, || !c
        .container_sh(1, "client", &format!("ping -6 -c1 -W1 {web6}"))
        .status
        .success()));
}

#[test]
fn an_ipv6_only_overlay_carries_its_containers_across_hosts() {
    require_sandbox!();
    let c = Cluster::new(2);
    c.overlay(
        0,
        &["--ipv6", "--ipv4=false", "--subnet", "fd59::/64", "only6"],
    );
    let inspect: Value =
        serde_json::from_str(&c.netctl_ok(1, &["network", "inspect", "only6"])).unwrap();
    assert_eq!(inspect[0]["EnableIPv4"], false, "{inspect}");
    assert_eq!(inspect[0]["EnableIPv6"], true, "{inspect}");
    let configs = inspect[0]["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{inspect}");
    assert_eq!(configs[0]["Subnet"], "fd59::/64");
    assert_eq!(configs[0]["Gateway"], "fd59::1");
    // No IPv4 address to ask for.
    let err = c.netctl_err(
        1,
        &[
            "run",
            "-d",
            "--name",
            "pinned",
            "--network",
            "only6",
            "--ip",
            "10.0.0.5",
            "--",
            "sleep",
            "60",
        ],
    );
    assert!(
        err.contains("--ip on IPv6-only overlay network only6"),
        "{err}"
    );

    c.serve6(0, "web6", "only6", 8080);
    c.sleeper(1, "client", "only6");
    let web = endpoint_of(&c, 0, "web6", "only6");
    let client = endpoint_of(&c, 1, "client", "only6");
    assert_eq!(client["IPAddress"], "", "{client}");
    let web6 = web["GlobalIPv6Address"].as_str().unwrap().to_string();
    let client6 = client["GlobalIPv6Address"].as_str().unwrap().to_string();
    assert!(
        web6.starts_with("fd59::") && client6.starts_with("fd59::"),
        "{web} {client}"
    );
    assert_ne!(web6, client6);
    let v4 = c.container_sh(1, "client", "ip -4 -o addr show eth0; ip -4 route");
    assert!(
        String::from_utf8_lossy(&v4.stdout).trim().is_empty(),
        "{v4:?}"
    );

    assert!(
        eventually(8, || c
            .container_sh(1, "client", &format!("ping -6 -c1 -W1 {web6}"))
            .status
            .success()),
        "ping6 across hosts"
    );
    assert_eq!(c.connect6(1, "client", &web6, 8080), client6);
    // By name: AAAA from the other host's record, no A record at all.
    assert!(
        eventually(5, || c.connect6(1, "client", "web6", 8080) == client6),
        "AAAA across hosts"
    );
    let a = c.container_sh(1, "client", "getent ahostsv4 web6");
    assert!(
        String::from_utf8_lossy(&a.stdout).trim().is_empty(),
        "{a:?}"
    );
    // IPv4 servers through NAT64 out of its own host, where NAT64 runs (bpf_loop).
    if c.has_feature(1, "loop") && c.has_feature(1, "atomics") {
        let _srv = c.underlay_whoami(9000, 60);
        let url = format!("-g http://[64:ff9b::{}]:9000/", c.underlay_ip);
        assert_eq!(
            c.curl(1, "client", &url).as_deref(),
            Some(c.hosts[1].ip.as_str())
        );
    }
    // Gone with its container.
    c.netctl_ok(0, &["rm", "-f", "web6"]);
    assert!(eventually(5, || !c
        .container_sh(1, "client", &format!("ping -6 -c1 -W1 {web6}"))
        .status
        .success()));
}
