//! The eBPF side of the controller: load and pin the programs, attach them where the state
//! says, fill the maps from the state, read the counters back.

pub mod attach;
pub mod load;
pub mod maps;
pub mod pins;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap,
        PerCpuValues, RingBuf,
    },
    Pod,
};
use netctl_common::{
    ct::{CtEntry, CtKey},
    drop::DropReason,
    event::TraceConfig,
    maps as names, programs,
    stats::{Counters, EndpointCounters, Hook},
};

pub use attach::{Attachment, Changes};
use load::ProgKind;
use pins::Pins;

use crate::config::{Config, XdpMode};

pub struct Dataplane {
    pins: Pins,
    hash: String,
    xdp: XdpMode,
}

impl Dataplane {
    /// Opens the pinned dataplane, loading and pinning the programs first if this binary's
    /// programs are not there yet (first run, after a reboot, or after an upgrade).
    pub fn open(cfg: &Config) -> Result<Self> {
        let pins = Pins::new(&cfg.bpffs);
        pins.prepare()?;
        for old in pins.other_layouts() {
            // Another layout version's maps cannot be read by this binary: drop them; the
            // reconcile that follows re-attaches everything to this version's programs.
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("removing old pins {}", old.display()))?;
        }
        let hash = load::object_hash();
        load::ensure_programs(&pins, &hash, cfg.ct_entries)?;
        Ok(Self {
            pins,
            hash,
            xdp: cfg.xdp,
        })
    }

    /// Whether XDP goes on an uplink. `auto` puts it on physical NICs only: on veth and other
    /// virtual devices XDP forces every large (GSO) packet to be split, which costs far more
    /// than it saves (see docs/BENCHMARKS.md).
    pub fn wants_xdp(&self, link: &crate::netlink::Link) -> bool {
        match self.xdp {
            XdpMode::Off => false,
            XdpMode::Auto => link.kind.is_empty(),
            XdpMode::Native | XdpMode::Generic => true,
        }
    }

    /// Attaches the programs to exactly these uplinks (name, ifindex, with XDP) and container
    /// veths (name, ifindex).
    pub fn reconcile_attachments(
        &self,
        uplinks: &[(String, u32, bool)],
        container_veths: &[(String, u32)],
    ) -> Result<Changes> {
        let mut desired = Vec::new();
        for (name, index, xdp) in uplinks {
            if *xdp {
                desired.push(att(
                    programs::UPLINK_XDP,
                    ProgKind::Xdp,
                    name,
                    *index,
                    false,
                ));
            }
            desired.push(att(
                programs::UPLINK_INGRESS,
                ProgKind::Tc,
                name,
                *index,
                false,
            ));
            desired.push(att(
                programs::UPLINK_EGRESS,
                ProgKind::Tc,
                name,
                *index,
                true,
            ));
        }
        for (name, index) in container_veths {
            desired.push(att(
                programs::FROM_CONTAINER,
                ProgKind::Tc,
                name,
                *index,
                false,
            ));
        }
        let changes = attach::reconcile(&self.pins, &self.hash, &desired, self.xdp)?;
        for stale in self.pins.stale_progs(&self.hash) {
            let _ = std::fs::remove_dir_all(stale);
        }
        Ok(changes)
    }

    /// Makes the maps hold exactly `want`; returns a line per kind of change. Conntrack
    /// entries of removed containers and ports go too, so a reused address or port never
    /// inherits an old flow.
    pub fn apply(&self, want: &maps::Desired) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        let mut config: Array<MapData, netctl_common::maps::Config> = self.map(names::CONFIG)?;
        if config.get(&0, 0)? != want.config {
            config.set(0, want.config, 0)?;
            changes.push("updated datapath config".to_string());
        }
        let host: BTreeMap<u32, u32> = want.host_addrs.iter().map(|a| (*a, 1)).collect();
        let mut gone = BTreeSet::new();
        let results = [
            (
                "published ports",
                self.sync_hash(names::PORTMAP, &want.portmap)?,
            ),
            ("host addresses", self.sync_hash(names::HOST_ADDRS, &host)?),
            ("uplinks", self.sync_hash(names::UPLINKS, &want.uplinks)?),
            ("networks", self.sync_hash(names::NETWORKS, &want.networks)?),
            ("endpoints", self.sync_endpoints(&want.endpoints)?),
            ("subnets", self.sync_subnets(&want.subnets)?),
        ];
        let ep_keys: BTreeSet<u32> = want.endpoints.keys().copied().collect();
        let port_keys: BTreeSet<_> = want.portmap.keys().copied().collect();
        self.sync_counter_keys::<u32, EndpointCounters>(names::EP_STATS, &ep_keys)?;
        self.sync_counter_keys::<netctl_common::maps::PortKey, u64>(names::PORT_STATS, &port_keys)?;
        for (name, (n, removed)) in results {
            gone.extend(removed);
            if n > 0 {
                changes.push(format!("{name}: {n} map entries changed"));
            }
        }
        if !gone.is_empty() {
            let n = self.flush_flows(&gone)?;
            if n > 0 {
                changes.push(format!(
                    "conntrack: {n} entries of removed containers flushed"
                ));
            }
        }
        Ok(changes)
    }

    /// Diff-applies a hash map; returns (entries changed, addresses of removed backends or
    /// endpoints, whose flows must go).
    fn sync_hash<K: Pod + Ord, V: Pod + PartialEq + Backed>(
        &self,
        name: &str,
        want: &BTreeMap<K, V>,
    ) -> Result<(usize, Vec<u32>)> {
        let mut map: HashMap<MapData, K, V> = self.map(name)?;
        let have: Vec<K> = map.keys().collect::<Result<_, _>>()?;
        let mut n = 0;
        let mut removed = Vec::new();
        for k in have {
            if !want.contains_key(&k) {
                if let Ok(v) = map.get(&k, 0) {
                    removed.extend(v.backend());
                }
                map.remove(&k)?;
                n += 1;
            }
        }
        for (k, v) in want {
            match map.get(k, 0) {
                Ok(old) if old == *v => {}
                Ok(old) => {
                    removed.extend(old.backend());
                    map.insert(k, v, 0)
                        .with_context(|| format!("updating {name}"))?;
                    n += 1;
                }
                Err(_) => {
                    map.insert(k, v, 0)
                        .with_context(|| format!("filling {name}"))?;
                    n += 1;
                }
            }
        }
        Ok((n, removed))
    }

    fn sync_endpoints(
        &self,
        want: &BTreeMap<u32, netctl_common::maps::EndpointInfo>,
    ) -> Result<(usize, Vec<u32>)> {
        let mut map: HashMap<MapData, u32, netctl_common::maps::EndpointInfo> =
            self.map(names::ENDPOINTS)?;
        let have: Vec<u32> = map.keys().collect::<Result<_, _>>()?;
        let mut n = 0;
        let mut removed = Vec::new();
        for k in have {
            if !want.contains_key(&k) {
                map.remove(&k)?;
                removed.push(k);
                n += 1;
            }
        }
        for (k, v) in want {
            if map.get(k, 0).ok() != Some(*v) {
                map.insert(k, v, 0).context("filling ENDPOINTS")?;
                n += 1;
            }
        }
        Ok((n, removed))
    }

    fn sync_subnets(&self, want: &BTreeMap<(u32, u32), u32>) -> Result<(usize, Vec<u32>)> {
        let mut map: LpmTrie<MapData, u32, u32> = self.map(names::SUBNETS)?;
        let have: Vec<Key<u32>> = map.keys().collect::<Result<_, _>>()?;
        let mut n = 0;
        for k in have {
            if !want.contains_key(&(k.prefix_len(), k.data())) {
                map.remove(&k)?;
                n += 1;
            }
        }
        for ((prefix, addr), bridge) in want {
            let key = Key::new(*prefix, *addr);
            if map.get(&key, 0).ok() != Some(*bridge) {
                map.insert(&key, bridge, 0).context("filling SUBNETS")?;
                n += 1;
            }
        }
        Ok((n, Vec::new()))
    }

    /// Per-CPU counter maps hold an entry per key the programs may count (made here, zeroed,
    /// so the datapath never inserts); counts of live keys are kept.
    fn sync_counter_keys<K: Pod + Ord, V: Pod + Default>(
        &self,
        name: &str,
        want: &BTreeSet<K>,
    ) -> Result<()> {
        let mut map: PerCpuHashMap<MapData, K, V> = self.map(name)?;
        let have: BTreeSet<K> = map.keys().collect::<Result<_, _>>()?;
        for k in have.difference(want) {
            map.remove(k)?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        for k in want.difference(&have) {
            let zero = PerCpuValues::try_from(vec![V::default(); cpus])?;
            map.insert(k, zero, 0)
                .with_context(|| format!("filling {name}"))?;
        }
        Ok(())
    }

    /// Counters per container address, summed over CPUs.
    pub fn endpoint_stats(&self) -> Result<BTreeMap<u32, EndpointCounters>> {
        let map: PerCpuHashMap<MapData, u32, EndpointCounters> = self.map(names::EP_STATS)?;
        let mut out = BTreeMap::new();
        for item in map.iter() {
            let (k, per_cpu) = item?;
            let mut sum = EndpointCounters::default();
            for c in per_cpu.iter() {
                sum.tx_packets += c.tx_packets;
                sum.tx_bytes += c.tx_bytes;
                sum.rx_packets += c.rx_packets;
                sum.rx_bytes += c.rx_bytes;
                sum.drops += c.drops;
            }
            out.insert(k, sum);
        }
        Ok(out)
    }

    /// New connections per published port, summed over CPUs.
    pub fn port_hits(&self) -> Result<BTreeMap<netctl_common::maps::PortKey, u64>> {
        let map: PerCpuHashMap<MapData, netctl_common::maps::PortKey, u64> =
            self.map(names::PORT_STATS)?;
        map.iter()
            .map(|item| {
                let (k, per_cpu) = item?;
                Ok((k, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Switches datapath events on or off (`TRACE_*` flags).
    pub fn set_trace(&self, cfg: TraceConfig) -> Result<()> {
        let mut map: Array<MapData, TraceConfig> = self.map(names::TRACE)?;
        map.set(0, cfg, 0)?;
        Ok(())
    }

    pub fn trace_config(&self) -> Result<TraceConfig> {
        let map: Array<MapData, TraceConfig> = self.map(names::TRACE)?;
        Ok(map.get(&0, 0)?)
    }

    /// The event ring buffer (one reader at a time consumes it).
    pub fn events(&self) -> Result<RingBuf<MapData>> {
        self.map(names::EVENTS)
    }

    /// Events the programs could not deliver because the ring buffer was full.
    pub fn events_lost(&self) -> Result<u64> {
        let map: PerCpuArray<MapData, u64> = self.map(names::EVENTS_LOST)?;
        Ok(map.get(&0, 0)?.iter().sum())
    }

    /// Removes conntrack entries idle past their timeout; returns them (the programs only
    /// remove an entry when its flow's next packet comes, which may be never).
    pub fn expire_flows(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        let mut ct: HashMap<MapData, CtKey, CtEntry> = self.map(names::CT)?;
        let now = monotonic_ns();
        let entries: BTreeMap<_, _> = ct
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, e)| (key_bytes(&k), (k, e)))
            .collect();
        let mut expired = Vec::new();
        for (k, e) in entries.values() {
            let last = entries
                .get(&key_bytes(&e.peer))
                .map_or(e.last_seen, |(_, p)| p.last_seen.max(e.last_seen));
            if now.saturating_sub(last) > netctl_common::ct::timeout(k.proto, e.flags) {
                let _ = ct.remove(k);
                if e.flags & netctl_common::ct::CT_REPLY == 0 {
                    expired.push((*k, *e));
                }
            }
        }
        Ok(expired)
    }

    /// Deletes the conntrack entries that mention any of `addrs`.
    fn flush_flows(&self, addrs: &BTreeSet<u32>) -> Result<usize> {
        let mut ct: HashMap<MapData, CtKey, CtEntry> = self.map(names::CT)?;
        let doomed: Vec<CtKey> = ct
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, e)| {
                [k.saddr, k.daddr, e.src_addr, e.dst_addr]
                    .iter()
                    .any(|a| addrs.contains(a))
            })
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            let _ = ct.remove(k);
        }
        Ok(doomed.len())
    }

    /// Entries in the conntrack table and its capacity.
    pub fn ct_occupancy(&self) -> Result<(usize, u32)> {
        let ct: HashMap<MapData, CtKey, CtEntry> = self.map(names::CT)?;
        let n = ct.keys().filter(|k| k.is_ok()).count();
        let cap = MapData::from_pin(self.pins.map(names::CT))?
            .info()?
            .max_entries();
        Ok((n, cap))
    }

    /// Drops per reason, summed over CPUs.
    pub fn drop_stats(&self) -> Result<Vec<(DropReason, u64)>> {
        let map: PerCpuArray<MapData, u64> = self.map(names::DROP_STATS)?;
        DropReason::ALL
            .iter()
            .map(|r| Ok((*r, map.get(&(*r as u32), 0)?.iter().sum())))
            .collect()
    }

    /// Counters per hook, summed over CPUs.
    pub fn hook_stats(&self) -> Result<Vec<(Hook, Counters)>> {
        let map: PerCpuArray<MapData, Counters> = self.map(names::HOOK_STATS)?;
        Hook::ALL
            .iter()
            .map(|hook| {
                let per_cpu = map.get(&(*hook as u32), 0)?;
                let mut sum = Counters::default();
                for c in per_cpu.iter() {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                    sum.drops += c.drops;
                }
                Ok((*hook, sum))
            })
            .collect()
    }

    fn map<T>(&self, name: &str) -> Result<T>
    where
        T: TryFrom<Map, Error = aya::maps::MapError>,
    {
        let path = self.pins.map(name);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        T::try_from(Map::from_map_data(data)?)
            .with_context(|| format!("map {name} has an unexpected type"))
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn key_bytes(k: &CtKey) -> (u32, u32, u16, u16, u8) {
    (k.saddr, k.daddr, k.sport, k.dport, k.proto)
}

/// Map values that point at a container address (so its flows go when they go).
trait Backed {
    fn backend(&self) -> Option<u32> {
        None
    }
}
impl Backed for netctl_common::maps::Backend {
    fn backend(&self) -> Option<u32> {
        Some(self.addr)
    }
}
impl Backed for u32 {}
impl Backed for netctl_common::maps::Uplink {}
impl Backed for netctl_common::maps::NetInfo {}

fn att(program: &'static str, kind: ProgKind, name: &str, index: u32, egress: bool) -> Attachment {
    Attachment {
        program,
        kind,
        ifname: name.to_string(),
        ifindex: index,
        egress,
    }
}

/// Removes every pin of this instance: links (detaching the programs), programs and maps.
pub fn remove_all(cfg: &Config) -> Result<()> {
    if cfg.bpffs.exists() {
        std::fs::remove_dir_all(&cfg.bpffs)
            .with_context(|| format!("removing {}", cfg.bpffs.display()))?;
    }
    Ok(())
}
