//! The eBPF programs on crafted packets (BPF_PROG_TEST_RUN through aya's TestRun): verdicts,
//! the exact rewritten bytes, and checksums recomputed from scratch in Rust. Each test loads
//! its own unpinned copy of the object in a network namespace of its own, so maps, sockets
//! and routes are private. Needs root; skips otherwise. Connection tracking has its own file
//! (conntrack.rs).

#[path = "world/mod.rs"]
mod world;

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap};
use netctl::kernel::dataplane::maps::raw;
use netctl_common::{
    drop::DropReason,
    maps::{
        FragKey, FragPorts, LinkKey, CONFIG_FORWARD_OPEN, EVENTS, FRAGS, FRAG_TTL_NS, LINKS,
        LINK_FROM_PORT, LINK_TO_PORT, TRACE,
    },
    stats::Hook,
};
use world::*;

// ---- published ports ----

#[test]
fn dnat_in_xdp_and_reverse_on_egress() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, out) = w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, SYN));
    assert_eq!(v, XDP_PASS);
    let s = check(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ip(CLIENT), 40000, ip(WEB), 80),
        "client kept, backend set"
    );
    assert_eq!(w.ct_len(), 2, "both directions tracked");
    // The payload is untouched.
    assert_eq!(&out[54..], b"GET / HTTP/1.0\r\n\r\n");

    // The reply leaves with the host's address and published port.
    let (v, out) = w.run("uplink_egress", &tcp(WEB, 80, CLIENT, 40000, SYN_ACK));
    assert_eq!(v, TC_ACT_OK);
    let s = check(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ip(H), 8080, ip(CLIENT), 40000)
    );

    // Later packets of the flow use the entry (same translation).
    let (_, out) = w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, ACK));
    let s = check(&out);
    assert_eq!((s.dst, s.dport), (ip(WEB), 80));
    assert_eq!(w.ct_len(), 2);
}

#[test]
fn dnat_in_tc_with_and_without_fast_path() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, out) = w.run("uplink_ingress", &udp(CLIENT, 5000, H, 5353));
    assert_eq!(v, TC_ACT_OK);
    let s = check(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ip(CLIENT), 5000, ip(WEB), 53)
    );

    // Fast path: straight to the container, Ethernet rewritten to its MAC from the bridge's.
    let mut w = World::new(true, true);
    let (v, out) = w.run("uplink_ingress", &tcp(CLIENT, 40001, H, 8080, SYN));
    assert_eq!(v, TC_ACT_REDIRECT);
    let s = check(&out);
    assert_eq!((s.dst, s.dport), (ip(WEB), 80));
    assert_eq!(s.dst_mac, [0x02, 0x42, 10, 1, 0, 2]);
    assert_eq!(s.src_mac, BRIDGE_MAC);
}

#[test]
fn unpublished_ports_and_host_traffic_pass_untouched() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let pkt = tcp(CLIENT, 40000, H, 22, SYN);
    let (v, out) = w.run("uplink_xdp", &pkt);
    assert_eq!((v, &out[..]), (XDP_PASS, &pkt[..]));
    let (v, out) = w.run("uplink_ingress", &pkt);
    assert_eq!((v, &out[..]), (TC_ACT_OK, &pkt[..]));
    assert_eq!(w.ct_len(), 0);
    // A published port only answers on host addresses: not for a routed destination.
    let pkt = tcp(CLIENT, 40000, "192.0.2.99", 8080, SYN);
    let (v, out) = w.run("uplink_xdp", &pkt);
    assert_eq!((v, &out[..]), (XDP_PASS, &pkt[..]));
}

#[test]
fn no_way_in_to_container_addresses() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, _) = w.run("uplink_xdp", &tcp(CLIENT, 40000, WEB, 80, SYN));
    assert_eq!(v, XDP_DROP);
    let (v, _) = w.run("uplink_ingress", &udp(CLIENT, 1, WEB, 53));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::NoWayIn), 2);
}

// ---- masquerade ----

#[test]
fn snat_and_reverse_for_udp_tcp_and_icmp() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, out) = w.run("uplink_egress", &udp(WEB, 5555, OUT, 53));
    assert_eq!(v, TC_ACT_OK);
    let s = check(&out);
    assert_eq!((s.src, s.dst, s.dport), (ip(H), ip(OUT), 53));
    assert!((61000..=65535).contains(&s.sport), "nat port {}", s.sport);
    let nat_port = s.sport;

    // The reply, in XDP and in TC, goes back to the container.
    for prog in ["uplink_xdp", "uplink_ingress"] {
        let (v, out) = w.run(prog, &udp(OUT, 53, H, nat_port));
        assert!(v == XDP_PASS || v == TC_ACT_OK, "{prog}: {v}");
        let s = check(&out);
        assert_eq!(
            (s.src, s.sport, s.dst, s.dport),
            (ip(OUT), 53, ip(WEB), 5555),
            "{prog}"
        );
    }

    // A second container with the same source port gets another NAT port: no collision.
    let (_, out) = w.run("uplink_egress", &udp(A2, 5555, OUT, 53));
    let s2 = check(&out);
    assert_ne!(s2.sport, nat_port);

    let (_, out) = w.run("uplink_egress", &tcp(WEB, 33000, OUT, 443, SYN));
    let s = check(&out);
    assert_eq!(s.src, ip(H));
    let (_, out) = w.run("uplink_ingress", &tcp(OUT, 443, H, s.sport, SYN_ACK));
    let r = check(&out);
    assert_eq!((r.dst, r.dport), (ip(WEB), 33000));

    // ping: the echo identifier is the port.
    let (_, out) = w.run("uplink_egress", &icmp_echo(WEB, OUT, 8, 77));
    let s = check(&out);
    assert_eq!(s.src, ip(H));
    let (_, out) = w.run("uplink_xdp", &icmp_echo(OUT, H, 0, s.sport));
    let r = check(&out);
    assert_eq!((r.dst, r.sport), (ip(WEB), 77));
}

#[test]
fn icmp_errors_of_masqueraded_flows_are_translated() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (_, out) = w.run("uplink_egress", &udp(WEB, 5555, OUT, 53));
    let nat_port = check(&out).sport;
    // OUT answers "port unreachable", quoting the translated datagram it got.
    let quoted = out[14..14 + 28].to_vec();
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend(&quoted);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let (v, out) = w.run("uplink_ingress", &eth(ipv4(ICMP, OUT, H, m, 0)));
    assert_eq!(v, TC_ACT_OK);
    let outer = &out[14..34];
    assert_eq!(csum(outer), 0, "outer IP checksum");
    assert_eq!(
        Ipv4Addr::from(<[u8; 4]>::try_from(&outer[16..20]).unwrap()),
        ip(WEB)
    );
    let icmp = &out[34..];
    assert_eq!(csum(icmp), 0, "ICMP checksum");
    let inner = &icmp[8..28];
    assert_eq!(csum(inner), 0, "quoted IP checksum");
    assert_eq!(
        Ipv4Addr::from(<[u8; 4]>::try_from(&inner[12..16]).unwrap()),
        ip(WEB)
    );
    assert_eq!(
        u16::from_be_bytes([icmp[28], icmp[29]]),
        5555,
        "quoted source port (was {nat_port})"
    );
}

// ---- isolation ----

