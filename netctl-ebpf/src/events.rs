//! Trace events into the `EVENTS` ring buffer. Every emitter first checks the `TRACE` flags:
//! with nobody tracing that check is all they cost.

use netctl_common::{
    ct::{CtKey, CtKey6},
    event::*,
    stats::Hook,
};

use crate::{
    clock::now,
    maps::{EVENTS, EVENTS_LOST, TRACE},
    packet::Packet,
};

#[inline(always)]
pub fn enabled(flag: u32) -> bool {
    TRACE.get(0).is_some_and(|t| t.flags & flag != 0)
}

fn lost() {
    if let Some(n) = EVENTS_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot of this CPU.
        unsafe { *n += 1 };
    }
}

/// Reserves an event, stamps it, lets `fill` write the rest, submits.
#[inline(always)]
fn emit(kind: u8, hook: u8, fill: impl FnOnce(&mut Event)) {
    let Some(mut slot) = EVENTS.reserve::<Event>(0) else {
        lost();
        return;
    };
    // SAFETY: the reservation is sized for an Event; `fill` writes every field readers use
    // (`data` only up to `cap`).
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    ev.ts = now();
    ev.kind = kind;
    ev.hook = hook;
    ev.len = 0;
    ev.cap = 0;
    fill(ev);
    slot.submit(0);
}

/// A flow was created (`EV_FLOW_NEW`) or ended (`EV_FLOW_END`, with `END_*` in `how`).
#[inline(always)]
pub fn flow(kind: u8, hook: Hook, ct_kind: u8, how: u8, orig: &CtKey, reply: &CtKey) {
    if enabled(TRACE_FLOWS) {
        emit(kind, hook as u8, |ev| {
            ev.code = ct_kind;
            ev.flags = how;
            ev.ifindex = 0;
            ev.before = *orig;
            ev.after = *reply;
        });
    }
}

/// The same for an IPv6 flow: its tuples go in `data` ([`FLOW_IPV6`]).
#[inline(always)]
pub fn flow6(kind: u8, hook: Hook, ct_kind: u8, how: u8, orig: &CtKey6, reply: &CtKey6) {
    if enabled(TRACE_FLOWS) {
        emit(kind, hook as u8, |ev| {
            ev.code = ct_kind;
            ev.flags = how | FLOW_IPV6;
            ev.ifindex = 0;
            ev.before = CtKey::default();
            ev.after = CtKey::default();
            let n = core::mem::size_of::<CtKey6>();
            // SAFETY: `data` has room for both (asserted in netctl-common); plain data,
            // copied straight into the reservation.
            unsafe {
                let to = ev.data.as_mut_ptr();
                core::ptr::copy_nonoverlapping(orig as *const CtKey6 as *const u8, to, n);
                core::ptr::copy_nonoverlapping(reply as *const CtKey6 as *const u8, to.add(n), n);
            }
        });
    }
}

/// A drop. Without a parsed tuple (IPv6, ARP) the first bytes of the frame go along, so the
/// tracer can tell who sent it.
#[inline(always)]
pub fn drop<P: Packet>(p: &P, hook: Hook, ifindex: u32, reason: u8, tuple: Option<&CtKey>) {
    if enabled(TRACE_DROPS) {
        let t = tuple.copied().unwrap_or_default();
        emit(EV_DROP, hook as u8, |ev| {
            ev.code = reason;
            ev.flags = tuple.is_some() as u8;
            ev.ifindex = ifindex;
            ev.before = t;
            ev.after = t;
            ev.len = p.len();
            if tuple.is_none() {
                ev.cap = p.snapshot(&mut ev.data);
            }
        });
    }
}

/// A traced packet with its verdict, tuples and first bytes (as it leaves the program).
#[inline(always)]
pub fn packet<P: Packet>(
    p: &P,
    hook: Hook,
    ifindex: u32,
    verdict: u8,
    before: Option<&CtKey>,
    after: Option<&CtKey>,
) {
    if !enabled(TRACE_PACKETS) {
        return;
    }
    let snap = TRACE.get(0).map(|t| t.snaplen).unwrap_or(0);
    emit(EV_PACKET, hook as u8, |ev| {
        ev.code = verdict;
        ev.flags = before.is_some() as u8;
        ev.ifindex = ifindex;
        ev.before = before.copied().unwrap_or_default();
        ev.after = after.copied().unwrap_or_default();
        ev.len = p.len();
        let copied = p.snapshot(&mut ev.data);
        ev.cap = if snap < copied { snap } else { copied };
    });
}

/// A packet of this instance's containers that the kernel itself dropped (`kfree_skb`), with
/// the kernel's reason. Sent whenever the program runs: it is attached only while a tracer
/// asks for drops.
#[inline(always)]
pub fn kernel_drop(reason: u8, ifindex: u32, tuple: &CtKey, len: u32) {
    emit(EV_KERNEL_DROP, HOOK_KERNEL, |ev| {
        ev.code = reason;
        ev.flags = 1;
        ev.ifindex = ifindex;
        ev.before = *tuple;
        ev.after = *tuple;
        ev.len = len;
    });
}
