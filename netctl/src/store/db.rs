//! The state's tables in SQLite (`state.db`, WAL): one row per network, container, endpoint,
//! published port and Docker reservation. Typed columns carry what other rows are checked
//! against (an address is unique on its network, a host socket is published once) and who
//! owns the row; the rest of a row is its JSON.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::Path,
    time::Duration,
};

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
    body TEXT NOT NULL,
    ports BLOB);
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
    mac TEXT NOT NULL,
    ip6 TEXT);
CREATE TABLE docker_pools (
    id TEXT PRIMARY KEY,
    subnet TEXT NOT NULL,
    addresses TEXT NOT NULL);
";

/// A container's published ports packed into its own row (`containers.ports`), so that a
/// command reads a container with 10,000 ports as one value instead of 10,000 rows. The rows
/// of `ports` stay the truth (and keep a host socket unique): any change to them, by any
/// netctl version, empties the copy, and a reader then reads the rows.
const PACKED_PORTS: &str = "
CREATE TRIGGER ports_added AFTER INSERT ON ports BEGIN
    UPDATE containers SET ports = NULL WHERE id = NEW.container AND ports IS NOT NULL; END;
CREATE TRIGGER ports_removed AFTER DELETE ON ports BEGIN
    UPDATE containers SET ports = NULL WHERE id = OLD.container AND ports IS NOT NULL; END;
CREATE TRIGGER ports_changed AFTER UPDATE ON ports BEGIN
    UPDATE containers SET ports = NULL WHERE id IN (OLD.container, NEW.container); END;
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
    tx.execute_batch(PACKED_PORTS)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('version', ?1), ('generation', '1')",
        [STATE_VERSION.to_string()],
    )?;
    write_changes(&tx, &State::default(), state)?;
    tx.commit()?;
    Ok(())
}

/// Brings a database made by an older netctl up to this one's tables (under the state lock):
/// the packed copy of each container's ports, filled as containers are next written; the
/// IPv6 address of a Docker endpoint.
pub fn upgrade(conn: &mut Connection) -> Result<()> {
    if has_packed_ports(conn)? && has_column(conn, "docker_endpoints", "ip6")? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !has_packed_ports(&tx)? {
        tx.execute_batch("ALTER TABLE containers ADD COLUMN ports BLOB;")?;
        tx.execute_batch(PACKED_PORTS)?;
    }
    if !has_column(&tx, "docker_endpoints", "ip6")? {
        tx.execute_batch("ALTER TABLE docker_endpoints ADD COLUMN ip6 TEXT;")?;
    }
    tx.commit()?;
    Ok(())
}

