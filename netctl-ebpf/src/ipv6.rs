//! IPv6 between the containers of a dual-stack network and the host: who may send what
//! (the same isolation, ICC and internal rules as IPv4), and neighbour discovery policed so a
//! container speaks only for its own addresses and never plays a router. Not routed beyond
//! the host yet (`ipv6-unrouted`): no conntrack, NAT or published ports for IPv6.

use aya_ebpf::maps::lpm_trie::Key;
use netctl_common::{
    ct::CtKey6,
    drop::DropReason,
    maps::{is_link_local, link_local, EndpointInfo, Ip6, NetInfo, NET_ICC, NET_INTERNAL},
    proto,
};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    ct,
    maps::{self, HOST_ADDRS6, SUBNETS6, VETHS},
    overlay6,
    packet::{Packet, Tc},
    parse::{ETH_LEN, TCP_FIN, TCP_SYN},
    step,
};

const ICMPV6: u8 = proto::ICMPV6;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;
/// Extension headers looked through before the upper-layer header; more is malformed.
const MAX_EXT: usize = 4;

pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
const MLD_QUERY: u8 = 130;
const MLD_REPORT: u8 = 131;
const MLD_DONE: u8 = 132;
const ROUTER_SOLICIT: u8 = 133;
const ROUTER_ADVERT: u8 = 134;
const NEIGH_SOLICIT: u8 = 135;
const NEIGH_ADVERT: u8 = 136;
const REDIRECT: u8 = 137;
const MLD2_REPORT: u8 = 143;
/// Router renumbering, multicast router advertisement and termination: routers' only.
const ROUTER_RENUMBERING: u8 = 138;
const MRD_ADVERT: u8 = 151;
const MRD_TERMINATE: u8 = 153;
/// Neighbour discovery options: the sender's and the target's link-layer address.
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// Options of one neighbour discovery message looked through.
const MAX_OPTS: usize = 8;

/// An IPv6 packet as the policy needs it.
pub struct Hdr6 {
    pub saddr: Ip6,
    pub daddr: Ip6,
    /// The upper-layer protocol (after the extension headers).
    pub proto: u8,
    /// Its offset, None for a later fragment (no upper-layer header in it).
    pub l4: Option<usize>,
    /// ICMPv6: the type (0 for anything else).
    pub icmp_type: u8,
    /// TCP/UDP: the ports, network order; ICMPv6 echo: the identifier in both.
    pub sport: u16,
    pub dport: u16,
    /// Carries a fragment header (first or later fragment).
    pub fragmented: bool,
    /// TCP: flags, first sequence number, the one after the segment, acknowledgment (host
    /// order), as conntrack follows them.
    pub tcp_flags: u8,
    pub seq: u32,
    pub seq_end: u32,
    pub ack: u32,
}

