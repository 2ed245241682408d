//! What the agent reads from etcd, which anyone who reaches the store may have written: an
//! endpoint key, and a value decoded as an overlay network, an endpoint record or a host
//! record, then checked as the agent checks it before use. Input: KEY, a NUL byte, VALUE.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use netctl::{
    cluster::store::parse_endpoint_key,
    model::{
        overlay::{
            network_problem, record_problem, EndpointRecord, HostRecord, OverlayNetwork,
            MAX_ALIASES, MAX_VNI,
        },
        runopts::is_dns_name,
        state::is_safe_id,
    },
};

/// A network as `network create --driver overlay` makes it.
fn known() -> OverlayNetwork {
    serde_json::from_str(
        r#"{"id":"0123456789abcdef0123","name":"ov1","subnet":"10.0.1.0/24",
            "gateway":"10.0.1.1","ip_range":null,"internal":false,"icc":true,"vni":4096,
            "mtu":1450,"options":{},"created":0,"user_subnet":false}"#,
    )
    .expect("a valid network")
}

fn check_record(net: &OverlayNetwork, ip: Ipv4Addr, r: &EndpointRecord) {
    if record_problem(net, ip, r).is_some() {
        return;
    }
    // A usable record: a container address of its network, from a real host, well named.
    assert!(net.subnet.contains(ip) && ip != net.gateway, "{ip} {r:?}");
    assert!(!r.host.is_unspecified() && !r.host.is_loopback() && !r.host.is_multicast());
    assert!(
        is_safe_id(&r.endpoint_id) && is_safe_id(&r.container_id),
        "{r:?}"
    );
    assert!(r.aliases.len() <= MAX_ALIASES && r.aliases.iter().all(|a| is_dns_name(a)));
}

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let at = match parse_endpoint_key(key) {
        Some((net, ip)) => {
            // The key the store writes for it reads back the same.
            let again = format!("/netctl/v1/endpoints/{net}/{ip}");
            assert_eq!(parse_endpoint_key(again.as_bytes()), Some((net, ip)));
            ip
        }
        None => Ipv4Addr::new(10, 0, 1, 2),
    };
    if let Ok(n) = serde_json::from_slice::<OverlayNetwork>(value) {
        if network_problem(&n).is_none() {
            assert!(is_safe_id(&n.id) && n.subnet.contains(n.gateway), "{n:?}");
            assert!((4096..=MAX_VNI).contains(&n.vni) && (68..=65535).contains(&n.mtu));
            let local = n.local();
            let subnet = local.ipv4.as_ref().map(|v4| v4.subnet);
            assert_eq!((local.vni, subnet), (Some(n.vni), Some(n.subnet)));
            let json = serde_json::to_vec(&n).expect("serializable");
            assert_eq!(
                serde_json::from_slice::<OverlayNetwork>(&json).ok(),
                Some(n)
            );
        }
    }
    if let Ok(r) = serde_json::from_slice::<EndpointRecord>(value) {
        check_record(&known(), at, &r);
    }
    let _ = serde_json::from_slice::<HostRecord>(value);
});
