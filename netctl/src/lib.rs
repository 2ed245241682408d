//! netctl: Docker-style bridge networking whose packet path is eBPF (TC and XDP).
//!
//! `cli` parses and dispatches; the modules below it do the work and know nothing of clap.

pub mod atomic_file;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod containers;
pub mod ctx;
pub mod daemon;
pub mod dataplane;
pub mod docker;
pub mod etc;
pub mod failpoint;
pub mod hostports;
pub mod ipam;
pub mod links;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod networks;
pub mod options;
pub mod pcap;
pub mod ports;
pub mod process;
pub mod reconcile;
pub mod resolvconf;
pub mod runopts;
pub mod state;
pub mod topology;
