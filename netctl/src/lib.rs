//! netctl: Docker-style bridge networking whose packet path is eBPF (TC and XDP).
//!
//! `cli` parses and dispatches; the modules below it do the work and know nothing of clap.

pub mod cli;
pub mod config;
pub mod dataplane;
pub mod netlink;
pub mod reconcile;
