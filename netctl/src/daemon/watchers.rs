//! Continuous work beside the resolver: the host's interfaces, the conntrack sweep and the
//! qdiscs of container veths (threads of their own) and the cluster agent (overlay networks, a task told when the state changed).

use tokio::sync::watch;

use crate::{base::config::Config, cluster};

/// Starts every watcher this instance needs.
pub fn start(cfg: &Config, changed: &watch::Sender<()>) {
    super::links::start();
    super::conntrack::start(cfg);
    super::shaping::start(cfg);
    if let Some(cluster) = &cfg.cluster {
        tokio::spawn(cluster::agent::run(
            cfg.clone(),
            cluster.clone(),
            changed.subscribe(),
        ));
    }
}
