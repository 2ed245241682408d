//! Continuous work beside the resolver, each a task told when the state changed. The
//! cluster agent (overlay networks) today; a netlink link watch belongs here too.

use tokio::sync::watch;

use crate::{cluster, config::Config};

/// Starts every watcher this instance needs.
pub fn start(cfg: &Config, changed: &watch::Sender<()>) {
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
