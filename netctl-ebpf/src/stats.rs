//! Per-container counters (`EP_STATS`): entries exist for every container address (the
//! controller makes them), the programs only add.

use crate::maps::EP_STATS;

#[inline(always)]
pub fn sent(addr: u32, bytes: u32, dropped: bool) {
    if let Some(c) = EP_STATS.get_ptr_mut(addr) {
        // SAFETY: per-CPU value of this CPU.
        unsafe {
            (*c).tx_packets += 1;
            (*c).tx_bytes += u64::from(bytes);
            if dropped {
                (*c).drops += 1;
            }
        }
    }
}

#[inline(always)]
pub fn received(addr: u32, bytes: u32) {
    if let Some(c) = EP_STATS.get_ptr_mut(addr) {
        unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += u64::from(bytes);
        }
    }
}
