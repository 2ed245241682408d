//! Connection tracking entries. Every NAT flow has two: one keyed by the tuple of its original
//! direction, one by the tuple of its replies, each as the packet shows it where it is looked
//! up (before translation).

/// A tuple as it appears on the wire. For ICMP echo both ports hold the identifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The same flow seen from the other end.
    pub const fn reversed(&self) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// What created a flow (reported by `netctl trace` and `stats`; never renumber).
pub const KIND_DNAT: u8 = 1;
pub const KIND_SNAT: u8 = 2;
pub const KIND_HAIRPIN: u8 = 3;
/// Routed without translation (a network with masquerade off): tracked so replies get in.
pub const KIND_ROUTED: u8 = 4;

/// Entry flags.
pub const CT_REPLY: u8 = 1; // this entry is the reply direction
pub const CT_SEEN_REPLY: u8 = 2; // the reply direction has carried a packet
pub const CT_FIN_ORIG: u8 = 4;
pub const CT_FIN_REPLY: u8 = 8;
pub const CT_RST: u8 = 16;

/// Rewrites: which addresses of a matching packet change.
pub const REWRITE_SRC: u8 = 1;
pub const REWRITE_DST: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// New source (if `rewrite & REWRITE_SRC`).
    pub src_addr: u32,
    /// New destination (if `rewrite & REWRITE_DST`).
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub rewrite: u8,
    pub kind: u8,
    pub flags: u8,
    pub _pad: u8,
    /// Key of the other direction's entry (to share TCP state).
    pub peer: CtKey,
    /// bpf_ktime_get_ns of the last packet.
    pub last_seen: u64,
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 40);

/// Idle timeouts, nanoseconds.
pub const TIMEOUT_TCP_SYN: u64 = 60_000_000_000;
pub const TIMEOUT_TCP_ESTABLISHED: u64 = 21_600_000_000_000;
pub const TIMEOUT_TCP_CLOSING: u64 = 10_000_000_000;
pub const TIMEOUT_UDP: u64 = 60_000_000_000;
pub const TIMEOUT_ICMP: u64 = 30_000_000_000;

/// How long an entry may sit idle.
pub const fn timeout(proto: u8, flags: u8) -> u64 {
    match proto {
        crate::proto::TCP => {
            if flags & CT_RST != 0
                || flags & (CT_FIN_ORIG | CT_FIN_REPLY) == (CT_FIN_ORIG | CT_FIN_REPLY)
            {
                TIMEOUT_TCP_CLOSING
            } else if flags & CT_SEEN_REPLY != 0 {
                TIMEOUT_TCP_ESTABLISHED
            } else {
                TIMEOUT_TCP_SYN
            }
        }
        crate::proto::UDP => TIMEOUT_UDP,
        _ => TIMEOUT_ICMP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ICMP, TCP, UDP};

    #[test]
    fn timeouts_follow_tcp_state() {
        assert_eq!(timeout(TCP, 0), TIMEOUT_TCP_SYN);
        assert_eq!(timeout(TCP, CT_SEEN_REPLY), TIMEOUT_TCP_ESTABLISHED);
        assert_eq!(
            timeout(TCP, CT_SEEN_REPLY | CT_FIN_ORIG),
            TIMEOUT_TCP_ESTABLISHED
        );
        assert_eq!(
            timeout(TCP, CT_SEEN_REPLY | CT_FIN_ORIG | CT_FIN_REPLY),
            TIMEOUT_TCP_CLOSING
        );
        assert_eq!(timeout(TCP, CT_SEEN_REPLY | CT_RST), TIMEOUT_TCP_CLOSING);
        assert_eq!(timeout(UDP, 0), TIMEOUT_UDP);
        assert_eq!(timeout(ICMP, 0), TIMEOUT_ICMP);
    }

    #[test]
    fn reversed_swaps_ends() {
        let k = CtKey {
            saddr: 1,
            daddr: 2,
            sport: 3,
            dport: 4,
            proto: TCP,
            _pad: [0; 3],
        };
        let r = k.reversed();
        assert_eq!(
            (r.saddr, r.daddr, r.sport, r.dport, r.proto),
            (2, 1, 4, 3, TCP)
        );
        assert_eq!(r.reversed(), k);
    }
}
