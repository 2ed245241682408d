//! Address management: subnets, gateways, pools and addresses, all pure functions over the
//! state (nothing here touches the kernel).

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use ipnetwork::Ipv4Network;

use crate::model::state::{Ipv4Subnet, Network};

/// The default network's preferred subnet.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";

/// Docker's default address pools for new networks, in order.
pub fn pools() -> impl Iterator<Item = Ipv4Network> {
    let b16 = (18..=31u8).map(|b| Ipv4Network::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let c20 = (0..16u8).map(|i| Ipv4Network::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    b16.chain(c20)
}

pub fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The first pool that overlaps nothing in `taken` (other networks, host addresses, routes).
pub fn pick_pool(preferred: Option<Ipv4Network>, taken: &[Ipv4Network]) -> Result<Ipv4Network> {
    preferred
        .into_iter()
        .chain(pools())
        .find(|p| !taken.iter().any(|t| overlaps(p, t)))
        .context(
            "all default address pools (172.17-31.0.0/16, 192.168.0.0/16 in /20s) are in use: \
             give the network a --subnet",
        )
}

pub fn parse_subnet(s: &str, what: &str) -> Result<Ipv4Network> {
    let net: Ipv4Network = s.parse().map_err(|_| {
        anyhow::anyhow!("invalid {what} {s:?}: expected an IPv4 CIDR such as 172.20.0.0/16")
    })?;
    no_host_bits(s, what, net.ip(), net.network(), net.prefix())?;
    Ok(net)
}

/// A subnet is written with its network address (`what` names the flag).
pub fn no_host_bits<A: PartialEq + std::fmt::Display>(
    s: &str,
    what: &str,
    ip: A,
    network: A,
    prefix: u8,
) -> Result<()> {
    if ip != network {
        bail!(
            "invalid {what} {s}: the address has host bits set; did you mean {network}/{prefix}?"
        );
    }
    Ok(())
}

pub fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        anyhow::anyhow!("invalid {what} {s:?}: expected an IPv4 address such as 172.20.0.10")
    })
}

/// Checks a network's addressing and fills in the gateway (first host address by default).
pub fn plan(
    subnet: Ipv4Network,
    gateway: Option<Ipv4Addr>,
    ip_range: Option<Ipv4Network>,
) -> Result<Ipv4Addr> {
    if subnet.prefix() > 30 {
        bail!("subnet {subnet} is too small: use a /30 or larger");
    }
    let gw = gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
    if !is_host(&subnet, gw) {
        bail!("gateway {gw} is not a usable address of subnet {subnet}: pick one inside it");
    }
    if let Some(r) = ip_range {
        if !subnet.contains(r.network()) || r.prefix() < subnet.prefix() {
            bail!("ip-range {r} is not inside subnet {subnet}: pick a range inside it");
        }
    }
    Ok(gw)
}

