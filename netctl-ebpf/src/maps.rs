//! Every map of the datapath, in one place. Names and value types come from
//! `netctl_common::maps`; the controller pins them and fills all but `CT` and the counters.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netctl_common::{
    ct::{CtEntry, CtEntry6, CtKey, CtKey6},
    drop::DropReason,
    event::TraceConfig,
    maps::*,
    stats::{Counters, EndpointCounters, Hook},
};

#[map(name = "HOOK_STATS")]
pub static HOOK_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(Hook::COUNT, 0);

#[map(name = "DROP_STATS")]
pub static DROP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "PORTMAP")]
pub static PORTMAP: HashMap<PortKey, Backend> = HashMap::with_max_entries(PORTMAP_MAX, 0);

#[map(name = "SHAPED")]
pub static SHAPED: HashMap<u32, u32> = HashMap::with_max_entries(SHAPED_MAX, 0);

#[map(name = "HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(HOST_ADDRS_MAX, 0);

#[map(name = "UPLINKS")]
pub static UPLINKS: HashMap<u32, Uplink> = HashMap::with_max_entries(UPLINKS_MAX, 0);

#[map(name = "ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "NETWORKS")]
pub static NETWORKS: HashMap<u32, NetInfo> = HashMap::with_max_entries(NETWORKS_MAX, 0);

#[map(name = "SUBNETS")]
pub static SUBNETS: LpmTrie<u32, u32> = LpmTrie::with_max_entries(NETWORKS_MAX, 1); // BPF_F_NO_PREALLOC

#[map(name = "ENDPOINTS6")]
pub static ENDPOINTS6: HashMap<Ip6, EndpointInfo> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "SUBNETS6")]
pub static SUBNETS6: LpmTrie<Ip6, u32> = LpmTrie::with_max_entries(NETWORKS_MAX, 1); // BPF_F_NO_PREALLOC

#[map(name = "HOST_ADDRS6")]
pub static HOST_ADDRS6: HashMap<Ip6, u32> = HashMap::with_max_entries(HOST_ADDRS_MAX, 0);

#[map(name = "VETHS")]
pub static VETHS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "LINKS")]
pub static LINKS: HashMap<LinkKey, u32> = HashMap::with_max_entries(LINKS_MAX, 0);

#[map(name = "CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_MAX_DEFAULT, 0);

#[map(name = "FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::with_max_entries(FRAGS_MAX, 0);

#[map(name = "CT_NEW")]
pub static CT_NEW: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CT_MAX_DEFAULT / CT_NEW_RATIO, 0);

#[map(name = "CT_OWNED")]
pub static CT_OWNED: HashMap<u32, u64> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "CT_FILL")]
pub static CT_FILL: Array<u64> = Array::with_max_entries(1, 0);

/// IPv6's hash maps take memory per entry (BPF_F_NO_PREALLOC): most hosts have few or none,
/// and preallocated they would cost every instance megabytes.
const NO_PREALLOC: u32 = 1;

#[map(name = "CT6")]
pub static CT6: LruHashMap<CtKey6, CtEntry6> =
    LruHashMap::with_max_entries(CT_MAX_DEFAULT / CT6_SHARE, 0);

#[map(name = "CT6_NEW")]
pub static CT6_NEW: LruHashMap<CtKey6, CtEntry6> =
    LruHashMap::with_max_entries(CT_MAX_DEFAULT / CT6_SHARE / CT_NEW_RATIO, 0);

#[map(name = "CT6_OWNED")]
pub static CT6_OWNED: HashMap<Ip6, u64> = HashMap::with_max_entries(ENDPOINTS_MAX, NO_PREALLOC);

#[map(name = "CT6_FILL")]
pub static CT6_FILL: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "UPLINKS6")]
pub static UPLINKS6: HashMap<u32, Ip6> = HashMap::with_max_entries(UPLINKS_MAX, NO_PREALLOC);

#[map(name = "PUBLISHED6")]
pub static PUBLISHED6: HashMap<Published6, u32> =
    HashMap::with_max_entries(PORTMAP_MAX, NO_PREALLOC);

#[map(name = "PORTMAP6")]
pub static PORTMAP6: HashMap<PortKey6, Backend6> =
    HashMap::with_max_entries(PORTMAP_MAX, NO_PREALLOC);

#[map(name = "PORT_STATS6")]
pub static PORT_STATS6: PerCpuHashMap<PortKey6, u64> =
    PerCpuHashMap::with_max_entries(PORTMAP_MAX, NO_PREALLOC);

#[map(name = "EP_STATS6")]
pub static EP_STATS6: PerCpuHashMap<u32, EndpointCounters> =
    PerCpuHashMap::with_max_entries(ENDPOINTS_MAX, NO_PREALLOC);

