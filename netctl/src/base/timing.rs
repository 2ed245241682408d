//! `NETCTL_TIMINGS=1`: a command says on stderr, as it ends, where its time went (lock and
//! read, planning, the container's namespace and veth, maps, save, …) — for the benchmarks,
//! which report the state's part apart from the kernel's.

use std::{
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

struct Marks {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

/// None when timings are off.
static MARKS: OnceLock<Option<Mutex<Marks>>> = OnceLock::new();

fn marks() -> Option<&'static Mutex<Marks>> {
    MARKS
        .get_or_init(|| {
            (std::env::var("NETCTL_TIMINGS").as_deref() == Ok("1")).then(|| {
                Mutex::new(Marks {
                    last: Instant::now(),
                    steps: Vec::new(),
                })
            })
        })
        .as_ref()
}

/// The time since the previous mark was spent on `what`.
pub fn mark(what: &'static str) {
    if let Some(m) = marks() {
        let mut m = m.lock().unwrap();
        let now = Instant::now();
        let took = now - m.last;
        m.last = now;
        m.steps.push((what, took));
    }
}

/// `took` was spent on `what` beside the marked steps (work on another thread).
pub fn add(what: &'static str, took: Duration) {
    if let Some(m) = marks() {
        m.lock().unwrap().steps.push((what, took));
    }
}

/// "netctl: timings: open 1.20 ms, lock+read 0.41 ms, …" (each step once, added up).
pub fn report() {
    let Some(m) = marks() else { return };
    let m = m.lock().unwrap();
    let mut steps: Vec<(&str, f64)> = Vec::new();
    for (what, took) in &m.steps {
        let ms = took.as_secs_f64() * 1000.0;
        match steps.iter_mut().find(|(s, _)| s == what) {
            Some((_, total)) => *total += ms,
            None => steps.push((what, ms)),
        }
    }
    let line: Vec<String> = steps
        .iter()
        .map(|(s, ms)| format!("{s} {ms:.2} ms"))
        .collect();
    eprintln!("netctl: timings: {}", line.join(", "));
}
