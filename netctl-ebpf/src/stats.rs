//! Per-container counters: `EP_STATS` per container IPv4 address, `EP_STATS6` per veth for
//! IPv6. Entries exist for every container (the controller makes them), the programs only
//! add.

use aya_ebpf::maps::PerCpuHashMap;
use netctl_common::stats::EndpointCounters;

use crate::maps::{EP_STATS, EP_STATS6};

#[inline(always)]
fn add_sent(map: &PerCpuHashMap<u32, EndpointCounters>, key: u32, bytes: u32, dropped: bool) {
    if let Some(c) = map.get_ptr_mut(key) {
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
fn add_received(map: &PerCpuHashMap<u32, EndpointCounters>, key: u32, bytes: u32) {
    if let Some(c) = map.get_ptr_mut(key) {
        // SAFETY: per-CPU value of this CPU.
        unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += u64::from(bytes);
        }
    }
}

#[inline(always)]
pub fn sent(addr: u32, bytes: u32, dropped: bool) {
    add_sent(&EP_STATS, addr, bytes, dropped);
}

#[inline(always)]
pub fn received(addr: u32, bytes: u32) {
    add_received(&EP_STATS, addr, bytes);
}

/// IPv6 a container sent through its veth `ifindex`.
#[inline(always)]
pub fn sent6(ifindex: u32, bytes: u32, dropped: bool) {
    add_sent(&EP_STATS6, ifindex, bytes, dropped);
}

/// IPv6 from beyond the host handed to the container behind veth `ifindex`.
#[inline(always)]
pub fn received6(ifindex: u32, bytes: u32) {
    add_received(&EP_STATS6, ifindex, bytes);
}
