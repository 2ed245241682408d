//! IPv4 addresses as the maps hold them: the four bytes in network order, read as a
//! native-endian u32.

use std::net::Ipv4Addr;

pub fn raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn from_raw(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}
