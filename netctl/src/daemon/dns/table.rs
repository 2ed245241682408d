//! Who may resolve what: a pure lookup table, rebuilt from the state on every reload and
//! swapped in whole, so a query never sees half of a change. No sockets here: the tests
//! build a state and ask.
//!
//! Docker's rules: a container asks from its own address; it resolves the containers of the
//! user-defined networks it is on — by name, `name.NETWORK`, short ID, network aliases, its
//! own links' aliases — and nothing of the networks it is not on (NXDOMAIN, never
//! forwarded). Everything else goes to its upstream servers, unless all its networks are
//! internal.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnetwork::Ipv4Network;

use crate::{
    model::networks::has_embedded_dns,
    model::state::{short, Container, State},
};

/// A container of another host (overlay networks), as the cluster agent records it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct RemoteName {
    pub network: String,
    pub ip: Ipv4Addr,
    pub container: String,
    pub container_id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What the question asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Ptr,
    /// MX, TXT, …: a known name has none of these (NODATA).
    Other,
}

/// The answer, borrowed from the table (nothing is allocated per query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// A records.
    Addrs(&'a [Ipv4Addr]),
    /// AAAA records.
    Addrs6(&'a [Ipv6Addr]),
    /// A PTR record: "name.network".
    Ptr(&'a str),
    /// The name exists, the type does not.
    NoData,
    NxDomain,
    /// Not ours: ask these servers.
    Forward(Arc<[SocketAddr]>),
    /// Not ours and nowhere to send it (no server known).
    ServFail,
    /// Not a container of a network with embedded DNS: no answers for strangers.
    Refused,
}

struct Asker {
    /// Networks with embedded DNS the container is on, in attach order (the first network
    /// holding a name wins, as in Docker).
    networks: Vec<usize>,
    /// Its links' aliases on user-defined networks: resolvable by it alone.
    links: HashMap<String, Vec<Ipv4Addr>>,
    upstream: Arc<[SocketAddr]>,
    /// False when every network it is on is internal: nothing leaves.
    forward: bool,
    /// It has IPv6 alone and NAT64 (an IPv6-only network that masquerades): forwarded AAAA
    /// questions get DNS64's answers.
    dns64: bool,
}

#[derive(Default)]
pub struct Table {
    /// Networks with embedded DNS: lowercase names, by index.
    networks: Vec<String>,
    /// By the addresses a container asks from: its IPv4 ones, and its IPv6 ones (an
    /// IPv6-only container asks the resolver on its IPv6 gateway).
    askers: HashMap<IpAddr, Arc<Asker>>,
    /// Per network: lowercase name → addresses, sorted (IPv4, and IPv6 of dual-stack
    /// networks).
    names: Vec<HashMap<String, Vec<Ipv4Addr>>>,
    names6: Vec<HashMap<String, Vec<Ipv6Addr>>>,
    /// (network, address) → "name.network".
    reverse: HashMap<(usize, IpAddr), String>,
    /// Every netctl subnet: reverse lookups inside them are never forwarded.
    subnets: Vec<Ipv4Network>,
    subnets6: Vec<ipnetwork::Ipv6Network>,
    /// The datapath does NAT64: DNS64 answers for the askers that need them.
    nat64: bool,
}

/// The gateways the resolver listens on: each network's IPv4 one, an IPv6-only network's
/// IPv6 one.
pub fn gateways(state: &State) -> BTreeSet<IpAddr> {
    state
        .networks
        .values()
        .filter(|n| has_embedded_dns(&n.name))
        .filter_map(|n| n.gateway())
        .collect()
}

fn upstream(servers: &[IpAddr]) -> Arc<[SocketAddr]> {
    servers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect()
}

impl Table {
    /// `host_servers`: the host's resolv.conf servers (the daemon runs in the host's
    /// namespace, so its loopback servers count too).
    pub fn build(state: &State, remote: &[RemoteName], host_servers: &[IpAddr]) -> Table {
        let mut t = Table {
            nat64: true,
            ..Table::default()
        };
        let mut index = HashMap::new();
        for n in state.networks.values() {
            t.subnets.extend(n.ipv4.as_ref().map(|v| v.subnet));
            t.subnets6.extend(n.ipv6.as_ref().map(|v| v.subnet));
            if has_embedded_dns(&n.name) {
                index.insert(n.name.as_str(), t.networks.len());
                t.networks.push(n.name.to_ascii_lowercase());
                t.names.push(HashMap::new());
                t.names6.push(HashMap::new());
            }
        }
        fn insert<T: Ord>(names: &mut HashMap<String, Vec<T>>, name: &str, ip: T) {
            let ips = names.entry(name.to_ascii_lowercase()).or_default();
            if let Err(at) = ips.binary_search(&ip) {
                ips.insert(at, ip);
            }
        }
        let add = |t: &mut Table, net: usize, name: &str, ip: Ipv4Addr| {
            insert(&mut t.names[net], name, ip);
        };
        for c in state.containers.values() {
            for ep in &c.endpoints {
                let Some(&net) = index.get(ep.network.as_str()) else {
                    continue;
                };
                let full = format!("{}.{}", c.name, ep.network);
                for name in [c.name.as_str(), short(&c.id)]
                    .into_iter()
                    .chain(ep.aliases.iter().map(String::as_str))
                {
                    if let Some(ip) = ep.ip {
                        add(&mut t, net, name, ip);
                    }
                    if let Some(ip6) = ep.ip6 {
                        insert(&mut t.names6[net], name, ip6);
                    }
                }
                if let Some(ip6) = ep.ip6 {
                    t.reverse.insert((net, IpAddr::V6(ip6)), full.clone());
                }
                if let Some(ip) = ep.ip {
                    t.reverse.insert((net, IpAddr::V4(ip)), full);
                }
            }
        }
        for r in remote {
            let Some(&net) = index.get(r.network.as_str()) else {
                continue;
            };
            // On an overlay with IPv6 its IPv6 address follows from its claim, which is its
            // IPv4 address unless the overlay is IPv6-only.
            let n = state.networks.get(&r.network);
            let ip6 = n.and_then(|n| crate::model::overlay::endpoint_ip6(n, r.ip));
            let ip = n.and_then(|n| n.ipv4.as_ref()).map(|_| r.ip);
            let full = format!("{}.{}", r.container, r.network);
            for name in [r.container.as_str(), short(&r.container_id)]
                .into_iter()
                .chain(r.aliases.iter().map(String::as_str))
            {
                if let Some(ip) = ip {
                    add(&mut t, net, name, ip);
                }
                if let Some(ip6) = ip6 {
                    insert(&mut t.names6[net], name, ip6);
                }
            }
            if let Some(ip6) = ip6 {
                t.reverse
                    .entry((net, IpAddr::V6(ip6)))
                    .or_insert_with(|| full.clone());
            }
            if let Some(ip) = ip {
                t.reverse.entry((net, IpAddr::V4(ip))).or_insert(full);
            }
        }
        let host_upstream = upstream(host_servers);
        for c in state.containers.values() {
            let networks: Vec<usize> = c
                .endpoints
                .iter()
                .filter_map(|e| index.get(e.network.as_str()).copied())
                .collect();
            if networks.is_empty() {
                continue;
            }
            let forward = c
                .endpoints
                .iter()
                .any(|e| state.networks.get(&e.network).is_some_and(|n| !n.internal));
            let nat64 = |e: &crate::model::state::Endpoint| {
                state
                    .networks
                    .get(&e.network)
                    .is_some_and(|n| n.ipv4.is_none() && n.masquerade && !n.internal)
            };
            let dns64 = c.endpoints.iter().all(|e| e.ip.is_none()) && c.endpoints.iter().any(nat64);
            let asker = Arc::new(Asker {
                links: link_aliases(state, c, &index),
                networks,
                dns64,
                upstream: if c.options.dns.is_empty() {
                    host_upstream.clone()
                } else {
                    upstream(&c.options.dns)
                },
                forward,
            });
            for ep in &c.endpoints {
                for ip in [ep.ip.map(IpAddr::V4), ep.ip6.map(IpAddr::V6)] {
                    t.askers.extend(ip.map(|ip| (ip, asker.clone())));
                }
            }
        }
        t
    }

    /// Whether the container at `asker` gets DNS64's answers (IPv6 alone, with NAT64).
    pub fn dns64(&self, asker: IpAddr) -> bool {
        self.nat64 && self.askers.get(&asker).is_some_and(|a| a.dns64)
    }

    /// Says whether the datapath does NAT64 ([`Table::build`] assumes it does).
    pub fn with_nat64(mut self, on: bool) -> Self {
        self.nat64 = on;
        self
    }

    /// Answers `qname` (lowercase, without the final dot) for the container at `asker`.
    pub fn lookup(&self, asker: impl Into<IpAddr>, qname: &str, qtype: QType) -> Answer<'_> {
        let Some(a) = self.askers.get(&asker.into()) else {
            return Answer::Refused;
        };
        if qtype == QType::Ptr {
            if let Some(ip) = reverse_name(qname) {
                return self.lookup_ptr(a, ip);
            }
        }
        if qtype == QType::Aaaa {
            if let Some(ips) = self.find_on(a, qname, &self.names6) {
                return Answer::Addrs6(ips);
            }
        }
        if let Some(ips) = self.find(a, qname) {
            return match qtype {
                QType::A => Answer::Addrs(ips),
                _ => Answer::NoData,
            };
        }
        // A container of an IPv6-only network has no A record (and the name is ours).
        if self.find_on(a, qname, &self.names6).is_some() {
            return Answer::NoData;
        }
        // NAME.NETWORK of a network the asker is on: that network has no such container.
        let own_network = qname
            .rsplit_once('.')
            .is_some_and(|(_, last)| a.networks.iter().any(|n| self.networks[*n] == last));
        if own_network {
            return Answer::NxDomain;
        }
        // Names of networks the asker is not on are none of its business: forwarded like any
        // other name (as Docker does), so a network called `internal` or an alias
        // `api.github.com` elsewhere never hides a real name from it.
        self.forward(a)
    }

    fn find<'a>(&'a self, a: &'a Asker, qname: &str) -> Option<&'a [Ipv4Addr]> {
        if let Some(ips) = a.links.get(qname) {
            return Some(ips);
        }
        self.find_on(a, qname, &self.names)
    }

    /// `qname` in a table of names per network: on the asker's networks in order, or as
    /// name.NETWORK for one of them.
    fn find_on<'a, T>(
        &self,
        a: &Asker,
        qname: &str,
        names: &'a [HashMap<String, Vec<T>>],
    ) -> Option<&'a [T]> {
        let on = |net: usize, name: &str| names[net].get(name).map(Vec::as_slice);
        if let Some(ips) = a.networks.iter().find_map(|n| on(*n, qname)) {
            return Some(ips);
        }
        // name.NETWORK, for a network the asker is on.
        let (name, net) = qname.rsplit_once('.')?;
        let net = a
            .networks
            .iter()
            .copied()
            .find(|n| self.networks[*n] == net)?;
        on(net, name)
    }

    fn lookup_ptr(&self, a: &Asker, ip: IpAddr) -> Answer<'_> {
        if let Some(name) = a.networks.iter().find_map(|n| self.reverse.get(&(*n, ip))) {
            return Answer::Ptr(name);
        }
        let ours = match ip {
            IpAddr::V4(ip) => self.subnets.iter().any(|s| s.contains(ip)),
            IpAddr::V6(ip) => self.subnets6.iter().any(|s| s.contains(ip)),
        };
        if ours {
            return Answer::NxDomain;
        }
        self.forward(a)
    }

    fn forward(&self, a: &Asker) -> Answer<'_> {
        if !a.forward {
            Answer::NxDomain
        } else if a.upstream.is_empty() {
            Answer::ServFail
        } else {
            Answer::Forward(a.upstream.clone())
        }
    }
}

