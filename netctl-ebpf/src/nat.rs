//! Address and port translation: published ports (DNAT) and their replies, masquerade (SNAT)
//! and its replies, hairpin, and the ICMP errors of translated flows.

use netctl_common::{
    ct::*,
    drop::DropReason,
    maps::{NET_INTERNAL, NET_MASQUERADE},
    proto,
};

use crate::{
    ct, host,
    maps::{self, config},
    packet::Packet,
    parse::{parse_inner, Hdr, Icmp, Inner, IP_CSUM, IP_DADDR, IP_SADDR},
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
            // A later fragment has no ports to write: its first fragment carried them.
            if !h.l4_absent {
                p.set_port(h.dport_off(), h.dport, e.dst_port, l4)
                    .ok_or(fail)?;
            }
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
            if !h.l4_absent {
                p.set_port(h.sport_off(), h.sport, e.src_port, l4)
                    .ok_or(fail)?;
            }
            h.sport = e.src_port;
            if h.proto == proto::ICMP {
                h.dport = e.src_port;
            }
        }
    }
    Ok(())
}

/// A packet of a tracked flow: record it, translate it. Returns the flow's entry, or None
/// when the flow is not tracked.
#[inline(always)]
pub fn tracked<const MODERN: bool, P: Packet>(
    p: &mut P,
    h: &mut Hdr,
) -> Result<Option<CtEntry>, DropReason> {
    let key = h.key();
    let Some(f) = ct::lookup(&key, h.is_syn()) else {
        return Ok(None);
    };
    let mut e = CtEntry::default();
    if !ct::track::<MODERN, _>(f, &key, h, &mut e)? {
        return Ok(None);
    }
    apply(p, h, &e)?;
    Ok(Some(e))
}

