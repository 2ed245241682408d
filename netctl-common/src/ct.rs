//! Connection tracking entries. Every flow has two: one keyed by the tuple of its original
//! direction, one by the tuple of its replies, each as the packet shows it where it is looked
//! up (before translation). Either entry holds enough to rebuild the other ([`CtEntry::inverse`]),
//! so a half lost to LRU eviction is re-created from the half that survived.
//!
//! New flows live in `CT_NEW` until they are confirmed (TCP: the client's ACK after the
//! SYN-ACK; UDP and ICMP: an original packet after a reply), then both entries move to `CT`. A
//! flood of unconfirmed flows only ever evicts other unconfirmed flows.

/// A tuple as it appears on the wire, of either family (`A`: an IPv4 address as the packet
/// holds it, or IPv6's 16 bytes). For ICMP echo both ports hold the identifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// An address of either family, as the tables hold it.
pub trait Addr: Copy + PartialEq + Default {
    const ZERO: Self;
}

impl Addr for u32 {
    const ZERO: Self = 0;
}

impl Addr for [u8; 16] {
    const ZERO: Self = [0; 16];
}

/// IPv4's tuples and entries (tables `CT`, `CT_NEW`).
pub type CtKey = Tuple<u32>;
pub type CtEntry = Entry<u32>;
/// IPv6's (tables `CT6`, `CT6_NEW`): the same logic over wider addresses.
pub type CtKey6 = Tuple<[u8; 16]>;
pub type CtEntry6 = Entry<[u8; 16]>;

