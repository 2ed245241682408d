//! Where netctl keeps things, read once from the environment.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use anyhow::{bail, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/netctl";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/netctl";
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the daemon takes from the state directory rather than from its own environment:
/// what it serves with (cluster membership, uplinks, XDP, the host's resolver, metrics), and
/// the variables of the store's options ([`crate::base::store_opts::OPTIONS`]).
pub const DAEMON_SETTINGS: [&str; 12] = [
    "NETCTL_CLUSTER_STORE",
    "NETCTL_CLUSTER_ADVERTISE",
    "NETCTL_CLUSTER_STORE_OPT",
    "NETCTL_CLUSTER_TTL",
    "NETCTL_UPLINKS",
    "NETCTL_XDP",
    "NETCTL_RESOLV_CONF",
    "NETCTL_METRICS_ADDR",
    "NETCTL_SPARES",
    "NETCTL_WIREGUARD",
    "NETCTL_WIREGUARD_PORT",
    "NETCTL_WIREGUARD_ROTATE",
];

/// Spare container namespaces the daemon keeps when not told (see [`Config::spares`]).
pub const DEFAULT_SPARES: usize = 0;

/// Every variable the daemon takes from the state directory.
fn daemon_settings() -> impl Iterator<Item = &'static str> {
    let opts = crate::base::store_opts::OPTIONS.iter().map(|(_, var)| *var);
    DAEMON_SETTINGS.into_iter().chain(opts)
}

/// Where the commands leave the daemon's settings (JSON, root's).
pub const DAEMON_SETTINGS_FILE: &str = "daemon-settings.json";

fn saved_settings(state_dir: &std::path::Path) -> Option<BTreeMap<String, String>> {
    let bytes = std::fs::read(state_dir.join(DAEMON_SETTINGS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How the uplink XDP program is attached (`NETCTL_XDP`).
/// Where the Docker plugin listens unless told (`--socket`): dockerd finds a plugin by its
/// socket's name in this directory.
pub const DOCKER_PLUGIN_SOCKET: &str = "/run/docker/plugins/netctl.sock";

/// Which WireGuard carries encrypted overlays (`NETCTL_WIREGUARD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireguardMode {
    /// The kernel's where it has one, else userspace over TUN.
    Auto,
    Kernel,
    Userspace,
}

/// Encrypted overlays' transport on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireguardConfig {
    pub mode: WireguardMode,
    /// The UDP port other hosts send to (`NETCTL_WIREGUARD_PORT`, default 51871).
    pub port: u16,
    /// How long a private key is used before the daemon makes a new one and publishes its
    /// public key (`NETCTL_WIREGUARD_ROTATE`, seconds; default 12 hours, as Docker's
    /// encrypted overlays rotate theirs).
    pub rotate: std::time::Duration,
}

pub const DEFAULT_WIREGUARD_PORT: u16 = 51871;
const DEFAULT_WIREGUARD_ROTATE_SECS: u64 = 12 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver mode where the driver supports it, generic (skb) mode otherwise.
    Auto,
    Native,
    Generic,
    /// No XDP: the uplink's ingress work runs in TC.
    Off,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    /// The default network's inter-container communication, when it is made (`NETCTL_ICC`:
    /// false is dockerd's `--icc=false`: its containers reach each other only through
    /// legacy links).
    pub default_icc: bool,
    /// The default network with IPv6 too, when it is made (`NETCTL_IPV6`: dockerd's
    /// `--ipv6`), on `NETCTL_FIXED_CIDR_V6` (dockerd's `--fixed-cidr-v6`) or else a /64 of
    /// the host's unique local prefix.
    pub default_ipv6: Option<Option<ipnetwork::Ipv6Network>>,
    /// Where the daemon also serves its Prometheus metrics (`NETCTL_METRICS_ADDR`, IP:PORT);
    /// it always serves them on `STATE_DIR/metrics.sock`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How long a command waits for another's state lock (`NETCTL_LOCK_TIMEOUT`, seconds,
    /// default 30).
    pub lock_timeout: std::time::Duration,
    /// The cluster store and this host's address in it, when it is a member (overlay
    /// networks: `NETCTL_CLUSTER_STORE`, `NETCTL_CLUSTER_ADVERTISE` or the flags).
    pub cluster: Option<ClusterConfig>,
    pub bpffs: PathBuf,
    /// Explicit uplinks (`NETCTL_UPLINKS`); empty means "the default-route interfaces".
    pub uplinks: Vec<String>,
    pub xdp: XdpMode,
    /// Hand published-port traffic straight to the container (`NETCTL_FASTPATH`, default on).
    pub fast_path: bool,
    /// Connection-tracking capacity in entries (`NETCTL_CT_ENTRIES`); applies when the maps
    /// are first created.
    pub ct_entries: u32,
    /// Conntrack entries one container may own (`NETCTL_CT_ENDPOINT_ENTRIES`; 0: a quarter
    /// of the table), so one container cannot evict the others' flows.
    pub ct_endpoint_entries: u32,
    /// The host's resolver configuration (`NETCTL_RESOLV_CONF`, default /etc/resolv.conf):
    /// where containers' upstream DNS servers come from when `run --dns` names none.
    pub resolv_conf: PathBuf,
    /// Kernel features to treat as absent (`NETCTL_FEATURES_DENY`, a test aid: every
    /// fallback runs on any kernel).
    pub features_deny: Vec<String>,
    /// Spare container namespaces the daemon keeps ready, veth made and programs attached
    /// (`NETCTL_SPARES`, default 0: none): a `run` takes one instead of waiting for the
    /// kernel's attachment. Off by default: the spares' host ends are links of their own
    /// on the host, which come and go as `run` takes them.
    pub spares: usize,
    pub wireguard: WireguardConfig,
}

