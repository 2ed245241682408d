//! Connection tracking on crafted packets (BPF_PROG_TEST_RUN): when a flow is confirmed, how
//! it closes and expires, what a flood can and cannot evict, how a lost half comes back, and
//! how source ports are allocated and reused. Needs root; skips otherwise.

#[path = "world/mod.rs"]
mod world;

use netctl::kernel::dataplane::maps::raw;
use netctl_common::{
    ct::{
        CtEntry, CT_CONFIRMED, CT_FIN_ORIG, CT_FIN_REPLY, CT_REPLY, CT_RST, CT_SEEN_REPLY,
        KIND_SNAT, REWRITE_DST, TIMEOUT_TCP_SYN, TIMEOUT_TCP_TIME_WAIT, TIMEOUT_UDP,
    },
    drop::DropReason,
};
use world::*;

const SEC: u64 = 1_000_000_000;

/// A published-port connection through its handshake: client seq 100, server seq 500.
/// Returns the entry keys (original, reply).
fn handshake(w: &mut World, cport: u16) -> (netctl_common::ct::CtKey, netctl_common::ct::CtKey) {
    let (v, out) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, cport, H, 8080, SYN, 100, 0, b""),
    );
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(check(&out).dst, ip(WEB));
    let (v, out) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, cport, SYN_ACK, 500, 101, b""),
    );
    assert_eq!(v, TC_ACT_OK);
    assert_eq!((check(&out).src, check(&out).sport), (ip(H), 8080));
    let (v, _) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, cport, H, 8080, ACK, 101, 501, b""),
    );
    assert_eq!(v, TC_ACT_OK);
    (
        key(CLIENT, cport, H, 8080, TCP),
        key(WEB, 80, CLIENT, cport, TCP),
    )
}

#[test]
fn a_flow_is_established_by_the_clients_ack_not_the_syn_ack() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let orig = key(CLIENT, 40000, H, 8080, TCP);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, SYN, 100, 0, b""),
    );
    assert_eq!(w.ct_lens(), (0, 2), "a SYN makes an unconfirmed pair");
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40000, SYN_ACK, 500, 101, b""),
    );
    let (e, new) = w.ct_get(&orig).unwrap();
    assert!(new, "the SYN-ACK alone does not confirm");
    assert_ne!(e.flags & CT_SEEN_REPLY, 0);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, ACK, 101, 501, b""),
    );
    assert_eq!(
        w.ct_lens(),
        (2, 0),
        "the client's ACK moves both halves to CT"
    );
    let (e, new) = w.ct_get(&orig).unwrap();
    assert!(!new);
    assert_ne!(e.flags & CT_CONFIRMED, 0);
    let (r, _) = w.ct_get(&e.peer).unwrap();
    assert_ne!(r.flags & CT_CONFIRMED, 0);
    assert_eq!(r.peer, orig);

    // UDP: confirmed by a datagram of the client after an answer; unanswered flows wait 30 s.
    w.run("uplink_ingress", &udp(CLIENT, 5000, H, 5353));
    let uorig = key(CLIENT, 5000, H, 5353, UDP);
    assert!(w.ct_get(&uorig).unwrap().1);
    w.ct_age(&uorig, TIMEOUT_UDP / SEC + 1);
    let (_, out) = w.run("uplink_ingress", &udp(CLIENT, 5000, H, 5353));
    assert_eq!(
        check(&out).dst,
        ip(WEB),
        "a new flow after the unanswered one expired"
    );
    w.run("uplink_egress", &udp(WEB, 53, CLIENT, 5000));
    w.ct_age(&uorig, TIMEOUT_UDP / SEC + 1);
    w.run("uplink_ingress", &udp(CLIENT, 5000, H, 5353));
    let (e, new) = w.ct_get(&uorig).unwrap();
    assert!(!new, "answered, then the client spoke again: confirmed");
    assert_ne!(e.flags & CT_SEEN_REPLY, 0, "an answered flow outlives 30 s");
}

