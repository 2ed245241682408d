//! The daemon's log: its stderr, `daemon.log` in the state directory, kept under
//! [`LOG_MAX`] however long the daemon runs (emptied when it grows past it).

use std::os::fd::{AsFd, BorrowedFd};

use crate::kernel::daemon::LOG_MAX;

/// A line of the daemon's log (its stderr: `daemon.log`).
pub fn say(msg: &str) {
    bound();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{}.{:03} {msg}",
        crate::model::text::rfc3339(now.as_secs()).trim_end_matches('Z'),
        now.subsec_millis()
    );
}

/// Empties the log when it has grown past [`LOG_MAX`] (say calls it, and the conntrack sweep
/// every 10 s, for the lines written by other means).
pub fn bound() {
    bound_fd(std::io::stderr().as_fd(), LOG_MAX);
}

fn bound_fd(fd: BorrowedFd<'_>, max: u64) {
    use nix::sys::stat::{fstat, SFlag};
    // Only a regular file (the log), never a terminal or a pipe.
    let Ok(st) = fstat(fd) else {
        return;
    };
    let file = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if file && st.st_size as u64 > max && nix::unistd::ftruncate(fd, 0).is_ok() {
        // The file is opened for appending: the next line starts at the top.
        let _ = nix::unistd::write(fd, b"(log emptied: it had grown past its limit)\n");
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write};

    use super::bound_fd;

    #[test]
    fn a_log_past_its_limit_is_emptied() {
        let path = std::env::temp_dir().join(format!("netctl-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[b'x'; 100]).unwrap();
        bound_fd(std::os::fd::AsFd::as_fd(&f), 200);
        assert_eq!(f.metadata().unwrap().len(), 100, "under the limit: kept");
        f.write_all(&[b'x'; 150]).unwrap();
        bound_fd(std::os::fd::AsFd::as_fd(&f), 200);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("(log emptied"), "{text}");
        f.write_all(b"next\n").unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("limit)\nnext\n"));
        let _ = std::fs::remove_file(&path);
    }
}
