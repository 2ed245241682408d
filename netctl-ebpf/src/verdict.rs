//! The one place verdicts are counted: per hook, and every drop by reason.

use netctl_common::{drop::DropReason, stats::Hook};

use crate::maps::{DROP_STATS, HOOK_STATS};

#[inline(always)]
pub fn count(hook: Hook, bytes: u32) {
    if let Some(c) = HOOK_STATS.get_ptr_mut(hook as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(bytes);
        }
    }
}

#[inline(always)]
pub fn dropped(hook: Hook, reason: DropReason) {
    if let Some(c) = HOOK_STATS.get_ptr_mut(hook as u32) {
        unsafe { (*c).drops += 1 };
    }
    if let Some(c) = DROP_STATS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}