#[test]
fn isolation_icc_and_internal() {
    if !root() {
        return;
    }
    let mut w = World::new(false, false);
    // Another network: dropped.
    let (v, _) = w.run("from_container", &tcp(WEB, 1000, "10.2.0.3", 80, SYN));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Isolation), 1);
    // Same network, ICC off: dropped; its gateway and the outside stay reachable.
    let (v, _) = w.run("from_container", &tcp(WEB, 1000, A2, 80, SYN));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::IccOff), 1);
    let (v, _) = w.run("from_container", &icmp_echo(WEB, GW_A, 8, 1));
    assert_eq!(v, TC_ACT_OK);
    let (v, _) = w.run("from_container", &udp(WEB, 1000, OUT, 53));
    assert_eq!(v, TC_ACT_OK);
    // Internal network: its own gateway only.
    let (v, _) = w.run("from_container", &udp("10.3.0.2", 1000, OUT, 53));
    assert_eq!(v, TC_ACT_SHOT);
    let (v, _) = w.run("from_container", &udp("10.3.0.2", 1000, H, 53));
    assert_eq!(v, TC_ACT_SHOT);
    let (v, _) = w.run("from_container", &udp("10.3.0.2", 1000, "10.3.0.1", 53));
    assert_eq!(v, TC_ACT_OK);
    // Of its gateway, the embedded DNS only (UDP and TCP 53): no other service of the host.
    let (v, _) = w.run(
        "from_container",
        &tcp("10.3.0.2", 1000, "10.3.0.1", 53, SYN),
    );
    assert_eq!(v, TC_ACT_OK);
    for pkt in [
        tcp("10.3.0.2", 1000, "10.3.0.1", 2222, SYN),
        udp("10.3.0.2", 1000, "10.3.0.1", 123),
        icmp_echo("10.3.0.2", "10.3.0.1", 8, 1),
    ] {
        assert_eq!(w.run("from_container", &pkt).0, TC_ACT_SHOT);
    }
    assert_eq!(w.drops(DropReason::Internal), 5);
    // A source address that is not the sender's.
    let (v, _) = w.run("from_container", &udp("10.1.0.77", 1000, OUT, 53));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Spoofed), 1);
    assert_eq!(w.hook_packets(Hook::FromContainer), 12);
}

#[test]
fn icc_on_lets_a_network_talk() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let pkt = tcp(WEB, 1000, A2, 80, SYN);
    let (v, out) = w.run("from_container", &pkt);
    assert_eq!((v, &out[..]), (TC_ACT_OK, &pkt[..]));
}

#[test]
fn a_legacy_link_opens_only_the_targets_port_with_icc_off() {
    if !root() {
        return;
    }
    let mut w = World::new(false, false);
    let mut links: HashMap<_, LinkKey, u32> = w.ebpf.map_mut(LINKS).unwrap().try_into().unwrap();
    // WEB links to A2, which exposes 5432/tcp: the request and the reply are allowed.
    let key = |src: &str, dst: &str, dir| LinkKey {
        src: raw(ip(src)),
        dst: raw(ip(dst)),
        port: 5432u16.to_be(),
        proto: 6,
        dir,
    };
    links.insert(key(WEB, A2, LINK_TO_PORT), 1, 0).unwrap();
    links.insert(key(A2, WEB, LINK_FROM_PORT), 1, 0).unwrap();
    // Linked containers talk over the bridge: frames to each other's MAC.
    let syn = to_mac(tcp(WEB, 40000, A2, 5432, 0x02), A2);
    let (v, out) = w.run("from_container", &syn);
    assert_eq!((v, &out[..]), (TC_ACT_OK, &syn[..]), "untouched, allowed");
    let (v, _) = w.run(
        "from_container",
        &to_mac(tcp(A2, 5432, WEB, 40000, 0x12), WEB),
    );
    assert_eq!(v, TC_ACT_OK, "the reply");
    // Nothing else: another port, the other direction, UDP on the same port.
    let (v, _) = w.run("from_container", &to_mac(tcp(WEB, 40000, A2, 80, 0x02), A2));
    assert_eq!(v, TC_ACT_SHOT);
    let (v, _) = w.run(
        "from_container",
        &to_mac(tcp(A2, 40000, WEB, 5432, 0x02), WEB),
    );
    assert_eq!(v, TC_ACT_SHOT);
    let (v, _) = w.run("from_container", &to_mac(udp(WEB, 40000, A2, 5432), A2));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::IccOff), 3);
}

/// `pkt` with its Ethernet destination set to the MAC of the container at `addr`.
fn to_mac(mut pkt: Vec<u8>, addr: &str) -> Vec<u8> {
    pkt[..6].copy_from_slice(&mac_of(ip(addr).octets()));
    pkt
}

#[test]
fn nothing_reaches_a_container_around_the_checked_hooks() {
    if !root() {
        return;
    }
    let mut w = World::new(false, false);
    // From outside without a flow (routed in by an interface without netctl's programs):
    // no way in, whatever the port.
    for pkt in [
        tcp(CLIENT, 40000, WEB, 80, SYN),
        udp(CLIENT, 5000, WEB, 53),
        icmp_echo(CLIENT, WEB, 8, 1),
    ] {
        assert_eq!(w.run("to_container", &pkt).0, TC_ACT_SHOT);
    }
    assert_eq!(w.drops(DropReason::NoWayIn), 3);
    // A published port's flow, as the uplink hands it on: in.
    let (_, dnat) = w.run("uplink_ingress", &tcp(CLIENT, 40001, H, 8080, SYN));
    assert_eq!(w.run("to_container", &dnat).0, TC_ACT_OK);
    // An ICMP error about that flow (quoting the container's reply): in; about nothing: out.
    let reply = ipv4(
        TCP,
        WEB,
        CLIENT,
        tcp_seg(WEB, 80, CLIENT, 40001, SYN_ACK, 1, 1, b""),
        0,
    );
    assert_eq!(
        w.run("to_container", &icmp_error(OUT, WEB, 3, 4, &reply)).0,
        TC_ACT_OK
    );
    let other = ipv4(
        TCP,
        WEB,
        CLIENT,
        tcp_seg(WEB, 80, CLIENT, 49999, SYN_ACK, 1, 1, b""),
        0,
    );
    assert_eq!(
        w.run("to_container", &icmp_error(OUT, WEB, 3, 4, &other)).0,
        TC_ACT_SHOT
    );
    // Containers: another network's is isolation, a neighbour with ICC off is icc-off, even
    // if it got around its own veth's program.
    assert_eq!(
        w.run("to_container", &tcp(B3, 1000, WEB, 80, SYN)).0,
        TC_ACT_SHOT
    );
    assert_eq!(w.drops(DropReason::Isolation), 1);
    assert_eq!(
        w.run("to_container", &tcp(A2, 1000, WEB, 80, SYN)).0,
        TC_ACT_SHOT
    );
    assert_eq!(w.drops(DropReason::IccOff), 1);
    // The host: in; to an internal network, its gateway only.
    assert_eq!(
        w.run("to_container", &tcp(GW_A, 1000, WEB, 80, SYN)).0,
        TC_ACT_OK
    );
    assert_eq!(w.run("to_container", &udp(GW_I, 53, I2, 5000)).0, TC_ACT_OK);
    assert_eq!(
        w.run("to_container", &tcp(H, 1000, I2, 80, SYN)).0,
        TC_ACT_SHOT
    );
    assert_eq!(w.drops(DropReason::Internal), 1);
    // ARP and the bridge's own IPv6 go by.
    let arp = eth_type(0x0806, vec![0; 28]);
    assert_eq!(w.run("to_container", &arp).0, TC_ACT_OK);
}

