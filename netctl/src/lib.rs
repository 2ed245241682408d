//! netctl: Docker-style bridge networking whose packet path is eBPF (TC and XDP).
//!
//! `cli` parses and dispatches; the modules below it do the work and know nothing of clap.

pub mod base;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod daemon;
pub mod docker;
pub mod engine;
pub mod kernel;
pub mod model;
pub mod store;
