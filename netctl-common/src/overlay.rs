//! Overlay networks in the datapath: which bridge is which VXLAN network, and where remote
//! containers live. Tunnel mode as Cilium does it: one collect-metadata VXLAN device, the
//! programs set the tunnel key from these maps; no flooding, no learning.

/// Remote container address (u32) → [`Remote`]. Filled by the daemon from the cluster store.
pub const OVERLAY_REMOTES: &str = "OVERLAY_REMOTES";
/// Remote container IPv6 address (16 bytes) → [`Remote6`]: the same containers' addresses on
/// dual-stack overlays.
pub const OVERLAY_REMOTES6: &str = "OVERLAY_REMOTES6";
/// Bridge ifindex (a local overlay network) → VNI (u32). Filled from the state.
pub const OVERLAY_VNIS: &str = "OVERLAY_VNIS";
/// VNI → bridge ifindex, for packets coming out of the tunnel. Filled from the state.
pub const OVERLAY_BRIDGES: &str = "OVERLAY_BRIDGES";
/// One [`OverlayConfig`] at index 0.
pub const OVERLAY_CONFIG: &str = "OVERLAY_CONFIG";
/// Underlay address (u32) of each other cluster host with containers → 1. Filled by the
/// daemon with the remotes: containers may not send to their VXLAN port.
pub const OVERLAY_PEERS: &str = "OVERLAY_PEERS";

pub const MAPS: [&str; 6] = [
    OVERLAY_REMOTES,
    OVERLAY_REMOTES6,
    OVERLAY_VNIS,
    OVERLAY_BRIDGES,
    OVERLAY_CONFIG,
    OVERLAY_PEERS,
];

/// The overlay's VXLAN UDP port (IANA's).
pub const VXLAN_PORT: u16 = 4789;

pub const OVERLAY_REMOTES_MAX: u32 = 65536;
pub const OVERLAY_PEERS_MAX: u32 = 4096;
pub const OVERLAY_NETS_MAX: u32 = 4096;

/// Where a remote container is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    /// The underlay address of its host (network byte order).
    pub host: u32,
    /// Its network's VXLAN network identifier (host byte order).
    pub vni: u32,
}

/// Where a remote container's IPv6 address is, and its MAC (neighbour solicitations for it
/// are answered on its behalf).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote6 {
    pub remote: Remote,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayConfig {
    /// The VXLAN device (0: no overlay on this host).
    pub vxlan_ifindex: u32,
    /// The WireGuard device of encrypted overlays (0: none on this host, so nothing of an
    /// encrypted network crosses).
    pub wg_ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<Remote>() == 8);
const _: () = assert!(core::mem::size_of::<OverlayConfig>() == 8);
const _: () = assert!(core::mem::size_of::<Remote6>() == 16);