#[test]
fn outside_packets_with_our_own_addresses_are_forged() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // A container's, the host's, a gateway's address as the source, from outside.
    for src in [WEB, H, GW_A] {
        let (v, _) = w.run("uplink_ingress", &tcp(src, 40000, H, 8080, SYN));
        assert_eq!(v, TC_ACT_SHOT, "{src}");
    }
    assert_eq!(w.drops(DropReason::Spoofed), 3);
    assert_eq!(w.ct_len(), 0, "no flow from a forged packet");
    let (_, out) = w.run("uplink_ingress", &tcp(CLIENT, 40000, H, 8080, SYN));
    assert_eq!(check(&out).dst, ip(WEB), "a real client still gets in");
}

#[test]
fn with_icc_off_nothing_is_bridged_to_another_container() {
    if !root() {
        return;
    }
    let mut w = World::new(false, false);
    // Broadcast, multicast and a neighbour's MAC under an outside address would all be
    // bridged to the neighbour; only frames to the gateway leave.
    let bcast = udp(WEB, 68, "255.255.255.255", 67);
    let mut bcast_frame = bcast.clone();
    bcast_frame[..6].copy_from_slice(&[0xff; 6]);
    let mut mcast = udp(WEB, 5353, "224.0.0.251", 5353);
    mcast[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 0xfb]);
    for pkt in [bcast_frame, mcast, to_mac(udp(WEB, 1000, OUT, 53), A2)] {
        assert_eq!(w.run("from_container", &pkt).0, TC_ACT_SHOT);
    }
    assert_eq!(w.drops(DropReason::IccOff), 3);
    // With ICC on the same frames pass (the bridge floods broadcast as Docker's does).
    let mut w = World::new(true, false);
    assert_eq!(
        w.run("from_container", &to_mac(udp(WEB, 1000, A2, 53), A2))
            .0,
        TC_ACT_OK
    );
}

#[test]
fn containers_cannot_send_into_a_cluster_tunnel() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    const PEER: &str = "192.0.2.99";
    let mut peers: HashMap<_, u32, u32> = w
        .ebpf
        .map_mut(netctl_common::overlay::OVERLAY_PEERS)
        .unwrap()
        .try_into()
        .unwrap();
    peers.insert(raw(ip(PEER)), 1, 0).unwrap();
    // A hand-built VXLAN packet to a member host's port 4789: masqueraded, it would carry
    // this host's address, which the peer trusts for tunnel traffic.
    let (v, _) = w.run("from_container", &udp(WEB, 40000, PEER, 4789));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::TunnelInjection), 1);
    // Other ports of that host, and port 4789 elsewhere: ordinary traffic.
    assert_eq!(
        w.run("from_container", &udp(WEB, 40000, PEER, 53)).0,
        TC_ACT_OK
    );
    assert_eq!(
        w.run("from_container", &udp(WEB, 40000, OUT, 4789)).0,
        TC_ACT_OK
    );
}

#[test]
fn a_frame_larger_than_the_overlay_carries_is_refused_before_the_tunnel() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    if !w
        .features
        .has(netctl::kernel::dataplane::features::CHECK_MTU)
    {
        eprintln!("skipped: no bpf_check_mtu here (the host fragments instead)");
        return;
    }
    // The tunnel device of this test's namespace: MTU 1000 (a veth: kernels without the
    // dummy driver have it).
    let ok = std::process::Command::new("ip")
        .args([
            "link", "add", "ovt0", "mtu", "1000", "type", "veth", "peer", "name", "ovt1",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let dev = nix::net::if_::if_nametoindex("ovt0").unwrap();
    let mut cfg: aya::maps::Array<_, netctl_common::overlay::OverlayConfig> = w
        .ebpf
        .map_mut(netctl_common::overlay::OVERLAY_CONFIG)
        .unwrap()
        .try_into()
        .unwrap();
    cfg.set(
        0,
        netctl_common::overlay::OverlayConfig {
            vxlan_ifindex: dev,
            wg_ifindex: 0,
        },
        0,
    )
    .unwrap();
    let mut vnis: HashMap<_, u32, u32> = w
        .ebpf
        .map_mut(netctl_common::overlay::OVERLAY_VNIS)
        .unwrap()
        .try_into()
        .unwrap();
    vnis.insert(BRIDGE_A, 4096, 0).unwrap();
    const REMOTE: &str = "10.1.0.77";
    let mut remotes: HashMap<_, u32, netctl_common::overlay::Remote> = w
        .ebpf
        .map_mut(netctl_common::overlay::OVERLAY_REMOTES)
        .unwrap()
        .try_into()
        .unwrap();
    remotes
        .insert(
            raw(ip(REMOTE)),
            netctl_common::overlay::Remote {
                host: raw(ip("192.0.2.99")),
                vni: 4096,
            },
            0,
        )
        .unwrap();
    let frame = |len: usize| {
        let payload = vec![7u8; len - 14 - 20 - 8];
        to_mac(
            eth(ipv4(
                UDP,
                WEB,
                REMOTE,
                udp_seg(WEB, 4000, REMOTE, 53, &payload),
                0,
            )),
            REMOTE,
        )
    };
    assert_eq!(
        w.run("from_container", &frame(1014)).0,
        TC_ACT_REDIRECT,
        "1000 bytes of IP: into the tunnel"
    );
    assert_eq!(w.run("from_container", &frame(1015)).0, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::TunnelMtu), 1);
}

// ---- hairpin ----

#[test]
fn hairpin_translates_both_ends_and_redirects() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, out) = w.run("from_container", &tcp(A2, 41000, H, 8080, SYN));
    assert_eq!(v, TC_ACT_REDIRECT);
    let s = check(&out);
    assert_eq!((s.src, s.dst, s.dport), (ip(GW_A), ip(WEB), 80));
    assert_eq!(s.dst_mac, [0x02, 0x42, 10, 1, 0, 2]);
    let gw_port = s.sport;
    let (v, out) = w.run("from_container", &tcp(WEB, 80, GW_A, gw_port, SYN_ACK));
    assert_eq!(v, TC_ACT_REDIRECT);
    let r = check(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip(H), 8080, ip(A2), 41000)
    );
    assert_eq!(r.dst_mac, [0x02, 0x42, 10, 1, 0, 3]);
}

// ---- what is never translated ----

/// The datagram split as the kernel splits it: the first fragment (MF, with the UDP header
/// and the checksum of the whole datagram) and the rest (offset 3 × 8 bytes), IP ID `id`.
fn udp_fragments(src: &str, sport: u16, dst: &str, dport: u16, id: u16) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..40u8).collect();
    let seg = udp_seg(src, sport, dst, dport, &payload);
    let (first, rest) = seg.split_at(24);
    let with_id = |mut p: Vec<u8>| {
        p[18..20].copy_from_slice(&id.to_be_bytes());
        p[24..26].copy_from_slice(&[0, 0]);
        let c = csum(&p[14..34]);
        p[24..26].copy_from_slice(&c.to_be_bytes());
        p
    };
    (
        with_id(eth(ipv4(UDP, src, dst, first.to_vec(), 0x2000))),
        with_id(eth(ipv4(UDP, src, dst, rest.to_vec(), 0x0003))),
    )
}

