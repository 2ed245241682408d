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
    maps::{Array, HashMap, LruHashMap},
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
    maps::{config, CT, CT6, CT6_FILL, CT6_NEW, CT6_OWNED, CT_FILL, CT_NEW, CT_OWNED},
    parse::{Hdr, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    room::{Probe, SCRATCH6},
};

/// An address family's tables: the same tracking over IPv4's (`CT`, `CT_NEW`, …) or
/// IPv6's (`CT6`, …). Each family has its own fill watermark and per-container quota.
pub trait Family: Addr + 'static {
    /// The family's tables are `1/SHARE` of IPv4's: so are its watermark and quota.
    const SHARE: u32;
    fn table(new: bool) -> &'static LruHashMap<Tuple<Self>, Entry<Self>>;
    fn owned() -> &'static HashMap<Self, u64>;
    fn fill() -> &'static Array<u64>;
    /// Reports a flow to the tracer (IPv4's only: trace events carry IPv4 tuples).
    fn event(kind: u8, hook: Hook, ct_kind: u8, how: u8, orig: &Tuple<Self>, reply: &Tuple<Self>);
    /// What a port search hands `bpf_loop` (a stack pointer, or nothing), and how the
    /// callback finds its state from that.
    fn probe_ctx(s: &mut Probe<Self>) -> *mut c_void;
    fn probe_state(ctx: *mut c_void) -> Option<*mut Probe<Self>>;
}

const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// The IPv4-mapped address (::ffff:a.b.c.d) of an IPv4 address in network order.
#[inline(always)]
pub fn mapped(v4: u32) -> [u8; 16] {
    let b = v4.to_ne_bytes();
    let m = MAPPED;
    [
        m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11], b[0], b[1], b[2],
        b[3],
    ]
}

/// Takes back a reply entry [`alloc_port`] stored for a flow that is not made after all.
#[inline(always)]
pub fn release<A: Family>(key: &Tuple<A>) {
    let _ = A::table(true).remove(key);
}

/// Whether IPv4's tables hold the IPv4 form of a NAT64 reply tuple (IPv4-mapped addresses):
/// NAT64 and IPv4 masquerade share the uplink's address and NAT ports, and NAT64 never takes
/// a tuple masquerade has. (The other way is not checked — a look into `CT6` per candidate
/// made the IPv4 programs too large to verify on older kernels: a masquerade flow that draws
/// a NAT64 flow's tuple, to the same server port, takes its replies.)
#[inline(always)]
pub fn ipv4_tuple_held(key: &CtKey6) -> bool {
    let ipv4 = |a: &[u8; 16]| u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
    let k = CtKey {
        saddr: ipv4(&key.saddr),
        daddr: ipv4(&key.daddr),
        sport: key.sport,
        dport: key.dport,
        proto: key.proto,
        _pad: [0; 3],
    };
    find(&k).is_some()
}

impl Family for u32 {
    const SHARE: u32 = 1;
    #[inline(always)]
    fn table(new: bool) -> &'static LruHashMap<CtKey, CtEntry> {
        if new {
            &CT_NEW
        } else {
            &CT
        }
    }
    #[inline(always)]
    fn owned() -> &'static HashMap<u32, u64> {
        &CT_OWNED
    }
    #[inline(always)]
    fn fill() -> &'static Array<u64> {
        &CT_FILL
    }
    #[inline(always)]
    fn event(kind: u8, hook: Hook, ct_kind: u8, how: u8, orig: &CtKey, reply: &CtKey) {
        events::flow(kind, hook, ct_kind, how, orig, reply);
    }
    #[inline(always)]
    fn probe_ctx(s: &mut Probe<u32>) -> *mut c_void {
        s as *mut Probe<u32> as *mut c_void
    }
    #[inline(always)]
    fn probe_state(ctx: *mut c_void) -> Option<*mut Probe<u32>> {
        Some(ctx as *mut Probe<u32>)
    }
}

