//! Map names, keys and values. The controller fills every map but `CT` and the counters from
//! the state (one reconcile function); the programs only read them.

/// Per-CPU packet/byte/drop counters per hook ([`crate::stats::Hook`]).
pub const HOOK_STATS: &str = "HOOK_STATS";
/// Per-CPU drop counters per reason ([`crate::drop::DropReason`]).
pub const DROP_STATS: &str = "DROP_STATS";
/// Datapath switches, one [`Config`] at index 0.
pub const CONFIG: &str = "CONFIG";
/// Published ports: [`PortKey`] → [`Backend`].
pub const PORTMAP: &str = "PORTMAP";
/// Every local IPv4 address of the host namespace → 1 (what "a host address" means).
pub const HOST_ADDRS: &str = "HOST_ADDRS";
/// Uplink ifindex → [`Uplink`].
pub const UPLINKS: &str = "UPLINKS";
/// Container address → [`EndpointInfo`].
pub const ENDPOINTS: &str = "ENDPOINTS";
/// Bridge ifindex (the network's identity in the datapath) → [`NetInfo`].
pub const NETWORKS: &str = "NETWORKS";
/// LPM trie: network subnet → bridge ifindex.
pub const SUBNETS: &str = "SUBNETS";
/// Connection tracking of confirmed flows (LRU hash): [`crate::ct::CtKey`] →
/// [`crate::ct::CtEntry`].
pub const CT: &str = "CT";
/// Connection tracking of flows not confirmed yet (LRU hash, same types): what a flood fills,
/// so it never evicts a confirmed flow.
pub const CT_NEW: &str = "CT_NEW";
/// Entries in `CT` per owning container address (the container end of the flow,
/// [`crate::ct::owner`]) → count: what the per-container quota is checked against. Kept by
/// the programs as they store and delete, made exact again by the daemon's sweep (LRU
/// evictions are not seen).
pub const CT_OWNED: &str = "CT_OWNED";
/// Entries in `CT` in all, one u64 at index 0: what the fill watermark is checked against.
pub const CT_FILL: &str = "CT_FILL";
/// IPv6's conntrack: the same four over [`crate::ct::CtKey6`] → [`crate::ct::CtEntry6`],
/// half IPv4's size ([`CT6_SHARE`]; an IPv6 entry is twice as large), with the
/// watermark and quota scaled alike (each family its own).
pub const CT6: &str = "CT6";
pub const CT6_NEW: &str = "CT6_NEW";
pub const CT6_OWNED: &str = "CT6_OWNED";
pub const CT6_FILL: &str = "CT6_FILL";
/// Uplink ifindex → the IPv6 address masqueraded IPv6 leaves with (the uplink's first
/// global one); only uplinks that have one.
pub const UPLINKS6: &str = "UPLINKS6";
/// Routed IPv6 networks: a container's IPv6 address, port and protocol it publishes →
/// 1 ([`Published6`]); what may come in to it from beyond the host.
pub const PUBLISHED6: &str = "PUBLISHED6";

pub type Published6 = PortKey6;
/// Ports published on one IPv6 address of the host or on `[::]` (address zero):
/// [`PortKey6`] → [`Backend`] (the backend's IPv4 address, its IPv6 one from [`IP6_OF`]).
/// Ports published on every address of both families are PORTMAP's (address 0).
pub const PORTMAP6: &str = "PORTMAP6";
/// Per-CPU new-connection counts of PORTMAP6's ports.
pub const PORT_STATS6: &str = "PORT_STATS6";

/// An IPv6 address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey6 {
    pub addr: Ip6,
    /// Network order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Program array: the IPv6 programs `from_container` and `uplink_ingress` continue in.
pub const TAIL_CALLS: &str = "TAIL_CALLS";
pub const TAIL_CALLS_MAX: u32 = 3;
pub const TAIL_FROM_CONTAINER6: u32 = 0;
pub const TAIL_UPLINK_INGRESS6: u32 = 1;
/// NAT64's replies: IPv4 from outside for an IPv6-only container, made IPv6.
pub const TAIL_UPLINK_INGRESS64: u32 = 2;
/// Container IPv4 address → its IPv6 address on the same network (dual-stack endpoints): a
/// port published on `[::]` reaches the backend there.
pub const IP6_OF: &str = "IP6_OF";

/// Tracing switches ([`crate::event::TraceConfig`] at index 0), set by `netctl trace`.
pub const TRACE: &str = "TRACE";
/// Ring buffer of [`crate::event::Event`]s.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU count of events lost because the ring buffer was full.
pub const EVENTS_LOST: &str = "EVENTS_LOST";
/// Per-CPU counters per container address ([`crate::stats::EndpointCounters`]); entries made
/// by the controller.
pub const EP_STATS: &str = "EP_STATS";
/// Per-CPU new-connection counts per published port ([`PortKey`]); entries made by the
/// controller.
pub const PORT_STATS: &str = "PORT_STATS";
/// Per-CPU counters of containers' IPv6 traffic, per host-side veth ifindex (what the IPv6
/// programs know of both ends); added to the endpoint's `EP_STATS` when read.
pub const EP_STATS6: &str = "EP_STATS6";

