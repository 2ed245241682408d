//! The name options of `run` and `network connect`, parsed and checked before anything
//! changes: `--hostname`, `--network-alias`/`--alias`, `--add-host`, `--dns`, `--link`,
//! `--expose`. Errors name the flag and the rule, in one line.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};

use crate::{
    model::networks::{DEFAULT_NETWORK, HOST, NONE},
    model::ports::{PortSpec, Proto},
    model::state::{Container, Exposed, ExtraHost, LinkRef, RunOptions, State},
};

/// `run` (and `create`) as asked: what the front-ends hand the engine.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub network: Option<String>,
    pub ip: Option<String>,
    /// `--ip6`: a static IPv6 address on a network with IPv6.
    pub ip6: Option<String>,
    pub publish: Vec<String>,
    pub command: Vec<String>,
    pub detach: bool,
    /// The container's ID, when chosen before (an overlay address was claimed for it).
    pub id: Option<String>,
    /// The address claimed in the cluster store for an overlay network.
    pub claimed: Option<(Ipv4Addr, String)>,
    /// `-P`: every exposed port on an ephemeral host port.
    pub publish_all: bool,
    /// `--expose`, `--hostname`, `--network-alias`, `--add-host`, `--dns`, `--link` as given
    /// (checked by [`crate::model::runopts::plan`]).
    pub expose: Vec<String>,
    pub hostname: Option<String>,
    pub aliases: Vec<String>,
    pub add_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub links: Vec<String>,
}

/// The name options of one `run`, checked against the state and the network it joins; put
/// on the container by [`Planned::apply`] once its first network's gateway is known.
#[derive(Debug, Default)]
pub struct Planned {
    options: RunOptions,
    aliases: Vec<String>,
    /// `--add-host NAME:host-gateway` names.
    to_gateway: Vec<String>,
}

/// Checks every name option of `req` before anything is changed.
pub fn plan(state: &State, req: &CreateRequest) -> Result<Planned> {
    let given = req.network.as_deref().unwrap_or(DEFAULT_NETWORK);
    // The network as named (a name, an ID, a prefix); the default one may not exist yet.
    let network = match given {
        HOST | NONE | DEFAULT_NETWORK => given.to_string(),
        other => state.find_network(other)?.name.clone(),
    };
    let mut p = Planned::default();
    if let Some(h) = &req.hostname {
        check_hostname(h)?;
        p.options.hostname = h.clone();
    }
    for a in &req.aliases {
        check_alias(a, "--network-alias")?;
        p.aliases.push(a.clone());
    }
    for h in &req.add_hosts {
        match parse_add_host(h)? {
            AddHost::Addr(name, ip) => p.options.extra_hosts.push(ExtraHost { name, ip }),
            AddHost::Gateway(name) => p.to_gateway.push(name),
        }
    }
    for d in &req.dns {
        p.options.dns.push(parse_dns(d)?);
    }
    for e in &req.expose {
        p.options.exposed.extend(parse_expose(e)?);
    }
    p.options.exposed.sort();
    p.options.exposed.dedup();
    for l in &req.links {
        let (name, alias) = parse_link(l)?;
        let t = state
            .find_container(&name)
            .with_context(|| format!("--link {l}"))?;
        if network == DEFAULT_NETWORK && !t.endpoints.iter().any(|e| e.network == network) {
            bail!(
                "--link {l}: cannot link to /{}, as it does not belong to the default network",
                t.name
            );
        }
        if network != DEFAULT_NETWORK && !t.endpoints.iter().any(|e| e.network == network) {
            bail!(
                "--link {l}: container {} is not on network {network}",
                t.name
            );
        }
        p.options.links.push(LinkRef {
            id: t.id.clone(),
            name: t.name.clone(),
            alias: alias.unwrap_or_else(|| t.name.clone()),
        });
    }
    let host_only = [
        (req.hostname.is_some(), "--hostname"),
        (!req.aliases.is_empty(), "--network-alias"),
        (!req.add_hosts.is_empty(), "--add-host"),
        (!req.dns.is_empty(), "--dns"),
        (!req.links.is_empty(), "--link"),
    ];
    match network.as_str() {
        HOST => {
            if let Some((_, flag)) = host_only.iter().find(|(set, _)| *set) {
                bail!("{flag} cannot be used with --network host: the container shares the host's hostname and /etc files");
            }
        }
        NONE => {
            if !p.aliases.is_empty() || !p.options.links.is_empty() {
                bail!("--network-alias and --link need a network: --network none has none");
            }
            if !p.to_gateway.is_empty() {
                bail!("--add-host NAME:{HOST_GATEWAY} needs a network with a gateway: --network none has none");
            }
        }
        DEFAULT_NETWORK if !p.aliases.is_empty() => {
            bail!("network-scoped alias is supported only for containers in user defined networks");
        }
        _ => {}
    }
    if req.publish_all && p.options.exposed.is_empty() {
        eprintln!("WARNING: -P publishes nothing: the container exposes no port (--expose)");
    }
    Ok(p)
}

