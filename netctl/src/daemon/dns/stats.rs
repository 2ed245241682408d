//! What the resolver did, per listener (a network's gateway), for the metrics: questions,
//! where their answers came from, what was refused or failed, and how long answers took.
//! Plain atomics: the listeners count without locks.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

/// Upper bounds of the latency histogram, in microseconds (Prometheus `le`, in seconds).
const BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 2_500_000,
];

/// One listener's counts.
#[derive(Default)]
pub struct Counters {
    /// Every question received (UDP datagrams and TCP messages), answered or not.
    pub queries: AtomicU64,
    /// Answered from the table (names, NXDOMAIN, refusals alike).
    pub local: AtomicU64,
    /// Relayed upstream.
    pub forwarded: AtomicU64,
    /// Relayed, and no upstream server answered (SERVFAIL sent).
    pub forward_errors: AtomicU64,
    /// Not answered: the asking container's share of forwarding slots was in use, or the
    /// daemon's (the client retries).
    pub dropped: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Counters {
    /// An answer sent `took` after its question came.
    pub fn answered(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// One of a listener's counters, with its metric's name and help.
type Field = fn(&Counters) -> &AtomicU64;

/// The counts of every listener, by gateway; the listeners keep their own `Arc`.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<BTreeMap<IpAddr, Arc<Counters>>>>);

impl Stats {
    /// The counters of the listener on `gw` (kept while it listens, so a re-bound listener
    /// goes on counting).
    pub fn of(&self, gw: IpAddr) -> Arc<Counters> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(gw)
            .or_default()
            .clone()
    }

    /// Forgets the listeners not on `gateways` any more.
    pub fn keep(&self, gateways: &std::collections::BTreeSet<IpAddr>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|gw, _| gateways.contains(gw));
    }

    /// Prometheus text, each listener labelled with its network (`network` names the one
    /// whose gateway an address is).
    pub fn prometheus(&self, network: impl Fn(IpAddr) -> Option<String>) -> String {
        let all: Vec<(String, Arc<Counters>)> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(gw, c)| (network(*gw).unwrap_or_else(|| gw.to_string()), c.clone()))
            .collect();
        let mut out = String::new();
        let counters: [(&str, &str, Field); 5] = [
            ("queries", "Questions the embedded DNS received", |c| {
                &c.queries
            }),
            (
                "local_answers",
                "Questions answered from the embedded DNS's own names",
                |c| &c.local,
            ),
            ("forwarded", "Questions relayed to upstream servers", |c| {
                &c.forwarded
            }),
            (
                "forward_errors",
                "Relayed questions no upstream server answered (SERVFAIL sent)",
                |c| &c.forward_errors,
            ),
            (
                "dropped",
                "Questions not answered: the asking container's forwarding share was in use",
                |c| &c.dropped,
            ),
        ];
        for (name, help, field) in counters {
            out.push_str(&format!(
                "# HELP netctl_dns_{name}_total {help}.\n# TYPE netctl_dns_{name}_total counter\n"
            ));
            for (net, c) in &all {
                out.push_str(&format!(
                    "netctl_dns_{name}_total{{network=\"{}\"}} {}\n",
                    escape(net),
                    field(c).load(Relaxed)
                ));
            }
        }
        out.push_str(
            "# HELP netctl_dns_response_seconds Time from a question to its answer.\n\
             # TYPE netctl_dns_response_seconds histogram\n",
        );
        for (net, c) in &all {
            let net = escape(net);
            let mut cumulative = 0;
            for (b, n) in BUCKETS_US.iter().zip(&c.buckets) {
                cumulative += n.load(Relaxed);
                out.push_str(&format!(
                    "netctl_dns_response_seconds_bucket{{network=\"{net}\",le=\"{}\"}} {cumulative}\n",
                    *b as f64 / 1e6
                ));
            }
            let count = c.count.load(Relaxed);
            out.push_str(&format!(
                "netctl_dns_response_seconds_bucket{{network=\"{net}\",le=\"+Inf\"}} {count}\n\
                 netctl_dns_response_seconds_sum{{network=\"{net}\"}} {}\n\
                 netctl_dns_response_seconds_count{{network=\"{net}\"}} {count}\n",
                c.sum_us.load(Relaxed) as f64 / 1e6
            ));
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_per_network() {
        let s = Stats::default();
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        let c = s.of(gw);
        c.queries.fetch_add(3, Relaxed);
        c.local.fetch_add(2, Relaxed);
        c.answered(Duration::from_micros(80));
        c.answered(Duration::from_millis(3));
        c.answered(Duration::from_secs(9));
        let text = s.prometheus(|g| (g == gw).then(|| "web".to_string()));
        assert!(
            text.contains("netctl_dns_queries_total{network=\"web\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("netctl_dns_local_answers_total{network=\"web\"} 2\n"));
        assert!(
            text.contains("netctl_dns_response_seconds_bucket{network=\"web\",le=\"0.0001\"} 1\n")
        );
        assert!(
            text.contains("netctl_dns_response_seconds_bucket{network=\"web\",le=\"0.005\"} 2\n")
        );
        assert!(text.contains("netctl_dns_response_seconds_bucket{network=\"web\",le=\"2.5\"} 2\n"));
        assert!(
            text.contains("netctl_dns_response_seconds_bucket{network=\"web\",le=\"+Inf\"} 3\n")
        );
        assert!(text.contains("netctl_dns_response_seconds_count{network=\"web\"} 3\n"));
        // The same counters for a listener that is bound again; gone once its network is.
        assert!(Arc::ptr_eq(&c, &s.of(gw)));
        s.keep(&Default::default());
        assert!(!s.prometheus(|_| None).contains("10.1.0.1"));
    }
}
