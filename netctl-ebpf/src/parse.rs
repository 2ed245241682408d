//! Header parsing: Ethernet → IPv4 → TCP/UDP/ICMP, into one flat [`Hdr`]. Offsets and fields
//! come from `network-types`' header structs.

use core::mem::offset_of;

use aya_ebpf::bindings::BPF_NOEXIST;

use netctl_common::{
    ct::CtKey,
    maps::{FragKey, FragPorts, FRAG_TTL_NS},
    proto,
};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    maps::FRAGS,
    packet::{L4Csum, Packet},
};

pub const ETH_LEN: usize = EthHdr::LEN;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Offsets inside the IPv4 header.
pub const IP_CSUM: usize = offset_of!(Ipv4Hdr, check);
pub const IP_SADDR: usize = offset_of!(Ipv4Hdr, src_addr);
pub const IP_DADDR: usize = offset_of!(Ipv4Hdr, dst_addr);
pub const IP_TTL: usize = offset_of!(Ipv4Hdr, ttl);
const TCP_CSUM: usize = offset_of!(TcpHdr, check);
const TCP_BITS: usize = offset_of!(TcpHdr, _bitfield_1);
const UDP_CSUM: usize = offset_of!(UdpHdr, check);
const ICMP_CSUM: usize = offset_of!(Icmpv4Hdr, check);
/// The echo identifier sits in the ICMP header's 4 data bytes.
const ICMP_ID: usize = offset_of!(Icmpv4Hdr, data);

/// TCP flags (byte 13 of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 "more fragments" flag and offset mask of the flags/offset field (host order).
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// ICMP types.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    /// Not ICMP.
    No,
    /// Echo request or reply: the identifier plays the port.
    Echo,
    /// Destination unreachable, source quench, time exceeded, parameter problem: carries the
    /// offending packet's headers.
    Error,
    /// Any other ICMP message.
    Other,
}

/// A parsed IPv4 packet. Addresses and ports are in network byte order.
#[derive(Clone, Copy)]
pub struct Hdr {
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TCP: sequence number after this segment (seq + payload + SYN + FIN), host order.
    pub seq_end: u32,
    /// TCP: the first sequence number (host order), and the acknowledgment number.
    pub seq: u32,
    pub ack: u32,
    /// Any fragment (first or later).
    pub frag: bool,
    /// A fragment NAT can handle: a first one (it has the L4 header), or a later one whose
    /// first fragment this hook saw (its ports come from `FRAGS`).
    pub frag_known: bool,
    /// A later fragment: no L4 header here, so addresses change (IP checksum only) and ports
    /// and the L4 checksum are left to the first fragment.
    pub l4_absent: bool,
    /// A first fragment whose ports the rest of its datagram will need
    /// ([`remember_first_fragment`], once the packet has passed).
    pub first_frag: bool,
    /// The IP ID (network order).
    pub ip_id: u16,
    pub icmp: Icmp,
}

/// Not IPv4 (the EtherType, network order) — or, in XDP, IPv4 with options, which only TC
/// parses — or broken.
pub enum NotParsed {
    Other(u16),
    Malformed,
}

impl Hdr {
    pub fn key(&self) -> CtKey {
        CtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// What XDP can handle (direct packet access needs the fixed offsets of a header without
    /// options); TC takes the rest.
    pub fn xdp_handles(&self) -> bool {
        self.natable() && !self.frag && self.l4 == self.l3 + Ipv4Hdr::LEN
    }

    /// Has ports (or an echo identifier) that NAT can use.
    pub fn natable(&self) -> bool {
        (!self.frag || self.frag_known)
            && (self.proto == proto::TCP || self.proto == proto::UDP || self.icmp == Icmp::Echo)
    }

    /// A TCP segment that opens a connection: SYN without ACK.
    pub fn is_syn(&self) -> bool {
        self.proto == proto::TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Offset of the source "port" field (for ICMP echo: the identifier).
    pub fn sport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).0
    }

    pub fn dport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).1
    }

    pub fn l4_csum(&self) -> Option<L4Csum> {
        if self.l4_absent {
            return None;
        }
        l4_csum(self.proto, self.l4)
    }
}

