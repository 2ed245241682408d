//! The daemon's part in the cluster: it keeps this host's lease alive, keeps the store in
//! step with the local state (the host's record and its endpoints), and the remote-container
//! map in step with the store — a watch applies remote changes within a moment. When the
//! store goes away it keeps trying, and resyncs everything when it is back.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{
    base::config::Config,
    kernel::dataplane::Dataplane,
    kernel::wireguard::{self, Wireguard},
    model::state::State,
};
use crate::{
    cluster::endpoints,
    cluster::store::{Claim, Conn},
    cluster::ClusterConfig,
    model::overlay::{self, EndpointRecord, HostRecord, OverlayNetwork},
};

/// Runs until the process ends. `changed` ticks when the local state changed.
pub async fn run(
    cfg: Config,
    cluster: ClusterConfig,
    mut changed: tokio::sync::watch::Receiver<()>,
) {
    let mut last_error = String::new();
    let mut fenced = false;
    // Without a key this host publishes no WireGuard identity: no peer sends it encrypted
    // traffic, and what its containers send on encrypted overlays is dropped.
    let wg = Wireguard::new(&cfg.state_dir, &cfg.wireguard)
        .map_err(|e| eprintln!("cluster: encrypted overlays unavailable: {e:#}"))
        .ok();
    if !cluster.security.tls() {
        eprintln!(
            "cluster: warning: {} is reached over plain http (kv.insecure): whoever reaches it controls the overlay",
            cluster.display
        );
    }
    loop {
        if let Err(e) = session(&cfg, &cluster, wg.as_ref(), &mut changed, &mut fenced).await {
            let e = format!("{e:#}");
            let before = read_status(&cfg.state_dir).unwrap_or_default();
            // A lease not renewed for twice its time is likely gone, and this host's view of
            // the cluster stale: its containers' overlay traffic stops until the host is
            // registered again. Its own addresses cannot be given away before four lease times
            // (one for the lease, three of quarantine), so the fence comes first; a shorter
            // outage of the store (a restart) does not stop traffic.
            let grace = overlay::fence_after_secs(cluster.lease_ttl);
            let lapsed = crate::model::state::now().saturating_sub(before.renewed) >= grace;
            if lapsed && !fenced {
                match fence(&cfg) {
                    Ok(()) => {
                        fenced = true;
                        eprintln!("cluster: lease not renewed for {grace} s: overlay traffic fenced until this host is registered again");
                    }
                    Err(f) => eprintln!("cluster: fencing failed: {f:#}"),
                }
            }
            let _ = write_status(
                &cfg,
                &AgentStatus {
                    connected: false,
                    error: Some(e.clone()),
                    fenced,
                    ..before
                },
            );
            if e != last_error {
                eprintln!("cluster: {e}; retrying");
                last_error = e;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows the WireGuard device (a command may have made or removed it); a failure is said
/// and leaves encrypted traffic stopped, never sent in the clear.
fn refresh_device(wg: Option<&Wireguard>) {
    // On a thread of its own: the netlink handle runs a runtime, which this task's cannot.
    let refreshed = std::thread::scope(|s| s.spawn(|| wg.map(Wireguard::refresh)).join());
    if let Ok(Some(Err(e))) = refreshed {
        // Said once per problem (it is tried again at every check).
        static SAID: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
        let e = format!("{e:#}");
        if SAID.lock().map_or(true, |mut s| s.insert(e.clone())) {
            eprintln!("cluster: WireGuard device {}: {e}", wireguard::DEV);
        }
    }
}

/// No remote container in the datapath: nothing goes into the tunnel and nothing out of it
/// reaches a container.
fn fence(cfg: &Config) -> Result<()> {
    if let Some(dp) = Dataplane::open_existing(cfg) {
        dp.fence_overlay()?;
    }
    Ok(())
}

async fn session(
    cfg: &Config,
    cluster: &ClusterConfig,
    wg: Option<&Wireguard>,
    changed: &mut tokio::sync::watch::Receiver<()>,
    fenced: &mut bool,
) -> Result<()> {
    let conn = Conn::connect(cluster).await?;
    let lease = ensure_lease(&conn, cfg).await?;
    refresh_device(wg);
    let mut conflicts = publish(&conn, cfg, wg, lease).await?;
    let mut read_at = sync_remotes(&conn, cfg, wg).await?;
    if std::mem::take(fenced) {
        eprintln!("cluster: registered again: overlay traffic flows");
    }
    let mut watch = conn.watch(read_at).await?;
    eprintln!(
        "cluster: connected to {} ({}), lease {lease:x}",
        cluster.display,
        cluster.security.describe()
    );
    let ttl = cluster.lease_ttl as u64;
    let renewed = |conflicts: &Vec<String>| {
        write_status(
            cfg,
            &AgentStatus {
                connected: true,
                lease: format!("{lease:x}"),
                renewed: crate::model::state::now(),
                error: None,
                fenced: false,
                conflicts: conflicts.clone(),
            },
        )
    };
    // Registered (the lease checked or granted) counts as renewed: a store that goes away
    // before the first renewal must not fence a host that was just registered.
    renewed(&conflicts)?;
    let mut renew = tokio::time::interval(Duration::from_millis(ttl * 1000 / 3));
    let mut rotation =
        tokio::time::interval(wg.map_or(Duration::from_secs(3600), Wireguard::rotation_check));
    loop {
        tokio::select! {
            _ = rotation.tick() => {
                let Some(wg) = wg else { continue };
                // Also brings back a device whose engine ended or whose setup failed.
                refresh_device(Some(wg));
                match wg.rotate_if_due() {
                    Ok(false) => {}
                    Ok(true) => {
                        eprintln!("cluster: WireGuard key rotated");
                        conflicts = publish(&conn, cfg, Some(wg), lease).await?;
                    }
                    Err(e) => eprintln!("cluster: rotating the WireGuard key: {e:#}"),
                }
            }
            _ = renew.tick() => {
                if !conn.renew(lease).await? {
                    bail!("this host's lease ran out");
                }
                renewed(&conflicts)?;
            }
            msg = watch.message() => {
                let Some(resp) = msg.context("watching the store")? else {
                    bail!("the store ended the watch");
                };
                if resp.canceled() {
                    bail!("the store cancelled the watch");
                }
                if resp.events().is_empty() {
                    continue;
                }
                read_at = sync_remotes(&conn, cfg, wg).await?.max(read_at);
            }
            r = changed.changed() => {
                if r.is_err() {
                    bail!("the daemon is stopping");
                }
                refresh_device(wg);
                conflicts = publish(&conn, cfg, wg, lease).await?;
                sync_remotes(&conn, cfg, wg).await?;
            }
        }
    }
}

/// The recorded lease while it lives, else a new one (recorded for the commands).
async fn ensure_lease(conn: &Conn, cfg: &Config) -> Result<i64> {
    if let Some(id) = endpoints::recorded_lease(&cfg.state_dir) {
        if conn.lease_alive(id).await? {
            return Ok(id);
        }
    }
    let id = conn.grant_lease(conn.cfg.lease_ttl).await?;
    endpoints::record_lease(&cfg.state_dir, id)?;
    Ok(id)
}

/// What `netctl info` shows of the agent: written by it at every renewal and failure.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct AgentStatus {
    pub connected: bool,
    /// The lease this host's keys live under (hex, as etcdctl prints it).
    pub lease: String,
    /// When the lease was last renewed (seconds since the epoch; 0: never).
    pub renewed: u64,
    /// Why the agent is not connected, when it is not.
    pub error: Option<String>,
    /// The lease lapsed: no overlay traffic until the host is registered again.
    #[serde(default)]
    pub fenced: bool,
    /// This host's containers whose overlay address another host holds in the store (given
    /// away while this host was cut off): they get no overlay traffic until removed.
    #[serde(default)]
    pub conflicts: Vec<String>,
}

fn status_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("cluster-agent.json")
}

fn write_status(cfg: &Config, s: &AgentStatus) -> Result<()> {
    crate::base::atomic_file::write_cache(
        &status_path(&cfg.state_dir),
        &serde_json::to_vec(s)?,
        0o600,
    )
}

/// The agent's last word, if it has written one.
pub fn read_status(state_dir: &std::path::Path) -> Option<AgentStatus> {
    serde_json::from_slice(&std::fs::read(status_path(state_dir)).ok()?).ok()
}

/// This host's record, and its endpoints exactly as the local state has them: missing ones
/// claimed again (their holder is this host, even in quarantine), ones under an old lease
/// moved to the current one, ones the state does not know (a command killed after claiming,
/// an `rm` while the store was away) released. The state is read under its lock, which is
/// let go before the store is talked to: a slow store never holds up the host's commands.
/// Returns the conflicts: containers whose address the store gives another host.
async fn publish(
    conn: &Conn,
    cfg: &Config,
    wg: Option<&Wireguard>,
    lease: i64,
) -> Result<Vec<String>> {
    let (state, _) = read_state(cfg).await?;
    let me = conn.cfg.advertise;
    let subnets = state
        .networks
        .values()
        .filter(|n| n.vni.is_none())
        .filter_map(|n| n.ipv4.as_ref().map(|v4| v4.subnet))
        .collect();
    let subnets6 = state
        .networks
        .values()
        .filter(|n| n.vni.is_none())
        .filter_map(|n| n.ipv6.as_ref().map(|v6| v6.subnet))
        .collect();
    let record = HostRecord {
        addr: me,
        subnets,
        subnets6,
        wireguard: wg.map(Wireguard::identity),
    };
    conn.register_host(&record, lease).await?;

    let want = own_endpoints(&state, me);
    let (have, _) = conn.all_endpoints().await?;
    let (nets, _) = conn.networks().await?;
    let mut conflicts = Vec::new();
    for (net, ip, rec) in &want {
        let existing = have.iter().find(|(n, a, _)| n == net && a == ip);
        let other = match existing {
            Some((_, _, e)) if e.value.endpoint_id == rec.endpoint_id => {
                conn.claim_again(net, *ip, rec, e.mod_revision, lease)
                    .await?;
                continue;
            }
            Some((_, _, e)) => e.value.host,
            None => {
                let Some(n) = nets.iter().find(|n| &n.value.name == net) else {
                    eprintln!(
                        "cluster: network {net} of container {} is gone from the store",
                        rec.container
                    );
                    continue;
                };
                match conn.claim(net, n.create_revision, *ip, rec, lease).await? {
                    Claim::Claimed | Claim::Taken => continue,
                    Claim::Held(h) => h.host,
                }
            }
        };
        conflicts.push(format!(
            "{ip} on {net}: container {} here, host {other} in the store",
            rec.container
        ));
    }
    for c in &conflicts {
        crate::cluster::store::skipped(
            c.as_bytes(),
            &format!("address conflict ({c}): the store's holder keeps it; the container here gets no overlay traffic"),
        );
    }
    let holders = conn.all_holders().await?;
    let unknown =
        |want: &[(String, Ipv4Addr, EndpointRecord)]| -> BTreeSet<(String, Ipv4Addr, String)> {
            let mine = have
                .iter()
                .filter(|(_, _, e)| e.value.host == me)
                .map(|(net, ip, e)| (net.clone(), *ip, e.value.endpoint_id.clone()));
            let held = holders
                .iter()
                .filter(|(_, _, h)| h.value.host == me)
                .map(|(net, ip, h)| (net.clone(), *ip, h.value.endpoint_id.clone()));
            mine.chain(held)
                .filter(|(net, ip, id)| {
                    !want
                        .iter()
                        .any(|(n, a, r)| n == net && a == ip && &r.endpoint_id == id)
                })
                .collect()
        };
    if unknown(&want).is_empty() {
        return Ok(conflicts);
    }
    // A command may have claimed one of them after the first read and not saved yet. Decided
    // again under the lock: a claim in the state then, or announced by a live command that has
    // not reached the lock yet (`endpoints::pending_claims`), stays; the rest is nobody's and
    // no command will ever commit it, so it is released after the lock is let go.
    let (state, pending) = read_state(cfg).await?;
    for (net, ip, endpoint_id) in unknown(&own_endpoints(&state, me)) {
        if !pending.contains(&endpoint_id) {
            conn.release(&net, ip, &endpoint_id).await?;
        }
    }
    Ok(conflicts)
}

/// The state, read under its lock (released before this returns), and the claims live
/// commands announced then (`endpoints::pending_claims`).
async fn read_state(cfg: &Config) -> Result<(State, BTreeSet<String>)> {
    let dir = cfg.state_dir.clone();
    let store = crate::store::Store::new(&dir, cfg.lock_timeout);
    tokio::task::spawn_blocking(move || -> Result<_> {
        let locked = store.lock()?;
        let pending = crate::cluster::endpoints::pending_claims(&dir);
        Ok((locked.into_state(), pending))
    })
    .await?
}

/// The overlay endpoints of this host's containers, as the store should have them.
fn own_endpoints(state: &State, me: Ipv4Addr) -> Vec<(String, Ipv4Addr, EndpointRecord)> {
    let mut out = Vec::new();
    for c in state.containers.values() {
        for ep in &c.endpoints {
            let Some(net) = state.networks.get(&ep.network).filter(|n| n.vni.is_some()) else {
                continue;
            };
            if let Some(ip) = overlay::claim_of(net, ep) {
                out.push((
                    ep.network.clone(),
                    ip,
                    EndpointRecord {
                        host: me,
                        container_id: c.id.clone(),
                        container: c.name.clone(),
                        endpoint_id: ep.endpoint_id.clone(),
                        mac: ep.mac.clone(),
                        aliases: ep.aliases.clone(),
                    },
                ));
            }
        }
    }
    out
}

/// A container of another host, as the resolver and `inspect` see it.
#[derive(Serialize)]
pub struct RemoteName {
    pub network: String,
    pub ip: Ipv4Addr,
    pub container: String,
    pub container_id: String,
    pub aliases: Vec<String>,
    pub host: Ipv4Addr,
}

/// Where the daemon keeps the names of other hosts' containers (for the resolver).
pub fn remote_names_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("cluster-endpoints.json")
}

/// Reads every endpoint and puts other hosts' into the remote-container map; returns the
/// revision read at.
async fn sync_remotes(conn: &Conn, cfg: &Config, wg: Option<&Wireguard>) -> Result<i64> {
    let (eps, read_at) = conn.all_endpoints().await?;
    let (nets, _) = conn.networks().await?;
    let hosts = conn.hosts_leased().await?;
    let host_leases: BTreeMap<Ipv4Addr, i64> =
        hosts.iter().map(|(h, lease)| (h.addr, *lease)).collect();
    let mut encrypted: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = BTreeMap::new();
    let nets: BTreeMap<&str, &OverlayNetwork> = nets
        .iter()
        .map(|n| (n.value.name.as_str(), &n.value))
        .collect();
    let me = conn.cfg.advertise;
    let mut remotes = BTreeMap::new();
    let mut remotes6 = BTreeMap::new();
    let mut names = Vec::new();
    let mut per_host: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (net, ip, e) in &eps {
        let Some(n) = nets.get(net.as_str()) else {
            continue;
        };
        if e.value.host == me {
            continue;
        }
        // Only what a member host wrote about its own containers, in bounds: anyone who
        // reaches the store could write the rest.
        let key = format!("endpoints/{net}/{ip}");
        let count = per_host.entry(e.value.host).or_default();
        let problem = overlay::record_problem(n, *ip, &e.value)
            .or_else(|| {
                (host_leases.get(&e.value.host) != Some(&e.lease) || e.lease == 0).then(|| {
                    format!(
                        "not written under the lease of host {}, which it names",
                        e.value.host
                    )
                })
            })
            .or_else(|| {
                (*count >= overlay::MAX_RECORDS_PER_HOST).then(|| {
                    format!(
                        "host {} has more than {} records",
                        e.value.host,
                        overlay::MAX_RECORDS_PER_HOST
                    )
                })
            });
        if let Some(why) = problem {
            crate::cluster::store::skipped(key.as_bytes(), &why);
            continue;
        }
        *count += 1;
        if crate::model::options::encrypted(&n.options) && n.ipv4 {
            encrypted.entry(e.value.host).or_default().push(*ip);
        }
        let remote = netctl_common::overlay::Remote {
            host: u32::from_ne_bytes(e.value.host.octets()),
            vni: n.vni,
        };
        if n.ipv4 {
            remotes.insert(u32::from_ne_bytes(ip.octets()), remote);
        }
        if let Some(ip6) = n.ip6_of(*ip) {
            // The MAC its host gave it (not the record's word for it).
            let mac = crate::model::addr::parse_mac(&n.mac_of(*ip));
            remotes6.insert(
                ip6.octets(),
                netctl_common::overlay::Remote6 {
                    remote,
                    mac,
                    _pad: [0; 2],
                },
            );
        }
        names.push(RemoteName {
            network: net.clone(),
            ip: *ip,
            container: e.value.container.clone(),
            container_id: e.value.container_id.clone(),
            aliases: e.value.aliases.clone(),
            host: e.value.host,
        });
    }
    if let Some(dp) = Dataplane::open_existing(cfg) {
        let n = dp.set_remotes(&remotes, &remotes6)?;
        if n > 0 {
            let hosts: BTreeSet<u32> = remotes.values().map(|r| r.host).collect();
            eprintln!(
                "cluster: {} remote containers on {} hosts ({n} changed)",
                remotes.len(),
                hosts.len()
            );
        }
    }
    if let Some(wg) = wg {
        let peers = wireguard_peers(&hosts, encrypted);
        if let Err(e) = wg.set_peers(peers) {
            eprintln!("cluster: WireGuard peers: {e:#}");
        }
    }
    crate::base::atomic_file::write_cache(
        &remote_names_path(cfg),
        &serde_json::to_vec(&names)?,
        0o600,
    )?;
    Ok(read_at)
}

/// The hosts with containers on encrypted overlays, as WireGuard peers: each one's
/// containers are its allowed addresses. A host that published no usable key gets nothing
/// (its containers are unreachable on those networks, never reached in the clear).
fn wireguard_peers(
    hosts: &[(HostRecord, i64)],
    encrypted: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
) -> Vec<wireguard::Peer> {
    let mut peers = Vec::new();
    for (host, allowed) in encrypted {
        let identity = hosts
            .iter()
            .find(|(h, _)| h.addr == host)
            .and_then(|(h, _)| h.wireguard.as_ref());
        let key = identity.and_then(|w| wireguard::decode_key(&w.public_key));
        match (identity, key) {
            (Some(w), Some(public_key)) => peers.push(wireguard::Peer {
                public_key,
                endpoint: std::net::SocketAddrV4::new(host, w.port),
                allowed,
            }),
            _ => crate::cluster::store::skipped(
                format!("hosts/{host}").as_bytes(),
                "it has containers on encrypted overlays but publishes no WireGuard key: they are unreachable from here",
            ),
        }
    }
    peers
}
