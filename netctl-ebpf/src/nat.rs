//! Address and port translation: published ports (DNAT) and their replies, masquerade (SNAT)
//! and its replies, hairpin, and the ICMP errors of translated flows.

use netctl_common::{
    ct::*,
    drop::DropReason,
    maps::{NET_INTERNAL, NET_MASQUERADE},
    proto,
};

use crate::{
    ct,
    maps::{self, config},
    packet::Packet,
    parse::{parse_inner, Hdr, Icmp, IP_CSUM, IP_DADDR, IP_SADDR},
};

/// Rewrites the packet as `e` says and updates `h` to the new tuple.
#[inline(always)]
pub fn apply<P: Packet>(p: &mut P, h: &mut Hdr, e: &CtEntry) -> Result<(), DropReason> {
    let l4 = h.l4_csum();
    let fail = DropReason::RewriteFailed;
    if e.rewrite & REWRITE_DST != 0 {
        if h.daddr != e.dst_addr {
            p.set_addr(h.l3 + IP_DADDR, h.daddr, e.dst_addr, h.l3 + IP_CSUM, l4)
                .ok_or(fail)?;
            h.daddr = e.dst_addr;
        }
        if h.dport != e.dst_port {
            p.set_port(h.dport_off(), h.dport, e.dst_port, l4)
                .ok_or(fail)?;
            h.dport = e.dst_port;
            if h.proto == proto::ICMP {
                h.sport = e.dst_port;
            }
        }
    }
    if e.rewrite & REWRITE_SRC != 0 {
        if h.saddr != e.src_addr {
            p.set_addr(h.l3 + IP_SADDR, h.saddr, e.src_addr, h.l3 + IP_CSUM, l4)
                .ok_or(fail)?;
            h.saddr = e.src_addr;
        }
        if h.sport != e.src_port {
            p.set_port(h.sport_off(), h.sport, e.src_port, l4)
                .ok_or(fail)?;
            h.sport = e.src_port;
            if h.proto == proto::ICMP {
                h.dport = e.src_port;
            }
        }
    }
    Ok(())
}

/// A packet of a tracked flow: record it, translate it. Returns the entry's kind, or None
/// when the flow is not tracked.
#[inline(always)]
pub fn tracked<P: Packet>(p: &mut P, h: &mut Hdr) -> Result<Option<u8>, DropReason> {
    let key = h.key();
    let Some(e) = ct::lookup(&key, h.tcp_flags) else {
        return Ok(None);
    };
    ct::touch(e, h);
    // SAFETY: map value pointer, valid for this program run.
    let entry = unsafe { *e };
    apply(p, h, &entry)?;
    Ok(Some(entry.kind))
}

/// Uplink ingress: translate replies of masqueraded flows and packets of published-port flows,
/// start new published-port flows.
#[inline(always)]
pub fn ingress<P: Packet>(p: &mut P, h: &mut Hdr) -> Result<(), DropReason> {
    if !h.natable() {
        return Ok(());
    }
    if tracked(p, h)?.is_some() {
        return Ok(());
    }
    let Some(backend) = maps::published(h.daddr, h.dport, h.proto) else {
        return Ok(());
    };
    // client C:cp → H:hp becomes C:cp → B:bp; replies B:bp → C:cp leave as H:hp → C:cp.
    let orig_key = h.key();
    let reply_key = CtKey {
        saddr: backend.addr,
        daddr: h.saddr,
        sport: backend.port,
        dport: h.sport,
        proto: h.proto,
        _pad: [0; 3],
    };
    let mut orig = ct::entry(KIND_DNAT, 0, reply_key);
    orig.rewrite = REWRITE_DST;
    orig.dst_addr = backend.addr;
    orig.dst_port = backend.port;
    let mut reply = ct::entry(KIND_DNAT, CT_REPLY, orig_key);
    reply.rewrite = REWRITE_SRC;
    reply.src_addr = h.daddr;
    reply.src_port = h.dport;
    ct::insert_pair(&orig_key, &orig, &reply_key, &reply)?;
    apply(p, h, &orig)
}

