//! Continuous work beside the resolver: the host's interfaces (a thread of its own) and the
//! cluster agent (overlay networks, a task told when the state changed).

use tokio::sync::watch;

use crate::{cluster, config::Config};

/// Starts every watcher this instance needs.
pub fn start(cfg: &Config, changed: &watch::Sender<()>) {
    super::links::start();
    match cluster::ClusterConfig::from_env() {
        Ok(Some(cluster)) => {
            tokio::spawn(cluster::agent::run(
                cfg.clone(),
                cluster,
                changed.subscribe(),
            ));
        }
        Ok(None) => {}
        Err(e) => super::say(&format!("cluster agent not started: {e:#}")),
    }
}
