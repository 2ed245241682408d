//! Published ports: Docker's `-p [IP:][HOSTPORT[-END]:]CPORT[-END][/tcp|udp]`.

use std::{
    collections::HashMap,
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
    ops::RangeInclusive,
    str::FromStr,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => bail!("protocol sctp is not supported: use tcp or udp"),
            other => bail!("unknown protocol {other:?}: use tcp or udp"),
        }
    }
}

/// Whether two host addresses of published ports take the same sockets: equal, 0.0.0.0
/// (every host address of both families, what `-p 8080:80` publishes on), or `::` (every
/// IPv6 address) beside an IPv6 address.
pub fn overlap(a: IpAddr, b: IpAddr) -> bool {
    let every = |x: IpAddr| x == IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    a == b
        || every(a)
        || every(b)
        || (a.is_ipv6() && b.is_ipv6() && (a.is_unspecified() || b.is_unspecified()))
}

/// `addr:port` as Docker prints it: `0.0.0.0:8080`, `[::1]:8080`.
pub fn host_port(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// One published port after allocation: host IP (0.0.0.0 = every host address of both
/// families, `::` every IPv6 one) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Two mappings claim the same host socket: same protocol and port, and the addresses
    /// overlap (equal, or either is the wildcard).
    pub fn conflicts(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && overlap(self.host_ip, other.host_ip)
    }
}

/// A parsed `-p` spec, before host ports are allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: IpAddr,
    /// None: ephemeral host ports.
    pub host: Option<RangeInclusive<u16>>,
    pub container: RangeInclusive<u16>,
    pub proto: Proto,
}

fn port(s: &str, what: &str, spec: &str) -> Result<u16> {
    let n: u32 = s
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid {what} {s:?} in -p {spec}: ports are 1-65535"))?;
    if n == 0 || n > 65535 {
        bail!("invalid {what} {s:?} in -p {spec}: ports are 1-65535");
    }
    Ok(n as u16)
}

fn range(s: &str, what: &str, spec: &str) -> Result<RangeInclusive<u16>> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a, what, spec)?, port(b, what, spec)?);
            if a > b {
                bail!("invalid {what} range {s} in -p {spec}: the start is above the end");
            }
            Ok(a..=b)
        }
        None => {
            let p = port(s, what, spec)?;
            Ok(p..=p)
        }
    }
}

impl FromStr for PortSpec {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Self> {
        let usage = "expected [IP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]";
        if spec.is_empty() {
            bail!("empty -p value: {usage}");
        }
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p.parse().with_context(|| format!("in -p {spec}"))?),
            None => (spec, Proto::Tcp),
        };
        // As Docker: the last two fields are the ports, everything before them the address
        // (an IPv6 one in brackets, or bare: `[::1]:8080:80`, `::1:8080:80`).
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, cport) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [.., h, c] => {
                let ip = &rest[..rest.len() - h.len() - c.len() - 2];
                (Some(ip), (!h.is_empty()).then_some(*h), *c)
            }
            [] => bail!("invalid -p {spec}: {usage}"),
        };
        let host_ip = match ip {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(ip) => {
                let bare = ip
                    .strip_prefix('[')
                    .and_then(|i| i.strip_suffix(']'))
                    .unwrap_or(ip);
                bare.parse().map_err(|_| {
                    anyhow::anyhow!("invalid host IP {ip:?} in -p {spec}: {usage} (an IPv6 address in brackets: [::1]:8080:80)")
                })?
            }
        };
        let container = range(cport, "container port", spec)?;
        let host = host.map(|h| range(h, "host port", spec)).transpose()?;
        if let Some(h) = &host {
            let (hl, cl) = (h.len(), container.len());
            // Docker allows a host range for one container port: one free port of the range.
            if hl != cl && cl != 1 {
                bail!(
                    "invalid -p {spec}: the host range has {hl} ports and the container range {cl}; \
                     they must be the same length"
                );
            }
        }
        Ok(PortSpec {
            host_ip,
            host,
            container,
            proto,
        })
    }
}

