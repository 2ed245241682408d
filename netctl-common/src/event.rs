//! Events the programs send to `netctl trace` through the `EVENTS` ring buffer, only while a
//! tracer has switched them on in `TRACE` (one flag check per packet otherwise).

use crate::ct::CtKey;

/// `TRACE` flags.
pub const TRACE_FLOWS: u32 = 1;
pub const TRACE_DROPS: u32 = 2;
pub const TRACE_PACKETS: u32 = 4;

/// Run-time tracing switches, at index 0 of `TRACE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    pub flags: u32,
    /// Bytes of each traced packet to copy (≤ [`SNAP_MAX`]).
    pub snaplen: u32,
}

/// Event kinds. Never renumber.
pub const EV_FLOW_NEW: u8 = 1;
pub const EV_FLOW_END: u8 = 2;
pub const EV_DROP: u8 = 3;
pub const EV_PACKET: u8 = 4;
/// The kernel dropped a container's packet outside netctl's programs (`skb:kfree_skb`);
/// `code` is the kernel's `enum skb_drop_reason` (255: a larger value).
pub const EV_KERNEL_DROP: u8 = 5;

/// `Event::hook` of kernel drops: no netctl hook saw them.
pub const HOOK_KERNEL: u8 = 0xff;

/// Where the `kfree_skb` program finds what it needs in a `struct sk_buff` (byte offsets,
/// read from the running kernel's BTF by `netctl trace`), at index 0 of `KDROP_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDropConfig {
    pub head: u32,
    pub network_header: u32,
    pub len: u32,
    pub dev: u32,
    /// `struct net_device`'s ifindex.
    pub dev_ifindex: u32,
    /// 0 until the offsets are filled in: the program does nothing.
    pub ready: u32,
}

/// `Event::flags` of a flow end.
pub const END_CLOSED: u8 = 1;
pub const END_EXPIRED: u8 = 2;

/// `Event::code` of a packet event: what the program did.
pub const VERDICT_PASS: u8 = 0;
pub const VERDICT_DROP: u8 = 1;
pub const VERDICT_REDIRECT: u8 = 2;

pub const SNAP_MAX: usize = 128;

/// Version 1 of the event record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC).
    pub ts: u64,
    pub kind: u8,
    /// [`crate::stats::Hook`] that saw it.
    pub hook: u8,
    /// Drop: [`crate::drop::DropReason`]; flow: `ct::KIND_*`; packet: `VERDICT_*`.
    pub code: u8,
    /// Flow end: `END_*`; drop and packet: 1 if `before`/`after` hold a parsed tuple.
    pub flags: u8,
    pub ifindex: u32,
    /// Packet: tuple as it arrived; flow: the original direction's tuple.
    pub before: CtKey,
    /// Packet: tuple as it left; flow: the reply direction's tuple.
    pub after: CtKey,
    /// Packet length on the wire.
    pub len: u32,
    /// Bytes of `data` that hold packet bytes (from the Ethernet header on).
    pub cap: u32,
    pub data: [u8; SNAP_MAX],
}

const _: () = assert!(core::mem::size_of::<TraceConfig>() == 8);
const _: () = assert!(core::mem::size_of::<Event>() == 184);
