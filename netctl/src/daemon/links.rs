//! Follows the host's interfaces: a NIC that appears, comes up, goes away or changes its
//! IPv4 addresses is made an uplink (programs attached, masquerade address, host addresses)
//! at once, not at the next command. A thread of its own: it blocks on a netlink socket and
//! runs the ordinary reconcile under the state lock.

use std::{os::fd::AsRawFd, time::Duration};

use anyhow::{Context, Result};
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use super::say;
use crate::{ctx::Ctx, netlink::Netlink, reconcile};

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
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .context("netlink socket")?;
    bind(
        sock.as_raw_fd(),
        &NetlinkAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR),
    )
    .context("joining the link and address groups")?;
    let nl = Netlink::new()?;
    let mut seen = interfaces(&nl)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Any message (or ENOBUFS: some were lost) means "look again".
        let _ = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty());
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

/// Index, name, up, IPv4 addresses.
type Interface = (u32, String, bool, Vec<String>);

/// What the uplinks depend on: every interface that is not some netctl instance's own (index,
/// name, up) and its IPv4 addresses. Netctl's own bridges and veths come and go with every
/// command and change nothing here.
fn interfaces(nl: &Netlink) -> Result<Vec<Interface>> {
    let addrs = nl.addresses()?;
    let mut out: Vec<_> = nl
        .links()?
        .into_iter()
        .filter(|l| l.group & crate::topology::GROUP_FLAG == 0)
        .map(|l| {
            let mut a: Vec<String> = addrs
                .iter()
                .filter(|(i, _)| *i == l.index)
                .map(|(_, n)| n.to_string())
                .collect();
            a.sort();
            (l.index, l.name, l.up, a)
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
