//! Trace events into the `EVENTS` ring buffer. Every emitter first checks the `TRACE` flags:
//! with nobody tracing that check is all they cost.

use netctl_common::{ct::CtKey, event::*, stats::Hook};

use crate::{
    ct::now,
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

/// Reserves an event, fills the common part, lets `fill` add the rest, submits.
#[inline(always)]
fn emit(
    kind: u8,
    hook: Hook,
    code: u8,
    flags: u8,
    ifindex: u32,
    before: &CtKey,
    after: &CtKey,
    fill: impl FnOnce(&mut Event),
) {
    let Some(mut slot) = EVENTS.reserve::<Event>(0) else {
        lost();
        return;
    };
    // SAFETY: the reservation is sized for an Event; every field is written before submit
    // except `data` beyond `cap`, which readers ignore.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    ev.ts = now();
    ev.kind = kind;
    ev.hook = hook as u8;
    ev.code = code;
    ev.flags = flags;
    ev.ifindex = ifindex;
    ev.before = *before;
    ev.after = *after;
    ev.len = 0;
    ev.cap = 0;
    fill(ev);
    slot.submit(0);
}

/// A flow was created (`EV_FLOW_NEW`) or ended (`EV_FLOW_END`, with `END_*` in `how`).
#[inline(always)]
pub fn flow(kind: u8, hook: Hook, ct_kind: u8, how: u8, orig: &CtKey, reply: &CtKey) {
    if enabled(TRACE_FLOWS) {
        emit(kind, hook, ct_kind, how, 0, orig, reply, |_| {});
    }
}

#[inline(always)]
pub fn drop(hook: Hook, ifindex: u32, reason: u8, tuple: Option<&CtKey>, len: u32) {
    if enabled(TRACE_DROPS) {
        let zero = CtKey::default();
        let t = tuple.unwrap_or(&zero);
        emit(
            EV_DROP,
            hook,
            reason,
            tuple.is_some() as u8,
            ifindex,
            t,
            t,
            |ev| ev.len = len,
        );
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
    let zero = CtKey::default();
    let snap = TRACE.get(0).map(|t| t.snaplen).unwrap_or(0);
    emit(
        EV_PACKET,
        hook,
        verdict,
        before.is_some() as u8,
        ifindex,
        before.unwrap_or(&zero),
        after.unwrap_or(&zero),
        |ev| {
            ev.len = p.len();
            let copied = p.snapshot(&mut ev.data);
            ev.cap = if snap < copied { snap } else { copied };
        },
    );
}