impl Planned {
    /// `-P`: an ephemeral host port for every exposed port no `-p` publishes already.
    pub fn publish_all(&self, specs: &[PortSpec]) -> Vec<PortSpec> {
        self.options
            .exposed
            .iter()
            .filter(|e| {
                !specs
                    .iter()
                    .any(|s| s.proto == e.proto && s.container.contains(&e.port))
            })
            .map(|e| PortSpec {
                host_ip: Ipv4Addr::UNSPECIFIED.into(),
                host: None,
                container: e.port..=e.port,
                proto: e.proto,
            })
            .collect()
    }

    /// Puts the options on the container; `gateway` is its first network's.
    pub fn apply(self, c: &mut Container, gateway: Option<IpAddr>) {
        let mut options = self.options;
        if let Some(ip) = gateway {
            for name in self.to_gateway {
                options.extra_hosts.push(ExtraHost { name, ip });
            }
        }
        c.options = options;
        if let Some(ep) = c.endpoints.first_mut() {
            ep.aliases = self.aliases;
        }
    }
}

/// A DNS name as RFC 1123 allows a host name: dot-separated labels of letters, digits and
/// '-', 1 to 63 characters each, not starting or ending with '-', at most 253 in all.
pub fn is_dns_name(s: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&s.len()) && s.split('.').all(label)
}

/// `--hostname`: an RFC 1123 name the kernel takes (at most 64 bytes).
pub fn check_hostname(s: &str) -> Result<()> {
    if !is_dns_name(s) || s.len() > 64 {
        bail!("invalid hostname {s:?}: use letters, digits and '-' (not first or last), at most 63 per dot-separated label and 64 in all (RFC 1123)");
    }
    Ok(())
}

/// `--network-alias`, `--alias`, the alias of `--link`: an RFC 1123 name.
pub fn check_alias(s: &str, flag: &str) -> Result<()> {
    if !is_dns_name(s) {
        bail!("invalid {flag} {s:?}: use letters, digits and '-' (not first or last), at most 63 per dot-separated label (RFC 1123)");
    }
    Ok(())
}

/// One `--add-host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddHost {
    /// `NAME:IP`.
    Addr(String, IpAddr),
    /// `NAME:host-gateway`: the gateway of the container's first network.
    Gateway(String),
}

/// Docker's special address for `--add-host`.
pub const HOST_GATEWAY: &str = "host-gateway";