impl Hdr6 {
    /// The tuple conntrack keys this packet by.
    pub fn key(&self) -> CtKey6 {
        CtKey6 {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// Has ports (or an echo identifier) and is whole: fragments are never translated (a
    /// later fragment has no ports, and a first one alone would let the rest through
    /// untranslated).
    pub fn natable(&self) -> bool {
        !self.fragmented
            && self.l4.is_some()
            && (self.proto == proto::TCP || self.proto == proto::UDP || self.is_echo())
    }

    /// What may reach a container from beyond the host, checked again on its veth: a packet
    /// of a tracked flow, as the uplink translated it (its reverse is one of the flow's
    /// tuples).
    pub fn in_flow(&self) -> bool {
        self.natable() && ct::find(&self.key().reversed()).is_some()
    }

    /// An echo request or reply: its identifier plays the port.
    pub fn is_echo(&self) -> bool {
        self.proto == ICMPV6 && (self.icmp_type == ECHO_REQUEST || self.icmp_type == ECHO_REPLY)
    }

    /// Destination unreachable, packet too big, time exceeded, parameter problem: quotes the
    /// packet it is about.
    pub fn is_error(&self) -> bool {
        self.proto == ICMPV6 && (1..=4).contains(&self.icmp_type)
    }

    pub fn nd(&self) -> bool {
        self.proto == ICMPV6
            && matches!(
                self.icmp_type,
                ROUTER_SOLICIT | NEIGH_SOLICIT | NEIGH_ADVERT | MLD_REPORT | MLD_DONE | MLD2_REPORT
            )
    }
}

/// Parses the IPv6 header and its extension headers. A routing header that still has
/// segments to visit is a request to be forwarded elsewhere than `daddr`: refused.
#[inline(always)]
pub fn parse<P: Packet>(p: &P) -> Result<Hdr6, DropReason> {
    let ip: Ipv6Hdr = p.load(ETH_LEN).ok_or(DropReason::Malformed)?;
    if ip.vcf[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let mut next = ip.next_hdr;
    let mut off = ETH_LEN + Ipv6Hdr::LEN;
    let mut later_fragment = false;
    let mut fragmented = false;
    for _ in 0..MAX_EXT {
        match next {
            HOP_BY_HOP | DEST_OPTS | ROUTING => {
                let ext: [u8; 4] = p.load(off).ok_or(DropReason::Malformed)?;
                if next == ROUTING && ext[3] != 0 {
                    return Err(DropReason::Ipv6Router);
                }
                next = ext[0];
                off += (ext[1] as usize + 1) * 8;
            }
            FRAGMENT => {
                let ext: [u8; 4] = p.load(off).ok_or(DropReason::Malformed)?;
                next = ext[0];
                off += 8;
                // Offset (13 bits) in the upper bits of bytes 2-3: not zero, no L4 header.
                later_fragment = u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0;
                fragmented = true;
                break;
            }
            _ => break,
        }
    }
    // More extension headers than looked through (a fragment header among them would hide
    // what it carries), or headers after the fragment header.
    if matches!(next, HOP_BY_HOP | DEST_OPTS | ROUTING | FRAGMENT) {
        return Err(DropReason::Malformed);
    }
    let mut h = Hdr6 {
        saddr: ip.src_addr,
        daddr: ip.dst_addr,
        proto: next,
        l4: (!later_fragment).then_some(off),
        icmp_type: 0,
        sport: 0,
        dport: 0,
        fragmented,
        tcp_flags: 0,
        seq: 0,
        seq_end: 0,
        ack: 0,
    };
    if let Some(l4) = h.l4 {
        match next {
            ICMPV6 => {
                h.icmp_type = p.load::<u8>(l4).ok_or(DropReason::Malformed)?;
                // Neighbour discovery and listener messages are never fragmented (RFC 6980).
                if fragmented
                    && ((MLD_QUERY..=REDIRECT).contains(&h.icmp_type) || h.icmp_type == MLD2_REPORT)
                {
                    return Err(DropReason::Malformed);
                }
                if h.is_echo() {
                    let id: u16 = p.load(l4 + 4).ok_or(DropReason::Malformed)?;
                    h.sport = id;
                    h.dport = id;
                }
            }
            proto::TCP => {
                let t: [u8; 14] = p.load(l4).ok_or(DropReason::Malformed)?;
                h.sport = u16::from_ne_bytes([t[0], t[1]]);
                h.dport = u16::from_ne_bytes([t[2], t[3]]);
                h.seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
                h.ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
                h.tcp_flags = t[13];
                // Payload: what the IPv6 payload length leaves after extension and TCP headers.
                let tcp_len = u32::from(t[12] >> 4) * 4;
                let ext = (l4 - ETH_LEN - Ipv6Hdr::LEN) as u32;
                let payload =
                    u32::from(u16::from_be_bytes(ip.payload_len)).saturating_sub(ext + tcp_len);
                let ctl =
                    u32::from(h.tcp_flags & TCP_SYN != 0) + u32::from(h.tcp_flags & TCP_FIN != 0);
                h.seq_end = h.seq.wrapping_add(payload).wrapping_add(ctl);
            }
            proto::UDP => {
                let ports: [u16; 2] = p.load(l4).ok_or(DropReason::Malformed)?;
                h.sport = ports[0];
                h.dport = ports[1];
            }
            _ => {}
        }
    }
    Ok(h)
}

/// [`parse`] into `h` (in a per-CPU map): a BPF function of its own, so its stack is gone
/// before the packet is translated.
#[inline(never)]
pub fn parse_into(p: &Tc, h: &mut Hdr6) -> i64 {
    step::unit(parse(p).map(|parsed| *h = parsed))
}

fn is_multicast(a: &Ip6) -> bool {
    a[0] == 0xff
}

fn is_unspecified(a: &Ip6) -> bool {
    u128::from_ne_bytes(*a) == 0
}

#[inline(always)]
fn is_host_addr(a: &Ip6) -> bool {
    unsafe { HOST_ADDRS6.get(a).is_some() }
}

/// What a container may send over IPv6, checked on its host-side veth: its own addresses
/// and MAC on its own veth, neighbour discovery only for itself, never a router's messages,
/// and the destinations IPv4's rules allow. True: beyond the host, for `nat6::egress` (the
/// sender's endpoint and network in `out`). A BPF function of its own: its stack frame is
/// gone before the translation's starts (and it returns a scalar: a BPF function cannot
/// hand back a struct).
#[inline(never)]
pub fn from_container(p: &mut Tc, ifindex: u32, out: &mut (EndpointInfo, NetInfo)) -> i64 {
    step::run(|answer| check_sender(p, ifindex, out, answer))
}

#[inline(always)]
fn check_sender(
    p: &mut Tc,
    ifindex: u32,
    out: &mut (EndpointInfo, NetInfo),
    beyond: &mut i64,
) -> Result<(), DropReason> {
    let h = parse(p)?;
    let eth: EthHdr = p.load(0).ok_or(DropReason::Malformed)?;
    if h.proto == ICMPV6
        && matches!(
            h.icmp_type,
            ROUTER_ADVERT | REDIRECT | MLD_QUERY | ROUTER_RENUMBERING | MRD_ADVERT | MRD_TERMINATE
        )
    {
        return Err(DropReason::Ipv6Router);
    }
    let early = maps::endpoint6(&h.saddr).is_none() && early_report(&h, &eth.src_addr);
    // The sender goes straight into `out` (an Option of it would leave the verifier an
    // undefined register to read on the path without one).
    let known = if is_unspecified(&h.saddr) || early {
        // Duplicate address probes and early multicast reports have no source yet; they
        // carry nothing else, and come from the veth's own container with its own MAC, on a
        // network with IPv6.
        if !(h.nd() && is_multicast(&h.daddr)) {
            return Err(DropReason::Spoofed);
        }
        // SAFETY: a read-only copy of a value the controller writes whole.
        match unsafe { VETHS.get(ifindex).copied() } {
            Some(own) => {
                if own.mac != eth.src_addr {
                    return Err(DropReason::Spoofed);
                }
                let net = maps::network(own.network).ok_or(DropReason::Spoofed)?;
                if u128::from_ne_bytes(net.gateway6) == 0 {
                    return Err(DropReason::NotIpv4);
                }
            }
            // A veth whose change is still being committed (its programs can be on before
            // its map entries): the reports its interface sends as IPv6 comes up, only.
            None if early => {}
            None => return Err(DropReason::Spoofed),
        }
        false
    } else {
        let ep = maps::endpoint6(&h.saddr).ok_or(DropReason::Spoofed)?;
        if ep.ifindex != ifindex || ep.mac != eth.src_addr {
            return Err(DropReason::Spoofed);
        }
        out.1 = maps::network(ep.network).ok_or(DropReason::Spoofed)?;
        out.0 = ep;
        true
    };
    if h.proto == ICMPV6 {
        nd_speaks_for_itself(p, &h, ifindex, &eth.src_addr)?;
    }
    if !known {
        return Ok(());
    }
    match destination(&h, &out.0, &out.1, &eth.dst_addr) {
        // A solicitation for a container of its overlay on another host: answered here.
        Ok(()) if h.icmp_type == NEIGH_SOLICIT && solicits_remote(p, &h, out.0.network) => {
            step::done(beyond, ANSWER_NS)
        }
        // A container of its overlay on another host: through the tunnel.
        Ok(()) if !is_multicast(&h.daddr) && overlay6::peer(&h.daddr, out.0.network).is_some() => {
            step::done(beyond, REMOTE)
        }
        // Beyond the host: translated and routed by the datapath itself.
        Err(DropReason::Ipv6Unrouted) if !is_multicast(&h.daddr) => step::done(beyond, BEYOND),
        // To a host address: a published port there is hairpinned (`nat6::hairpin`).
        Ok(()) if h.natable() && !h.is_echo() && is_host_addr(&h.daddr) => {
            step::done(beyond, TO_HOST)
        }
        r => r,
    }
}

/// What [`from_container`] answers besides "stays on the link" (0).
pub const BEYOND: i64 = 1;
pub const TO_HOST: i64 = 2;
/// To a container of the sender's overlay on another host (`overlay6::send`).
pub const REMOTE: i64 = 3;
/// A neighbour solicitation for one (`overlay6::answer_ns`).
pub const ANSWER_NS: i64 = 4;

/// A neighbour solicitation (ICMPv6 already known) whose target is a container of the
/// overlay `network` on another host.
#[inline(always)]
fn solicits_remote<P: Packet>(p: &P, h: &Hdr6, network: u32) -> bool {
    // Without extension headers: the answer is built at fixed offsets (`overlay6`).
    if h.l4 != Some(ETH_LEN + Ipv6Hdr::LEN) {
        return false;
    }
    p.load::<Ip6>(ETH_LEN + Ipv6Hdr::LEN + 8)
        .is_some_and(|target| overlay6::peer(&target, network).is_some())
}

/// A multicast listener report from the link-local address the kernel derives from the
/// frame's MAC: what an interface sends by itself as soon as IPv6 is on, which can be before
/// its endpoint is in `ENDPOINTS6` (a runtime's interface is policed from its first packet).
/// It joins the sender's own bridge port to a group, nothing else.
#[inline(always)]
fn early_report(h: &Hdr6, mac: &[u8; 6]) -> bool {
    h.proto == ICMPV6
        && matches!(h.icmp_type, MLD_REPORT | MLD_DONE | MLD2_REPORT)
        && is_multicast(&h.daddr)
        && h.saddr == link_local(*mac)
}

/// A neighbour advertisement names a target that is the sender's own address, and the
/// link-layer address any solicitation or advertisement carries is the frame's: so no
/// container can take over a neighbour's address in anyone's neighbour cache.
#[inline(always)]
fn nd_speaks_for_itself<P: Packet>(
    p: &P,
    h: &Hdr6,
    ifindex: u32,
    mac: &[u8; 6],
) -> Result<(), DropReason> {
    let Some(l4) = h.l4 else {
        return Ok(());
    };
    let opts = match h.icmp_type {
        NEIGH_ADVERT => {
            let target: Ip6 = p.load(l4 + 8).ok_or(DropReason::Malformed)?;
            match maps::endpoint6(&target) {
                Some(t) if t.ifindex == ifindex && t.mac == *mac => {}
                _ => return Err(DropReason::Spoofed),
            }
            l4 + 24
        }
        NEIGH_SOLICIT => {
            // A duplicate address probe for the host's or a neighbour's address would make
            // its owner give the address up.
            if is_unspecified(&h.saddr) {
                let target: Ip6 = p.load(l4 + 8).ok_or(DropReason::Malformed)?;
                let neighbours = maps::endpoint6(&target).is_some_and(|t| t.ifindex != ifindex);
                if neighbours || is_host_addr(&target) {
                    return Err(DropReason::Spoofed);
                }
            }
            l4 + 24
        }
        ROUTER_SOLICIT => l4 + 8,
        _ => return Ok(()),
    };
    // Options: type, length in 8-byte units, then for link-layer ones the address. More
    // than these are not looked at: malformed (the receiver takes the first of each type,
    // which could be past them).
    let mut off = opts;
    for _ in 0..MAX_OPTS {
        let Some(opt) = p.load::<[u8; 8]>(off) else {
            return Ok(()); // no more options
        };
        if opt[1] == 0 {
            return Err(DropReason::Malformed);
        }
        if (opt[0] == OPT_SOURCE_LL || opt[0] == OPT_TARGET_LL) && opt[2..8] != mac[..] {
            return Err(DropReason::Spoofed);
        }
        off += opt[1] as usize * 8;
    }
    match p.load::<[u8; 2]>(off) {
        Some(_) => Err(DropReason::Malformed),
        None => Ok(()),
    }
}

/// Where a container's IPv6 packet may go: IPv4's rules (`policy::check`) for IPv6's
/// addresses. Neighbour discovery and multicast listener reports reach the link whatever
/// ICC says, as ARP does.
#[inline(always)]
fn destination(
    h: &Hdr6,
    ep: &EndpointInfo,
    net: &NetInfo,
    dst_mac: &[u8; 6],
) -> Result<(), DropReason> {
    if u128::from_ne_bytes(net.gateway6) == 0 {
        return Err(DropReason::NotIpv4); // a network without IPv6
    }
    let icc = net.flags & NET_ICC != 0;
    let internal = net.flags & NET_INTERNAL != 0;
    if is_multicast(&h.daddr) {
        // As IPv4's broadcast and multicast: an internal network's reach nothing of the host,
        // with ICC off nobody's; and only the link's (ff02::/16) — wider scopes are beyond it.
        return match () {
            _ if h.nd() => Ok(()),
            _ if internal => Err(DropReason::Internal),
            _ if !icc => Err(DropReason::IccOff),
            _ if h.daddr[1] & 0x0f != 2 => Err(DropReason::Ipv6Unrouted),
            _ => Ok(()),
        };
    }
    if is_host_addr(&h.daddr) {
        let dns = (h.proto == proto::UDP || h.proto == proto::TCP)
            && h.dport == 53u16.to_be()
            && h.daddr == net.gateway6;
        if internal && !h.nd() && !dns {
            return Err(DropReason::Internal);
        }
        if !icc && *dst_mac != net.mac {
            return Err(DropReason::IccOff);
        }
        return Ok(());
    }
    let dst_net = if is_link_local(&h.daddr) {
        maps::endpoint6(&h.daddr).map(|d| d.network)
    } else {
        // SAFETY: a read-only lookup.
        SUBNETS6.get(Key::new(128, h.daddr)).copied()
    };
    match dst_net {
        Some(n) if n != ep.network => Err(DropReason::Isolation),
        Some(_) if !icc => Err(DropReason::IccOff),
        Some(_) => Ok(()),
        None if is_link_local(&h.daddr) => Err(DropReason::Isolation),
        // A container of an overlay this host has no part of.
        None if overlay6::remote(&h.daddr).is_some() => Err(DropReason::Isolation),
        None if !icc && *dst_mac != net.mac => Err(DropReason::IccOff),
        None if internal => Err(DropReason::Internal),
        None => Err(DropReason::Ipv6Unrouted),
    }
}

/// What may reach a container over IPv6 through its veth: a container of its network that
/// may talk to it, sent through that container's own veth (`ingress`: the interface the
/// packet came in by), the host itself (`ingress` 0: the host made the packet; an internal
/// network: its gateway and link-local neighbour discovery), and nothing else — no IPv6 flow
/// from beyond the host exists yet, whatever source a packet routed in from elsewhere claims.
#[inline(always)]
pub fn to_container<P: Packet>(p: &P, ingress: u32) -> Result<(), DropReason> {
    let h = parse(p)?;
    let src = maps::endpoint6(&h.saddr);
    let Some(dst) = (!is_multicast(&h.daddr))
        .then(|| maps::endpoint6(&h.daddr))
        .flatten()
    else {
        // Multicast, or no container's address: it came over the bridge, from a neighbour
        // whose own veth checked it, or from the host.
        return Ok(());
    };
    let net = maps::network(dst.network).ok_or(DropReason::NoWayIn)?;
    if let Some(s) = src {
        if s.ifindex != ingress {
            return Err(DropReason::Spoofed);
        }
        if s.network != dst.network {
            return Err(DropReason::Isolation);
        }
        if net.flags & NET_ICC == 0 && !h.nd() {
            return Err(DropReason::IccOff);
        }
        return Ok(());
    }
    // A flow from beyond the host that the uplink translated and handed over.
    if h.in_flow() {
        return Ok(());
    }
    if ingress == 0 && is_host_addr(&h.saddr) || is_unspecified(&h.saddr) && h.nd() {
        if net.flags & NET_INTERNAL != 0
            && h.saddr != net.gateway6
            && !is_link_local(&h.saddr)
            && !h.nd()
        {
            return Err(DropReason::Internal);
        }
        return Ok(());
    }
    Err(DropReason::NoWayIn)
}
