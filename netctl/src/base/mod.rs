//! What every layer above the model leans on: the configuration, atomic files, failpoints, timings.

pub mod atomic_file;
pub mod config;
pub mod failpoint;
pub mod timing;
