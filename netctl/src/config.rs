//! Where netctl keeps things, read once from the environment.

use std::path::PathBuf;

use anyhow::{bail, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/netctl";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/netctl";

/// How the uplink XDP program is attached (`NETCTL_XDP`).
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
    pub bpffs: PathBuf,
    /// Explicit uplinks (`NETCTL_UPLINKS`); empty means "the default-route interfaces".
    pub uplinks: Vec<String>,
    pub xdp: XdpMode,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let xdp = match var("NETCTL_XDP").as_deref() {
            None | Some("auto") => XdpMode::Auto,
            Some("native") => XdpMode::Native,
            Some("generic") => XdpMode::Generic,
            Some("off") => XdpMode::Off,
            Some(other) => {
                bail!("NETCTL_XDP={other} is not valid: use auto, native, generic or off")
            }
        };
        Ok(Self {
            state_dir: var("NETCTL_STATE_DIR")
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into())
                .into(),
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
        })
    }
}
