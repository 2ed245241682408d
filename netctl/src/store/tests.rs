use super::*;
use crate::model::{
    fixtures::{container, net},
    ports::{PortMapping, Proto},
    state::{random_id, DockerEndpoint},
};

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!("netctl-store-{}", random_id()));
        fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn store(&self) -> Store {
        Store::new(&self.0, Duration::from_secs(5))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn port(p: u16) -> PortMapping {
    PortMapping {
        host_ip: "0.0.0.0".parse().unwrap(),
        host_port: p,
        container_port: 80,
        proto: Proto::Tcp,
    }
}

fn sample() -> State {
    let mut s = State {
        version: STATE_VERSION,
        ..Default::default()
    };
    s.networks.insert("a".into(), net("a", "10.1.0.0/24"));
    s.networks.insert("b".into(), net("b", "10.2.0.0/24"));
    let mut web = container(
        "web",
        "web0000000000000",
        &[("a", "10.1.0.2"), ("b", "10.2.0.2")],
    );
    web.ports = vec![port(8080), port(8081)];
    web.options.hostname = "w".into();
    s.containers.insert("web".into(), web);
    s.containers.insert(
        "db".into(),
        container("db", "db00000000000000", &[("a", "10.1.0.3")]),
    );
    s.docker.endpoints.insert(
        "ep0000000000000000".into(),
        DockerEndpoint {
            network: "a".into(),
            ip: "10.1.0.9".parse().unwrap(),
            ip6: Some("fd01::9".parse().unwrap()),
            mac: "02:42:0a:01:00:09".into(),
        },
    );
    s
}

fn put(store: &Store, state: &State) {
    let mut l = store.lock().unwrap();
    *l.state_mut() = state.clone();
    l.save().unwrap();
}

#[test]
fn a_state_saved_reads_back_the_same_and_counts_generations() {
    let d = Dir::new();
    let store = d.store();
    assert_eq!(store.generation().unwrap(), 0);
    put(&store, &sample());
    assert_eq!(store.snapshot().unwrap(), sample());
    assert_eq!(store.lock().unwrap().state(), &sample());
    let g = store.generation().unwrap();
    let mut s = sample();
    s.containers.get_mut("web").unwrap().ports.push(port(9000));
    put(&store, &s);
    assert_eq!(store.generation().unwrap(), g + 1);
    assert_eq!(store.snapshot().unwrap(), s);
    // The lock holder's count follows its own saves without asking the database.
    let mut l = store.lock().unwrap();
    assert_eq!(l.generation(), g + 1);
    l.state_mut().containers.get_mut("db").unwrap().pid = Some(7);
    l.save().unwrap();
    assert_eq!(l.generation(), store.generation().unwrap());
    drop(l);
    // The database is root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(d.0.join(DB_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_change_writes_only_the_rows_it_touches() {
    let d = Dir::new();
    let store = d.store();
    let mut s = sample();
    s.containers.get_mut("web").unwrap().ports = (20000..30000).map(port).collect();
    put(&store, &s);
    let mut l = store.lock().unwrap();
    let before = l.conn.total_changes();
    l.state_mut().containers.get_mut("db").unwrap().pid = Some(42);
    l.save().unwrap();
    // The container row and the generation: none of web's 10,000 port rows.
    assert_eq!(l.conn.total_changes() - before, 2);
    drop(l);
    assert_eq!(store.snapshot().unwrap().containers["db"].pid, Some(42));
    // A renamed container keeps its rows (its ID is the key).
    let mut l = store.lock().unwrap();
    let mut c = l.state_mut().containers.remove("db").unwrap();
    c.name = "db2".into();
    l.state_mut().containers.insert("db2".into(), c);
    let before = l.conn.total_changes();
    l.save().unwrap();
    assert_eq!(l.conn.total_changes() - before, 2);
    drop(l);
    let got = store.snapshot().unwrap();
    assert_eq!(
        got.containers["db2"].endpoints[0].ip.unwrap().to_string(),
        "10.1.0.3"
    );
    assert!(!got.containers.contains_key("db"));
}

#[test]
fn removals_and_moves_within_one_change() {
    let d = Dir::new();
    let store = d.store();
    put(&store, &sample());
    // db goes; its address and a port of web go to a new container in the same change.
    let mut s = sample();
    s.containers.remove("db");
    s.containers.get_mut("web").unwrap().ports.pop();
    let mut new = container("new", "new0000000000000", &[("a", "10.1.0.3")]);
    new.ports = vec![port(8081)];
    s.containers.insert("new".into(), new);
    s.docker.endpoints.clear();
    s.networks.remove("b");
    s.containers.get_mut("web").unwrap().endpoints.pop();
    put(&store, &s);
    assert_eq!(store.snapshot().unwrap(), s);
}

#[test]
fn an_address_or_host_port_twice_is_refused_and_nothing_is_written() {
    let d = Dir::new();
    let store = d.store();
    put(&store, &sample());
    let g = store.generation().unwrap();
    for (what, change) in [
        (
            "address 10.1.0.2 on network a",
            Box::new(|s: &mut State| {
                s.containers.insert(
                    "x".into(),
                    container("x", "x000000000000000", &[("a", "10.1.0.2")]),
                );
            }) as Box<dyn Fn(&mut State)>,
        ),
        (
            "host port 0.0.0.0:8080/tcp",
            Box::new(|s: &mut State| {
                let mut x = container("x", "x000000000000000", &[]);
                x.ports = vec![port(8080)];
                s.containers.insert("x".into(), x);
            }),
        ),
    ] {
        let mut l = store.lock().unwrap();
        change(l.state_mut());
        let err = format!("{:#}", l.save().unwrap_err());
        assert!(err.contains(what) && err.contains("twice"), "{err}");
        // Still to be saved, or rolled back: never half written.
        assert!(l.changed());
        drop(l);
        assert_eq!(store.snapshot().unwrap(), sample());
        assert_eq!(store.generation().unwrap(), g);
    }
}

#[test]
fn state_json_moves_into_the_database_on_the_first_change() {
    let d = Dir::new();
    let store = d.store();
    let json = d.0.join(JSON_FILE);
    fs::write(&json, serde_json::to_string(&sample()).unwrap()).unwrap();
    // Readers read the file until then, and change nothing.
    assert_eq!(store.snapshot().unwrap(), sample());
    assert!(!d.0.join(DB_FILE).exists());
    let l = store.lock().unwrap();
    assert_eq!(l.state(), &sample());
    drop(l);
    assert!(!json.exists());
    assert!(d.0.join(JSON_MIGRATED).exists());
    assert_eq!(store.snapshot().unwrap(), sample());
    // A database half made by a killed command is made again.
    fs::remove_file(d.0.join(DB_FILE)).unwrap();
    fs::rename(d.0.join(JSON_MIGRATED), &json).unwrap();
    fs::write(d.0.join("state.db.new"), b"half").unwrap();
    assert_eq!(store.lock().unwrap().state(), &sample());
    assert!(!d.0.join("state.db.new").exists());
}

#[test]
fn an_unreadable_state_json_is_an_error_and_is_kept() {
    let d = Dir::new();
    fs::write(d.0.join(JSON_FILE), "{not json").unwrap();
    let err = format!("{:#}", d.store().lock().err().expect("must fail"));
    assert!(err.contains("state.json is unreadable"), "{err}");
    assert_eq!(
        fs::read_to_string(d.0.join(JSON_FILE)).unwrap(),
        "{not json"
    );
    assert!(!d.0.join(DB_FILE).exists());
}

#[test]
fn a_row_that_breaks_the_rules_is_an_error_for_every_reader() {
    let d = Dir::new();
    let store = d.store();
    put(&store, &sample());
    let conn = db::open(&d.0.join(DB_FILE), Duration::from_secs(1)).unwrap();
    conn.execute(
        "UPDATE containers SET body = json_set(body, '$.id', '../../etc') WHERE name = 'db'",
        [],
    )
    .unwrap();
    for err in [
        store.snapshot().expect_err("must fail"),
        store.lock().err().expect("must fail"),
    ] {
        let err = format!("{err:#}");
        assert!(err.contains("is not a valid ID"), "{err}");
    }
    conn.execute("UPDATE containers SET body = 'x' WHERE name = 'db'", [])
        .unwrap();
    let err = format!("{:#}", store.snapshot().expect_err("must fail"));
    assert!(err.contains("unreadable"), "{err}");
}

#[test]
fn ports_on_ipv6_host_addresses_are_kept_beside_ipv4_ones() {
    let d = Dir::new();
    let store = d.store();
    let mut s = sample();
    let ports = &mut s.containers.get_mut("web").unwrap().ports;
    *ports = vec![port(8080), port(8081), port(8082)];
    ports[1].host_ip = "::1".parse().unwrap();
    ports[2].host_ip = "127.0.0.1".parse().unwrap();
    put(&store, &s);
    assert_eq!(store.snapshot().unwrap(), s, "from the packed copy");
    let conn = db::open(&d.0.join(DB_FILE), Duration::from_secs(1)).unwrap();
    conn.execute("UPDATE containers SET ports = NULL", [])
        .unwrap();
    assert_eq!(store.snapshot().unwrap(), s, "from the rows");
}

#[test]
fn ports_are_read_from_the_packed_copy_and_from_the_rows_when_it_is_gone() {
    let d = Dir::new();
    let store = d.store();
    let mut s = sample();
    s.containers.get_mut("web").unwrap().ports = (20000..30000).map(port).collect();
    put(&store, &s);
    let conn = db::open(&d.0.join(DB_FILE), Duration::from_secs(1)).unwrap();
    let packed = |conn: &Connection| -> usize {
        conn.query_row(
            "SELECT count(*) FROM containers WHERE ports IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(packed(&conn), 2, "both containers have their copy");
    assert_eq!(store.snapshot().unwrap(), s);
    // A change to the rows alone (as an older netctl makes) empties the copy; the rows then
    // are read, and the next write packs them again.
    conn.execute(
        "UPDATE ports SET host_port = 40000 WHERE host_port = 20000",
        [],
    )
    .unwrap();
    assert_eq!(packed(&conn), 1);
    let mut want = s.clone();
    want.containers.get_mut("web").unwrap().ports[0].host_port = 40000;
    assert_eq!(store.snapshot().unwrap(), want);
    let mut l = store.lock().unwrap();
    assert_eq!(l.state(), &want);
    l.state_mut().containers.get_mut("db").unwrap().pid = Some(7);
    l.save().unwrap();
    drop(l);
    assert_eq!(packed(&conn), 2);
    conn.execute("DELETE FROM ports WHERE host_port = 40000", [])
        .unwrap();
    want.containers.get_mut("web").unwrap().ports.remove(0);
    want.containers.get_mut("db").unwrap().pid = Some(7);
    assert_eq!(store.snapshot().unwrap(), want);
    // A copy that is not one (a future format) is passed over for the rows.
    conn.execute(
        "UPDATE containers SET ports = x'0901' WHERE name = 'web'",
        [],
    )
    .unwrap();
    assert_eq!(store.snapshot().unwrap(), want);
    // And a valid copy is what readers take: with the trigger gone, a row changed behind
    // its back does not show.
    conn.execute_batch("UPDATE containers SET ports = NULL; DROP TRIGGER ports_changed;")
        .unwrap();
    let mut l = store.lock().unwrap();
    l.state_mut().containers.get_mut("db").unwrap().pid = Some(8);
    l.save().unwrap();
    drop(l);
    want.containers.get_mut("db").unwrap().pid = Some(8);
    conn.execute("UPDATE ports SET container_port = 81", [])
        .unwrap();
    assert_eq!(store.snapshot().unwrap(), want);
}

#[test]
fn a_database_of_an_older_netctl_gets_the_packed_copy() {
    let d = Dir::new();
    let store = d.store();
    let s = sample();
    put(&store, &s);
    // The tables as the previous netctl made them: no column, no triggers.
    let conn = db::open(&d.0.join(DB_FILE), Duration::from_secs(1)).unwrap();
    conn.execute_batch(
        "DROP TRIGGER ports_added; DROP TRIGGER ports_removed; DROP TRIGGER ports_changed;
         ALTER TABLE containers DROP COLUMN ports;",
    )
    .unwrap();
    assert_eq!(store.snapshot().unwrap(), s, "readers take the rows");
    let mut l = store.lock().unwrap();
    assert_eq!(l.state(), &s);
    l.state_mut().containers.get_mut("db").unwrap().pid = Some(9);
    l.save().unwrap();
    drop(l);
    let packed: usize = conn
        .query_row(
            "SELECT count(*) FROM containers WHERE ports IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        packed, 2,
        "upgraded, and every container packed at the first write"
    );
    let mut want = s;
    want.containers.get_mut("db").unwrap().pid = Some(9);
    assert_eq!(store.snapshot().unwrap(), want);
}

#[test]
fn a_database_without_ipv6_docker_endpoints_gets_the_column() {
    let d = Dir::new();
    let store = d.store();
    let mut s = sample();
    for e in s.docker.endpoints.values_mut() {
        e.ip6 = None;
    }
    put(&store, &s);
    // The table as the previous netctl made it.
    let conn = db::open(&d.0.join(DB_FILE), Duration::from_secs(1)).unwrap();
    conn.execute_batch("ALTER TABLE docker_endpoints DROP COLUMN ip6;")
        .unwrap();
    assert_eq!(store.snapshot().unwrap(), s, "readers take what is there");
    let mut l = store.lock().unwrap();
    let ep = l.state_mut().docker.endpoints.values_mut().next().unwrap();
    ep.ip6 = Some("fd01::7".parse().unwrap());
    let want = l.state().clone();
    l.save().unwrap();
    drop(l);
    assert_eq!(store.snapshot().unwrap(), want, "upgraded and written");
}
