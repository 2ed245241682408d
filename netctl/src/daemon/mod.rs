//! `netctl daemon`: the one long-running process of an instance, for what must run
//! continuously — the embedded DNS resolver, the host's interfaces, the conntrack sweep, the
//! cluster agent. Started
//! on demand by the commands ([`lifecycle`]), never by hand; one per state directory
//! ([`pidfile`]); follows the saved state ([`reload`]) and exits when no network needs it.
//! It runs in the network namespace of the command that started it, as netctl does.

mod conntrack;
pub mod dns;
mod links;
pub mod log;
mod metrics;
pub mod reload;
mod shaping;
mod spares;
mod watchers;

use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::base::config::Config;

/// The fallback poll of the files the daemon depends on.
const POLL: Duration = Duration::from_millis(250);

/// The daemon's body. Exit status 0 also when another daemon already runs.
pub fn main() -> Result<i32> {
    crate::base::sigpipe::ignore();
    let cfg = Config::for_daemon()?;
    crate::store::private_dir(&cfg.state_dir)?;
    let Some(_claim) = crate::kernel::pidfile::claim(&cfg.state_dir)? else {
        eprintln!(
            "netctl daemon: already running for {}",
            cfg.state_dir.display()
        );
        return Ok(0);
    };
    raise_open_files();
    // Out of the caller's group: stopping the unit of the runtime or command that started
    // the daemon must not stop DNS and the cluster agent for every container.
    let group = format!(
        "netctl-daemon-{:08x}",
        crate::kernel::topology::instance_group(&cfg.state_dir)
    );
    let groups = crate::kernel::cgroup::own_group(&group).unwrap_or_else(|e| {
        log::say(&format!("warning: staying in the caller's cgroup: {e:#}"));
        Vec::new()
    });
    // One thread: a question is microseconds of work, and the host's cores are the
    // datapath's. (A thread per UDP listener blocked in recvfrom was tried: 4 % less CPU per
    // local answer, 35 % more per forwarded one — see docs/BENCHMARKS.md.)
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let keeper = spares::start(&cfg);
    let served = rt.block_on(serve(cfg, &keeper));
    keeper.stop();
    crate::kernel::cgroup::leave(&groups);
    served
}

/// The daemon holds a socket per DNS client connection: its descriptor limit goes up to
/// the hard limit (the soft one is often 1024).
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn serve(cfg: Config, spares: &spares::Keeper) -> Result<i32> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    log::say(&format!(
        "started (pid {}) for {}",
        std::process::id(),
        cfg.state_dir.display()
    ));
    let (changed, _) = tokio::sync::watch::channel(());
    watchers::start(&cfg, &changed);
    // DNS64 only where the programs do NAT64 (the `MODERN` ones).
    let nat64 = crate::kernel::dataplane::features::Features::detect(&cfg.features_deny)
        .is_ok_and(|f| f.modern());
    let mut resolver = dns::Resolver::new(nat64);
    metrics::start(&cfg, resolver.stats());
    let mut watch = reload::Watch::new(&cfg);
    let mut poll = tokio::time::interval(POLL);
    let mut listening = Vec::new();
    loop {
        match reload::load(&cfg) {
            Ok(snap) => {
                if !crate::kernel::daemon::needed(&snap.state) {
                    log::say("no network needs the daemon any more: exiting");
                    return Ok(0);
                }
                for p in resolver.reload(&snap.state, &snap.remote, &snap.host.nameservers) {
                    log::say(&format!("dns: cannot listen on {p}"));
                }
                if resolver.addresses() != listening {
                    listening = resolver.addresses();
                    log::say(&format!("dns: listening on {listening:?} port 53"));
                }
                crate::kernel::daemon::acknowledge(&cfg.state_dir, snap.generation)?;
                changed.send_replace(());
                spares.poke();
            }
            // Keep serving what was loaded last; the next change is tried again.
            Err(e) => log::say(&format!("reload failed: {e:#}")),
        }
        watch.changed();
        loop {
            tokio::select! {
                _ = hup.recv() => break,
                _ = term.recv() => return Ok(0),
                _ = int.recv() => return Ok(0),
                _ = poll.tick() => if watch.changed() { break },
            }
        }
    }
}
