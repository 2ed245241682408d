//! A container's own /etc/hosts, /etc/resolv.conf and /etc/hostname: kept under
//! `$NETCTL_STATE_DIR/containers/<id>/` and bound over the host's files in the private mount
//! namespace of each process the container runs (see `process::Isolation`). The host's own
//! files are never written.

use std::{
    fmt::Write as _,
    fs::OpenOptions,
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    base::config::Config,
    kernel::dataplane::maps::dns_server,
    kernel::resolvconf::{ResolvConf, FALLBACK},
    model::links,
    model::state::{Container, State},
};

/// (file under the container's directory, the path it is bound over).
pub const FILES: [(&str, &str); 3] = [
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
    ("hostname", "/etc/hostname"),
];

/// Docker's embedded DNS address, as containers see it.
pub const EMBEDDED_DNS: &str = "127.0.0.11";

/// Docker's /etc/hosts: loopback and IPv6 names, `--add-host` and link entries, then the
/// container's own addresses with its hostname.
pub fn hosts(state: &State, c: &Container) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for h in &c.options.extra_hosts {
        let _ = writeln!(out, "{}\t{}", h.ip, h.name);
    }
    for (ip, names) in links::hosts_entries(state, c) {
        let _ = writeln!(out, "{ip}\t{}", names.join(" "));
    }
    for ep in &c.endpoints {
        if let Some(ip) = ep.ip {
            let _ = writeln!(out, "{ip}\t{}", c.hostname());
        }
        if let Some(ip6) = ep.ip6 {
            let _ = writeln!(out, "{ip6}\t{}", c.hostname());
        }
    }
    out
}

/// The servers a container's queries end up at: its `--dns`, else the host's.
pub fn upstream(c: &Container, host: &ResolvConf) -> Vec<IpAddr> {
    if c.options.dns.is_empty() {
        host.nameservers.clone()
    } else {
        c.options.dns.clone()
    }
}

/// On a user-defined network the embedded DNS (127.0.0.11, with Docker's `ndots:0`); on the
/// default network (no embedded DNS, as in Docker) the upstream servers themselves: `--dns`,
/// else the host's that a container can reach, else Docker's fallback.
///
/// `via_socket`: the socket programs run (they send 127.0.0.11 to the resolver); without them
/// (no cgroup v2, or a kernel without the hooks) the container asks the resolver on its
/// gateway directly.
pub fn resolv_conf(state: &State, c: &Container, host: &ResolvConf, via_socket: bool) -> String {
    let mut out = String::new();
    let search = |out: &mut String| {
        if !host.search.is_empty() {
            let _ = writeln!(out, "search {}", host.search.join(" "));
        }
    };
    if let Some(gateway) = dns_server(state, c) {
        let servers: Vec<String> = upstream(c, host).iter().map(|s| s.to_string()).collect();
        let _ = writeln!(
            out,
            "# netctl's embedded DNS: container names, the rest forwarded to [{}]",
            servers.join(" ")
        );
        search(&mut out);
        // 127.0.0.11 is reached through an IPv4 route: a container with none (IPv6-only)
        // names the resolver on its network's IPv6 gateway.
        if via_socket && gateway.is_ipv4() {
            let _ = writeln!(out, "nameserver {EMBEDDED_DNS}");
        } else {
            let _ = writeln!(out, "nameserver {gateway}");
        }
        let mut options = vec!["ndots:0".to_string()];
        options.extend(
            host.options
                .iter()
                .filter(|o| !o.starts_with("ndots:"))
                .cloned(),
        );
        let _ = writeln!(out, "options {}", options.join(" "));
        return out;
    }
    let mut servers = c.options.dns.clone();
    if servers.is_empty() {
        servers = host.reachable_from_containers();
    }
    if servers.is_empty() {
        servers = FALLBACK.iter().map(|s| s.parse().expect("valid")).collect();
    }
    search(&mut out);
    for s in servers {
        let _ = writeln!(out, "nameserver {s}");
    }
    if !host.options.is_empty() {
        let _ = writeln!(out, "options {}", host.options.join(" "));
    }
    out
}

pub fn path(state_dir: &Path, id: &str, file: &str) -> PathBuf {
    crate::model::paths::container_dir(state_dir, id).join(file)
}

