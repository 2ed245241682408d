//! IPv6 addressing of dual-stack networks (`network create --ipv6`): the unique local pool
//! a subnet comes from when none is given, gateways, container addresses, and the
//! link-local address the kernel derives from a MAC. Pure functions, as `ipam`.

use std::net::Ipv6Addr;

use anyhow::{bail, Context, Result};
use ipnetwork::Ipv6Network;

use crate::model::state::{Ipv6Subnet, Network};

/// How many addresses of a subnet `allocate` looks at before it gives up: the lowest free
/// one is found among the first this many (a /64 has 2^64).
const SCAN: u128 = 1 << 20;

pub fn parse_subnet(s: &str, what: &str) -> Result<Ipv6Network> {
    let net: Ipv6Network = s.parse().map_err(|_| {
        anyhow::anyhow!("invalid {what} {s:?}: expected an IPv6 CIDR such as fd00:1::/64")
    })?;
    crate::model::ipam::no_host_bits(s, what, net.ip(), net.network(), net.prefix())?;
    if net.prefix() > 124 {
        bail!("{what} {s} is too small: use a /124 or larger (a /64 is usual)");
    }
    let first = net.network().segments()[0];
    if first & 0xff00 == 0xff00 || first & 0xffc0 == 0xfe80 || net.network().is_loopback() {
        bail!("{what} {s} is a multicast, link-local or loopback range: pick a unicast one (a unique local fd00::/8 subnet, or one routed to this host)");
    }
    Ok(net)
}

pub fn parse_ip(s: &str, what: &str) -> Result<Ipv6Addr> {
    s.parse().map_err(|_| {
        anyhow::anyhow!("invalid {what} {s:?}: expected an IPv6 address such as fd00:1::10")
    })
}

