//! The features the controller found in this kernel (netctl_common::features), a read-only
//! global set at load: branches on it are constant to the verifier, which prunes what an
//! absent feature would need.

/// Set by the loader (`EbpfLoader::set_global`); 0 in the object.
#[unsafe(no_mangle)]
static FEATURES: u32 = 0;

#[inline(always)]
pub fn has(bit: u32) -> bool {
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the 0 above.
    unsafe { core::ptr::read_volatile(&FEATURES) & bit != 0 }
}