/// IPv4 fragments (LRU hash): [`FragKey`] → [`FragPorts`], the ports a datagram's first
/// fragment carried, so its later fragments (which have none) are translated the same way.
pub const FRAGS: &str = "FRAGS";
/// One [`crate::event::KernelDropConfig`] at index 0: `sk_buff` offsets for the kernel-drop
/// tracer.
pub const KDROP_CONFIG: &str = "KDROP_CONFIG";
pub const FRAGS_MAX: u32 = 16384;

/// One datagram as a hook sees it: addresses, IP ID and protocol (RFC 791's reassembly key),
/// and the interface it came through, so a sender elsewhere cannot seed or reuse a record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    pub ifindex: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The first fragment's source and destination port (echo: the identifier twice), and when
/// it passed (`bpf_ktime_get_ns`): a record older than [`FRAG_TTL_NS`] is another datagram's
/// that reused the IP ID, never used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
    pub seen: u64,
}

/// How long a datagram's fragments may take: the kernel's reassembly timeout
/// (`net.ipv4.ipfrag_time`, 30 s).
pub const FRAG_TTL_NS: u64 = 30_000_000_000;

const _: () = assert!(core::mem::size_of::<FragKey>() == 16);
const _: () = assert!(core::mem::size_of::<FragPorts>() == 16);

/// Host-side veth ifindex → 1 where someone else's queueing discipline shapes the container's
/// traffic (the CNI `bandwidth` plugin chained after netctl: a root qdisc, an `ingress` qdisc
/// redirecting to an ifb). The programs then leave that container's packets to those qdiscs
/// instead of taking their fast paths around them. Kept by the daemon from the kernel's qdiscs.
pub const SHAPED: &str = "SHAPED";
pub const SHAPED_MAX: u32 = 16384;

/// An IPv6 address as the datapath holds it: the packet's 16 bytes.
pub type Ip6 = [u8; 16];

/// The link-local address the kernel gives an interface with this MAC (modified EUI-64,
/// `addr_gen_mode` 0): how the controller knows a container's and the programs check a
/// sender's.
#[rustfmt::skip]
pub const fn link_local(m: [u8; 6]) -> Ip6 {
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// Container IPv6 address (its global one and its link-local one) → [`EndpointInfo`].
pub const ENDPOINTS6: &str = "ENDPOINTS6";
/// LPM trie: network IPv6 subnet → bridge ifindex.
pub const SUBNETS6: &str = "SUBNETS6";
/// Every IPv6 address of the host namespace, link-local ones included → 1.
pub const HOST_ADDRS6: &str = "HOST_ADDRS6";
/// Host-side veth ifindex → its container's [`EndpointInfo`]: who sends on a veth before (or
/// without) an address of its own (IPv6 duplicate address probes, early listener reports).
pub const VETHS: &str = "VETHS";

/// Docker's legacy links with ICC off: [`LinkKey`] → 1, the pairs a link lets through.
pub const LINKS: &str = "LINKS";

/// Every map, pinned by these names.
pub const ALL: [&str; 37] = [
    HOOK_STATS,
    DROP_STATS,
    CONFIG,
    PORTMAP,
    HOST_ADDRS,
    UPLINKS,
    ENDPOINTS,
    NETWORKS,
    SUBNETS,
    CT,
    CT_NEW,
    CT_OWNED,
    CT_FILL,
    TRACE,
    EVENTS,
    EVENTS_LOST,
    EP_STATS,
    PORT_STATS,
    LINKS,
    FRAGS,
    KDROP_CONFIG,
    SHAPED,
    ENDPOINTS6,
    SUBNETS6,
    HOST_ADDRS6,
    VETHS,
    CT6,
    CT6_NEW,
    CT6_OWNED,
    CT6_FILL,
    UPLINKS6,
    IP6_OF,
    TAIL_CALLS,
    PUBLISHED6,
    PORTMAP6,
    PORT_STATS6,
    EP_STATS6,
];

pub const EVENTS_BYTES: u32 = 1 << 20;

pub const PORTMAP_MAX: u32 = 65536;
pub const HOST_ADDRS_MAX: u32 = 4096;
pub const UPLINKS_MAX: u32 = 64;
pub const ENDPOINTS_MAX: u32 = 65536;
pub const NETWORKS_MAX: u32 = 4096;
pub const LINKS_MAX: u32 = 65536;
/// Default connection-tracking capacity (entries; a NAT flow takes two).
pub const CT_MAX_DEFAULT: u32 = 262144;
/// IPv6's tables are this fraction of IPv4's (an entry takes twice the memory), and so are
/// their watermark and per-container quota.
pub const CT6_SHARE: u32 = 2;
/// Unconfirmed flows get a table a quarter of `CT`'s size.
pub const CT_NEW_RATIO: u32 = 4;

/// A published host socket. `addr` 0 means every host address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Where a port published on IPv6 (`PORTMAP6`) leads: the backend's IPv6 address, or its
/// IPv4-mapped one (`::ffff:a.b.c.d`) when it has IPv4 (its IPv6 address is then `IP6_OF`'s).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend6 {
    pub addr: Ip6,
    pub port: u16,
    pub _pad: u16,
}

