//! Types shared by netctl's eBPF programs and its controller.
//!
//! Everything here is ABI between the kernel programs and userspace: `#[repr(C)]`, explicit
//! zeroed padding, sizes asserted at compile time. Changing a layout means bumping
//! [`LAYOUT_VERSION`], which makes the controller load into a fresh pin directory.
#![no_std]

pub mod stats;

/// Version of the map layouts; names the pin directory (`$NETCTL_BPFFS/v<N>`).
pub const LAYOUT_VERSION: u32 = 1;

/// Names of the programs in the eBPF object, as the controller looks them up.
pub mod programs {
    /// XDP on the uplink: first look at every packet arriving from outside.
    pub const UPLINK_XDP: &str = "uplink_xdp";
    /// TC ingress on the uplink: the half of the uplink path XDP does not run.
    pub const UPLINK_INGRESS: &str = "uplink_ingress";
    /// TC egress on the uplink: packets leaving the host.
    pub const UPLINK_EGRESS: &str = "uplink_egress";
    /// TC ingress on a container's host-side veth: every packet a container sends.
    pub const FROM_CONTAINER: &str = "from_container";
}

/// Names of the maps in the eBPF object (and of their pins).
pub mod maps {
    /// Per-CPU packet/byte/drop counters per hook ([`crate::stats::Hook`]).
    pub const HOOK_STATS: &str = "HOOK_STATS";

    /// Every map, pinned by these names.
    pub const ALL: [&str; 1] = [HOOK_STATS];
}
