//! The eBPF programs on crafted packets (BPF_PROG_TEST_RUN through aya's TestRun): verdicts,
//! the exact rewritten bytes, and checksums recomputed from scratch in Rust. Each test loads
//! its own unpinned copy of the object, so maps are private. Needs root; skips otherwise.

use std::net::Ipv4Addr;

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use netctl::dataplane::{load::load_unpinned, maps::raw};
use netctl_common::{
    ct::{CtEntry, CtKey},
    drop::DropReason,
    maps::*,
    stats::{Counters, Hook},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// Loopback: BPF_PROG_TEST_RUN's skb device when none is given.
const LO: u32 = 1;
const BRIDGE_A: u32 = 100;
const BRIDGE_B: u32 = 200;
const BRIDGE_I: u32 = 300;
const BRIDGE_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

// The world of these tests: host H on the uplink, network A (10.1.0.0/24, masquerade),
// network B (10.2.0.0/24), internal network I (10.3.0.0/24); web 10.1.0.2 publishes 8080→80.
const H: &str = "192.0.2.10";
const CLIENT: &str = "198.51.100.7";
const OUT: &str = "203.0.113.5";
const WEB: &str = "10.1.0.2";
const A2: &str = "10.1.0.3";
const GW_A: &str = "10.1.0.1";

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
    }
    ok
}

struct World {
    ebpf: Ebpf,
}

impl World {
    fn new(icc: bool, fast_path: bool) -> Self {
        let mut ebpf = load_unpinned().unwrap();
        for name in ["uplink_ingress", "uplink_egress", "from_container"] {
            let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            p.load().unwrap();
        }
        let p: &mut Xdp = ebpf.program_mut("uplink_xdp").unwrap().try_into().unwrap();
        p.load().unwrap();
        let mut w = World { ebpf };
        let mut cfg: Array<_, Config> = w.ebpf.map_mut(CONFIG).unwrap().try_into().unwrap();
        cfg.set(
            0,
            Config {
                flags: if fast_path { CONFIG_FAST_PATH } else { 0 },
                nat_port_min: 61000,
                nat_port_max: 65535,
            },
            0,
        )
        .unwrap();
        let mut host: HashMap<_, u32, u32> =
            w.ebpf.map_mut(HOST_ADDRS).unwrap().try_into().unwrap();
        for a in [H, GW_A, "10.2.0.1", "10.3.0.1"] {
            host.insert(raw(ip(a)), 1, 0).unwrap();
        }
        let mut up: HashMap<_, u32, Uplink> = w.ebpf.map_mut(UPLINKS).unwrap().try_into().unwrap();
        up.insert(
            LO,
            Uplink {
                addr: raw(ip(H)),
                flags: 0,
            },
            0,
        )
        .unwrap();
        let mut nets: HashMap<_, u32, NetInfo> =
            w.ebpf.map_mut(NETWORKS).unwrap().try_into().unwrap();
        let icc_flag = if icc { NET_ICC } else { 0 };
        for (br, gw, flags) in [
            (BRIDGE_A, GW_A, NET_MASQUERADE | icc_flag),
            (BRIDGE_B, "10.2.0.1", NET_MASQUERADE | NET_ICC),
            (BRIDGE_I, "10.3.0.1", NET_INTERNAL | NET_ICC),
        ] {
            nets.insert(
                br,
                NetInfo {
                    gateway: raw(ip(gw)),
                    flags,
                    mac: BRIDGE_MAC,
                    _pad: [0; 2],
                },
                0,
            )
            .unwrap();
        }
        let mut subnets: LpmTrie<_, u32, u32> =
            w.ebpf.map_mut(SUBNETS).unwrap().try_into().unwrap();
        for (net, br) in [
            ("10.1.0.0", BRIDGE_A),
            ("10.2.0.0", BRIDGE_B),
            ("10.3.0.0", BRIDGE_I),
        ] {
            subnets.insert(&Key::new(24, raw(ip(net))), br, 0).unwrap();
        }
        // Every endpoint sits on "lo" so from_container's anti-spoofing check passes in tests.
        let mut eps: HashMap<_, u32, EndpointInfo> =
            w.ebpf.map_mut(ENDPOINTS).unwrap().try_into().unwrap();
        for (addr, br) in [
            (WEB, BRIDGE_A),
            (A2, BRIDGE_A),
            ("10.2.0.3", BRIDGE_B),
            ("10.3.0.2", BRIDGE_I),
        ] {
            eps.insert(
                raw(ip(addr)),
                EndpointInfo {
                    ifindex: LO,
                    network: br,
                },
                0,
            )
            .unwrap();
        }
        let mut pm: HashMap<_, PortKey, Backend> =
            w.ebpf.map_mut(PORTMAP).unwrap().try_into().unwrap();
        pm.insert(
            PortKey {
                addr: 0,
                port: 8080u16.to_be(),
                proto: 6,
                _pad: 0,
            },
            Backend {
                addr: raw(ip(WEB)),
                port: 80u16.to_be(),
                _pad: 0,
            },
            0,
        )
        .unwrap();
        pm.insert(
            PortKey {
                addr: 0,
                port: 5353u16.to_be(),
                proto: 17,
                _pad: 0,
            },
            Backend {
                addr: raw(ip(WEB)),
                port: 53u16.to_be(),
                _pad: 0,
            },
            0,
        )
        .unwrap();
        w
    }

