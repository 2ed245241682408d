//! netctl's packet path. Each entry program is parse → decide → act, and every verdict leaves
//! through one place that counts it.
//!
//! Attach points:
//! - `uplink_xdp`: XDP on each uplink, the first look at traffic from outside.
//! - `uplink_ingress` / `uplink_egress`: TC (TCX) on each uplink.
//! - `from_container`: TC ingress on each container's host-side veth.
// Built for bpfel-unknown-none by netctl's build script. On the host (clippy, `cargo test
// --workspace`) it is an ordinary binary that does nothing, so workspace-wide tools work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod maps;
mod stats;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netctl_common::stats::Hook;

#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    stats::count(Hook::UplinkXdp, len);
    xdp_action::XDP_PASS
}

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    stats::count(Hook::UplinkIngress, ctx.len() as u64);
    TC_ACT_OK
}

#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    stats::count(Hook::UplinkEgress, ctx.len() as u64);
    TC_ACT_OK
}

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    stats::count(Hook::FromContainer, ctx.len() as u64);
    TC_ACT_OK
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("netctl-ebpf holds netctl's kernel programs; netctl embeds them. Run netctl.");
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