/// Turns specs into mappings: explicit host ports checked against `taken` (other
/// containers) and `host` (a host process serving the port: Docker's "address already in
/// use"), ephemeral ones picked from `ephemeral` (the namespace's ip_local_port_range),
/// lowest free first, skipping every port a host socket uses.
pub fn allocate(
    specs: &[PortSpec],
    taken: &[PortMapping],
    ephemeral: RangeInclusive<u16>,
    host: &HostSockets,
) -> Result<Vec<PortMapping>> {
    let busy = host.busy();
    let mut out: Vec<PortMapping> = Vec::new();
    // Host addresses per (protocol, port): conflicts are checked in O(1) per port, so
    // publishing thousands of ports on a host with thousands more stays fast.
    // When every spec names its host ports, only those can clash: the index holds just them
    // (one more port beside 10,000 published indexes one entry, not 10,000).
    let asked: Option<[PortSet; 2]> = specs.iter().all(|s| s.host.is_some()).then(|| {
        let mut asked = [PortSet::default(), PortSet::default()];
        for s in specs {
            if let Some(h) = &s.host {
                asked[s.proto as usize].extend(h.clone());
            }
        }
        asked
    });
    let mut used: HashMap<(Proto, u16), Vec<IpAddr>> = HashMap::new();
    for t in taken {
        if asked
            .as_ref()
            .is_none_or(|a| a[t.proto as usize].contains(t.host_port))
        {
            used.entry((t.proto, t.host_port))
                .or_default()
                .push(t.host_ip);
        }
    }
    let is_free = |m: &PortMapping, used: &HashMap<(Proto, u16), Vec<IpAddr>>| {
        used.get(&(m.proto, m.host_port))
            .is_none_or(|ips| !ips.iter().any(|ip| overlap(*ip, m.host_ip)))
    };
    for spec in specs {
        let mk = |host_port, container_port| PortMapping {
            host_ip: spec.host_ip,
            host_port,
            container_port,
            proto: spec.proto,
        };
        match &spec.host {
            Some(h) if h.len() == spec.container.len() => {
                for (hp, cp) in h.clone().zip(spec.container.clone()) {
                    let m = mk(hp, cp);
                    if !is_free(&m, &used) {
                        bail!(
                            "host port {hp}/{} on {} is already published: choose another host port",
                            spec.proto,
                            spec.host_ip
                        );
                    }
                    if let Some(sock) = host.serving(&m) {
                        let v = if spec.host_ip.is_ipv4() { 4 } else { 6 };
                        bail!(
                            "listen {}{v} {}: bind: address already in use (a host process has {sock}): choose another host port",
                            spec.proto,
                            host_port(spec.host_ip, hp),
                        );
                    }
                    used.entry((m.proto, m.host_port))
                        .or_default()
                        .push(m.host_ip);
                    out.push(m);
                }
            }
            Some(h) => {
                let cp = *spec.container.start();
                let m = h
                    .clone()
                    .map(|hp| mk(hp, cp))
                    .find(|m| is_free(m, &used) && host.serving(m).is_none())
                    .with_context(|| {
                        format!(
                            "every host port of {}-{}/{} is already published or in use: choose another range",
                            h.start(),
                            h.end(),
                            spec.proto
                        )
                    })?;
                used.entry((m.proto, m.host_port))
                    .or_default()
                    .push(m.host_ip);
                out.push(m);
            }
            None => {
                // Ports below the last one picked were taken or picked already: each search
                // starts there, so a long container range is linear, not quadratic.
                let mut from = *ephemeral.start();
                for cp in spec.container.clone() {
                    let m = (from..=*ephemeral.end())
                        .map(|hp| mk(hp, cp))
                        .find(|m| is_free(m, &used) && !busy.contains(&(m.proto, m.host_port)))
                        .context("no free ephemeral host port left: publish fewer ports")?;
                    from = m.host_port;
                    used.entry((m.proto, m.host_port))
                        .or_default()
                        .push(m.host_ip);
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}

/// The namespace's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some(it.next()??..=it.next()??)
        })
        .unwrap_or(32768..=60999)
}

/// Docker's `port` line: `80/tcp -> 0.0.0.0:8080`.
pub fn describe(m: &PortMapping) -> String {
    format!(
        "{}/{} -> {}",
        m.container_port,
        m.proto,
        host_port(m.host_ip, m.host_port)
    )
}

/// A socket of the host namespace, as /proc/net/{tcp,udp}{,6} list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub proto: Proto,
    /// The address it is bound to as a published port's host address: 0.0.0.0 for the v4
    /// or v6 wildcard (a dual-stack socket takes both), the embedded address for v4-mapped
    /// v6, else the IPv6 address.
    pub addr: IpAddr,
    pub port: u16,
    /// A TCP listener, or a UDP socket without a peer: it receives new traffic on the port.
    pub server: bool,
}

impl Socket {
    pub fn describe(&self) -> String {
        let v = if self.addr.is_ipv4() { "4" } else { "6" };
        format!("{}{v} {}", self.proto, host_port(self.addr, self.port))
    }
}

/// The sockets of the namespace netctl runs in (read by `kernel::hostports`).
pub struct HostSockets(pub Vec<Socket>);