/// Writes the container's files. In place (never a rename): running processes have the
/// files bound by inode and must see the change (a network connected later, say).
pub fn write(cfg: &Config, state: &State, c: &Container) -> Result<()> {
    if c.host_network {
        return Ok(()); // the host's own files, as Docker's host mode
    }
    let dir = crate::model::paths::container_dir(&cfg.state_dir, &c.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let host = ResolvConf::read(&cfg.resolv_conf);
    let via_socket = crate::kernel::dataplane::socket_programs(cfg).is_ok();
    let texts = [
        hosts(state, c),
        resolv_conf(state, c, &host, via_socket),
        format!("{}\n", c.hostname()),
    ];
    for ((name, _), text) in FILES.iter().zip(texts) {
        let p = dir.join(name);
        // Readable inside the container by any user (as Docker's are); the 0700 state
        // directory keeps them from other users of the host.
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .with_context(|| format!("writing {}", p.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.set_len(text.len() as u64))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Keeps every container's files in step with a committed change: the containers whose
/// addresses, options or links' targets changed, and (`all`: `netctl sync`) any whose files
/// are missing. Problems are warnings: the change itself is done.
pub fn follow(cfg: &Config, before: &State, after: &State, all: bool) {
    let linked_changed = |c: &Container| {
        c.options.links.iter().any(|l| {
            let find = |s: &State| s.containers.values().find(|t| t.id == l.id).cloned();
            find(before).map(|t| t.endpoints) != find(after).map(|t| t.endpoints)
        })
    };
    for c in after.containers.values() {
        let changed =
            before.containers.get(&c.name).is_none_or(|b| {
                b.id != c.id || b.endpoints != c.endpoints || b.options != c.options
            }) || linked_changed(c);
        let missing = all && !c.host_network && !path(&cfg.state_dir, &c.id, "hosts").exists();
        if changed || missing {
            if let Err(e) = write(cfg, after, c) {
                eprintln!("netctl: warning: container {}: {e:#}", c.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        fixtures::{container, net},
        state::ExtraHost,
    };

    fn state() -> State {
        let mut s = State::default();
        s.networks
            .insert("bridge".into(), net("bridge", "172.17.0.0/16"));
        s.networks
            .insert("front".into(), net("front", "10.5.0.0/24"));
        s
    }

    #[test]
    fn hosts_has_dockers_lines() {
        let s = state();
        let mut c = container("web", "0123456789abcdef", &[("front", "10.5.0.2")]);
        c.options.extra_hosts.push(ExtraHost {
            name: "db.example".into(),
            ip: "192.0.2.9".parse().unwrap(),
        });
        let h = hosts(&s, &c);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost"));
        assert!(h.contains("192.0.2.9\tdb.example\n"));
        assert!(h.ends_with("10.5.0.2\t0123456789ab\n"), "{h}");
        c.options.hostname = "box".into();
        assert!(hosts(&s, &c).ends_with("10.5.0.2\tbox\n"));
    }

    #[test]
    fn resolv_conf_embedded_or_upstream() {
        let s = state();
        let host = ResolvConf::parse(
            "nameserver 127.0.0.53\nnameserver 10.9.9.9\nsearch corp.example\noptions ndots:3 edns0\n",
        );
        let user = container("u", "0123456789abcdef", &[("front", "10.5.0.2")]);
        let rc = resolv_conf(&s, &user, &host, true);
        assert!(rc.contains("nameserver 127.0.0.11\n"), "{rc}");
        assert!(rc.contains("search corp.example\n"));
        assert!(rc.contains("options ndots:0 edns0\n"), "{rc}");
        assert_eq!(rc.matches("nameserver").count(), 1);
        // Without the socket programs: the resolver on the network's gateway itself.
        let rc = resolv_conf(&s, &user, &host, false);
        assert!(
            rc.contains("nameserver 10.5.0.1\n") && !rc.contains("127.0.0.11"),
            "{rc}"
        );

        // The default network: the host's reachable servers, loopback left out.
        let mut b = container("b", "1123456789abcdef", &[("bridge", "172.17.0.2")]);
        let rc = resolv_conf(&s, &b, &host, true);
        assert!(
            rc.contains("nameserver 10.9.9.9\n") && !rc.contains("127.0.0"),
            "{rc}"
        );
        // --dns wins; no servers at all → Docker's fallback.
        b.options.dns = vec!["192.0.2.53".parse().unwrap()];
        let rc = resolv_conf(&s, &b, &host, true);
        assert!(rc.contains("nameserver 192.0.2.53\n") && !rc.contains("10.9.9.9"));
        b.options.dns.clear();
        let rc = resolv_conf(&s, &b, &ResolvConf::parse("nameserver 127.0.0.1\n"), true);
        assert!(
            rc.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"),
            "{rc}"
        );
    }
}
