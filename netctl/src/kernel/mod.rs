//! The kernel side: netlink, namespaces, links, the eBPF dataplane, processes, host ports and
//! the files containers see. Executes what the engine decided; knows nothing of requests.

pub mod cgroup;
pub mod daemon;
pub mod dataplane;
pub mod etc;
pub mod hostports;
pub mod netlink;
pub mod netns;
pub mod pidfile;
pub mod pids;
pub mod process;
pub mod resolvconf;
pub mod topology;
pub mod wireguard;
