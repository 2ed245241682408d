//! The eBPF side of the controller: load and pin the programs, attach them where the state
//! says, fill the maps from the state, read the counters back.

pub mod applied;
pub mod attach;
pub mod btf;
mod diff;
pub mod features;
pub mod load;
pub mod maps;
pub mod pins;
pub mod spares;

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
    ct::{CtEntry, CtKey, Entry, Tuple},
    drop::DropReason,
    event::TraceConfig,
    maps::{self as names, Backend, PortKey},
    overlay::{self, OverlayConfig, Remote, Remote6},
    programs,
    stats::{Counters, EndpointCounters, Hook},
};

use applied::Applied;
use attach::{att, container_attachments};
pub use attach::{Attachment, Changes, Modes};
use diff::difference;
use features::Features;
use load::ProgKind;
use pins::Pins;

use crate::base::config::{Config, XdpMode};

pub struct Dataplane {
    pins: Pins,
    applied_path: std::path::PathBuf,
    /// The object's hash and the features it was loaded for: names the pinned programs.
    hash: String,
    modes: Modes,
    pub features: Features,
}

/// The identity of the programs this binary loads on this kernel.
fn programs_hash(f: &Features) -> String {
    format!("{}-{}", load::object_hash(), f.variant())
}

fn modes(cfg: &Config, f: &Features) -> Modes {
    let xdp = match cfg.xdp {
        // Without the mark, XDP cannot tell TC what it did: TC does all the work.
        _ if !f.has(features::XDP) || !f.has(features::XDP_ADJUST_META) => XdpMode::Off,
        mode => mode,
    };
    Modes {
        xdp,
        tcx: f.has(features::TCX),
    }
}

/// What a conntrack sweep removed: the expired flows of each family (by their original
/// direction's entry), and how many entries the kernel evicted meanwhile.
pub struct Expired {
    pub v4: Vec<(CtKey, CtEntry)>,
    pub v6: Vec<(netctl_common::ct::CtKey6, netctl_common::ct::CtEntry6)>,
    pub evicted: u64,
}