impl Family for [u8; 16] {
    const SHARE: u32 = netctl_common::maps::CT6_SHARE;
    #[inline(always)]
    fn table(new: bool) -> &'static LruHashMap<CtKey6, CtEntry6> {
        if new {
            &CT6_NEW
        } else {
            &CT6
        }
    }
    #[inline(always)]
    fn owned() -> &'static HashMap<[u8; 16], u64> {
        &CT6_OWNED
    }
    #[inline(always)]
    fn fill() -> &'static Array<u64> {
        &CT6_FILL
    }
    #[inline(always)]
    fn event(kind: u8, hook: Hook, ct_kind: u8, how: u8, orig: &CtKey6, reply: &CtKey6) {
        crate::events::flow6(kind, hook, ct_kind, how, orig, reply);
    }
    // The state is in `SCRATCH6` (too large for the stack); the callback looks it up.
    #[inline(always)]
    fn probe_ctx(_: &mut Probe<[u8; 16]>) -> *mut c_void {
        core::ptr::null_mut()
    }
    #[inline(always)]
    fn probe_state(_: *mut c_void) -> Option<*mut Probe<[u8; 16]>> {
        SCRATCH6
            .get_ptr_mut(0)
            .map(|s| unsafe { &raw mut (*s).probe })
    }
}

/// What tracking needs of a packet, whatever its family.
pub trait Segment {
    fn proto(&self) -> u8;
    /// A later fragment: no L4 header.
    fn l4_absent(&self) -> bool;
    fn tcp_flags(&self) -> u8;
    /// TCP: first sequence number, the one after the segment, the acknowledgment (host order).
    fn seq(&self) -> u32;
    fn seq_end(&self) -> u32;
    fn ack(&self) -> u32;
}

impl Segment for Hdr {
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn l4_absent(&self) -> bool {
        self.l4_absent
    }
    #[inline(always)]
    fn tcp_flags(&self) -> u8 {
        self.tcp_flags
    }
    #[inline(always)]
    fn seq(&self) -> u32 {
        self.seq
    }
    #[inline(always)]
    fn seq_end(&self) -> u32 {
        self.seq_end
    }
    #[inline(always)]
    fn ack(&self) -> u32 {
        self.ack
    }
}

/// An entry found in one of the two tables.
#[derive(Clone, Copy)]
pub struct Flow<A: Family = u32> {
    pub e: *mut Entry<A>,
    /// In `CT_NEW` (not confirmed yet).
    pub new: bool,
}

#[inline(always)]
fn get<A: Family>(new: bool, key: &Tuple<A>) -> Option<*mut Entry<A>> {
    A::table(new).get_ptr_mut(key)
}

#[inline(always)]
fn store<A: Family>(new: bool, key: &Tuple<A>, e: &Entry<A>) -> bool {
    let ok = A::table(new).insert(key, e, BPF_NOEXIST as u64).is_ok();
    if ok && !new {
        count_fill::<A>(1);
        if !is_closed(e.flags) {
            count_owner(owner(key, e), 1);
        }
    }
    ok
}

/// Deletes the entry `e` stored for `key`.
#[inline(always)]
fn remove<A: Family>(new: bool, key: &Tuple<A>, e: &Entry<A>) {
    if new {
        let _ = A::table(true).remove(key);
        return;
    }
    // Read before the delete: the element may be reused once it is gone.
    let o = owner(key, e);
    let closed = is_closed(e.flags);
    if A::table(false).remove(key).is_ok() {
        // Only the CPU whose delete succeeded counts it.
        count_fill::<A>(u64::MAX);
        if !closed {
            count_owner(o, u64::MAX);
        }
    }
}

/// Adds `delta` (u64::MAX: -1) to the entries `CT` holds for `owner` that count against its
/// quota: a closed flow's (TIME_WAIT) do not, so a busy server is limited by the
/// connections it holds open, not by those it closed in the last minute.
#[inline(always)]
fn count_owner<A: Family>(owner: A, delta: u64) {
    if let Some(c) = A::owned().get_ptr_mut(owner) {
        add(c, delta);
    }
}