/// One spelling per directory (trailing slash, `..`, symlinks, relative paths): the instance's
/// interface group is derived from it.
fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    let path = std::path::absolute(path)
        .map_err(|e| anyhow::anyhow!("NETCTL_STATE_DIR={}: {e}", path.display()))?;
    refuse_foreign_symlinks(&path)?;
    // Resolve the part that exists; a directory yet to be created keeps its last components.
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    for name in rest.iter().rev() {
        if name == ".." {
            out.pop();
        } else if name != "." {
            out.push(name);
        }
    }
    Ok(out)
}

/// A symlink on the way to the state directory that root did not make could lead netctl
/// into a directory of someone else's choosing (and make it root's and private there).
fn refuse_foreign_symlinks(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut at = PathBuf::new();
    for part in path.components() {
        at.push(part);
        if let Ok(m) = std::fs::symlink_metadata(&at) {
            if m.file_type().is_symlink() && m.uid() != 0 {
                anyhow::bail!(
                    "NETCTL_STATE_DIR={}: {} is a symlink of uid {}, not root's: give a path without it",
                    path.display(),
                    at.display(),
                    m.uid()
                );
            }
        }
    }
    Ok(())
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Self::from_vars(&|k| std::env::var(k).ok())
    }

    /// The daemon's configuration: the state directory (and what only commands use) from
    /// its environment, the [`DAEMON_SETTINGS`] as the last command that set them saved them
    /// in the state directory — not the environment of whichever command started it (a CNI
    /// runtime's ADD has no cluster settings, and the daemon would renew no lease).
    pub fn for_daemon() -> Result<Self> {
        let env = Self::from_env()?;
        let Some(saved) = saved_settings(&env.state_dir) else {
            return Ok(env);
        };
        Self::from_vars(&|k| {
            if daemon_settings().any(|d| d == k) {
                saved.get(k).cloned()
            } else {
                std::env::var(k).ok()
            }
        })
    }

    /// Saves the [`DAEMON_SETTINGS`] this command's environment sets, over those saved
    /// before (a setting present but empty removes it; one absent stays as saved). Returns
    /// whether they changed: the running daemon is then replaced.
    pub fn save_daemon_settings(&self) -> Result<bool> {
        let before = saved_settings(&self.state_dir).unwrap_or_default();
        let mut after = before.clone();
        for key in daemon_settings() {
            match std::env::var(key) {
                Ok(v) if v.is_empty() => {
                    after.remove(key);
                }
                Ok(v) => {
                    after.insert(key.to_string(), v);
                }
                Err(_) => {}
            }
        }
        if after == before {
            return Ok(false);
        }
        crate::base::atomic_file::write(
            &self.state_dir.join(DAEMON_SETTINGS_FILE),
            &serde_json::to_vec_pretty(&after)?,
            0o600,
        )?;
        Ok(true)
    }

    fn from_vars(vars: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |k: &str| vars(k).filter(|v| !v.is_empty());
        let xdp = match var("NETCTL_XDP").as_deref() {
            None | Some("auto") => XdpMode::Auto,
            Some("native") => XdpMode::Native,
            Some("generic") => XdpMode::Generic,
            Some("off") => XdpMode::Off,
            Some(other) => {
                bail!("NETCTL_XDP={other} is not valid: use auto, native, generic or off")
            }
        };
        let fast_path = match var("NETCTL_FASTPATH").as_deref() {
            None | Some("on") | Some("1") | Some("true") => true,
            Some("off") | Some("0") | Some("false") => false,
            Some(other) => bail!("NETCTL_FASTPATH={other} is not valid: use on or off"),
        };
        let ct_entries = match var("NETCTL_CT_ENTRIES") {
            None => netctl_common::maps::CT_MAX_DEFAULT,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1024..=16_777_216).contains(n))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "NETCTL_CT_ENTRIES={v} is not valid: use a number from 1024 to 16777216"
                    )
                })?,
        };
        let ct_endpoint_entries = match var("NETCTL_CT_ENDPOINT_ENTRIES") {
            None => 0,
            Some(v) => v.parse().ok().filter(|n| *n >= 64).ok_or_else(|| {
                anyhow::anyhow!(
                    "NETCTL_CT_ENDPOINT_ENTRIES={v} is not valid: use a number of entries, 64 or more"
                )
            })?,
        };
        let features_deny =
            crate::model::features::parse_deny(&var("NETCTL_FEATURES_DENY").unwrap_or_default())?;
        let default_icc = match var("NETCTL_ICC").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => bail!("NETCTL_ICC={other} is not valid: use true or false"),
        };
        let default_ipv6 = match (var("NETCTL_IPV6").as_deref(), var("NETCTL_FIXED_CIDR_V6")) {
            (None | Some("false") | Some("0"), None) => None,
            (None | Some("false") | Some("0"), Some(_)) => {
                bail!("NETCTL_FIXED_CIDR_V6 needs NETCTL_IPV6=true (IPv6 on the default network)")
            }
            (Some("true") | Some("1"), cidr) => Some(
                cidr.map(|c| crate::model::ipam6::parse_subnet(&c, "NETCTL_FIXED_CIDR_V6"))
                    .transpose()?,
            ),
            (Some(other), _) => bail!("NETCTL_IPV6={other} is not valid: use true or false"),
        };
        let lock_timeout = match var("NETCTL_LOCK_TIMEOUT") {
            None => std::time::Duration::from_secs(30),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|s| *s <= 86_400)
                .map(|s| std::time::Duration::from_secs(s.into()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "NETCTL_LOCK_TIMEOUT={v} is not valid: use whole seconds from 0 to 86400"
                    )
                })?,
        };
        let spares = match var("NETCTL_SPARES") {
            None => DEFAULT_SPARES,
            Some(v) => v.parse().ok().filter(|n| *n <= 64).ok_or_else(|| {
                anyhow::anyhow!("NETCTL_SPARES={v} is not valid: use a number from 0 to 64")
            })?,
        };
        let metrics_addr = match var("NETCTL_METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| {
                anyhow::anyhow!("NETCTL_METRICS_ADDR={v} is not valid: use IP:PORT")
            })?),
        };
        let wireguard = WireguardConfig {
            mode: match var("NETCTL_WIREGUARD").as_deref() {
                None | Some("auto") => WireguardMode::Auto,
                Some("kernel") => WireguardMode::Kernel,
                Some("userspace") => WireguardMode::Userspace,
                Some(other) => bail!(
                    "NETCTL_WIREGUARD={other} is not valid: use auto, kernel or userspace"
                ),
            },
            port: match var("NETCTL_WIREGUARD_PORT") {
                None => DEFAULT_WIREGUARD_PORT,
                Some(v) => v.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    anyhow::anyhow!("NETCTL_WIREGUARD_PORT={v} is not valid: use a UDP port from 1 to 65535")
                })?,
            },
            rotate: match var("NETCTL_WIREGUARD_ROTATE") {
                None => std::time::Duration::from_secs(DEFAULT_WIREGUARD_ROTATE_SECS),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (5..=30 * 86_400).contains(s))
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "NETCTL_WIREGUARD_ROTATE={v} is not valid: use seconds from 5 to 2592000"
                        )
                    })?,
            },
        };
        Ok(Self {
            wireguard,
            spares,
            metrics_addr,
            default_icc,
            default_ipv6,
            lock_timeout,
            cluster: ClusterConfig::from_vars(vars)?,
            features_deny,
            fast_path,
            ct_entries,
            ct_endpoint_entries,
            state_dir: absolute(
                var("NETCTL_STATE_DIR")
                    .unwrap_or_else(|| DEFAULT_STATE_DIR.into())
                    .as_ref(),
            )?,
            bpffs: var("NETCTL_BPFFS")
                .unwrap_or_else(|| DEFAULT_BPFFS.into())
                .into(),
            uplinks: var("NETCTL_UPLINKS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            xdp,
            resolv_conf: var("NETCTL_RESOLV_CONF")
                .unwrap_or_else(|| DEFAULT_RESOLV_CONF.into())
                .into(),
        })
    }
}

