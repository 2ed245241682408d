//! What the first bytes of a captured frame say, for frames the datapath reports without a
//! parsed tuple (IPv6): protocol, addresses and ports.

use std::net::Ipv6Addr;

/// An IPv6 packet's summary; ports are 0 where the protocol has none (or a later fragment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Summary {
    /// The upper-layer protocol after the extension headers.
    pub proto: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    /// ICMPv6: the type.
    pub icmp_type: Option<u8>,
}

const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;

/// The summary of an Ethernet frame carrying IPv6, None for anything else or too few bytes.
pub fn ipv6(frame: &[u8]) -> Option<Ipv6Summary> {
    if frame.get(12..14)? != [0x86, 0xdd] || frame.get(ETH_LEN)? >> 4 != 6 {
        return None;
    }
    let ip = frame.get(ETH_LEN..ETH_LEN + IPV6_LEN)?;
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
    let mut s = Ipv6Summary {
        proto: ip[6],
        src: addr(8),
        dst: addr(24),
        sport: 0,
        dport: 0,
        icmp_type: None,
    };
    let mut off = ETH_LEN + IPV6_LEN;
    // Hop-by-hop, routing and destination options: skipped; a later fragment: no ports.
    for _ in 0..4 {
        match s.proto {
            0 | 43 | 60 => {
                s.proto = *frame.get(off)?;
                off += (usize::from(*frame.get(off + 1)?) + 1) * 8;
            }
            44 => {
                s.proto = *frame.get(off)?;
                let offset = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
                if offset & 0xfff8 != 0 {
                    return Some(s);
                }
                off += 8;
            }
            _ => break,
        }
    }
    match s.proto {
        6 | 17 => {
            let l4 = frame.get(off..off + 4);
            if let Some(p) = l4 {
                s.sport = u16::from_be_bytes([p[0], p[1]]);
                s.dport = u16::from_be_bytes([p[2], p[3]]);
            }
        }
        58 => s.icmp_type = frame.get(off).copied(),
        _ => {}
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, next, 64]);
        f.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        f.extend("fd00::3".parse::<Ipv6Addr>().unwrap().octets());
        f.extend(ext);
        f.extend(l4);
        f
    }

    #[test]
    fn addresses_ports_and_extension_headers() {
        let tcp = ipv6(&frame(6, &[], &[0x1f, 0x90, 0, 80])).unwrap();
        assert_eq!((tcp.proto, tcp.sport, tcp.dport), (6, 8080, 80));
        assert_eq!(tcp.src, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(tcp.dst, "fd00::3".parse::<Ipv6Addr>().unwrap());
        // A hop-by-hop header (8 bytes) before an ICMPv6 listener report.
        let mld = ipv6(&frame(0, &[58, 0, 5, 2, 0, 0, 1, 0], &[143, 0])).unwrap();
        assert_eq!((mld.proto, mld.icmp_type), (58, Some(143)));
        // A later fragment has no ports.
        let frag = ipv6(&frame(
            44,
            &[17, 0, 0x01, 0x00, 0, 0, 0, 1],
            &[0, 53, 0, 53],
        ))
        .unwrap();
        assert_eq!((frag.proto, frag.sport), (17, 0));
        assert!(ipv6(&[0u8; 20]).is_none());
        let mut arp = frame(6, &[], &[]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(ipv6(&arp).is_none());
    }
}
