//! The kernel's own drops of this instance's container packets: a BTF tracepoint on
//! `kfree_skb` (skb, location, reason). It reads the IPv4 header through the `sk_buff`
//! offsets `netctl trace` found in the running kernel's BTF (`KDROP_CONFIG`), keeps packets
//! from or to a container address, and reports them with the kernel's drop reason. It is
//! attached only while a tracer asks for drops: no cost otherwise.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, macros::map, maps::Array,
    programs::BtfTracePointContext,
};
use netctl_common::{ct::CtKey, event::KernelDropConfig, proto};

use crate::{events, maps};

#[map(name = "KDROP_CONFIG")]
pub static KDROP_CONFIG: Array<KernelDropConfig> = Array::with_max_entries(1, 0);

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address (it fails instead of faulting).
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T).ok() }
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kernel_drop(ctx: BtfTracePointContext) -> i32 {
    let _ = try_kernel_drop(&ctx);
    0
}

#[inline(always)]
fn try_kernel_drop(ctx: &BtfTracePointContext) -> Option<()> {
    let cfg = KDROP_CONFIG.get(0)?;
    if cfg.ready == 0 {
        return None;
    }
    let skb: *const u8 = ctx.arg(0);
    let reason: u32 = ctx.arg(2);
    let head: *const u8 = read(skb, cfg.head)?;
    let nh: u16 = read(skb, cfg.network_header)?;
    let ip: *const u8 = unsafe { head.add(nh as usize) };
    let vihl: u8 = read(ip, 0)?;
    if vihl >> 4 != 4 {
        return None;
    }
    let saddr: u32 = read(ip, 12)?;
    let daddr: u32 = read(ip, 16)?;
    if maps::endpoint(saddr).is_none() && maps::endpoint(daddr).is_none() {
        return None;
    }
    let protocol: u8 = read(ip, 9)?;
    let frags: u16 = read(ip, 6)?;
    let mut key = CtKey {
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        proto: protocol,
        _pad: [0; 3],
    };
    // Ports of a TCP or UDP packet that is no later fragment.
    if (protocol == proto::TCP || protocol == proto::UDP) && u16::from_be(frags) & 0x1fff == 0 {
        let l4 = u32::from(vihl & 0x0f) * 4;
        let ports: [u16; 2] = read(ip, l4)?;
        key.sport = ports[0];
        key.dport = ports[1];
    }
    let dev: *const u8 = read(skb, cfg.dev).unwrap_or(core::ptr::null());
    let ifindex = if dev.is_null() {
        0
    } else {
        read::<u32>(dev, cfg.dev_ifindex).unwrap_or(0)
    };
    let len: u32 = read(skb, cfg.len).unwrap_or(0);
    events::kernel_drop(reason.min(255) as u8, ifindex, &key, len);
    Some(())
}
