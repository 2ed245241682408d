//! Encrypted overlays (`-o encrypted`): WireGuard between the hosts — the kernel's where it
//! has one, userspace over TUN where not — and nothing of such a network ever in the clear on
//! the underlay, nor taken from it: forged plain VXLAN and replayed WireGuard are dropped.

use std::{process::Stdio, time::Duration};

use netctl_tests::{cluster::Cluster, container_mac_hex, drop_count, require_sandbox, wait_for};
use serde_json::Value;

const WG_PORT: u16 = 51871;

/// What host 0 sent and received on the underlay while `during` ran, as `tcpdump -A` prints
/// it (captured on its port of the underlay bridge: the bridge device itself sees only what
/// it floods; the capture stays in `underlay.pcap` beside the hosts' state directories).
fn underlay_capture(c: &Cluster, filter: &str, during: impl FnOnce()) -> String {
    use std::io::BufRead;
    let pcap = c.hosts[0].state_dir.with_file_name("underlay.pcap");
    let mut cap = c
        .underlay_cmd(&format!(
            "exec timeout 20 tcpdump --immediate-mode -U -nni ul-h0 -w {} '{filter}'",
            pcap.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Under way once it says so (a loaded machine takes its time to start it).
    let mut lines = std::io::BufReader::new(cap.stderr.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("listening on"))),
        "tcpdump did not start"
    );
    // Its stderr stays read: a closed pipe would kill it before it writes the capture out.
    let drain = std::thread::spawn(move || lines.for_each(drop));
    during();
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT: tcpdump writes out what it has and ends.
    // SAFETY: kill on the child's own pid.
    unsafe { libc::kill(cap.id() as i32, libc::SIGINT) };
    let _ = cap.wait();
    let _ = drain.join();
    let out = c.underlay_sh(&format!("tcpdump -nn -A -r {}", pcap.display()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_encrypted_overlay_carries_tcp_between_hosts_and_nothing_in_the_clear() {
    require_sandbox!();
    let c = Cluster::new(2);
    let id = c.overlay(0, &["--subnet", "10.53.0.0/24", "-o", "encrypted", "sov"]);
    assert!(!id.trim().is_empty());
    let v: Value = serde_json::from_str(&c.netctl_ok(1, &["network", "inspect", "sov"])).unwrap();
    assert_eq!(v[0]["Options"]["encrypted"], "", "{v}");
    c.whoami(0, "web", "sov", &[]);
    c.sleeper(1, "client", "sov");
    let (web, client) = (c.container_ip(0, "web"), c.container_ip(1, "client"));
    // WireGuard's overhead comes off the underlay's MTU (1500 here), not VXLAN's.
    for (host, name) in [(0, "web"), (1, "client")] {
        let link = c.container_sh(host, name, "ip -o link show eth0");
        assert!(
            String::from_utf8_lossy(&link.stdout).contains(" mtu 1440 "),
            "{link:?}"
        );
    }
    // `info` says which WireGuard carries them (this kernel: the kernel's or userspace).
    let info: Value = serde_json::from_str(&c.netctl_ok(0, &["info", "--format", "json"])).unwrap();
    let how = info["Cluster"]["EncryptedOverlays"]
        .as_str()
        .unwrap_or_default();
    assert!(
        how.contains("WireGuard") && how.contains("UDP 51871"),
        "{info}"
    );
    // One WireGuard device per host, in netctl's group; no VXLAN device for it.
    for h in 0..2 {
        let dev = c.host_sh(h, "ip -d -o link show nctl-wg");
        assert!(dev.status.success(), "{dev:?}");
        assert!(!c.host_sh(h, "ip link show nctl-vxlan").status.success());
    }
    let marker = "carried-in-the-clear-7a1f";
    let mut answer = None;
    let seen = underlay_capture(&c, "udp", || {
        wait_for(
            "TCP across the encrypted overlay",
            Duration::from_secs(15),
            || {
                answer = c.curl(1, "client", &format!("http://{web}/{marker}"));
                answer.is_some()
            },
        );
    });
    // The server sees the client's own address: nothing translated on the way.
    assert_eq!(answer.as_deref(), Some(client.as_str()));
    assert!(
        seen.contains(&format!(".{WG_PORT}:")),
        "no WireGuard on the underlay: {seen}"
    );
    assert!(
        !seen.contains(marker),
        "the request crossed in the clear: {seen}"
    );
    assert!(!seen.contains(".4789:"), "VXLAN on the underlay: {seen}");
    // By name too (the names come from the store as for any overlay).
    wait_for("the name across hosts", Duration::from_secs(5), || {
        c.curl(1, "client", "http://web/").as_deref() == Some(client.as_str())
    });
    // The device goes with the host's last container on an encrypted overlay.
    c.netctl_ok(0, &["rm", "-f", "web"]);
    assert!(!c.host_sh(0, "ip link show nctl-wg").status.success());
    assert!(c.host_sh(1, "ip link show nctl-wg").status.success());
    // A bridge network cannot be "encrypted": its traffic never leaves the host.
    let err = c.netctl_err(0, &["network", "create", "-o", "encrypted", "lan"]);
    assert!(
        err.contains("-o encrypted is for overlay networks"),
        "{err}"
    );
}

#[test]
fn forged_vxlan_and_replayed_wireguard_from_the_underlay_are_not_delivered() {
    require_sandbox!();
    let c = Cluster::new(2);
    c.overlay(0, &["--subnet", "10.54.0.0/24", "-o", "encrypted", "sov"]);
    // A plain overlay too: host 1 then has a VXLAN device that forged VXLAN reaches.
    c.overlay(0, &["--subnet", "10.55.0.0/24", "pov"]);
    c.sleeper(0, "sender", "sov");
    c.sleeper(1, "target", "sov");
    c.sleeper(1, "plain", "pov");
    let (sender, target) = (c.container_ip(0, "sender"), c.container_ip(1, "target"));
    wait_for("the encrypted overlay", Duration::from_secs(15), || {
        c.container_sh(0, "sender", &format!("ping -c1 -W1 {target}"))
            .status
            .success()
    });
    let inspect: Value =
        serde_json::from_str(&c.netctl_ok(0, &["network", "inspect", "sov"])).unwrap();
    let vni = inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .unwrap()
        .to_string();
    // The target counts the datagrams that reach port 9999.
    let listener = c
        .netctl_cmd(
            1,
            &[
                "exec",
                "target",
                "--",
                "timeout",
                "8",
                "python3",
                "-c",
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',9999))\ns.settimeout(8)\ntry:\n  while True: print(s.recv(100).decode(), flush=True)\nexcept Exception: pass",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // One genuine datagram, captured on the underlay as WireGuard carries it.
    let pcap = c.hosts[0].state_dir.with_file_name("wg.pcap");
    let seen = underlay_capture(&c, &format!("udp port {WG_PORT}"), || {
        let send = format!(
            "python3 -c 'import socket; socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b\"genuine\", (\"{target}\", 9999))'"
        );
        assert!(c.container_sh(0, "sender", &send).status.success());
    });
    let _ = std::fs::rename(c.hosts[0].state_dir.with_file_name("underlay.pcap"), &pcap);
    assert!(!seen.contains("genuine"), "{seen}");
    let before = c.netctl_ok(1, &["stats", "--json"]);
    // The underlay attacker: the same datagram as plain VXLAN with host 0's address (the
    // overlay's VNI, the sender's real addresses), and the captured WireGuard packets again.
    let attack = format!(
        r#"python3 - <<'EOF'
import socket, struct
inner = bytes.fromhex("0242{t}") + bytes.fromhex("0242{s}") + b"\x08\x00"
udp = struct.pack("!HHHH", 5555, 9999, 15, 0) + b"forged!"
ip = bytes([0x45,0,0,35,0,0,0,0,64,17,0,0]) + socket.inet_aton("{sender}") + socket.inet_aton("{target}")
vx = struct.pack("!II", 0x08000000, int("{vni}") << 8) + inner + ip + udp
outer_udp = struct.pack("!HHHH", 4789, 4789, 8 + len(vx), 0) + vx
def ipv4(src, dst, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h + payload
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3):
    raw.sendto(ipv4("{h0}", "{h1}", outer_udp), ("{h1}", 0))
# Replay: every captured WireGuard packet from host 0 to host 1, as it was.
data = open("{pcap}", "rb").read()
at, replayed = 24, 0
while at + 16 <= len(data):
    n = struct.unpack("<I", data[at+8:at+12])[0]
    frame = data[at+16:at+16+n]
    at += 16 + n
    pkt = frame[14:]
    if len(pkt) > 28 and pkt[12:16] == socket.inet_aton("{h0}") and pkt[16:20] == socket.inet_aton("{h1}"):
        raw.sendto(pkt, ("{h1}", 0))
        replayed += 1
print("replayed", replayed)
EOF"#,
        t = container_mac_hex(&target),
        s = container_mac_hex(&sender),
        h0 = c.hosts[0].ip,
        h1 = c.hosts[1].ip,
        pcap = pcap.display(),
    );
    let out = c.underlay_sh(&attack);
    assert!(out.status.success(), "{out:?}");
    let replayed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !replayed.contains("replayed 0"),
        "nothing captured to replay: {seen}"
    );
    let got = listener.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&got.stdout);
    assert_eq!(
        got.matches("genuine").count(),
        1,
        "replayed WireGuard delivered: {got}"
    );
    assert!(!got.contains("forged"), "plain VXLAN delivered: {got}");
    let after = c.netctl_ok(1, &["stats", "--json"]);
    assert!(
        drop_count(&after, "tunnel-unencrypted") >= drop_count(&before, "tunnel-unencrypted") + 3,
        "{after}"
    );
}

/// Host `i`'s public key as its record in the store has it.
fn published_key(c: &Cluster, i: usize) -> Option<String> {
    let out = c.etcdctl(&[
        "get",
        "--print-value-only",
        &format!("/netctl/v1/hosts/{}", c.hosts[i].ip),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["wireguard"]["public_key"].as_str().map(str::to_string)
}

#[test]
fn keys_are_rotated_and_published_and_traffic_goes_on() {
    require_sandbox!();
    let mut c = Cluster::new(2);
    c.env.push(("NETCTL_WIREGUARD_ROTATE".into(), "5".into()));
    c.overlay(0, &["--subnet", "10.56.0.0/24", "-o", "encrypted", "sov"]);
    c.whoami(0, "web", "sov", &[]);
    c.sleeper(1, "client", "sov");
    let web = c.container_ip(0, "web");
    let reached = || c.curl(1, "client", &format!("http://{web}/")).is_some();
    wait_for(
        "TCP across the encrypted overlay",
        Duration::from_secs(15),
        reached,
    );
    let first = published_key(&c, 0).expect("host 0 publishes its WireGuard key");
    // The key file is root's alone.
    let key_file = c.hosts[0].state_dir.join("wireguard.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    wait_for("a rotated key", Duration::from_secs(20), || {
        published_key(&c, 0).is_some_and(|k| k != first)
    });
    // The other host follows the new key: requests go on after the rotation.
    wait_for("TCP after the rotation", Duration::from_secs(15), reached);
}

#[test]
fn without_a_transport_encrypted_is_an_error_never_plaintext() {
    require_sandbox!();
    let c = Cluster::new(2);
    // Only meaningful where the kernel has no WireGuard (forcing the kernel's then fails).
    let probe = c.host_sh(
        0,
        "ip link add nctl-wgprobe type wireguard && ip link del nctl-wgprobe",
    );
    if probe.status.success() {
        eprintln!("this kernel has WireGuard: the error path is not reachable here");
        return;
    }
    let forced = |i: usize, args: &[&str]| {
        c.netctl_cmd(i, args)
            .env("NETCTL_WIREGUARD", "kernel")
            .output()
            .unwrap()
    };
    let out = forced(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "-o",
            "encrypted",
            "sov",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created without a transport");
    assert!(err.contains("has no WireGuard"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        !c.netctl_ok(0, &["network", "ls"]).contains("sov"),
        "the network was stored"
    );
    // Nor while a member host publishes no WireGuard key (an older netctl would send the
    // network's frames in the clear).
    let old_host = "/netctl/v1/hosts/100.127.255.99";
    let put = c.etcdctl(&["put", old_host, r#"{"addr":"100.127.255.99","subnets":[]}"#]);
    assert!(put.status.success(), "{put:?}");
    let err = c.netctl_err(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "-o",
            "encrypted",
            "sov",
        ],
    );
    assert!(
        err.contains("host 100.127.255.99 publishes no WireGuard key"),
        "{err}"
    );
    assert!(c.etcdctl(&["del", old_host]).status.success());
    // Made where a transport exists; a host that has none cannot join it.
    c.overlay(0, &["--subnet", "10.57.0.0/24", "-o", "encrypted", "sov"]);
    let out = forced(
        1,
        &[
            "run",
            "-d",
            "--name",
            "x",
            "--network",
            "sov",
            "--",
            "sleep",
            "60",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "joined without a transport");
    assert!(err.contains("WireGuard"), "{err}");
    assert!(!c.host_sh(1, "ip link show nctl-wg").status.success());
    assert!(
        !c.netctl_ok(1, &["ps", "-a"]).contains(" x"),
        "the container stayed"
    );
}

#[test]
fn a_foreign_link_with_the_devices_name_is_never_used() {
    require_sandbox!();
    let c = Cluster::new(2);
    c.overlay(0, &["--subnet", "10.59.0.0/24", "-o", "encrypted", "sov"]);
    c.whoami(0, "web", "sov", &[]);
    // Someone else's link holds the name on host 1 before its first encrypted container.
    assert!(c
        .host_sh(
            1,
            "ip link add nctl-wg type veth peer name nctl-wgp && ip link set nctl-wg up"
        )
        .status
        .success());
    let run = c.netctl(1, &netctl_tests::sleeper_args("client", "sov"));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("is not this instance's WireGuard device"),
        "{said}"
    );
    let web = c.container_ip(0, "web");
    let before = c.netctl_ok(1, &["stats", "--json"]);
    // Nothing goes into it: the client's frames for host 0 are dropped, none in the clear.
    let seen = underlay_capture(&c, "udp", || {
        assert!(c.curl(1, "client", &format!("http://{web}/")).is_none());
    });
    assert!(!seen.contains(".4789:"), "{seen}");
    let after = c.netctl_ok(1, &["stats", "--json"]);
    assert!(
        drop_count(&after, "tunnel-unencrypted") > drop_count(&before, "tunnel-unencrypted"),
        "{after}"
    );
    let dummy = c.host_sh(1, "ip -s link show nctl-wg");
    assert!(
        String::from_utf8_lossy(&dummy.stdout).contains("TX:"),
        "the foreign link was removed: {dummy:?}"
    );
}
