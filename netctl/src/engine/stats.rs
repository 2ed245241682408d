//! What the dataplane counted, by hook, container, network, published port and drop
//! reason, with conntrack's fill: for `netctl stats` and the daemon's metrics.

use std::{collections::BTreeMap, fmt::Write};

use anyhow::Result;
use netctl_common::stats::EndpointCounters;
use serde_json::{json, Value};

use crate::{kernel::dataplane::Dataplane, model::state::State};

fn counters_json(c: &EndpointCounters) -> Value {
    json!({"tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes, "rx_packets": c.rx_packets,
           "rx_bytes": c.rx_bytes, "drops": c.drops})
}

/// Everything `stats` shows, as JSON (the table is printed from it).
pub fn collect(dp: &Dataplane, state: &State) -> Result<Value> {
    let hooks = dp.hook_stats()?;
    let drops = dp.drop_stats()?;
    let [(ct_used, ct_cap), (new_used, new_cap)] = dp.ct_occupancy()?;
    let per_ep = dp.endpoint_stats()?;
    let hits = dp.port_hits()?;
    let mut containers = serde_json::Map::new();
    let mut networks: BTreeMap<String, EndpointCounters> = state
        .networks
        .keys()
        .map(|n| (n.clone(), EndpointCounters::default()))
        .collect();
    for c in state.containers.values() {
        let mut sum = EndpointCounters::default();
        for ep in &c.endpoints {
            let veth = nix::net::if_::if_nametoindex(ep.host_veth.as_str()).ok();
            if let Some(v) = veth.and_then(|i| per_ep.get(&i)) {
                sum.add(v);
                networks.entry(ep.network.clone()).or_default().add(v);
            }
        }
        containers.insert(c.name.clone(), counters_json(&sum));
    }
    let mut ports = Vec::new();
    for c in state.containers.values() {
        for p in &c.ports {
            let proto = match p.proto {
                crate::model::ports::Proto::Tcp => netctl_common::proto::TCP,
                crate::model::ports::Proto::Udp => netctl_common::proto::UDP,
            };
            let hit = |ip| hits.get(&(ip, p.host_port, proto)).copied().unwrap_or(0);
            let mut connections = hit(p.host_ip);
            // An IPv6-only container's ports on every address are counted as `[::]`'s.
            if p.host_ip.is_unspecified() && p.host_ip.is_ipv4() {
                connections += hit(std::net::Ipv6Addr::UNSPECIFIED.into());
            }
            ports.push(
                json!({"container": c.name, "port": crate::model::ports::describe(p),
                "connections": connections}),
            );
        }
    }
    Ok(json!({
        "hooks": hooks.iter().map(|(h, c)| (h.name().to_string(),
            json!({"packets": c.packets, "bytes": c.bytes, "drops": c.drops}))).collect::<serde_json::Map<_, _>>(),
        "containers": containers,
        "networks": networks.iter().map(|(n, c)| (n.clone(), counters_json(c))).collect::<serde_json::Map<_, _>>(),
        "ports": ports,
        "drops": drops.iter().map(|(r, n)| (r.name().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "conntrack": {"entries": ct_used + new_used, "capacity": ct_cap,
                      "unconfirmed": new_used, "unconfirmed_capacity": new_cap},
    }))
}

/// The counters in Prometheus' text format (version 0.0.4).
pub fn prometheus(v: &Value) -> String {
    let mut out = String::new();
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let obj = |key: &str| v[key].as_object().cloned().unwrap_or_default();
    for (field, help) in [
        ("packets", "Packets each eBPF hook saw."),
        ("bytes", "Bytes each eBPF hook saw."),
        ("drops", "Packets each eBPF hook dropped."),
    ] {
        let rows = obj("hooks")
            .iter()
            .map(|(h, c)| (labels(&[("hook", h)]), num(&c[field])))
            .collect();
        family(&format!("netctl_hook_{field}_total"), "counter", help, rows);
    }
    let rows = obj("drops")
        .iter()
        .map(|(r, n)| (labels(&[("reason", r)]), num(n)))
        .collect();
    family(
        "netctl_drops_total",
        "counter",
        "Packets the datapath dropped, by reason (netctl stats, README).",
        rows,
    );
    for (scope, key) in [("container", "containers"), ("network", "networks")] {
        for field in ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "drops"] {
            let rows = obj(key)
                .iter()
                .map(|(name, c)| (labels(&[(scope, name)]), num(&c[field])))
                .collect();
            family(
                &format!("netctl_{scope}_{field}_total"),
                "counter",
                &format!("{field} of each {scope}, as the datapath counted them."),
                rows,
            );
        }
    }
    let rows = v["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let l = labels(&[
                ("container", p["container"].as_str().unwrap_or("")),
                ("port", p["port"].as_str().unwrap_or("")),
            ]);
            (l, num(&p["connections"]))
        })
        .collect();
    family(
        "netctl_published_port_connections_total",
        "counter",
        "New connections to each published port.",
        rows,
    );
    let ct = &v["conntrack"];
    for (name, field, help) in [
        (
            "netctl_conntrack_entries",
            "entries",
            "Connection-tracking entries in use.",
        ),
        (
            "netctl_conntrack_unconfirmed_entries",
            "unconfirmed",
            "Entries of flows not confirmed yet.",
        ),
        (
            "netctl_conntrack_capacity",
            "capacity",
            "Entries the confirmed-flow table holds.",
        ),
    ] {
        family(name, "gauge", help, vec![(String::new(), num(&ct[field]))]);
    }
    out
}

/// `{a="x",b="y"}` with Prometheus' escapes.
fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_escaped_labels() {
        let v = json!({
            "hooks": {"uplink-ingress": {"packets": 3, "bytes": 300, "drops": 1}},
            "drops": {"isolation": 2},
            "containers": {"we\"b": {"tx_packets": 1, "tx_bytes": 2, "rx_packets": 3, "rx_bytes": 4, "drops": 0}},
            "networks": {},
            "ports": [{"container": "web", "port": "0.0.0.0:8080->80/tcp", "connections": 5}],
            "conntrack": {"entries": 10, "capacity": 100, "unconfirmed": 1, "unconfirmed_capacity": 25},
        });
        let text = prometheus(&v);
        assert!(
            text.contains("# TYPE netctl_hook_packets_total counter\n"),
            "{text}"
        );
        assert!(text.contains("netctl_hook_packets_total{hook=\"uplink-ingress\"} 3\n"));
        assert!(text.contains("netctl_drops_total{reason=\"isolation\"} 2\n"));
        assert!(
            text.contains("netctl_container_rx_bytes_total{container=\"we\\\"b\"} 4\n"),
            "{text}"
        );
        assert!(text.contains(
            "netctl_published_port_connections_total{container=\"web\",port=\"0.0.0.0:8080->80/tcp\"} 5\n"
        ));
        assert!(
            text.contains("# TYPE netctl_conntrack_entries gauge\nnetctl_conntrack_entries 10\n")
        );
    }
}
