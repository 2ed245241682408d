//! Optional kernel features the programs adapt to. The controller probes the kernel and sets
//! the read-only global [`GLOBAL`] at load; code behind an absent feature's bit is then dead
//! and the verifier prunes it, so one object loads on every supported kernel.

/// The global's symbol in the object (a `u32` of the bits below).
pub const GLOBAL: &str = "FEATURES";

/// `bpf_xdp_adjust_meta` in XDP programs: `uplink_xdp` marks what it did for TC. Without it
/// XDP does nothing and TC does all the uplink's work.
pub const XDP_ADJUST_META: u32 = 1 << 0;
/// `bpf_xdp_load_bytes` (5.18): traced XDP packets carry their bytes.
pub const XDP_LOAD_BYTES: u32 = 1 << 1;
/// `bpf_check_mtu` (5.12): a container frame too large for the overlay tunnel is dropped
/// (`tunnel-mtu`) before it is encapsulated. Without it the host fragments the VXLAN packet.
pub const CHECK_MTU: u32 = 1 << 2;
