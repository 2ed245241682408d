//! The etcd side: every read-modify-write a transaction on what was read. [`Conn`] is the
//! async client (the daemon's); [`Store`] the same calls for synchronous callers (commands).

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::Ipv4Addr,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    cluster::ClusterConfig,
    model::overlay::{network_problem, EndpointRecord, Holder, HostRecord, OverlayNetwork},
};

/// What a claim of an address found.
#[derive(Debug)]
pub enum Claim {
    Claimed,
    /// Someone else got in first (or the network changed): read again and retry.
    Taken,
    /// Another endpoint's, whose owner may come back for it (see [`Holder`]).
    Held(Holder),
}

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
fn held_key(network: &str, ip: Ipv4Addr) -> String {
    format!("{ROOT}held/{network}/{ip}")
}
fn quarantine_key(network: &str, ip: Ipv4Addr) -> String {
    format!("{ROOT}quarantine/{network}/{ip}")
}
fn host_key(addr: Ipv4Addr) -> String {
    format!("{ROOT}hosts/{addr}")
}
const NETWORKS_REV: &str = "/netctl/v1/rev/networks";
fn endpoints_rev(network: &str) -> String {
    format!("{ROOT}rev/endpoints/{network}")
}
/// What the daemon watches: endpoints and networks.
pub const WATCH_PREFIX: &str = ROOT;

/// How long one request may take before the store counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One key's value with the revisions a transaction compares.
pub struct Versioned<T> {
    pub value: T,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key lives under (0: none): whose record it is.
    pub lease: i64,
}

/// An endpoint as listed: (network, address, record with revisions).
pub type Listed = (String, Ipv4Addr, Versioned<EndpointRecord>);

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).with_context(|| {
        format!(
            "cluster store key {} holds something this netctl cannot read",
            String::from_utf8_lossy(key)
        )
    })
}

/// The value, or None (said once per key and process) when it cannot be read: one bad record
/// never stops the others from being used.
fn usable<T>(key: &[u8], v: Result<T>) -> Option<T> {
    v.map_err(|e| skipped(key, &format!("{e:#}"))).ok()
}

/// Says, once per key and process, that a record of the store is not used and why.
pub fn skipped(key: &[u8], why: &str) {
    static SAID: std::sync::Mutex<BTreeSet<Vec<u8>>> = std::sync::Mutex::new(BTreeSet::new());
    let new = SAID
        .lock()
        .map(|mut s| s.insert(key.to_vec()))
        .unwrap_or(true);
    if new {
        eprintln!(
            "netctl: cluster store record {} not used: {why}",
            String::from_utf8_lossy(key)
        );
    }
}

/// A key's value with its revisions, when it decodes (else skipped, said once).
fn versioned<T: DeserializeOwned>(kv: &etcd_client::KeyValue) -> Option<Versioned<T>> {
    Some(Versioned {
        value: usable(kv.key(), decode(kv.key(), kv.value()))?,
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

/// An overlay network as read, when it decodes and passes [`network_problem`].
fn network_of(kv: &etcd_client::KeyValue) -> Option<Versioned<OverlayNetwork>> {
    let net = versioned::<OverlayNetwork>(kv)?;
    if let Some(why) = network_problem(&net.value) {
        skipped(kv.key(), &why);
        return None;
    }
    Some(net)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
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
    // etcd's authentication and roles, said as what to change.
    for (known, say) in [
        (
            "permission denied",
            "permission denied: the etcd user's role must allow reading and writing keys under /netctl/",
        ),
        (
            "authentication failed",
            "authentication failed: check kv.username and kv.passwordfile",
        ),
        (
            "user name is empty",
            "the store requires a user: give kv.username and kv.passwordfile",
        ),
        (
            "invalid auth token",
            "the store refused the login token: check kv.username and kv.passwordfile",
        ),
    ] {
        if text.contains(known) {
            return say.into();
        }
    }
    e.to_string().chars().take(120).collect()
}

/// Timeouts, TLS (the store's CA, this host's certificate) and the etcd user, as configured.
fn connect_options(cfg: &ClusterConfig) -> Result<ConnectOptions> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("reading the cluster store's {what} {}", path.display()))
    };
    let sec = &cfg.security;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(TIMEOUT);
    if let Some(ca) = &sec.ca {
        let mut tls = etcd_client::TlsOptions::new().ca_certificate(
            etcd_client::Certificate::from_pem(read(ca, "CA (kv.cacertfile)")?),
        );
        if let Some((cert, key)) = &sec.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read(cert, "certificate (kv.certfile)")?,
                read(key, "key (kv.keyfile)")?,
            ));
        }
        opts = opts.with_tls(tls);
    }
    if let Some((user, file)) = &sec.user {
        let password = String::from_utf8(read(file, "password (kv.passwordfile)")?)
            .context("the cluster store's password file is not UTF-8")?;
        opts = opts.with_user(
            user.clone(),
            password.trim_end_matches(['\r', '\n']).to_string(),
        );
    }
    Ok(opts)
}

