//! The conntrack sweep: flows idle past their timeout are removed and the per-container
//! counts that the quota and the fill watermark are checked against are made exact again. A
//! thread of its own: a full table is a quarter of a million map look-ups.

use std::time::Duration;

use super::log::say;
use crate::{base::config::Config, kernel::dataplane::Dataplane};

/// Often enough that expired flows never hold the table at its watermark for long.
const EVERY: Duration = Duration::from_secs(10);

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
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    say(&format!("conntrack sweep failed: {e:#}"));
                }
                Err(_) => {}
            }
        }
    });
}
