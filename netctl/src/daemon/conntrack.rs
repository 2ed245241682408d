//! The conntrack sweep: flows idle past their timeout are removed and the per-container
//! counts that the quota and the fill watermark are checked against are made exact again. A
//! thread of its own: a full table is a quarter of a million map look-ups.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use super::log::say;
use crate::{base::config::Config, kernel::dataplane::Dataplane};

/// Often enough that expired flows never hold the table at its watermark for long.
const EVERY: Duration = Duration::from_secs(10);

/// Confirmed flows the kernel evicted from the full table since the daemon started (each a
/// connection that broke), as the sweeps found them.
static EVICTED: AtomicU64 = AtomicU64::new(0);

pub fn start(cfg: &Config) {
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        let mut failing = false;
        loop {
            std::thread::sleep(EVERY);
            super::log::bound();
            // The maps appear with the first command's reconcile.
            let Some(dp) = Dataplane::open_existing(&cfg) else {
                continue;
            };
            match dp.expire_flows() {
                Ok(swept) => {
                    EVICTED.fetch_add(swept.evicted, Relaxed);
                    failing = false;
                }
                Err(e) if !failing => {
                    failing = true;
                    say(&format!("conntrack sweep failed: {e:#}"));
                }
                Err(_) => {}
            }
        }
    });
}

/// The evictions for the metrics.
pub fn prometheus() -> String {
    format!(
        "# HELP netctl_conntrack_evictions_total Tracked flows the kernel evicted from the full conntrack table (found by the daemon's sweep, approximate).\n\
         # TYPE netctl_conntrack_evictions_total counter\nnetctl_conntrack_evictions_total {}\n",
        EVICTED.load(Relaxed)
    )
}