#[map(name = "IP6_OF")]
pub static IP6_OF: HashMap<u32, Ip6> = HashMap::with_max_entries(ENDPOINTS_MAX, NO_PREALLOC);

#[map(name = "TRACE")]
pub static TRACE: Array<TraceConfig> = Array::with_max_entries(1, 0);

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "EVENTS_LOST")]
pub static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "EP_STATS")]
pub static EP_STATS: PerCpuHashMap<u32, EndpointCounters> =
    PerCpuHashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "PORT_STATS")]
pub static PORT_STATS: PerCpuHashMap<PortKey, u64> =
    PerCpuHashMap::with_max_entries(PORTMAP_MAX, 0);

#[inline(always)]
pub fn config() -> Config {
    CONFIG.get(0).copied().unwrap_or_default()
}

#[inline(always)]
pub fn is_host_addr(addr: u32) -> bool {
    // SAFETY: read-only use of a value the controller writes whole.
    unsafe { HOST_ADDRS.get(addr).is_some() }
}

#[inline(always)]
pub fn endpoint(addr: u32) -> Option<EndpointInfo> {
    unsafe { ENDPOINTS.get(addr).copied() }
}

#[inline(always)]
pub fn endpoint6(addr: &Ip6) -> Option<EndpointInfo> {
    // SAFETY: read-only copy of a value the controller writes whole.
    unsafe { ENDPOINTS6.get(addr).copied() }
}

#[inline(always)]
pub fn network(bridge: u32) -> Option<NetInfo> {
    unsafe { NETWORKS.get(bridge).copied() }
}

#[inline(always)]
pub fn uplink(ifindex: u32) -> Option<Uplink> {
    unsafe { UPLINKS.get(ifindex).copied() }
}

/// Whether the container behind host-side veth `ifindex` is shaped by qdiscs on that veth
/// (see [`SHAPED`]): its packets must go through them.
#[inline(always)]
pub fn shaped(ifindex: u32) -> bool {
    // SAFETY: a read of a value the daemon writes whole.
    unsafe { SHAPED.get(ifindex).is_some() }
}

/// The backend of a published port (and the key that matched): the exact host address
/// first, then the wildcard, which only counts for addresses of this host. A packet for a
/// loopback address never gets one: ports published on 127.0.0.1 are for the host's own
/// processes (the socket programs), never for whoever puts 127.0.0.1 in a packet.
#[inline(always)]
pub fn published(addr: u32, port: u16, proto: u8) -> Option<(PortKey, Backend)> {
    if addr.to_ne_bytes()[0] == 127 {
        return None;
    }
    let mut key = PortKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only copies of values the controller writes whole.
    if let Some(b) = unsafe { PORTMAP.get(key) } {
        return Some((key, *b));
    }
    if !is_host_addr(addr) {
        return None;
    }
    key.addr = 0;
    unsafe { PORTMAP.get(key) }.map(|b| (key, *b))
}

/// The backend of a port published at `addr`, one of the host's IPv6 addresses: there, at
/// every IPv6 address (`[::]`), else at every address of both families (its IPv4 address,
/// mapped).
#[inline(always)]
pub fn published6(addr: &Ip6, port: u16, proto: u8) -> Option<Backend6> {
    let mut key = PortKey6 {
        addr: *addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only copies of values the controller writes whole.
    if let Some(b) = unsafe { PORTMAP6.get(key) } {
        return Some(*b);
    }
    key.addr = [0; 16];
    if let Some(b) = unsafe { PORTMAP6.get(key) } {
        return Some(*b);
    }
    let (_, b) = published(0, port, proto)?;
    let a = b.addr.to_ne_bytes();
    Some(Backend6 {
        addr: [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ],
        port: b.port,
        _pad: 0,
    })
}

/// Counts a new connection of the port `published6` found.
#[inline(always)]
pub fn count_hit6(addr: &Ip6, port: u16, proto: u8) {
    let mut key = PortKey6 {
        addr: *addr,
        port,
        proto,
        _pad: 0,
    };
    let mut hits = PORT_STATS6.get_ptr_mut(key);
    if hits.is_none() {
        key.addr = [0; 16];
        hits = PORT_STATS6.get_ptr_mut(key);
    }
    match hits {
        // SAFETY: per-CPU value of this CPU.
        Some(hits) => unsafe { *hits += 1 },
        None => count_hit(&PortKey {
            addr: 0,
            port,
            proto,
            _pad: 0,
        }),
    }
}

/// Counts a new connection of a published port.
#[inline(always)]
pub fn count_hit(key: &PortKey) {
    if let Some(hits) = PORT_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value of this CPU.
        unsafe { *hits += 1 };
    }
}
