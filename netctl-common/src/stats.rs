//! Counters the programs keep and `netctl stats` reads.

/// Where a counter was taken. Index into `HOOK_STATS`; never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    UplinkXdp = 0,
    UplinkIngress = 1,
    UplinkEgress = 2,
    FromContainer = 3,
    /// TC ingress of the overlay's VXLAN device: what comes out of the tunnel.
    Tunnel = 4,
    /// TC egress of a container's host-side veth: what the host or the bridge hands to it.
    ToContainer = 5,
}

impl Hook {
    pub const COUNT: u32 = 6;
    pub const ALL: [Hook; Self::COUNT as usize] = [
        Hook::UplinkXdp,
        Hook::UplinkIngress,
        Hook::UplinkEgress,
        Hook::FromContainer,
        Hook::Tunnel,
        Hook::ToContainer,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::UplinkXdp => "uplink-xdp",
            Hook::UplinkIngress => "uplink-ingress",
            Hook::UplinkEgress => "uplink-egress",
            Hook::FromContainer => "from-container",
            Hook::Tunnel => "tunnel-ingress",
            Hook::ToContainer => "to-container",
        }
    }
}

/// Per-CPU counters of one hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

const _: () = assert!(core::mem::size_of::<Counters>() == 24);

/// Per-CPU counters of one container address: what it sent (seen leaving its veth) and what
/// reached it from outside through the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: u64,
}

const _: () = assert!(core::mem::size_of::<EndpointCounters>() == 40);

impl EndpointCounters {
    /// Adds `other`'s counts (another CPU's, another family's, another endpoint's).
    pub fn add(&mut self, other: &Self) {
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.drops += other.drops;
    }
}