    fn run(&mut self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(prog, pkt)
            .unwrap_or_else(|e| panic!("{prog}: {e}"))
    }

    /// BPF_PROG_TEST_RUN refuses some inputs itself (EINVAL), e.g. an skb whose IPv4 header is
    /// cut: the kernel never hands such packets to the program either.
    fn try_run(
        &mut self,
        prog: &str,
        pkt: &[u8],
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let mut out = vec![0u8; pkt.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let res = if prog == "uplink_xdp" {
            let p: &mut Xdp = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
            p.test_run(opts)?
        } else {
            let p: &mut SchedClassifier = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
            p.test_run(opts)?
        };
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }

    fn drops(&mut self, reason: DropReason) -> u64 {
        let m: PerCpuArray<_, u64> = self.ebpf.map_mut(DROP_STATS).unwrap().try_into().unwrap();
        m.get(&(reason as u32), 0).unwrap().iter().sum()
    }

    fn hook_packets(&mut self, hook: Hook) -> u64 {
        let m: PerCpuArray<_, Counters> =
            self.ebpf.map_mut(HOOK_STATS).unwrap().try_into().unwrap();
        m.get(&(hook as u32), 0)
            .unwrap()
            .iter()
            .map(|c| c.packets)
            .sum()
    }

    fn ct_len(&mut self) -> usize {
        let m: HashMap<_, CtKey, CtEntry> = self.ebpf.map_mut(CT).unwrap().try_into().unwrap();
        m.keys().count()
    }
}

// ---- packet building and checking ----

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

fn csum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(payload: Vec<u8>) -> Vec<u8> {
    let mut p = vec![0x02, 0x42, 0, 0, 0, 9, 0x02, 0x42, 0, 0, 0, 8, 0x08, 0x00];
    p.extend(payload);
    p
}

fn ipv4(proto: u8, src: &str, dst: &str, l4: Vec<u8>, frag: u16) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h.extend(ip(src).octets());
    h.extend(ip(dst).octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(l4);
    h
}

fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
    let mut b = Vec::new();
    b.extend(src);
    b.extend(dst);
    b.extend([0, proto]);
    b.extend((seg.len() as u16).to_be_bytes());
    b.extend(seg);
    csum(&b)
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend(b"GET / HTTP/1.0\r\n\r\n");
    let c = pseudo_sum(ip(src).octets(), ip(dst).octets(), TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    eth(ipv4(TCP, src, dst, t, 0))
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u.extend(b"query");
    let len = u.len() as u16;
    u[4..6].copy_from_slice(&len.to_be_bytes());
    let c = pseudo_sum(ip(src).octets(), ip(dst).octets(), UDP, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    eth(ipv4(UDP, src, dst, u, 0))
}

fn icmp_echo(src: &str, dst: &str, ty: u8, id: u16) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend(id.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    m.extend(b"pingdata");
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    eth(ipv4(ICMP, src, dst, m, 0))
}

/// The parsed view of an output packet, with every checksum verified from scratch.
#[derive(Debug)]
struct Seen {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
}

fn check(p: &[u8]) -> Seen {
    let iph = &p[14..34];
    assert_eq!(csum(iph), 0, "IPv4 header checksum");
    let proto = iph[9];
    let src: [u8; 4] = iph[12..16].try_into().unwrap();
    let dst: [u8; 4] = iph[16..20].try_into().unwrap();
    let l4 = &p[34..];
    let (sport, dport) = match proto {
        TCP | UDP => {
            assert_eq!(pseudo_sum(src, dst, proto, l4), 0, "L4 checksum");
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        }
        _ => {
            assert_eq!(csum(l4), 0, "ICMP checksum");
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
    };
    Seen {
        src: src.into(),
        dst: dst.into(),
        sport,
        dport,
        dst_mac: p[0..6].try_into().unwrap(),
        src_mac: p[6..12].try_into().unwrap(),
    }
}

// ---- published ports ----

#[test]
fn dnat_in_xdp_and_reverse_on_egress() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, out) = w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, 0x02));
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
    let (v, out) = w.run("uplink_egress", &tcp(WEB, 80, CLIENT, 40000, 0x12));
    assert_eq!(v, TC_ACT_OK);
    let s = check(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ip(H), 8080, ip(CLIENT), 40000)
    );

    // Later packets of the flow use the entry (same translation).
    let (_, out) = w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, 0x10));
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
    let (v, out) = w.run("uplink_ingress", &tcp(CLIENT, 40001, H, 8080, 0x02));
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
    let pkt = tcp(CLIENT, 40000, H, 22, 0x02);
    let (v, out) = w.run("uplink_xdp", &pkt);
    assert_eq!((v, &out[..]), (XDP_PASS, &pkt[..]));
    let (v, out) = w.run("uplink_ingress", &pkt);
    assert_eq!((v, &out[..]), (TC_ACT_OK, &pkt[..]));
    assert_eq!(w.ct_len(), 0);
    // A published port only answers on host addresses: not for a routed destination.
    let pkt = tcp(CLIENT, 40000, "192.0.2.99", 8080, 0x02);
    let (v, out) = w.run("uplink_xdp", &pkt);
    assert_eq!((v, &out[..]), (XDP_PASS, &pkt[..]));
}

