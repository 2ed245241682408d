//! Per-CPU room for IPv6's large values while a packet is handled (a program runs to its
//! end on its CPU): flow entries, a port search, a route, an error's quote. The BPF stack
//! (512 bytes, all frames of a call chain together) has no space for them.

use aya_ebpf::{bindings::bpf_fib_lookup, macros::map, maps::PerCpuArray};
use netctl_common::{
    ct::{CtEntry6, Entry, Tuple},
    drop::DropReason,
    maps::{EndpointInfo, Ip6, NetInfo},
};

/// State of a port search, shared with `ct::probe`, the `bpf_loop` callback: on the stack for IPv4, in a
/// per-CPU map for IPv6 (`ct::Family::probe_state`).
#[repr(C)]
pub struct Probe<A> {
    pub key: Tuple<A>,
    pub reply: Entry<A>,
    pub now: u64,
    pub start: u32,
    pub span: u32,
    pub min: u32,
    /// The port taken (network order), 0 while none.
    pub port: u16,
}

/// Room for IPv6's flow entries while a packet is handled (per CPU: a program runs to its
/// end on its CPU).
#[repr(C)]
pub struct Scratch6 {
    pub probe: Probe<[u8; 16]>,
    pub orig: CtEntry6,
    pub reply: CtEntry6,
    pub e: CtEntry6,
    /// The route of the packet being translated.
    pub fib: bpf_fib_lookup,
    /// The quote of an ICMPv6 error being translated.
    pub quote: Quote6,
    /// An ICMPv6 error being made from an ICMPv4 one (`nat64_icmp`).
    pub error6: Error6,
}

/// An ICMPv6 error as its checksum covers it: the pseudo header, then the message.
#[repr(C)]
pub struct Error6 {
    pub src: Ip6,
    pub dst: Ip6,
    pub len: u32,
    pub next: u32,
    pub msg: Msg6,
}

/// An ICMPv6 error message quoting an IPv6 header and 8 bytes of its L4 header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Msg6 {
    pub kind: u8,
    pub code: u8,
    pub csum: u16,
    pub rest: [u8; 4],
    /// The quoted packet's IPv6 header: version to hop limit, then its addresses.
    pub head: [u8; 8],
    pub src: Ip6,
    pub dst: Ip6,
    pub l4: [u8; 8],
}

#[map(name = "SCRATCH6")]
pub static SCRATCH6: PerCpuArray<Scratch6> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's [`Scratch6`].
#[inline(always)]
pub fn scratch6() -> Result<&'static mut Scratch6, DropReason> {
    // SAFETY: this CPU's slot; the program runs to its end on this CPU, nothing else uses it
    // meanwhile.
    SCRATCH6
        .get_ptr_mut(0)
        .map(|s| unsafe { &mut *s })
        .ok_or(DropReason::CtFull)
}

/// What an ICMPv6 error quotes (an IPv6 header without extension headers, then at least 8
/// bytes of its L4 header), and what its flow rewrites there.
#[repr(C)]
pub struct Quote6 {
    pub src: Ip6,
    pub dst: Ip6,
    /// The flow's address and port for the quoted end that changes.
    pub addr: Ip6,
    pub sport: u16,
    pub dport: u16,
    pub port: u16,
    pub proto: u8,
    /// `REWRITE_*` of the flow's entry in this direction.
    pub rewrite: u8,
}

/// The sender of a container's IPv6 packet bound beyond the host: its endpoint and network,
/// from the checks to the translation (kept off the stack: on older kernels each BPF function
/// frame counts at least 32 bytes, and the checks' chain has none to spare).
#[map(name = "SENDER6")]
static SENDER6: PerCpuArray<(EndpointInfo, NetInfo)> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn sender() -> Result<&'static mut (EndpointInfo, NetInfo), DropReason> {
    // SAFETY: this CPU's slot; the program runs to its end on this CPU.
    SENDER6
        .get_ptr_mut(0)
        .map(|s| unsafe { &mut *s })
        .ok_or(DropReason::Malformed)
}