#[test]
fn a_syn_flood_never_evicts_established_flows() {
    if !root() {
        return;
    }
    // A small unconfirmed-flow table, so the flood overflows it many times.
    let mut w = World::build(true, false, Some(64));
    let (orig, reply) = handshake(&mut w, 40000);
    let (_, out) = w.run(
        "uplink_xdp",
        &tcp_full(CLIENT, 40001, H, 8080, SYN, 7, 0, b""),
    );
    assert_eq!(check(&out).dst, ip(WEB));
    for i in 0..2000u32 {
        let src = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        let prog = if i % 2 == 0 {
            "uplink_xdp"
        } else {
            "uplink_ingress"
        };
        w.run(
            prog,
            &tcp_full(&src, 1024 + (i as u16), H, 8080, SYN, i, 0, b""),
        );
    }
    let (confirmed, unconfirmed) = w.ct_lens();
    assert_eq!(confirmed, 2, "the established flow, nothing else");
    assert!(unconfirmed <= 64, "{unconfirmed}");
    assert!(w.ct_get(&orig).is_some() && w.ct_get(&reply).is_some());
    // It still works both ways, and its counterpart's replies keep the published port.
    let (_, out) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, ACK, 101, 501, b"x"),
    );
    assert_eq!((check(&out).dst, check(&out).dport), (ip(WEB), 80));
    let (_, out) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40000, ACK, 501, 102, b"y"),
    );
    assert_eq!((check(&out).src, check(&out).sport), (ip(H), 8080));
}

#[test]
fn confirmed_flows_count_against_their_container_and_the_table() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Two flows (four entries) per container; the table may hold six entries.
    w.set_ct_limits(6, 4);
    handshake(&mut w, 40000);
    let (orig, _) = handshake(&mut w, 40001);
    assert_eq!(w.ct_counts(WEB), (4, 4), "both halves count against web");
    // A third connection to web gets its SYN-ACK, but the client's ACK does not confirm it.
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40002, H, 8080, SYN, 100, 0, b""),
    );
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40002, SYN_ACK, 500, 101, b""),
    );
    let before = w.drops(DropReason::CtQuota);
    let (v, _) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40002, H, 8080, ACK, 101, 501, b""),
    );
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::CtQuota), before + 1);
    assert!(w.ct_get(&key(CLIENT, 40002, H, 8080, TCP)).unwrap().1);
    assert_eq!(w.ct_lens().0, 4, "the established flows only");
    // A masqueraded UDP flow of a2: out, an answer, out again (the confirming datagram).
    let masqueraded = |w: &mut World, sport| {
        let (_, out) = w.run("uplink_egress", &udp(A2, sport, OUT, 53));
        let nat_port = check(&out).sport;
        w.run("uplink_ingress", &udp(OUT, 53, H, nat_port));
        w.run("uplink_egress", &udp(A2, sport, OUT, 53)).0
    };
    // Another container's flow is confirmed up to the watermark (six entries)…
    assert_eq!(masqueraded(&mut w, 7000), TC_ACT_OK);
    assert_eq!(w.ct_counts(A2), (2, 6));
    // …and no flow past it, whoever owns it.
    let before = w.drops(DropReason::CtFull);
    assert_eq!(masqueraded(&mut w, 7001), TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::CtFull), before + 1);
    // A flow that ends gives its entries back: a RST closes it — out of web's quota at
    // once, still in the table — and its expiry removes it.
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40001, H, 8080, RST, 101, 0, b""),
    );
    assert_eq!(w.ct_counts(WEB), (2, 6), "closed: web's quota only");
    w.ct_age(&orig, 3600);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40001, H, 8080, ACK, 101, 501, b""),
    );
    assert_eq!(
        w.ct_counts(WEB),
        (2, 4),
        "the expired flow's entries are uncounted"
    );
}