/// A connection to the cluster store.
#[derive(Clone)]
pub struct Conn {
    client: Client,
    pub cfg: ClusterConfig,
}

impl Conn {
    /// Connects and makes one request: connecting is lazy, a real answer tells the store is
    /// there.
    pub async fn connect(cfg: &ClusterConfig) -> Result<Self> {
        let unreachable = |why: String| {
            anyhow!(
                "cluster store {} is unreachable ({why}): start it, or check NETCTL_CLUSTER_STORE",
                cfg.display
            )
        };
        let opts = connect_options(cfg)?;
        let client = tokio::time::timeout(TIMEOUT, Client::connect(&cfg.endpoints, Some(opts)))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(reason(&e)))?;
        let conn = Conn {
            client,
            cfg: cfg.clone(),
        };
        let mut c = conn.client.clone();
        tokio::time::timeout(TIMEOUT, c.get(NETWORKS_REV, None))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(reason(&e)))?;
        Ok(conn)
    }

    fn c(&self) -> Client {
        self.client.clone()
    }

    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        tokio::time::timeout(TIMEOUT, f)
            .await
            .map_err(|_| anyhow!("cluster store {}: {what} timed out", self.cfg.display))?
            .map_err(|e| anyhow!("cluster store {}: {what}: {}", self.cfg.display, reason(&e)))
    }

    /// Every overlay network, and the store revision they were read at.
    pub async fn networks(&self) -> Result<(Vec<Versioned<OverlayNetwork>>, i64)> {
        let mut c = self.c();
        let resp = self
            .call(
                "listing networks",
                c.get(
                    format!("{ROOT}networks/"),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        let read_at = resp.header().map_or(0, |h| h.revision());
        let out = resp.kvs().iter().filter_map(network_of).collect();
        Ok((out, read_at))
    }

    pub async fn network(&self, name: &str) -> Result<Option<Versioned<OverlayNetwork>>> {
        let mut c = self.c();
        let resp = self
            .call("reading a network", c.get(network_key(name), None))
            .await?;
        Ok(resp.kvs().first().and_then(network_of))
    }

    /// Member hosts (alive: their lease holds the key).
    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        Ok(self
            .hosts_leased()
            .await?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }

    /// Member hosts' addresses and the leases their keys live under: an endpoint record
    /// counts only under the lease of the host it names.
    pub async fn host_leases(&self) -> Result<BTreeMap<Ipv4Addr, i64>> {
        Ok(self
            .hosts_leased()
            .await?
            .into_iter()
            .map(|(h, lease)| (h.addr, lease))
            .collect())
    }

    pub async fn hosts_leased(&self) -> Result<Vec<(HostRecord, i64)>> {
        let mut c = self.c();
        let resp = self
            .call(
                "listing hosts",
                c.get(
                    format!("{ROOT}hosts/"),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((usable(kv.key(), decode(kv.key(), kv.value()))?, kv.lease())))
            .collect())
    }

    /// Stores a new network if no network was made or removed since revision `read_at`
    /// (when the caller listed them); false when another host got in between (read again
    /// and retry).
    pub async fn create_network(&self, net: &OverlayNetwork, read_at: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(NETWORKS_REV, CompareOp::Less, read_at + 1),
                Compare::create_revision(network_key(&net.name), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(network_key(&net.name), encode(net), None),
                TxnOp::put(NETWORKS_REV, net.id.as_bytes(), None),
            ]);
        let mut c = self.c();
        Ok(self
            .call("creating a network", c.txn(txn))
            .await?
            .succeeded())
    }

    /// Removes a network no host has endpoints on.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        for _ in 0..10 {
            let Some(net) = self.network(name).await? else {
                bail!("no such network: {name}");
            };
            let (eps, read_at) = self.endpoints_at(&endpoints_prefix(name)).await?;
            if !eps.is_empty() {
                let mut hosts: Vec<String> = eps
                    .iter()
                    .map(|(_, _, e)| e.value.host.to_string())
                    .collect();
                hosts.sort();
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
                    // Addresses held for hosts that never came back go with the network.
                    TxnOp::delete(
                        format!("{ROOT}held/{name}/"),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                    TxnOp::delete(
                        format!("{ROOT}quarantine/{name}/"),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                    TxnOp::put(NETWORKS_REV, name.as_bytes(), None),
                ]);
            let mut c = self.c();
            if self
                .call("removing a network", c.txn(txn))
                .await?
                .succeeded()
            {
                return Ok(());
            }
        }
        bail!("network {name} keeps changing under this command: try again")
    }

    /// The endpoints of a network.
    pub async fn endpoints(&self, network: &str) -> Result<Vec<Listed>> {
        Ok(self.endpoints_at(&endpoints_prefix(network)).await?.0)
    }

    /// Every endpoint of every overlay network, and the revision they were read at.
    pub async fn all_endpoints(&self) -> Result<(Vec<Listed>, i64)> {
        self.endpoints_at(&format!("{ROOT}endpoints/")).await
    }

    async fn endpoints_at(&self, prefix: &str) -> Result<(Vec<Listed>, i64)> {
        self.listed("listing endpoints", prefix, "endpoints/").await
    }

    /// Every `<kind><network>/<ip>` key under `prefix` that decodes, and the revision read at.
    async fn listed<T: DeserializeOwned>(
        &self,
        what: &str,
        prefix: &str,
        kind: &str,
    ) -> Result<(Vec<(String, Ipv4Addr, Versioned<T>)>, i64)> {
        let mut c = self.c();
        let resp = self
            .call(
                what,
                c.get(prefix.to_string(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let read_at = resp.header().map_or(0, |h| h.revision());
        let out = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let (net, ip) = parse_key(kv.key(), kind)?;
                Some((net, ip, versioned(kv)?))
            })
            .collect();
        Ok((out, read_at))
    }

    /// Who holds the addresses of `network` ([`Holder`]), with revisions; bad records are
    /// skipped (and so hold nothing).
    pub async fn holders(&self, network: &str) -> Result<BTreeMap<Ipv4Addr, Versioned<Holder>>> {
        Ok(self
            .held_under(&format!("{ROOT}held/{network}/"))
            .await?
            .into_iter()
            .map(|(_, ip, h)| (ip, h))
            .collect())
    }

    /// Every held address of every network: (network, address, holder).
    pub async fn all_holders(&self) -> Result<Vec<(String, Ipv4Addr, Versioned<Holder>)>> {
        self.held_under(&format!("{ROOT}held/")).await
    }

    async fn held_under(&self, prefix: &str) -> Result<Vec<(String, Ipv4Addr, Versioned<Holder>)>> {
        Ok(self
            .listed("listing held addresses", prefix, "held/")
            .await?
            .0)
    }

    /// The addresses of `network` whose quarantine runs (its leased key is there).
    pub async fn quarantined(&self, network: &str) -> Result<BTreeSet<Ipv4Addr>> {
        let mut c = self.c();
        let resp = self
            .call(
                "listing quarantined addresses",
                c.get(
                    format!("{ROOT}quarantine/{network}/"),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                ),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| parse_key(kv.key(), "quarantine/").map(|(_, ip)| ip))
            .collect())
    }

    /// Starts the quarantine of an address whose owner's lease ran out (its holder record
    /// as `seen`, no endpoint record): a key that lives `secs` under a lease of its own.
    pub async fn start_quarantine(
        &self,
        network: &str,
        ip: Ipv4Addr,
        seen: &Versioned<Holder>,
        secs: i64,
    ) -> Result<()> {
        let lease = self.grant_lease(secs).await?;
        let marked = Holder {
            quarantined: true,
            ..seen.value.clone()
        };
        let txn = Txn::new()
            .when([
                Compare::mod_revision(held_key(network, ip), CompareOp::Equal, seen.mod_revision),
                Compare::create_revision(endpoint_key(network, ip), CompareOp::Equal, 0),
                Compare::create_revision(quarantine_key(network, ip), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(held_key(network, ip), encode(&marked), None),
                TxnOp::put(
                    quarantine_key(network, ip),
                    seen.value.host.to_string(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ]);
        let mut c = self.c();
        if !self
            .call("quarantining an address", c.txn(txn))
            .await?
            .succeeded()
        {
            // Someone else started it, or the owner came back: the lease is not needed.
            let mut c = self.c();
            let _ = self.call("revoking a lease", c.lease_revoke(lease)).await;
        }
        Ok(())
    }

    /// Claims `ip` on `network` for `rec` under the host's lease, if it has no endpoint
    /// record and no holder but this endpoint (coming back for it) or one whose quarantine is
    /// over, and the network is still the one read (`net_created` is its create revision).
    pub async fn claim(
        &self,
        network: &str,
        net_created: i64,
        ip: Ipv4Addr,
        rec: &EndpointRecord,
        lease: i64,
    ) -> Result<Claim> {
        let held = self.holder(network, ip).await?;
        let mut when = vec![
            Compare::create_revision(network_key(network), CompareOp::Equal, net_created),
            Compare::create_revision(endpoint_key(network, ip), CompareOp::Equal, 0),
        ];
        match &held {
            None => when.push(Compare::create_revision(
                held_key(network, ip),
                CompareOp::Equal,
                0,
            )),
            Some(h) if h.value.endpoint_id == rec.endpoint_id => when.push(Compare::mod_revision(
                held_key(network, ip),
                CompareOp::Equal,
                h.mod_revision,
            )),
            Some(h) if h.value.quarantined => {
                // Over once its key has gone with its lease.
                when.push(Compare::mod_revision(
                    held_key(network, ip),
                    CompareOp::Equal,
                    h.mod_revision,
                ));
                when.push(Compare::create_revision(
                    quarantine_key(network, ip),
                    CompareOp::Equal,
                    0,
                ));
            }
            Some(h) => return Ok(Claim::Held(h.value.clone())),
        }
        let holder = Holder {
            host: rec.host,
            endpoint_id: rec.endpoint_id.clone(),
            quarantined: false,
        };
        let txn = Txn::new().when(when).and_then([
            TxnOp::put(
                endpoint_key(network, ip),
                encode(rec),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(held_key(network, ip), encode(&holder), None),
            TxnOp::delete(quarantine_key(network, ip), None),
            TxnOp::put(endpoints_rev(network), rec.endpoint_id.as_bytes(), None),
        ]);
        let mut c = self.c();
        if self
            .call("claiming an address", c.txn(txn))
            .await?
            .succeeded()
        {
            return Ok(Claim::Claimed);
        }
        Ok(match self.holder(network, ip).await? {
            Some(h) if h.value.endpoint_id != rec.endpoint_id => Claim::Held(h.value),
            _ => Claim::Taken,
        })
    }

    async fn holder(&self, network: &str, ip: Ipv4Addr) -> Result<Option<Versioned<Holder>>> {
        let mut c = self.c();
        let resp = self
            .call(
                "reading an address's holder",
                c.get(held_key(network, ip), None),
            )
            .await?;
        Ok(resp.kvs().first().and_then(versioned))
    }

    /// Puts an endpoint this host holds under `lease` again (after a daemon restart the old
    /// lease would take it with it), if nobody changed it since `seen`.
    pub async fn claim_again(
        &self,
        network: &str,
        ip: Ipv4Addr,
        rec: &EndpointRecord,
        seen: i64,
        lease: i64,
    ) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                endpoint_key(network, ip),
                CompareOp::Equal,
                seen,
            )])
            .and_then([
                TxnOp::put(
                    endpoint_key(network, ip),
                    encode(rec),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                // Endpoints claimed before holders existed get theirs.
                TxnOp::put(
                    held_key(network, ip),
                    encode(&Holder {
                        host: rec.host,
                        endpoint_id: rec.endpoint_id.clone(),
                        quarantined: false,
                    }),
                    None,
                ),
            ]);
        let mut c = self.c();
        Ok(self
            .call("renewing an address", c.txn(txn))
            .await?
            .succeeded())
    }

    /// Gives an address back, if it is still this endpoint's: its record and its holder (a
    /// record that went with an expired lease leaves the holder to remove).
    pub async fn release(&self, network: &str, ip: Ipv4Addr, endpoint_id: &str) -> Result<()> {
        let mut c = self.c();
        let resp = self
            .call("reading an address", c.get(endpoint_key(network, ip), None))
            .await?;
        let record = resp.kvs().first().and_then(|kv| {
            let rec: EndpointRecord = decode(kv.key(), kv.value()).ok()?;
            (rec.endpoint_id == endpoint_id).then_some(kv.mod_revision())
        });
        let held = self
            .holder(network, ip)
            .await?
            .filter(|h| h.value.endpoint_id == endpoint_id);
        let (mut when, mut then) = (Vec::new(), Vec::new());
        if let Some(rev) = record {
            when.push(Compare::mod_revision(
                endpoint_key(network, ip),
                CompareOp::Equal,
                rev,
            ));
            then.push(TxnOp::delete(endpoint_key(network, ip), None));
            then.push(TxnOp::put(
                endpoints_rev(network),
                endpoint_id.as_bytes(),
                None,
            ));
        }
        if let Some(h) = held {
            when.push(Compare::mod_revision(
                held_key(network, ip),
                CompareOp::Equal,
                h.mod_revision,
            ));
            then.push(TxnOp::delete(held_key(network, ip), None));
            then.push(TxnOp::delete(quarantine_key(network, ip), None));
        }
        if then.is_empty() {
            return Ok(());
        }
        let mut c = self.c();
        self.call(
            "releasing an address",
            c.txn(Txn::new().when(when).and_then(then)),
        )
        .await?;
        Ok(())
    }

    /// A lease for this host's keys (kept alive by the daemon).
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64> {
        let mut c = self.c();
        Ok(self
            .call("granting a lease", c.lease_grant(ttl, None))
            .await?
            .id())
    }

    /// Whether a lease still exists (its TTL has not run out).
    pub async fn lease_alive(&self, id: i64) -> Result<bool> {
        let mut c = self.c();
        let r = self
            .call("reading a lease", c.lease_time_to_live(id, None))
            .await?;
        Ok(r.ttl() > 0)
    }

    /// Renews a lease once; false when it is gone.
    pub async fn renew(&self, id: i64) -> Result<bool> {
        let mut c = self.c();
        let (mut keeper, mut stream) = self
            .call("renewing the lease", c.lease_keep_alive(id))
            .await?;
        self.call("renewing the lease", keeper.keep_alive()).await?;
        let resp = self.call("renewing the lease", stream.message()).await?;
        Ok(resp.is_some_and(|r| r.ttl() > 0))
    }

    pub async fn register_host(&self, rec: &HostRecord, lease: i64) -> Result<()> {
        let mut c = self.c();
        self.call(
            "registering this host",
            c.put(
                host_key(rec.addr),
                encode(rec),
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        Ok(())
    }

    /// Watches everything netctl keeps, from `after` on.
    pub async fn watch(&self, after: i64) -> Result<WatchStream> {
        let mut c = self.c();
        self.call(
            "watching",
            c.watch(
                WATCH_PREFIX,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(after + 1),
                ),
            ),
        )
        .await
    }
}

/// Runs `f` with SIGPIPE blocked on this thread: the etcd client's writes to a closed
/// connection must fail, not kill the command (`base::sigpipe`).
fn block_on<T>(rt: &tokio::runtime::Runtime, f: impl Future<Output = T>) -> T {
    let _quiet = crate::base::sigpipe::Blocked::new();
    rt.block_on(f)
}

/// The same calls for synchronous callers (commands), on a small runtime of their own.
pub struct Store {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    pub cfg: ClusterConfig,
}

impl Store {
    pub fn connect(cfg: &ClusterConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let conn = block_on(&rt, Conn::connect(cfg))?;
        Ok(Self {
            rt,
            conn,
            cfg: cfg.clone(),
        })
    }

    fn block<T>(&self, f: impl Future<Output = T>) -> T {
        block_on(&self.rt, f)
    }

    pub fn networks(&self) -> Result<(Vec<Versioned<OverlayNetwork>>, i64)> {
        self.block(self.conn.networks())
    }
    pub fn network(&self, name: &str) -> Result<Option<Versioned<OverlayNetwork>>> {
        self.block(self.conn.network(name))
    }
    pub fn hosts(&self) -> Result<Vec<HostRecord>> {
        self.block(self.conn.hosts())
    }
    pub fn create_network(&self, net: &OverlayNetwork, read_at: i64) -> Result<bool> {
        self.block(self.conn.create_network(net, read_at))
    }
    pub fn remove_network(&self, name: &str) -> Result<()> {
        self.block(self.conn.remove_network(name))
    }
    pub fn endpoints(&self, network: &str) -> Result<Vec<Listed>> {
        self.block(self.conn.endpoints(network))
    }
    pub fn claim(
        &self,
        network: &str,
        net_created: i64,
        ip: Ipv4Addr,
        rec: &EndpointRecord,
        lease: i64,
    ) -> Result<Claim> {
        self.block(self.conn.claim(network, net_created, ip, rec, lease))
    }
    pub fn holders(&self, network: &str) -> Result<BTreeMap<Ipv4Addr, Versioned<Holder>>> {
        self.block(self.conn.holders(network))
    }
    pub fn quarantined(&self, network: &str) -> Result<BTreeSet<Ipv4Addr>> {
        self.block(self.conn.quarantined(network))
    }
    pub fn start_quarantine(
        &self,
        network: &str,
        ip: Ipv4Addr,
        seen: &Versioned<Holder>,
        secs: i64,
    ) -> Result<()> {
        self.block(self.conn.start_quarantine(network, ip, seen, secs))
    }
    pub fn release(&self, network: &str, ip: Ipv4Addr, endpoint_id: &str) -> Result<()> {
        self.block(self.conn.release(network, ip, endpoint_id))
    }
    pub fn grant_lease(&self, ttl: i64) -> Result<i64> {
        self.block(self.conn.grant_lease(ttl))
    }
    pub fn lease_alive(&self, id: i64) -> Result<bool> {
        self.block(self.conn.lease_alive(id))
    }
}

/// `/netctl/v1/endpoints/<network>/<ip>` → (network, ip).
pub fn parse_endpoint_key(key: &[u8]) -> Option<(String, Ipv4Addr)> {
    parse_key(key, "endpoints/")
}

/// `/netctl/v1/<kind><network>/<ip>` → (network, ip).
fn parse_key(key: &[u8], kind: &str) -> Option<(String, Ipv4Addr)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(ROOT)?.strip_prefix(kind)?;
    let (net, ip) = rest.rsplit_once('/')?;
    Some((net.to_string(), ip.parse().ok()?))
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
