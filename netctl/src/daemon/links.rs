//! Follows the host's interfaces: a NIC that appears, comes up, goes away or changes its
//! IPv4 addresses is made an uplink (programs attached, masquerade address, host addresses)
//! at once, not at the next command. A thread of its own: it blocks on a netlink socket and
//! runs the ordinary reconcile under the state lock.

use std::{os::fd::AsRawFd, time::Duration};

use anyhow::Result;
use nix::sys::socket::{recv, MsgFlags};

use super::log::say;
use crate::{engine::ctx::Ctx, engine::reconcile, kernel::netlink::Netlink};

// rtnetlink multicast groups (linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
/// An interface arrives in a burst of messages: wait for it to settle.
const SETTLE: Duration = Duration::from_millis(200);

pub fn start() {
    std::thread::spawn(move || {
        if let Err(e) = watch() {
            say(&format!("links: not followed any more: {e:#}"));
        }
    });
}

fn watch() -> Result<()> {
    let sock = crate::kernel::netlink::multicast_socket(RTMGRP_LINK | RTMGRP_IPV4_IFADDR)?;
    let nl = Netlink::new()?;
    let mut seen = interfaces(&nl)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A message about a link that is no netctl instance's (or ENOBUFS: some were lost)
        // means "look again"; each container's veth comes with its own burst of messages.
        match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) if !concerns_uplinks(&buf[..n]) => continue,
            _ => {}
        }
        std::thread::sleep(SETTLE);
        while recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        let now = interfaces(&nl)?;
        if now == seen {
            continue;
        }
        match catch_up() {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => say(&format!("links: {}", changes.join("; "))),
            Err(e) => say(&format!("links: {e:#}")),
        }
        seen = now;
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_GROUP: u16 = 27;

/// Whether a datagram of link and address messages may change the uplinks: anything but
/// link messages about links in some netctl instance's interface group.
fn concerns_uplinks(buf: &[u8]) -> bool {
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|v| u16::from_ne_bytes([v[0], v[1]]));
    let u32_at = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
    };
    // Each message: nlmsghdr (16 bytes), ifinfomsg (16), then attributes.
    for m in crate::kernel::netlink::messages(buf) {
        let Ok((kind, msg)) = m else {
            return true;
        };
        if kind != RTM_NEWLINK && kind != RTM_DELLINK {
            return true;
        }
        // A bridge's notice about one of its ports (family AF_BRIDGE) carries no group; what
        // matters of a link (existence, name, state) comes in its own link message anyway.
        if msg.get(16) == Some(&(libc::AF_BRIDGE as u8)) {
            continue;
        }
        let mut attrs = msg.get(32..).unwrap_or_default();
        let mut group = None;
        while let (Some(alen), Some(atype)) = (u16_at(attrs, 0), u16_at(attrs, 2)) {
            let alen = alen as usize;
            if alen < 4 || alen > attrs.len() {
                break;
            }
            if atype == IFLA_GROUP {
                group = u32_at(attrs, 4);
            }
            attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
        }
        if group.is_none_or(|g| g & crate::kernel::topology::GROUP_FLAG == 0) {
            return true;
        }
    }
    false
}

/// Index, name, up, the bridge or bond it is a port of, IPv4 addresses.
type Interface = (u32, String, bool, Option<u32>, Vec<String>);

/// What the uplinks depend on: every interface that is not some netctl instance's own (index,
/// name, up) and its IPv4 addresses. Netctl's own bridges and veths come and go with every
/// command and change nothing here.
fn interfaces(nl: &Netlink) -> Result<Vec<Interface>> {
    let addrs = nl.addresses()?;
    let mut out: Vec<_> = nl
        .links()?
        .into_iter()
        .filter(|l| l.group & crate::kernel::topology::GROUP_FLAG == 0)
        .map(|l| {
            let mut a: Vec<String> = addrs
                .iter()
                .filter(|(i, _)| *i == l.index)
                .map(|(_, n)| n.to_string())
                .collect();
            a.sort();
            (l.index, l.name, l.up, l.controller, a)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The reconcile a command would end with, under the state lock.
fn catch_up() -> Result<Vec<String>> {
    let ctx = Ctx::open()?;
    let mut tx = ctx.begin()?;
    let state = tx.state().clone();
    let report = reconcile::apply(&ctx.cfg, &ctx.nl, &state, false)?;
    Ok(report.changes.into_iter().chain(report.problems).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link message (nlmsghdr, ifinfomsg, an IFLA_IFNAME and optionally an IFLA_GROUP).
    fn link_msg(kind: u16, group: Option<u32>) -> Vec<u8> {
        family_msg(kind, libc::AF_UNSPEC as u8, group)
    }

    fn family_msg(kind: u16, family: u8, group: Option<u32>) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend(8u16.to_ne_bytes());
        attrs.extend(3u16.to_ne_bytes()); // IFLA_IFNAME "ab\0" padded
        attrs.extend(b"ab\0\0");
        if let Some(g) = group {
            attrs.extend(8u16.to_ne_bytes());
            attrs.extend(IFLA_GROUP.to_ne_bytes());
            attrs.extend(g.to_ne_bytes());
        }
        let len = 32 + attrs.len() as u32;
        let mut m = Vec::new();
        m.extend(len.to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]); // flags, sequence, port id
        m.push(family);
        m.extend([0u8; 15]); // the rest of ifinfomsg
        m.extend(attrs);
        m
    }

    #[test]
    fn only_foreign_links_concern_uplinks() {
        let ours = Some(crate::kernel::topology::GROUP_FLAG | 5);
        assert!(!concerns_uplinks(&link_msg(RTM_NEWLINK, ours)));
        assert!(!concerns_uplinks(
            &[link_msg(RTM_NEWLINK, ours), link_msg(RTM_DELLINK, ours)].concat()
        ));
        assert!(concerns_uplinks(&link_msg(RTM_NEWLINK, Some(0))));
        assert!(concerns_uplinks(&link_msg(RTM_DELLINK, None)));
        assert!(concerns_uplinks(
            &[link_msg(RTM_NEWLINK, ours), link_msg(RTM_NEWLINK, Some(1))].concat()
        ));
        // A bridge's notice about a port: the port's own messages say what matters.
        assert!(!concerns_uplinks(
            &[
                link_msg(RTM_NEWLINK, ours),
                family_msg(RTM_NEWLINK, libc::AF_BRIDGE as u8, None)
            ]
            .concat()
        ));
        // An address message, or a truncated one: look again.
        assert!(concerns_uplinks(&link_msg(20, ours)));
        assert!(concerns_uplinks(&link_msg(RTM_NEWLINK, ours)[..20]));
    }
}
