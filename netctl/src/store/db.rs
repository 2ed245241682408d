//! The state's tables in SQLite (`state.db`, WAL): one row per network, container, endpoint,
//! published port and Docker reservation. Typed columns carry what other rows are checked
//! against (an address is unique on its network, a host socket is published once) and who
//! owns the row; the rest of a row is its JSON.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::model::{
    ports::{PortMapping, Proto},
    state::{Container, DockerEndpoint, DockerPool, Endpoint, Network, State, STATE_VERSION},
};

/// The tables (endpoints and ports kept in their container's order: read in one sweep).
/// `scope` says whose a network is (`local`, or `cluster`: this host's copy of
/// an overlay network kept in the cluster store); `engine` which front-end made a container
/// (`netctl`, `cni`, `docker`) and so which may remove it.
const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    scope TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    engine TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE endpoints (
    container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    network TEXT NOT NULL REFERENCES networks(name),
    ip TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (container, position),
    UNIQUE (network, ip)) WITHOUT ROWID;
CREATE TABLE ports (
    container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    host_ip TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    container_port INTEGER NOT NULL,
    proto TEXT NOT NULL,
    PRIMARY KEY (container, position),
    UNIQUE (proto, host_port, host_ip)) WITHOUT ROWID;
CREATE TABLE docker_endpoints (
    id TEXT PRIMARY KEY,
    network TEXT NOT NULL,
    ip TEXT NOT NULL,
    mac TEXT NOT NULL);
CREATE TABLE docker_pools (
    id TEXT PRIMARY KEY,
    subnet TEXT NOT NULL,
    addresses TEXT NOT NULL);
";

/// Opens an existing database for reading and writing. `busy` is how long a statement waits
/// for another process's write (commands are serialized by the state lock; readers never
/// wait in WAL mode, the daemon's reads included).
pub fn open(path: &Path, busy: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening the state database {}", path.display()))?;
    conn.busy_timeout(busy)?;
    // FULL: a commit is on disk when the command says it is done (a power cut loses nothing
    // a command reported).
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .with_context(|| format!("opening the state database {}", path.display()))?;
    Ok(conn)
}

/// Makes a new database at `path` (which must not exist) holding `state`.
pub fn create(path: &Path, state: &State) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Created root-only before SQLite opens it (its -wal and -shm files take this mode).
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut conn = open(path, Duration::from_secs(1))?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('version', ?1), ('generation', '1')",
        [STATE_VERSION.to_string()],
    )?;
    write_changes(&tx, &State::default(), state)?;
    tx.commit()?;
    Ok(())
}

