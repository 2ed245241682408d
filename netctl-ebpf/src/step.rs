//! Steps that are BPF functions of their own (`#[inline(never)]`): each has its own stack
//! frame, gone when it returns, so steps that run one after the other do not add up on the
//! 512-byte BPF stack (IPv6's headers and flow entries are large). A step returns one
//! scalar, made by [`run`] from an answer written to memory and a `Result<(), DropReason>`
//! (one fully defined word): a `Result` with a payload, passed in registers, may carry bits
//! the compiler left undefined, and the verifier refuses to compute with those.

use netctl_common::drop::DropReason;

/// Runs a step's body, which writes its answer (never negative; 0 unless it says
/// otherwise) to the `i64` it is given: the answer, or a drop as `-1 - reason`.
#[inline(always)]
pub fn run(body: impl FnOnce(&mut i64) -> Result<(), DropReason>) -> i64 {
    let mut answer = 0;
    match body(&mut answer) {
        Ok(()) => answer,
        Err(reason) => -1 - reason as i64,
    }
}

/// A step body's answer: written, and done.
#[inline(always)]
pub fn done(answer: &mut i64, v: impl Into<i64>) -> Result<(), DropReason> {
    *answer = v.into();
    Ok(())
}

/// A step with nothing to hand back.
#[inline(always)]
pub fn unit(r: Result<(), DropReason>) -> i64 {
    run(|_| r)
}

/// What [`ingress`](crate::nat6::ingress) answers for a packet it leaves alone.
pub const PASS: i64 = i64::MAX;

/// What [`run`] made, back.
#[inline(always)]
pub fn back(v: i64) -> Result<i64, DropReason> {
    if v >= 0 {
        return Ok(v);
    }
    let i = (-1 - v) as u32;
    Err(if i < DropReason::COUNT {
        // SAFETY: DropReason is a repr(u32) enum whose values are 0..COUNT (`run` made `i`
        // from one). Not a table lookup: the verifier could not bound its index.
        unsafe { core::mem::transmute::<u32, DropReason>(i) }
    } else {
        DropReason::Malformed
    })
}

/// A step's yes or no.
#[inline(always)]
pub fn yes(v: i64) -> Result<bool, DropReason> {
    back(v).map(|v| v != 0)
}

/// A step's redirect code (`bpf_redirect`'s, never negative).
#[inline(always)]
pub fn code(v: i64) -> Result<i32, DropReason> {
    back(v).map(|v| v as i32)
}
