//! Prometheus metrics: the daemon answers `GET /metrics` on `STATE_DIR/metrics.sock` (and on
//! `NETCTL_METRICS_ADDR` when set) with the datapath's counters, the embedded DNS's per
//! network, conntrack evictions and, on a member host, the cluster lease's age.
//! `netctl stats --format prometheus` prints the same (asked of the daemon).

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UnixListener},
};

use super::dns::stats::Stats;
use super::log::say;
use crate::{base::config::Config, kernel::dataplane::Dataplane, store::Store};

/// Listens for scrapes until the daemon ends.
pub fn start(cfg: &Config, dns: Stats) {
    let path = crate::model::paths::metrics_socket(&cfg.state_dir);
    // One daemon per state directory (the pid file): a socket left here is a dead one's.
    let _ = std::fs::remove_file(&path);
    match UnixListener::bind(&path) {
        Ok(l) => {
            // Root only, as the rest of the state directory.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            let cfg = cfg.clone();
            let dns = dns.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    tokio::spawn(answer(s, cfg.clone(), dns.clone()));
                }
            });
        }
        Err(e) => say(&format!(
            "metrics: cannot listen on {}: {e}",
            path.display()
        )),
    }
    if let Some(addr) = cfg.metrics_addr {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    say(&format!("metrics: listening on {addr}"));
                    while let Ok((s, _)) = l.accept().await {
                        tokio::spawn(answer(s, cfg.clone(), dns.clone()));
                    }
                }
                Err(e) => say(&format!("metrics: cannot listen on {addr}: {e}")),
            }
        });
    }
}

/// One scrape: a request of at most 8 KiB within 5 s, the text, and the connection closed.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    cfg: Config,
    dns: Stats,
) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    })
    .await;
    let request = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if read.is_err() || !request.starts_with("GET ") {
        ("400 Bad Request", "GET /metrics\n".to_string())
    } else {
        match tokio::task::spawn_blocking(move || text(&cfg, &dns)).await {
            Ok(Ok(t)) => ("200 OK", t),
            Ok(Err(e)) => ("503 Service Unavailable", format!("{e:#}\n")),
            Err(_) => ("500 Internal Server Error", String::new()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn text(cfg: &Config, dns: &Stats) -> Result<String> {
    let dp = Dataplane::open_existing(cfg).context("the datapath is not loaded yet")?;
    let state = Store::new(&cfg.state_dir, cfg.lock_timeout).snapshot()?;
    let mut out = crate::engine::stats::prometheus(&crate::engine::stats::collect(&dp, &state)?);
    out.push_str(&dns.prometheus(|gw| {
        let net = state.networks.values().find(|n| n.gateway() == Some(gw))?;
        Some(net.name.clone())
    }));
    out.push_str(&super::conntrack::prometheus());
    if cfg.cluster.is_some() {
        out.push_str(&lease_age(&cfg.state_dir));
    }
    Ok(out)
}

fn lease_age(state_dir: &Path) -> String {
    let status = crate::cluster::agent::read_status(state_dir);
    let age = status.filter(|s| s.renewed > 0).map_or(-1, |s| {
        crate::model::state::now().saturating_sub(s.renewed) as i64
    });
    format!(
        "# HELP netctl_cluster_lease_age_seconds Seconds since the cluster agent last renewed this host's lease (-1: never).\n\
         # TYPE netctl_cluster_lease_age_seconds gauge\nnetctl_cluster_lease_age_seconds {age}\n"
    )
}