/// The later fragment's L4 bytes, and its addresses (its IP checksum verified).
fn later(p: &[u8]) -> (Ipv4Addr, Ipv4Addr, Vec<u8>) {
    assert_eq!(csum(&p[14..34]), 0, "IPv4 header checksum");
    let src: [u8; 4] = p[26..30].try_into().unwrap();
    let dst: [u8; 4] = p[30..34].try_into().unwrap();
    (src.into(), dst.into(), p[34..].to_vec())
}

#[test]
fn a_fragment_record_is_made_only_by_a_first_fragment_that_passed_and_never_replaced() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let records = |w: &mut World| -> Vec<(FragKey, FragPorts)> {
        let frags: HashMap<_, FragKey, FragPorts> = w.ebpf.map(FRAGS).unwrap().try_into().unwrap();
        frags.iter().map(|r| r.unwrap()).collect()
    };
    // A first fragment from outside with a container's source address is dropped: no record.
    let (forged, _) = udp_fragments(A2, 5000, H, 5353, 21);
    assert_eq!(w.run("uplink_ingress", &forged).0, TC_ACT_SHOT);
    assert!(records(&mut w).is_empty(), "{:?}", records(&mut w));
    // The client's first fragment makes one, keyed by the interface it came through.
    let (first, rest) = udp_fragments(CLIENT, 5000, H, 5353, 22);
    w.run("uplink_ingress", &first);
    let made = records(&mut w);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].0.ifindex, LO);
    // Another first fragment with the same addresses and IP ID cannot change its ports.
    let (other, _) = udp_fragments(CLIENT, 6666, H, 5353, 22);
    w.run("uplink_ingress", &other);
    let now = records(&mut w);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].1.sport, made[0].1.sport, "the live record stays");
    // The later fragment still follows its own first fragment.
    let (_, out) = w.run("uplink_ingress", &rest);
    assert_eq!(later(&out).1, ip(WEB));
}

#[test]
fn fragments_follow_their_first_fragment_through_nat() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // In through a published UDP port: the first fragment makes the flow, the later one is
    // sent to the same container, its payload untouched.
    let (first, rest) = udp_fragments(CLIENT, 5000, H, 5353, 7);
    let (v, _) = w.run("uplink_xdp", &first);
    assert_eq!(v, XDP_PASS, "XDP leaves fragments to TC");
    let (v, out) = w.run("uplink_ingress", &first);
    assert!(v == TC_ACT_OK || v == TC_ACT_REDIRECT);
    assert_eq!(&out[18..20], &7u16.to_be_bytes());
    assert_eq!(csum(&out[14..34]), 0);
    assert_eq!(&out[30..34], &ip(WEB).octets());
    assert_eq!(
        &out[36..38],
        &53u16.to_be_bytes(),
        "the port, in the first fragment"
    );
    let (v, out) = w.run("uplink_ingress", &rest);
    assert!(v == TC_ACT_OK || v == TC_ACT_REDIRECT);
    let (src, dst, data) = later(&out);
    assert_eq!((src, dst), (ip(CLIENT), ip(WEB)));
    assert_eq!(
        data,
        rest[34..],
        "a later fragment's bytes are payload: untouched"
    );
    // The UDP checksum in the first fragment still covers the whole datagram.
    let mut whole = out_l4(&w.run("uplink_ingress", &first).1);
    whole.extend(&data);
    assert_eq!(
        pseudo_sum(ip(CLIENT).octets(), ip(WEB).octets(), UDP, &whole),
        0
    );

    // A later fragment whose first was never seen (or came second) stays as it is: for the
    // host, as before reassembly.
    let (_, stray) = udp_fragments(CLIENT, 5000, H, 5353, 8);
    let (v, out) = w.run("uplink_ingress", &stray);
    assert_eq!((v, &out[..]), (TC_ACT_OK, &stray[..]));

    // A record older than a reassembly may take belongs to an earlier datagram with the same
    // IP ID: not used. The same record made fresh is.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    let record = |seen| {
        let key = FragKey {
            saddr: raw(ip(CLIENT)),
            daddr: raw(ip(H)),
            ifindex: LO,
            id: u16::from_ne_bytes(11u16.to_be_bytes()),
            proto: UDP,
            _pad: 0,
        };
        let ports = FragPorts {
            sport: u16::from_ne_bytes(5000u16.to_be_bytes()),
            dport: u16::from_ne_bytes(5353u16.to_be_bytes()),
            _pad: 0,
            seen,
        };
        (key, ports)
    };
    let (_, late) = udp_fragments(CLIENT, 5000, H, 5353, 11);
    for (seen, translated) in [
        (now_ns.saturating_sub(2 * FRAG_TTL_NS), false),
        (now_ns, true),
    ] {
        if now_ns < 3 * FRAG_TTL_NS {
            break; // a machine up for less than 90 s cannot date a record that far back
        }
        let (k, p) = record(seen);
        let mut frags: HashMap<_, FragKey, FragPorts> =
            w.ebpf.map_mut(FRAGS).unwrap().try_into().unwrap();
        frags.insert(k, p, 0).unwrap();
        let (v, out) = w.run("uplink_ingress", &late);
        assert!(v == TC_ACT_OK || v == TC_ACT_REDIRECT);
        assert_eq!(
            later(&out).1 == ip(WEB),
            translated,
            "record seen at {seen}"
        );
    }

    // Out through masquerade: the first fragment gets the NAT source port, the later one the
    // same address.
    let (first, rest) = udp_fragments(WEB, 6000, OUT, 53, 9);
    let (v, out) = w.run("uplink_egress", &first);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(&out[26..30], &ip(H).octets());
    let nat_port = u16::from_be_bytes([out[34], out[35]]);
    assert_ne!(nat_port, 6000);
    let (v, out) = w.run("uplink_egress", &rest);
    assert_eq!(v, TC_ACT_OK);
    let (src, dst, data) = later(&out);
    assert_eq!((src, dst), (ip(H), ip(OUT)));
    assert_eq!(data, rest[34..]);
    // A container's later fragment with no first fragment: nothing to translate it with.
    let (_, stray) = udp_fragments(WEB, 6000, OUT, 53, 10);
    let (v, _) = w.run("uplink_egress", &stray);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Fragment), 1);
}

/// The L4 bytes of a packet without IP options.
fn out_l4(p: &[u8]) -> Vec<u8> {
    p[34..].to_vec()
}

