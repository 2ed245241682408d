//! The socket programs' maps: which network namespaces are this instance's (and what they
//! get), and the original destinations of translated sockets.
//!
//! The programs run at the cgroup v2 root, for every socket of the machine; the netns cookie
//! is how they tell this instance's host namespace and containers from everyone else.

/// Network namespace cookie (u64) → [`SockNetns`]. Filled by the controller.
pub const SOCK_NETNS: &str = "SOCK_NETNS";
/// Socket storage (`BPF_MAP_TYPE_SK_STORAGE`): a [`RevSlots`] on each translated socket,
/// what it dialled. Lives and dies with the socket: no table that one container could fill
/// for the others. Filled by the programs.
pub const SOCK_REV: &str = "SOCK_REV";
/// [`RevKey`] → [`RevValue`]: the same in a shared LRU table, for kernels whose socket-address
/// programs cannot use socket storage (the `_compat` socket programs). Filled by the programs.
pub const SOCK_REVNAT: &str = "SOCK_REVNAT";

/// Socket storage: a [`Rev6Slots`] on each IPv6 socket translated to a published port (the
/// address it dialled is IPv6). Filled by the programs.
pub const SOCK_REV6: &str = "SOCK_REV6";

pub const MAPS: [&str; 4] = [SOCK_NETNS, SOCK_REV, SOCK_REVNAT, SOCK_REV6];

pub const SOCK_NETNS_MAX: u32 = 65536;
pub const SOCK_REVNAT_MAX: u32 = 65536;

/// This instance's host namespace: connects to published ports are translated.
pub const NETNS_HOST: u32 = 1;
/// One of this instance's containers: 127.0.0.11:53 goes to `dns_addr` when it is set.
pub const NETNS_CONTAINER: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockNetns {
    pub flags: u32,
    /// The embedded DNS resolver for this container (its network's gateway), or 0.
    pub dns_addr: u32,
}

/// A translated socket and the address it now talks to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// The address the socket was given by the application.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevValue {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// One destination a socket dialled: `addr:port` as it was translated to, `orig_addr:orig_port`
/// as the application gave it (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevSlot {
    pub addr: u32,
    pub orig_addr: u32,
    pub port: u16,
    pub orig_port: u16,
}

/// Destinations per socket: a connected socket has one; an unconnected UDP socket that
/// sends to more published ports than this forgets the oldest.
pub const REV_SLOTS: usize = 4;

/// A translated socket's destinations, the slot to reuse next in `next`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevSlots {
    pub slots: [RevSlot; REV_SLOTS],
    pub next: u32,
    pub _pad: u32,
}

/// An IPv6 socket's destination: the published port's backend it was translated to (its
/// IPv4-mapped address, `::ffff:addr`, or an IPv6-only backend's address), and what the
/// application gave.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rev6Slot {
    pub addr: [u32; 4],
    pub port: u16,
    pub orig_port: u16,
    pub orig_addr: [u32; 4],
}

/// An IPv6 socket's translated destinations (a connected socket has one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rev6Slots {
    pub slots: [Rev6Slot; REV_SLOTS],
    pub next: u32,
    pub _pad: u32,
}

/// 127.0.0.11, Docker's embedded DNS address, in network byte order.
pub const DNS_ADDR: u32 = u32::from_ne_bytes([127, 0, 0, 11]);

const _: () = assert!(core::mem::size_of::<SockNetns>() == 8);
const _: () = assert!(core::mem::size_of::<RevKey>() == 16);
const _: () = assert!(core::mem::size_of::<RevValue>() == 8);
const _: () = assert!(core::mem::size_of::<RevSlots>() == 56);
const _: () = assert!(core::mem::size_of::<Rev6Slots>() == 152);
