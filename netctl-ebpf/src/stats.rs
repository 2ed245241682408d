//! Per-CPU counters: no atomics needed, userspace sums the CPUs.

use netctl_common::stats::Hook;

use crate::maps::HOOK_STATS;

#[inline(always)]
pub fn count(hook: Hook, bytes: u64) {
    if let Some(c) = HOOK_STATS.get_ptr_mut(hook as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
