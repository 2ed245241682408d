//! ICMPv4 errors about NAT64 flows — a server's port unreachable, a router's time exceeded
//! or fragmentation needed — made the ICMPv6 errors RFC 7915 (4.2) maps them to, for the
//! container whose packet they quote. The quote keeps the 8 bytes of its L4 header that
//! every ICMPv4 error carries (its ports back to the container's), which is all a socket
//! needs to find its connection.

use netctl_common::{ct::CtKey6, drop::DropReason, maps::NAT64_PREFIX, proto};

use crate::{
    ct,
    maps::{self, config},
    nat64::ICMPV6_ECHO_REQUEST,
    packet::{checksum_of, Packet, Tc},
    parse::{parse_inner, Hdr, Inner, ETH_LEN, ETH_P_IPV6, ICMP_ECHO, IPV4_LEN, IPV6_LEN},
    redirect,
    room::{scratch6 as scratch, Msg6},
    step,
};

/// The ICMPv6 error: its header, the quoted IPv6 header, the quoted 8 bytes.
const MSG_LEN: usize = 8 + IPV6_LEN + 8;
/// IPv6's minimum MTU: no packet too big message says less.
const MIN_MTU6: u32 = 1280;

/// The NAT64 flow an ICMPv4 error quotes a packet of: its reply tuple (the quoted packet
/// left as host:NAT port → server; the reply comes back the other way).
#[inline(always)]
fn flow_key(inner: &Inner) -> CtKey6 {
    CtKey6 {
        saddr: ct::mapped(inner.daddr),
        daddr: ct::mapped(inner.saddr),
        sport: inner.dport,
        dport: inner.sport,
        proto: inner.proto,
        _pad: [0; 3],
    }
}

/// The ICMPv6 type, code and 4-byte field for an ICMPv4 error's (RFC 7915 4.2); None for
/// those it drops (parameter problems among them: their pointer would need mapping too).
#[inline(always)]
fn mapped_error(kind: u8, code: u8, rest: [u8; 4]) -> Option<(u8, u8, [u8; 4])> {
    match (kind, code) {
        // Port unreachable.
        (3, 3) => Some((1, 4, [0; 4])),
        // Protocol unreachable: a parameter problem at the next header field.
        (3, 2) => Some((4, 1, 6u32.to_be_bytes())),
        // Fragmentation needed: packet too big, with room for IPv6's larger header.
        (3, 4) => {
            let mtu = u32::from(u16::from_be_bytes([rest[2], rest[3]])) + 20;
            Some((2, 0, mtu.max(MIN_MTU6).to_be_bytes()))
        }
        // Administratively prohibited, precedence cut-off.
        (3, 9 | 10 | 13 | 15) => Some((1, 1, [0; 4])),
        // Host precedence violation: dropped.
        (3, 14) => None,
        // Any other unreachable: no route.
        (3, 0..=12) => Some((1, 0, [0; 4])),
        // Time exceeded, in transit or in reassembly.
        (11, 0 | 1) => Some((3, code, [0; 4])),
        _ => None,
    }
}

/// `uplink_ingress64`'s path for an ICMPv4 error to a host address (`uplink_ingress` hands
/// over every one it has no IPv4 flow for: checking here keeps that program's stack small).
/// One that quotes a packet of a NAT64 flow is rebuilt as the ICMPv6 error from
/// 64:ff9b::<its sender> to the flow's container, quoting the packet as the container sent
/// it, and handed to that container; any other goes on to the host ([`step::PASS`]).
#[inline(never)]
pub fn error(p: &mut Tc, h: &Hdr) -> i64 {
    step::run(|answer| error_step(p, h, answer))
}