/// After ingress translation: a packet for a container address must belong to a known flow
/// (its reverse tuple is tracked), whatever translated it. Nothing else gets in.
#[inline(always)]
pub fn check_way_in(h: &Hdr) -> Result<(), DropReason> {
    if maps::endpoint(h.daddr).is_none() {
        return Ok(());
    }
    if h.natable() && ct::exists(&h.key().reversed()) {
        return Ok(());
    }
    Err(DropReason::NoWayIn)
}

/// Uplink egress: replies of published-port flows get the host address back; new container
/// flows are masqueraded (or tracked as routed when the network does not masquerade).
#[inline(always)]
pub fn egress<P: Packet>(p: &mut P, h: &mut Hdr, ifindex: u32) -> Result<(), DropReason> {
    if h.natable() && tracked(p, h)?.is_some() {
        return Ok(());
    }
    let Some(ep) = maps::endpoint(h.saddr) else {
        return Ok(()); // the host's own traffic
    };
    let Some(net) = maps::network(ep.network) else {
        return Ok(());
    };
    if net.flags & NET_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    let masquerade = net.flags & NET_MASQUERADE != 0;
    if !h.natable() {
        if !masquerade {
            return Ok(());
        }
        return Err(if h.frag {
            DropReason::Fragment
        } else {
            DropReason::UnsupportedProtocol
        });
    }
    let orig_key = h.key();
    if !masquerade {
        // Routed: nothing to rewrite, but replies must find the flow to get in.
        let reply_key = orig_key.reversed();
        let orig = ct::entry(KIND_ROUTED, 0, reply_key);
        let reply = ct::entry(KIND_ROUTED, CT_REPLY, orig_key);
        return ct::insert_pair(&orig_key, &orig, &reply_key, &reply);
    }
    let Some(up) = maps::uplink(ifindex) else {
        return Ok(());
    };
    // B:bp → X:xp leaves as U:np → X:xp; replies X:xp → U:np come back to B:bp.
    let mut reply_key = CtKey {
        saddr: h.daddr,
        daddr: up.addr,
        sport: h.dport,
        dport: 0,
        proto: h.proto,
        _pad: [0; 3],
    };
    let mut reply = ct::entry(KIND_SNAT, CT_REPLY, orig_key);
    reply.rewrite = REWRITE_DST;
    reply.dst_addr = h.saddr;
    reply.dst_port = h.sport;
    let cfg = config();
    let port = ct::alloc_port(
        &mut reply_key,
        &reply,
        &orig_key,
        cfg.nat_port_min,
        cfg.nat_port_max,
    )?;
    let mut orig = ct::entry(KIND_SNAT, 0, reply_key);
    orig.rewrite = REWRITE_SRC;
    orig.src_addr = up.addr;
    orig.src_port = port;
    ct::insert_orig(&orig_key, &orig, &reply_key)?;
    apply(p, h, &orig)
}