#[test]
fn fin_both_ways_and_an_in_window_rst_close_a_flow_a_blind_rst_does_not() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let (orig, _) = handshake(&mut w, 40000);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, ACK, 101, 501, b"0123456789"),
    );
    // A spoofed RST with a sequence number far from the window passes (the endpoint ignores
    // it) but does not close the flow.
    for seq in [99_999u32, 5, 101 + 70_000] {
        let (v, _) = w.run(
            "uplink_ingress",
            &tcp_full(CLIENT, 40000, H, 8080, RST, seq, 0, b""),
        );
        assert_eq!(v, TC_ACT_OK);
        assert_eq!(w.ct_get(&orig).unwrap().0.flags & CT_RST, 0, "seq {seq}");
    }
    // The real one: the client's next sequence number (101 + 10 bytes).
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, RST, 111, 0, b""),
    );
    let (e, _) = w.ct_get(&orig).unwrap();
    assert_ne!(e.flags & CT_RST, 0);
    assert_ne!(
        w.ct_get(&e.peer).unwrap().0.flags & CT_RST,
        0,
        "both halves"
    );

    // FIN one way keeps the flow; FIN the other way closes it.
    let (orig, reply) = handshake(&mut w, 40001);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40001, H, 8080, FIN | ACK, 101, 501, b""),
    );
    let (e, _) = w.ct_get(&orig).unwrap();
    assert_eq!(e.flags & (CT_FIN_ORIG | CT_FIN_REPLY), CT_FIN_ORIG);
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40001, FIN | ACK, 501, 102, b""),
    );
    let (e, _) = w.ct_get(&orig).unwrap();
    assert_eq!(
        e.flags & (CT_FIN_ORIG | CT_FIN_REPLY),
        CT_FIN_ORIG | CT_FIN_REPLY
    );
    assert_eq!(
        w.ct_get(&reply).unwrap().0.flags & CT_FIN_REPLY,
        CT_FIN_REPLY
    );

    // A refused connection: the backend's RST-ACK acknowledges exactly the SYN.
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40002, H, 8080, SYN, 7000, 0, b""),
    );
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40002, RST | ACK, 0, 6000, b""),
    );
    let k = key(CLIENT, 40002, H, 8080, TCP);
    assert_eq!(w.ct_get(&k).unwrap().0.flags & CT_RST, 0, "wrong ack");
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40002, RST | ACK, 0, 7001, b""),
    );
    assert_ne!(w.ct_get(&k).unwrap().0.flags & CT_RST, 0);
}

#[test]
fn idle_flows_expire_and_a_syn_on_a_closed_tuple_starts_over() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Established: idle far longer than a handshake may take, still alive. (Hours of
    // idleness cannot be faked on a machine up for less; timeouts() is unit-tested.)
    let (orig, _) = handshake(&mut w, 40000);
    w.ct_age(&orig, 10 * TIMEOUT_TCP_SYN / SEC);
    let (_, out) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, ACK, 101, 501, b""),
    );
    assert_eq!(
        check(&out).dst,
        ip(WEB),
        "an established flow outlives a handshake's timeout"
    );
    // A handshake that never completed expires; a segment that is no SYN starts nothing.
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40009, H, 8080, SYN, 100, 0, b""),
    );
    let half = key(CLIENT, 40009, H, 8080, TCP);
    w.ct_age(&half, TIMEOUT_TCP_SYN / SEC + 1);
    let pkt = tcp_full(CLIENT, 40009, H, 8080, ACK, 101, 501, b"");
    let (v, out) = w.run("uplink_ingress", &pkt);
    assert_eq!(
        (v, out),
        (TC_ACT_OK, pkt),
        "expired: the host gets it untouched"
    );
    assert!(w.ct_get(&half).is_none() && w.ct_get(&key(WEB, 80, CLIENT, 40009, TCP)).is_none());
    assert_eq!(w.ct_len(), 2, "only the established flow is left");

    // Closed by FIN: a SYN reusing the tuple starts a fresh flow at once.
    let (orig, _) = handshake(&mut w, 40001);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40001, H, 8080, FIN | ACK, 101, 501, b""),
    );
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40001, FIN | ACK, 501, 102, b""),
    );
    let (_, out) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40001, H, 8080, SYN, 9000, 0, b""),
    );
    assert_eq!(check(&out).dst, ip(WEB));
    let (e, new) = w.ct_get(&orig).unwrap();
    assert!(new, "a new, unconfirmed flow");
    assert_eq!(e.flags & (CT_FIN_ORIG | CT_FIN_REPLY | CT_SEEN_REPLY), 0);
}

