//! Docker's legacy links (`run --link NAME[:ALIAS]`) on the default network: /etc/hosts
//! entries and environment variables for the target, and — with ICC off — the only traffic
//! allowed between the two: the linking container to the target's exposed ports (and the
//! replies). On a user-defined network a link is only a name the linking container resolves
//! (the embedded DNS does that).

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::{
    model::networks::DEFAULT_NETWORK,
    model::ports::Proto,
    model::state::{Container, Exposed, LinkRef, State},
};

/// The address of `c` on the default network.
fn bridge_ip(c: &Container) -> Option<Ipv4Addr> {
    c.endpoints
        .iter()
        .find(|e| e.network == DEFAULT_NETWORK)
        .and_then(|e| e.ip)
}

/// The links of `c` that are legacy ones (both on the default network), with the target and
/// both addresses: (link, target, linker's address, target's address).
pub fn legacy<'a>(
    state: &'a State,
    c: &'a Container,
) -> impl Iterator<Item = (&'a LinkRef, &'a Container, Ipv4Addr, Ipv4Addr)> + 'a {
    let from = bridge_ip(c);
    c.options.links.iter().filter_map(move |l| {
        let t = state.containers.values().find(|t| t.id == l.id)?;
        Some((l, t, from?, bridge_ip(t)?))
    })
}

/// The target's ports a link shows: `--expose`d and published ones, TCP first, then by
/// number (Docker's order; the first one is `ALIAS_PORT`).
pub fn ports_of(t: &Container) -> Vec<Exposed> {
    let mut set: BTreeSet<Exposed> = t.options.exposed.iter().copied().collect();
    set.extend(t.ports.iter().map(|p| Exposed {
        port: p.container_port,
        proto: p.proto,
    }));
    let mut v: Vec<Exposed> = set.into_iter().collect();
    v.sort_by_key(|e| (e.proto != Proto::Tcp, e.port));
    v
}

/// /etc/hosts lines: the target's address → alias, its hostname, its name (when not the alias).
pub fn hosts_entries(state: &State, c: &Container) -> Vec<(Ipv4Addr, Vec<String>)> {
    legacy(state, c)
        .map(|(l, t, _, ip)| {
            let mut names = vec![l.alias.clone(), t.hostname().to_string()];
            if l.alias != t.name {
                names.push(t.name.clone());
            }
            (ip, names)
        })
        .collect()
}

/// Docker's link variables: `ALIAS_NAME=/container/alias`, `ALIAS_PORT=tcp://IP:PORT` (the
/// first port), and for each port `ALIAS_PORT_80_TCP` (+ `_ADDR`, `_PORT`, `_PROTO`).
pub fn env(state: &State, c: &Container) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (l, t, _, ip) in legacy(state, c) {
        let p: String = l
            .alias
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() {
                    ch.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        out.push((format!("{p}_NAME"), format!("/{}/{}", c.name, l.alias)));
        let ports = ports_of(t);
        if let Some(first) = ports.first() {
            out.push((
                format!("{p}_PORT"),
                format!("{}://{ip}:{}", first.proto, first.port),
            ));
        }
        for e in ports {
            let key = format!("{p}_PORT_{}_{}", e.port, e.proto.as_str().to_uppercase());
            out.push((key.clone(), format!("{}://{ip}:{}", e.proto, e.port)));
            out.push((format!("{key}_ADDR"), ip.to_string()));
            out.push((format!("{key}_PORT"), e.port.to_string()));
            out.push((format!("{key}_PROTO"), e.proto.to_string()));
        }
    }
    out
}

/// One allowed direction of a link: `from` may send to `to` with `port` as the destination
/// port (`reply` false), or as the source port (`reply` true: the target answering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allowed {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
    pub reply: bool,
}

/// Every pair the links of the state open (what ICC=false lets through).
pub fn allowed(state: &State) -> BTreeSet<Allowed> {
    let mut out = BTreeSet::new();
    for c in state.containers.values() {
        for (_, t, from, to) in legacy(state, c) {
            for e in ports_of(t) {
                out.insert(Allowed {
                    from,
                    to,
                    port: e.port,
                    proto: e.proto,
                    reply: false,
                });
                out.insert(Allowed {
                    from: to,
                    to: from,
                    port: e.port,
                    proto: e.proto,
                    reply: true,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::fixtures::{container, net},
        model::ports::PortMapping,
    };

    fn state() -> State {
        let mut s = State::default();
        s.networks
            .insert("bridge".into(), net("bridge", "172.17.0.0/16"));
        let mut db = container("db", "d0d0d0d0d0d0d0d0", &[("bridge", "172.17.0.2")]);
        db.options.exposed = vec![
            Exposed {
                port: 5432,
                proto: Proto::Tcp,
            },
            Exposed {
                port: 53,
                proto: Proto::Udp,
            },
        ];
        db.ports.push(PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        });
        let mut web = container("web", "w0w0w0w0w0w0w0w0", &[("bridge", "172.17.0.3")]);
        web.options.links.push(LinkRef {
            id: db.id.clone(),
            name: "db".into(),
            alias: "my-db".into(),
        });
        s.containers.insert("db".into(), db);
        s.containers.insert("web".into(), web);
        s
    }

    #[test]
    fn hosts_and_env_as_docker() {
        let s = state();
        let web = &s.containers["web"];
        assert_eq!(
            hosts_entries(&s, web),
            vec![(
                "172.17.0.2".parse().unwrap(),
                vec!["my-db".into(), "d0d0d0d0d0d0".into(), "db".into()]
            )]
        );
        let env: std::collections::BTreeMap<_, _> = env(&s, web).into_iter().collect();
        assert_eq!(env["MY_DB_NAME"], "/web/my-db");
        assert_eq!(
            env["MY_DB_PORT"], "tcp://172.17.0.2:80",
            "lowest TCP port first"
        );
        assert_eq!(env["MY_DB_PORT_5432_TCP"], "tcp://172.17.0.2:5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_ADDR"], "172.17.0.2");
        assert_eq!(env["MY_DB_PORT_5432_TCP_PORT"], "5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_PROTO"], "tcp");
        assert_eq!(env["MY_DB_PORT_53_UDP"], "udp://172.17.0.2:53");
        assert!(super::env(&s, &s.containers["db"]).is_empty());
    }

    #[test]
    fn allowed_pairs_both_ways_per_port() {
        let s = state();
        let a = allowed(&s);
        assert_eq!(a.len(), 6, "3 ports, 2 directions");
        let web: Ipv4Addr = "172.17.0.3".parse().unwrap();
        let db: Ipv4Addr = "172.17.0.2".parse().unwrap();
        assert!(a.contains(&Allowed {
            from: web,
            to: db,
            port: 5432,
            proto: Proto::Tcp,
            reply: false
        }));
        assert!(a.contains(&Allowed {
            from: db,
            to: web,
            port: 5432,
            proto: Proto::Tcp,
            reply: true
        }));
        // A target that is gone opens nothing.
        let mut s = s;
        s.containers.remove("db");
        assert!(allowed(&s).is_empty());
        assert!(hosts_entries(&s, &s.containers["web"]).is_empty());
    }
}
