//! Networks as the model knows them: the pre-defined ones, names, a create request, the
//! gateway and range of a subnet, which networks have the embedded DNS.

use anyhow::{bail, Result};
use ipnetwork::Ipv4Network;

use crate::model::ipam;

/// The network `run` uses without `--network`, created on first use.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "netctl0";
/// `run --network none`: only a loopback interface (not a network of its own).
pub const NONE: &str = "none";
/// `run --network host`: the host's own network namespace.
pub const HOST: &str = "host";

/// Docker's pre-defined networks: always listed, never removed, never re-created by users.
pub const PREDEFINED: [(&str, &str); 3] =
    [(DEFAULT_NETWORK, "bridge"), (HOST, "host"), (NONE, "null")];

pub fn is_predefined(name: &str) -> bool {
    PREDEFINED.iter().any(|(n, _)| *n == name)
}

/// A pre-defined network's ID: fixed for this instance (its interface group), so it is the
/// same in every listing, before and after the default network's bridge exists.
pub fn predefined_id(group: u32, name: &str) -> String {
    (0u64..4)
        .map(|i| {
            let mut h: u64 = 0xcbf29ce484222325;
            for b in format!("{group}/{name}/{i}").bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100000001b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub internal: bool,
    pub options: Vec<String>,
    /// `--ipv6`, with an IPv6 `--subnet`/`--gateway` when given (else a /64 of the host's
    /// unique local prefix).
    pub ipv6: bool,
    pub subnet6: Option<String>,
    pub gateway6: Option<String>,
    /// `--ipv4=false`: no IPv4 on the network (with `--ipv6`, an IPv6-only network).
    pub ipv6_only: bool,
}

/// Docker's rule for network and container names.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("invalid {what} name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    Ok(())
}

/// The gateway (`--gateway`, else the subnet's first address) and `--ip-range` of a new
/// network, checked against its subnet.
pub fn plan_gateway(
    subnet: Ipv4Network,
    req: &CreateRequest,
) -> Result<(std::net::Ipv4Addr, Option<Ipv4Network>)> {
    let gateway = req
        .gateway
        .as_deref()
        .map(|g| ipam::parse_ip(g, "gateway"))
        .transpose()?;
    let ip_range = req
        .ip_range
        .as_deref()
        .map(|r| ipam::parse_subnet(r, "ip-range"))
        .transpose()?;
    Ok((ipam::plan(subnet, gateway, ip_range)?, ip_range))
}

/// Docker's embedded DNS serves user-defined networks; the default one has none.
pub fn has_embedded_dns(network: &str) -> bool {
    network != DEFAULT_NETWORK
}

/// The request with Docker's family options (`-o com.docker.network.enable_ipv6=true`,
/// `…enable_ipv4=false`) taken as the flags they stand for; an option that contradicts a
/// flag is refused.
pub fn with_family_options(
    req: &CreateRequest,
    opts: &crate::model::options::BridgeOptions,
) -> Result<CreateRequest> {
    let mut req = req.clone();
    if let Some(v6) = opts.enable_ipv6 {
        if req.ipv6 && !v6 {
            bail!(
                "--ipv6 and -o {}=false contradict each other: give one of them",
                crate::model::options::ENABLE_IPV6
            );
        }
        req.ipv6 = v6;
    }
    if let Some(v4) = opts.enable_ipv4 {
        if req.ipv6_only && v4 {
            bail!(
                "--ipv4=false and -o {}=true contradict each other: give one of them",
                crate::model::options::ENABLE_IPV4
            );
        }
        req.ipv6_only = !v4;
    }
    Ok(req)
}