#[test]
fn a_lost_half_comes_back_from_the_other() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Published port, original half evicted: the client's next segment (no SYN) re-adopts
    // the reply half instead of being refused as a conflict.
    let (orig, reply) = handshake(&mut w, 40000);
    w.ct_remove(&orig);
    let (v, out) = w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, ACK, 101, 501, b"a"),
    );
    assert_eq!(v, TC_ACT_OK);
    assert_eq!((check(&out).dst, check(&out).dport), (ip(WEB), 80));
    assert_eq!(w.ct_get(&orig).unwrap().0.peer, reply);
    assert_eq!(w.drops(DropReason::CtConflict), 0);

    // Reply half evicted: the container's segment is not masqueraded (it would leave from a
    // random port); the client's next segment rebuilds the reply half.
    w.ct_remove(&reply);
    let from_web = tcp_full(WEB, 80, CLIENT, 40000, ACK, 501, 102, b"b");
    let (v, _) = w.run("uplink_egress", &from_web);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::CtMiss), 1);
    w.run(
        "uplink_ingress",
        &tcp_full(CLIENT, 40000, H, 8080, ACK, 102, 501, b"c"),
    );
    let (v, out) = w.run("uplink_egress", &from_web);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!((check(&out).src, check(&out).sport), (ip(H), 8080));

    // Masquerade, reply half evicted: the outside's segment to the NAT port is dropped, not
    // answered with a RST by the host; the container's next segment rebuilds the half.
    let (_, out) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 33000, OUT, 443, SYN, 10, 0, b""),
    );
    let np = check(&out).sport;
    w.run(
        "uplink_ingress",
        &tcp_full(OUT, 443, H, np, SYN_ACK, 90, 11, b""),
    );
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 33000, OUT, 443, ACK, 11, 91, b""),
    );
    let sorig = key(WEB, 33000, OUT, 443, TCP);
    let sreply = key(OUT, 443, H, np, TCP);
    assert!(!w.ct_get(&sorig).unwrap().1, "confirmed");
    w.ct_remove(&sreply);
    let from_out = tcp_full(OUT, 443, H, np, ACK, 91, 11, b"data");
    let (v, _) = w.run("uplink_ingress", &from_out);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::CtMiss), 2);
    let (_, out) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 33000, OUT, 443, ACK, 11, 91, b""),
    );
    assert_eq!(check(&out).sport, np, "same port");
    let (v, out) = w.run("uplink_ingress", &from_out);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!((check(&out).dst, check(&out).dport), (ip(WEB), 33000));

    // Masquerade, original half evicted: the container's segment is held back (a new port
    // would not revive it); the outside's next segment rebuilds the half with the same port.
    w.ct_remove(&sorig);
    let (v, _) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 33000, OUT, 443, ACK, 11, 95, b""),
    );
    assert_eq!(v, TC_ACT_SHOT);
    w.run("uplink_ingress", &from_out);
    let (_, out) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 33000, OUT, 443, ACK, 11, 95, b""),
    );
    assert_eq!((check(&out).src, check(&out).sport), (ip(H), np));
}

#[test]
fn a_taken_reply_tuple_is_a_conflict_never_a_takeover() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Another live flow holds the tuple the backend's replies would have.
    let other = key(CLIENT, 1, H, 9, TCP);
    let taken = key(WEB, 80, CLIENT, 40000, TCP);
    let mut e = CtEntry {
        last_seen: netctl::kernel::dataplane::monotonic_ns(),
        peer: other,
        flags: CT_REPLY,
        kind: KIND_SNAT,
        rewrite: REWRITE_DST,
        ..Default::default()
    };
    e.dst_addr = raw(ip(A2));
    w.ct_insert(true, &taken, &e);
    let (v, _) = w.run("uplink_ingress", &tcp(CLIENT, 40000, H, 8080, SYN));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::CtConflict), 1);
    assert_eq!(
        w.ct_get(&taken).unwrap().0,
        e,
        "the other flow's entry is untouched"
    );
    assert!(w.ct_get(&key(CLIENT, 40000, H, 8080, TCP)).is_none());
}

