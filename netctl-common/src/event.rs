//! Events the programs send to `netctl trace` through the `EVENTS` ring buffer, only while a
//! tracer has switched them on in `TRACE` (one flag check per packet otherwise).

use crate::ct::{CtKey, CtKey6};

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
/// `Event::flags` of an IPv6 flow: its two tuples ([`CtKey6`]) are in `data`, the original
/// direction's first (`before` and `after` are IPv4's and stay empty).
pub const FLOW_IPV6: u8 = 0x80;

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
const _: () = assert!(2 * core::mem::size_of::<CtKey6>() <= SNAP_MAX);

impl Event {
    /// An IPv6 flow's original and reply tuples ([`FLOW_IPV6`]).
    pub fn flow6(&self) -> Option<[CtKey6; 2]> {
        let flow = self.kind == EV_FLOW_NEW || self.kind == EV_FLOW_END;
        if !flow || self.flags & FLOW_IPV6 == 0 {
            return None;
        }
        let at = |i: usize| {
            // SAFETY: `data` holds 2 tuples (asserted above); CtKey6 is plain data.
            unsafe {
                core::ptr::read_unaligned(
                    self.data.as_ptr().add(i * core::mem::size_of::<CtKey6>()) as *const CtKey6,
                )
            }
        };
        Some([at(0), at(1)])
    }

    /// Makes a flow event an IPv6 flow's, with these tuples (what the programs write).
    pub fn set_flow6(&mut self, orig: &CtKey6, reply: &CtKey6) {
        self.flags |= FLOW_IPV6;
        for (i, k) in [orig, reply].into_iter().enumerate() {
            // SAFETY: `data` holds 2 tuples (asserted above); unaligned writes of plain data.
            unsafe {
                core::ptr::write_unaligned(
                    self.data
                        .as_mut_ptr()
                        .add(i * core::mem::size_of::<CtKey6>()) as *mut CtKey6,
                    *k,
                )
            }
        }
    }
}
