//! What the last reconcile wrote into the big maps, so the next one can apply the difference
//! without reading every entry back from the kernel (10,000 published ports would otherwise
//! cost 20,000 syscalls per command). Keyed by the map's kernel id: a re-created map (new
//! pins, a reboot) has a new id and gets a full diff. `netctl sync` always does a full diff.
//!
//! Stored as raw entries (a few hundred KB for 10,000 ports, read and written in a copy):
//! `NCAP1\n`, then per map: name length (u16), name, map id, key size, value size, entry
//! count (u32 each, little endian), then the entries' bytes.

use std::{collections::BTreeMap, path::PathBuf};

use aya::Pod;

const MAGIC: &[u8] = b"NCAP1\n";

/// Not a map: the fingerprint of the published-port entries (PORTMAP, PORT_STATS's keys) the
/// kernel holds, kept under PORTMAP's id (20 bytes: sum, count, PORT_STATS's id).
const PORTS_FINGERPRINT: &str = "PORTMAP#fingerprint";

struct Entry {
    map_id: u32,
    key_size: usize,
    value_size: usize,
    /// key bytes followed by value bytes, entry after entry.
    raw: Vec<u8>,
}

pub struct Applied {
    path: PathBuf,
    maps: BTreeMap<String, Entry>,
    /// The file on disk no longer claims anything (see [`Applied::before_change`]).
    invalidated: bool,
    /// Something differs from the file: [`Applied::save`] writes it.
    dirty: bool,
}

fn bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: Pod types are plain bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

fn read<T: Pod>(b: &[u8]) -> T {
    // SAFETY: callers pass exactly size_of::<T>() bytes; any bit pattern is a valid Pod.
    unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) }
}

fn sizes<K, V>() -> [usize; 2] {
    [std::mem::size_of::<K>(), std::mem::size_of::<V>()]
}

/// Entries as the record holds them: key bytes, value bytes, in the order given (a
/// `BTreeMap`'s, so equal contents give equal bytes).
pub fn raw<'a, K: Pod + 'a, V: Pod + 'a>(entries: impl Iterator<Item = (&'a K, &'a V)>) -> Vec<u8> {
    let mut raw = Vec::new();
    for (k, v) in entries {
        raw.extend_from_slice(bytes(k));
        raw.extend_from_slice(bytes(v));
    }
    raw
}

fn parse(data: &[u8]) -> Option<BTreeMap<String, Entry>> {
    let mut rest = data.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let mut maps = BTreeMap::new();
    while let Some(len) = take(2) {
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let name = String::from_utf8(take(len)?.to_vec()).ok()?;
        let mut u32s = [0u32; 4];
        for v in &mut u32s {
            *v = u32::from_le_bytes(take(4)?.try_into().ok()?);
        }
        let [map_id, key_size, value_size, count] = u32s.map(|v| v as usize);
        let raw = take((key_size + value_size) * count)?.to_vec();
        maps.insert(
            name,
            Entry {
                map_id: map_id as u32,
                key_size,
                value_size,
                raw,
            },
        );
    }
    Some(maps)
}