#[test]
fn closed_ports_stay_reserved_for_others_and_reopen_for_their_own_source() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    w.set_config(0, 61000, 61001); // two ports
    let conn = |w: &mut World, src: &str, sport: u16| -> Option<u16> {
        let (v, out) = w.run(
            "uplink_egress",
            &tcp_full(src, sport, OUT, 80, SYN, 10, 0, b""),
        );
        (v == TC_ACT_OK).then(|| check(&out).sport)
    };
    let close = |w: &mut World, src: &str, sport: u16, port: u16| {
        w.run(
            "uplink_ingress",
            &tcp_full(OUT, 80, H, port, SYN_ACK, 50, 11, b""),
        );
        w.run(
            "uplink_egress",
            &tcp_full(src, sport, OUT, 80, FIN | ACK, 11, 51, b""),
        );
        w.run(
            "uplink_ingress",
            &tcp_full(OUT, 80, H, port, FIN | ACK, 51, 12, b""),
        );
    };
    let p1 = conn(&mut w, WEB, 1000).unwrap();
    close(&mut w, WEB, 1000, p1);
    let old = key(WEB, 1000, OUT, 80, TCP);
    let flags = w.ct_get(&old).unwrap().0.flags;
    assert_eq!(
        flags & (CT_FIN_ORIG | CT_FIN_REPLY),
        CT_FIN_ORIG | CT_FIN_REPLY
    );
    // Closed, but its tuple is held as TIME_WAIT would, for every other source: the other
    // port goes, then none.
    let p2 = conn(&mut w, A2, 1000).unwrap();
    assert_ne!(p1, p2);
    assert_eq!(conn(&mut w, B3, 1000), None);
    assert_eq!(w.drops(DropReason::NatPortsExhausted), 1);
    // Its own source reopens it at once (the server's TIME_WAIT takes the newer timestamp),
    // and the old flow goes entirely.
    assert_eq!(conn(&mut w, WEB, 1001), Some(p1));
    assert!(
        w.ct_get(&old).is_none(),
        "the old original half is gone too"
    );
    // A late segment of the old socket never leaves on the new flow's tuple.
    let (v, _) = w.run(
        "uplink_egress",
        &tcp_full(WEB, 1000, OUT, 80, ACK, 12, 52, b""),
    );
    assert_eq!(v, TC_ACT_SHOT);
    // A late RST for the old connection does not close the new one (outside its window).
    w.run("uplink_ingress", &tcp_full(OUT, 80, H, p1, RST, 52, 0, b""));
    let new = key(WEB, 1001, OUT, 80, TCP);
    assert_eq!(w.ct_get(&new).unwrap().0.flags & CT_RST, 0);
    // Another source gets a closed port once its closing timeout has passed.
    close(&mut w, WEB, 1001, p1);
    assert_eq!(conn(&mut w, B3, 1001), None);
    w.ct_age(&new, TIMEOUT_TCP_TIME_WAIT / SEC + 1);
    assert_eq!(conn(&mut w, B3, 1002), Some(p1));
    assert!(w.ct_get(&new).is_none());
}

#[test]
fn port_allocation_searches_the_whole_range_from_a_random_start() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Without bpf_loop the search is bounded (32 ports from the random start): a range of 32
    // is still searched whole.
    let span = if w.features.modern() { 100 } else { 32 };
    let (last, free) = (61000 + span - 1, 61000 + span - 23);
    w.set_config(0, 61000, last);
    // Every port but one is taken for this destination.
    let now = netctl::kernel::dataplane::monotonic_ns();
    for port in (61000..=last).filter(|p| *p != free) {
        let e = CtEntry {
            last_seen: now,
            peer: key(B3, port, OUT, 53, UDP),
            flags: CT_REPLY | CT_SEEN_REPLY,
            ..Default::default()
        };
        w.ct_insert(false, &key(OUT, 53, H, port, UDP), &e);
    }
    let (v, out) = w.run("uplink_egress", &udp(WEB, 5555, OUT, 53));
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(
        check(&out).sport,
        free,
        "the one free port, wherever the search began"
    );
    let (v, _) = w.run("uplink_egress", &udp(A2, 5555, OUT, 53));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::NatPortsExhausted), 1);
    // Full for OUT:53 only: another destination gets a port.
    let (v, _) = w.run("uplink_egress", &udp(A2, 5555, OUT, 54));
    assert_eq!(v, TC_ACT_OK);

    // The whole default range, from random starting points: DNS-like queries from
    // consecutive container ports get scattered NAT ports.
    let mut w = World::new(true, false);
    let ports: Vec<u16> = (0..16)
        .map(|i| check(&w.run("uplink_egress", &udp(WEB, 6000 + i, OUT, 53)).1).sport)
        .collect();
    let spread = ports.iter().max().unwrap() - ports.iter().min().unwrap();
    assert!(spread > 256, "ports {ports:?} are not scattered");
}

