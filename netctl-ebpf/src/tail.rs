//! Tail calls into the IPv6 programs (and NAT64's replies). The controller fills `TAIL_CALLS` with the programs it
//! loaded (the `_compat` twins where those are the ones); an empty slot drops the packet.

use aya_ebpf::{macros::map, maps::ProgramArray, programs::TcContext};
use netctl_common::{drop::DropReason, maps::TAIL_CALLS_MAX};

pub use netctl_common::maps::{
    TAIL_FROM_CONTAINER6 as FROM_CONTAINER6, TAIL_UPLINK_INGRESS6 as UPLINK_INGRESS6,
    TAIL_UPLINK_INGRESS64 as UPLINK_INGRESS64,
};

#[map(name = "TAIL_CALLS")]
static TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(TAIL_CALLS_MAX, 0);

/// Continues in the program at `index`; returns only when there is none, as a drop (fail
/// closed: IPv6 that nothing checked never passes).
#[inline(always)]
pub fn call(ctx: &TcContext, index: u32) -> Result<Option<i32>, DropReason> {
    // SAFETY: a tail call into a TC program the controller put there; on success this
    // program does not continue.
    unsafe { TAIL_CALLS.tail_call(ctx, index) };
    Err(DropReason::NotIpv4)
}
