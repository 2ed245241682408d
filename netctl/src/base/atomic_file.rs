//! Files replaced whole: written beside, renamed over (a reader sees the old file or the new
//! one, never a part), created without following a link planted at the temp name.

use std::{fs::OpenOptions, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::{Context, Result};

/// Replaces `path` durably (synced before the rename): what must survive a power cut.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace(path, bytes, mode, true)
}

/// Replaces `path` atomically but without the sync: caches and what only matters until the
/// next boot (a sync costs a command milliseconds).
pub fn write_cache(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace(path, bytes, mode, false)
}

/// The process writing `file_name`, if it is one of the temporaries a replace writes
/// beside its target (`.NAME.PID.tmp`) before renaming it.
pub fn temporary_writer(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix('.')?
        .strip_suffix(".tmp")?
        .rsplit_once('.')?
        .1
        .parse()
        .ok()
}

fn replace(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