impl<A: Copy> Tuple<A> {
    /// The same flow seen from the other end.
    pub const fn reversed(&self) -> Tuple<A> {
        Tuple {
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
/// Routed without translation, opened from outside (a port a container on a routed IPv6
/// network publishes at its own address).
pub const KIND_ROUTED_IN: u8 = 5;
/// NAT64: an IPv6-only container's flow to an IPv4 server at 64:ff9b::/96, translated to
/// IPv4 from the uplink's address (`CT6`; the IPv4 side keyed by IPv4-mapped addresses).
pub const KIND_NAT64: u8 = 6;

/// Entry flags. Shared ones are set on both entries of a flow, always with an atomic OR.
pub const CT_REPLY: u64 = 1; // this entry is the reply direction (not shared)
pub const CT_SEEN_REPLY: u64 = 2; // the reply direction has carried a packet
pub const CT_FIN_ORIG: u64 = 4;
pub const CT_FIN_REPLY: u64 = 8;
pub const CT_RST: u64 = 16; // a RST inside the sequence window
pub const CT_CONFIRMED: u64 = 32; // moved to CT (see the module comment)
pub const CT_SEQ: u64 = 64; // `seq_end` holds a value (not shared)
pub const CT_ACK: u64 = 128; // `ack` holds a value (not shared)

/// Rewrites: which addresses of a matching packet change.
pub const REWRITE_SRC: u8 = 1;
pub const REWRITE_DST: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry<A> {
    /// bpf_ktime_get_ns of the last packet of the flow (either direction).
    pub last_seen: u64,
    /// `CT_*`; 64 bits because that is what the programs can OR into atomically.
    pub flags: u64,
    /// Key of the other direction's entry.
    pub peer: Tuple<A>,
    /// New source (if `rewrite & REWRITE_SRC`).
    pub src_addr: A,
    /// New destination (if `rewrite & REWRITE_DST`).
    pub dst_addr: A,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP: the sequence number after the last one this direction sent (host byte order).
    pub seq_end: u32,
    /// TCP: the last acknowledgment number this direction sent (host byte order).
    pub ack: u32,
    pub rewrite: u8,
    pub kind: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);
const _: () = assert!(core::mem::size_of::<CtKey6>() == 40);
const _: () = assert!(core::mem::size_of::<CtEntry6>() == 104);

impl<A: Addr> Entry<A> {
    /// The other half of the flow whose entry for `key` is `self`: keyed by `self.peer`,
    /// pointing back at `key`, with the opposite rewrite (what this direction changes in the
    /// destination, the other direction changes back in the source, and the other way round).
    pub const fn inverse(&self, key: &Tuple<A>, now: u64) -> Entry<A> {
        let mut rewrite = 0;
        let (mut src_addr, mut src_port, mut dst_addr, mut dst_port) = (A::ZERO, 0, A::ZERO, 0);
        if self.rewrite & REWRITE_DST != 0 {
            rewrite |= REWRITE_SRC;
            src_addr = key.daddr;
            src_port = key.dport;
        }
        if self.rewrite & REWRITE_SRC != 0 {
            rewrite |= REWRITE_DST;
            dst_addr = key.saddr;
            dst_port = key.sport;
        }
        Entry {
            last_seen: now,
            peer: *key,
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            flags: (self.flags & SHARED) | ((self.flags & CT_REPLY) ^ CT_REPLY),
            seq_end: 0,
            ack: 0,
            rewrite,
            kind: self.kind,
            _pad: [0; 2],
        }
    }
    /// [`Entry::inverse`] written field by field into `out` (no temporary: an IPv6 entry is
    /// large for a BPF stack).
    pub fn write_inverse(&self, key: &Tuple<A>, now: u64, out: &mut Entry<A>) {
        out.last_seen = now;
        out.flags = (self.flags & SHARED) | ((self.flags & CT_REPLY) ^ CT_REPLY);
        out.peer = *key;
        out.src_addr = A::ZERO;
        out.dst_addr = A::ZERO;
        out.src_port = 0;
        out.dst_port = 0;
        out.rewrite = 0;
        if self.rewrite & REWRITE_DST != 0 {
            out.rewrite |= REWRITE_SRC;
            out.src_addr = key.daddr;
            out.src_port = key.dport;
        }
        if self.rewrite & REWRITE_SRC != 0 {
            out.rewrite |= REWRITE_DST;
            out.dst_addr = key.saddr;
            out.dst_port = key.sport;
        }
        out.seq_end = 0;
        out.ack = 0;
        out.kind = self.kind;
        out._pad = [0; 2];
    }
}

/// The container a flow is counted against (its quota in `CT_OWNED`): the one that opened
/// it, or the backend of a published port. Either half of the flow gives the same answer.
pub const fn owner<A: Copy>(key: &Tuple<A>, e: &Entry<A>) -> A {
    let reply = e.flags & CT_REPLY != 0;
    match (e.kind, reply) {
        (KIND_DNAT, false) => e.dst_addr,
        (KIND_DNAT, true) => key.saddr,
        (KIND_ROUTED_IN, false) => key.daddr,
        (KIND_ROUTED_IN, true) => key.saddr,
        (KIND_ROUTED, true) => key.daddr,
        (_, true) => e.dst_addr,
        (_, false) => key.saddr,
    }
}

/// Flags both entries of a flow carry.
pub const SHARED: u64 = CT_SEEN_REPLY | CT_FIN_ORIG | CT_FIN_REPLY | CT_RST | CT_CONFIRMED;

/// Idle timeouts, nanoseconds.
pub const TIMEOUT_TCP_SYN: u64 = 60_000_000_000;
pub const TIMEOUT_TCP_ESTABLISHED: u64 = 21_600_000_000_000;
/// After a RST: the tuple stays reserved this long (nf_conntrack's CLOSE).
pub const TIMEOUT_TCP_CLOSE: u64 = 10_000_000_000;
/// After FIN both ways: the tuple stays reserved as long as a TIME_WAIT socket would hold it.
pub const TIMEOUT_TCP_TIME_WAIT: u64 = 60_000_000_000;
/// UDP before any reply.
pub const TIMEOUT_UDP: u64 = 30_000_000_000;
/// UDP once the other end has answered.
pub const TIMEOUT_UDP_REPLIED: u64 = 120_000_000_000;
pub const TIMEOUT_ICMP: u64 = 30_000_000_000;

pub const fn is_closed(flags: u64) -> bool {
    flags & CT_RST != 0 || flags & (CT_FIN_ORIG | CT_FIN_REPLY) == (CT_FIN_ORIG | CT_FIN_REPLY)
}

/// How long an entry may sit idle.
pub const fn timeout(proto: u8, flags: u64) -> u64 {
    match proto {
        crate::proto::TCP => {
            if flags & CT_RST != 0 {
                TIMEOUT_TCP_CLOSE
            } else if is_closed(flags) {
                TIMEOUT_TCP_TIME_WAIT
            } else if flags & CT_CONFIRMED != 0 {
                TIMEOUT_TCP_ESTABLISHED
            } else {
                TIMEOUT_TCP_SYN
            }
        }
        crate::proto::UDP => {
            if flags & CT_SEEN_REPLY != 0 {
                TIMEOUT_UDP_REPLIED
            } else {
                TIMEOUT_UDP
            }
        }
        _ => TIMEOUT_ICMP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ICMP, TCP, UDP};

    #[test]
    fn timeouts_follow_flow_state() {
        assert_eq!(timeout(TCP, 0), TIMEOUT_TCP_SYN);
        // A SYN-ACK alone does not establish a flow: the client's ACK does.
        assert_eq!(timeout(TCP, CT_SEEN_REPLY), TIMEOUT_TCP_SYN);
        let est = CT_SEEN_REPLY | CT_CONFIRMED;
        assert_eq!(timeout(TCP, est), TIMEOUT_TCP_ESTABLISHED);
        assert_eq!(timeout(TCP, est | CT_FIN_ORIG), TIMEOUT_TCP_ESTABLISHED);
        assert_eq!(
            timeout(TCP, est | CT_FIN_ORIG | CT_FIN_REPLY),
            TIMEOUT_TCP_TIME_WAIT
        );
        assert_eq!(timeout(TCP, est | CT_RST), TIMEOUT_TCP_CLOSE);
        assert_eq!(timeout(UDP, 0), TIMEOUT_UDP);
        assert_eq!(timeout(UDP, CT_SEEN_REPLY), TIMEOUT_UDP_REPLIED);
        assert_eq!(timeout(ICMP, 0), TIMEOUT_ICMP);
    }

    #[test]
    fn write_inverse_is_inverse() {
        let k = key(1, 2, 3, 4);
        let mut e = CtEntry {
            rewrite: REWRITE_SRC,
            src_addr: 9,
            src_port: 10,
            kind: KIND_SNAT,
            flags: CT_SEEN_REPLY | CT_SEQ,
            peer: key(2, 9, 4, 10),
            ..Default::default()
        };
        let mut out = CtEntry {
            seq_end: 77,
            ..Default::default()
        };
        e.write_inverse(&k, 5, &mut out);
        assert_eq!(out, e.inverse(&k, 5));
        e.rewrite = REWRITE_DST | REWRITE_SRC;
        e.dst_addr = 7;
        e.write_inverse(&k, 5, &mut out);
        assert_eq!(out, e.inverse(&k, 5));
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

    fn key(saddr: u32, daddr: u32, sport: u16, dport: u16) -> CtKey {
        CtKey {
            saddr,
            daddr,
            sport,
            dport,
            proto: TCP,
            _pad: [0; 3],
        }
    }

    #[test]
    fn both_halves_of_a_flow_have_one_owner() {
        let (c, h, b, x, u, g) = (1, 2, 3, 4, 5, 6);
        // (original key, original entry) of each kind of flow; the owner is `b` every time.
        let dnat = CtEntry {
            peer: key(b, c, 80, 1),
            dst_addr: b,
            dst_port: 80,
            rewrite: REWRITE_DST,
            kind: KIND_DNAT,
            ..Default::default()
        };
        let snat = CtEntry {
            peer: key(x, u, 80, 40000),
            src_addr: u,
            src_port: 40000,
            rewrite: REWRITE_SRC,
            kind: KIND_SNAT,
            ..Default::default()
        };
        let hairpin = CtEntry {
            peer: key(c, g, 80, 40001),
            src_addr: g,
            src_port: 40001,
            dst_addr: c,
            dst_port: 80,
            rewrite: REWRITE_SRC | REWRITE_DST,
            kind: KIND_HAIRPIN,
            ..Default::default()
        };
        let routed = CtEntry {
            peer: key(x, b, 80, 5),
            kind: KIND_ROUTED,
            ..Default::default()
        };
        for (k, e) in [
            (key(c, h, 1, 8080), dnat),
            (key(b, x, 7, 80), snat),
            (key(b, h, 9, 8080), hairpin),
            (key(b, x, 5, 80), routed),
        ] {
            assert_eq!(owner(&k, &e), b, "{e:?}");
            let reply = e.inverse(&k, 0);
            assert_eq!(owner(&e.peer, &reply), b, "{reply:?}");
        }
    }

    #[test]
    fn either_half_rebuilds_the_other() {
        // DNAT: client C:1 → H:8080 goes to B:80; replies B:80 → C:1 leave as H:8080.
        let (c, h, b) = (1, 2, 3);
        let orig_key = key(c, h, 1, 8080);
        let reply_key = key(b, c, 80, 1);
        let orig = CtEntry {
            peer: reply_key,
            dst_addr: b,
            dst_port: 80,
            rewrite: REWRITE_DST,
            kind: KIND_DNAT,
            flags: CT_SEEN_REPLY | CT_CONFIRMED | CT_SEQ,
            seq_end: 77,
            ..Default::default()
        };
        let reply = orig.inverse(&orig_key, 9);
        assert_eq!(reply.peer, orig_key);
        assert_eq!(reply.rewrite, REWRITE_SRC);
        assert_eq!((reply.src_addr, reply.src_port), (h, 8080));
        assert_eq!(reply.flags, CT_REPLY | CT_SEEN_REPLY | CT_CONFIRMED);
        assert_eq!((reply.last_seen, reply.seq_end), (9, 0));
        // …and back: the original is what it was (per-direction sequence state aside).
        let again = reply.inverse(&reply_key, 0);
        assert_eq!((again.dst_addr, again.dst_port), (b, 80));
        assert_eq!(again.rewrite, REWRITE_DST);
        assert_eq!(again.flags, CT_SEEN_REPLY | CT_CONFIRMED);
        assert_eq!(again.peer, reply_key);

        // Hairpin rewrites both ends; so does its inverse.
        let hp = CtEntry {
            peer: key(b, 9, 80, 61000),
            src_addr: 9,
            src_port: 61000,
            dst_addr: b,
            dst_port: 80,
            rewrite: REWRITE_SRC | REWRITE_DST,
            kind: KIND_HAIRPIN,
            ..Default::default()
        };
        let a_key = key(5, h, 4000, 8080);
        let back = hp.inverse(&a_key, 0);
        assert_eq!(back.rewrite, REWRITE_SRC | REWRITE_DST);
        assert_eq!((back.src_addr, back.src_port), (h, 8080));
        assert_eq!((back.dst_addr, back.dst_port), (5, 4000));
    }
}
