//! Telling processes apart: a PID is reused once its process is gone, its start time is not.

/// `f` of the fields of `/proc/PID/stat` after the command name (state, parent, …).
fn stat_fields<T>(pid: u32, f: impl FnOnce(std::str::SplitWhitespace) -> Option<T>) -> Option<T> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    f(stat.get(stat.rfind(')')? + 2..)?.split_whitespace())
}

/// Start time of a process (clock ticks since boot), to tell a PID that was reused.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid, |mut fields| {
        if matches!(fields.next()?, "Z" | "X") {
            return None;
        }
        fields.nth(18)?.parse().ok()
    })
}

/// The parent of a process (None for the first process of a PID namespace, or when gone).
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid, |mut fields| {
        fields.nth(1)?.parse().ok().filter(|p| *p > 0)
    })
}
