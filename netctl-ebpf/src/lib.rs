//! Empty on purpose: the programs are the `netctl` binary target of this crate, built for
//! bpfel-unknown-none by netctl's build script. This library only lets netctl depend on the
//! crate so cargo rebuilds the object when it changes.
#![no_std]