/// The number of the last commit: every commit adds one (the daemon says which it serves).
pub fn generation(conn: &Connection) -> Result<u64> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The whole state, as of one moment (one read transaction), and that moment's generation.
pub fn load(conn: &mut Connection) -> Result<(State, u64)> {
    let tx = conn.transaction()?;
    let version: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if version.as_deref() != Some(&STATE_VERSION.to_string()) {
        bail!(
            "it has version {}, this netctl reads version {STATE_VERSION}",
            version.unwrap_or_else(|| "none".into())
        );
    }
    let generation = generation(&tx)?;
    let mut state = State {
        version: STATE_VERSION,
        ..Default::default()
    };
    {
        let mut q = tx.prepare_cached("SELECT name, body FROM networks")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            let n: Network = parse(r.get_ref(1)?.as_str()?, "network", &name)?;
            state.networks.insert(name, n);
        }
    }
    // Containers by ID while their endpoints and ports are added, then by name.
    let mut by_id: BTreeMap<String, Container> = BTreeMap::new();
    {
        let mut q = tx.prepare_cached("SELECT id, body FROM containers")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let c: Container = parse(r.get_ref(1)?.as_str()?, "container", &id)?;
            by_id.insert(id, c);
        }
    }
    {
        let mut q = tx
            .prepare_cached("SELECT container, body FROM endpoints ORDER BY container, position")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let ep: Endpoint = parse(r.get_ref(1)?.as_str()?, "endpoint of", &id)?;
            if let Some(c) = by_id.get_mut(&id) {
                c.endpoints.push(ep);
            }
        }
    }
    {
        let mut q = tx.prepare_cached(
            "SELECT container, host_ip, host_port, container_port, proto FROM ports
             ORDER BY container, position",
        )?;
        let mut rows = q.query([])?;
        let mut current: Option<&mut Container> = None;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str()?;
            if current.as_ref().is_none_or(|c| c.id != id) {
                current = by_id.get_mut(id);
            }
            let Some(c) = current.as_deref_mut() else {
                continue;
            };
            let proto = match r.get_ref(4)?.as_str()? {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                other => bail!("container {id}: a published port has protocol {other:?}"),
            };
            c.ports.push(PortMapping {
                host_ip: r
                    .get_ref(1)?
                    .as_str()?
                    .parse()
                    .with_context(|| format!("container {id}: a published port's host address"))?,
                host_port: r.get(2)?,
                container_port: r.get(3)?,
                proto,
            });
        }
    }
    state.containers = by_id.into_values().map(|c| (c.name.clone(), c)).collect();
    {
        let mut q = tx.prepare_cached("SELECT id, network, ip, mac FROM docker_endpoints")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let ip: String = r.get(2)?;
            let ep = DockerEndpoint {
                network: r.get(1)?,
                ip: ip
                    .parse()
                    .with_context(|| format!("Docker endpoint {id}: address {ip:?}"))?,
                mac: r.get(3)?,
            };
            state.docker.endpoints.insert(id, ep);
        }
    }
    {
        let mut q = tx.prepare_cached("SELECT id, subnet, addresses FROM docker_pools")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let subnet: String = r.get(1)?;
            let pool = DockerPool {
                subnet: subnet
                    .parse()
                    .with_context(|| format!("Docker pool {id}: subnet {subnet:?}"))?,
                addresses: parse(r.get_ref(2)?.as_str()?, "Docker pool", &id)?,
            };
            state.docker.pools.insert(id, pool);
        }
    }
    tx.commit()?;
    Ok((state, generation))
}

fn parse<T: serde::de::DeserializeOwned>(body: &str, what: &str, key: &str) -> Result<T> {
    serde_json::from_str(body).with_context(|| format!("the row of {what} {key} is unreadable"))
}

