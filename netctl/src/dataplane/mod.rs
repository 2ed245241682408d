//! The eBPF side of the controller: load and pin the programs, attach them where the state
//! says, fill the maps from the state, read the counters back.

pub mod attach;
pub mod load;
pub mod pins;

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use netctl_common::{
    maps, programs,
    stats::{Counters, Hook},
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
        load::ensure_programs(&pins, &hash)?;
        Ok(Self {
            pins,
            hash,
            xdp: cfg.xdp,
        })
    }

    /// Attaches the programs to exactly these uplinks and container veths (name, ifindex).
    pub fn reconcile_attachments(
        &self,
        uplinks: &[(String, u32)],
        container_veths: &[(String, u32)],
    ) -> Result<Changes> {
        let mut desired = Vec::new();
        for (name, index) in uplinks {
            if self.xdp != XdpMode::Off {
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

    /// Counters per hook, summed over CPUs.
    pub fn hook_stats(&self) -> Result<Vec<(Hook, Counters)>> {
        let map: PerCpuArray<MapData, Counters> = self.map(maps::HOOK_STATS, Map::PerCpuArray)?;
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

    fn map<T>(&self, name: &str, wrap: fn(MapData) -> Map) -> Result<T>
    where
        T: TryFrom<Map, Error = aya::maps::MapError>,
    {
        let path = self.pins.map(name);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        T::try_from(wrap(data)).with_context(|| format!("map {name} has an unexpected type"))
    }
}

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
