//! The transport of encrypted overlays: WireGuard between member hosts, one device per host
//! (`nctl-wg`). The kernel's own where it has one (configured over generic netlink), else a
//! TUN device served by the daemon's userspace WireGuard. Either way the device is L3: the
//! datapath redirects an encrypted network's frames into it (the peer is chosen by the
//! destination, each peer's allowed addresses being its containers), and `wg_ingress` hands
//! what it decrypted to the container. Never plain VXLAN for an encrypted network.

pub mod genl;
mod peer;
pub mod tun;
pub mod userspace;

pub use peer::Peer;

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD, Engine as _};

use crate::{
    base::config::{WireguardConfig, WireguardMode},
    kernel::netlink::Netlink,
};

/// The WireGuard device of encrypted overlays (one per instance).
pub const DEV: &str = "nctl-wg";

/// Which WireGuard a host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Kernel,
    Userspace,
}

/// The transport this host uses for encrypted overlays, or why it has none: never plaintext
/// in its place.
pub fn transport(cfg: &WireguardConfig) -> Result<Transport> {
    let tun = || Path::new("/dev/net/tun").exists();
    match cfg.mode {
        WireguardMode::Kernel if genl::available() => Ok(Transport::Kernel),
        WireguardMode::Kernel => bail!("NETCTL_WIREGUARD=kernel, but this kernel has no WireGuard: load the wireguard module or use NETCTL_WIREGUARD=auto"),
        WireguardMode::Userspace if tun() => Ok(Transport::Userspace),
        WireguardMode::Auto if genl::available() => Ok(Transport::Kernel),
        WireguardMode::Auto if tun() => Ok(Transport::Userspace),
        _ => bail!("encrypted overlays need WireGuard in the kernel or a TUN device for it in userspace, and this host has neither: load the wireguard or tun module"),
    }
}

/// Makes the device (none there yet) with `mtu`, in the instance's `group`.
pub fn create(nl: &Netlink, cfg: &WireguardConfig, mtu: u32, group: u32) -> Result<()> {
    match transport(cfg)? {
        Transport::Kernel => {
            nl.add_wireguard(DEV, mtu, group)?;
        }
        Transport::Userspace => {
            tun::create_persistent(DEV)?;
            let index = nl.link(DEV)?.context("the TUN device vanished")?.index;
            if let Err(e) = nl.adopt(index, mtu, group) {
                let _ = nl.del_link(index);
                return Err(e);
            }
        }
    }
    Ok(())
}

pub fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

pub fn decode_key(s: &str) -> Option<[u8; 32]> {
    STANDARD.decode(s).ok()?.try_into().ok()
}

/// This host's private key: `STATE_DIR/wireguard.key` (root's alone), made when first
/// needed, replaced when it is older than the rotation interval.
struct Key {
    secret: [u8; 32],
    made: SystemTime,
}

fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("wireguard.key")
}

impl Key {
    fn load_or_make(state_dir: &Path) -> Result<Self> {
        let path = key_path(state_dir);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some(secret) = decode_key(text.trim()) {
                let made = std::fs::metadata(&path)?.modified()?;
                return Ok(Self { secret, made });
            }
        }
        Self::make(state_dir)
    }

    fn make(state_dir: &Path) -> Result<Self> {
        let mut secret: [u8; 32] = crate::model::state::random_bytes()
            .context("reading /dev/urandom for a WireGuard key")?;
        // Clamped as X25519 wants it, so `wg` shows the same public key.
        secret[0] &= 248;
        secret[31] = (secret[31] & 127) | 64;
        crate::base::atomic_file::write(
            &key_path(state_dir),
            format!("{}\n", encode_key(&secret)).as_bytes(),
            0o600,
        )?;
        Ok(Self {
            secret,
            made: SystemTime::now(),
        })
    }

    fn public(&self) -> [u8; 32] {
        let secret = boringtun::x25519::StaticSecret::from(self.secret);
        boringtun::x25519::PublicKey::from(&secret).to_bytes()
    }
}

