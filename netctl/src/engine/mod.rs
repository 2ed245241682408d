//! The engine every front-end uses: a change is begun under the state lock, planned against
//! the state, applied to the kernel, then committed or rolled back.

pub mod cluster;
pub mod containers;
pub mod ctx;
pub mod networks;
pub mod reconcile;
pub mod stats;
