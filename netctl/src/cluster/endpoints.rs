//! Containers on overlay networks: the network made part of this host (a local copy and its
//! bridge), addresses claimed cluster-wide under this host's lease, and given back when the
//! endpoints leave the state.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    cluster::store::{Claim, Store, Versioned},
    model::overlay::{self, EndpointRecord, Holder, OverlayNetwork},
};
use crate::{
    kernel::netlink::Netlink,
    kernel::topology,
    model::ipam,
    model::state::{self, State},
};

fn lease_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("cluster-lease")
}

/// The lease ID recorded for this host (the daemon keeps it alive).
pub fn recorded_lease(state_dir: &Path) -> Option<i64> {
    std::fs::read_to_string(lease_file(state_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn record_lease(state_dir: &Path, id: i64) -> Result<()> {
    crate::base::atomic_file::write(&lease_file(state_dir), id.to_string().as_bytes(), 0o600)
}

/// This host's lease: the recorded one while it lives, else a new one (recorded; the daemon
/// picks it up and renews it).
pub fn host_lease(store: &Store, state_dir: &Path) -> Result<i64> {
    if let Some(id) = recorded_lease(state_dir) {
        if store.lease_alive(id)? {
            return Ok(id);
        }
    }
    let id = store.grant_lease(store.cfg.lease_ttl)?;
    record_lease(state_dir, id)?;
    Ok(id)
}

/// The overlay network a user's name or ID refers to, if it is one.
pub fn lookup(store: &Store, r: &str) -> Result<Option<Versioned<OverlayNetwork>>> {
    if let Some(n) = store.network(r)? {
        return Ok(Some(n));
    }
    let (all, _) = store.networks()?;
    let mut hits: Vec<_> = all
        .into_iter()
        .filter(|n| !r.is_empty() && n.value.id.starts_with(r))
        .collect();
    match hits.len() {
        0 => Ok(None),
        1 => Ok(hits.pop()),
        n => bail!("{n} networks have an ID starting with {r}: give more of the ID, or the name"),
    }
}

/// Makes an overlay network part of this host: its local copy in the state and its bridge
/// (the VXLAN device comes with the reconcile).
pub fn materialize(nl: &Netlink, state: &mut State, ov: &OverlayNetwork, group: u32) -> Result<()> {
    if state.networks.get(&ov.name).is_some_and(|n| n.id == ov.id) {
        return Ok(());
    }
    if state.networks.contains_key(&ov.name) {
        bail!("network {} is a local network on this host and an overlay network in the cluster: remove one of them", ov.name);
    }
    let net = ov.local();
    if let Some((n, v4)) = state
        .networks
        .values()
        .filter_map(|n| Some((n, n.ipv4.as_ref()?)))
        .find(|(_, v4)| ov.ipv4 && ipam::overlaps(&v4.subnet, &ov.subnet))
    {
        bail!(
            "overlay network {} ({}) overlaps network {} ({}) of this host: remove one of them",
            ov.name,
            ov.subnet,
            n.name,
            v4.subnet
        );
    }
    if let Some((n, o6, v6)) = ov.subnet6.and_then(|o6| {
        state
            .networks
            .values()
            .filter_map(|n| Some((n, o6, n.ipv6.as_ref()?.subnet)))
            .find(|(_, o6, v6)| crate::model::ipam6::overlaps(o6, v6))
    }) {
        bail!(
            "overlay network {} ({o6}) overlaps network {} ({v6}) of this host: remove one of them",
            ov.name,
            n.name,
        );
    }
    topology::create_bridge(nl, &net, group)?;
    state.networks.insert(net.name.clone(), net);
    Ok(())
}

/// What a new endpoint on an overlay holds before the container exists.
pub struct Claimed {
    pub ip: Ipv4Addr,
    pub endpoint_id: String,
}

/// Claims an address on `ov` for a container: `requested` (the user's --ip), or a free one
/// from a random place of the range (never simply the lowest: see `ipam::allocate_spread`).
/// Retried when another host claims the same one at the same moment.
pub fn claim(
    store: &Store,
    ov: &Versioned<OverlayNetwork>,
    requested: Option<&str>,
    container_id: &str,
    container: &str,
    lease: i64,
    endpoint_id: String,
) -> Result<Claimed> {
    let mut net = ov.value.local();
    net.ipv4 = Some(ov.value.claims());
    let requested = requested.map(|r| ipam::parse_ip(r, "--ip")).transpose()?;
    if requested.is_some() && !ov.value.ipv4 {
        bail!(
            "--ip on IPv6-only overlay network {}: its containers have IPv6 addresses alone",
            ov.value.name
        );
    }
    if requested.is_some() && !ov.value.user_subnet {
        bail!("user specified IP address is supported only when connecting to networks with user configured subnets");
    }
    let name = &ov.value.name;
    let quarantine = overlay::quarantine_secs(store.cfg.lease_ttl);
    for _ in 0..50 {
        let endpoints: BTreeSet<Ipv4Addr> = store
            .endpoints(name)?
            .into_iter()
            .map(|(_, ip, _)| ip)
            .collect();
        let holders = store.holders(name)?;
        let plain: BTreeMap<Ipv4Addr, Holder> = holders
            .iter()
            .map(|(ip, h)| (*ip, h.value.clone()))
            .collect();
        let (used, orphaned) =
            overlay::held_addresses(&endpoints, &plain, &store.quarantined(name)?);
        // Addresses whose owner's lease ran out: their quarantine starts now.
        for ip in &orphaned {
            store.start_quarantine(name, *ip, &holders[ip], quarantine)?;
        }
        let ip = match requested {
            Some(ip) => {
                if let Some(h) = plain.get(&ip).filter(|_| !endpoints.contains(&ip)) {
                    if used.contains(&ip) {
                        bail!("{}", held_message(name, ip, h, quarantine));
                    }
                }
                ipam::check_static(&net, ip, &used)?;
                ip
            }
            None => {
                let v4 = net.ipv4.as_ref().context("overlay networks have IPv4")?;
                ipam::allocate_spread(name, v4, &used, spread_seed())?
            }
        };
        let rec = EndpointRecord {
            host: store.cfg.advertise,
            container_id: container_id.to_string(),
            container: container.to_string(),
            endpoint_id: endpoint_id.clone(),
            mac: ov.value.mac_of(ip),
            aliases: Vec::new(),
        };
        match store.claim(name, ov.create_revision, ip, &rec, lease)? {
            Claim::Claimed => return Ok(Claimed { ip, endpoint_id }),
            Claim::Held(h) if requested.is_some() => {
                bail!("{}", held_message(name, ip, &h, quarantine))
            }
            Claim::Held(_) | Claim::Taken => {}
        }
        if store
            .network(&ov.value.name)?
            .is_none_or(|n| n.create_revision != ov.create_revision)
        {
            bail!("network {} was removed meanwhile", ov.value.name);
        }
    }
    bail!(
        "could not claim an address on {}: the network is too busy, try again",
        ov.value.name
    )
}

/// Why a requested address cannot be had yet.
fn held_message(network: &str, ip: Ipv4Addr, h: &Holder, quarantine: i64) -> String {
    format!(
        "address {ip} on {network} belonged to a container on host {}, whose lease ran out: it stays reserved for that host for {quarantine} s after it is found orphaned (no split brain if the host comes back); pick another address or try again later",
        h.host
    )
}

/// Where in the range this claim starts looking: random.
fn spread_seed() -> u32 {
    u32::from_str_radix(&state::random_id()[..8], 16).unwrap_or(0)
}

/// Releases what [`gone`] found; the store being away only delays it (the daemon removes
/// this host's endpoints the state does not know when it reconnects).
pub fn release_gone(store: &Store, gone: &[(String, Ipv4Addr, String)]) -> Result<()> {
    for (net, ip, endpoint_id) in gone {
        store
            .release(net, *ip, endpoint_id)
            .with_context(|| format!("giving {ip} on {net} back to the cluster"))?;
    }
    Ok(())
}

/// An address claimed on an overlay network for a container, before the state lock is
/// taken: etcd is slow or away at times, and no other command waits for it meanwhile. Given
/// back unless [`Prepared::join`] hands it to the change.
pub struct Prepared {
    store: Option<Store>,
    ov: Versioned<OverlayNetwork>,
    claimed: Claimed,
    _pending: Pending,
}

/// A claim made outside the state lock, announced in `STATE_DIR/claims/<endpoint ID>` (the
/// claiming process's pid and start time) until the claim is in a change under the lock: the
/// agent never releases an endpoint that a live command is about to commit.
struct Pending(std::path::PathBuf);

impl Pending {
    fn announce(state_dir: &Path, endpoint_id: &str) -> Result<Self> {
        let dir = state_dir.join(CLAIMS_DIR);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(endpoint_id);
        let me = crate::kernel::process::own_mark();
        crate::base::atomic_file::write_cache(&path, me.as_bytes(), 0o600)?;
        Ok(Pending(path))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const CLAIMS_DIR: &str = "claims";

/// Endpoint IDs that live commands have claimed and not yet joined to a change (read under
/// the state lock); announcements of dead processes are removed.
pub fn pending_claims(state_dir: &Path) -> std::collections::BTreeSet<String> {
    let mut live = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(state_dir.join(CLAIMS_DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        // An announcement being written (the atomic write's temporary, not yet renamed: no
        // claim is made before it is) is its writer's to rename, unless the writer died.
        if let Some(writer) = crate::base::atomic_file::temporary_writer(&name) {
            if crate::kernel::pids::start_time(writer).is_none() {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if crate::kernel::process::marked_alive(&text).is_some() {
            live.insert(name);
        } else {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    live
}

impl Prepared {
    /// Under the lock: makes the network part of this host and hands the address to the
    /// change (given back if the change fails).
    pub fn join(
        mut self,
        ctx: &crate::engine::ctx::Ctx,
        tx: &mut crate::engine::ctx::Tx<'_>,
    ) -> Result<(Ipv4Addr, String)> {
        materialize(&ctx.nl, tx.state(), &self.ov.value, ctx.group)?;
        // Under the lock from here on: the agent waits for this change to end.
        let store = self.store.take().expect("joined once");
        let (net, ip, id) = (
            self.ov.value.name.clone(),
            self.claimed.ip,
            self.claimed.endpoint_id.clone(),
        );
        tx.on_abort(Box::new(move || {
            let _ = store.release(&net, ip, &id);
        }));
        Ok((ip, self.claimed.endpoint_id.clone()))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(store) = &self.store {
            let c = &self.claimed;
            let _ = store.release(&self.ov.value.name, c.ip, &c.endpoint_id);
        }
    }
}

/// Before a container joins the network `r` (run, network connect, a CNI ADD), and before
/// the state lock: when `r` is an overlay, an address claimed for the container. None for
/// local networks (as the state has them now), which need nothing of the store.
pub fn prepare(
    ctx: &crate::engine::ctx::Ctx,
    r: &str,
    requested: Option<&str>,
    container_id: &str,
    container: &str,
) -> Result<Option<Prepared>> {
    if !ctx.is_member() || crate::model::networks::is_predefined(r) {
        return Ok(None);
    }
    let local = ctx
        .store
        .snapshot()?
        .find_network(r)
        .is_ok_and(|n| n.vni.is_none());
    if local {
        return Ok(None);
    }
    let store = Store::connect(ctx.cluster_config()?)?;
    let Some(ov) = lookup(&store, r)? else {
        return Ok(None);
    };
    if crate::model::options::encrypted(&ov.value.options) {
        // A host that cannot encrypt does not join: its container could reach no one.
        crate::kernel::wireguard::transport(&ctx.cfg.wireguard)
            .map_err(|e| anyhow::anyhow!("network {}: {e:#}", ov.value.name))?;
    }
    // The lease is recorded in the state directory, which the first command makes.
    crate::store::private_dir(&ctx.cfg.state_dir)?;
    let lease = host_lease(&store, &ctx.cfg.state_dir)?;
    let endpoint_id = state::random_id();
    let pending = Pending::announce(&ctx.cfg.state_dir, &endpoint_id)?;
    let claimed = claim(
        &store,
        &ov,
        requested,
        container_id,
        container,
        lease,
        endpoint_id,
    )?;
    Ok(Some(Prepared {
        store: Some(store),
        ov,
        claimed,
        _pending: pending,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_being_written_are_left_to_their_writer() {
        let dir = std::env::temp_dir().join(format!("netctl-claims-{}", state::random_id()));
        let claims = dir.join(CLAIMS_DIR);
        std::fs::create_dir_all(&claims).unwrap();
        let me = std::process::id();
        let dead = 999_999_999u32; // above any pid_max
        let files = [
            ("live", crate::kernel::process::own_mark()),
            ("gone", format!("{dead} 1")),
            // The atomic write's temporary: created empty, renamed once written.
            (&*format!(".writing.{me}.tmp"), String::new()),
            (&*format!(".abandoned.{dead}.tmp"), String::new()),
        ]
        .map(|(n, t)| (n.to_string(), t));
        for (name, text) in &files {
            std::fs::write(claims.join(name), text).unwrap();
        }
        assert_eq!(pending_claims(&dir), ["live".to_string()].into());
        let mut left: Vec<String> = std::fs::read_dir(&claims)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [format!(".writing.{me}.tmp"), "live".to_string()]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
