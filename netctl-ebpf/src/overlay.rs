//! Overlay networks: the maps the tunnel programs read (see netctl_common::overlay).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use netctl_common::overlay::*;

#[map(name = "OVERLAY_REMOTES")]
pub static OVERLAY_REMOTES: HashMap<u32, Remote> =
    HashMap::with_max_entries(OVERLAY_REMOTES_MAX, 0);

#[map(name = "OVERLAY_VNIS")]
pub static OVERLAY_VNIS: HashMap<u32, u32> = HashMap::with_max_entries(OVERLAY_NETS_MAX, 0);

#[map(name = "OVERLAY_BRIDGES")]
pub static OVERLAY_BRIDGES: HashMap<u32, u32> = HashMap::with_max_entries(OVERLAY_NETS_MAX, 0);

#[map(name = "OVERLAY_CONFIG")]
pub static OVERLAY_CONFIG: Array<OverlayConfig> = Array::with_max_entries(1, 0);
