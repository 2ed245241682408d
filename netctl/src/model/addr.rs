//! IPv4 addresses as the maps hold them: the four bytes in network order, read as a
//! native-endian u32; MACs as bytes.

use std::net::Ipv4Addr;

pub fn raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn from_raw(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

/// A MAC in the usual notation as bytes (zeros where it does not parse).
pub fn parse_mac(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (i, part) in mac.split(':').take(6).enumerate() {
        out[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    out
}
