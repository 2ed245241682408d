//! Every map of the datapath, in one place. Names match `netctl_common::maps`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netctl_common::stats::{Counters, Hook};

#[map(name = "HOOK_STATS")]
pub static HOOK_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(Hook::COUNT, 0);
