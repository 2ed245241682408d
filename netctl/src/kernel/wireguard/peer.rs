//! A member host as this host's WireGuard device knows it.

use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub public_key: [u8; 32],
    pub endpoint: SocketAddrV4,
    /// Its containers on encrypted overlays: what it may send from, what goes to it.
    pub allowed: Vec<Ipv4Addr>,
}