/// Uplink ingress: translate replies of masqueraded flows and packets of published-port
/// flows, start new published-port flows. Returns whether the packet belongs to a flow.
#[inline(always)]
pub fn ingress<const MODERN: bool, P: Packet>(p: &mut P, h: &mut Hdr) -> Result<bool, DropReason> {
    if !h.natable() {
        return Ok(false);
    }
    if tracked::<MODERN, P>(p, h)?.is_some() {
        return Ok(true);
    }
    // A later fragment of a datagram that started no flow: the host's, as before.
    if h.l4_absent {
        return Ok(false);
    }
    let Some((port, backend)) = maps::published(h.daddr, h.dport, h.proto) else {
        return Ok(false);
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
    // A published port starts a flow only for a new connection: a TCP SYN, or a UDP datagram
    // no host socket would receive — so the host's own connections from that port keep
    // their replies.
    let starts = if h.proto == proto::TCP {
        h.is_syn()
    } else {
        if host::socket_owns(p, h) {
            return Ok(false);
        }
        true
    };
    let mut orig = ct::opening(KIND_DNAT, reply_key, h);
    if starts {
        orig.rewrite = REWRITE_DST;
        orig.dst_addr = backend.addr;
        orig.dst_port = backend.port;
        let mut reply = ct::entry(KIND_DNAT, CT_REPLY, orig_key);
        reply.rewrite = REWRITE_SRC;
        reply.src_addr = h.daddr;
        reply.src_port = h.dport;
        maps::count_hit(&port);
        ct::insert_pair(&orig_key, &mut orig, &reply_key, &reply)?;
    } else if !ct::adopt_orphan(&orig_key, &reply_key, &mut orig) {
        // Mid-connection: only a flow whose original half was lost comes back.
        return Ok(false);
    }
    apply(p, h, &orig)?;
    Ok(true)
}

/// Uplink egress: replies of published-port flows get the host address back; new container
/// flows are masqueraded (or tracked as routed when the network does not masquerade).
/// Returns whether the packet is a container's or belongs to a flow.
#[inline(always)]
pub fn egress<const MODERN: bool, P: Packet>(
    p: &mut P,
    h: &mut Hdr,
    ifindex: u32,
) -> Result<bool, DropReason> {
    if h.natable() && tracked::<MODERN, P>(p, h)?.is_some() {
        return Ok(true);
    }
    let Some(ep) = maps::endpoint(h.saddr) else {
        return Ok(false); // the host's own traffic, or forwarded
    };
    let Some(net) = maps::network(ep.network) else {
        return Ok(true);
    };
    if net.flags & NET_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    let masquerade = net.flags & NET_MASQUERADE != 0;
    if !h.natable() {
        if !masquerade {
            return Ok(true);
        }
        return Err(if h.frag {
            DropReason::Fragment
        } else {
            DropReason::UnsupportedProtocol
        });
    }
    // A later fragment whose first fragment made no flow (lost, or the flow was refused):
    // nothing to translate it with.
    if h.l4_absent {
        return if masquerade {
            Err(DropReason::Fragment)
        } else {
            Ok(true)
        };
    }
    let orig_key = h.key();
    if !masquerade {
        // Routed: nothing to rewrite, but replies must find the flow to get in.
        let reply_key = orig_key.reversed();
        let mut orig = ct::opening(KIND_ROUTED, reply_key, h);
        let reply = ct::entry(KIND_ROUTED, CT_REPLY, orig_key);
        ct::insert_pair(&orig_key, &mut orig, &reply_key, &reply)?;
        return Ok(true);
    }
    // A TCP segment that opens nothing belongs to a connection whose flow was lost: a new
    // source port would not revive it. (If its reply half survived, the peer's next segment
    // rebuilds the flow.)
    if h.proto == proto::TCP && !h.is_syn() {
        return Err(DropReason::CtMiss);
    }
    let Some(up) = maps::uplink(ifindex) else {
        return Ok(true);
    };
    // B:bp → X:xp leaves as U:np → X:xp; replies X:xp → U:np come back to B:bp.
    let reply_key = CtKey {
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
    let mut s = ct::probe4(reply_key, reply);
    let port = ct::alloc_port::<MODERN, _>(&mut s, cfg.nat_port_min, cfg.nat_port_max)?;
    let reply_key = s.key;
    let mut orig = ct::opening(KIND_SNAT, reply_key, h);
    orig.rewrite = REWRITE_SRC;
    orig.src_addr = up.addr;
    orig.src_port = port;
    ct::insert_orig(&orig_key, &mut orig, &reply_key)?;
    apply(p, h, &orig)?;
    Ok(true)
}

/// Hairpin: a container reaching a published port on a host address. Both ends are
/// rewritten (to the target container, from its network's gateway) so the replies come back
/// through here; returns the new destination to hand the packet to.
#[inline(always)]
pub fn hairpin<const MODERN: bool, P: Packet>(
    p: &mut P,
    h: &mut Hdr,
) -> Result<Option<u32>, DropReason> {
    match tracked::<MODERN, P>(p, h)? {
        Some(e) if e.kind == KIND_HAIRPIN => return Ok(Some(h.daddr)),
        Some(_) => return Ok(None),
        None => {}
    }
    let Some((port, backend)) = maps::published(h.daddr, h.dport, h.proto) else {
        return Ok(None);
    };
    let Some(bnet) = maps::endpoint(backend.addr).and_then(|ep| maps::network(ep.network)) else {
        return Ok(None);
    };
    // As for masquerade: a new source port cannot revive a lost connection.
    if h.proto == proto::TCP && !h.is_syn() {
        return Err(DropReason::CtMiss);
    }
    // A:ap → H:hp becomes G:np → B:bp; replies B:bp → G:np become H:hp → A:ap.
    let orig_key = h.key();
    let reply_key = CtKey {
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
    let mut s = ct::probe4(reply_key, reply);
    let np = ct::alloc_port::<MODERN, _>(&mut s, cfg.nat_port_min, cfg.nat_port_max)?;
    let reply_key = s.key;
    let mut orig = ct::opening(KIND_HAIRPIN, reply_key, h);
    orig.rewrite = REWRITE_SRC | REWRITE_DST;
    orig.src_addr = bnet.gateway;
    orig.src_port = np;
    orig.dst_addr = backend.addr;
    orig.dst_port = backend.port;
    ct::insert_orig(&orig_key, &mut orig, &reply_key)?;
    maps::count_hit(&port);
    apply(p, h, &orig)?;
    Ok(Some(h.daddr))
}

/// A published port on a host address (whatever the sender).
#[inline(always)]
pub fn is_published(h: &Hdr) -> bool {
    h.natable() && maps::published(h.daddr, h.dport, h.proto).is_some()
}

/// An ICMP error about a flow that conntrack knows (the quoted packet is one of its halves).
#[inline(always)]
pub fn quoted_flow<P: Packet>(p: &P, h: &Hdr) -> bool {
    !h.frag && parse_inner(p, h).is_some_and(|inner| ct::find(&inner.key()).is_some())
}

/// An ICMP error about a tracked flow: the outer header and the quoted packet are translated
/// the way the flow's packets in this direction are, checksums included (the outer IP one,
/// the quoted IP and L4 ones, the ICMP one). `hairpin` picks the flows this hook translates:
/// hairpin flows in `from_container`, the others on the uplink. Returns whether the error
/// belongs to such a flow — only then may it reach a container.
#[inline(always)]
pub fn icmp_error<P: Packet>(p: &mut P, h: &mut Hdr, hairpin: bool) -> Result<bool, DropReason> {
    if h.icmp != Icmp::Error || h.frag {
        return Ok(false);
    }
    let Some(inner) = parse_inner(p, h) else {
        return Ok(false);
    };
    // An error goes back to the sender of the packet it quotes: anything else is forged.
    if h.daddr != inner.saddr {
        return Ok(false);
    }
    // The quoted packet went the other way: its reverse is a packet of this direction.
    let key = inner.key().reversed();
    let Some(f) = ct::lookup(&key, false) else {
        return Ok(false);
    };
    // SAFETY: map value pointer, valid for this program run.
    let e = unsafe { *f.e };
    if (e.kind == KIND_HAIRPIN) != hairpin {
        return Ok(false);
    }
    let fail = DropReason::RewriteFailed;
    if e.rewrite & REWRITE_DST != 0 {
        // To the flow's real source (the quoted packet's source, rewritten back).
        p.set_addr(h.l3 + IP_DADDR, h.daddr, e.dst_addr, h.l3 + IP_CSUM, None)
            .ok_or(fail)?;
        h.daddr = e.dst_addr;
        rewrite_quoted(p, h, &inner, true, e.dst_addr, e.dst_port).ok_or(fail)?;
    }
    if e.rewrite & REWRITE_SRC != 0 {
        // From the quoted packet's destination itself (not a router on the way): it speaks
        // with the address the flow shows.
        if h.saddr == inner.daddr {
            p.set_addr(h.l3 + IP_SADDR, h.saddr, e.src_addr, h.l3 + IP_CSUM, None)
                .ok_or(fail)?;
            h.saddr = e.src_addr;
        }
        rewrite_quoted(p, h, &inner, false, e.src_addr, e.src_port).ok_or(fail)?;
    }
    Ok(true)
}

/// Rewrites the quoted packet's source (`src`) or destination address and port. Every field
/// written inside the ICMP message moves the ICMP checksum; the quoted IP checksum follows
/// its address (the two cancel out in the ICMP sum); the quoted L4 checksum, when quoted,
/// follows its pseudo header and port (UDP's "no checksum" stays zero).
#[inline(always)]
fn rewrite_quoted<P: Packet>(
    p: &mut P,
    h: &Hdr,
    inner: &Inner,
    src: bool,
    addr: u32,
    port: u16,
) -> Option<()> {
    let icmp = h.l4_csum()?.off;
    let (addr_off, old_addr, port_off, old_port) = if src {
        (
            inner.l3 + IP_SADDR,
            inner.saddr,
            inner.sport_off(),
            inner.sport,
        )
    } else {
        (
            inner.l3 + IP_DADDR,
            inner.daddr,
            inner.dport_off(),
            inner.dport,
        )
    };
    if let Some(c) = inner.csum {
        let old: u16 = p.load(c.off)?;
        if !(c.udp && old == 0) {
            if c.pseudo {
                p.csum32(c.off, old_addr, addr)?;
            }
            p.csum16(c.off, old_port, port)?;
            let mut new: u16 = p.load(c.off)?;
            if c.udp && new == 0 {
                new = 0xffff;
                p.store16(c.off, new)?;
            }
            p.csum16(icmp, old, new)?;
        }
    }
    if port != old_port {
        p.store16(port_off, port)?;
        p.csum16(icmp, old_port, port)?;
    }
    p.csum32(inner.l3 + IP_CSUM, old_addr, addr)?;
    p.store32(addr_off, addr)
}

/// A reply of a published-port flow (its tuple is the reply key of a DNAT entry pair): the
/// container answering a client outside.
#[inline(always)]
pub fn is_published_reply(h: &Hdr) -> bool {
    if !h.natable() {
        return false;
    }
    ct::find(&h.key()).is_some_and(|f| {
        // SAFETY: map value pointer, valid for this program run.
        let e = unsafe { &*f.e };
        e.kind == KIND_DNAT && e.flags & CT_REPLY != 0
    })
}