#[test]
fn a_published_port_starts_flows_only_for_new_connections() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // The host's own connection from source port 8080: its SYN-ACK and ACKs are its own.
    for flags in [SYN_ACK, ACK, FIN | ACK, RST] {
        let pkt = tcp(CLIENT, 443, H, 8080, flags);
        for prog in ["uplink_xdp", "uplink_ingress"] {
            let (v, out) = w.run(prog, &pkt);
            assert!(v == XDP_PASS || v == TC_ACT_OK);
            assert_eq!(out, pkt, "{prog} flags {flags:#x}");
        }
    }
    assert_eq!(w.ct_len(), 0);
    // A UDP socket of the host on the published port keeps its traffic (in XDP and TC)…
    let sock = std::net::UdpSocket::bind("0.0.0.0:5353").unwrap();
    let pkt = udp(CLIENT, 5000, H, 5353);
    for prog in ["uplink_xdp", "uplink_ingress"] {
        let (_, out) = w.run(prog, &pkt);
        assert_eq!(out, pkt, "{prog}");
    }
    assert_eq!(w.ct_len(), 0);
    // …and without it the port is the container's.
    drop(sock);
    let (_, out) = w.run("uplink_ingress", &pkt);
    assert_eq!(check(&out).dst, ip(WEB));
}

#[test]
fn a_nat_port_without_flow_is_not_answered_unless_a_host_socket_owns_it() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    let pkt = tcp_full(OUT, 443, H, 62000, ACK, 1, 1, b"");
    let (v, _) = w.run("uplink_ingress", &pkt);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(w.drops(DropReason::CtMiss), 1);
    // A SYN there is somebody's connection attempt: the host's business.
    let syn = tcp_full(OUT, 443, H, 62000, SYN, 1, 0, b"");
    assert_eq!(w.run("uplink_ingress", &syn).0, TC_ACT_OK);
    // A host listener bound in the NAT range owns its traffic.
    let _l = std::net::TcpListener::bind("0.0.0.0:62000").unwrap();
    let (v, out) = w.run("uplink_ingress", &pkt);
    assert_eq!((v, out), (TC_ACT_OK, pkt));
}

#[test]
fn a_later_tcp_fragment_leaves_the_sequence_window_alone() {
    if !root() {
        return;
    }
    let mut w = World::new(true, false);
    // Sequence numbers past 2^31, where a later fragment's absent header (read as 0) would
    // look like a segment ahead of the window.
    let isn = 3_000_000_000u32;
    let c = |flags, seq, ack, data: &[u8]| tcp_full(CLIENT, 40000, H, 8080, flags, seq, ack, data);
    w.run("uplink_ingress", &c(SYN, isn, 0, b""));
    w.run(
        "uplink_egress",
        &tcp_full(WEB, 80, CLIENT, 40000, SYN_ACK, 500, isn + 1, b""),
    );
    w.run("uplink_ingress", &c(ACK, isn + 1, 501, b""));
    let orig = key(CLIENT, 40000, H, 8080, TCP);
    // A 40-byte segment in two fragments: the TCP header and 4 bytes, then the rest.
    let payload = [7u8; 40];
    let seg = tcp_seg(CLIENT, 40000, H, 8080, ACK, isn + 1, 501, &payload);
    let (first, rest) = seg.split_at(24);
    w.run(
        "uplink_ingress",
        &eth(ipv4(TCP, CLIENT, H, first.to_vec(), 0x2000)),
    );
    let after_first = w.ct_get(&orig).unwrap().0.seq_end;
    assert_eq!(after_first, isn + 1 + 4, "what the first fragment shows");
    let (v, _) = w.run(
        "uplink_ingress",
        &eth(ipv4(TCP, CLIENT, H, rest.to_vec(), 0x0003)),
    );
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(w.ct_get(&orig).unwrap().0.seq_end, after_first);
    // So a blind RST with sequence number 0 still does not close the flow.
    w.run("uplink_ingress", &c(RST, 0, 0, b""));
    assert_eq!(w.ct_get(&orig).unwrap().0.flags & CT_RST, 0);
}
