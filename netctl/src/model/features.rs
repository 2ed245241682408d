//! The kernel features netctl knows: names (as `netctl info` and `NETCTL_FEATURES_DENY`
//! spell them), the first kernel that has each, what it is for and what netctl does without
//! it. The probing is the kernel side's (`kernel::dataplane::features`).

use anyhow::{bail, Result};

/// One feature: its name (as `netctl info` and `NETCTL_FEATURES_DENY` spell it), the first
/// kernel that has it, and what netctl does without it (`None`: required).
pub struct Feature {
    pub name: &'static str,
    pub since: &'static str,
    pub used_for: &'static str,
    pub fallback: Option<&'static str>,
}

const fn f(
    name: &'static str,
    since: &'static str,
    used_for: &'static str,
    fallback: Option<&'static str>,
) -> Feature {
    Feature {
        name,
        since,
        used_for,
        fallback,
    }
}

pub const TCX: &str = "tcx";
pub const XDP: &str = "xdp";
pub const XDP_ADJUST_META: &str = "xdp_adjust_meta";
pub const XDP_LOAD_BYTES: &str = "xdp_load_bytes";
pub const LOOP: &str = "loop";
pub const ATOMICS: &str = "atomics";
pub const REDIRECT_PEER: &str = "redirect_peer";
pub const SKC_LOOKUP_TCP: &str = "skc_lookup_tcp";
pub const RINGBUF: &str = "ringbuf";
pub const GET_NETNS_COOKIE: &str = "get_netns_cookie";
pub const CONNECT4: &str = "connect4";
pub const SENDMSG4: &str = "sendmsg4";
pub const RECVMSG4: &str = "recvmsg4";
pub const GETPEERNAME4: &str = "getpeername4";
pub const SO_NETNS_COOKIE: &str = "so_netns_cookie";
pub const KFREE_SKB_REASON: &str = "kfree_skb_reason";
pub const BTF: &str = "btf";
pub const SK_STORAGE: &str = "sk_storage";
pub const CHECK_MTU: &str = "check_mtu";

/// Everything probed, in the order `netctl info` shows it.
pub const FEATURES: [Feature; 19] = [
    f(TCX, "6.6", "TC programs as bpf_links (tcx)",
        Some("TC programs attach through netlink (clsact + cls_bpf, direct-action)")),
    f(XDP, "4.8", "XDP programs on uplinks (native where the driver has it, generic otherwise)",
        Some("no XDP on uplinks: TC does all the uplink's work")),
    f(XDP_ADJUST_META, "4.15", "XDP marks the packets whose NAT it did",
        Some("no XDP on uplinks: TC does all the uplink's work")),
    f(XDP_LOAD_BYTES, "5.18", "bytes of traced XDP packets",
        Some("traced XDP packets carry no bytes (TC's do)")),
    f(LOOP, "5.17", "bpf_loop: NAT source ports searched over the whole range",
        Some("the _compat programs: 32 NAT ports tried from a random start, conntrack flags by plain read-modify-write")),
    f(ATOMICS, "5.12", "atomic fetch-or on conntrack flags",
        Some("as for loop (a flag set at the same instant by another CPU is set again by that direction's next packet)")),
    f(REDIRECT_PEER, "5.10", "fast path into containers, overlay delivery", None),
    f(SKC_LOOKUP_TCP, "5.2", "host sockets are never taken over by NAT", None),
    f(RINGBUF, "5.8", "trace events", None),
    f(GET_NETNS_COOKIE, "5.7", "socket programs act only on this instance's namespaces",
        Some("no socket programs (as for connect4)")),
    f(CONNECT4, "4.17", "host-local clients of published ports (TCP)",
        Some("no socket programs: published ports answer other hosts only (`run -p` warns), containers ask the resolver on their gateway instead of 127.0.0.11")),
    f(SENDMSG4, "4.18", "host-local clients of published UDP ports, 127.0.0.11 in containers",
        Some("as for connect4")),
    f(RECVMSG4, "5.2", "replies to host-local UDP clients",
        Some("as for connect4")),
    f(GETPEERNAME4, "5.8", "host-local clients see the address they asked for",
        Some("as for connect4")),
    f(SO_NETNS_COOKIE, "5.14", "the socket programs' scope (netctl reads its namespaces' cookies)",
        Some("as for connect4")),
    f(KFREE_SKB_REASON, "5.17", "kernel drops in `netctl trace --drops`",
        Some("`trace --drops` shows netctl's own drops only")),
    f(BTF, "5.2", "kernel type information for the kernel-drop tracer",
        Some("as for kfree_skb_reason")),
    f(SK_STORAGE, "5.10", "socket programs keep what a socket dialled on the socket itself",
        Some("the _compat socket programs: a shared LRU table of 65,536 sockets (a host with more translated sockets open at once loses the oldest's reverse translation)")),
    f(CHECK_MTU, "5.12", "a frame too large for the overlay tunnel is dropped (tunnel-mtu)",
        Some("such a frame is encapsulated and the host fragments the VXLAN packet")),
];

/// The socket programs' hooks and helper: all or none of the socket programs run.
pub const SOCKET_FEATURES: [&str; 6] = [
    GET_NETNS_COOKIE,
    CONNECT4,
    SENDMSG4,
    RECVMSG4,
    GETPEERNAME4,
    SO_NETNS_COOKIE,
];

pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// Parses `NETCTL_FEATURES_DENY`: a comma list of feature names.
pub fn parse_deny(v: &str) -> Result<Vec<String>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match feature(s) {
            Some(f) => Ok(f.name.to_string()),
            None => bail!(
                "NETCTL_FEATURES_DENY: unknown feature {s:?}: use names from `netctl info` ({})",
                FEATURES.map(|f| f.name).join(", ")
            ),
        })
        .collect()
}