/// An address a container may use: inside the subnet, neither network nor broadcast address.
fn is_host(subnet: &Ipv4Network, ip: Ipv4Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Checks a static `--ip`.
pub fn check_static(net: &Network, ip: Ipv4Addr, used: &[Ipv4Addr]) -> Result<()> {
    let Some(v4) = &net.ipv4 else {
        bail!(
            "--ip {ip}: network {} is IPv6-only (--ipv4=false): give it an IPv6 address with --ip6",
            net.name
        );
    };
    if !v4.subnet.contains(ip) {
        // Docker's words (users search for them).
        bail!(
            "Invalid preferred address {ip}: It does not belong to any of this network's subnets ({} is {})",
            net.name,
            v4.subnet
        );
    }
    if !is_host(&v4.subnet, ip) || ip == v4.gateway {
        bail!(
            "--ip {ip} is reserved in network {} (network, broadcast or gateway address): pick another",
            net.name
        );
    }
    if used.contains(&ip) {
        bail!(
            "--ip {ip} is already in use in network {}: pick another",
            net.name
        );
    }
    Ok(())
}

/// The lowest free address of the network's range (ip-range if set, else subnet); None on
/// an IPv6-only network.
pub fn allocate(net: &Network, used: &[Ipv4Addr]) -> Result<Option<Ipv4Addr>> {
    let Some(v4) = &net.ipv4 else {
        return Ok(None);
    };
    let pool = v4.ip_range.unwrap_or(v4.subnet);
    pool.iter()
        .find(|ip| is_host(&v4.subnet, *ip) && *ip != v4.gateway && !used.contains(ip))
        .map(Some)
        .with_context(|| {
            format!(
                "no free address left in network {} ({pool}): remove containers or use a larger subnet",
                net.name
            )
        })
}

/// A free address of the range, from a place `seed` picks (the cluster's allocation: a host
/// cut off from the store that comes back seldom finds its addresses handed out again, as it
/// would if every host took the lowest free one).
pub fn allocate_spread(
    name: &str,
    v4: &Ipv4Subnet,
    used: &[Ipv4Addr],
    seed: u32,
) -> Result<Ipv4Addr> {
    let pool = v4.ip_range.unwrap_or(v4.subnet);
    let used: std::collections::HashSet<Ipv4Addr> = used.iter().copied().collect();
    let size = u64::from(pool.size()).max(1);
    let base = u64::from(u32::from(pool.network()));
    (0..size)
        .map(|i| Ipv4Addr::from((base + (u64::from(seed) + i) % size) as u32))
        .find(|ip| is_host(&v4.subnet, *ip) && *ip != v4.gateway && !used.contains(ip))
        .with_context(|| {
            format!(
                "no free address left in network {name} ({pool}): remove containers or use a larger subnet"
            )
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn net(subnet: &str, range: Option<&str>) -> Network {
        let subnet: Ipv4Network = subnet.parse().unwrap();
        let ip_range = range.map(|r| r.parse().unwrap());
        Network {
            id: "x".into(),
            name: "n".into(),
            driver: "bridge".into(),
            ipv4: Some(Ipv4Subnet {
                subnet,
                gateway: plan(subnet, None, ip_range).unwrap(),
                ip_range,
                user_subnet: true,
            }),
            internal: false,
            icc: true,
            masquerade: true,
            mtu: 1500,
            bridge: "br".into(),
            options: BTreeMap::new(),
            created: 0,
            vni: None,
            ipv6: None,
        }
    }

    #[test]
    fn pools_follow_docker_order() {
        let p: Vec<String> = pools().map(|p| p.to_string()).collect();
        assert_eq!(p[0], "172.18.0.0/16");
        assert_eq!(p[13], "172.31.0.0/16");
        assert_eq!(p[14], "192.168.0.0/20");
        assert_eq!(p[15], "192.168.16.0/20");
    }

    #[test]
    fn pick_pool_skips_overlaps() {
        let taken: Vec<Ipv4Network> = vec!["172.18.5.0/24".parse().unwrap()];
        assert_eq!(
            pick_pool(None, &taken).unwrap().to_string(),
            "172.19.0.0/16"
        );
        let pref = DEFAULT_BRIDGE_SUBNET.parse().ok();
        assert_eq!(pick_pool(pref, &[]).unwrap().to_string(), "172.17.0.0/16");
        let taken = vec!["172.16.0.0/12".parse().unwrap()];
        assert_eq!(
            pick_pool(pref, &taken).unwrap().to_string(),
            "192.168.0.0/20"
        );
        let all = vec!["0.0.0.0/1".parse().unwrap(), "128.0.0.0/1".parse().unwrap()];
        assert!(pick_pool(None, &all).is_err());
    }

    #[test]
    fn subnet_and_gateway_checks() {
        assert!(parse_subnet("10.0.0.0/33", "subnet").is_err());
        assert!(parse_subnet("banana", "subnet").is_err());
        let e = parse_subnet("10.0.0.5/24", "subnet")
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.0/24"), "{e}");
        let s = parse_subnet("10.0.0.0/24", "subnet").unwrap();
        assert_eq!(plan(s, None, None).unwrap(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            plan(s, Some(Ipv4Addr::new(10, 0, 0, 254)), None).unwrap(),
            Ipv4Addr::new(10, 0, 0, 254)
        );
        let e = plan(s, Some(Ipv4Addr::new(10, 0, 1, 1)), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.1.1") && e.contains("10.0.0.0/24"), "{e}");
        assert!(plan(s, Some(Ipv4Addr::new(10, 0, 0, 255)), None).is_err());
        assert!(plan(s, None, Some("10.0.1.0/28".parse().unwrap())).is_err());
        assert!(plan(s, None, Some("10.0.0.128/25".parse().unwrap())).is_ok());
        assert!(plan("10.0.0.0/31".parse().unwrap(), None, None).is_err());
    }

    #[test]
    fn allocation_is_lowest_free_and_respects_range() {
        let n = net("10.0.0.0/24", None);
        assert_eq!(
            allocate(&n, &[]).unwrap().unwrap(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        let used = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        assert_eq!(
            allocate(&n, &used).unwrap().unwrap(),
            Ipv4Addr::new(10, 0, 0, 4)
        );
        let r = net("10.0.0.0/24", Some("10.0.0.128/25"));
        assert_eq!(
            allocate(&r, &[]).unwrap().unwrap(),
            Ipv4Addr::new(10, 0, 0, 128)
        );
        let tiny = net("10.0.0.0/30", None);
        assert_eq!(
            allocate(&tiny, &[]).unwrap().unwrap(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert!(allocate(&tiny, &[Ipv4Addr::new(10, 0, 0, 2)]).is_err());
    }

    #[test]
    fn static_ip_checks_name_the_problem() {
        let n = net("10.0.0.0/24", None);
        let e = check_static(&n, Ipv4Addr::new(10, 0, 1, 5), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.1.5") && e.contains("10.0.0.0/24"), "{e}");
        assert!(check_static(&n, Ipv4Addr::new(10, 0, 0, 1), &[]).is_err());
        assert!(check_static(&n, Ipv4Addr::new(10, 0, 0, 255), &[]).is_err());
        assert!(check_static(
            &n,
            Ipv4Addr::new(10, 0, 0, 9),
            &[Ipv4Addr::new(10, 0, 0, 9)]
        )
        .is_err());
        assert!(check_static(&n, Ipv4Addr::new(10, 0, 0, 9), &[]).is_ok());
    }

    #[test]
    fn spread_allocation_is_free_in_range_and_not_always_the_lowest() {
        let n = net("10.9.0.0/24", None);
        let picks: std::collections::BTreeSet<Ipv4Addr> = (0..64u32)
            .map(|seed| {
                allocate_spread(
                    "n",
                    n.ipv4.as_ref().unwrap(),
                    &[],
                    seed.wrapping_mul(2654435761),
                )
                .unwrap()
            })
            .collect();
        assert!(picks.len() > 16, "{picks:?}");
        for ip in &picks {
            assert!(
                is_host(&n.ipv4.as_ref().unwrap().subnet, *ip)
                    && *ip != n.ipv4.as_ref().unwrap().gateway,
                "{ip}"
            );
        }
        // Taken addresses are skipped; a full range is an error.
        let r = net("10.9.0.0/24", Some("10.9.0.8/30"));
        let used: Vec<Ipv4Addr> = ["10.9.0.8", "10.9.0.9", "10.9.0.11"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for seed in 0..8 {
            assert_eq!(
                allocate_spread("n", r.ipv4.as_ref().unwrap(), &used, seed).unwrap(),
                "10.9.0.10".parse::<Ipv4Addr>().unwrap()
            );
        }
        let all: Vec<Ipv4Addr> = r.ipv4.as_ref().unwrap().ip_range.unwrap().iter().collect();
        assert!(allocate_spread("n", r.ipv4.as_ref().unwrap(), &all, 3).is_err());
    }
}
