//! Connection tracking: two LRU tables (`CT_NEW` for flows not confirmed yet, `CT` for the
//! rest, so a flood of new flows never evicts an established one), lookups that expire idle
//! flows, TCP state shared by both halves of a flow, lost halves rebuilt from the survivor,
//! pair insertion that never overwrites another flow, and source-port allocation over the
//! whole range.

use core::ffi::c_void;
#[cfg(not(target_arch = "bpf"))]
use core::sync::atomic::{AtomicU64, Ordering};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
};
use netctl_common::{
    ct::*,
    drop::DropReason,
    event::{END_CLOSED, END_EXPIRED, EV_FLOW_END, EV_FLOW_NEW},
    proto,
    stats::Hook,
};

use crate::{
    clock::now,
    events,
    maps::{config, CT, CT_FILL, CT_NEW, CT_OWNED},
    parse::{Hdr, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// An entry found in one of the two tables.
#[derive(Clone, Copy)]
pub struct Flow {
    pub e: *mut CtEntry,
    /// In `CT_NEW` (not confirmed yet).
    pub new: bool,
}

#[inline(always)]
fn get(new: bool, key: &CtKey) -> Option<*mut CtEntry> {
    if new {
        CT_NEW.get_ptr_mut(key)
    } else {
        CT.get_ptr_mut(key)
    }
}

#[inline(always)]
fn store(new: bool, key: &CtKey, e: &CtEntry) -> bool {
    if new {
        return CT_NEW.insert(key, e, BPF_NOEXIST as u64).is_ok();
    }
    let ok = CT.insert(key, e, BPF_NOEXIST as u64).is_ok();
    if ok {
        count(owner(key, e), 1);
    }
    ok
}

/// Deletes the entry `e` stored for `key`.
#[inline(always)]
fn remove(new: bool, key: &CtKey, e: &CtEntry) {
    if new {
        let _ = CT_NEW.remove(key);
        return;
    }
    // Read before the delete: the element may be reused once it is gone.
    let o = owner(key, e);
    if CT.remove(key).is_ok() {
        // Only the CPU whose delete succeeded counts it.
        count(o, u64::MAX);
    }
}

/// Adds `delta` (u64::MAX: -1) to the entries `CT` holds for `owner` and in all.
#[inline(always)]
fn count(owner: u32, delta: u64) {
    if let Some(c) = CT_OWNED.get_ptr_mut(owner) {
        add(c, delta);
    }
    if let Some(c) = CT_FILL.get_ptr_mut(0) {
        add(c, delta);
    }
}

/// An atomic add whose result is not used: BPF's oldest atomic (XADD), which every kernel
/// netctl supports accepts.
#[inline(always)]
fn add(c: *mut u64, delta: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: map value pointer, valid for this program run; an aligned u64.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            c, delta,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above.
    unsafe {
        AtomicU64::from_ptr(c).fetch_add(delta, Ordering::Relaxed);
    }
}

/// Whether a flow of `owner` may be confirmed: the table is under its fill watermark and the
/// owner under its quota. The counts are read without a lock: two CPUs may both pass at the
/// limit, by a flow each.
#[inline(always)]
fn admit(owner: u32) -> Result<(), DropReason> {
    let cfg = config();
    if cfg.ct_fill_max != 0 {
        let fill = CT_FILL.get(0).copied().unwrap_or(0);
        if fill >= u64::from(cfg.ct_fill_max) {
            return Err(DropReason::CtFull);
        }
    }
    if cfg.ct_owner_max != 0 {
        if CT_OWNED.get_ptr(owner).is_none() {
            let _ = CT_OWNED.insert(owner, 0, BPF_NOEXIST as u64);
        }
        // SAFETY: map value pointer, valid for this program run.
        let owned = CT_OWNED.get_ptr(owner).map_or(0, |c| unsafe { *c });
        if owned >= u64::from(cfg.ct_owner_max) {
            return Err(DropReason::CtQuota);
        }
    }
    Ok(())
}

/// The entry for `key`, confirmed flows first. No expiry check.
#[inline(always)]
pub fn find(key: &CtKey) -> Option<Flow> {
    if let Some(e) = CT.get_ptr_mut(key) {
        return Some(Flow { e, new: false });
    }
    CT_NEW.get_ptr_mut(key).map(|e| Flow { e, new: true })
}

/// The flags word, read once (other CPUs OR bits into it; an aligned 64-bit load is never
/// torn).
#[inline(always)]
fn flags(e: *mut CtEntry) -> u64 {
    // SAFETY: map value pointer, valid for this program run.
    unsafe { core::ptr::read_volatile(&raw const (*e).flags) }
}

/// ORs `bits` into an entry's flags (BPF's atomic OR: both halves of a flow are written by
/// packets of either direction, on any CPU); returns the flags before. Without `MODERN` (a
/// kernel before 5.12, whose verifier refuses an atomic OR even in dead code) a plain
/// read-modify-write: a bit set by another CPU at the same instant may be lost, and that
/// direction's next packet sets it again.
#[inline(always)]
fn set_flags<const MODERN: bool>(e: *mut CtEntry, bits: u64) -> u64 {
    // The bpf target exposes no atomic read-modify-write types; the intrinsic compiles to
    // BPF_ATOMIC | BPF_OR | BPF_FETCH.
    #[cfg(target_arch = "bpf")]
    // SAFETY: map value pointer, valid for this program run; an aligned u64.
    unsafe {
        if !MODERN {
            let old = flags(e);
            core::ptr::write_volatile(&raw mut (*e).flags, old | bits);
            return old;
        }
        core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            &raw mut (*e).flags,
            bits,
        )
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above.
    unsafe {
        AtomicU64::from_ptr(&raw mut (*e).flags).fetch_or(bits, Ordering::Relaxed)
    }
}

#[inline(always)]
fn expired(key: &CtKey, e: &CtEntry, t: u64) -> bool {
    // saturating: another CPU may have stamped the entry after `t` was read.
    t.saturating_sub(e.last_seen) > timeout(key.proto, e.flags)
}

/// Removes a flow: the entry for `key`, and its peer if the peer is still this flow's other
/// half (a tuple another flow owns now is never touched).
#[inline(always)]
fn remove_pair(new: bool, key: &CtKey, e: &CtEntry) {
    if let Some(p) = get(new, &e.peer) {
        // SAFETY: map value pointer, valid for this program run.
        let p = unsafe { &*p };
        if p.peer == *key {
            remove(new, &e.peer, p);
        }
    }
    remove(new, key, e);
}

/// The live entry for a packet with tuple `key`. An expired flow is removed, and so is a
/// closed one when `syn` (a new connection) reuses its tuple.
#[inline(always)]
pub fn lookup(key: &CtKey, syn: bool) -> Option<Flow> {
    let f = find(key)?;
    // SAFETY: map value pointer, valid for this program run.
    let e = unsafe { &*f.e };
    let fl = flags(f.e);
    let restart = syn && fl & CT_REPLY == 0 && is_closed(fl);
    let gone = expired(key, e, now());
    if !restart && !gone {
        return Some(f);
    }
    if gone {
        flow_event(EV_FLOW_END, key, e, END_EXPIRED);
    }
    remove_pair(f.new, key, e);
    None
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

/// Records a packet of flow `f` (the entry for `key`): time and TCP state on both halves;
/// the other half is looked up with every packet (so both age alike in the LRU) and rebuilt
/// when it was lost; a flow is confirmed (moved to `CT`) when due. Returns a copy of the
/// entry to translate with, or None when this half is stale — its peer's tuple belongs to
/// another flow now — and has been removed. A flow the table has no room for stays
/// unconfirmed and its confirming packet is dropped ([`admit`]).
#[inline(always)]
pub fn track<const MODERN: bool>(
    f: Flow,
    key: &CtKey,
    h: &Hdr,
) -> Result<Option<CtEntry>, DropReason> {
    let t = now();
    // SAFETY: map value pointers, valid for this program run.
    let e = unsafe { &mut *f.e };
    e.last_seen = t;
    let peer_key = e.peer;
    let p = match get(f.new, &peer_key) {
        Some(p) if unsafe { (*p).peer } == *key => p,
        Some(_) => {
            remove(f.new, key, e);
            return Ok(None);
        }
        None => {
            let rebuilt = e.inverse(key, t);
            store(f.new, &peer_key, &rebuilt);
            match get(f.new, &peer_key) {
                Some(p) if unsafe { (*p).peer } == *key => p,
                _ => return Ok(Some(*e)),
            }
        }
    };
    let peer = unsafe { &mut *p };
    peer.last_seen = t;

    let fl = flags(f.e);
    let reply = fl & CT_REPLY != 0;
    let mut shared = 0;
    let mut own = 0;
    if reply {
        shared |= CT_SEEN_REPLY;
    }
    // A later fragment has no TCP header: nothing to learn about the sequence numbers.
    if h.proto == proto::TCP && !h.l4_absent {
        if h.tcp_flags & TCP_RST != 0 {
            if rst_in_window(e, fl, peer, flags(p), h) {
                shared |= CT_RST;
            }
        } else {
            if fl & CT_SEQ == 0 || (h.seq_end.wrapping_sub(e.seq_end) as i32) > 0 {
                e.seq_end = h.seq_end;
                own |= CT_SEQ;
            }
            if h.tcp_flags & TCP_ACK != 0 {
                e.ack = h.ack;
                own |= CT_ACK;
            }
        }
        if h.tcp_flags & TCP_FIN != 0 {
            shared |= if reply { CT_FIN_REPLY } else { CT_FIN_ORIG };
        }
    }
    if (shared | own) & !fl != 0 {
        let before = set_flags::<MODERN>(f.e, shared | own);
        if shared & !fl != 0 {
            set_flags::<MODERN>(p, shared);
            if !is_closed(before) && is_closed(before | shared) {
                flow_event(EV_FLOW_END, key, e, END_CLOSED);
            }
        }
    }
    // Confirmed: an original-direction packet after a reply — for TCP the client's ACK of
    // the SYN-ACK, not the SYN-ACK itself, so spoofed SYNs never get this far.
    let seen_reply = (fl | shared) & CT_SEEN_REPLY != 0;
    let tcp_ok = h.proto != proto::TCP || h.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK;
    if f.new && !reply && seen_reply && tcp_ok {
        admit(owner(key, e))?;
        promote(key, e, &peer_key, peer);
    }
    Ok(Some(*e))
}

/// Moves both entries of a flow from `CT_NEW` to `CT`.
#[inline(always)]
fn promote(key: &CtKey, e: &CtEntry, peer_key: &CtKey, peer: &CtEntry) {
    let mut a = *e;
    let mut b = *peer;
    a.flags |= CT_CONFIRMED;
    b.flags |= CT_CONFIRMED;
    // Reply first, so a lookup of the original in CT always finds its peer there.
    store(false, peer_key, &b);
    store(false, key, &a);
    remove(true, key, e);
    remove(true, peer_key, peer);
}

/// A RST counts — closes the flow and frees its tuple — only inside the window: its
/// sequence number is this side's next one, or lies between what the other side last
/// acknowledged and what this side has sent; or it acknowledges exactly what the other side
/// sent (a refused SYN). Others are passed on for the endpoint to judge, without closing.
#[inline(always)]
fn rst_in_window(e: &CtEntry, fl: u64, peer: &CtEntry, pfl: u64, h: &Hdr) -> bool {
    if fl & CT_SEQ != 0 {
        if h.seq == e.seq_end {
            return true;
        }
        if pfl & CT_ACK != 0 && h.seq.wrapping_sub(peer.ack) <= e.seq_end.wrapping_sub(peer.ack) {
            return true;
        }
    }
    h.tcp_flags & TCP_ACK != 0 && pfl & CT_SEQ != 0 && h.ack == peer.seq_end
}

/// Stores both entries of a new flow (in `CT_NEW`). The reply tuple must be free; when it is
/// held by this very flow's reply half — left by an evicted original, or stored a moment ago
/// by another CPU for the same first packet — the flow is completed from it instead. Returns
/// the original entry to translate with.
#[inline(always)]
pub fn insert_pair(
    orig_key: &CtKey,
    orig: &CtEntry,
    reply_key: &CtKey,
    reply: &CtEntry,
) -> Result<CtEntry, DropReason> {
    if let Some(f) = find(reply_key) {
        // SAFETY: map value pointer, valid for this program run.
        let r = unsafe { &*f.e };
        if r.peer == *orig_key {
            return adopt(f, reply_key);
        }
        if !expired(reply_key, r, now()) {
            return Err(DropReason::CtConflict);
        }
        remove_pair(f.new, reply_key, r);
    }
    if !store(true, reply_key, reply) {
        return match find(reply_key) {
            Some(f) if unsafe { (*f.e).peer } == *orig_key => adopt(f, reply_key),
            _ => Err(DropReason::CtConflict),
        };
    }
    insert_orig(orig_key, orig, reply_key)
}

/// A flow whose original half was lost, found by the reply tuple it must have: completed.
#[inline(always)]
pub fn adopt_orphan(orig_key: &CtKey, reply_key: &CtKey) -> Option<CtEntry> {
    let f = find(reply_key)?;
    // SAFETY: map value pointer, valid for this program run.
    if unsafe { (*f.e).peer } != *orig_key || flags(f.e) & CT_REPLY == 0 {
        return None;
    }
    adopt(f, reply_key).ok()
}

/// Stores the original half rebuilt from the reply half `f` (unless another CPU just did)
/// and returns it.
#[inline(always)]
fn adopt(f: Flow, reply_key: &CtKey) -> Result<CtEntry, DropReason> {
    // SAFETY: map value pointer, valid for this program run.
    let r = unsafe { &*f.e };
    let orig_key = r.peer;
    store(f.new, &orig_key, &r.inverse(reply_key, now()));
    match get(f.new, &orig_key) {
        Some(o) if unsafe { (*o).peer } == *reply_key => Ok(unsafe { *o }),
        _ => Err(DropReason::CtConflict),
    }
}

/// Stores the original-direction entry after the reply's ([`alloc_port`], [`insert_pair`]).
/// When another CPU stored this flow's original first (with a reply of its own), that flow
/// wins and ours is undone. Returns the original entry to translate with.
#[inline(always)]
pub fn insert_orig(
    orig_key: &CtKey,
    orig: &CtEntry,
    reply_key: &CtKey,
) -> Result<CtEntry, DropReason> {
    if store(true, orig_key, orig) {
        flow_event(EV_FLOW_NEW, orig_key, orig, 0);
        return Ok(*orig);
    }
    let won = find(orig_key).map(|f| unsafe { *f.e });
    if won.is_none_or(|o| o.peer != *reply_key) {
        let _ = CT_NEW.remove(reply_key);
    }
    won.ok_or(DropReason::CtFull)
}

/// State of a port search, shared with the [`probe`] callback.
#[repr(C)]
struct Probe {
    key: CtKey,
    reply: CtEntry,
    now: u64,
    start: u32,
    span: u32,
    min: u32,
    /// The port taken (network order), 0 while none.
    port: u16,
}

/// One candidate of [`alloc_port`]: free, or held by a flow idle past its timeout (a closed
/// flow keeps its tuple for the TIME_WAIT-like closing timeout) → taken, the old flow's
/// both halves removed first. Returns 1 (stop) once a port is taken.
extern "C" fn probe(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer alloc_port gave it.
    let s = unsafe { &mut *(ctx as *mut Probe) };
    if s.span == 0 {
        return 1;
    }
    let port = (s.min + (s.start.wrapping_add(i) % s.span)) as u16;
    let be = port.to_be();
    s.key.dport = be;
    if s.key.proto == proto::ICMP {
        s.key.sport = be;
    }
    if let Some(f) = find(&s.key) {
        // SAFETY: map value pointer, valid for this program run.
        let e = unsafe { &*f.e };
        if !expired(&s.key, e, s.now) {
            return 0;
        }
        remove_pair(f.new, &s.key, e);
    }
    if store(true, &s.key, &s.reply) {
        s.port = be;
        return 1;
    }
    0
}

/// Ports tried from the random start where `bpf_loop` is missing (`MODERN` false): the verifier
/// of those kernels walks every iteration, so the search is short; a range this full for one
/// destination is exhaustion in practice.
const BOUNDED_PROBES: u32 = 32;

/// Picks a source port for a new SNAT flow: the reply tuple `reply_key` with its destination
/// port (the port to allocate) free. Starts at a random port (source-port entropy, as DNS
/// clients rely on) and, with `bpf_loop` (`MODERN`), tries every port of `min..=max` before
/// giving up, so exhaustion means the range is full for this destination. Inserts the reply entry (so two CPUs cannot take
/// the same port) and returns the port in network byte order.
#[inline(always)]
pub fn alloc_port<const MODERN: bool>(
    reply_key: &mut CtKey,
    reply: &CtEntry,
    min: u16,
    max: u16,
) -> Result<u16, DropReason> {
    let span = u32::from(max.saturating_sub(min)) + 1;
    // SAFETY: no preconditions.
    let rnd = unsafe { bpf_get_prandom_u32() };
    let mut s = Probe {
        key: *reply_key,
        reply: *reply,
        now: now(),
        start: rnd % span,
        span,
        min: u32::from(min),
        port: 0,
    };
    if MODERN {
        // SAFETY: helper call; `probe` only uses `s` for the duration of the call.
        unsafe {
            bpf_loop(
                span,
                probe as *mut c_void,
                &mut s as *mut Probe as *mut c_void,
                0,
            )
        };
    } else {
        let mut i = 0;
        while i < BOUNDED_PROBES && probe(i, &mut s as *mut Probe as *mut c_void) == 0 {
            i += 1;
        }
    }
    if s.port == 0 {
        return Err(DropReason::NatPortsExhausted);
    }
    *reply_key = s.key;
    Ok(s.port)
}

/// An entry that rewrites nothing yet.
#[inline(always)]
pub fn entry(kind: u8, flags: u64, peer: CtKey) -> CtEntry {
    CtEntry {
        last_seen: now(),
        peer,
        flags,
        kind,
        ..CtEntry::default()
    }
}

/// The original entry of a flow `h` opens: records the first packet's TCP sequence state (a
/// RST refusing the SYN must acknowledge exactly it).
#[inline(always)]
pub fn opening(kind: u8, peer: CtKey, h: &Hdr) -> CtEntry {
    let mut e = entry(kind, 0, peer);
    if h.proto == proto::TCP && !h.l4_absent {
        e.seq_end = h.seq_end;
        e.flags |= CT_SEQ;
        if h.tcp_flags & TCP_ACK != 0 {
            e.ack = h.ack;
            e.flags |= CT_ACK;
        }
    }
    e
}