#[test]
fn truncated_and_malformed_headers_never_crash_or_translate() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let good = tcp(CLIENT, 40000, H, 8080, SYN);
    // Cut inside the TCP header, inside the IP header, and a bad IP version.
    let cut_tcp = good[..14 + 20 + 10].to_vec();
    let cut_ip = good[..14 + 12].to_vec();
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut ran = 0;
    for pkt in [&cut_tcp, &cut_ip, &bad_version] {
        for prog in [
            "uplink_xdp",
            "uplink_ingress",
            "uplink_egress",
            "from_container",
        ] {
            // Each program alone (uplink_xdp too, whatever the kernel lets it do).
            let Ok((v, out)) = w.run_one(prog, pkt, None) else {
                eprintln!(
                    "{prog}: the kernel refuses to run a {}-byte packet",
                    pkt.len()
                );
                continue;
            };
            ran += 1;
            assert!(
                v == XDP_DROP || v == TC_ACT_SHOT || v == XDP_PASS || v == TC_ACT_OK,
                "{prog}: verdict {v}"
            );
            if v == XDP_PASS || v == TC_ACT_OK {
                assert_eq!(
                    &out[..pkt.len()],
                    &pkt[..],
                    "{prog} changed a malformed packet"
                );
            }
        }
    }
    assert!(ran >= 9, "only {ran} runs");
    assert!(w.drops(DropReason::Malformed) >= 3);
    assert_eq!(w.ct_len(), 0, "no flow from a broken packet");
    // Not IPv4 (ARP): untouched.
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let (v, out) = w.run("uplink_xdp", &arp);
    assert_eq!((v, out), (XDP_PASS, arp));
}

// ---- tracing ----

#[test]
fn events_only_when_asked_and_with_both_tuples() {
    if !root() {
        return;
    }
    use aya::maps::RingBuf;
    use netctl_common::event::*;
    let mut w = World::new(true, false);
    // Nobody tracing: nothing in the ring.
    w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, SYN));
    {
        let mut ring: RingBuf<_> = w.ebpf.map_mut(EVENTS).unwrap().try_into().unwrap();
        assert!(ring.next().is_none(), "an event without a tracer");
    }
    let mut t: Array<_, TraceConfig> = w.ebpf.map_mut(TRACE).unwrap().try_into().unwrap();
    t.set(
        0,
        TraceConfig {
            flags: TRACE_FLOWS | TRACE_DROPS,
            snaplen: 64,
        },
        0,
    )
    .unwrap();
    w.run("uplink_xdp", &tcp(CLIENT, 40001, H, 8080, SYN));
    w.run("from_container", &tcp(WEB, 1000, "10.2.0.3", 80, SYN));
    let mut ring: RingBuf<_> = w.ebpf.map_mut(EVENTS).unwrap().try_into().unwrap();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
    }
    assert_eq!(events.len(), 2, "one flow, one drop");
    let flow = &events[0];
    assert_eq!(
        (flow.kind, flow.code),
        (EV_FLOW_NEW, netctl_common::ct::KIND_DNAT)
    );
    assert_eq!(
        (flow.before.saddr, u16::from_be(flow.before.dport)),
        (raw(ip(CLIENT)), 8080)
    );
    assert_eq!(
        (flow.after.saddr, u16::from_be(flow.after.sport)),
        (raw(ip(WEB)), 80),
        "reply tuple"
    );
    let drop = &events[1];
    assert_eq!(
        (drop.kind, drop.code),
        (EV_DROP, DropReason::Isolation as u8)
    );
    assert_eq!(drop.before.daddr, raw(ip("10.2.0.3")));
}

// ---- ICMP errors obey "no way in" ----

#[test]
fn icmp_errors_reach_a_container_only_for_its_tracked_flows() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Forged: a port unreachable and a frag-needed about nothing, routed to a container.
    let bogus = ipv4(UDP, WEB, OUT, udp_seg(WEB, 5555, OUT, 53, b"q"), 0);
    for (ty, code) in [(3, 3), (3, 4), (11, 0), (12, 0), (4, 0)] {
        let pkt = icmp_error(OUT, WEB, ty, code, &bogus);
        let (v, _) = w.run_one("uplink_xdp", &pkt, None).unwrap();
        assert_eq!(v, XDP_PASS, "XDP hands ICMP errors to TC");
        assert!(!w.xdp_done(), "…unmarked");
        let (v, _) = w.run("uplink_ingress", &pkt);
        assert_eq!(v, TC_ACT_SHOT, "type {ty}");
    }
    assert_eq!(w.drops(DropReason::NoWayIn), 5);
    // Other ICMP (a redirect) to a container: no way in either.
    let mut m = vec![5, 1, 0, 0, 10, 1, 0, 9];
    m.extend(&bogus);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let (v, _) = w.run("uplink_ingress", &eth(ipv4(ICMP, OUT, WEB, m, 0)));
    assert_eq!(v, TC_ACT_SHOT);

    // A real flow of WEB, masqueraded; the error about it comes back to the uplink address.
    let (_, out) = w.run("uplink_egress", &udp(WEB, 5555, OUT, 53));
    let quoted = out[14..].to_vec();
    let (v, out) = w.run("uplink_ingress", &icmp_error(OUT, H, 3, 3, &quoted));
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(&out[30..34], &ip(WEB).octets());
    // The same error sent to another container (A2) instead of the flow's address: forged.
    let (v, _) = w.run("uplink_ingress", &icmp_error(OUT, A2, 3, 3, &quoted));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::NoWayIn), 7);
    // Errors for the host's own flows are the host's business (where NAT64 runs, its program
    // looks at them first and leaves them alone).
    w.with_ipv6();
    let host_quote = ipv4(UDP, H, OUT, udp_seg(H, 4444, OUT, 53, b"q"), 0);
    let pkt = icmp_error(OUT, H, 3, 3, &host_quote);
    assert_eq!(w.run("uplink_ingress", &pkt), (TC_ACT_OK, pkt));
}

#[test]
fn the_quoted_packet_is_restored_byte_for_byte_checksums_included() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // A masqueraded TCP segment, quoted whole by the router that refuses it (Linux quotes up
    // to 576 bytes): translated back, the quote is exactly what the container sent.
    let sent = tcp_full(WEB, 33000, OUT, 443, SYN, 42, 0, b"hello");
    let (_, out) = w.run("uplink_egress", &sent);
    let (v, back) = w.run(
        "uplink_ingress",
        &icmp_error("203.0.113.1", H, 3, 4, &out[14..]),
    );
    assert_eq!(v, TC_ACT_OK);
    let s = check(&back); // outer IP and ICMP checksums
    assert_eq!((s.src, s.dst), (ip("203.0.113.1"), ip(WEB)));
    assert_eq!(
        &back[14 + 20 + 8..],
        &sent[14..],
        "quoted IP and TCP, checksums included"
    );

    // UDP: the quote is 8 bytes of UDP; its checksum is restored as well, and a zero
    // checksum ("none") stays zero.
    let sent = udp(WEB, 5555, OUT, 53);
    let (_, out) = w.run("uplink_egress", &sent);
    let (_, back) = w.run(
        "uplink_ingress",
        &icmp_error(OUT, H, 3, 3, &out[14..14 + 28]),
    );
    check(&back);
    assert_eq!(&back[42..70], &sent[14..42]);
    let mut zero = udp(WEB, 5556, OUT, 53);
    zero[40..42].copy_from_slice(&[0, 0]);
    let (_, out) = w.run("uplink_egress", &zero);
    assert_eq!(
        &out[40..42],
        &[0, 0],
        "masquerade keeps a zero UDP checksum"
    );
    let (_, back) = w.run(
        "uplink_ingress",
        &icmp_error(OUT, H, 3, 3, &out[14..14 + 28]),
    );
    check(&back);
    assert_eq!(&back[42..70], &zero[14..42]);
}

