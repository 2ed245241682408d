//! The daemon's log: its stderr, `daemon.log` in the state directory.

/// A line of the daemon's log (its stderr: `daemon.log`).
pub fn say(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{}.{:03} {msg}",
        crate::model::text::rfc3339(now.as_secs()).trim_end_matches('Z'),
        now.subsec_millis()
    );
}
