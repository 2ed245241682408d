//! Why a packet was dropped. The index of `DROP_STATS`, the reason in drop events, the words
//! `netctl stats` and `netctl trace` print. Retired codes are never renumbered.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Headers shorter than they claim, or unreadable.
    Malformed = 0,
    /// Between containers of different networks (Docker's DOCKER-ISOLATION chains).
    Isolation = 1,
    /// Between containers of a network with ICC off.
    IccOff = 2,
    /// Out of (or into) an internal network.
    Internal = 3,
    /// From outside straight to a container address that no published port or flow leads to.
    NoWayIn = 4,
    /// Connection tracking could not store the flow.
    CtFull = 5,
    /// No free source port for SNAT after probing.
    NatPortsExhausted = 6,
    /// A later fragment out of a masquerading network whose first fragment was not seen:
    /// nothing to translate it with.
    Fragment = 7,
    /// A reply for a translated flow whose entry is gone (expired or evicted).
    CtMiss = 8,
    /// A rewrite helper failed.
    RewriteFailed = 9,
    /// A new flow's reply tuple is already taken by another flow.
    CtConflict = 10,
    /// A container sent with a source address or MAC that is not its own, or a packet from
    /// outside carries the address of a container or of the host itself.
    Spoofed = 11,
    /// Masquerade of a protocol without ports (only TCP, UDP and ICMP are translated).
    UnsupportedProtocol = 12,
    /// A container sent a frame that is neither IPv4, ARP nor IPv6 (or IPv6 on a network
    /// without it): nothing the isolation rules do not understand leaves a container.
    NotIpv4 = 13,
    /// A packet the datapath forwards itself (hairpin) whose TTL ran out.
    TtlExceeded = 14,
    /// Forwarded traffic that is neither a container's nor a tracked flow, on a host whose
    /// forwarding netctl turned on (Docker's FORWARD policy DROP).
    ForwardDenied = 15,
    /// Out of the overlay tunnel: a VNI of no local overlay network, a sender that is not a
    /// container of that network on the host that sent it, or a destination that is no local
    /// container of it.
    Tunnel = 16,
    /// A container sent to the VXLAN port of this host or of a cluster peer: masqueraded, it
    /// would pass for the host's own tunnel traffic there.
    TunnelInjection = 17,
    /// A flow would take a container past its share of the conntrack table: refused at
    /// confirmation, so one container cannot evict the others' flows.
    CtQuota = 18,
    /// A frame for a container on another host larger than the overlay tunnel carries (its
    /// sender raised its own MTU above its network's).
    TunnelMtu = 19,
    /// A frame of an encrypted overlay network that would cross (or came across) without
    /// encryption: plain VXLAN for it from the underlay, or a host without its WireGuard
    /// device.
    Unencrypted = 20,
    /// A container acted as an IPv6 router: a router advertisement, a redirect, or a routing
    /// header asking the receiver to forward the packet on.
    Ipv6Router = 21,
    /// An IPv6 packet from a container for an address beyond the host that the host has no
    /// route to through an uplink with an IPv6 address (or multicast wider than the link).
    Ipv6Unrouted = 22,
}

impl DropReason {
    pub const COUNT: u32 = 23;
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        DropReason::Malformed,
        DropReason::Isolation,
        DropReason::IccOff,
        DropReason::Internal,
        DropReason::NoWayIn,
        DropReason::CtFull,
        DropReason::NatPortsExhausted,
        DropReason::Fragment,
        DropReason::CtMiss,
        DropReason::RewriteFailed,
        DropReason::CtConflict,
        DropReason::Spoofed,
        DropReason::UnsupportedProtocol,
        DropReason::NotIpv4,
        DropReason::TtlExceeded,
        DropReason::ForwardDenied,
        DropReason::Tunnel,
        DropReason::TunnelInjection,
        DropReason::CtQuota,
        DropReason::TunnelMtu,
        DropReason::Unencrypted,
        DropReason::Ipv6Router,
        DropReason::Ipv6Unrouted,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Isolation => "isolation",
            DropReason::IccOff => "icc-off",
            DropReason::Internal => "internal-network",
            DropReason::NoWayIn => "no-way-in",
            DropReason::CtFull => "conntrack-full",
            DropReason::NatPortsExhausted => "nat-ports-exhausted",
            DropReason::Fragment => "fragment",
            DropReason::CtMiss => "conntrack-miss",
            DropReason::RewriteFailed => "rewrite-failed",
            DropReason::CtConflict => "conntrack-conflict",
            DropReason::Spoofed => "spoofed-source",
            DropReason::UnsupportedProtocol => "unsupported-protocol",
            DropReason::NotIpv4 => "not-ipv4",
            DropReason::TtlExceeded => "ttl-exceeded",
            DropReason::ForwardDenied => "forward-denied",
            DropReason::Tunnel => "tunnel-rejected",
            DropReason::TunnelInjection => "tunnel-injection",
            DropReason::CtQuota => "conntrack-quota",
            DropReason::TunnelMtu => "tunnel-mtu",
            DropReason::Unencrypted => "tunnel-unencrypted",
            DropReason::Ipv6Router => "ipv6-router",
            DropReason::Ipv6Unrouted => "ipv6-unrouted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_below_count_is_its_reason() {
        // The datapath turns a code back into a reason by value (`step::back`).
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
        }
    }

    #[test]
    fn codes_are_dense_and_the_readme_explains_every_reason() {
        let readme = include_str!("../../README.md");
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{} is out of place", r.name());
            let quoted = readme.split('`').any(|word| word == r.name());
            assert!(
                quoted,
                "README.md does not list the drop reason {}",
                r.name()
            );
        }
    }
}