#[test]
fn icmp_errors_of_hairpin_flows_go_back_through_the_hairpin() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let sent = udp(A2, 41000, H, 5353);
    let (v, out) = w.run("from_container", &sent);
    assert_eq!(v, TC_ACT_REDIRECT);
    let s = check(&out);
    assert_eq!((s.src, s.dst, s.dport), (ip(GW_A), ip(WEB), 53));
    // WEB's port is closed: it answers the gateway with a port unreachable.
    let (v, back) = w.run("from_container", &icmp_error(WEB, GW_A, 3, 3, &out[14..]));
    assert_eq!(v, TC_ACT_REDIRECT, "to the client's veth");
    let r = check(&back);
    assert_eq!((r.src, r.dst), (ip(H), ip(A2)));
    assert_eq!(r.dst_mac, [0x02, 0x42, 10, 1, 0, 3]);
    let quote = &back[14 + 20 + 8..];
    assert_eq!(csum(&quote[..20]), 0, "quoted IP checksum");
    assert_eq!(&quote[12..20], &sent[26..34], "quoted addresses: A2 → H");
    assert_eq!(
        &quote[20..28],
        &sent[34..42],
        "quoted ports and UDP checksum"
    );
}

// ---- isolation: internal networks, IPv4 only ----

#[test]
fn an_internal_network_never_reaches_a_published_port() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Its own gateway, on a published port: not hairpinned to web, dropped.
    for pkt in [tcp(I2, 41000, GW_I, 8080, SYN), udp(I2, 41000, GW_I, 5353)] {
        let (v, _) = w.run("from_container", &pkt);
        assert_eq!(v, TC_ACT_SHOT);
    }
    assert_eq!(w.drops(DropReason::Internal), 2);
    assert_eq!(w.ct_len(), 0);
    // Other ports of its gateway (DNS, say) stay reachable.
    let pkt = udp(I2, 41000, GW_I, 53);
    assert_eq!(w.run("from_container", &pkt), (TC_ACT_OK, pkt));
}

#[test]
fn containers_send_ipv4_and_arp_for_their_own_address_only() {
    if !root() {
        return;
    }
    let mut w = World::new(false, false);
    w.with_ipv6();
    // IPv6 from an address that is no container's (these have none: their networks are
    // IPv4 only), link-local included: it would pass ICC-off and isolation rules unseen.
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
    v6.extend([0, 53, 0, 53, 0, 8, 0, 0]);
    let (v, _) = w.run("from_container", &eth_type(0x86dd, v6.clone()));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Spoofed), 1);
    let (v, _) = w.run("from_container", &eth_type(0x88b5, vec![0; 46]));
    assert_eq!(v, TC_ACT_SHOT, "any other EtherType too");
    // The uplink passes the host's own IPv6.
    let pkt = eth_type(0x86dd, v6);
    assert_eq!(w.run("uplink_ingress", &pkt), (TC_ACT_OK, pkt));

    // An ARP request from the MAC `from` (frame and sender field alike, unless `sha` says).
    let arp_as = |from: [u8; 6], sha: [u8; 6], spa: &str, tpa: &str| {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend(sha);
        a.extend(ip(spa).octets());
        a.extend([0; 6]);
        a.extend(ip(tpa).octets());
        eth_frame([0xff; 6], from, 0x0806, a)
    };
    let web_mac = mac_of(ip(WEB).octets());
    let a2_mac = mac_of(ip(A2).octets());
    let arp = |spa: &str, tpa: &str| arp_as(web_mac, web_mac, spa, tpa);
    for pkt in [arp(WEB, GW_A), arp(WEB, A2), arp("0.0.0.0", WEB)] {
        assert_eq!(w.run("from_container", &pkt), (TC_ACT_OK, pkt));
    }
    // Speaking for another container's address (or the gateway's): spoofing.
    for pkt in [arp("10.1.0.77", GW_A), arp(GW_A, A2)] {
        assert_eq!(w.run("from_container", &pkt).0, TC_ACT_SHOT);
    }
    assert_eq!(w.drops(DropReason::Spoofed), 3);
    // Its own address under a neighbour's MAC (ARP, IPv4), or a sender field that is not the
    // frame's source: spoofing too, whatever the bridge would have learned from it.
    let mut ipv4_as_a2 = udp(WEB, 1000, OUT, 53);
    ipv4_as_a2[6..12].copy_from_slice(&a2_mac);
    for pkt in [
        arp_as(a2_mac, a2_mac, WEB, GW_A),
        arp_as(web_mac, a2_mac, WEB, GW_A),
        ipv4_as_a2,
    ] {
        assert_eq!(w.run("from_container", &pkt).0, TC_ACT_SHOT);
    }
    assert_eq!(w.drops(DropReason::Spoofed), 6);
    // A probe (no sender address) names no endpoint to check the MAC against: the bridge,
    // which learns nothing from container ports, is what keeps it harmless.
}

// ---- what XDP hands to TC, and how they agree ----

#[test]
fn xdp_marks_the_packets_it_handled_and_tc_does_the_rest() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    if !w.xdp_nat() {
        // This kernel (or NETCTL_FEATURES_DENY) has no xdp_adjust_meta: XDP passes every
        // packet untouched and unmarked, and TC does all the work.
        let pkt = tcp(CLIENT, 40000, H, 8080, SYN);
        let (v, out) = w.run_one("uplink_xdp", &pkt, None).unwrap();
        assert_eq!((v, out, w.mark), (XDP_PASS, pkt.clone(), None));
        let (_, out) = w.run("uplink_ingress", &pkt);
        assert_eq!(check(&out).dst, ip(WEB));
        return;
    }
    if !w.xdp_meta_visible() {
        eprintln!("skipped: this kernel's XDP test runs do not hand back the metadata area");
        return;
    }
    let (v, out) = w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, SYN));
    assert_eq!(v, XDP_PASS);
    assert!(w.xdp_done(), "translated in XDP: marked");
    assert_eq!(check(&out).dst, ip(WEB));
    // Traffic for the host itself is handled (checked) as well.
    w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 22, SYN));
    assert!(w.xdp_done());
    // IP options, ICMP errors, fragments: left to TC, unmarked and untouched.
    let opts = eth(ipv4_opts(
        UDP,
        CLIENT,
        H,
        udp_seg(CLIENT, 5000, H, 5353, b"query"),
        0,
        &[1, 1, 1, 0], // NOP NOP NOP EOL
    ));
    let frag = eth(ipv4(UDP, CLIENT, WEB, vec![0; 16], 0x0010));
    for pkt in [&opts, &frag] {
        let (v, out) = w.run("uplink_xdp", pkt);
        assert_eq!((v, &out), (XDP_PASS, pkt));
        assert!(!w.xdp_done());
    }
    // TC translates the packet with options (its L4 header 4 bytes further on).
    let (v, out) = w.run("uplink_ingress", &opts);
    assert_eq!(v, TC_ACT_OK);
    let s = check(&out);
    assert_eq!((s.dst, s.dport, s.sport), (ip(WEB), 53, 5000));
    assert_eq!(&out[14 + 24 + 8..], b"query");
    // A non-first fragment for a container: no way in, no flow.
    assert_eq!(w.run("uplink_ingress", &frag).0, TC_ACT_SHOT);
    // Where XDP may not translate (generic XDP, virtual devices), it leaves everything to
    // TC: no metadata, packet untouched.
    w.set_uplink_flags(0);
    let pkt = tcp(CLIENT, 40001, H, 8080, SYN);
    let (v, out) = w.run("uplink_xdp", &pkt);
    assert_eq!((v, out, w.mark), (XDP_PASS, pkt.clone(), None));
    // TC, seeing no mark, does the work (also what happens while XDP is being detached).
    let (_, out) = w.run("uplink_ingress", &pkt);
    assert_eq!(check(&out).dst, ip(WEB));
}