#[test]
fn no_way_in_to_container_addresses() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, _) = w.run("uplink_xdp", &tcp(CLIENT, 40000, WEB, 80, 0x02));
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

    let (_, out) = w.run("uplink_egress", &tcp(WEB, 33000, OUT, 443, 0x02));
    let s = check(&out);
    assert_eq!(s.src, ip(H));
    let (_, out) = w.run("uplink_ingress", &tcp(OUT, 443, H, s.sport, 0x12));
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
    let (v, _) = w.run("from_container", &tcp(WEB, 1000, "10.2.0.3", 80, 0x02));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Isolation), 1);
    // Same network, ICC off: dropped; its gateway and the outside stay reachable.
    let (v, _) = w.run("from_container", &tcp(WEB, 1000, A2, 80, 0x02));
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
    assert_eq!(w.drops(DropReason::Internal), 2);
    // A source address that is not the sender's.
    let (v, _) = w.run("from_container", &udp("10.1.0.77", 1000, OUT, 53));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Spoofed), 1);
    assert_eq!(w.hook_packets(Hook::FromContainer), 8);
}

#[test]
fn icc_on_lets_a_network_talk() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let pkt = tcp(WEB, 1000, A2, 80, 0x02);
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
    let syn = tcp(WEB, 40000, A2, 5432, 0x02);
    let (v, out) = w.run("from_container", &syn);
    assert_eq!((v, &out[..]), (TC_ACT_OK, &syn[..]), "untouched, allowed");
    let (v, _) = w.run("from_container", &tcp(A2, 5432, WEB, 40000, 0x12));
    assert_eq!(v, TC_ACT_OK, "the reply");
    // Nothing else: another port, the other direction, UDP on the same port.
    let (v, _) = w.run("from_container", &tcp(WEB, 40000, A2, 80, 0x02));
    assert_eq!(v, TC_ACT_SHOT);
    let (v, _) = w.run("from_container", &tcp(A2, 40000, WEB, 5432, 0x02));
    assert_eq!(v, TC_ACT_SHOT);
    let (v, _) = w.run("from_container", &udp(WEB, 40000, A2, 5432));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::IccOff), 3);
}

// ---- hairpin ----

#[test]
fn hairpin_translates_both_ends_and_redirects() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (v, out) = w.run("from_container", &tcp(A2, 41000, H, 8080, 0x02));
    assert_eq!(v, TC_ACT_REDIRECT);
    let s = check(&out);
    assert_eq!((s.src, s.dst, s.dport), (ip(GW_A), ip(WEB), 80));
    assert_eq!(s.dst_mac, [0x02, 0x42, 10, 1, 0, 2]);
    let gw_port = s.sport;
    let (v, out) = w.run("from_container", &tcp(WEB, 80, GW_A, gw_port, 0x12));
    assert_eq!(v, TC_ACT_REDIRECT);
    let r = check(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip(H), 8080, ip(A2), 41000)
    );
    assert_eq!(r.dst_mac, [0x02, 0x42, 10, 1, 0, 3]);
}

// ---- what is never translated ----

#[test]
fn fragments_are_never_translated() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // A first fragment (MF set) to a published port passes as it is.
    let mut u = vec![0u8; 16];
    u[0..2].copy_from_slice(&5000u16.to_be_bytes());
    u[2..4].copy_from_slice(&5353u16.to_be_bytes());
    let pkt = eth(ipv4(UDP, CLIENT, H, u.clone(), 0x2000));
    for prog in ["uplink_xdp", "uplink_ingress"] {
        let (v, out) = w.run(prog, &pkt);
        assert!(v == XDP_PASS || v == TC_ACT_OK, "{prog}");
        assert_eq!(out, pkt, "{prog} must not rewrite a fragment");
    }
    // A container's fragment cannot be masqueraded: dropped, counted.
    let pkt = eth(ipv4(UDP, WEB, OUT, u, 0x2000));
    let (v, _) = w.run("uplink_egress", &pkt);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::Fragment), 1);
    assert_eq!(w.ct_len(), 0);
}

#[test]
fn truncated_and_malformed_headers_never_crash_or_translate() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let good = tcp(CLIENT, 40000, H, 8080, 0x02);
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
            let Ok((v, out)) = w.try_run(prog, pkt) else {
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
    w.run("uplink_xdp", &tcp(CLIENT, 40000, H, 8080, 0x02));
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
    w.run("uplink_xdp", &tcp(CLIENT, 40001, H, 8080, 0x02));
    w.run("from_container", &tcp(WEB, 1000, "10.2.0.3", 80, 0x02));
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
