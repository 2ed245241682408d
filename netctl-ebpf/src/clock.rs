//! The datapath's clock, on its own so that conntrack, parsing and events need not import
//! one another for it.

use aya_ebpf::helpers::bpf_ktime_get_ns;

/// Monotonic nanoseconds (CLOCK_MONOTONIC, as the controller's `monotonic_ns`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}
