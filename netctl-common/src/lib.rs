//! Types shared by netctl's eBPF programs and its controller.
//!
//! Everything here is ABI between the kernel programs and userspace: `#[repr(C)]`, explicit
//! zeroed padding, sizes asserted at compile time. Addresses are IPv4 in network byte order
//! (as read from the packet), ports in network byte order too. Changing a layout means
//! bumping [`LAYOUT_VERSION`], which makes the controller load into a fresh pin directory.
#![no_std]

pub mod ct;
pub mod drop;
pub mod event;
pub mod features;
pub mod maps;
pub mod overlay;
pub mod sock;
pub mod stats;

/// Version of the map layouts; names the pin directory (`$NETCTL_BPFFS/v<N>`).
pub const LAYOUT_VERSION: u32 = 21;

/// Names of the programs in the eBPF object, as the controller looks them up.
pub mod programs {
    /// XDP on the uplink: first look at every packet arriving from outside.
    pub const UPLINK_XDP: &str = "uplink_xdp";
    /// TC ingress on the uplink: the half of the uplink path XDP does not run.
    pub const UPLINK_INGRESS: &str = "uplink_ingress";
    /// TC egress on the uplink: packets leaving the host.
    pub const UPLINK_EGRESS: &str = "uplink_egress";
    /// TC ingress on a container's host-side veth: every packet a container sends.
    pub const FROM_CONTAINER: &str = "from_container";
    /// TC ingress on the overlay's VXLAN device: what comes out of the tunnel.
    pub const TUNNEL_INGRESS: &str = "tunnel_ingress";
    /// TC ingress on the WireGuard device of encrypted overlays: what it decrypted.
    pub const WG_INGRESS: &str = "wg_ingress";
    /// TC egress on a container's host-side veth: everything handed to the container that
    /// did not come straight from a checked hook.
    pub const TO_CONTAINER: &str = "to_container";
    /// IPv6 of `from_container` and `uplink_ingress`: entered by tail call, never attached.
    pub const FROM_CONTAINER6: &str = "from_container6";
    pub const UPLINK_INGRESS6: &str = "uplink_ingress6";
    /// NAT64's replies, entered by tail call from `uplink_ingress`.
    pub const UPLINK_INGRESS64: &str = "uplink_ingress64";
    /// BTF tracepoint on `kfree_skb`: the kernel's own drops of container packets, attached
    /// only while `netctl trace --drops` runs.
    pub const KERNEL_DROP: &str = "kernel_drop";
    /// Socket programs at the cgroup v2 root (see [`crate::sock`]).
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
    pub const SOCK_GETPEERNAME4: &str = "sock_getpeername4";
    /// IPv6 host clients of published ports (only where socket storage exists).
    pub const SOCK_CONNECT6: &str = "sock_connect6";
    pub const SOCK_RECVMSG6: &str = "sock_recvmsg6";
    pub const SOCK_GETPEERNAME6: &str = "sock_getpeername6";
    /// The twins of the programs that track flows, for kernels without `bpf_loop` (< 5.17)
    /// or atomic OR (< 5.12): bounded NAT port search and plain flag updates. A kernel before
    /// 5.13 refuses a program that merely contains those instructions, so pruning by the
    /// features global cannot help there; the controller loads these under the names above.
    pub const UPLINK_XDP_COMPAT: &str = "uplink_xdp_compat";
    pub const UPLINK_INGRESS_COMPAT: &str = "uplink_ingress_compat";
    pub const UPLINK_EGRESS_COMPAT: &str = "uplink_egress_compat";
    pub const FROM_CONTAINER_COMPAT: &str = "from_container_compat";
    pub const FROM_CONTAINER6_COMPAT: &str = "from_container6_compat";
    pub const UPLINK_INGRESS6_COMPAT: &str = "uplink_ingress6_compat";
    pub const UPLINK_INGRESS64_COMPAT: &str = "uplink_ingress64_compat";
    /// The socket programs' twins for kernels whose socket-address programs cannot use
    /// socket storage: what a socket dialled is kept in a shared LRU table instead.
    pub const SOCK_CONNECT4_COMPAT: &str = "sock_connect4_compat";
    pub const SOCK_SENDMSG4_COMPAT: &str = "sock_sendmsg4_compat";
    pub const SOCK_RECVMSG4_COMPAT: &str = "sock_recvmsg4_compat";
    pub const SOCK_GETPEERNAME4_COMPAT: &str = "sock_getpeername4_compat";
}

/// The 4 bytes `uplink_xdp` leaves in the XDP metadata area of a packet whose ingress work
/// (NAT, "no way in", the forwarding guard) it did, so TC ingress does not do it again. A
/// packet without it gets everything from TC.
pub const XDP_DONE_MARK: u32 = 0x4e43_5844; // "NCXD"

/// IP protocol numbers the datapath handles.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for maps::PortKey {}
    unsafe impl aya::Pod for maps::LinkKey {}
    unsafe impl aya::Pod for maps::Backend {}
    unsafe impl aya::Pod for maps::Backend6 {}
    unsafe impl aya::Pod for maps::Uplink {}
    unsafe impl aya::Pod for maps::EndpointInfo {}
    unsafe impl aya::Pod for maps::NetInfo {}
    unsafe impl aya::Pod for maps::Config {}
    unsafe impl aya::Pod for maps::Published6 {}
    unsafe impl<A: aya::Pod> aya::Pod for ct::Tuple<A> {}
    unsafe impl<A: aya::Pod> aya::Pod for ct::Entry<A> {}
    unsafe impl aya::Pod for stats::Counters {}
    unsafe impl aya::Pod for stats::EndpointCounters {}
    unsafe impl aya::Pod for event::TraceConfig {}
    unsafe impl aya::Pod for event::Event {}
    unsafe impl aya::Pod for event::KernelDropConfig {}
    unsafe impl aya::Pod for maps::FragKey {}
    unsafe impl aya::Pod for maps::FragPorts {}
    unsafe impl aya::Pod for sock::SockNetns {}
    unsafe impl aya::Pod for overlay::Remote {}
    unsafe impl aya::Pod for overlay::Remote6 {}
    unsafe impl aya::Pod for overlay::OverlayConfig {}
    unsafe impl aya::Pod for sock::RevKey {}
    unsafe impl aya::Pod for sock::RevValue {}
    unsafe impl aya::Pod for sock::Rev6Slots {}
}
