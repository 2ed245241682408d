//! The socket programs' maps: which network namespaces are this instance's (and what they
//! get), and the original destinations of translated sockets.
//!
//! The programs run at the cgroup v2 root, for every socket of the machine; the netns cookie
//! is how they tell this instance's host namespace and containers from everyone else.

/// Network namespace cookie (u64) → [`SockNetns`]. Filled by the controller.
pub const SOCK_NETNS: &str = "SOCK_NETNS";
/// [`RevKey`] → [`RevValue`]: what a translated socket dialled. Filled by the programs.
pub const SOCK_REVNAT: &str = "SOCK_REVNAT";

pub const MAPS: [&str; 2] = [SOCK_NETNS, SOCK_REVNAT];

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

/// 127.0.0.11, Docker's embedded DNS address, in network byte order.
pub const DNS_ADDR: u32 = u32::from_ne_bytes([127, 0, 0, 11]);

const _: () = assert!(core::mem::size_of::<SockNetns>() == 8);
const _: () = assert!(core::mem::size_of::<RevKey>() == 16);
const _: () = assert!(core::mem::size_of::<RevValue>() == 8);