pub fn overlaps(a: &Ipv6Network, b: &Ipv6Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The /48 unique local prefix of this host's automatic IPv6 subnets (RFC 4193: `fd` and a
/// 40-bit global ID): derived from `seed` (the machine and the instance), so it is chosen
/// once per host and stays the same, as Docker 27+ derives its pool from the engine's ID.
pub fn ula_prefix(seed: &str) -> Ipv6Network {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let id = h.to_be_bytes();
    let addr = Ipv6Addr::from([
        0xfd, id[0], id[1], id[2], id[3], id[4], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    Ipv6Network::new(addr, 48).expect("valid prefix")
}

/// The first /64 of the host's unique local prefix that overlaps nothing in `taken`.
pub fn pick_subnet(ula: Ipv6Network, taken: &[Ipv6Network]) -> Result<Ipv6Network> {
    let base = u128::from(ula.network());
    (0..=u16::MAX as u128)
        .map(|i| Ipv6Network::new(Ipv6Addr::from(base | i << 64), 64).expect("valid prefix"))
        .find(|s| !taken.iter().any(|t| overlaps(s, t)))
        .with_context(|| format!("every /64 of {ula} is in use: give the network an IPv6 --subnet"))
}

/// Checks a network's IPv6 gateway (default: the subnet's first address after the
/// subnet-router anycast address).
pub fn plan(subnet: Ipv6Network, gateway: Option<Ipv6Addr>) -> Result<Ipv6Addr> {
    let gw = gateway.unwrap_or_else(|| Ipv6Addr::from(u128::from(subnet.network()) + 1));
    if !is_host(&subnet, gw) {
        bail!("gateway {gw} is not a usable address of subnet {subnet}: pick one inside it");
    }
    Ok(gw)
}

/// An address a container may use: inside the subnet, not the subnet-router anycast
/// address (all zero host bits).
fn is_host(subnet: &Ipv6Network, ip: Ipv6Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network()
}

fn of(net: &Network) -> Result<&Ipv6Subnet> {
    net.ipv6.as_ref().with_context(|| {
        format!(
            "network {} has no IPv6: --ip6 needs a network made with --ipv6",
            net.name
        )
    })
}

/// Checks a static `--ip6`, in Docker's words where it has them.
pub fn check_static(net: &Network, ip: Ipv6Addr, used: &[Ipv6Addr]) -> Result<()> {
    let v6 = of(net)?;
    if !v6.subnet.contains(ip) {
        bail!(
            "Invalid preferred address {ip}: It does not belong to any of this network's subnets ({} is {})",
            net.name,
            v6.subnet
        );
    }
    if !v6.user_subnet {
        bail!("user specified IP address is supported only when connecting to networks with user configured subnets");
    }
    if !is_host(&v6.subnet, ip) || ip == v6.gateway {
        bail!(
            "--ip6 {ip} is reserved in network {} (subnet-router or gateway address): pick another",
            net.name
        );
    }
    if used.contains(&ip) {
        bail!(
            "--ip6 {ip} is already in use in network {}: pick another",
            net.name
        );
    }
    Ok(())
}

/// The lowest free IPv6 address of the network.
pub fn allocate(net: &Network, used: &[Ipv6Addr]) -> Result<Ipv6Addr> {
    let v6 = of(net)?;
    let used: std::collections::HashSet<&Ipv6Addr> = used.iter().collect();
    let base = u128::from(v6.subnet.network());
    let size = 1u128
        .checked_shl(128 - u32::from(v6.subnet.prefix()))
        .unwrap_or(u128::MAX);
    (1..size.min(SCAN))
        .map(|i| Ipv6Addr::from(base + i))
        .find(|ip| *ip != v6.gateway && !used.contains(ip))
        .with_context(|| {
            format!(
                "no free IPv6 address left in network {} ({}): remove containers or use a larger subnet",
                net.name, v6.subnet
            )
        })
}

/// The link-local address the kernel gives an interface with this MAC (modified EUI-64,
/// `addr_gen_mode` 0, which netctl sets on container interfaces).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from(netctl_common::maps::link_local(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(subnet: &str, user: bool) -> Network {
        let mut n = crate::model::fixtures::net("n", "10.0.0.0/24");
        let subnet: Ipv6Network = subnet.parse().unwrap();
        n.ipv6 = Some(Ipv6Subnet {
            subnet,
            gateway: plan(subnet, None).unwrap(),
            user_subnet: user,
        });
        n
    }

    #[test]
    fn subnets_are_checked() {
        assert!(parse_subnet("fd00:1::/64", "subnet").is_ok());
        let e = parse_subnet("fd00:1::5/64", "subnet")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fd00:1::/64"), "{e}");
        assert!(parse_subnet("10.0.0.0/24", "subnet").is_err());
        assert!(parse_subnet("fe80::/64", "subnet").is_err());
        assert!(parse_subnet("ff02::/64", "subnet").is_err());
        assert!(parse_subnet("fd00::/126", "subnet").is_err());
    }

    #[test]
    fn the_pool_is_a_stable_ula_per_seed_and_skips_what_is_taken() {
        let a = ula_prefix("machine-a/1");
        assert_eq!(a, ula_prefix("machine-a/1"));
        assert_ne!(a, ula_prefix("machine-b/1"));
        assert_eq!(a.prefix(), 48);
        assert_eq!(a.network().segments()[0] >> 8, 0xfd);
        let first = pick_subnet(a, &[]).unwrap();
        assert_eq!(first.network(), a.network());
        assert_eq!(first.prefix(), 64);
        let second = pick_subnet(a, &[first]).unwrap();
        assert_ne!(second, first);
        assert!(a.contains(second.network()));
    }

    #[test]
    fn gateway_and_addresses() {
        let s: Ipv6Network = "fd00:1::/64".parse().unwrap();
        assert_eq!(
            plan(s, None).unwrap(),
            "fd00:1::1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(plan(s, Some("fd00:2::1".parse().unwrap())).is_err());
        assert!(plan(s, Some("fd00:1::".parse().unwrap())).is_err());
        let n = net("fd00:1::/64", true);
        assert_eq!(
            allocate(&n, &[]).unwrap(),
            "fd00:1::2".parse::<Ipv6Addr>().unwrap()
        );
        let used = ["fd00:1::2".parse().unwrap()];
        assert_eq!(
            allocate(&n, &used).unwrap(),
            "fd00:1::3".parse::<Ipv6Addr>().unwrap()
        );
        let tiny = net("fd00:1::/124", true);
        let all: Vec<Ipv6Addr> = (2..16u128)
            .map(|i| Ipv6Addr::from(u128::from(tiny.ipv6.as_ref().unwrap().subnet.network()) + i))
            .collect();
        assert!(allocate(&tiny, &all).is_err());
    }

    #[test]
    fn static_addresses_name_the_problem() {
        let n = net("fd00:1::/64", true);
        let e = check_static(&n, "fd00:9::5".parse().unwrap(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Invalid preferred address fd00:9::5"), "{e}");
        assert!(check_static(&n, "fd00:1::1".parse().unwrap(), &[]).is_err());
        let taken: Ipv6Addr = "fd00:1::9".parse().unwrap();
        assert!(check_static(&n, taken, &[taken]).is_err());
        assert!(check_static(&n, "fd00:1::a".parse().unwrap(), &[]).is_ok());
        let auto = net("fd00:1::/64", false);
        assert!(check_static(&auto, "fd00:1::a".parse().unwrap(), &[]).is_err());
        let mut v4 = n.clone();
        v4.ipv6 = None;
        assert!(check_static(&v4, "fd00:1::a".parse().unwrap(), &[]).is_err());
    }

    #[test]
    fn link_local_is_the_kernels_eui64() {
        assert_eq!(
            link_local([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap()
        );
    }
}
