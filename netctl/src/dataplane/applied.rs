//! What the last reconcile wrote into the big maps, so the next one can apply the difference
//! without reading every entry back from the kernel (10,000 published ports would otherwise
//! cost 20,000 syscalls per command). Keyed by the map's kernel id: a re-created map (new
//! pins, a reboot) has a new id and gets a full diff. `netctl sync` always does a full diff.

use std::{collections::BTreeMap, path::PathBuf};

use aya::Pod;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Entry {
    map_id: u32,
    /// Hex of key bytes, hex of value bytes.
    entries: Vec<(String, String)>,
}

pub struct Applied {
    path: PathBuf,
    maps: BTreeMap<String, Entry>,
}

fn bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: Pod types are plain bytes with no padding that matters to us.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<T: Pod>(s: &str) -> Option<T> {
    if s.len() != 2 * std::mem::size_of::<T>() {
        return None;
    }
    let raw: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    // SAFETY: the length matches and any bit pattern is a valid Pod value.
    Some(unsafe { std::ptr::read_unaligned(raw.as_ptr() as *const T) })
}

impl Applied {
    /// Loads the record; anything unreadable just means "unknown" (a full diff).
    pub fn load(path: PathBuf, trust: bool) -> Self {
        let maps = if trust {
            std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        Self { path, maps }
    }

    /// What was written to map `name` if it is still the same kernel map.
    pub fn get<K: Pod + Ord, V: Pod>(&self, name: &str, map_id: u32) -> Option<BTreeMap<K, V>> {
        let e = self.maps.get(name).filter(|e| e.map_id == map_id)?;
        e.entries
            .iter()
            .map(|(k, v)| Some((unhex::<K>(k)?, unhex::<V>(v)?)))
            .collect()
    }

    pub fn set<K: Pod, V: Pod>(&mut self, name: &str, map_id: u32, entries: &BTreeMap<K, V>) {
        let entries = entries
            .iter()
            .map(|(k, v)| (hex(bytes(k)), hex(bytes(v))))
            .collect();
        self.maps
            .insert(name.to_string(), Entry { map_id, entries });
    }

    /// Writes the record (temp file and rename: a torn file would only cost a full diff).
    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.maps)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
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
        let path = dir.join("applied.json");
        let mut want = BTreeMap::new();
        want.insert(
            PortKey {
                addr: 1,
                port: 2,
                proto: 6,
                _pad: 0,
            },
            Backend {
                addr: 3,
                port: 4,
                _pad: 0,
            },
        );
        let mut a = Applied::load(path.clone(), true);
        a.set("PORTMAP", 7, &want);
        a.save().unwrap();
        let b = Applied::load(path.clone(), true);
        assert_eq!(b.get::<PortKey, Backend>("PORTMAP", 7), Some(want));
        assert!(
            b.get::<PortKey, Backend>("PORTMAP", 8).is_none(),
            "another map id"
        );
        assert!(Applied::load(path, false)
            .get::<PortKey, Backend>("PORTMAP", 7)
            .is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