impl Applied {
    /// Loads the record; anything unreadable just means "unknown" (a full diff).
    pub fn load(path: PathBuf, trust: bool) -> Self {
        let maps = trust
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|d| parse(&d))
            .unwrap_or_default();
        Self {
            path,
            maps,
            invalidated: false,
            dirty: false,
        }
    }

    /// Call before changing a map: the record on disk goes first, so a command killed
    /// half-way leaves no record, and the next apply compares with the kernel. Nothing here
    /// is synced: a power cut takes the maps with it (new map IDs after the boot never match
    /// a record), so only a killed process matters, and it cannot undo a removal.
    pub fn before_change(&mut self) -> anyhow::Result<()> {
        if self.invalidated {
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.invalidated = true;
        Ok(())
    }

    /// What was written to map `name` if it is still the same kernel map, in key order.
    pub fn entries<K: Pod + Ord, V: Pod>(
        &self,
        name: &str,
        map_id: u32,
    ) -> Option<impl Iterator<Item = (K, V)> + '_> {
        let [ks, vs] = sizes::<K, V>();
        let e = self
            .maps
            .get(name)
            .filter(|e| e.map_id == map_id && e.key_size == ks && e.value_size == vs)?;
        Some(
            e.raw
                .chunks_exact(ks + vs)
                .map(move |c| (read::<K>(&c[..ks]), read::<V>(&c[ks..]))),
        )
    }

    #[cfg(test)]
    fn get<K: Pod + Ord, V: Pod>(&self, name: &str, map_id: u32) -> Option<BTreeMap<K, V>> {
        Some(self.entries(name, map_id)?.collect())
    }

    /// Forgets what was written to map `name` (its entries changed without a record).
    pub fn forget(&mut self, name: &str) {
        self.dirty |= self.maps.remove(name).is_some();
    }

    /// The fingerprint recorded for the published-port maps, if both are still the kernel
    /// maps `ids` (PORTMAP's and PORT_STATS's).
    pub fn ports(&self, ids: [u32; 2]) -> Option<(u64, u64)> {
        let e = self.maps.get(PORTS_FINGERPRINT)?;
        let raw: &[u8; 20] = e.raw.as_slice().try_into().ok()?;
        let word = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        let stats = u32::from_le_bytes(raw[16..].try_into().expect("4 bytes"));
        (e.map_id == ids[0] && stats == ids[1]).then(|| (word(0), word(8)))
    }

    pub fn set_ports(&mut self, ids: [u32; 2], (sum, count): (u64, u64)) {
        let mut raw = sum.to_le_bytes().to_vec();
        raw.extend(count.to_le_bytes());
        raw.extend(ids[1].to_le_bytes());
        self.put(PORTS_FINGERPRINT, ids[0], [20, 0], raw);
    }

    /// Whether `raw` (see [`raw`]) is what was written to map `name`, the same kernel map:
    /// a byte comparison, so an unchanged map of 10,000 entries costs a memcmp, not a diff.
    pub fn unchanged<K: Pod, V: Pod>(&self, name: &str, map_id: u32, raw: &[u8]) -> bool {
        self.holds(name, map_id, sizes::<K, V>(), raw)
    }

    fn holds(&self, name: &str, map_id: u32, [ks, vs]: [usize; 2], raw: &[u8]) -> bool {
        self.maps.get(name).is_some_and(|e| {
            e.map_id == map_id && e.key_size == ks && e.value_size == vs && e.raw == raw
        })
    }

    #[cfg(test)]
    fn set<K: Pod, V: Pod>(&mut self, name: &str, map_id: u32, entries: &BTreeMap<K, V>) {
        self.set_raw::<K, V>(name, map_id, raw(entries.iter()));
    }

    /// Records `raw` (made by [`raw`] from `K`, `V` entries) as map `name`'s content.
    pub fn set_raw<K: Pod, V: Pod>(&mut self, name: &str, map_id: u32, raw: Vec<u8>) {
        self.put(name, map_id, sizes::<K, V>(), raw);
    }

    fn put(&mut self, name: &str, map_id: u32, sizes: [usize; 2], raw: Vec<u8>) {
        if self.holds(name, map_id, sizes, &raw) {
            return;
        }
        let [key_size, value_size] = sizes;
        let e = Entry {
            map_id,
            key_size,
            value_size,
            raw,
        };
        self.maps.insert(name.to_string(), e);
        self.dirty = true;
    }

    /// Writes the record if it changed (temp file and rename, not synced: see
    /// [`Applied::before_change`]).
    pub fn save(&self) -> anyhow::Result<()> {
        if !self.dirty && !self.invalidated {
            return Ok(());
        }
        let mut out = MAGIC.to_vec();
        for (name, e) in &self.maps {
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(name.as_bytes());
            let count = e.raw.len() / (e.key_size + e.value_size).max(1);
            for v in [
                e.map_id,
                e.key_size as u32,
                e.value_size as u32,
                count as u32,
            ] {
                out.extend(v.to_le_bytes());
            }
            out.extend(&e.raw);
        }
        crate::base::atomic_file::write_cache(&self.path, &out, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netctl_common::maps::{Backend, PortKey};

    #[test]
    fn round_trips_and_forgets_other_maps() {
        let dir = std::env::temp_dir().join(format!("netctl-applied-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("applied");
        let mut want = BTreeMap::new();
        for i in 0..100u16 {
            want.insert(
                PortKey {
                    addr: 1,
                    port: i,
                    proto: 6,
                    _pad: 0,
                },
                Backend {
                    addr: 3,
                    port: i,
                    _pad: 0,
                },
            );
        }
        let mut ep = BTreeMap::new();
        ep.insert(7u32, 1u8);
        let mut a = Applied::load(path.clone(), true);
        a.set("PORTMAP", 7, &want);
        a.set("EP_STATS", 9, &ep);
        a.save().unwrap();
        let b = Applied::load(path.clone(), true);
        assert_eq!(b.get::<PortKey, Backend>("PORTMAP", 7), Some(want));
        assert_eq!(b.get::<u32, u8>("EP_STATS", 9), Some(ep));
        assert!(
            b.get::<PortKey, Backend>("PORTMAP", 8).is_none(),
            "another map id"
        );
        assert!(b.get::<u32, u32>("EP_STATS", 9).is_none(), "another layout");
        assert!(Applied::load(path.clone(), false)
            .get::<PortKey, Backend>("PORTMAP", 7)
            .is_none());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Applied::load(path, true)
            .get::<PortKey, Backend>("PORTMAP", 7)
            .is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