/// The L4 checksum field of a header at `l4`.
#[inline(always)]
fn l4_csum(ip_proto: u8, l4: usize) -> Option<L4Csum> {
    match ip_proto {
        proto::TCP => Some(L4Csum {
            off: l4 + TCP_CSUM,
            pseudo: true,
            udp: false,
        }),
        proto::UDP => Some(L4Csum {
            off: l4 + UDP_CSUM,
            pseudo: true,
            udp: true,
        }),
        proto::ICMP => Some(L4Csum {
            off: l4 + ICMP_CSUM,
            pseudo: false,
            udp: false,
        }),
        _ => None,
    }
}

#[inline(always)]
pub fn parse<P: Packet>(p: &P, ifindex: u32) -> Result<Hdr, NotParsed> {
    let eth: EthHdr = p.load(0).ok_or(NotParsed::Other(0))?;
    if eth.ether_type != EtherType::Ipv4 as u16 {
        return Err(NotParsed::Other(eth.ether_type));
    }
    let l3 = ETH_LEN;
    let ip: Ipv4Hdr = p.load(l3).ok_or(NotParsed::Malformed)?;
    let mut ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(NotParsed::Malformed);
    }
    if P::NO_IP_OPTIONS {
        if ihl != Ipv4Hdr::LEN {
            return Err(NotParsed::Other(eth.ether_type)); // TC handles it
        }
        ihl = Ipv4Hdr::LEN; // a constant, for the verifier
    }
    let frags = u16::from_be_bytes(ip.frags);
    let l4 = l3 + ihl;
    let mut h = Hdr {
        l3,
        l4,
        proto: ip.proto,
        saddr: u32::from_ne_bytes(ip.src_addr),
        daddr: u32::from_ne_bytes(ip.dst_addr),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        seq_end: 0,
        seq: 0,
        ack: 0,
        frag: frags & (IP_MF | IP_OFFSET) != 0,
        frag_known: false,
        l4_absent: false,
        first_frag: false,
        ip_id: u16::from_ne_bytes(ip.id),
        icmp: Icmp::No,
    };
    // A later fragment has no L4 header: the ports are those its first fragment carried
    // through this hook. Without them (it came first, or the first went elsewhere, or a record
    // is older than a reassembly may take: the IP ID came round again) it is left as it is,
    // as before reassembly.
    if frags & IP_OFFSET != 0 {
        // SAFETY: read-only copy of a value the programs write whole.
        let known = unsafe { FRAGS.get(frag_key(&h.key(), h.ip_id, ifindex)) }
            .filter(|f| crate::clock::now().wrapping_sub(f.seen) <= FRAG_TTL_NS);
        if let Some(f) = known {
            h.sport = f.sport;
            h.dport = f.dport;
            h.frag_known = true;
            h.l4_absent = true;
            if h.proto == proto::ICMP {
                h.icmp = Icmp::Echo;
            }
        }
        return Ok(h);
    }
    match ip.proto {
        proto::TCP => {
            let t: TcpHdr = p.load(l4).ok_or(NotParsed::Malformed)?;
            h.sport = u16::from_ne_bytes(t.source);
            h.dport = u16::from_ne_bytes(t.dest);
            h.seq = u32::from_be_bytes(t.seq);
            h.ack = u32::from_be_bytes(t.ack_seq);
            // Data offset and flags share the 16-bit bitfield: read its two bytes.
            // SAFETY: TcpHdr is a plain array of bytes.
            let raw: [u8; TcpHdr::LEN] = unsafe { core::mem::transmute(t) };
            h.tcp_flags = raw[TCP_BITS + 1];
            let hdr_len = u32::from(raw[TCP_BITS] >> 4) * 4;
            let ip_len = u32::from(u16::from_be_bytes(ip.tot_len));
            let payload = ip_len.saturating_sub(ihl as u32 + hdr_len);
            let ctl = u32::from(h.tcp_flags & TCP_SYN != 0) + u32::from(h.tcp_flags & TCP_FIN != 0);
            h.seq_end = h.seq.wrapping_add(payload).wrapping_add(ctl);
        }
        proto::UDP => {
            let u: UdpHdr = p.load(l4).ok_or(NotParsed::Malformed)?;
            h.sport = u16::from_ne_bytes(u.src);
            h.dport = u16::from_ne_bytes(u.dst);
        }
        proto::ICMP => {
            let m: Icmpv4Hdr = p.load(l4).ok_or(NotParsed::Malformed)?;
            h.icmp = match m.type_ {
                ICMP_ECHO_REPLY | ICMP_ECHO => {
                    let id = u16::from_ne_bytes([m.data[0], m.data[1]]);
                    h.sport = id;
                    h.dport = id;
                    Icmp::Echo
                }
                ICMP_DEST_UNREACH | ICMP_SOURCE_QUENCH | ICMP_TIME_EXCEEDED
                | ICMP_PARAMETERPROB => Icmp::Error,
                _ => Icmp::Other,
            };
        }
        _ => {}
    }
    // A first fragment: its ports are remembered for the rest of the datagram once it passed.
    if h.frag && (h.proto != proto::ICMP || h.icmp == Icmp::Echo) {
        h.frag_known = true;
        h.first_frag = true;
    }
    Ok(h)
}

