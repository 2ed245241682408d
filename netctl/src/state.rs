//! The desired state: networks, containers, their endpoints and published ports.
//!
//! One JSON file (`state.json`) under `NETCTL_STATE_DIR`, changed only under an exclusive lock
//! (`state.lock`, flock) held for the whole read-modify-write and the kernel changes that go
//! with it, and written atomically (temp file, fsync, rename, fsync of the directory).
//! Everything else — IP allocations, map entries — is derived from it.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::ports::PortMapping;

pub const STATE_VERSION: u32 = 1;
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "state.lock";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// By name.
    pub networks: BTreeMap<String, Network>,
    /// By name.
    pub containers: BTreeMap<String, Container>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Network>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: u32,
    pub bridge: String,
    /// The options as the user gave them (shown by inspect, as Docker does).
    pub options: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub command: Vec<String>,
    pub detached: bool,
    pub created: u64,
    /// The process started in the container, with its start time (to tell PID reuse).
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// In attach order; the first is `eth0`.
    pub endpoints: Vec<Endpoint>,
    /// One entry per published port (ranges are expanded).
    pub ports: Vec<PortMapping>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub network: String,
    pub endpoint_id: String,
    /// Inside the container: eth0, eth1, …
    pub ifname: String,
    /// Host side of the veth, on the network's bridge.
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl State {
    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks.get(name).with_context(|| {
            format!("network {name} not found: `netctl network ls` lists the networks")
        })
    }

    pub fn container(&self, name: &str) -> Result<&Container> {
        self.containers.get(name).with_context(|| {
            format!("container {name} not found: `netctl ps -a` lists the containers")
        })
    }

    /// Containers attached to a network, by name.
    pub fn attached(&self, network: &str) -> Vec<&Container> {
        self.containers
            .values()
            .filter(|c| c.endpoints.iter().any(|e| e.network == network))
            .collect()
    }

    /// Addresses in use on a network (gateway not included).
    pub fn used_ips(&self, network: &str) -> Vec<Ipv4Addr> {
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.network == network)
            .map(|e| e.ip)
            .collect()
    }

    pub fn all_ports(&self) -> impl Iterator<Item = (&Container, &PortMapping)> {
        self.containers
            .values()
            .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
    }
}

/// The state directory and its lock.
pub struct Store {
    dir: PathBuf,
}

/// The state, read under the exclusive lock; the lock is released on drop.
pub struct Locked {
    pub state: State,
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the lock (waiting for other netctl commands) and reads the state.
    pub fn lock(&self) -> Result<Locked> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating state directory {}", self.dir.display()))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let path = self.dir.join(STATE_FILE);
        let state = read(&path)?;
        Ok(Locked {
            state,
            path,
            _lock: lock,
        })
    }

    /// Reads the state without the lock (for read-only commands: a snapshot that may be
    /// a moment old, never a torn file, because writes are atomic renames).
    pub fn snapshot(&self) -> Result<State> {
        read(&self.dir.join(STATE_FILE))
    }
}

fn read(path: &Path) -> Result<State> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                version: STATE_VERSION,
                ..Default::default()
            })
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let state: State = serde_json::from_str(&text).with_context(|| {
        format!(
            "state file {} is unreadable; it was left untouched: repair or move it away",
            path.display()
        )
    })?;
    if state.version != STATE_VERSION {
        bail!(
            "state file {} has version {}, this netctl reads version {STATE_VERSION}",
            path.display(),
            state.version
        );
    }
    Ok(state)
}

impl Locked {
    /// Writes the state atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self) -> Result<()> {
        let dir = self.path.parent().expect("state file has a directory");
        let tmp = self.path.with_extension("json.tmp");
        // Compact: with thousands of published ports every byte is parsed and fsynced per command.
        let text = serde_json::to_string(&self.state)?;
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    }
}

/// A random 64-hex-digit id, as Docker's.
pub fn random_id() -> String {
    let mut buf = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Docker's MAC for an address: 02:42 followed by the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_docker_style() {
        assert_eq!(mac_for("172.17.0.2".parse().unwrap()), "02:42:ac:11:00:02");
    }

    #[test]
    fn save_then_lock_round_trips() {
        let dir = std::env::temp_dir().join(format!("netctl-state-{}", random_id()));
        let store = Store::new(&dir);
        {
            let mut l = store.lock().unwrap();
            assert!(l.state.networks.is_empty());
            l.state.networks.insert(
                "n".into(),
                Network {
                    id: random_id(),
                    name: "n".into(),
                    driver: "bridge".into(),
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    gateway: "10.1.0.1".parse().unwrap(),
                    ip_range: None,
                    internal: false,
                    icc: true,
                    masquerade: true,
                    mtu: 1500,
                    bridge: "br-x".into(),
                    options: BTreeMap::new(),
                    created: 1,
                },
            );
            l.save().unwrap();
        }
        let again = store.lock().unwrap();
        assert_eq!(again.state.networks["n"].bridge, "br-x");
        assert_eq!(again.state.version, STATE_VERSION);
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_state_is_an_error_and_is_kept() {
        let dir = std::env::temp_dir().join(format!("netctl-state-{}", random_id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), "{not json").unwrap();
        let err = Store::new(&dir).lock().err().expect("must fail");
        assert!(
            format!("{err:#}").contains("state.json is unreadable"),
            "{err:#}"
        );
        assert_eq!(
            fs::read_to_string(dir.join(STATE_FILE)).unwrap(),
            "{not json"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