fn has_packed_ports(conn: &Connection) -> Result<bool> {
    has_column(conn, "containers", "ports")
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// `ports` as [`PACKED_PORTS`] keeps them: a format byte, then per port the host address
/// (format 1: 4 bytes, IPv4 only; format 2: 16, IPv4 as v4-mapped), host and container
/// port (2 each, little endian) and the protocol (1).
fn pack(ports: &[PortMapping]) -> Vec<u8> {
    let v6 = ports.iter().any(|p| p.host_ip.is_ipv6());
    let mut out = Vec::with_capacity(1 + ports.len() * if v6 { 21 } else { 9 });
    out.push(if v6 { 2 } else { 1 });
    for p in ports {
        match p.host_ip {
            IpAddr::V4(a) if !v6 => out.extend(a.octets()),
            IpAddr::V4(a) => out.extend(a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => out.extend(a.octets()),
        }
        out.extend(p.host_port.to_le_bytes());
        out.extend(p.container_port.to_le_bytes());
        out.push(match p.proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        });
    }
    out
}

/// The ports [`pack`] made; None for anything else (the rows are read instead).
fn unpack(b: &[u8]) -> Option<Vec<PortMapping>> {
    let (&format, rest) = b.split_first()?;
    let a = match format {
        1 => 4,
        2 => 16,
        _ => return None,
    };
    if rest.len() % (a + 5) != 0 {
        return None;
    }
    rest.chunks_exact(a + 5)
        .map(|c| {
            let (addr, c) = c.split_at(a);
            Some(PortMapping {
                host_ip: match <[u8; 4]>::try_from(addr) {
                    Ok(v4) => IpAddr::from(v4),
                    Err(_) => IpAddr::from(<[u8; 16]>::try_from(addr).ok()?).to_canonical(),
                },
                host_port: u16::from_le_bytes([c[0], c[1]]),
                container_port: u16::from_le_bytes([c[2], c[3]]),
                proto: match c[4] {
                    0 => Proto::Tcp,
                    1 => Proto::Udp,
                    _ => return None,
                },
            })
        })
        .collect()
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
/// What [`load`] read: the state, its generation, and the containers whose ports were read
/// from their rows (no packed copy: [`pack_missing`] makes one at the next write).
pub struct Loaded {
    pub state: State,
    pub generation: u64,
    pub unpacked: BTreeSet<String>,
}

pub fn load(conn: &mut Connection) -> Result<Loaded> {
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
    // Containers by name (read in that order: each insert lands at the end of the map).
    let mut unpacked = BTreeSet::new();
    {
        let packed = has_packed_ports(&tx)?;
        let mut q = tx.prepare_cached(if packed {
            "SELECT id, body, ports FROM containers ORDER BY name"
        } else {
            "SELECT id, body, NULL FROM containers ORDER BY name"
        })?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let mut c: Container = parse(r.get_ref(1)?.as_str()?, "container", &id)?;
            match r.get_ref(2)?.as_blob_or_null()?.and_then(unpack) {
                Some(ports) => c.ports = ports,
                None => {
                    unpacked.insert(id.clone());
                }
            }
            state.containers.insert(c.name.clone(), c);
        }
    }
    // Their names by ID while their endpoints and ports are added (made at the first such
    // row: 10,000 containers of the host network have none).
    let mut names: Option<HashMap<String, String>> = None;
    let name_of = |names: &mut Option<HashMap<String, String>>,
                   containers: &BTreeMap<String, Container>,
                   id: &str| {
        names
            .get_or_insert_with(|| {
                containers
                    .values()
                    .map(|c| (c.id.clone(), c.name.clone()))
                    .collect()
            })
            .get(id)
            .cloned()
    };
    {
        let mut q = tx
            .prepare_cached("SELECT container, body FROM endpoints ORDER BY container, position")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let ep: Endpoint = parse(r.get_ref(1)?.as_str()?, "endpoint of", &id)?;
            let name = name_of(&mut names, &state.containers, &id);
            if let Some(c) = name.and_then(|n| state.containers.get_mut(&n)) {
                c.endpoints.push(ep);
            }
        }
    }
    // The rows of ports only for containers without a packed copy: all of them in one
    // sweep, or a few by their container.
    let sweeps: Vec<Option<&String>> =
        if !unpacked.is_empty() && unpacked.len() == state.containers.len() {
            vec![None]
        } else {
            unpacked.iter().map(Some).collect()
        };
    for only in sweeps {
        let mut q = tx.prepare_cached(if only.is_none() {
            "SELECT container, host_ip, host_port, container_port, proto FROM ports
             WHERE ?1 IS NULL ORDER BY container, position"
        } else {
            "SELECT container, host_ip, host_port, container_port, proto FROM ports
             WHERE container = ?1 ORDER BY position"
        })?;
        let mut rows = q.query([only])?;
        let mut current: Option<&mut Container> = None;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str()?;
            if current.as_ref().is_none_or(|c| c.id != id) {
                let name = name_of(&mut names, &state.containers, id);
                current = name.and_then(|n| state.containers.get_mut(&n));
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
    {
        let mut q = tx.prepare_cached(if has_column(&tx, "docker_endpoints", "ip6")? {
            "SELECT id, network, ip, mac, ip6 FROM docker_endpoints"
        } else {
            "SELECT id, network, ip, mac, NULL FROM docker_endpoints"
        })?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let ip: String = r.get(2)?;
            let ip6: Option<String> = r.get(4)?;
            let ep = DockerEndpoint {
                network: r.get(1)?,
                ip: ip
                    .parse()
                    .with_context(|| format!("Docker endpoint {id}: address {ip:?}"))?,
                ip6: ip6
                    .map(|a| a.parse())
                    .transpose()
                    .with_context(|| format!("Docker endpoint {id}: its IPv6 address"))?,
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
    Ok(Loaded {
        state,
        generation,
        unpacked,
    })
}

/// Packs the ports of the containers `ids` (read from their rows) that have no packed copy
/// (a writer's database has the column: [`upgrade`] ran when the lock was taken).
pub fn pack_missing(
    tx: &rusqlite::Transaction,
    state: &State,
    ids: &BTreeSet<String>,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut q =
        tx.prepare_cached("UPDATE containers SET ports = ?2 WHERE id = ?1 AND ports IS NULL")?;
    for c in state.containers.values().filter(|c| ids.contains(&c.id)) {
        q.execute(params![c.id, pack(&c.ports)])?;
    }
    Ok(())
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
                // The address that is unique on the network: IPv4's, on an IPv6-only
                // network IPv6's.
                let ip = match (ep.ip, ep.ip6) {
                    (Some(ip), _) => ip.to_string(),
                    (None, Some(ip6)) => ip6.to_string(),
                    (None, None) => String::new(),
                };
                q.execute(params![
                    id,
                    i as i64,
                    ep.network,
                    ip,
                    serde_json::to_string(ep)?
                ])
                .map_err(|e| unique(e, || format!("address {ip} on network {}", ep.network)))?;
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
            // After the rows, whose triggers empty it.
            tx.prepare_cached("UPDATE containers SET ports = ?2 WHERE id = ?1")?
                .execute(params![id, pack(&c.ports)])?;
        }
    }
    for (id, ep) in &new.docker.endpoints {
        if old.docker.endpoints.get(id) != Some(ep) {
            tx.prepare_cached(
                "INSERT INTO docker_endpoints (id, network, ip, mac, ip6)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                id,
                ep.network,
                ep.ip.to_string(),
                ep.mac,
                ep.ip6.map(|a| a.to_string())
            ])?;
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
