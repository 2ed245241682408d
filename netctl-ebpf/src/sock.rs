//! Socket programs at the cgroup v2 root: host-local clients reach published ports, and
//! containers reach the embedded DNS at 127.0.0.11, by rewriting the destination when the
//! socket connects or sends — no proxy, no listener, no NAT rule — and the source back when
//! it receives or asks for its peer, so the application sees what it dialled.
//!
//! They run for every socket of the machine: the first thing each does is look its network
//! namespace cookie up in `SOCK_NETNS`; any namespace that is not this instance's host
//! namespace or one of its containers passes untouched. They never refuse a socket call.
//!
//! What a socket dialled is kept on the socket itself (`SOCK_REV`, socket storage); the
//! `_compat` twins, for kernels whose socket-address programs lack socket storage, keep it
//! in a shared LRU table keyed by socket cookie (`SOCK_REVNAT`).

use aya_ebpf::{
    bindings::{bpf_sock_addr, BPF_ANY},
    btf_maps::SkStorage,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{btf_map, cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
    EbpfContext,
};
use netctl_common::{
    maps::{Backend, PortKey},
    proto,
    sock::*,
};

use crate::maps::{is_host_addr, PORTMAP, PORT_STATS};

#[map(name = "SOCK_NETNS")]
static SOCK_NETNS: HashMap<u64, SockNetns> = HashMap::with_max_entries(SOCK_NETNS_MAX, 0);

#[btf_map(name = "SOCK_REV")]
static SOCK_REV: SkStorage<RevSlots> = SkStorage::new();

#[btf_map(name = "SOCK_REV6")]
static SOCK_REV6: SkStorage<Rev6Slots> = SkStorage::new();

#[map(name = "SOCK_REVNAT")]
static SOCK_REVNAT: LruHashMap<RevKey, RevValue> = LruHashMap::with_max_entries(SOCK_REVNAT_MAX, 0);

/// Verdict of every socket program: let the call go on.
const ALLOW: i32 = 1;
/// Socket types (linux/net.h).
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    translate::<true>(&ctx, true);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate::<true>(&ctx, false);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore::<true>(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    restore::<true>(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4_compat(ctx: SockAddrContext) -> i32 {
    translate::<false>(&ctx, true);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4_compat(ctx: SockAddrContext) -> i32 {
    translate::<false>(&ctx, false);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4_compat(ctx: SockAddrContext) -> i32 {
    restore::<false>(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4_compat(ctx: SockAddrContext) -> i32 {
    restore::<false>(&ctx);
    ALLOW
}

// IPv6 sockets of the host: [::1]:PORT, [::]:PORT, a host IPv6 address or an IPv4-mapped
// address, connected to a published port, go to its backend as an IPv4-mapped address (the
// kernel then connects over IPv4, as an IPv6 socket does for any mapped address). Not for
// unconnected UDP: the kernel refuses a send that a program turned into a mapped address.
// Only where socket storage exists (no `_compat` twins).

#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    translate6(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore6(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn sock_getpeername6(ctx: SockAddrContext) -> i32 {
    restore6(&ctx);
    ALLOW
}

/// `::ffff:0:0/96` in the first three words (network order).
const MAPPED: [u32; 3] = [0, 0, 0xffff_u32.to_be()];

// The verifier takes context fields only at constant offsets from the context itself: each
// word on its own, volatile so that no copy through a computed pointer is made of them.
#[inline(always)]
fn user_ip6(sa: &bpf_sock_addr) -> [u32; 4] {
    // SAFETY: fields of the live context.
    unsafe {
        [
            core::ptr::read_volatile(&sa.user_ip6[0]),
            core::ptr::read_volatile(&sa.user_ip6[1]),
            core::ptr::read_volatile(&sa.user_ip6[2]),
            core::ptr::read_volatile(&sa.user_ip6[3]),
        ]
    }
}

#[inline(always)]
fn set_user_ip6(sa: &mut bpf_sock_addr, ip: [u32; 4]) {
    // SAFETY: writable fields of a connect6/recvmsg6/getpeername6 context.
    unsafe {
        core::ptr::write_volatile(&mut sa.user_ip6[0], ip[0]);
        core::ptr::write_volatile(&mut sa.user_ip6[1], ip[1]);
        core::ptr::write_volatile(&mut sa.user_ip6[2], ip[2]);
        core::ptr::write_volatile(&mut sa.user_ip6[3], ip[3]);
    }
}

#[inline(always)]
fn translate6(ctx: &SockAddrContext) -> Option<()> {
    let ns = our_netns(ctx)?;
    if ns.flags & NETNS_HOST == 0 {
        return None;
    }
    let proto = l4(ctx)?;
    // SAFETY: the context pointer is valid for the whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let ip = user_ip6(sa);
    let port = sa.user_port as u16;
    // SAFETY: a sock_addr program's `sk` is always a valid socket.
    let bound = unsafe { (*sa.__bindgen_anon_1.sk).src_ip6 };
    // Bound to ::1 or a mapped 127/8 address: could never reach a container.
    if bound == [0, 0, 0, 1u32.to_be()] || bound[..3] == MAPPED && bound[3].to_ne_bytes()[0] == 127
    {
        return None;
    }
    let to = if ip[..3] == MAPPED {
        let to = published_here(ip[3], port, proto, true)?;
        Rev6Slot {
            addr: [MAPPED[0], MAPPED[1], MAPPED[2], to.addr],
            port: to.port,
            orig_port: port,
            orig_addr: ip,
        }
    } else {
        let mut bytes = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&ip[i].to_ne_bytes());
            i += 1;
        }
        let loopback = ip == [0, 0, 0, 1u32.to_be()];
        let any = ip == [0; 4];
        // SAFETY: a read-only lookup.
        if !(loopback || any || unsafe { crate::maps::HOST_ADDRS6.get(bytes).is_some() }) {
            return None;
        }
        // Dialling [::] is dialling [::1]. What is published on 127.0.0.1 or a host IPv4
        // address is IPv4's alone, as with Docker.
        if any {
            bytes[15] = 1;
        }
        let to = crate::maps::published6(&bytes, port, proto)?;
        crate::maps::count_hit6(&bytes, port, proto);
        let w = |i: usize| {
            u32::from_ne_bytes([to.addr[i], to.addr[i + 1], to.addr[i + 2], to.addr[i + 3]])
        };
        Rev6Slot {
            addr: [w(0), w(4), w(8), w(12)],
            port: to.port,
            orig_port: port,
            orig_addr: ip,
        }
    };
    // SAFETY: the context's socket is valid for the whole run; created zeroed when absent.
    let rev = unsafe { SOCK_REV6.get_or_insert_ptr_mut(ctx, None).as_mut() }?;
    let slot = to;
    // The slot of the same backend (one per backend, as `remember` keeps them), else the
    // next one round.
    let mut i = 0;
    let mut done = false;
    while i < REV_SLOTS {
        let s = &mut rev.slots[i];
        if !done && s.addr == slot.addr && s.port == slot.port {
            *s = slot;
            done = true;
        }
        i += 1;
    }
    if !done {
        let n = (rev.next as usize) % REV_SLOTS;
        rev.slots[n] = slot;
        rev.next = rev.next.wrapping_add(1);
    }
    set_user_ip6(sa, slot.addr);
    sa.user_port = u32::from(slot.port);
    Some(())
}

#[inline(always)]
fn restore6(ctx: &SockAddrContext) -> Option<()> {
    our_netns(ctx)?;
    // SAFETY: the context pointer is valid for the whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let ip = user_ip6(sa);
    let port = sa.user_port as u16;
    // SAFETY: the context's socket is valid for the whole run.
    let rev = unsafe { SOCK_REV6.get_ptr_mut(ctx).as_ref() }?;
    // Written back from inside the loop: an Option of the slot's copy would be read from
    // stack that older verifiers (6.1) see as uninitialized on the path without a match.
    let mut i = 0;
    while i < REV_SLOTS {
        let s = &rev.slots[i];
        if s.addr == ip && s.port == port && s.port != 0 {
            set_user_ip6(sa, s.orig_addr);
            sa.user_port = u32::from(s.orig_port);
            return Some(());
        }
        i += 1;
    }
    None
}

/// This instance's view of the socket's namespace, or None: not ours, hands off.
#[inline(always)]
fn our_netns(ctx: &SockAddrContext) -> Option<SockNetns> {
    // SAFETY: helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: read-only copy of a value the controller writes whole.
    unsafe { SOCK_NETNS.get(cookie).copied() }
}

#[inline(always)]
fn l4(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: the context pointer is valid for the whole run.
    match unsafe { (*ctx.sock_addr).type_ } {
        SOCK_STREAM => Some(proto::TCP),
        SOCK_DGRAM => Some(proto::UDP),
        _ => None,
    }
}

/// The published port behind `addr:port` as a host process dials it: the exact address
/// first, then a wildcard publication for any address that is the host's own (its
/// addresses, loopback, 0.0.0.0).
#[inline(always)]
fn published_here(addr: u32, port: u16, proto: u8, count: bool) -> Option<Backend> {
    let mut key = PortKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only copies of values the controller writes whole.
    let mut found = unsafe { PORTMAP.get(key).copied() };
    if found.is_none() {
        let first = addr.to_ne_bytes()[0];
        if !(first == 127 || addr == 0 || is_host_addr(addr)) {
            return None;
        }
        key.addr = 0;
        found = unsafe { PORTMAP.get(key).copied() };
    }
    if count && found.is_some() {
        if let Some(hits) = PORT_STATS.get_ptr_mut(key) {
            // SAFETY: per-CPU value of this CPU.
            unsafe { *hits += 1 };
        }
    }
    found
}

/// connect4/sendmsg4: the new destination, remembered per socket for the way back.
#[inline(always)]
fn translate<const STORAGE: bool>(ctx: &SockAddrContext, connect: bool) -> Option<()> {
    let ns = our_netns(ctx)?;
    let proto = l4(ctx)?;
    // SAFETY: the context pointer is valid for the whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port) = (sa.user_ip4, sa.user_port as u16);
    let to = if ns.flags & NETNS_CONTAINER != 0 {
        if ns.dns_addr == 0 || addr != DNS_ADDR || port != 53u16.to_be() {
            return None;
        }
        Backend {
            addr: ns.dns_addr,
            port,
            _pad: 0,
        }
    } else if ns.flags & NETNS_HOST != 0 {
        // A socket bound to loopback could never reach a container's address: hands off.
        // SAFETY: a sock_addr program's `sk` is always a valid socket.
        if unsafe { (*sa.__bindgen_anon_1.sk).src_ip4 }.to_ne_bytes()[0] == 127 {
            return None;
        }
        published_here(addr, port, proto, connect)?
    } else {
        return None;
    };
    let slot = RevSlot {
        addr: to.addr,
        port: to.port,
        orig_addr: addr,
        orig_port: port,
    };
    if STORAGE {
        remember(ctx, &slot);
    } else {
        // SAFETY: helper valid for sock_addr programs.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let key = RevKey {
            cookie,
            addr: to.addr,
            port: to.port,
            _pad: 0,
        };
        let orig = RevValue {
            addr,
            port,
            _pad: 0,
        };
        let _ = SOCK_REVNAT.insert(key, orig, BPF_ANY as u64);
    }
    sa.user_ip4 = to.addr;
    sa.user_port = u32::from(to.port);
    Some(())
}

/// Keeps `slot` on the socket: in the slot of the same translated destination (two published
/// ports with one backend, dialled from one unconnected socket, cannot be told apart in the
/// replies: the latest wins), else in the next one round.
#[inline(always)]
fn remember(ctx: &SockAddrContext, slot: &RevSlot) {
    // SAFETY: the context's socket is valid for the whole run; created zeroed when absent.
    let Some(rev) = (unsafe { SOCK_REV.get_or_insert_ptr_mut(ctx, None).as_mut() }) else {
        return;
    };
    let mut i = 0;
    while i < REV_SLOTS {
        let s = &mut rev.slots[i];
        if s.addr == slot.addr && s.port == slot.port {
            *s = *slot;
            return;
        }
        i += 1;
    }
    let n = (rev.next as usize) % REV_SLOTS;
    rev.slots[n] = *slot;
    rev.next = rev.next.wrapping_add(1);
}

/// recvmsg4/getpeername4: a translated socket sees the address it dialled.
#[inline(always)]
fn restore<const STORAGE: bool>(ctx: &SockAddrContext) -> Option<()> {
    our_netns(ctx)?;
    // SAFETY: the context pointer is valid for the whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port) = (sa.user_ip4, sa.user_port as u16);
    let (orig_addr, orig_port) = if STORAGE {
        // SAFETY: the context's socket is valid for the whole run.
        let rev = unsafe { SOCK_REV.get_ptr_mut(ctx).as_ref() }?;
        let mut found = None;
        let mut i = 0;
        while i < REV_SLOTS {
            let s = &rev.slots[i];
            if s.addr == addr && s.port == port && s.addr != 0 {
                found = Some((s.orig_addr, s.orig_port));
            }
            i += 1;
        }
        found?
    } else {
        // SAFETY: helper valid for sock_addr programs.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let key = RevKey {
            cookie,
            addr,
            port,
            _pad: 0,
        };
        // SAFETY: read-only copy of a map value.
        let orig = unsafe { SOCK_REVNAT.get(key).copied() }?;
        (orig.addr, orig.port)
    };
    sa.user_ip4 = orig_addr;
    sa.user_port = u32::from(orig_port);
    Some(())
}
