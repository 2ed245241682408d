//! What every layer above the model leans on: the configuration (with the cluster store's
//! options), atomic files, failpoints, SIGPIPE, timings.

pub mod atomic_file;
pub mod config;
pub mod failpoint;
pub mod sigpipe;
pub mod store_opts;
pub mod timing;
