//! The embedded DNS resolver (Docker's 127.0.0.11; the socket programs send containers'
//! queries for it to their first user-defined network's gateway). One per host, in the
//! daemon: `table` decides, `message` speaks the wire format, `serve` listens, `forward`
//! relays what is not ours.

pub mod dns64;
pub mod forward;
pub mod message;
pub mod serve;
pub mod stats;
pub mod table;

use std::{net::IpAddr, sync::Arc};

use crate::model::state::State;

/// The resolver as the daemon drives it: a reload swaps the table and re-aims the listeners.
pub struct Resolver {
    table: serve::Shared,
    listeners: serve::Listeners,
    /// The datapath does NAT64 (else no DNS64 answers: they would lead nowhere).
    nat64: bool,
}

impl Resolver {
    pub fn new(nat64: bool) -> Self {
        Self {
            table: Arc::new(std::sync::RwLock::new(Arc::new(table::Table::default()))),
            listeners: serve::Listeners::new(),
            nat64,
        }
    }

    /// Takes a new state: the table first (a removed container stops resolving now), then
    /// the listeners. Returns problems to log.
    pub fn reload(
        &mut self,
        state: &State,
        remote: &[table::RemoteName],
        host_servers: &[IpAddr],
    ) -> Vec<String> {
        let t = Arc::new(table::Table::build(state, remote, host_servers).with_nat64(self.nat64));
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = t;
        self.listeners.update(&table::gateways(state), &self.table)
    }

    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.listeners.addresses()
    }

    /// What the listeners counted (for the metrics).
    pub fn stats(&self) -> stats::Stats {
        self.listeners.stats.clone()
    }
}
