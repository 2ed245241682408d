//! What the host itself owns, asked of the kernel: its sockets and its routes. Used where a
//! packet could be the host's own business rather than a container's.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, bpf_sock_tuple, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp,
    },
};
use netctl_common::proto;

use crate::{packet::Packet, parse::Hdr};

pub const AF_INET: u8 = 2;

/// In the namespace of the device the packet is on.
const CURRENT_NETNS: u64 = u64::MAX;

/// A socket of this host would receive the packet: a TCP listener or connection, or a UDP
/// socket bound to (or connected from) its destination. Such a packet is the host's.
#[inline(always)]
pub fn socket_owns<P: Packet>(p: &P, h: &Hdr) -> bool {
    // SAFETY: an all-zero tuple is valid; the ipv4 arm is the one the size below selects.
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    t.__bindgen_anon_1.ipv4.saddr = h.saddr;
    t.__bindgen_anon_1.ipv4.daddr = h.daddr;
    t.__bindgen_anon_1.ipv4.sport = h.sport;
    t.__bindgen_anon_1.ipv4.dport = h.dport;
    let size = core::mem::size_of::<[u32; 3]>() as u32; // the ipv4 arm: 2 addresses, 2 ports
                                                        // SAFETY: helper calls on the program's context with a tuple on the stack; a socket
                                                        // found is released before returning.
    let sk = unsafe {
        match h.proto {
            proto::TCP => bpf_skc_lookup_tcp(p.ctx(), &mut t, size, CURRENT_NETNS, 0),
            proto::UDP => bpf_sk_lookup_udp(p.ctx(), &mut t, size, CURRENT_NETNS, 0),
            _ => return false,
        }
    };
    if sk.is_null() {
        return false;
    }
    unsafe { bpf_sk_release(sk.cast()) };
    true
}

/// Where the host's routing table sends the packet arriving on `ifindex`: the
/// `bpf_fib_lookup` return code and the answer (egress ifindex, MACs).
#[inline(always)]
pub fn route<P: Packet>(p: &P, h: &Hdr, ifindex: u32, flags: u32) -> (i64, bpf_fib_lookup) {
    // SAFETY: an all-zero bpf_fib_lookup is a valid request to fill in.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = h.proto;
    fib.sport = h.sport;
    fib.dport = h.dport;
    fib.ifindex = ifindex;
    fib.__bindgen_anon_3.ipv4_src = h.saddr;
    fib.__bindgen_anon_4.ipv4_dst = h.daddr;
    // SAFETY: helper call with a properly sized request.
    let ret = unsafe {
        fib_lookup(
            p.ctx(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    (ret, fib)
}

/// The host would forward the packet (arriving on `ifindex`) to another interface: its
/// routing table has a unicast route that is not local. Local, broadcast and multicast
/// destinations, and packets the kernel would drop anyway, are not forwarded.
#[inline(always)]
pub fn forwards<P: Packet>(p: &P, h: &Hdr, ifindex: u32) -> bool {
    let (mut ret, _) = route(p, h, ifindex, BPF_FIB_LOOKUP_SKIP_NEIGH);
    if ret < 0 {
        // Before 6.3 the flag is unknown (EINVAL): the guard must not open on such a kernel.
        ret = route(p, h, ifindex, 0).0;
    }
    ret == BPF_FIB_LKUP_RET_SUCCESS as i64
        || ret == BPF_FIB_LKUP_RET_NO_NEIGH as i64
        || ret == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64
}