#[inline(always)]
fn frag_key(k: &CtKey, id: u16, ifindex: u32) -> FragKey {
    FragKey {
        saddr: k.saddr,
        daddr: k.daddr,
        ifindex,
        id,
        proto: k.proto,
        _pad: 0,
    }
}

/// Records the ports of a first fragment that passed (`before`: its tuple as it came in) for
/// its later fragments. Written only after the decision, and never over a live record: a
/// dropped or forged fragment cannot seed or replace the ports of someone else's datagram.
#[inline(always)]
pub fn remember_first_fragment(before: &CtKey, id: u16, ifindex: u32) {
    let key = frag_key(before, id, ifindex);
    let t = crate::clock::now();
    let ports = FragPorts {
        sport: before.sport,
        dport: before.dport,
        _pad: 0,
        seen: t,
    };
    if FRAGS.insert(key, ports, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // A record older than a reassembly may take is an earlier datagram's (the IP ID came
    // round again): replaced.
    if let Some(old) = FRAGS.get_ptr_mut(key) {
        // SAFETY: map value pointer, valid for this program run.
        unsafe {
            if t.wrapping_sub((*old).seen) > FRAG_TTL_NS {
                *old = ports;
            }
        }
    }
}

/// The packet quoted in an ICMP error: where its addresses and ports sit.
#[derive(Clone, Copy)]
pub struct Inner {
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// The quoted L4 checksum, when the quote reaches it (an ICMP error carries at least 8
    /// bytes of the L4 header: all of UDP's, half of TCP's).
    pub csum: Option<L4Csum>,
}

impl Inner {
    pub fn sport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).0
    }

    pub fn dport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).1
    }

    /// The tuple as the quoted packet carried it.
    pub fn key(&self) -> CtKey {
        CtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Where the source and destination "ports" sit: TCP/UDP ports, or for ICMP echo the one
/// identifier field that plays both.
#[inline(always)]
fn port_offsets(ip_proto: u8, l4: usize) -> (usize, usize) {
    if ip_proto == proto::ICMP {
        (l4 + ICMP_ID, l4 + ICMP_ID)
    } else {
        (l4, l4 + 2)
    }
}

#[inline(always)]
pub fn parse_inner<P: Packet>(p: &P, h: &Hdr) -> Option<Inner> {
    let l3 = h.l4 + Icmpv4Hdr::LEN;
    let ip: Ipv4Hdr = p.load(l3)?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    let l4 = l3 + ihl;
    let (sport, dport) = match ip.proto {
        proto::TCP | proto::UDP => (p.load(l4)?, p.load(l4 + 2)?),
        proto::ICMP => {
            let id: u16 = p.load(l4 + ICMP_ID)?;
            (id, id)
        }
        _ => return None,
    };
    let csum = l4_csum(ip.proto, l4).filter(|c| p.load::<u16>(c.off).is_some());
    Some(Inner {
        l3,
        l4,
        proto: ip.proto,
        saddr: u32::from_ne_bytes(ip.src_addr),
        daddr: u32::from_ne_bytes(ip.dst_addr),
        sport,
        dport,
        csum,
    })
}