/// Adds `delta` to the entries `CT` holds in all (closed flows' too: they take room).
#[inline(always)]
fn count_fill<A: Family>(delta: u64) {
    if let Some(c) = A::fill().get_ptr_mut(0) {
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
fn admit<A: Family>(owner: A) -> Result<(), DropReason> {
    let cfg = config();
    if cfg.ct_fill_max != 0 {
        let fill = A::fill().get(0).copied().unwrap_or(0);
        // Signed: a count driven below zero by a race (a flow closed on one CPU while
        // another removes it) admits until the daemon's sweep recounts.
        if fill as i64 >= i64::from(cfg.ct_fill_max / A::SHARE) {
            return Err(DropReason::CtFull);
        }
    }
    if cfg.ct_owner_max != 0 {
        let owned_map = A::owned();
        if owned_map.get_ptr(owner).is_none() {
            let _ = owned_map.insert(owner, 0, BPF_NOEXIST as u64);
        }
        // SAFETY: map value pointer, valid for this program run.
        let owned = owned_map.get_ptr(owner).map_or(0, |c| unsafe { *c });
        if owned as i64 >= i64::from(cfg.ct_owner_max / A::SHARE) {
            return Err(DropReason::CtQuota);
        }
    }
    Ok(())
}

/// The entry for `key`, confirmed flows first. No expiry check.
#[inline(always)]
pub fn find<A: Family>(key: &Tuple<A>) -> Option<Flow<A>> {
    if let Some(e) = get(false, key) {
        return Some(Flow { e, new: false });
    }
    get(true, key).map(|e| Flow { e, new: true })
}

/// The flags word, read once (other CPUs OR bits into it; an aligned 64-bit load is never
/// torn).
#[inline(always)]
fn flags<A>(e: *mut Entry<A>) -> u64 {
    // SAFETY: map value pointer, valid for this program run.
    unsafe { core::ptr::read_volatile(&raw const (*e).flags) }
}

/// ORs `bits` into an entry's flags (BPF's atomic OR: both halves of a flow are written by
/// packets of either direction, on any CPU); returns the flags before. Without `MODERN` (a
/// kernel before 5.12, whose verifier refuses an atomic OR even in dead code) a plain
/// read-modify-write: a bit set by another CPU at the same instant may be lost, and that
/// direction's next packet sets it again.
#[inline(always)]
fn set_flags<const MODERN: bool, A>(e: *mut Entry<A>, bits: u64) -> u64 {
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
fn expired<A>(key: &Tuple<A>, e: &Entry<A>, t: u64) -> bool {
    // saturating: another CPU may have stamped the entry after `t` was read.
    t.saturating_sub(e.last_seen) > timeout(key.proto, e.flags)
}

/// Removes a flow: the entry for `key`, and its peer if the peer is still this flow's other
/// half (a tuple another flow owns now is never touched).
#[inline(always)]
fn remove_pair<A: Family>(new: bool, key: &Tuple<A>, e: &Entry<A>) {
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
pub fn lookup<A: Family>(key: &Tuple<A>, syn: bool) -> Option<Flow<A>> {
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
fn flow_event<A: Family>(kind: u8, key: &Tuple<A>, e: &Entry<A>, how: u8) {
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
    A::event(kind, hook, e.kind, how, orig, reply);
}

/// Records a packet of flow `f` (the entry for `key`): time and TCP state on both halves;
/// the other half is looked up with every packet (so both age alike in the LRU) and rebuilt
/// when it was lost; a flow is confirmed (moved to `CT`) when due. Copies the entry to
/// translate with into `out` and returns true, or false when this half is stale — its
/// peer's tuple belongs to another flow now — and has been removed. (Entries go through
/// `out` parameters rather than return values: an IPv6 entry is too large for many copies
/// on the BPF stack, so its callers give room elsewhere.) A flow the table has no room for stays
/// unconfirmed and its confirming packet is dropped ([`admit`]).
#[inline(always)]
pub fn track<const MODERN: bool, A: Family>(
    f: Flow<A>,
    key: &Tuple<A>,
    h: &impl Segment,
    out: &mut Entry<A>,
) -> Result<bool, DropReason> {
    let t = now();
    // SAFETY: map value pointers, valid for this program run.
    let e = unsafe { &mut *f.e };
    e.last_seen = t;
    let peer_key = e.peer;
    let p = match get(f.new, &peer_key) {
        Some(p) if unsafe { (*p).peer } == *key => p,
        Some(_) => {
            remove(f.new, key, e);
            return Ok(false);
        }
        None => {
            // `out` is the scratch room for the rebuilt half until it gets its final copy.
            e.write_inverse(key, t, out);
            store(f.new, &peer_key, out);
            match get(f.new, &peer_key) {
                Some(p) if unsafe { (*p).peer } == *key => p,
                _ => {
                    *out = *e;
                    return Ok(true);
                }
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
    if h.proto() == proto::TCP && !h.l4_absent() {
        if h.tcp_flags() & TCP_RST != 0 {
            if rst_in_window(e, fl, peer, flags(p), h) {
                shared |= CT_RST;
            }
        } else {
            if fl & CT_SEQ == 0 || (h.seq_end().wrapping_sub(e.seq_end) as i32) > 0 {
                e.seq_end = h.seq_end();
                own |= CT_SEQ;
            }
            if h.tcp_flags() & TCP_ACK != 0 {
                e.ack = h.ack();
                own |= CT_ACK;
            }
        }
        if h.tcp_flags() & TCP_FIN != 0 {
            shared |= if reply { CT_FIN_REPLY } else { CT_FIN_ORIG };
        }
    }
    if (shared | own) & !fl != 0 {
        let before = set_flags::<MODERN, _>(f.e, shared | own);
        if shared & !fl != 0 {
            set_flags::<MODERN, _>(p, shared);
            if !is_closed(before) && is_closed(before | shared) {
                flow_event(EV_FLOW_END, key, e, END_CLOSED);
                // Both halves leave their owner's quota (`count_owner`).
                if !f.new {
                    count_owner(owner(key, e), 2u64.wrapping_neg());
                }
            }
        }
    }
    // Confirmed: an original-direction packet after a reply — for TCP the client's ACK of
    // the SYN-ACK, not the SYN-ACK itself, so spoofed SYNs never get this far.
    let seen_reply = (fl | shared) & CT_SEEN_REPLY != 0;
    let tcp_ok =
        h.proto() != proto::TCP || h.tcp_flags() & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK;
    if f.new && !reply && seen_reply && tcp_ok {
        admit(owner(key, e))?;
        promote::<MODERN, A>(key, f.e, &peer_key, p);
    }
    *out = *e;
    Ok(true)
}

/// Moves both entries of a flow from `CT_NEW` to `CT`: marked confirmed where they are, then
/// stored from there (no copies: an IPv6 entry is too large for many on the BPF stack).
#[inline(always)]
fn promote<const MODERN: bool, A: Family>(
    key: &Tuple<A>,
    e: *mut Entry<A>,
    peer_key: &Tuple<A>,
    peer: *mut Entry<A>,
) {
    set_flags::<MODERN, _>(e, CT_CONFIRMED);
    set_flags::<MODERN, _>(peer, CT_CONFIRMED);
    // SAFETY: map value pointers, valid for this program run.
    let (e, peer) = unsafe { (&*e, &*peer) };
    // Reply first, so a lookup of the original in CT always finds its peer there.
    store(false, peer_key, peer);
    store(false, key, e);
    remove(true, key, e);
    remove(true, peer_key, peer);
}

/// A RST counts — closes the flow and frees its tuple — only inside the window: its
/// sequence number is this side's next one, or lies between what the other side last
/// acknowledged and what this side has sent; or it acknowledges exactly what the other side
/// sent (a refused SYN). Others are passed on for the endpoint to judge, without closing.
#[inline(always)]
fn rst_in_window<A>(e: &Entry<A>, fl: u64, peer: &Entry<A>, pfl: u64, h: &impl Segment) -> bool {
    let seq = h.seq();
    if fl & CT_SEQ != 0 {
        if seq == e.seq_end {
            return true;
        }
        if pfl & CT_ACK != 0 && seq.wrapping_sub(peer.ack) <= e.seq_end.wrapping_sub(peer.ack) {
            return true;
        }
    }
    h.tcp_flags() & TCP_ACK != 0 && pfl & CT_SEQ != 0 && h.ack() == peer.seq_end
}

/// Stores both entries of a new flow (in `CT_NEW`). The reply tuple must be free; when it is
/// held by this very flow's reply half — left by an evicted original, or stored a moment ago
/// by another CPU for the same first packet — the flow is completed from it instead. Leaves
/// the original entry to translate with in `orig`.
#[inline(always)]
pub fn insert_pair<A: Family>(
    orig_key: &Tuple<A>,
    orig: &mut Entry<A>,
    reply_key: &Tuple<A>,
    reply: &Entry<A>,
) -> Result<(), DropReason> {
    if let Some(f) = find(reply_key) {
        // SAFETY: map value pointer, valid for this program run.
        let r = unsafe { &*f.e };
        if r.peer == *orig_key {
            return adopt(f, reply_key, orig);
        }
        if !expired(reply_key, r, now()) {
            return Err(DropReason::CtConflict);
        }
        remove_pair(f.new, reply_key, r);
    }
    if !store(true, reply_key, reply) {
        return match find(reply_key) {
            Some(f) if unsafe { (*f.e).peer } == *orig_key => adopt(f, reply_key, orig),
            _ => Err(DropReason::CtConflict),
        };
    }
    insert_orig(orig_key, orig, reply_key)
}

/// A flow whose original half was lost, found by the reply tuple it must have: completed,
/// its original entry in `out`.
#[inline(always)]
pub fn adopt_orphan<A: Family>(
    orig_key: &Tuple<A>,
    reply_key: &Tuple<A>,
    out: &mut Entry<A>,
) -> bool {
    let Some(f) = find(reply_key) else {
        return false;
    };
    // SAFETY: map value pointer, valid for this program run.
    if unsafe { (*f.e).peer } != *orig_key || flags(f.e) & CT_REPLY == 0 {
        return false;
    }
    adopt(f, reply_key, out).is_ok()
}

/// Stores the original half rebuilt from the reply half `f` (unless another CPU just did)
/// and leaves it in `out`.
#[inline(always)]
fn adopt<A: Family>(
    f: Flow<A>,
    reply_key: &Tuple<A>,
    out: &mut Entry<A>,
) -> Result<(), DropReason> {
    // SAFETY: map value pointer, valid for this program run.
    let r = unsafe { &*f.e };
    let orig_key = r.peer;
    r.write_inverse(reply_key, now(), out);
    store(f.new, &orig_key, out);
    match get(f.new, &orig_key) {
        Some(o) if unsafe { (*o).peer } == *reply_key => {
            *out = unsafe { *o };
            Ok(())
        }
        _ => Err(DropReason::CtConflict),
    }
}

/// Stores the original-direction entry after the reply's ([`alloc_port`], [`insert_pair`]).
/// When another CPU stored this flow's original first (with a reply of its own), that flow
/// wins and ours is undone; `orig` is left with the entry to translate with.
#[inline(always)]
pub fn insert_orig<A: Family>(
    orig_key: &Tuple<A>,
    orig: &mut Entry<A>,
    reply_key: &Tuple<A>,
) -> Result<(), DropReason> {
    if store(true, orig_key, orig) {
        flow_event(EV_FLOW_NEW, orig_key, orig, 0);
        return Ok(());
    }
    let won = find(orig_key);
    // SAFETY: map value pointer, valid for this program run.
    if won.is_none_or(|f| unsafe { (*f.e).peer } != *reply_key) {
        let _ = A::table(true).remove(reply_key);
    }
    let f = won.ok_or(DropReason::CtFull)?;
    *orig = unsafe { *f.e };
    Ok(())
}

/// Whether a new connection may take the tuple of the closed flow `e` (the reply half at
/// `key`) before its closing timeout, as Linux reopens a TIME_WAIT tuple: only a TCP flow
/// (new ones start with a SYN), only from the same source address — the server's TIME_WAIT
/// accepts the SYN by its newer timestamp, and a client keeps its timestamp offset per
/// address pair. Without this, one client's short connections to one server would stop
/// once the closed flows of the last minute held the whole port range.
#[inline(always)]
fn reopens<A: Family>(key: &Tuple<A>, e: &Entry<A>, new: &Entry<A>) -> bool {
    key.proto == proto::TCP && is_closed(e.flags) && e.peer.saddr == new.peer.saddr
}

/// One candidate of [`alloc_port`]: free, held by a flow idle past its timeout (a closed
/// flow keeps its tuple for the TIME_WAIT-like closing timeout), or one [`reopens`] →
/// taken, the old flow's both halves removed first. Returns 1 (stop) once a port is taken.
extern "C" fn probe<A: Family>(i: u32, ctx: *mut c_void) -> i64 {
    let Some(s) = A::probe_state(ctx) else {
        return 1;
    };
    // SAFETY: bpf_loop hands back what alloc_port gave it; see `probe_state`.
    let s = unsafe { &mut *s };
    if s.span == 0 {
        return 1;
    }
    let port = (s.min + (s.start.wrapping_add(i) % s.span)) as u16;
    let be = port.to_be();
    s.key.dport = be;
    if s.key.proto == proto::ICMP || s.key.proto == proto::ICMPV6 {
        s.key.sport = be;
    }
    if let Some(f) = find(&s.key) {
        // SAFETY: map value pointer, valid for this program run.
        let e = unsafe { &*f.e };
        if !expired(&s.key, e, s.now) && !reopens(&s.key, e, &s.reply) {
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

/// Picks a source port for a new SNAT flow: the reply tuple `s.key` (with `s.reply`, its
/// entry) with its destination port (the port to allocate) free. Starts at a random port (source-port entropy, as DNS
/// clients rely on) and, with `bpf_loop` (`MODERN`), tries every port of `min..=max` before
/// giving up, so exhaustion means the range is full for this destination. Inserts the reply
/// entry (so two CPUs cannot take the same port), leaves the tuple taken in `s.key` and
/// returns the port in network byte order.
#[inline(always)]
pub fn alloc_port<const MODERN: bool, A: Family>(
    s: &mut Probe<A>,
    min: u16,
    max: u16,
) -> Result<u16, DropReason> {
    let span = u32::from(max.saturating_sub(min)) + 1;
    // SAFETY: no preconditions.
    let rnd = unsafe { bpf_get_prandom_u32() };
    s.now = now();
    s.start = rnd % span;
    s.span = span;
    s.min = u32::from(min);
    s.port = 0;
    let ctx = A::probe_ctx(s);
    if MODERN {
        // SAFETY: helper call; `probe` only uses `s` for the duration of the call.
        unsafe { bpf_loop(span, probe::<A> as *mut c_void, ctx, 0) };
    } else {
        let mut i = 0;
        while i < BOUNDED_PROBES && probe::<A>(i, ctx) == 0 {
            i += 1;
        }
    }
    if s.port == 0 {
        return Err(DropReason::NatPortsExhausted);
    }
    Ok(s.port)
}

/// A port search's state for IPv4: on the caller's stack.
#[inline(always)]
pub fn probe4(key: CtKey, reply: CtEntry) -> Probe<u32> {
    Probe {
        key,
        reply,
        now: 0,
        start: 0,
        span: 0,
        min: 0,
        port: 0,
    }
}

/// An entry that rewrites nothing yet.
#[inline(always)]
pub fn entry<A: Family>(kind: u8, flags: u64, peer: Tuple<A>) -> Entry<A> {
    let mut e = Entry::default();
    init(&mut e, kind, flags, peer);
    e
}

/// [`entry`] written in place (IPv6's entries live in a per-CPU map, not on the stack).
#[inline(always)]
pub fn init<A: Family>(e: &mut Entry<A>, kind: u8, flags: u64, peer: Tuple<A>) {
    e.last_seen = now();
    e.flags = flags;
    e.peer = peer;
    e.src_addr = A::ZERO;
    e.dst_addr = A::ZERO;
    e.src_port = 0;
    e.dst_port = 0;
    e.seq_end = 0;
    e.ack = 0;
    e.rewrite = 0;
    e.kind = kind;
    e._pad = [0; 2];
}

/// The original entry of a flow `h` opens: records the first packet's TCP sequence state (a
/// RST refusing the SYN must acknowledge exactly it).
#[inline(always)]
pub fn opening<A: Family>(kind: u8, peer: Tuple<A>, h: &impl Segment) -> Entry<A> {
    let mut e = Entry::default();
    open(&mut e, kind, peer, h);
    e
}

/// [`opening`] written in place.
#[inline(always)]
pub fn open<A: Family>(e: &mut Entry<A>, kind: u8, peer: Tuple<A>, h: &impl Segment) {
    init(e, kind, 0, peer);
    if h.proto() == proto::TCP && !h.l4_absent() {
        e.seq_end = h.seq_end();
        e.flags |= CT_SEQ;
        if h.tcp_flags() & TCP_ACK != 0 {
            e.ack = h.ack();
            e.flags |= CT_ACK;
        }
    }
}