/// `--add-host NAME:IP` or `NAME:host-gateway` (the address may be IPv6: the name ends at
/// the first ':').
pub fn parse_add_host(s: &str) -> Result<AddHost> {
    let usage = "use NAME:IP or NAME:host-gateway";
    let Some((name, addr)) = s.split_once(':') else {
        bail!("invalid --add-host {s:?}: {usage}");
    };
    if !is_dns_name(name) {
        bail!("invalid --add-host {s:?}: {name:?} is not a host name (RFC 1123); {usage}");
    }
    if addr == HOST_GATEWAY {
        return Ok(AddHost::Gateway(name.to_string()));
    }
    let ip = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            anyhow::anyhow!("invalid --add-host {s:?}: {addr:?} is not an IP address; {usage}")
        })?;
    Ok(AddHost::Addr(name.to_string(), ip))
}

/// `--dns IP`.
pub fn parse_dns(s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("invalid --dns {s:?}: give the IP address of a DNS server"))
}

/// `--link NAME[:ALIAS]` → (container, alias; the container's name when none is given).
pub fn parse_link(s: &str) -> Result<(String, Option<String>)> {
    let (name, alias) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    if name.is_empty() {
        bail!("invalid --link {s:?}: use NAME[:ALIAS]");
    }
    if let Some(a) = alias {
        check_alias(a, "--link alias")?;
    }
    Ok((
        name.trim_start_matches('/').to_string(),
        alias.map(str::to_string),
    ))
}

/// `--expose PORT[-END][/tcp|udp]`, ranges expanded.
pub fn parse_expose(s: &str) -> Result<Vec<Exposed>> {
    let usage = "use PORT[-END][/tcp|udp] with ports 1-65535";
    let (ports, proto) = match s.rsplit_once('/') {
        Some((p, proto)) => (
            p,
            proto
                .parse::<Proto>()
                .with_context(|| format!("invalid --expose {s:?}"))?,
        ),
        None => (s, Proto::Tcp),
    };
    let port = |p: &str| -> Result<u16> {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("invalid --expose {s:?}: {usage}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if start > end {
        bail!("invalid --expose {s:?}: the range starts above its end; {usage}");
    }
    Ok((start..=end).map(|port| Exposed { port, proto }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        for ok in ["web", "web-1", "a", "db.internal", "x1.y2.z3", "1abc"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "", "-web", "web-", "we_b", "a b", "a..b", ".a", "a.", &long, "é",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(check_hostname(&"a".repeat(63)).is_ok());
        assert!(check_hostname(&format!("{}.{}", "a".repeat(40), "b".repeat(30))).is_err());
        assert!(check_alias("x_y", "--network-alias")
            .unwrap_err()
            .to_string()
            .contains("--network-alias"));
    }

    #[test]
    fn add_host_forms() {
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            AddHost::Addr("db".into(), "10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            parse_add_host("v6:2001:db8::1").unwrap(),
            AddHost::Addr("v6".into(), "2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_add_host("host.docker.internal:host-gateway").unwrap(),
            AddHost::Gateway("host.docker.internal".into())
        );
        for bad in [
            "db",
            "db:",
            ":1.2.3.4",
            "db:1.2.3",
            "d b:1.2.3.4",
            "db:gateway",
        ] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_and_links() {
        assert_eq!(parse_dns("10.0.0.1").unwrap().to_string(), "10.0.0.1");
        assert!(parse_dns("dns.example").is_err());
        assert_eq!(parse_link("db").unwrap(), ("db".into(), None));
        assert_eq!(
            parse_link("/db:mydb").unwrap(),
            ("db".into(), Some("mydb".into()))
        );
        assert!(parse_link(":x").is_err());
        assert!(parse_link("db:bad_alias").is_err());
    }

    #[test]
    fn expose_specs() {
        let e = parse_expose("80").unwrap();
        assert_eq!(
            e,
            [Exposed {
                port: 80,
                proto: Proto::Tcp
            }]
        );
        let e = parse_expose("8000-8002/udp").unwrap();
        assert_eq!(e.len(), 3);
        assert!(e.iter().all(|x| x.proto == Proto::Udp));
        for bad in ["", "0", "70000", "80/sctp", "9-8", "a", "80/", "-80", "80-"] {
            assert!(parse_expose(bad).is_err(), "{bad}");
        }
    }
}
