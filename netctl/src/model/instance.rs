//! What tells one netctl instance from another on a host: its interface group.

use std::path::Path;

/// This instance's interface group: derived from the state directory (made absolute and
/// canonical by [`crate::base::config::Config`]), high bit set so it never collides with the
/// default group 0 or small hand-picked groups.
pub fn instance_group(state_dir: &Path) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    h | GROUP_FLAG
}

/// The bit every netctl instance's interface group has: links of any instance are never
/// uplinks.
pub const GROUP_FLAG: u32 = 0x8000_0000;