/// XDP may translate on this uplink: native XDP on a physical NIC, whose packets come from
/// the wire with complete checksums. Elsewhere (generic XDP, virtual devices) a packet may
/// carry a partial checksum XDP cannot see, so XDP hands every packet to TC.
pub const UPLINK_XDP_NAT: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uplink {
    /// The address masqueraded traffic leaves with.
    pub addr: u32,
    /// `UPLINK_*`.
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Host-side veth (fast-path and hairpin redirects go there).
    pub ifindex: u32,
    /// The network's bridge ifindex.
    pub network: u32,
    /// The container interface's MAC (`02:42:<address>` unless an engine chose another):
    /// the destination of frames the datapath hands to it directly.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

pub const NET_ICC: u32 = 1;
pub const NET_MASQUERADE: u32 = 2;
pub const NET_INTERNAL: u32 = 4;
/// An encrypted overlay network (`-o encrypted`): its frames cross hosts only through the
/// WireGuard device, never as plain VXLAN.
pub const NET_ENCRYPTED: u32 = 8;
/// IPv6 leaves untranslated (`gateway_mode_ipv6=routed`): containers' published ports and
/// echo requests are reachable at their own IPv6 addresses (`PUBLISHED6`).
pub const NET_ROUTED6: u32 = 16;
/// An IPv6-only network that masquerades: its containers reach IPv4 servers at
/// 64:ff9b::/96 through NAT64.
pub const NET_NAT64: u32 = 32;
/// The well-known NAT64 prefix (RFC 6052), 64:ff9b::/96: its first 12 bytes.
pub const NAT64_PREFIX: [u8; 12] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];

/// An address in fe80::/10: an interface's own link's.
#[inline(always)]
pub fn is_link_local(a: &Ip6) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// An address in 64:ff9b::/96: an IPv4 server as an IPv6-only container reaches it.
#[inline(always)]
pub fn is_nat64(a: &Ip6) -> bool {
    let mut i = 0;
    while i < 12 {
        if a[i] != NAT64_PREFIX[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetInfo {
    pub gateway: u32,
    pub flags: u32,
    /// The bridge's MAC: the source of frames the datapath hands to containers directly.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The IPv6 gateway (zero: the network has no IPv6).
    pub gateway6: Ip6,
}

pub const CONFIG_FAST_PATH: u32 = 1;
/// IPv4 forwarding was on before netctl first ran here: the host is a router of its own and
/// forwarded traffic is left alone (as Docker does). Without it, forwarded traffic that is no
/// container's and no tracked flow is dropped (`forward-denied`).
pub const CONFIG_FORWARD_OPEN: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
    /// Source ports masquerade and hairpin SNAT allocate from (host byte order).
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// `CT` entries above which no flow is confirmed (`conntrack-full`): kept below the
    /// table's size so the LRU never has to evict an established flow. 0: no limit.
    pub ct_fill_max: u32,
    /// `CT` entries one container may own (`conntrack-quota`). 0: no limit.
    pub ct_owner_max: u32,
}

/// `port` is the destination port: the linking container to the target's exposed port.
pub const LINK_TO_PORT: u8 = 0;
/// `port` is the source port: the target's replies.
pub const LINK_FROM_PORT: u8 = 1;

/// A packet a legacy link allows on a network with ICC off (Docker's per-link ACCEPT rules).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkKey {
    pub src: u32,
    pub dst: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    /// [`LINK_TO_PORT`] or [`LINK_FROM_PORT`].
    pub dir: u8,
}

const _: () = assert!(core::mem::size_of::<LinkKey>() == 12);
const _: () = assert!(core::mem::size_of::<PortKey>() == 8);
const _: () = assert!(core::mem::size_of::<Backend>() == 8);
const _: () = assert!(core::mem::size_of::<Uplink>() == 8);
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 16);
const _: () = assert!(core::mem::size_of::<NetInfo>() == 32);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