/// Hairpin: a container reaching a published port on a host address. Both ends are
/// rewritten (to the target container, from its network's gateway) so the replies come back
/// through here; returns the new destination to hand the packet to.
#[inline(always)]
pub fn hairpin<P: Packet>(p: &mut P, h: &mut Hdr) -> Result<Option<u32>, DropReason> {
    match tracked(p, h)? {
        Some(KIND_HAIRPIN) => return Ok(Some(h.daddr)),
        Some(_) => return Ok(None),
        None => {}
    }
    let Some(backend) = maps::published(h.daddr, h.dport, h.proto) else {
        return Ok(None);
    };
    let Some(bnet) = maps::endpoint(backend.addr).and_then(|ep| maps::network(ep.network)) else {
        return Ok(None);
    };
    // A:ap → H:hp becomes G:np → B:bp; replies B:bp → G:np become H:hp → A:ap.
    let orig_key = h.key();
    let mut reply_key = CtKey {
        saddr: backend.addr,
        daddr: bnet.gateway,
        sport: backend.port,
        dport: 0,
        proto: h.proto,
        _pad: [0; 3],
    };
    let mut reply = ct::entry(KIND_HAIRPIN, CT_REPLY, orig_key);
    reply.rewrite = REWRITE_SRC | REWRITE_DST;
    reply.src_addr = h.daddr;
    reply.src_port = h.dport;
    reply.dst_addr = h.saddr;
    reply.dst_port = h.sport;
    let cfg = config();
    let port = ct::alloc_port(
        &mut reply_key,
        &reply,
        &orig_key,
        cfg.nat_port_min,
        cfg.nat_port_max,
    )?;
    let mut orig = ct::entry(KIND_HAIRPIN, 0, reply_key);
    orig.rewrite = REWRITE_SRC | REWRITE_DST;
    orig.src_addr = bnet.gateway;
    orig.src_port = port;
    orig.dst_addr = backend.addr;
    orig.dst_port = backend.port;
    ct::insert_orig(&orig_key, &orig, &reply_key)?;
    apply(p, h, &orig)?;
    Ok(Some(h.daddr))
}

/// An ICMP error about a translated flow: translate the outer header and the quoted packet
/// the same way the flow's packets in this direction are translated.
#[inline(always)]
pub fn icmp_error<P: Packet>(p: &mut P, h: &Hdr) -> Result<(), DropReason> {
    if h.icmp != Icmp::Error || h.frag {
        return Ok(());
    }
    let Some(inner) = parse_inner(p, h) else {
        return Ok(());
    };
    // The quoted packet went the other way: its reverse is a packet of this direction.
    let key = CtKey {
        saddr: inner.daddr,
        daddr: inner.saddr,
        sport: inner.dport,
        dport: inner.sport,
        proto: inner.proto,
        _pad: [0; 3],
    };
    let Some(e) = ct::lookup(&key, 0) else {
        return Ok(());
    };
    // SAFETY: map value pointer, valid for this program run.
    let e = unsafe { *e };
    let fail = DropReason::RewriteFailed;
    let icmp_csum = h.l4_csum();
    // The inner header's checksum moves with its address, so the ICMP checksum (which covers
    // both) only changes with the inner port.
    let inner_csum = inner.l3 + IP_CSUM;
    if e.rewrite & REWRITE_DST != 0 {
        p.set_addr(h.l3 + IP_DADDR, h.daddr, e.dst_addr, h.l3 + IP_CSUM, None)
            .ok_or(fail)?;
        p.set_addr(
            inner.l3 + IP_SADDR,
            inner.saddr,
            e.dst_addr,
            inner_csum,
            None,
        )
        .ok_or(fail)?;
        if inner.sport != e.dst_port {
            p.set_port(inner.sport_off(), inner.sport, e.dst_port, icmp_csum)
                .ok_or(fail)?;
        }
    }
    if e.rewrite & REWRITE_SRC != 0 {
        p.set_addr(h.l3 + IP_SADDR, h.saddr, e.src_addr, h.l3 + IP_CSUM, None)
            .ok_or(fail)?;
        p.set_addr(
            inner.l3 + IP_DADDR,
            inner.daddr,
            e.src_addr,
            inner_csum,
            None,
        )
        .ok_or(fail)?;
        if inner.dport != e.src_port {
            p.set_port(inner.dport_off(), inner.dport, e.src_port, icmp_csum)
                .ok_or(fail)?;
        }
    }
    Ok(())
}

/// A reply of a published-port flow (its tuple is the reply key of a DNAT entry pair): the
/// container answering a client outside.
#[inline(always)]
pub fn is_published_reply(h: &Hdr) -> bool {
    if !h.natable() {
        return false;
    }
    // SAFETY: read-only copy of a map value.
    let key = h.key();
    unsafe { crate::maps::CT.get(key) }
        .is_some_and(|e| e.kind == KIND_DNAT && e.flags & CT_REPLY != 0)
}
