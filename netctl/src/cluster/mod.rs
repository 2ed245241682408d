//! The cluster store: overlay networks and their endpoints live in etcd, shared by every host
//! that names the same store (`NETCTL_CLUSTER_STORE=etcd://IP:PORT[,…]`, dockerd's
//! `--cluster-store`). Bridge networks stay in the local state.
//!
//! Keys (all under `/netctl/v1/`):
//!
//! ```text
//! networks/<name>            an overlay network (JSON: id, subnet, gateway, VNI, …)
//! endpoints/<network>/<ip>   an address in use: host, container, name, aliases (host lease)
//! hosts/<address>            a member host: its underlay address, its local subnets (host lease)
//! rev/networks               touched by every network create/remove (guards subnet/VNI choice)
//! rev/endpoints/<network>    touched by every endpoint claim/release (guards network removal)
//! ```
//!
//! Every read-modify-write is one etcd transaction that compares what it read, so concurrent
//! commands on any number of hosts never hand out one address, subnet or VNI twice.

pub mod agent;
pub mod backend;
pub mod endpoints;
pub mod network;
pub mod store;

pub use crate::base::config::ClusterConfig;