/// The device as the daemon found it.
enum Device {
    Kernel {
        index: u32,
    },
    User {
        index: u32,
        engine: userspace::Engine,
    },
}

struct Inner {
    key: Key,
    device: Option<Device>,
    /// The peers as the cluster says they are (kept for a device made later).
    want: Vec<Peer>,
    /// What the kernel device was last given.
    applied: Vec<Peer>,
}

/// The daemon's hold on this host's WireGuard: its key, its device, its peers.
pub struct Wireguard {
    cfg: WireguardConfig,
    state_dir: PathBuf,
    /// The instance's interface group: a device of that name outside it is not ours.
    group: u32,
    inner: Mutex<Inner>,
}

impl Wireguard {
    pub fn new(state_dir: &Path, cfg: &WireguardConfig) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            state_dir: state_dir.to_path_buf(),
            group: crate::model::instance::instance_group(state_dir),
            inner: Mutex::new(Inner {
                key: Key::load_or_make(state_dir)?,
                device: None,
                want: Vec::new(),
                applied: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What this host publishes: its public key and port.
    pub fn identity(&self) -> crate::model::overlay::WireguardPeer {
        crate::model::overlay::WireguardPeer {
            public_key: encode_key(&self.lock().key.public()),
            port: self.cfg.port,
        }
    }

    /// Follows the device: a new one (a command made it) is configured — the kernel's with
    /// key, port and peers, a TUN device gets an engine —, a gone one is let go.
    pub fn refresh(&self) -> Result<()> {
        let link = Netlink::new()?.link(DEV)?;
        let mut inner = self.lock();
        let current = match &inner.device {
            Some(Device::Kernel { index }) => Some(*index),
            Some(Device::User { index, engine }) if engine.alive() => Some(*index),
            _ => None,
        };
        let Some(link) = link else {
            stop(inner.device.take());
            return Ok(());
        };
        if current == Some(link.index) {
            return Ok(());
        }
        stop(inner.device.take());
        if !is_ours(&link, self.group) {
            bail!("interface {DEV} is not this instance's WireGuard device: remove or rename it");
        }
        let device = if link.kind == "wireguard" {
            genl::set_device(DEV, &inner.key.secret, self.cfg.port, true)?;
            inner.applied.clear();
            Device::Kernel { index: link.index }
        } else {
            let engine = userspace::Engine::start(DEV, self.cfg.port, inner.key.secret)?;
            Device::User {
                index: link.index,
                engine,
            }
        };
        inner.device = Some(device);
        apply(&mut inner)
    }

    /// The peers as the cluster says they are now.
    pub fn set_peers(&self, mut peers: Vec<Peer>) -> Result<()> {
        peers.sort_by_key(|p| p.public_key);
        let mut inner = self.lock();
        inner.want = peers;
        apply(&mut inner)
    }

    /// Replaces the key when it is older than the rotation interval; true when it did (the
    /// caller publishes the new public key).
    pub fn rotate_if_due(&self) -> Result<bool> {
        let mut inner = self.lock();
        let age = inner.key.made.elapsed().unwrap_or_default();
        if age < self.cfg.rotate {
            return Ok(false);
        }
        inner.key = Key::make(&self.state_dir)?;
        // The device takes the new key; where that fails it is let go, and the next
        // [`Wireguard::refresh`] sets it up again (the new key is published either way).
        let device = match inner.device.take() {
            Some(Device::Kernel { index }) => {
                genl::set_device(DEV, &inner.key.secret, self.cfg.port, false)
                    .ok()
                    .map(|()| Device::Kernel { index })
            }
            Some(Device::User { index, engine }) => {
                engine.stop();
                userspace::Engine::start(DEV, self.cfg.port, inner.key.secret)
                    .ok()
                    .map(|engine| Device::User { index, engine })
            }
            None => None,
        };
        inner.device = device;
        let _ = apply(&mut inner);
        Ok(true)
    }

    /// How often [`Wireguard::rotate_if_due`] is worth asking.
    pub fn rotation_check(&self) -> Duration {
        (self.cfg.rotate / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

fn stop(device: Option<Device>) {
    if let Some(Device::User { engine, .. }) = device {
        engine.stop();
    }
}

/// The device netctl made: in the instance's group, of a kind that carries WireGuard.
pub fn is_ours(link: &crate::kernel::netlink::Link, group: u32) -> bool {
    link.name == DEV && link.group == group && matches!(link.kind.as_str(), "wireguard" | "tun")
}

fn apply(inner: &mut Inner) -> Result<()> {
    let Inner {
        device,
        want,
        applied,
        ..
    } = inner;
    match device {
        None => Ok(()),
        Some(Device::User { engine, .. }) => {
            engine.set_peers(want);
            Ok(())
        }
        Some(Device::Kernel { .. }) => {
            // Peer by peer: one the kernel refuses does not keep the others (an address
            // that moved to another host, say) from being applied.
            let changes = peer_changes(applied, want);
            if changes.is_empty() {
                return Ok(());
            }
            let mut genl = genl::Genl::open()?;
            let mut failed = None;
            for change in changes {
                match genl.set_peer(DEV, &change) {
                    Ok(()) => {
                        let key = change.key();
                        applied.retain(|p| p.public_key != key);
                        applied.extend(want.iter().filter(|p| p.public_key == key).cloned());
                    }
                    Err(e) => failed = Some(e),
                }
            }
            failed.map_or(Ok(()), Err)
        }
    }
}

/// What turns the device's peers `from` into `to`: gone keys removed, new or changed ones
/// set (a peer that did not change keeps its session).
fn peer_changes<'a>(from: &[Peer], to: &'a [Peer]) -> Vec<genl::PeerChange<'a>> {
    let mut out: Vec<genl::PeerChange> = from
        .iter()
        .filter(|f| !to.iter().any(|t| t.public_key == f.public_key))
        .map(|f| genl::PeerChange::Remove(f.public_key))
        .collect();
    out.extend(to.iter().filter(|t| !from.contains(t)).map(|t| {
        genl::PeerChange::Set(genl::PeerSet {
            public_key: t.public_key,
            endpoint: t.endpoint,
            allowed: &t.allowed,
        })
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn peer(k: u8, allowed: &[u8]) -> Peer {
        Peer {
            public_key: [k; 32],
            endpoint: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, k), 51871),
            allowed: allowed
                .iter()
                .map(|a| Ipv4Addr::new(10, 9, 0, *a))
                .collect(),
        }
    }

    #[test]
    fn only_what_changed_is_sent_to_the_kernel() {
        let before = [peer(1, &[2]), peer(2, &[3])];
        let after = [peer(1, &[2]), peer(2, &[3, 4]), peer(3, &[5])];
        let c = peer_changes(&before, &after);
        let set: Vec<u8> = c
            .iter()
            .filter_map(|c| match c {
                genl::PeerChange::Set(p) => Some(p.public_key[0]),
                _ => None,
            })
            .collect();
        assert_eq!(set, [2, 3]);
        let gone = peer_changes(&after, &before[..1]);
        let removed: Vec<u8> = gone
            .iter()
            .filter_map(|c| match c {
                genl::PeerChange::Remove(k) => Some(k[0]),
                _ => None,
            })
            .collect();
        assert_eq!(removed, [2, 3]);
    }

    #[test]
    fn keys_round_trip_as_wg_prints_them() {
        let k = [7u8; 32];
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        assert_eq!(encode_key(&k).len(), 44);
        assert!(decode_key("not a key").is_none());
        assert!(decode_key(&STANDARD.encode([1u8; 31])).is_none());
    }
}
