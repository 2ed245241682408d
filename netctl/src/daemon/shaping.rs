//! Follows the queueing disciplines on this instance's container veths. A CNI plugin chained
//! after netctl (the reference `bandwidth` plugin) shapes a container with a root qdisc on
//! its host-side veth and an `ingress` qdisc that redirects to an ifb; the datapath's fast
//! paths would go around both, so such veths are listed in the `SHAPED` map and the programs
//! send those containers' packets through the qdiscs. A thread of its own: it wakes on every
//! qdisc change and looks again now and then (a deleted veth's qdiscs go without a word).

use std::{collections::BTreeSet, os::fd::AsRawFd, time::Duration};

use anyhow::{Context, Result};
use nix::sys::socket::{recv, setsockopt, sockopt::ReceiveTimeout, MsgFlags};

use super::log::say;
use crate::{
    base::config::Config,
    kernel::{dataplane::Dataplane, netlink::Netlink},
    model::instance::instance_group,
};

/// rtnetlink's traffic-control multicast group (linux/rtnetlink.h).
const RTMGRP_TC: u32 = 0x8;
/// A plugin makes its qdiscs and filters in a burst of messages: wait for it to settle.
const SETTLE: Duration = Duration::from_millis(50);
/// How often the map is checked without a message.
const EVERY: Duration = Duration::from_secs(10);

pub fn start(cfg: &Config) {
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        if let Err(e) = watch(&cfg) {
            say(&format!("shaping: qdiscs not followed any more: {e:#}"));
        }
    });
}

fn watch(cfg: &Config) -> Result<()> {
    let sock = crate::kernel::netlink::multicast_socket(RTMGRP_TC)?;
    let every = nix::sys::time::TimeVal::new(EVERY.as_secs() as _, 0);
    setsockopt(&sock, ReceiveTimeout, &every).context("netlink socket timeout")?;
    let nl = Netlink::new()?;
    let group = instance_group(&cfg.state_dir);
    let mut buf = vec![0u8; 64 * 1024];
    let mut failing = false;
    loop {
        match follow(cfg, &nl, group) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                say(&format!("shaping: {e:#}"));
            }
            Err(_) => {}
        }
        // A message, a time-out or ENOBUFS (messages lost): look again either way.
        if recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).is_ok() {
            std::thread::sleep(SETTLE);
            while recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        }
    }
}

/// Puts this instance's shaped veths into the map.
fn follow(cfg: &Config, nl: &Netlink, group: u32) -> Result<()> {
    // The maps appear with the first command's reconcile.
    let Some(dp) = Dataplane::open_existing(cfg) else {
        return Ok(());
    };
    let ours: BTreeSet<u32> = nl
        .links()?
        .into_iter()
        .filter(|l| l.group == group && l.kind == "veth")
        .map(|l| l.index)
        .collect();
    let shaped: BTreeSet<u32> = nl.shaped_links()?.intersection(&ours).copied().collect();
    let (added, removed) = dp.set_shaped(&shaped)?;
    if !added.is_empty() || !removed.is_empty() {
        say(&format!(
            "shaping: through the qdiscs of veths {added:?}, fast paths again for {removed:?}"
        ));
    }
    Ok(())
}
