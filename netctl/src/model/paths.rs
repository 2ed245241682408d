//! Where an instance keeps things in its state directory.

use std::path::{Path, PathBuf};

/// The directory of the containers' network namespace handles.
pub fn handles_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("netns")
}

/// A container's namespace handle (named by its short ID).
pub fn handle_path(state_dir: &Path, container_id: &str) -> PathBuf {
    handles_dir(state_dir).join(crate::model::ids::short(container_id))
}

/// Where each container has a directory of its own files, named by its ID.
pub fn containers_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("containers")
}

/// The container's own files: its log and its exit status (kept with mode 0600 in the
/// 0700 state directory).
pub fn container_dir(state_dir: &Path, id: &str) -> PathBuf {
    containers_dir(state_dir).join(id)
}

pub fn log_path(state_dir: &Path, id: &str) -> PathBuf {
    container_dir(state_dir, id).join("log")
}

pub fn exit_path(state_dir: &Path, id: &str) -> PathBuf {
    container_dir(state_dir, id).join("exit")
}

/// Where the daemon serves its Prometheus metrics.
pub fn metrics_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("metrics.sock")
}

/// The process whose namespace a `/proc/PID/ns/net` (or `/proc/PID/task/TID/ns/net`) path
/// names: TID for a thread's. None for any other path (a pinned namespace file).
pub fn proc_ns_pid(path: &Path) -> Option<u32> {
    let rest = path
        .to_str()?
        .strip_prefix("/proc/")?
        .strip_suffix("/ns/net")?;
    let id = match rest.split_once("/task/") {
        Some((pid, tid)) => {
            pid.parse::<u32>().ok()?;
            tid
        }
        None => rest,
    };
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_namespace_paths() {
        assert_eq!(proc_ns_pid(Path::new("/proc/123/ns/net")), Some(123));
        assert_eq!(proc_ns_pid(Path::new("/proc/1/task/77/ns/net")), Some(77));
        assert_eq!(proc_ns_pid(Path::new("/proc/self/ns/net")), None);
        assert_eq!(proc_ns_pid(Path::new("/run/netns/cni-1234")), None);
        assert_eq!(proc_ns_pid(Path::new("/proc/12/ns/mnt")), None);
        assert_eq!(proc_ns_pid(Path::new("/proc/x/task/7/ns/net")), None);
    }
}