#[test]
fn a_zero_udp_checksum_stays_zero_through_every_translation() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    for (i, prog) in ["uplink_xdp", "uplink_ingress"].into_iter().enumerate() {
        let mut pkt = udp(CLIENT, 5000 + i as u16, H, 5353);
        pkt[40..42].copy_from_slice(&[0, 0]);
        let (_, out) = w.run(prog, &pkt);
        assert_eq!(check(&out).dst, ip(WEB), "{prog}");
        assert_eq!(&out[40..42], &[0, 0], "{prog}");
        let mut reply = udp(WEB, 53, CLIENT, 5000 + i as u16);
        reply[40..42].copy_from_slice(&[0, 0]);
        let (_, out) = w.run("uplink_egress", &reply);
        assert_eq!(check(&out).src, ip(H));
        assert_eq!(&out[40..42], &[0, 0]);
    }
}

// ---- TTL on the paths the datapath routes itself ----

#[test]
fn redirects_decrement_the_ttl_and_leave_expiring_packets_to_the_host() {
    if !root() {
        return;
    }
    let mut w = World::new(true, true);
    let (v, out) = w.run("uplink_ingress", &tcp(CLIENT, 40000, H, 8080, SYN));
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(check(&out).ttl, 63);
    // TTL 1: not redirected; the host routes it and sends the time-exceeded itself.
    let (v, out) = w.run(
        "uplink_ingress",
        &with_ttl(tcp(CLIENT, 40001, H, 8080, SYN), 1),
    );
    assert_eq!(v, TC_ACT_OK);
    let s = check(&out);
    assert_eq!((s.dst, s.ttl), (ip(WEB), 1));
    // Hairpin: decremented; expiring → dropped (the host cannot route it back).
    let (v, out) = w.run("from_container", &tcp(A2, 41000, H, 8080, SYN));
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(check(&out).ttl, 63);
    let (v, _) = w.run("from_container", &with_ttl(tcp(A2, 41001, H, 8080, SYN), 1));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::TtlExceeded), 1);
}

// ---- the host is no open router ----

#[test]
fn forwarded_traffic_that_is_no_containers_is_dropped_unless_forwarding_was_on_before() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // This namespace routes 198.18.0.0/24 through another interface, forwarding on.
    ip_cmd("link set lo up");
    ip_cmd("link add d0 type veth peer name d1");
    ip_cmd("addr add 198.18.0.1/24 dev d0");
    ip_cmd("link set d0 up");
    ip_cmd("link set d1 up");
    std::fs::write("/proc/sys/net/ipv4/conf/all/forwarding", "1").unwrap();
    let through = tcp(CLIENT, 40000, "198.18.0.7", 80, SYN);
    for prog in ["uplink_xdp", "uplink_ingress"] {
        let (v, _) = w.run(prog, &through);
        assert!(v == XDP_DROP || v == TC_ACT_SHOT, "{prog}");
    }
    assert_eq!(w.drops(DropReason::ForwardDenied), 2);
    // Leaving: forwarded from another interface (d0), no container's, no flow: dropped. The
    // host's own traffic (no input interface) and containers' pass.
    let out = udp("198.18.0.7", 5000, OUT, 53);
    let mut denied = 2;
    if let Some((v, _)) = w.run_forwarded("uplink_egress", &out, 3) {
        assert_eq!(v, TC_ACT_SHOT);
        denied += 1;
    }
    assert_eq!(w.run("uplink_egress", &udp(H, 5000, OUT, 53)).0, TC_ACT_OK);
    if let Some((v, _)) = w.run_forwarded("uplink_egress", &udp(WEB, 5000, OUT, 53), 3) {
        assert_eq!(v, TC_ACT_OK);
    }
    // Local, multicast and broadcast destinations are not forwarded.
    for dst in [H, "224.0.0.251", "255.255.255.255"] {
        assert_eq!(
            w.run("uplink_ingress", &udp(CLIENT, 5000, dst, 5000)).0,
            TC_ACT_OK,
            "{dst}"
        );
    }
    assert_eq!(w.drops(DropReason::ForwardDenied), denied);
    // A host that forwarded before netctl came keeps doing so.
    w.set_config(CONFIG_FORWARD_OPEN, 61000, 65535);
    assert_eq!(w.run("uplink_ingress", &through).0, TC_ACT_OK);
    if let Some((v, _)) = w.run_forwarded("uplink_egress", &out, 3) {
        assert_eq!(v, TC_ACT_OK);
    }
}

// ---- IPv6 of dual-stack networks ----

const WEB6: &str = "fd01::2";
const A26: &str = "fd01::3";
const GW6_A: &str = "fd01::1";
const B36: &str = "fd02::3";

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// Networks A and B with IPv6: subnets, gateways (host addresses), and WEB, A2 and B3 with an
/// IPv6 address each (and WEB its link-local one).
fn dual_stack(w: &mut World) {
    use aya::maps::lpm_trie::{Key, LpmTrie};
    use netctl_common::maps::{EndpointInfo, NetInfo};
    w.with_ipv6();
    let mut nets: HashMap<_, u32, NetInfo> = w
        .ebpf
        .map_mut(netctl_common::maps::NETWORKS)
        .unwrap()
        .try_into()
        .unwrap();
    for (br, gw6) in [(BRIDGE_A, GW6_A), (BRIDGE_B, "fd02::1")] {
        let mut n = nets.get(&br, 0).unwrap();
        n.gateway6 = ip6(gw6);
        nets.insert(br, n, 0).unwrap();
    }
    let mut subnets: LpmTrie<_, [u8; 16], u32> = w
        .ebpf
        .map_mut(netctl_common::maps::SUBNETS6)
        .unwrap()
        .try_into()
        .unwrap();
    for (net, br) in [("fd01::", BRIDGE_A), ("fd02::", BRIDGE_B)] {
        subnets.insert(&Key::new(64, ip6(net)), br, 0).unwrap();
    }
    let mut host: HashMap<_, [u8; 16], u32> = w
        .ebpf
        .map_mut(netctl_common::maps::HOST_ADDRS6)
        .unwrap()
        .try_into()
        .unwrap();
    for a in [GW6_A, "fd02::1"] {
        host.insert(ip6(a), 1, 0).unwrap();
    }
    let mut eps: HashMap<_, [u8; 16], EndpointInfo> = w
        .ebpf
        .map_mut(netctl_common::maps::ENDPOINTS6)
        .unwrap()
        .try_into()
        .unwrap();
    let web_ll = netctl::model::ipam6::link_local(mac_of(ip(WEB).octets())).octets();
    for (a6, a4, br) in [
        (ip6(WEB6), WEB, BRIDGE_A),
        (web_ll, WEB, BRIDGE_A),
        (ip6(A26), A2, BRIDGE_A),
        (ip6(B36), B3, BRIDGE_B),
    ] {
        let info = EndpointInfo {
            ifindex: LO,
            network: br,
            mac: mac_of(ip(a4).octets()),
            _pad: [0; 2],
        };
        eps.insert(a6, info, 0).unwrap();
    }
    // The veth every test endpoint sits on, as a container without an address yet sees it.
    let mut veths: HashMap<_, u32, EndpointInfo> = w
        .ebpf
        .map_mut(netctl_common::maps::VETHS)
        .unwrap()
        .try_into()
        .unwrap();
    let fresh = EndpointInfo {
        ifindex: LO,
        network: BRIDGE_A,
        mac: FRESH_MAC,
        _pad: [0; 2],
    };
    veths.insert(LO, fresh, 0).unwrap();
}

