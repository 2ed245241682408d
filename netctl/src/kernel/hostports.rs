//! The host's own sockets and ports: a published port never takes over a port a host process
//! listens on, ephemeral host ports skip ports in use, and every port netctl uses is kept out
//! of the host's own source-port choice (`net.ipv4.ip_local_reserved_ports`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context, Result};

use crate::model::ports::{HostSockets, PortSet, Proto, Socket};

/// Parses one /proc/net table. `v6`: the address column is 32 hex digits.
pub fn parse(text: &str, proto: Proto, v6: bool) -> Vec<Socket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut cols = line.split_whitespace();
        let (Some(local), Some(remote), Some(st)) = (cols.nth(1), cols.next(), cols.next()) else {
            continue;
        };
        let Some((addr_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        if port == 0 {
            continue;
        }
        let addr = if v6 { v6_addr(addr_hex) } else { v4(addr_hex) };
        let Some(addr) = addr else { continue };
        let server = match proto {
            Proto::Tcp => st == "0A",
            Proto::Udp => remote.split_once(':').is_some_and(|(_, p)| p == "0000"),
        };
        out.push(Socket {
            proto,
            addr,
            port,
            server,
        });
    }
    out
}

/// TCP listeners, IPv4 and IPv6, from a NETLINK_SOCK_DIAG dump asking for state LISTEN only.
fn tcp_listeners() -> std::io::Result<Vec<Socket>> {
    use std::{
        io::{Read, Write},
        os::fd::FromRawFd,
    };
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST_DUMP: u16 = 0x1 | 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    // SAFETY: socket(2); the descriptor is owned by the File from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut sock = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        // nlmsghdr (16 bytes), then inet_diag_req_v2: family, protocol, extensions, pad,
        // states, and a zeroed inet_diag_sockid (48 bytes).
        let mut req = Vec::with_capacity(72);
        req.extend(72u32.to_ne_bytes());
        req.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend(NLM_F_REQUEST_DUMP.to_ne_bytes());
        req.extend([0u8; 8]); // sequence, port id
        req.extend([family, libc::IPPROTO_TCP as u8, 0, 0]);
        req.extend((1u32 << TCP_LISTEN).to_ne_bytes());
        req.extend([0u8; 48]);
        sock.write_all(&req)?;
        let mut buf = vec![0u8; 32 * 1024];
        'dump: loop {
            let n = sock.read(&mut buf)?;
            for m in crate::kernel::netlink::messages(&buf[..n]) {
                let Ok((kind, msg)) = m else { break };
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => return Err(std::io::Error::other("sock_diag dump refused")),
                    _ => {}
                }
                // inet_diag_msg: family, state, timer, retrans, then the socket ID: source
                // port (big endian), destination port, source address (16 bytes).
                if let Some(m) = msg.get(16..16 + 24) {
                    let port = u16::from_be_bytes([m[4], m[5]]);
                    let src: [u8; 16] = m[8..24].try_into().expect("16 bytes");
                    let addr = if m[0] == libc::AF_INET as u8 {
                        Ipv4Addr::new(src[0], src[1], src[2], src[3]).into()
                    } else {
                        host_addr(src)
                    };
                    out.push(Socket {
                        proto: Proto::Tcp,
                        addr,
                        port,
                        server: true,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// An IPv6 socket address as a published port's host address: the wildcard takes IPv4 too
/// (0.0.0.0, both families), a v4-mapped address is that IPv4 address.
fn host_addr(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    if v6.is_unspecified() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        v6.to_ipv4_mapped().map_or(v6.into(), IpAddr::V4)
    }
}

/// /proc prints each 32-bit word in host byte order.
fn word(hex: &str) -> Option<[u8; 4]> {
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

fn v4(hex: &str) -> Option<IpAddr> {
    Some(Ipv4Addr::from(word(hex)?).into())
}

fn v6_addr(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut a = [0u8; 16];
    for i in 0..4 {
        a[i * 4..i * 4 + 4].copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
    }
    Some(host_addr(a))
}

impl HostSockets {
    /// What allocating `specs` needs: every socket when a host port is to be picked (none
    /// in use may be), else the servers only — TCP listeners then come from the kernel's
    /// socket diagnostics, which skip the established-connection table that
    /// /proc/net/tcp walks bucket by bucket (milliseconds on a big host).
    pub fn read_for(specs: &[crate::model::ports::PortSpec]) -> Self {
        let pick = specs.iter().any(|s| s.host.is_none());
        let listeners = if pick { None } else { tcp_listeners().ok() };
        let tcp_from_proc = listeners.is_none();
        let mut all = listeners.unwrap_or_default();
        for (file, proto, v6) in [
            ("tcp", Proto::Tcp, false),
            ("tcp6", Proto::Tcp, true),
            ("udp", Proto::Udp, false),
            ("udp6", Proto::Udp, true),
        ] {
            if proto == Proto::Tcp && !tcp_from_proc {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(Path::new("/proc/net").join(file)) {
                all.extend(parse(&text, proto, v6));
            }
        }
        Self(all)
    }
}

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Parses "8080,61000-65535" into ports.
pub fn parse_port_list(text: &str) -> PortSet {
    let mut out = PortSet::default();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// Formats ports as the sysctl takes them, ranges collapsed.
pub fn format_port_list(ports: &PortSet) -> String {
    let mut parts = Vec::new();
    let mut it = ports.iter().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end.wrapping_add(1))) && end < u16::MAX {
            end = it.next().expect("peeked");
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The reservation to write: the ports others reserved (what is there minus what netctl
/// added last time) plus `ours`. Returns (new sysctl value, ports netctl adds).
pub fn merge_reserved(
    current: &PortSet,
    added_before: &PortSet,
    ours: &PortSet,
) -> (PortSet, PortSet) {
    let others = current.difference(added_before);
    let added = ours.difference(&others);
    (others.union(ours), added)
}

/// Keeps `ours` (published host ports and the NAT source-port range) in the namespace's
/// reserved ports; `record` remembers which ports netctl added, so it takes back only those.
pub fn reserve(record: &Path, ours: &PortSet) -> Result<bool> {
    let current = parse_port_list(
        &std::fs::read_to_string(RESERVED).with_context(|| format!("reading {RESERVED}"))?,
    );
    let added_before = std::fs::read_to_string(record)
        .map(|t| parse_port_list(&t))
        .unwrap_or_default();
    let (want, added) = merge_reserved(&current, &added_before, ours);
    if want == current && added == added_before {
        return Ok(false);
    }
    // Recorded first: if we die after the sysctl write, the next run still knows these are ours.
    let all_ours = added.union(&added_before);
    if all_ours != added_before {
        crate::base::atomic_file::write_cache(
            record,
            format_port_list(&all_ours).as_bytes(),
            0o600,
        )?;
    }
    if want != current {
        std::fs::write(RESERVED, format_port_list(&want))
            .with_context(|| format!("writing {RESERVED}"))?;
    }
    if added != all_ours {
        crate::base::atomic_file::write_cache(record, format_port_list(&added).as_bytes(), 0o600)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ports::PortMapping;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200000A:8000 0100000A:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";
    const TCP6: &str =
        "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A
   1: 0000000000000000FFFF00000100007F:0017 00000000000000000000000000000000:0000 0A
   2: B80D0120000000000000000001000000:0018 00000000000000000000000000000000:0000 0A
";

    fn m(ip: &str, port: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.parse().unwrap(),
            host_port: port,
            container_port: 80,
            proto,
        }
    }

    #[test]
    fn reads_listeners_and_clients() {
        let s = parse(TCP, Proto::Tcp, false);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].addr, s[0].port, s[0].server),
            (Ipv4Addr::UNSPECIFIED.into(), 7000, true)
        );
        assert_eq!(s[1].addr, Ipv4Addr::LOCALHOST);
        assert_eq!(s[2].port, 32768);
        assert!(!s[2].server, "an outgoing connection serves nothing");
        let s6 = parse(TCP6, Proto::Tcp, true);
        assert_eq!(s6[0].addr, Ipv4Addr::UNSPECIFIED, "[::] takes IPv4 too");
        assert_eq!(s6[1].addr, Ipv4Addr::LOCALHOST, "v4-mapped");
        assert_eq!(
            s6[2].addr,
            "2001:db8::1".parse::<IpAddr>().unwrap(),
            "a specific IPv6 address"
        );
    }

    #[test]
    fn published_ports_never_take_a_served_port() {
        let mut all = parse(TCP, Proto::Tcp, false);
        all.extend(parse(TCP6, Proto::Tcp, true));
        let h = HostSockets(all);
        assert!(h
            .serving(&m("0.0.0.0", 7000, Proto::Tcp))
            .unwrap()
            .contains("0.0.0.0:7000"));
        assert!(
            h.serving(&m("10.0.0.9", 7000, Proto::Tcp)).is_some(),
            "wildcard listener"
        );
        assert!(
            h.serving(&m("0.0.0.0", 7000, Proto::Udp)).is_none(),
            "other protocol"
        );
        assert!(
            h.serving(&m("0.0.0.0", 8080, Proto::Tcp)).is_some(),
            "127.0.0.1 listener"
        );
        assert!(
            h.serving(&m("10.0.0.9", 8080, Proto::Tcp)).is_none(),
            "other address"
        );
        assert!(
            h.serving(&m("0.0.0.0", 22, Proto::Tcp)).is_some(),
            "sshd on [::]"
        );
        // A specific IPv6 address: every address includes it, other IPv6 ones and IPv4
        // ones do not.
        assert!(h
            .serving(&m("0.0.0.0", 24, Proto::Tcp))
            .unwrap()
            .contains("tcp6 [2001:db8::1]:24"));
        assert!(h.serving(&m("::", 24, Proto::Tcp)).is_some());
        assert!(h.serving(&m("::1", 24, Proto::Tcp)).is_none());
        assert!(h.serving(&m("10.0.0.9", 24, Proto::Tcp)).is_none());
        assert!(h.serving(&m("0.0.0.0", 32768, Proto::Tcp)).is_none());
        assert!(h.busy().contains(&(Proto::Tcp, 32768)), "but not ephemeral");
    }

    #[test]
    fn reserved_ports_keep_what_others_reserved() {
        assert_eq!(
            parse_port_list("8080, 61000-61002,\n"),
            [8080, 61000, 61001, 61002].into()
        );
        assert_eq!(format_port_list(&[1, 2, 3, 7, 9, 10].into()), "1-3,7,9-10");
        assert_eq!(format_port_list(&PortSet::default()), "");
        // The user reserved 22 and 8080; netctl added 9000 last time and now wants 8080, 9100.
        let (want, added) = merge_reserved(
            &[22, 8080, 9000].into(),
            &[9000].into(),
            &[8080, 9100].into(),
        );
        assert_eq!(want, [22, 8080, 9100].into());
        assert_eq!(added, [9100].into(), "8080 stays the user's");
        let (want, added) = merge_reserved(&want, &added, &PortSet::default());
        assert_eq!(want, [22, 8080].into());
        assert!(added.is_empty());
    }
}