/// Where the cluster store is and who this host is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs (https://IP:PORT, or http:// with `kv.insecure`).
    pub endpoints: Vec<String>,
    /// TLS, client certificate, user (`--cluster-store-opt`, `NETCTL_CLUSTER_STORE_OPT`).
    pub security: crate::base::store_opts::StoreSecurity,
    /// As given, for messages.
    pub display: String,
    /// This host's underlay address: where other hosts send its containers' VXLAN packets.
    pub advertise: Ipv4Addr,
    /// Seconds a host's keys outlive it (`NETCTL_CLUSTER_TTL`, 2 to 3600, default 15); its
    /// daemon renews the lease every third of it.
    pub lease_ttl: i64,
}

impl ClusterConfig {
    /// From `NETCTL_CLUSTER_STORE` / `NETCTL_CLUSTER_ADVERTISE`; None when no store is named.
    fn from_vars(vars: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let var = |k: &str| vars(k).filter(|v| !v.trim().is_empty());
        let Some(store) = var("NETCTL_CLUSTER_STORE") else {
            if var("NETCTL_CLUSTER_ADVERTISE").is_some() {
                bail!("NETCTL_CLUSTER_ADVERTISE is set but NETCTL_CLUSTER_STORE is not: name the store too (etcd://IP:PORT)");
            }
            return Ok(None);
        };
        let security = crate::base::store_opts::StoreSecurity::parse(
            &var("NETCTL_CLUSTER_STORE_OPT").unwrap_or_default(),
            var,
        )?;
        let mut endpoints = parse_store(&store)?;
        if security.tls() {
            for e in &mut endpoints {
                *e = e.replacen("http://", "https://", 1);
            }
        }
        let Some(adv) = var("NETCTL_CLUSTER_ADVERTISE") else {
            bail!("NETCTL_CLUSTER_STORE is set but NETCTL_CLUSTER_ADVERTISE is not: give this host's underlay address (--cluster-advertise IP)");
        };
        let advertise = parse_advertise(&adv)?;
        let lease_ttl = match var("NETCTL_CLUSTER_TTL") {
            None => 15,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|t| (2..=3600).contains(t))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "NETCTL_CLUSTER_TTL={v} is not valid: use seconds from 2 to 3600"
                    )
                })?,
        };
        Ok(Some(Self {
            endpoints,
            security,
            display: store.trim().to_string(),
            advertise,
            lease_ttl,
        }))
    }
}

