//! The embedded resolver's wire format: a query from a container, answered from a small
//! table (both the fast path that answers from the question's bytes and hickory's full path).
//! An answer is a well-formed response to that query, and over UDP it fits the size the
//! client can take (512 bytes, or its EDNS size up to 1232).
//! Input: one byte choosing the asker and the transport, then the query.
#![no_main]

use std::{net::Ipv4Addr, sync::OnceLock};

use hickory_proto::{
    op::{Message, MessageType},
    serialize::binary::BinDecodable,
};
use libfuzzer_sys::fuzz_target;
use netctl::{
    daemon::dns::{
        message::{handle, servfail, Reply, Transport},
        table::{RemoteName, Table},
    },
    model::{
        fixtures,
        state::{Container, LinkRef, State},
    },
};

/// The unit tests' container, its endpoints with aliases.
fn container(name: &str, id: &str, eps: &[(&str, &str, &[&str])]) -> Container {
    let plain: Vec<(&str, &str)> = eps.iter().map(|(n, ip, _)| (*n, *ip)).collect();
    let mut c = fixtures::container(name, id, &plain);
    for (ep, (_, _, aliases)) in c.endpoints.iter_mut().zip(eps) {
        ep.aliases = aliases.iter().map(|a| a.to_string()).collect();
    }
    c
}

/// front: web, api (also on back), 48 containers with the alias `many` (more A records than
/// 512 bytes hold); back: db; vault (internal): safe; the default bridge: old. `linker`
/// links api as `backend` and has its own server; a remote container `far` on front.
fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("address") };
        let mut s = State::default();
        for (n, sub, internal) in [
            ("bridge", "172.17.0.0/16", false),
            ("front", "10.1.0.0/24", false),
            ("back", "10.2.0.0/24", false),
            ("vault", "10.3.0.0/24", true),
        ] {
            let mut net = fixtures::net(n, sub);
            net.internal = internal;
            s.networks.insert(n.into(), net);
        }
        let mut put = |c: Container| {
            s.containers.insert(c.name.clone(), c);
        };
        put(container(
            "web",
            "aaaaaaaaaaaa0000",
            &[("front", "10.1.0.2", &["svc"])],
        ));
        put(container(
            "api",
            "bbbbbbbbbbbb0000",
            &[("front", "10.1.0.3", &["svc"]), ("back", "10.2.0.3", &[])],
        ));
        put(container(
            "db",
            "dddddddddddd0000",
            &[("back", "10.2.0.2", &[])],
        ));
        put(container(
            "safe",
            "eeeeeeeeeeee0000",
            &[("vault", "10.3.0.2", &[])],
        ));
        put(container(
            "old",
            "ffffffffffff0000",
            &[("bridge", "172.17.0.2", &[])],
        ));
        for i in 10..58u8 {
            let name = format!("c{i}");
            let addr = format!("10.1.0.{i}");
            put(container(
                &name,
                &format!("{i:0>16}"),
                &[("front", &addr, &["many"])],
            ));
        }
        let mut linker = container("linker", "9999999999990000", &[("front", "10.1.0.9", &[])]);
        linker.options.dns = vec!["192.0.2.53".parse().expect("address")];
        linker.options.links = vec![LinkRef {
            id: "bbbbbbbbbbbb0000".into(),
            name: "api".into(),
            alias: "backend".into(),
        }];
        put(linker);
        let remote = [RemoteName {
            network: "front".into(),
            ip: ip("10.1.0.200"),
            container: "far".into(),
            container_id: "123456789012abcd".into(),
            aliases: vec!["faraway".into()],
        }];
        Table::build(&s, &remote, &["192.0.2.1".parse().expect("address")])
    })
}

const ASKERS: [[u8; 4]; 6] = [
    [10, 1, 0, 2],
    [10, 1, 0, 9],
    [10, 2, 0, 2],
    [10, 3, 0, 2],
    [172, 17, 0, 2],
    [10, 9, 9, 9],
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, query)) = data.split_first() else {
        return;
    };
    let asker = Ipv4Addr::from(ASKERS[usize::from(pick & 7) % ASKERS.len()]);
    let via = if pick & 8 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    if let Reply::Answer(b) = handle(table(), asker.into(), query, via) {
        let m = Message::from_bytes(&b)
            .unwrap_or_else(|e| panic!("answer to {query:?} does not parse: {e}: {b:?}"));
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(&b[..2], &query[..2], "the query's ID");
        if via == Transport::Udp {
            // The client's size: 512 without EDNS, its own up to our 1232 with it.
            let edns = Message::from_bytes(query)
                .ok()
                .map(|q| q.extensions().is_some());
            let limit = if edns == Some(false) { 512 } else { 1232 };
            assert!(b.len() <= limit, "{} bytes over UDP for {query:?}", b.len());
        }
    }
    if let Some(b) = servfail(query) {
        assert_eq!(&b[..2], &query[..2]);
    }
});
