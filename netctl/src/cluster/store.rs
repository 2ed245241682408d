//! The etcd side: every read-modify-write a transaction on what was read.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    overlay::{EndpointRecord, HostRecord, OverlayNetwork},
    ClusterConfig,
};

const ROOT: &str = "/netctl/v1/";

fn network_key(name: &str) -> String {
    format!("{ROOT}networks/{name}")
}
fn endpoints_prefix(network: &str) -> String {
    format!("{ROOT}endpoints/{network}/")
}
fn endpoint_key(network: &str, ip: Ipv4Addr) -> String {
    format!("{ROOT}endpoints/{network}/{ip}")
}
fn host_key(addr: Ipv4Addr) -> String {
    format!("{ROOT}hosts/{addr}")
}
const NETWORKS_REV: &str = "/netctl/v1/rev/networks";
fn endpoints_rev(network: &str) -> String {
    format!("{ROOT}rev/endpoints/{network}")
}

/// How long one request may take before the store counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to the cluster store, for synchronous callers (the CLI); the daemon uses
/// [`Store::client`] from its own runtime.
pub struct Store {
    rt: tokio::runtime::Runtime,
    client: Client,
    pub cfg: ClusterConfig,
}

/// One key's value with the revisions a transaction compares.
pub struct Versioned<T> {
    pub value: T,
    pub create_revision: i64,
    pub mod_revision: i64,
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).with_context(|| {
        format!(
            "cluster store key {} holds something this netctl cannot read",
            String::from_utf8_lossy(key)
        )
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

/// Connects with the bounded timeouts every store request uses.
pub async fn connect_async(cfg: &ClusterConfig) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(TIMEOUT);
    let unreachable = |e: etcd_client::Error| {
        anyhow!(
            "cluster store {} is unreachable ({}): start it, or check NETCTL_CLUSTER_STORE",
            cfg.display,
            reason(&e)
        )
    };
    let mut client = tokio::time::timeout(TIMEOUT, Client::connect(&cfg.endpoints, Some(opts)))
        .await
        .map_err(|_| anyhow!("cluster store {} is unreachable (timed out): start it, or check NETCTL_CLUSTER_STORE", cfg.display))?
        .map_err(unreachable)?;
    // Connecting is lazy: one real request tells whether anyone answers.
    tokio::time::timeout(TIMEOUT, client.get(NETWORKS_REV, None))
        .await
        .map_err(|_| anyhow!("cluster store {} is unreachable (timed out): start it, or check NETCTL_CLUSTER_STORE", cfg.display))?
        .map_err(unreachable)?;
    Ok(client)
}

/// The gist of a transport error ("connection refused"), not tonic's nested report.
fn reason(e: &etcd_client::Error) -> String {
    let text = format!("{e:?}");
    for known in [
        "Connection refused",
        "No route to host",
        "Network is unreachable",
        "timed out",
        "deadline",
    ] {
        if text.contains(known) {
            return known.to_lowercase();
        }
    }
    e.to_string().chars().take(120).collect()
}

impl Store {
    pub fn connect(cfg: &ClusterConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(connect_async(cfg))?;
        Ok(Self {
            rt,
            client,
            cfg: cfg.clone(),
        })
    }

    fn run<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(TIMEOUT, f).await })
            .map_err(|_| anyhow!("cluster store {}: {what} timed out", self.cfg.display))?
            .map_err(|e| anyhow!("cluster store {}: {what}: {}", self.cfg.display, reason(&e)))
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// Every overlay network, and the store revision they were read at.
    pub fn networks(&self) -> Result<(Vec<Versioned<OverlayNetwork>>, i64)> {
        let mut c = self.client();
        let resp = self.run(
            "listing networks",
            c.get(
                format!("{ROOT}networks/"),
                Some(GetOptions::new().with_prefix()),
            ),
        )?;
        let read_at = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::new();
        for kv in resp.kvs() {
            out.push(Versioned {
                value: decode(kv.key(), kv.value())?,
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            });
        }
        Ok((out, read_at))
    }

    pub fn network(&self, name: &str) -> Result<Option<Versioned<OverlayNetwork>>> {
        let mut c = self.client();
        let resp = self.run("reading a network", c.get(network_key(name), None))?;
        resp.kvs()
            .first()
            .map(|kv| {
                Ok(Versioned {
                    value: decode(kv.key(), kv.value())?,
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                })
            })
            .transpose()
    }

    /// Member hosts (alive: their lease holds the key).
    pub fn hosts(&self) -> Result<Vec<HostRecord>> {
        let mut c = self.client();
        let resp = self.run(
            "listing hosts",
            c.get(
                format!("{ROOT}hosts/"),
                Some(GetOptions::new().with_prefix()),
            ),
        )?;
        resp.kvs()
            .iter()
            .map(|kv| decode(kv.key(), kv.value()))
            .collect()
    }

    /// Stores a new network if no network was made or removed since revision `read_at`
    /// (when the caller listed them); false when another host got in between (read again
    /// and retry).
    pub fn create_network(&self, net: &OverlayNetwork, read_at: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(NETWORKS_REV, CompareOp::Less, read_at + 1),
                Compare::create_revision(network_key(&net.name), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(network_key(&net.name), encode(net), None),
                TxnOp::put(NETWORKS_REV, net.id.as_bytes(), None),
            ]);
        let mut c = self.client();
        Ok(self.run("creating a network", c.txn(txn))?.succeeded())
    }

    /// Removes a network no host has endpoints on.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        for _ in 0..10 {
            let Some(net) = self.network(name)? else {
                bail!("no such network: {name}");
            };
            let (eps, read_at) = self.endpoints_at(&endpoints_prefix(name))?;
            if !eps.is_empty() {
                let mut hosts: Vec<String> =
                    eps.iter().map(|(_, e)| e.value.host.to_string()).collect();
                hosts.dedup();
                bail!(
                    "network {name} has active endpoints ({} on host {}): remove those containers first",
                    eps.len(),
                    hosts.join(", ")
                );
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(network_key(name), CompareOp::Equal, net.mod_revision),
                    Compare::mod_revision(endpoints_rev(name), CompareOp::Less, read_at + 1),
                ])
                .and_then([
                    TxnOp::delete(network_key(name), None),
                    TxnOp::delete(endpoints_rev(name), None),
                    TxnOp::put(NETWORKS_REV, name.as_bytes(), None),
                ]);
            let mut c = self.client();
            if self.run("removing a network", c.txn(txn))?.succeeded() {
                return Ok(());
            }
        }
        bail!("network {name} keeps changing under this command: try again")
    }

    /// The endpoints of a network, by address.
    pub fn endpoints(&self, network: &str) -> Result<Vec<(Ipv4Addr, Versioned<EndpointRecord>)>> {
        Ok(self.endpoints_at(&endpoints_prefix(network))?.0)
    }

    /// Every endpoint of every overlay network: (network, address, record).
    pub fn all_endpoints(&self) -> Result<Vec<(String, Ipv4Addr, EndpointRecord)>> {
        let mut c = self.client();
        let resp = self.run(
            "listing endpoints",
            c.get(
                format!("{ROOT}endpoints/"),
                Some(GetOptions::new().with_prefix()),
            ),
        )?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            if let Some((net, ip)) = parse_endpoint_key(kv.key()) {
                out.push((net, ip, decode(kv.key(), kv.value())?));
            }
        }
        Ok(out)
    }

    /// Endpoints under `prefix`, and the store revision they were read at.
    #[allow(clippy::type_complexity)]
    fn endpoints_at(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(Ipv4Addr, Versioned<EndpointRecord>)>, i64)> {
        let mut c = self.client();
        let resp = self.run(
            "listing endpoints",
            c.get(prefix.to_string(), Some(GetOptions::new().with_prefix())),
        )?;
        let read_at = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::new();
        for kv in resp.kvs() {
            if let Some((_, ip)) = parse_endpoint_key(kv.key()) {
                out.push((
                    ip,
                    Versioned {
                        value: decode(kv.key(), kv.value())?,
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                    },
                ));
            }
        }
        Ok((out, read_at))
    }

    /// Claims `ip` on `net` for `rec` under the host's lease: true when it was free and the
    /// network is still the one read (`net_created` is its create revision).
    pub fn claim(
        &self,
        network: &str,
        net_created: i64,
        ip: Ipv4Addr,
        rec: &EndpointRecord,
        lease: i64,
    ) -> Result<bool> {
        let txn = Txn::new()
            .when([
                Compare::create_revision(network_key(network), CompareOp::Equal, net_created),
                Compare::create_revision(endpoint_key(network, ip), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(
                    endpoint_key(network, ip),
                    encode(rec),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(endpoints_rev(network), rec.endpoint_id.as_bytes(), None),
            ]);
        let mut c = self.client();
        Ok(self.run("claiming an address", c.txn(txn))?.succeeded())
    }

    /// Gives an address back, if it is still this endpoint's.
    pub fn release(&self, network: &str, ip: Ipv4Addr, endpoint_id: &str) -> Result<()> {
        for (addr, e) in self.endpoints(network)? {
            if addr != ip || e.value.endpoint_id != endpoint_id {
                continue;
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    endpoint_key(network, ip),
                    CompareOp::Equal,
                    e.mod_revision,
                )])
                .and_then([
                    TxnOp::delete(endpoint_key(network, ip), None),
                    TxnOp::put(endpoints_rev(network), endpoint_id.as_bytes(), None),
                ]);
            let mut c = self.client();
            self.run("releasing an address", c.txn(txn))?;
        }
        Ok(())
    }

    /// A lease for this host's keys (kept alive by the daemon).
    pub fn grant_lease(&self, ttl: i64) -> Result<i64> {
        let mut c = self.client();
        Ok(self.run("granting a lease", c.lease_grant(ttl, None))?.id())
    }

    /// Whether a lease still exists (its TTL has not run out).
    pub fn lease_alive(&self, id: i64) -> Result<bool> {
        let mut c = self.client();
        let r = self.run("reading a lease", c.lease_time_to_live(id, None))?;
        Ok(r.ttl() > 0)
    }

    pub fn register_host(&self, rec: &HostRecord, lease: i64) -> Result<()> {
        let mut c = self.client();
        self.run(
            "registering this host",
            c.put(
                host_key(rec.addr),
                encode(rec),
                Some(PutOptions::new().with_lease(lease)),
            ),
        )?;
        Ok(())
    }
}

/// `/netctl/v1/endpoints/<network>/<ip>` → (network, ip).
pub fn parse_endpoint_key(key: &[u8]) -> Option<(String, Ipv4Addr)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(ROOT)?.strip_prefix("endpoints/")?;
    let (net, ip) = rest.rsplit_once('/')?;
    Some((net.to_string(), ip.parse().ok()?))
}

/// The prefix the daemon watches for endpoint changes.
pub fn endpoints_watch_prefix() -> String {
    format!("{ROOT}endpoints/")
}

/// The prefix the daemon watches for network changes.
pub fn networks_watch_prefix() -> String {
    format!("{ROOT}networks/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_round_trip() {
        let k = endpoint_key("ov1", Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(k, "/netctl/v1/endpoints/ov1/10.0.0.2");
        assert_eq!(
            parse_endpoint_key(k.as_bytes()),
            Some(("ov1".into(), Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(parse_endpoint_key(b"/netctl/v1/networks/x"), None);
    }
}