impl HostSockets {
    /// The host socket that already serves `m`'s port (Docker refuses such a port).
    pub fn serving(&self, m: &PortMapping) -> Option<String> {
        self.0
            .iter()
            .find(|s| {
                s.server
                    && s.proto == m.proto
                    && s.port == m.host_port
                    && overlap(s.addr, m.host_ip)
            })
            .map(Socket::describe)
    }

    /// Ports any host socket uses, in any state: never handed out as ephemeral host ports.
    pub fn busy(&self) -> HashSet<(Proto, u16)> {
        self.0.iter().map(|s| (s.proto, s.port)).collect()
    }
}

/// A set of port numbers as 65,536 bits: the host's reserved ports (tens of thousands with
/// many published) are merged with word operations instead of one tree node per port.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        Self(Box::new([0; 1024]))
    }
}

impl PortSet {
    pub fn insert(&mut self, port: u16) {
        self.0[port as usize / 64] |= 1 << (port % 64);
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0[port as usize / 64] & (1 << (port % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The ports in `self` and not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a & !b)
    }

    pub fn union(&self, other: &Self) -> Self {
        self.zip(other, |a, b| a | b)
    }

    fn zip(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        let mut out = Self::default();
        for (o, (a, b)) in out.0.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *o = f(*a, *b);
        }
        out
    }

    /// The ports, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0)
            .flat_map(|(i, w)| {
                let w = *w;
                (0..64u32)
                    .filter(move |b| w & (1 << b) != 0)
                    .map(move |b| (i * 64) as u16 + b as u16)
            })
    }
}

impl Extend<u16> for PortSet {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, ports: I) {
        ports.into_iter().for_each(|p| self.insert(p));
    }
}

impl FromIterator<u16> for PortSet {
    fn from_iter<I: IntoIterator<Item = u16>>(ports: I) -> Self {
        let mut s = Self::default();
        s.extend(ports);
        s
    }
}

impl<const N: usize> From<[u16; N]> for PortSet {
    fn from(ports: [u16; N]) -> Self {
        ports.into_iter().collect()
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    fn none() -> HostSockets {
        HostSockets(Vec::new())
    }

    fn err(s: &str) -> String {
        format!("{:#}", s.parse::<PortSpec>().unwrap_err())
    }

    #[test]
    fn parses_docker_forms() {
        assert_eq!(
            p("8080:80"),
            PortSpec {
                host_ip: Ipv4Addr::UNSPECIFIED.into(),
                host: Some(8080..=8080),
                container: 80..=80,
                proto: Proto::Tcp
            }
        );
        assert_eq!(p("80").host, None);
        assert_eq!(p("53/udp").proto, Proto::Udp);
        assert_eq!(p("53:53/UDP").proto, Proto::Udp);
        let s = p("127.0.0.1:8080:80");
        assert_eq!(s.host_ip, Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.host, Some(8080..=8080));
        let s = p("127.0.0.1::80");
        assert_eq!(s.host, None);
        assert_eq!(s.host_ip, Ipv4Addr::new(127, 0, 0, 1));
        // IPv6 host addresses, in brackets or bare (Docker takes both).
        let s = p("[::1]:8080:80/udp");
        assert_eq!(
            (s.host_ip, s.host, s.proto),
            ("::1".parse().unwrap(), Some(8080..=8080), Proto::Udp)
        );
        assert_eq!(p("::1:8080:80").host_ip, p("[::1]:8080:80").host_ip);
        let s = p("[2001:db8::7]::80");
        assert_eq!((s.host_ip, s.host), ("2001:db8::7".parse().unwrap(), None));
        assert_eq!(p("[::]:8080:80").host_ip, "::".parse::<IpAddr>().unwrap());
        assert_eq!(p("8000-8010:80-90").container, 80..=90);
        assert_eq!(p("8000-8010:80").host, Some(8000..=8010));
        assert_eq!(p("80-82").container, 80..=82);
    }

    #[test]
    fn host_addresses_overlap_within_their_family_and_with_every_address() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        for (x, y, clash) in [
            ("0.0.0.0", "::1", true),
            ("0.0.0.0", "10.0.0.1", true),
            ("::", "::1", true),
            ("::", "2001:db8::1", true),
            ("::1", "::1", true),
            ("::", "127.0.0.1", false),
            ("::1", "127.0.0.1", false),
            ("::1", "2001:db8::1", false),
            ("10.0.0.1", "10.0.0.2", false),
        ] {
            assert_eq!(overlap(a(x), a(y)), clash, "{x} {y}");
            assert_eq!(overlap(a(y), a(x)), clash, "{y} {x}");
        }
        let taken = allocate(&[p("[::1]:8080:80")], &[], 40000..=40010, &none()).unwrap();
        assert_eq!(describe(&taken[0]), "80/tcp -> [::1]:8080");
        // IPv4's loopback is another socket; every address, or every IPv6 one, is not.
        assert!(allocate(&[p("127.0.0.1:8080:80")], &taken, 40000..=40010, &none()).is_ok());
        for clash in ["8080:80", "[::]:8080:80"] {
            let e = allocate(&[p(clash)], &taken, 40000..=40010, &none()).unwrap_err();
            assert!(
                format!("{e:#}").contains("already published"),
                "{clash}: {e:#}"
            );
        }
    }