/// The aliases `c`'s links give it on user-defined networks: alias → the target's address on
/// the first network both are on.
fn link_aliases(
    state: &State,
    c: &Container,
    index: &HashMap<&str, usize>,
) -> HashMap<String, Vec<Ipv4Addr>> {
    let mut out = HashMap::new();
    for l in &c.options.links {
        let Some(t) = state.containers.values().find(|t| t.id == l.id) else {
            continue;
        };
        let shared = c.endpoints.iter().find_map(|e| {
            index.get(e.network.as_str())?;
            t.endpoints.iter().find(|te| te.network == e.network)
        });
        if let Some(ip) = shared.and_then(|te| te.ip) {
            out.insert(l.alias.to_ascii_lowercase(), vec![ip]);
        }
    }
    out
}

/// "4.3.2.1.in-addr.arpa" → 1.2.3.4; 32 nibbles (last first) ".ip6.arpa" → an IPv6 address.
fn reverse_name(q: &str) -> Option<IpAddr> {
    if let Some(rest) = q.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<u32> = rest
            .split('.')
            .map(|n| (n.len() == 1).then(|| n.chars().next()?.to_digit(16))?)
            .collect::<Option<_>>()?;
        if nibbles.len() != 32 {
            return None;
        }
        let v = nibbles
            .iter()
            .rev()
            .fold(0u128, |acc, n| acc << 4 | u128::from(*n));
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    reverse_name4(q).map(IpAddr::V4)
}

