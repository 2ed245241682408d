//! Connection tracking: lookups that expire idle entries, TCP state shared by both directions
//! of a flow, pair insertion and source-port allocation with collision probing.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
};
use netctl_common::{ct::*, drop::DropReason, proto};

use netctl_common::event::{END_CLOSED, END_EXPIRED, EV_FLOW_END, EV_FLOW_NEW};
use netctl_common::stats::Hook;

use crate::{
    events,
    maps::CT,
    parse::{Hdr, TCP_FIN, TCP_RST, TCP_SYN},
};

/// Candidate ports tried per new SNAT flow.
const NAT_PROBES: u32 = 32;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The live entry for `key`, removing it if it has expired (or if a new TCP connection reuses
/// the tuple of a closed one).
#[inline(always)]
pub fn lookup(key: &CtKey, tcp_flags: u8) -> Option<*mut CtEntry> {
    let e = CT.get_ptr_mut(key)?;
    // SAFETY: map value pointer, valid for this program run.
    let entry = unsafe { &mut *e };
    let closed = is_closed(entry.flags);
    let new_syn = key.proto == proto::TCP && tcp_flags & (TCP_SYN | 0x10) == TCP_SYN;
    let t = now();
    if t.wrapping_sub(entry.last_seen) <= timeout(key.proto, entry.flags) && !(closed && new_syn) {
        return Some(e);
    }
    // Idle this way; the flow lives on if the other direction is busy.
    let peer = entry.peer;
    if let Some(p) = CT.get_ptr_mut(peer) {
        let peer_last = unsafe { (*p).last_seen };
        if !new_syn && t.wrapping_sub(peer_last) <= timeout(key.proto, entry.flags) {
            entry.last_seen = peer_last;
            return Some(e);
        }
    }
    flow_event(EV_FLOW_END, key, entry, END_EXPIRED);
    let _ = CT.remove(peer);
    let _ = CT.remove(key);
    None
}

pub fn exists(key: &CtKey) -> bool {
    lookup(key, 0).is_some()
}

fn is_closed(flags: u8) -> bool {
    flags & CT_RST != 0 || flags & (CT_FIN_ORIG | CT_FIN_REPLY) == (CT_FIN_ORIG | CT_FIN_REPLY)
}

/// Reports a flow by one of its entries (either direction).
#[inline(always)]
fn flow_event(kind: u8, key: &CtKey, e: &CtEntry, how: u8) {
    let (orig, reply) = if e.flags & CT_REPLY != 0 {
        (&e.peer, key)
    } else {
        (key, &e.peer)
    };
    let hook = match e.kind {
        KIND_DNAT => Hook::UplinkIngress,
        KIND_HAIRPIN => Hook::FromContainer,
        _ => Hook::UplinkEgress,
    };
    events::flow(kind, hook, e.kind, how, orig, reply);
}

/// Records a packet of the flow: time, reply seen, FIN/RST (on both entries).
#[inline(always)]
pub fn touch(e: *mut CtEntry, h: &Hdr) {
    // SAFETY: map value pointer, valid for this program run.
    let entry = unsafe { &mut *e };
    entry.last_seen = now();
    let mut add = 0u8;
    if entry.flags & CT_REPLY != 0 && entry.flags & CT_SEEN_REPLY == 0 {
        add |= CT_SEEN_REPLY;
    }
    if h.proto == proto::TCP {
        if h.tcp_flags & TCP_RST != 0 {
            add |= CT_RST;
        }
        if h.tcp_flags & TCP_FIN != 0 {
            add |= if entry.flags & CT_REPLY != 0 {
                CT_FIN_REPLY
            } else {
                CT_FIN_ORIG
            };
        }
    }
    if add & !entry.flags != 0 {
        let was_closed = is_closed(entry.flags);
        entry.flags |= add;
        if !was_closed && is_closed(entry.flags) {
            flow_event(EV_FLOW_END, &h.key(), entry, END_CLOSED);
        }
        let peer = entry.peer;
        if let Some(p) = CT.get_ptr_mut(peer) {
            unsafe { (*p).flags |= add };
        }
    }
}

/// Stores both entries of a new flow; the reply key must be free (no other flow may own it).
#[inline(always)]
pub fn insert_pair(
    orig_key: &CtKey,
    orig: &CtEntry,
    reply_key: &CtKey,
    reply: &CtEntry,
) -> Result<(), DropReason> {
    if exists(reply_key) {
        return Err(DropReason::CtConflict);
    }
    CT.insert(reply_key, reply, BPF_NOEXIST as u64)
        .map_err(|_| DropReason::CtConflict)?;
    insert_orig(orig_key, orig, reply_key)
}

/// Picks a source port for a new SNAT flow: the reply tuple `reply_key` with its destination
/// port (the port to allocate) free. Probes from a hash of the whole flow (`flow`: the
/// original tuple); a tuple whose flow has closed (RST, or FIN both ways) is free again, as
/// TIME_WAIT tuples are for Linux's NAT. Inserts the reply entry (so two CPUs cannot take the
/// same port) and returns the port in network byte order.
#[inline(always)]
pub fn alloc_port(
    reply_key: &mut CtKey,
    reply: &CtEntry,
    flow: &CtKey,
    min: u16,
    max: u16,
) -> Result<u16, DropReason> {
    let span = u32::from(max.saturating_sub(min)) + 1;
    let seed = flow.saddr
        ^ flow.daddr.rotate_left(11)
        ^ (u32::from(flow.sport) << 16)
        ^ u32::from(flow.dport).rotate_left(5)
        ^ u32::from(flow.proto);
    let start = seed.wrapping_mul(0x9e37_79b1) >> 7;
    for i in 0..NAT_PROBES {
        let port = (min as u32 + (start.wrapping_add(i) % span)) as u16;
        let be = port.to_be();
        reply_key.dport = be;
        if reply_key.proto == proto::ICMP {
            reply_key.sport = be;
        }
        if let Some(e) = CT.get_ptr(*reply_key) {
            // SAFETY: map value pointer, valid for this program run.
            let (flags, last) = unsafe { ((*e).flags, (*e).last_seen) };
            let stale =
                is_closed(flags) || now().wrapping_sub(last) > timeout(reply_key.proto, flags);
            if !stale {
                continue;
            }
            let _ = CT.remove(*reply_key);
        }
        if CT.insert(*reply_key, reply, BPF_NOEXIST as u64).is_ok() {
            return Ok(be);
        }
    }
    Err(DropReason::NatPortsExhausted)
}

/// Stores the original-direction entry after the reply's ([`alloc_port`], [`insert_pair`]).
#[inline(always)]
pub fn insert_orig(orig_key: &CtKey, orig: &CtEntry, reply_key: &CtKey) -> Result<(), DropReason> {
    if CT.insert(orig_key, orig, BPF_ANY as u64).is_err() {
        let _ = CT.remove(reply_key);
        return Err(DropReason::CtFull);
    }
    flow_event(EV_FLOW_NEW, orig_key, orig, 0);
    Ok(())
}

/// An entry that rewrites nothing yet.
#[inline(always)]
pub fn entry(kind: u8, flags: u8, peer: CtKey) -> CtEntry {
    CtEntry {
        src_addr: 0,
        dst_addr: 0,
        src_port: 0,
        dst_port: 0,
        rewrite: 0,
        kind,
        flags,
        _pad: 0,
        peer,
        last_seen: now(),
    }
}