    #[test]
    fn rejects_malformed_specs() {
        assert!(err("").contains("empty"));
        assert!(err("abc").contains("invalid container port"));
        assert!(err("0:80").contains("1-65535"));
        assert!(err("70000:80").contains("1-65535"));
        assert!(err("8080:0").contains("1-65535"));
        assert!(err("8000-8002:80-81").contains("same length"));
        assert!(err("90-80").contains("start is above the end"));
        assert!(err("80/icmp").contains("unknown protocol"));
        assert!(err("80/sctp").contains("not supported"));
        assert!(err("1.2.3:80:80").contains("invalid host IP"));
        assert!(err("[::zz]:80:80").contains("in brackets"));
        assert!(err("[::1]:80").contains("invalid"));
        assert!(err("1:2:3:4").contains("invalid"));
    }

    #[test]
    fn allocates_explicit_ranges_and_ephemeral_ports() {
        let got = allocate(
            &[p("8000-8001:80-81"), p("90")],
            &[],
            40000..=40010,
            &none(),
        )
        .unwrap();
        let pairs: Vec<(u16, u16)> = got
            .iter()
            .map(|m| (m.host_port, m.container_port))
            .collect();
        assert_eq!(pairs, vec![(8000, 80), (8001, 81), (40000, 90)]);
    }

    #[test]
    fn conflicts_follow_address_and_protocol() {
        let taken = allocate(&[p("8080:80")], &[], 1..=2, &none()).unwrap();
        let e = allocate(&[p("8080:81")], &taken, 1..=2, &none()).unwrap_err();
        assert!(format!("{e}").contains("8080/tcp"), "{e}");
        // Same port, other protocol: fine.
        assert!(allocate(&[p("8080:81/udp")], &taken, 1..=2, &none()).is_ok());
        // A specific address collides with the wildcard.
        assert!(allocate(&[p("10.0.0.1:8080:81")], &taken, 1..=2, &none()).is_err());
        // Two different specific addresses do not collide.
        let one = allocate(&[p("10.0.0.1:9090:80")], &[], 1..=2, &none()).unwrap();
        assert!(allocate(&[p("10.0.0.2:9090:80")], &one, 1..=2, &none()).is_ok());
        // Duplicates inside one request collide too.
        assert!(allocate(&[p("7070:80"), p("7070:81")], &[], 1..=2, &none()).is_err());
    }

    #[test]
    fn host_range_for_one_port_takes_the_first_free() {
        let taken = allocate(&[p("8000:80")], &[], 1..=2, &none()).unwrap();
        let got = allocate(&[p("8000-8005:80")], &taken, 1..=2, &none()).unwrap();
        assert_eq!(got[0].host_port, 8001);
    }

    #[test]
    fn ephemeral_skips_taken_ports() {
        let taken = allocate(&[p("40000:80")], &[], 1..=2, &none()).unwrap();
        let got = allocate(&[p("81")], &taken, 40000..=40001, &none()).unwrap();
        assert_eq!(got[0].host_port, 40001);
        assert!(allocate(&[p("81"), p("82")], &taken, 40000..=40001, &none()).is_err());
    }

    /// Found by the port_spec fuzz target: `-p 94-11199` took seconds, every port's search
    /// starting again from the bottom of the ephemeral range.
    #[test]
    fn a_long_ephemeral_range_is_allocated_in_linear_time() {
        let start = std::time::Instant::now();
        let got = allocate(&[p("1-20000/udp")], &[], 30000..=60999, &none()).unwrap();
        assert_eq!(got.len(), 20000);
        assert!(got.iter().zip(30000..).all(|(m, hp)| m.host_port == hp));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn describes_like_docker() {
        let m = allocate(&[p("8080:80")], &[], 1..=2, &none()).unwrap()[0];
        assert_eq!(describe(&m), "80/tcp -> 0.0.0.0:8080");
    }
}