/// `etcd://IP:PORT[,IP:PORT…]` → client URLs.
pub fn parse_store(s: &str) -> Result<Vec<String>> {
    let usage = "use etcd://IP:PORT[,IP:PORT...]";
    let Some(rest) = s.trim().strip_prefix("etcd://") else {
        bail!("cluster store {s:?} is not valid: {usage}");
    };
    let mut out = Vec::new();
    for part in rest.split(',').map(str::trim) {
        let ok = part
            .parse::<std::net::SocketAddrV4>()
            .is_ok_and(|a| a.port() != 0);
        if !ok {
            bail!("cluster store {s:?} is not valid ({part:?} is not IP:PORT): {usage}");
        }
        out.push(format!("http://{part}"));
    }
    Ok(out)
}

/// The advertised address: an IPv4 address (dockerd also takes an interface name; the
/// address is what ends up on the wire, so netctl asks for it).
pub fn parse_advertise(s: &str) -> Result<Ipv4Addr> {
    let s = s.trim();
    let s = s.split_once(':').map_or(s, |(ip, _)| ip);
    match s.parse::<Ipv4Addr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() && !ip.is_multicast() => Ok(ip),
        _ => bail!(
            "cluster advertise address {s:?} is not valid: give this host's underlay IPv4 address"
        ),
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[test]
    fn store_and_advertise_forms() {
        assert_eq!(
            parse_store("etcd://10.0.0.2:2379,10.0.0.3:2379").unwrap(),
            ["http://10.0.0.2:2379", "http://10.0.0.3:2379"]
        );
        for bad in [
            "10.0.0.2:2379",
            "etcd://",
            "etcd://host:2379",
            "etcd://10.0.0.2",
            "consul://1.2.3.4:8500",
        ] {
            let e = parse_store(bad).unwrap_err().to_string();
            assert!(e.contains("etcd://IP:PORT"), "{bad}: {e}");
        }
        assert_eq!(
            parse_advertise("192.0.2.7").unwrap(),
            Ipv4Addr::new(192, 0, 2, 7)
        );
        assert_eq!(
            parse_advertise("192.0.2.7:2376").unwrap(),
            Ipv4Addr::new(192, 0, 2, 7)
        );
        for bad in ["eth0", "0.0.0.0", "127.0.0.1", ""] {
            assert!(parse_advertise(bad).is_err(), "{bad}");
        }
    }
}
