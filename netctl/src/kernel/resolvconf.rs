//! The host's resolver configuration (resolv.conf): where containers' upstream DNS servers,
//! search domains and options come from.

use std::{net::IpAddr, path::Path};

/// Docker's servers for a container whose host names none it can use.
pub const FALLBACK: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads `path`; a missing or unreadable file is an empty configuration.
    pub fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    pub fn parse(text: &str) -> Self {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // "fe80::1%eth0": a zone only means something on the host.
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        rc.nameservers.push(ip);
                    }
                }
                // The last search (or domain) line wins, as in glibc.
                Some("search") | Some("domain") => {
                    rc.search = words.map(str::to_string).collect();
                }
                Some("options") => rc.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        rc
    }

    /// Servers a container can reach itself: loopback addresses are the host's own (a
    /// systemd-resolved stub, say) and mean nothing inside a container.
    pub fn reachable_from_containers(&self) -> Vec<IpAddr> {
        self.nameservers
            .iter()
            .filter(|ip| !ip.is_loopback())
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers_search_and_options() {
        let rc = ResolvConf::parse(
            "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.1 # office\n\
             nameserver bogus\ndomain a.example\nsearch b.example c.example\n\
             options edns0 trust-ad\noptions ndots:2\n",
        );
        assert_eq!(
            rc.nameservers,
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        assert_eq!(rc.search, ["b.example", "c.example"]);
        assert_eq!(rc.options, ["edns0", "trust-ad", "ndots:2"]);
        assert_eq!(
            rc.reachable_from_containers(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
    }
}