/// The MAC of a container whose addresses the maps do not have yet.
const FRESH_MAC: [u8; 6] = [0x02, 0x42, 10, 1, 0, 99];

/// An IPv6 frame from `mac` to `dst_mac`: header (hop limit 64 unless ND), `ext` headers, then
/// the upper layer `proto` with `l4`.
fn v6(mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, next: u8, l4: Vec<u8>) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend((l4.len() as u16).to_be_bytes());
    p.extend([next, 255]);
    p.extend(ip6(src));
    p.extend(ip6(dst));
    p.extend(l4);
    eth_frame(dst_mac, mac, 0x86dd, p)
}

#[test]
fn ipv6_follows_the_isolation_rules_and_neighbour_discovery_speaks_for_itself() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    dual_stack(&mut w);
    let web = mac_of(ip(WEB).octets());
    let tcp = |dport: u16| {
        let mut t = vec![0x9c, 0x40];
        t.extend(dport.to_be_bytes());
        t.extend([0; 16]);
        t
    };
    let ok = |w: &mut World, pkt: Vec<u8>| assert_eq!(w.run("from_container", &pkt).0, TC_ACT_OK);
    let shot = |w: &mut World, pkt: Vec<u8>, reason: DropReason, n: u64| {
        assert_eq!(w.run("from_container", &pkt).0, TC_ACT_SHOT);
        assert_eq!(w.drops(reason), n, "{reason:?}");
    };
    // Its own network, its gateway, neighbour discovery: through.
    ok(&mut w, v6(web, BRIDGE_MAC, WEB6, A26, 6, tcp(80)));
    ok(&mut w, v6(web, BRIDGE_MAC, WEB6, GW6_A, 6, tcp(80)));
    let ns = |target: &str, lladdr: [u8; 6]| {
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend(ip6(target));
        m.extend([1, 1]);
        m.extend(lladdr);
        m
    };
    ok(
        &mut w,
        v6(
            web,
            [0x33, 0x33, 0xff, 0, 0, 1],
            WEB6,
            "ff02::1:ff00:1",
            58,
            ns(GW6_A, web),
        ),
    );
    let na = |target: &str| {
        let mut m = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        m.extend(ip6(target));
        m.extend([2, 1]);
        m.extend(web);
        m
    };
    ok(&mut w, v6(web, BRIDGE_MAC, WEB6, GW6_A, 58, na(WEB6)));
    // Another network; beyond the host.
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, B36, 6, tcp(80)),
        DropReason::Isolation,
        1,
    );
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, "2001:db8::1", 6, tcp(80)),
        DropReason::Ipv6Unrouted,
        1,
    );
    // A neighbour's address as source, or under a neighbour's MAC; advertising a neighbour's
    // address, or soliciting with a neighbour's MAC as its own.
    let a2 = mac_of(ip(A2).octets());
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, A26, GW6_A, 6, tcp(80)),
        DropReason::Spoofed,
        1,
    );
    shot(
        &mut w,
        v6(a2, BRIDGE_MAC, WEB6, GW6_A, 6, tcp(80)),
        DropReason::Spoofed,
        2,
    );
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, GW6_A, 58, na(A26)),
        DropReason::Spoofed,
        3,
    );
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, "ff02::1:ff00:1", 58, ns(GW6_A, a2)),
        DropReason::Spoofed,
        4,
    );
    // A listener report an interface sends as IPv6 comes up, from the link-local address of
    // its MAC, before its endpoint is in the maps: through; from any other address: spoofed.
    let fresh = FRESH_MAC;
    let fresh_ll = netctl::model::ipam6::link_local(fresh).to_string();
    let mut mld = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0xff, 2, 0, 0];
    mld.extend([0; 12]);
    let to_routers = [0x33, 0x33, 0, 0, 0, 0x16];
    ok(
        &mut w,
        v6(fresh, to_routers, &fresh_ll, "ff02::16", 58, mld.clone()),
    );
    let web_ll = netctl::model::ipam6::link_local(web).to_string();
    shot(
        &mut w,
        v6(fresh, to_routers, &web_ll, "ff02::16", 58, mld),
        DropReason::Spoofed,
        5,
    );
    // A router: advertisements, redirects, a routing header with a segment left.
    let ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, "ff02::1", 58, ra),
        DropReason::Ipv6Router,
        1,
    );
    let mut rh = vec![6, 2, 0, 1, 0, 0, 0, 0];
    rh.extend(ip6(B36));
    rh.extend(tcp(80));
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, GW6_A, 43, rh),
        DropReason::Ipv6Router,
        2,
    );
    // Neighbour discovery in a fragment (RFC 6980), or behind more extension headers than
    // the parse looks through (a fragment header there would hide what follows).
    let mut frag_na = vec![58, 0, 0, 0, 0, 0, 0, 1];
    frag_na.extend(na(WEB6));
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, GW6_A, 44, frag_na),
        DropReason::Malformed,
        1,
    );
    let mut deep = Vec::new();
    for next in [60, 60, 60, 44] {
        deep.extend([next, 0, 1, 4, 0, 0, 0, 0]);
    }
    deep.extend([58, 0, 0, 0, 0, 0, 0, 1]);
    deep.extend([134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    shot(
        &mut w,
        v6(web, BRIDGE_MAC, WEB6, "ff02::1", 60, deep),
        DropReason::Malformed,
        2,
    );
    // to_container: a neighbour through its own veth and the host itself come in; another
    // network's container does not, nor a packet routed in that claims a container's or
    // the host's address (it came by another interface).
    let to = |w: &mut World, pkt: Vec<u8>| w.run("to_container", &pkt).0;
    assert_eq!(
        to(&mut w, v6(BRIDGE_MAC, a2, GW6_A, A26, 6, tcp(80))),
        TC_ACT_OK
    );
    assert_eq!(
        to(&mut w, v6(BRIDGE_MAC, a2, B36, A26, 6, tcp(80))),
        TC_ACT_SHOT
    );
    assert_eq!(
        to(&mut w, v6(BRIDGE_MAC, a2, "2001:db8::1", A26, 6, tcp(80))),
        TC_ACT_SHOT
    );
    assert_eq!(
        w.drops(DropReason::Spoofed),
        6,
        "a container's address, not by its veth"
    );
    assert_eq!(w.drops(DropReason::NoWayIn), 1);
    // By the sender's veth (where the kernel's test runs can say which interface it was).
    if let Some((v, _)) = w.run_forwarded("to_container", &v6(web, a2, WEB6, A26, 6, tcp(80)), LO) {
        assert_eq!(v, TC_ACT_OK);
        let routed_in = v6(BRIDGE_MAC, a2, GW6_A, A26, 6, tcp(80));
        assert_eq!(
            w.run_forwarded("to_container", &routed_in, 42).unwrap().0,
            TC_ACT_SHOT
        );
        assert_eq!(w.drops(DropReason::NoWayIn), 2);
    }
}