#[inline(always)]
fn error_step(p: &mut Tc, h: &Hdr, answer: &mut i64) -> Result<(), DropReason> {
    let malformed = DropReason::Malformed;
    let cfg = config();
    let inner = match parse_inner(p, h) {
        Some(i) if !h.frag && i.saddr == h.daddr => i,
        _ => return step::done(answer, step::PASS),
    };
    let nat_port = (cfg.nat_port_min..=cfg.nat_port_max).contains(&u16::from_be(inner.sport));
    // The flow's reply entry: 64:ff9b::server, the container and its port.
    let Some(f) = nat_port.then(|| ct::find(&flow_key(&inner))).flatten() else {
        return step::done(answer, step::PASS);
    };
    // Options on either header are not translated (as for NAT64's other packets).
    if h.l4 != ETH_LEN + IPV4_LEN || inner.l4 != inner.l3 + IPV4_LEN {
        return Err(DropReason::UnsupportedProtocol);
    }
    // SAFETY: map value pointer, valid for this program run.
    let e = unsafe { &*f.e };
    let (server, client, client_port) = (e.src_addr, e.dst_addr, e.dst_port);
    let ep = maps::endpoint6(&client).ok_or(DropReason::CtMiss)?;
    let net = maps::network(ep.network).ok_or(DropReason::CtMiss)?;

    let icmp: [u8; 8] = p.load(h.l4).ok_or(malformed)?;
    let (kind, code, rest) = mapped_error(icmp[0], icmp[1], [icmp[4], icmp[5], icmp[6], icmp[7]])
        .ok_or(DropReason::UnsupportedProtocol)?;
    let tos: u8 = p.load(ETH_LEN + 1).ok_or(malformed)?;
    let ttl: u8 = p.load(ETH_LEN + 8).ok_or(malformed)?;
    if ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let quoted: [u8; 12] = p.load(inner.l3).ok_or(malformed)?;
    let mut l4: [u8; 8] = p.load(inner.l4).ok_or(malformed)?;
    let (next, sport_at) = match inner.proto {
        proto::ICMP => {
            if l4[0] != ICMP_ECHO {
                return Err(DropReason::UnsupportedProtocol);
            }
            l4[0] = ICMPV6_ECHO_REQUEST;
            (proto::ICMPV6, 4)
        }
        other => (other, 0),
    };
    // The quoted source port (an echo's identifier) was the NAT port: the container's again.
    let port = client_port.to_ne_bytes();
    l4[sport_at] = port[0];
    l4[sport_at + 1] = port[1];
    let (in_tos, in_ttl) = (quoted[1], quoted[8]);
    let in_len = u16::from_be_bytes([quoted[2], quoted[3]]).saturating_sub(IPV4_LEN as u16);
    let pl = in_len.to_be_bytes();
    // Built in per-CPU room: the stack has none to spare under `uplink_ingress64`.
    let m = &mut scratch()?.error6;
    m.src[..12].copy_from_slice(&NAT64_PREFIX);
    m.src[12..].copy_from_slice(&h.saddr.to_ne_bytes());
    m.dst = client;
    m.len = (MSG_LEN as u32).to_be();
    m.next = u32::from(proto::ICMPV6).to_be();
    m.msg = Msg6 {
        kind,
        code,
        csum: 0,
        rest,
        head: [
            0x60 | in_tos >> 4,
            in_tos << 4,
            0,
            0,
            pl[0],
            pl[1],
            next,
            in_ttl,
        ],
        src: client,
        dst: server,
        l4,
    };
    m.msg.csum = checksum_of(m).ok_or(DropReason::RewriteFailed)?;

    let fail = DropReason::RewriteFailed;
    p.0.change_proto(ETH_P_IPV6.to_be(), 0).map_err(|_| fail)?;
    let len = (ETH_LEN + IPV6_LEN + MSG_LEN) as u32;
    // SAFETY: helper call on the program's skb.
    if unsafe { aya_ebpf::helpers::bpf_skb_change_tail(p.0.skb.skb, len, 0) } != 0 {
        return Err(fail);
    }
    let ml = (MSG_LEN as u16).to_be_bytes();
    let head: [u8; 8] = [
        0x60 | tos >> 4,
        tos << 4,
        0,
        0,
        ml[0],
        ml[1],
        proto::ICMPV6,
        ttl - 1,
    ];
    p.0.store(ETH_LEN, &head, 0).map_err(|_| fail)?;
    p.0.store(ETH_LEN + 8, &m.src, 0).map_err(|_| fail)?;
    p.0.store(ETH_LEN + 24, &m.dst, 0).map_err(|_| fail)?;
    p.0.store(ETH_LEN + IPV6_LEN, &m.msg, 0).map_err(|_| fail)?;
    p.store16(12, ETH_P_IPV6.to_be()).ok_or(fail)?;
    p.set_macs(&ep.mac, &net.mac).ok_or(fail)?;
    crate::stats::received6(ep.ifindex, p.len());
    step::done(answer, redirect::into_container(ep.ifindex))
}
