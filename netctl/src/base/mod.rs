//! What every layer above the model leans on: the configuration, atomic files, failpoints.

pub mod atomic_file;
pub mod config;
pub mod failpoint;