fn reverse_name4(q: &str) -> Option<Ipv4Addr> {
    let rest = q.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::fixtures::{container, net},
        model::state::LinkRef,
    };

    const WEB: &str = "aaaaaaaaaaaa0000";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// front: web, api (alias "svc"), worker (alias "svc"); back: db; both: api.
    /// internal net "vault": safe.
    fn state() -> State {
        let mut s = State::default();
        s.networks
            .insert("bridge".into(), net("bridge", "172.17.0.0/16"));
        s.networks
            .insert("front".into(), net("front", "10.1.0.0/24"));
        s.networks.insert("back".into(), net("back", "10.2.0.0/24"));
        let mut vault = net("vault", "10.3.0.0/24");
        vault.internal = true;
        s.networks.insert("vault".into(), vault);
        let mut put = |c: Container| {
            s.containers.insert(c.name.clone(), c);
        };
        put(container("web", WEB, &[("front", "10.1.0.2")]));
        let mut api = container(
            "api",
            "bbbbbbbbbbbb0000",
            &[("front", "10.1.0.3"), ("back", "10.2.0.3")],
        );
        api.endpoints[0].aliases = vec!["svc".into()];
        put(api);
        let mut worker = container("worker", "cccccccccccc0000", &[("front", "10.1.0.4")]);
        worker.endpoints[0].aliases = vec!["SVC".into()];
        put(worker);
        put(container("db", "dddddddddddd0000", &[("back", "10.2.0.2")]));
        put(container(
            "safe",
            "eeeeeeeeeeee0000",
            &[("vault", "10.3.0.2")],
        ));
        put(container(
            "old",
            "ffffffffffff0000",
            &[("bridge", "172.17.0.2")],
        ));
        let mut dnsy = container("dnsy", "999999999999000", &[("front", "10.1.0.9")]);
        dnsy.options.dns = vec!["192.0.2.53".parse().unwrap()];
        dnsy.options.links = vec![LinkRef {
            id: "bbbbbbbbbbbb0000".into(),
            name: "api".into(),
            alias: "backend".into(),
        }];
        put(dnsy);
        s
    }

    fn table(s: &State) -> Table {
        Table::build(s, &[], &["10.0.0.53".parse().unwrap()])
    }

    #[test]
    fn names_of_own_networks() {
        let t = table(&state());
        let web = ip("10.1.0.2");
        assert_eq!(
            t.lookup(web, "api", QType::A),
            Answer::Addrs(&[ip("10.1.0.3")])
        );
        assert_eq!(
            t.lookup(web, "api.front", QType::A),
            Answer::Addrs(&[ip("10.1.0.3")])
        );
        assert_eq!(
            t.lookup(web, "bbbbbbbbbbbb", QType::A),
            Answer::Addrs(&[ip("10.1.0.3")]),
            "short ID"
        );
        // One alias on two containers: both addresses (case-insensitive).
        assert_eq!(
            t.lookup(web, "svc", QType::A),
            Answer::Addrs(&[ip("10.1.0.3"), ip("10.1.0.4")])
        );
        assert_eq!(t.lookup(web, "api", QType::Other), Answer::NoData);
        // api is on both networks: from back it is found by its back address.
        assert_eq!(
            t.lookup(ip("10.2.0.2"), "api", QType::A),
            Answer::Addrs(&[ip("10.2.0.3")])
        );
        // The asker identified by any of its addresses.
        assert_eq!(
            t.lookup(ip("10.2.0.3"), "web", QType::A),
            Answer::Addrs(&[web])
        );
    }

    #[test]
    fn other_networks_names_are_not_answered_but_forwarded() {
        let t = table(&state());
        let web = ip("10.1.0.2");
        // Names and aliases of a network web is not on are not answered from the table: they
        // go upstream like any name (whose answer is the upstream's).
        for name in ["db", "db.back", "anything.back", "api.back"] {
            assert!(
                matches!(t.lookup(web, name, QType::A), Answer::Forward(_)),
                "{name}"
            );
        }
        assert!(matches!(
            t.lookup(ip("10.2.0.2"), "web", QType::A),
            Answer::Forward(_)
        ));
    }

    #[test]
    fn forwarding_and_who_may_ask() {
        let t = table(&state());
        let up = |s: &str| -> Arc<[SocketAddr]> { vec![s.parse().unwrap()].into() };
        assert_eq!(
            t.lookup(ip("10.1.0.2"), "example.com", QType::A),
            Answer::Forward(up("10.0.0.53:53"))
        );
        // --dns wins over the host's servers.
        assert_eq!(
            t.lookup(ip("10.1.0.9"), "example.com", QType::A),
            Answer::Forward(up("192.0.2.53:53"))
        );
        // Internal networks never forward.
        assert_eq!(
            t.lookup(ip("10.3.0.2"), "example.com", QType::A),
            Answer::NxDomain
        );
        // Strangers and default-network containers get nothing.
        assert_eq!(t.lookup(ip("10.9.9.9"), "web", QType::A), Answer::Refused);
        assert_eq!(t.lookup(ip("172.17.0.2"), "web", QType::A), Answer::Refused);
        // No server anywhere: SERVFAIL, not silence.
        let t = Table::build(&state(), &[], &[]);
        assert_eq!(
            t.lookup(ip("10.1.0.2"), "example.com", QType::A),
            Answer::ServFail
        );
    }

    #[test]
    fn reverse_lookups() {
        let t = table(&state());
        let web = ip("10.1.0.2");
        assert_eq!(
            t.lookup(web, "3.0.1.10.in-addr.arpa", QType::Ptr),
            Answer::Ptr("api.front")
        );
        assert_eq!(
            t.lookup(web, "2.0.2.10.in-addr.arpa", QType::Ptr),
            Answer::NxDomain,
            "db's address is on a network web is not on"
        );
        assert!(matches!(
            t.lookup(web, "1.2.0.192.in-addr.arpa", QType::Ptr),
            Answer::Forward(_)
        ));
    }

    #[test]
    fn links_are_the_linkers_own_names() {
        let t = table(&state());
        assert_eq!(
            t.lookup(ip("10.1.0.9"), "backend", QType::A),
            Answer::Addrs(&[ip("10.1.0.3")])
        );
        assert!(matches!(
            t.lookup(ip("10.1.0.2"), "backend", QType::A),
            Answer::Forward(_)
        ));
    }

    #[test]
    fn a_removed_container_is_gone_from_the_next_table() {
        let mut s = state();
        s.containers.remove("api");
        let t = table(&s);
        let web = ip("10.1.0.2");
        assert_eq!(
            t.lookup(web, "svc", QType::A),
            Answer::Addrs(&[ip("10.1.0.4")])
        );
        assert!(matches!(t.lookup(web, "api", QType::A), Answer::Forward(_)));
        assert_eq!(t.lookup(ip("10.1.0.3"), "web", QType::A), Answer::Refused);
    }

    #[test]
    fn remote_containers_of_overlay_networks() {
        let s = state();
        let remote = [RemoteName {
            network: "front".into(),
            ip: ip("10.1.0.50"),
            container: "far".into(),
            container_id: "123456789012abcd".into(),
            aliases: vec!["faraway".into()],
        }];
        let t = Table::build(&s, &remote, &[]);
        let web = ip("10.1.0.2");
        assert_eq!(
            t.lookup(web, "faraway", QType::A),
            Answer::Addrs(&[ip("10.1.0.50")])
        );
        assert_eq!(
            t.lookup(web, "50.0.1.10.in-addr.arpa", QType::Ptr),
            Answer::Ptr("far.front")
        );
        // On a dual-stack overlay, its IPv6 address follows from its IPv4 one.
        let mut s = s;
        s.networks.get_mut("front").unwrap().ipv6 = Some(crate::model::state::Ipv6Subnet {
            subnet: "fd01::/64".parse().unwrap(),
            gateway: "fd01::1".parse().unwrap(),
            user_subnet: false,
        });
        let t = Table::build(&s, &remote, &[]);
        let far6: Ipv6Addr = "fd01::32".parse().unwrap();
        assert_eq!(
            t.lookup(web, "faraway", QType::Aaaa),
            Answer::Addrs6(&[far6])
        );
        let ptr6 = "2.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.d.f.ip6.arpa";
        assert_eq!(t.lookup(web, ptr6, QType::Ptr), Answer::Ptr("far.front"));
    }

    #[test]
    fn dual_stack_names_have_aaaa_and_ip6_arpa_records() {
        let mut s = state();
        let v6 = |a: &str| a.parse::<Ipv6Addr>().unwrap();
        s.networks.get_mut("front").unwrap().ipv6 = Some(crate::model::state::Ipv6Subnet {
            subnet: "fd01::/64".parse().unwrap(),
            gateway: v6("fd01::1"),
            user_subnet: true,
        });
        s.containers.get_mut("api").unwrap().endpoints[0].ip6 = Some(v6("fd01::3"));
        let t = table(&s);
        let web = ip("10.1.0.2");
        assert_eq!(
            t.lookup(web, "api", QType::Aaaa),
            Answer::Addrs6(&[v6("fd01::3")])
        );
        assert_eq!(
            t.lookup(web, "svc", QType::Aaaa),
            Answer::Addrs6(&[v6("fd01::3")])
        );
        assert_eq!(
            t.lookup(web, "api", QType::A),
            Answer::Addrs(&[ip("10.1.0.3")])
        );
        // A name without an IPv6 address has none (not forwarded, not NXDOMAIN).
        assert_eq!(t.lookup(web, "worker", QType::Aaaa), Answer::NoData);
        let ptr = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.d.f.ip6.arpa";
        assert_eq!(t.lookup(web, ptr, QType::Ptr), Answer::Ptr("api.front"));
        let free = "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.d.f.ip6.arpa";
        assert_eq!(t.lookup(web, free, QType::Ptr), Answer::NxDomain);
        // db is on back, which has no IPv6: nothing, as for A records of other networks.
        assert!(matches!(
            t.lookup(web, "db", QType::Aaaa),
            Answer::Forward(_)
        ));
    }

    #[test]
    fn an_ipv6_only_network_answers_askers_by_their_ipv6_address() {
        let mut s = state();
        let v6 = |a: &str| a.parse::<Ipv6Addr>().unwrap();
        let front = s.networks.get_mut("front").unwrap();
        front.ipv4 = None;
        front.ipv6 = Some(crate::model::state::Ipv6Subnet {
            subnet: "fd01::/64".parse().unwrap(),
            gateway: v6("fd01::1"),
            user_subnet: true,
        });
        for (name, addr) in [("web", "fd01::2"), ("api", "fd01::3")] {
            let ep = &mut s.containers.get_mut(name).unwrap().endpoints[0];
            ep.ip = None;
            ep.ip6 = Some(v6(addr));
        }
        assert!(gateways(&s).contains(&IpAddr::V6(v6("fd01::1"))));
        let t = table(&s);
        let web = v6("fd01::2");
        assert_eq!(
            t.lookup(web, "api", QType::Aaaa),
            Answer::Addrs6(&[v6("fd01::3")])
        );
        // Its name exists: no A record (NODATA), never forwarded.
        assert_eq!(t.lookup(web, "api", QType::A), Answer::NoData);
        assert_eq!(t.lookup(web, "api.front", QType::A), Answer::NoData);
        assert!(matches!(
            t.lookup(web, "example.com", QType::A),
            Answer::Forward(_)
        ));
        // Its former IPv4 address asks for nothing.
        assert_eq!(t.lookup(ip("10.1.0.2"), "api", QType::A), Answer::Refused);
        // IPv6 alone on a network that masquerades: DNS64 for what is forwarded; not for a
        // container that has IPv4 too.
        assert!(t.dns64(IpAddr::V6(web)));
        assert!(!t.dns64(IpAddr::V4(ip("10.2.0.2"))));
        // Not where the datapath has no NAT64 (a kernel without bpf_loop).
        assert!(!t.with_nat64(false).dns64(IpAddr::V6(web)));
    }

    #[test]
    fn reverse_names_parse() {
        assert_eq!(
            reverse_name("4.3.2.1.in-addr.arpa"),
            Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
        );
        assert_eq!(
            reverse_name(
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.d.f.ip6.arpa"
            ),
            Some(IpAddr::V6("fd01::1".parse().unwrap()))
        );
        assert_eq!(reverse_name("1.0.d.f.ip6.arpa"), None);
        assert_eq!(reverse_name("3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_name("a.3.2.1.in-addr.arpa"), None);
    }
}