/// Writes what differs between `old` (what the database holds) and `new`, row by row, and
/// counts one more generation. Removals go first, so an address or a host port that moves
/// from one container to another within a change never meets itself.
pub fn write_changes(tx: &rusqlite::Transaction, old: &State, new: &State) -> Result<()> {
    let old_c: BTreeMap<&str, &Container> = old
        .containers
        .values()
        .map(|c| (c.id.as_str(), c))
        .collect();
    let new_c: BTreeMap<&str, &Container> = new
        .containers
        .values()
        .map(|c| (c.id.as_str(), c))
        .collect();
    // Removals.
    for (id, c) in &old_c {
        match new_c.get(id) {
            None => {
                tx.prepare_cached("DELETE FROM containers WHERE id = ?1")?
                    .execute([id])?;
            }
            Some(n) => {
                if n.endpoints != c.endpoints {
                    tx.prepare_cached("DELETE FROM endpoints WHERE container = ?1")?
                        .execute([id])?;
                }
                if n.ports != c.ports {
                    tx.prepare_cached("DELETE FROM ports WHERE container = ?1")?
                        .execute([id])?;
                }
            }
        }
    }
    for id in old.docker.endpoints.keys() {
        if new.docker.endpoints.get(id) != old.docker.endpoints.get(id) {
            tx.prepare_cached("DELETE FROM docker_endpoints WHERE id = ?1")?
                .execute([id])?;
        }
    }
    for id in old.docker.pools.keys() {
        if !new.docker.pools.contains_key(id) {
            tx.prepare_cached("DELETE FROM docker_pools WHERE id = ?1")?
                .execute([id])?;
        }
    }
    for name in old.networks.keys() {
        if !new.networks.contains_key(name) {
            tx.prepare_cached("DELETE FROM networks WHERE name = ?1")?
                .execute([name])?;
        }
    }
    // Additions and changes.
    for (name, n) in &new.networks {
        if old.networks.get(name) != Some(n) {
            let scope = if n.vni.is_some() { "cluster" } else { "local" };
            tx.prepare_cached(
                "INSERT INTO networks (name, id, driver, scope, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET id = ?2, driver = ?3, scope = ?4, body = ?5",
            )?
            .execute(params![
                name,
                n.id,
                n.driver,
                scope,
                serde_json::to_string(n)?
            ])?;
        }
    }
    for (id, c) in &new_c {
        let old = old_c.get(id);
        if old.is_none_or(|o| !same_head(o, c)) {
            let head = Container {
                endpoints: Vec::new(),
                ports: Vec::new(),
                ..(*c).clone()
            };
            let engine = c.engine.as_deref().unwrap_or("netctl");
            tx.prepare_cached(
                "INSERT INTO containers (id, name, engine, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = ?2, engine = ?3, body = ?4",
            )?
            .execute(params![id, c.name, engine, serde_json::to_string(&head)?])?;
        }
        if old.is_none_or(|o| o.endpoints != c.endpoints) {
            let mut q = tx.prepare_cached(
                "INSERT INTO endpoints (container, position, network, ip, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (i, ep) in c.endpoints.iter().enumerate() {
                q.execute(params![
                    id,
                    i as i64,
                    ep.network,
                    ep.ip.to_string(),
                    serde_json::to_string(ep)?
                ])
                .map_err(|e| {
                    unique(e, || format!("address {} on network {}", ep.ip, ep.network))
                })?;
            }
        }
        if old.is_none_or(|o| o.ports != c.ports) {
            let mut q = tx.prepare_cached(
                "INSERT INTO ports (container, position, host_ip, host_port, container_port, proto)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (i, p) in c.ports.iter().enumerate() {
                q.execute(params![
                    id,
                    i as i64,
                    p.host_ip.to_string(),
                    p.host_port,
                    p.container_port,
                    p.proto.as_str()
                ])
                .map_err(|e| {
                    unique(e, || {
                        format!(
                            "host port {}:{}/{}",
                            p.host_ip,
                            p.host_port,
                            p.proto.as_str()
                        )
                    })
                })?;
            }
        }
    }
    for (id, ep) in &new.docker.endpoints {
        if old.docker.endpoints.get(id) != Some(ep) {
            tx.prepare_cached(
                "INSERT INTO docker_endpoints (id, network, ip, mac) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, ep.network, ep.ip.to_string(), ep.mac])?;
        }
    }
    for (id, pool) in &new.docker.pools {
        if old.docker.pools.get(id) != Some(pool) {
            tx.prepare_cached(
                "INSERT INTO docker_pools (id, subnet, addresses) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET subnet = ?2, addresses = ?3",
            )?
            .execute(params![
                id,
                pool.subnet.to_string(),
                serde_json::to_string(&pool.addresses)?
            ])?;
        }
    }
    tx.prepare_cached(
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'generation'",
    )?
    .execute([])?;
    Ok(())
}

/// Everything of a container but its endpoints and ports (which have rows of their own).
/// Spelled out field by field: a new field fails to compile here rather than go unsaved.
fn same_head(a: &Container, b: &Container) -> bool {
    fn head(c: &Container) -> impl PartialEq + '_ {
        let Container {
            id,
            name,
            command,
            detached,
            created,
            pid,
            pid_start,
            boot_id,
            host_network,
            engine_netns,
            engine_netns_start,
            engine,
            options,
            endpoints: _,
            ports: _,
        } = c;
        (
            (id, name, command, *detached, *created, *pid, *pid_start),
            (
                boot_id,
                *host_network,
                engine_netns,
                *engine_netns_start,
                engine,
                options,
            ),
        )
    }
    head(a) == head(b)
}

/// A uniqueness the tables keep, broken: a bug (the planner checks first), said plainly.
fn unique(e: rusqlite::Error, what: impl FnOnce() -> String) -> anyhow::Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation {
            return anyhow::anyhow!("{} would be held twice; nothing was changed", what());
        }
    }
    e.into()
}
