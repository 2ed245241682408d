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

/// The container's own files: its log and its exit status (kept with mode 0600 in the
/// 0700 state directory).
pub fn container_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("containers").join(id)
}

pub fn log_path(state_dir: &Path, id: &str) -> PathBuf {
    container_dir(state_dir, id).join("log")
}

pub fn exit_path(state_dir: &Path, id: &str) -> PathBuf {
    container_dir(state_dir, id).join("exit")
}