impl Dataplane {
    /// Opens the pinned dataplane, loading and pinning the programs first if this binary's
    /// programs are not there yet (first run, after a reboot, or after an upgrade). Fails,
    /// before anything is loaded, on a kernel that lacks a feature netctl cannot do without.
    pub fn open(cfg: &Config) -> Result<Self> {
        let features = Features::detect(&cfg.features_deny)?;
        features.check_required()?;
        let pins = Pins::new(&cfg.bpffs);
        pins.prepare()?;
        for old in pins.other_layouts() {
            // Another layout version's maps cannot be read by this binary: drop them; the
            // reconcile that follows re-attaches everything to this version's programs.
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("removing old pins {}", old.display()))?;
        }
        let hash = programs_hash(&features);
        load::ensure_programs(&pins, &hash, cfg.ct_entries, &features)?;
        Ok(Self {
            pins,
            applied_path: cfg.state_dir.join("applied"),
            hash,
            modes: modes(cfg, &features),
            features,
        })
    }

    /// The pinned dataplane if it is there, without loading anything (for the daemon, which
    /// leaves loading and attaching to the commands' reconcile).
    pub fn open_existing(cfg: &Config) -> Option<Self> {
        let pins = Pins::new(&cfg.bpffs);
        if !pins.map(netctl_common::maps::CT).exists() {
            return None;
        }
        let features = Features::detect(&cfg.features_deny).ok()?;
        Some(Self {
            pins,
            applied_path: cfg.state_dir.join("applied"),
            hash: programs_hash(&features),
            modes: modes(cfg, &features),
            features,
        })
    }

    /// Attaches the kernel-drop tracer (`kfree_skb`) for as long as the returned value lives,
    /// with the names of the kernel's drop reasons.
    pub fn trace_kernel_drops(&self, cfg: &Config) -> Result<load::KernelDrops> {
        load::kernel_drops(&self.pins, cfg.ct_entries, &self.features)
    }

    /// Whether XDP goes on an uplink. `auto` puts it on physical NICs only: on veth and other
    /// virtual devices XDP forces every large (GSO) packet to be split, which costs far more
    /// than it saves (see docs/BENCHMARKS.md).
    pub fn wants_xdp(&self, link: &crate::kernel::netlink::Link) -> bool {
        match self.modes.xdp {
            XdpMode::Off => false,
            XdpMode::Auto => link.kind.is_empty(),
            XdpMode::Native | XdpMode::Generic => true,
        }
    }

    /// Attaches the programs to exactly these uplinks (name, ifindex, with XDP), container
    /// veths (name, ifindex) and the overlay's tunnel devices (program, name, ifindex).
    pub fn reconcile_attachments(
        &self,
        uplinks: &[(String, u32, bool)],
        container_veths: &[(String, u32)],
        tunnels: &[(&'static str, String, u32)],
    ) -> Result<Changes> {
        let mut desired = Vec::new();
        for (name, index, xdp) in uplinks {
            if *xdp {
                desired.push(att(programs::UPLINK_XDP, ProgKind::Xdp, name, *index));
            }
            desired.push(att(programs::UPLINK_INGRESS, ProgKind::Tc, name, *index));
            desired.push(att(programs::UPLINK_EGRESS, ProgKind::Tc, name, *index));
        }
        for (name, index) in container_veths {
            desired.extend(container_attachments(name, *index));
        }
        for (program, name, index) in tunnels {
            desired.push(att(program, ProgKind::Tc, name, *index));
        }
        if let Some(root) = crate::kernel::cgroup::root() {
            for (program, kind) in load::wanted_programs(&self.features) {
                if let ProgKind::Sock(_) = kind {
                    desired.push(att(program, kind, &root, 0));
                }
            }
        }
        let changes = attach::reconcile(&self.pins, &self.hash, &desired, self.modes)?;
        for stale in self.pins.stale_progs(&self.hash) {
            let _ = std::fs::remove_dir_all(stale);
        }
        Ok(changes)
    }

    /// The daemon's spare veths of this instance, where the kernel has TCX (see [`spares`]).
    pub fn spares(&self, state_dir: &std::path::Path) -> Option<spares::Spares> {
        self.modes.tcx.then(|| {
            spares::Spares::new(self.pins.clone(), self.hash.clone(), self.modes, state_dir)
        })
    }

    /// The modes this kernel and the configuration give the attachments.
    pub fn modes(&self) -> Modes {
        self.modes
    }

    /// Every attachment of this instance: (program, ifindex, how).
    pub fn attachments(&self) -> Vec<(String, u32, &'static str)> {
        attach::attached(&self.pins.links())
    }

    /// Attaches the container program to one veth ahead of the reconcile (which then finds
    /// it attached): a TCX attachment waits for an RCU grace period, which a command spends
    /// on the rest of its work this way.
    pub fn attach_container_veth(&self, name: &str, index: u32) -> Result<()> {
        // Both directions at once: each attachment waits for its own grace period.
        let [from, to] = container_attachments(name, index);
        std::thread::scope(|s| {
            let to = s.spawn(|| attach::attach_missing(&self.pins, &self.hash, &to, self.modes));
            let from = attach::attach_missing(&self.pins, &self.hash, &from, self.modes);
            to.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("attaching to_container failed")))
                .and(from)
        })
    }

    /// Makes the maps hold exactly `want`; returns a line per kind of change. Conntrack
    /// entries of removed containers and ports go too, so a reused address or port never
    /// inherits an old flow.
    pub fn apply(&self, want: &maps::Desired, full: bool) -> Result<Vec<String>> {
        self.check_capacity(want)?;
        let mut changes = Vec::new();
        let mut config: Array<MapData, netctl_common::maps::Config> = self.map(names::CONFIG)?;
        let want_config = self.with_ct_limits(want.config)?;
        if config.get(&0, 0)? != want_config {
            config.set(0, want_config, 0)?;
            changes.push("updated datapath config".to_string());
        }
        let mut overlay: Array<MapData, OverlayConfig> = self.map(overlay::OVERLAY_CONFIG)?;
        if overlay.get(&0, 0)? != want.overlay {
            overlay.set(0, want.overlay, 0)?;
            changes.push("updated overlay config".to_string());
        }
        let mut applied = Applied::load(self.applied_path.clone(), !full);
        let host: BTreeMap<u32, u32> = want.host_addrs.iter().map(|a| (*a, 1)).collect();
        let host6: BTreeMap<netctl_common::maps::Ip6, u32> =
            want.host_addrs6.iter().map(|a| (*a, 1)).collect();
        let (ports, old_backends) = self.sync_ports(&want.ports, &mut applied)?;
        let (endpoints, old_endpoints) =
            self.sync_hash(names::ENDPOINTS, &want.endpoints, &mut applied)?;
        let (endpoints6, old_endpoints6) =
            self.sync_hash(names::ENDPOINTS6, &want.endpoints6, &mut applied)?;
        let gone6: BTreeSet<netctl_common::maps::Ip6> =
            old_endpoints6.iter().map(|(addr, _)| *addr).collect();
        // Flows of removed containers and re-pointed ports must go with them.
        let mut gone: BTreeSet<u32> = old_backends.iter().map(|(_, b)| b.addr).collect();
        gone.extend(old_endpoints.iter().map(|(addr, _)| *addr));
        let counts = [
            ("published ports", ports),
            ("endpoints", endpoints),
            (
                "host addresses",
                self.sync_hash(names::HOST_ADDRS, &host, &mut applied)?.0,
            ),
            (
                "uplinks",
                self.sync_hash(names::UPLINKS, &want.uplinks, &mut applied)?
                    .0,
            ),
            (
                "networks",
                self.sync_hash(names::NETWORKS, &want.networks, &mut applied)?
                    .0,
            ),
            ("subnets", self.sync_subnets(names::SUBNETS, &want.subnets)?),
            ("IPv6 endpoints", endpoints6),
            (
                "IPv6 host addresses",
                self.sync_hash(names::HOST_ADDRS6, &host6, &mut applied)?.0,
            ),
            (
                "IPv6 subnets",
                self.sync_subnets(names::SUBNETS6, &want.subnets6)?,
            ),
            (
                "veths",
                self.sync_hash(names::VETHS, &want.veths, &mut applied)?.0,
            ),
            (
                "IPv6 uplinks",
                self.sync_hash(names::UPLINKS6, &want.uplinks6, &mut applied)?
                    .0,
            ),
            (
                "IPv6 backends",
                self.sync_hash(names::IP6_OF, &want.ip6_of, &mut applied)?.0,
            ),
            (
                "routed IPv6 ports",
                self.sync_hash(names::PUBLISHED6, &want.published6, &mut applied)?
                    .0,
            ),
            (
                "IPv6 published ports",
                self.sync_hash(names::PORTMAP6, &want.portmap6, &mut applied)?
                    .0,
            ),
            (
                "overlay networks",
                self.sync_hash(overlay::OVERLAY_VNIS, &want.overlay_vnis, &mut applied)?
                    .0
                    + self
                        .sync_hash(
                            overlay::OVERLAY_BRIDGES,
                            &want.overlay_bridges,
                            &mut applied,
                        )?
                        .0,
            ),
            (
                "link pairs",
                self.sync_hash(names::LINKS, &want.links, &mut applied)?.0,
            ),
            (
                "socket namespaces",
                self.sync_hash(
                    netctl_common::sock::SOCK_NETNS,
                    &want.sock_netns,
                    &mut applied,
                )?
                .0,
            ),
        ];
        self.sync_counter_keys::<_, _, EndpointCounters>(
            names::EP_STATS,
            &want.endpoints,
            &mut applied,
        )?;
        self.sync_counter_keys::<_, _, u64>(names::PORT_STATS6, &want.portmap6, &mut applied)?;
        self.sync_counter_keys::<_, _, EndpointCounters>(
            names::EP_STATS6,
            &want.veths,
            &mut applied,
        )?;
        applied.save()?;
        crate::base::failpoint::step("dataplane: maps applied");
        for (name, n) in counts {
            if n > 0 {
                changes.push(format!("{name}: {n} map entries changed"));
            }
        }
        // A full apply also catches flows whose container went while no record was kept
        // (a command killed between its map changes and its record).
        let stale = |a: u32| {
            gone.contains(&a)
                || (full
                    && want
                        .subnets
                        .keys()
                        .any(|(prefix, net)| in_subnet(a, *net, *prefix))
                    && !want.endpoints.contains_key(&a)
                    && !want.networks.values().any(|n| n.gateway == a))
        };
        if !gone6.is_empty() {
            let n = self.flush_family(
                [
                    names::CT6,
                    names::CT6_NEW,
                    names::CT6_OWNED,
                    names::CT6_FILL,
                ],
                |a: netctl_common::maps::Ip6| gone6.contains(&a),
            )?;
            if n > 0 {
                changes.push(format!(
                    "conntrack: {n} IPv6 entries of removed containers flushed"
                ));
            }
        }
        if !gone.is_empty() || full {
            let n = self.flush_flows(stale)?;
            if n > 0 {
                changes.push(format!(
                    "conntrack: {n} entries of removed containers flushed"
                ));
            }
        }
        Ok(changes)
    }

    /// The conntrack limits for the table as it was made (its size is fixed when the maps
    /// are first made): confirmations stop at 7/8 full, so the LRU never evicts an established
    /// flow; one container may own `ct_owner_max` entries (0: a quarter of the table).
    fn with_ct_limits(
        &self,
        mut c: netctl_common::maps::Config,
    ) -> Result<netctl_common::maps::Config> {
        let cap = self.capacity(names::CT)?;
        c.ct_fill_max = cap - cap / 8;
        c.ct_owner_max = match c.ct_owner_max {
            0 => cap / 4,
            n => n.min(cap),
        };
        Ok(c)
    }

    /// Refuses, before changing anything, a state the maps cannot hold.
    fn check_capacity(&self, want: &maps::Desired) -> Result<()> {
        let sizes = [
            (names::PORTMAP, want.ports.count(), "published ports"),
            (
                names::ENDPOINTS,
                want.endpoints.len(),
                "container endpoints",
            ),
            (names::HOST_ADDRS, want.host_addrs.len(), "host addresses"),
            (names::UPLINKS, want.uplinks.len(), "uplinks"),
            (names::NETWORKS, want.networks.len(), "networks"),
            (names::SUBNETS, want.subnets.len(), "networks"),
            (
                names::ENDPOINTS6,
                want.endpoints6.len(),
                "IPv6 container addresses",
            ),
            (
                names::HOST_ADDRS6,
                want.host_addrs6.len(),
                "IPv6 host addresses",
            ),
            (names::VETHS, want.veths.len(), "container veths"),
            (names::LINKS, want.links.len(), "link pairs"),
        ];
        for (map, n, what) in sizes {
            let cap = self.capacity(map)? as usize;
            if n > cap {
                anyhow::bail!(
                    "too many {what}: {n}, the datapath holds {cap} ({map}): remove some first"
                );
            }
        }
        Ok(())
    }

    /// Diff-applies a hash map against what was applied last time (or, without a record,
    /// against the kernel's entries); returns the number of changes and the entries removed
    /// or replaced (with their old values).
    fn sync_hash<K: Pod + Ord, V: Pod + PartialEq>(
        &self,
        name: &str,
        want: &BTreeMap<K, V>,
        applied: &mut Applied,
    ) -> Result<(usize, Vec<(K, V)>)> {
        let (mut map, id): (HashMap<MapData, K, V>, u32) = self.map_with_id(name)?;
        let raw = applied::raw(want.iter());
        if applied.unchanged::<K, V>(name, id, &raw) {
            return Ok((0, Vec::new()));
        }
        let (gone, set) = match applied.entries::<K, V>(name, id) {
            Some(have) => difference(have, want.iter()),
            None => {
                let keys: Vec<K> = map.keys().collect::<Result<_, _>>()?;
                let have: BTreeMap<K, V> = keys
                    .into_iter()
                    .filter_map(|k| map.get(&k, 0).ok().map(|v| (k, v)))
                    .collect();
                difference(have.into_iter(), want.iter())
            }
        };
        let mut removed = Vec::new();
        for (k, v) in gone {
            applied.before_change()?;
            remove_entry(map.remove(&k)).with_context(|| format!("removing from {name}"))?;
            removed.push((k, v));
        }
        let n = removed.len() + set.len();
        for (k, v, old) in set {
            applied.before_change()?;
            map.insert(k, v, 0)
                .with_context(|| format!("filling {name}"))?;
            removed.extend(old.map(|o| (*k, o)));
        }
        if n > 0 {
            crate::base::failpoint::step("dataplane: one map changed");
        }
        applied.set_raw::<K, V>(name, id, raw);
        Ok((n, removed))
    }

    /// The fingerprint of the published-port entries the maps hold, as recorded by the last
    /// apply (None when unknown, or for `full`, which trusts no record).
    pub fn ports_applied(&self, full: bool) -> Option<maps::Fingerprint> {
        let ids = self.port_maps().ok()?.ids;
        let (sum, count) = Applied::load(self.applied_path.clone(), !full).ports(ids)?;
        Some(maps::Fingerprint { sum, count })
    }

    fn port_maps(&self) -> Result<PortMaps> {
        let (portmap, portmap_id) = self.map_with_id(names::PORTMAP)?;
        let (stats, stats_id) = self.map_with_id(names::PORT_STATS)?;
        Ok(PortMaps {
            portmap,
            stats,
            ids: [portmap_id, stats_id],
        })
    }

    /// The published-port maps (PORTMAP, and PORT_STATS's zeroed counters): all entries
    /// against the record, or only a delta, which leaves their entries unrecorded (the next
    /// full apply compares with the kernel); then the entries' fingerprint is recorded.
    /// Returns the number of changes and the entries removed or replaced.
    fn sync_ports(
        &self,
        ports: &maps::Ports,
        applied: &mut Applied,
    ) -> Result<(usize, Vec<(PortKey, Backend)>)> {
        let (changes, fingerprint, ids) = match ports {
            maps::Ports::Unchanged(_) => return Ok((0, Vec::new())),
            maps::Ports::Full(want, fingerprint) => {
                let ids = self.port_maps()?.ids;
                let changes = self.sync_hash(names::PORTMAP, want, applied)?;
                self.sync_counter_keys::<_, _, u64>(names::PORT_STATS, want, applied)?;
                (changes, *fingerprint, ids)
            }
            maps::Ports::Delta(d) => {
                let PortMaps {
                    mut portmap,
                    mut stats,
                    ids,
                } = self.port_maps()?;
                applied.before_change()?;
                for (k, _) in &d.removed {
                    remove_entry(portmap.remove(k)).context("removing from PORTMAP")?;
                    remove_entry(stats.remove(k)).context("removing from PORT_STATS")?;
                }
                let cpus =
                    aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
                let mut old = d.removed.clone();
                for (k, v, replaced) in &d.set {
                    portmap.insert(k, v, 0).context("filling PORTMAP")?;
                    match replaced {
                        Some(o) => old.push((*k, *o)),
                        None => stats
                            .insert(k, PerCpuValues::try_from(vec![0u64; cpus])?, 0)
                            .context("filling PORT_STATS")?,
                    }
                }
                applied.forget(names::PORTMAP);
                applied.forget(names::PORT_STATS);
                ((d.removed.len() + d.set.len(), old), d.to, ids)
            }
        };
        applied.set_ports(ids, (fingerprint.sum, fingerprint.count));
        Ok(changes)
    }

    fn sync_subnets<K: Pod + Ord>(
        &self,
        name: &str,
        want: &BTreeMap<(u32, K), u32>,
    ) -> Result<usize> {
        let mut map: LpmTrie<MapData, K, u32> = self.map(name)?;
        let have: Vec<Key<K>> = map.keys().collect::<Result<_, _>>()?;
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
                map.insert(&key, bridge, 0)
                    .with_context(|| format!("filling {name}"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Per-CPU counter maps hold an entry per key the programs may count (made here, zeroed,
    /// so the datapath never inserts); counts of live keys are kept.
    fn sync_counter_keys<K: Pod + Ord, W, V: Pod + Default>(
        &self,
        name: &str,
        want: &BTreeMap<K, W>,
        applied: &mut Applied,
    ) -> Result<()> {
        let (mut map, id): (PerCpuHashMap<MapData, K, V>, u32) = self.map_with_id(name)?;
        // Recorded as key → 0 (the counts are the programs').
        let raw = applied::raw(want.keys().map(|k| (k, &0u8)));
        if applied.unchanged::<K, u8>(name, id, &raw) {
            return Ok(());
        }
        let want = want.keys().map(|k| (k, &0u8));
        let (gone, new) = match applied.entries::<K, u8>(name, id) {
            Some(have) => difference(have, want),
            None => {
                let have: BTreeSet<K> = map.keys().collect::<Result<_, _>>()?;
                difference(have.into_iter().map(|k| (k, 0u8)), want)
            }
        };
        for (k, _) in gone {
            applied.before_change()?;
            remove_entry(map.remove(&k)).with_context(|| format!("removing from {name}"))?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        for (k, _, _) in new {
            applied.before_change()?;
            let zero = PerCpuValues::try_from(vec![V::default(); cpus])?;
            map.insert(k, zero, 0)
                .with_context(|| format!("filling {name}"))?;
        }
        applied.set_raw::<K, u8>(name, id, raw);
        Ok(())
    }

    /// Makes the remote-container map hold exactly `want` (the daemon's view of the cluster
    /// store); returns how many entries changed.
    pub fn set_remotes(
        &self,
        want: &BTreeMap<u32, Remote>,
        want6: &BTreeMap<[u8; 16], Remote6>,
    ) -> Result<usize> {
        // Their hosts too: containers may not send to those hosts' VXLAN port.
        let peers: BTreeMap<u32, u32> = want
            .values()
            .chain(want6.values().map(|r| &r.remote))
            .map(|r| (r.host, 1))
            .collect();
        Ok(self.replace_entries(overlay::OVERLAY_REMOTES, want)?
            + self.replace_entries(overlay::OVERLAY_REMOTES6, want6)?
            + self.replace_entries(overlay::OVERLAY_PEERS, &peers)?)
    }

    /// Empties the remote-container map and keeps the peer hosts (containers still may not
    /// send to their VXLAN port): nothing goes into the tunnel, nothing out of it is
    /// delivered. The cluster agent's fence.
    pub fn fence_overlay(&self) -> Result<usize> {
        self.replace_entries(overlay::OVERLAY_REMOTES, &BTreeMap::<u32, Remote>::new())
    }

    /// Makes a hash map hold exactly `want` by reading it back (for maps written outside the
    /// reconcile's record); returns how many entries changed.
    fn replace_entries<K: Pod + Ord, V: Pod + PartialEq>(
        &self,
        name: &str,
        want: &BTreeMap<K, V>,
    ) -> Result<usize> {
        let mut map: HashMap<MapData, K, V> = self.map(name)?;
        let keys: Vec<K> = map.keys().collect::<Result<_, _>>()?;
        let mut n = 0;
        for k in keys.iter().filter(|k| !want.contains_key(k)) {
            remove_entry(map.remove(k))?;
            n += 1;
        }
        for (k, v) in want {
            if map.get(k, 0).ok() != Some(*v) {
                map.insert(k, v, 0)
                    .with_context(|| format!("filling {name}"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Counters per container endpoint (its host-side veth's ifindex), summed over CPUs:
    /// IPv4's (`EP_STATS`, per address: the veth from `ENDPOINTS`) and IPv6's (`EP_STATS6`).
    pub fn endpoint_stats(&self) -> Result<BTreeMap<u32, EndpointCounters>> {
        fn summed(dp: &Dataplane, name: &str) -> Result<BTreeMap<u32, EndpointCounters>> {
            let map: PerCpuHashMap<MapData, u32, EndpointCounters> = dp.map(name)?;
            let mut out = BTreeMap::new();
            for item in map.iter() {
                let (k, per_cpu) = item?;
                let mut sum = EndpointCounters::default();
                for c in per_cpu.iter() {
                    sum.add(c);
                }
                out.insert(k, sum);
            }
            Ok(out)
        }
        // IPv4's are kept per container address, IPv6's per veth: both by veth here.
        let eps: HashMap<MapData, u32, netctl_common::maps::EndpointInfo> =
            self.map(names::ENDPOINTS)?;
        let mut out = summed(self, names::EP_STATS6)?;
        for (addr, c) in summed(self, names::EP_STATS)? {
            if let Ok(ep) = eps.get(&addr, 0) {
                out.entry(ep.ifindex).or_default().add(&c);
            }
        }
        Ok(out)
    }

    /// New connections per published port (host address, port, protocol number), summed
    /// over CPUs.
    pub fn port_hits(&self) -> Result<BTreeMap<(std::net::IpAddr, u16, u8), u64>> {
        fn sum<K: Pod + Ord>(dp: &Dataplane, name: &str) -> Result<Vec<(K, u64)>> {
            let map: PerCpuHashMap<MapData, K, u64> = dp.map(name)?;
            map.iter()
                .map(|item| {
                    let (k, per_cpu) = item?;
                    Ok((k, per_cpu.iter().sum()))
                })
                .collect()
        }
        let v4 = sum::<netctl_common::maps::PortKey>(self, names::PORT_STATS)?;
        let v6 = sum::<netctl_common::maps::PortKey6>(self, names::PORT_STATS6)?;
        let v4 = v4.into_iter().map(|(k, n)| {
            let addr = maps::from_raw(k.addr).into();
            ((addr, u16::from_be(k.port), k.proto), n)
        });
        let v6 = v6.into_iter().map(|(k, n)| {
            let addr = std::net::Ipv6Addr::from(k.addr).into();
            ((addr, u16::from_be(k.port), k.proto), n)
        });
        Ok(v4.chain(v6).collect())
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

    /// Makes `SHAPED` hold exactly `veths` (host-side veths whose traffic qdiscs shape), so the
    /// programs send those containers' packets through the qdiscs. Returns what changed.
    pub fn set_shaped(&self, veths: &BTreeSet<u32>) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut map: HashMap<MapData, u32, u32> = self.map(names::SHAPED)?;
        let now: BTreeSet<u32> = map.keys().filter_map(|k| k.ok()).collect();
        let added: Vec<u32> = veths.difference(&now).copied().collect();
        let removed: Vec<u32> = now.difference(veths).copied().collect();
        for i in &added {
            map.insert(i, 1, 0)?;
        }
        for i in &removed {
            remove_entry(map.remove(i))?;
        }
        Ok((added, removed))
    }

    /// Removes conntrack entries idle past their timeout and returns them (the programs only
    /// remove an entry when its flow's next packet comes, which may be never); then makes the
    /// per-container and total counts of `CT` exact again (the programs keep them as they
    /// store and delete, but do not see LRU evictions). Also returns how many confirmed
    /// entries the kernel evicted since the last sweep: what the count had and the table
    /// has not (approximate: flows stored or deleted meanwhile count either way).
    pub fn expire_flows(&self) -> Result<Expired> {
        let (v6, evicted6) = self.expire_family::<netctl_common::maps::Ip6>([
            names::CT6,
            names::CT6_NEW,
            names::CT6_OWNED,
            names::CT6_FILL,
        ])?;
        let (v4, evicted) =
            self.expire_family([names::CT, names::CT_NEW, names::CT_OWNED, names::CT_FILL])?;
        Ok(Expired {
            v4,
            v6,
            evicted: evicted + evicted6,
        })
    }

    /// [`Self::expire_flows`] for one family's tables: `[confirmed, unconfirmed, owned, fill]`.
    #[allow(clippy::type_complexity)]
    fn expire_family<A>(&self, tables: [&str; 4]) -> Result<(Vec<(Tuple<A>, Entry<A>)>, u64)>
    where
        A: netctl_common::ct::Addr + Pod + Ord,
    {
        let now = monotonic_ns();
        let mut expired = Vec::new();
        let mut owned: BTreeMap<A, u64> = BTreeMap::new();
        let mut fill: Array<MapData, u64> = self.map(tables[3])?;
        let counted = fill.get(&0, 0)?;
        let mut removed = 0u64;
        let mut live = 0u64;
        let capacity = u64::from(self.capacity(tables[0])?);
        for table in [tables[0], tables[1]] {
            let mut ct: HashMap<MapData, Tuple<A>, Entry<A>> = self.map(table)?;
            let entries: BTreeMap<_, _> = ct
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, e)| (key_bytes(&k), (k, e)))
                .collect();
            // Closed flows leave their owner's quota but not the table: one container
            // closing thousands of connections could bring it to the fill watermark, and
            // every container's new flows would wait out TIME_WAIT. Past three quarters
            // full, TIME_WAIT is cut short.
            let pressure = table == tables[0] && entries.len() as u64 > capacity / 4 * 3;
            for (k, e) in entries.values() {
                // Both halves carry the flow's last packet; take the later one.
                let last = entries
                    .get(&key_bytes(&e.peer))
                    .map_or(e.last_seen, |(_, p)| p.last_seen.max(e.last_seen));
                let reclaim = pressure && netctl_common::ct::is_closed(e.flags);
                if reclaim
                    || now.saturating_sub(last) > netctl_common::ct::timeout(k.proto, e.flags)
                {
                    if ct.remove(k).is_ok() && table == tables[0] {
                        removed += 1;
                    }
                    if e.flags & netctl_common::ct::CT_REPLY == 0 {
                        expired.push((*k, *e));
                    }
                } else if table == tables[0] {
                    live += 1;
                    // Closed flows count toward the fill only (as the programs count).
                    if !netctl_common::ct::is_closed(e.flags) {
                        *owned.entry(netctl_common::ct::owner(k, e)).or_default() += 1;
                    }
                }
            }
        }
        // Entries stored or deleted meanwhile are lost from these counts until the next
        // sweep: a flow or two either way at the limits.
        fill.set(0, live, 0)?;
        let mut counts: HashMap<MapData, A, u64> = self.map(tables[2])?;
        let old: Vec<A> = counts.keys().filter_map(|k| k.ok()).collect();
        for k in old.iter().filter(|k| !owned.contains_key(k)) {
            remove_entry(counts.remove(k))?;
        }
        for (k, n) in &owned {
            counts.insert(k, n, 0)?;
        }
        Ok((expired, counted.saturating_sub(live + removed)))
    }

    /// Deletes the conntrack entries that mention an address `stale` picks.
    fn flush_flows(&self, stale: impl Fn(u32) -> bool) -> Result<usize> {
        self.flush_family(
            [names::CT, names::CT_NEW, names::CT_OWNED, names::CT_FILL],
            stale,
        )
    }

    /// The same for one family's tables: `[confirmed, unconfirmed, owned, fill]`.
    fn flush_family<A>(&self, tables: [&str; 4], stale: impl Fn(A) -> bool) -> Result<usize>
    where
        A: netctl_common::ct::Addr + Pod + Ord,
    {
        let mut n = 0;
        let mut uncounted: BTreeMap<A, u64> = BTreeMap::new();
        let mut total = 0u64;
        for table in [tables[0], tables[1]] {
            let mut ct: HashMap<MapData, Tuple<A>, Entry<A>> = self.map(table)?;
            let doomed: Vec<(Tuple<A>, Entry<A>)> = ct
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(k, e)| {
                    [k.saddr, k.daddr, e.src_addr, e.dst_addr]
                        .iter()
                        .any(|a| *a != A::ZERO && stale(*a))
                })
                .collect();
            for (k, e) in &doomed {
                if ct.remove(k).is_ok() && table == tables[0] {
                    total += 1;
                    if !netctl_common::ct::is_closed(e.flags) {
                        *uncounted.entry(netctl_common::ct::owner(k, e)).or_default() += 1;
                    }
                }
            }
            n += doomed.len();
        }
        // The programs count what they delete, not what is deleted here: a reused address
        // must not start with its predecessor's share of the table.
        if total > 0 {
            let mut counts: HashMap<MapData, A, u64> = self.map(tables[2])?;
            for (owner, gone) in &uncounted {
                if let Ok(c) = counts.get(owner, 0) {
                    counts.insert(owner, c.saturating_sub(*gone), 0)?;
                }
            }
            let mut fill: Array<MapData, u64> = self.map(tables[3])?;
            fill.set(0, fill.get(&0, 0)?.saturating_sub(total), 0)?;
        }
        Ok(n)
    }

    /// Entries in the conntrack tables (confirmed, unconfirmed) and their capacities.
    pub fn ct_occupancy(&self) -> Result<[(usize, u32); 2]> {
        let count = |table: &str| -> Result<(usize, u32)> {
            let ct: HashMap<MapData, CtKey, CtEntry> = self.map(table)?;
            let n = ct.keys().filter(|k| k.is_ok()).count();
            let cap = self.capacity(table)?;
            Ok((n, cap))
        };
        Ok([count(names::CT)?, count(names::CT_NEW)?])
    }

    /// How many entries a pinned map was made for.
    fn capacity(&self, map: &str) -> Result<u32> {
        Ok(MapData::from_pin(self.pins.map(map))
            .with_context(|| format!("opening pinned map {map}"))?
            .info()?
            .max_entries())
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

    /// A pinned map and its kernel id (which changes when the map is re-created).
    fn map_with_id<T>(&self, name: &str) -> Result<(T, u32)>
    where
        T: TryFrom<Map, Error = aya::maps::MapError>,
    {
        let path = self.pins.map(name);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        let id = data.info()?.id();
        let map = T::try_from(Map::from_map_data(data)?)
            .with_context(|| format!("map {name} has an unexpected type"))?;
        Ok((map, id))
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

/// A delete of an entry that is not there is done (a command killed after its map change
/// but before its record leaves exactly that).
fn remove_entry(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(aya::maps::MapError::KeyNotFound | aya::maps::MapError::ElementNotFound) => Ok(()),
        r => r,
    }
}

/// Whether a raw (network byte order) address is inside a raw subnet.
fn in_subnet(addr: u32, net: u32, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    u32::from_be(addr) & mask == u32::from_be(net) & mask
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn key_bytes<A: Copy>(k: &Tuple<A>) -> (A, A, u16, u16, u8) {
    (k.saddr, k.daddr, k.sport, k.dport, k.proto)
}

/// Whether the socket programs run here: every hook they need, and a cgroup v2 hierarchy to
/// attach them to. The error says what is missing.
pub fn socket_programs(cfg: &Config) -> Result<()> {
    Features::detect(&cfg.features_deny)?.socket_programs()?;
    if crate::kernel::cgroup::root().is_none() {
        anyhow::bail!(
            "this needs a cgroup v2 hierarchy (mount cgroup2, e.g. at /sys/fs/cgroup/unified)"
        );
    }
    Ok(())
}

/// Removes every pin of this instance: links (detaching the programs), programs and maps.
pub fn remove_all(cfg: &Config) -> Result<()> {
    if cfg.bpffs.exists() {
        // Netlink filters (kernels without TCX) outlive their pins: delete them first.
        attach::detach_all(&Pins::new(&cfg.bpffs).links());
        std::fs::remove_dir_all(&cfg.bpffs)
            .with_context(|| format!("removing {}", cfg.bpffs.display()))?;
    }
    Ok(())
}

/// The published-port maps, opened, and their kernel ids (what the record's fingerprint is
/// kept for).
struct PortMaps {
    portmap: HashMap<MapData, PortKey, Backend>,
    stats: PerCpuHashMap<MapData, PortKey, u64>,
    ids: [u32; 2],
}
