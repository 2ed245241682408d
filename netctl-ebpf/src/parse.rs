//! Header parsing: Ethernet → IPv4 → TCP/UDP/ICMP, into one flat [`Hdr`].

use netctl_common::{ct::CtKey, proto};

use crate::packet::{L4Csum, Packet};

pub const ETH_LEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// Offsets inside the IPv4 header.
pub const IP_CSUM: usize = 10;
pub const IP_SADDR: usize = 12;
pub const IP_DADDR: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    /// Not ICMP.
    No,
    /// Echo request or reply: the identifier plays the port.
    Echo,
    /// Destination unreachable, time exceeded, …: carries the offending packet's headers.
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
    /// Any fragment (first or later): never translated.
    pub frag: bool,
    pub icmp: Icmp,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// Not for us to look at (not IPv4) or broken.
pub enum NotParsed {
    Pass,
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

    /// What XDP handles (TC ingress skips these when XDP runs on the uplink).
    pub fn xdp_handles(&self) -> bool {
        self.natable() && self.l4 == self.l3 + 20
    }

    /// Has ports (or an echo identifier) that NAT can use.
    pub fn natable(&self) -> bool {
        !self.frag
            && (self.proto == proto::TCP || self.proto == proto::UDP || self.icmp == Icmp::Echo)
    }

    /// Offset of the source "port" field (for ICMP echo: the identifier).
    pub fn sport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).0
    }

    pub fn dport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).1
    }

    pub fn l4_csum(&self) -> Option<L4Csum> {
        match self.proto {
            proto::TCP => Some(L4Csum {
                off: self.l4 + 16,
                pseudo: true,
                udp: false,
            }),
            proto::UDP => Some(L4Csum {
                off: self.l4 + 6,
                pseudo: true,
                udp: true,
            }),
            proto::ICMP => Some(L4Csum {
                off: self.l4 + 2,
                pseudo: false,
                udp: false,
            }),
            _ => None,
        }
    }
}

#[inline(always)]
pub fn parse<P: Packet>(p: &P) -> Result<Hdr, NotParsed> {
    let ethertype: u16 = p.load(12).ok_or(NotParsed::Pass)?;
    if ethertype != ETH_P_IP_BE {
        return Err(NotParsed::Pass);
    }
    let l3 = ETH_LEN;
    let vihl: u8 = p.load(l3).ok_or(NotParsed::Malformed)?;
    let mut ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(NotParsed::Malformed);
    }
    if P::NO_IP_OPTIONS {
        if ihl != 20 {
            return Err(NotParsed::Pass); // TC ingress handles it
        }
        ihl = 20;
    }
    let frag_raw: u16 = p.load(l3 + 6).ok_or(NotParsed::Malformed)?;
    let frag = u16::from_be(frag_raw) & 0x3fff != 0; // MF flag or an offset
    let proto: u8 = p.load(l3 + 9).ok_or(NotParsed::Malformed)?;
    let saddr: u32 = p.load(l3 + IP_SADDR).ok_or(NotParsed::Malformed)?;
    let daddr: u32 = p.load(l3 + IP_DADDR).ok_or(NotParsed::Malformed)?;
    let l4 = l3 + ihl;
    let mut h = Hdr {
        l3,
        l4,
        proto,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        frag,
        icmp: Icmp::No,
    };
    // Later fragments carry no L4 header; the first does but is not translated either.
    if frag {
        return Ok(h);
    }
    match proto {
        proto::TCP => {
            h.sport = p.load(l4).ok_or(NotParsed::Malformed)?;
            h.dport = p.load(l4 + 2).ok_or(NotParsed::Malformed)?;
            h.tcp_flags = p.load(l4 + 13).ok_or(NotParsed::Malformed)?;
            // The checksum field must be there for any rewrite.
            let _: u16 = p.load(l4 + 16).ok_or(NotParsed::Malformed)?;
        }
        proto::UDP => {
            h.sport = p.load(l4).ok_or(NotParsed::Malformed)?;
            h.dport = p.load(l4 + 2).ok_or(NotParsed::Malformed)?;
            let _: u16 = p.load(l4 + 6).ok_or(NotParsed::Malformed)?;
        }
        proto::ICMP => {
            let ty: u8 = p.load(l4).ok_or(NotParsed::Malformed)?;
            h.icmp = match ty {
                0 | 8 => {
                    let id: u16 = p.load(l4 + 4).ok_or(NotParsed::Malformed)?;
                    h.sport = id;
                    h.dport = id;
                    Icmp::Echo
                }
                3 | 4 | 11 | 12 => Icmp::Error,
                _ => Icmp::Other,
            };
        }
        _ => {}
    }
    Ok(h)
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
}

impl Inner {
    pub fn sport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).0
    }

    pub fn dport_off(&self) -> usize {
        port_offsets(self.proto, self.l4).1
    }
}

/// Where the source and destination "ports" sit: TCP/UDP ports, or for ICMP echo the one
/// identifier field that plays both.
#[inline(always)]
fn port_offsets(ip_proto: u8, l4: usize) -> (usize, usize) {
    if ip_proto == proto::ICMP {
        (l4 + 4, l4 + 4)
    } else {
        (l4, l4 + 2)
    }
}

#[inline(always)]
pub fn parse_inner<P: Packet>(p: &P, h: &Hdr) -> Option<Inner> {
    let l3 = h.l4 + 8;
    let vihl: u8 = p.load(l3)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto: u8 = p.load(l3 + 9)?;
    let l4 = l3 + ihl;
    let (sport, dport) = match proto {
        proto::TCP | proto::UDP => (p.load(l4)?, p.load(l4 + 2)?),
        proto::ICMP => {
            let id: u16 = p.load(l4 + 4)?;
            (id, id)
        }
        _ => return None,
    };
    Some(Inner {
        l3,
        l4,
        proto,
        saddr: p.load(l3 + IP_SADDR)?,
        daddr: p.load(l3 + IP_DADDR)?,
        sport,
        dport,
    })
}
