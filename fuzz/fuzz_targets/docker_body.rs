//! The JSON bodies of the plugin API, through the driver's checks that run before any state
//! is touched: port bindings (ProgramExternalConnectivity) become `-p` specs, addresses
//! (CreateEndpoint, RequestAddress) and MACs are read and checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netctl::{
    docker::driver::{binding_spec, parse_addr},
    kernel::topology::is_unicast_mac,
    model::ports::{PortSpec, Proto},
};
use serde_json::Value;

const PORTMAP: &str = "com.docker.network.portmap";

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for b in body["Options"][PORTMAP].as_array().into_iter().flatten() {
        let Ok(spec) = binding_spec(b) else {
            continue;
        };
        let Ok(p) = spec.parse::<PortSpec>() else {
            continue;
        };
        // The spec says what the binding said.
        assert_eq!(
            b["Port"].as_u64(),
            Some(u64::from(*p.container.start())),
            "{b}"
        );
        let proto = if b["Proto"].as_u64() == Some(17) {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        assert_eq!(p.proto, proto, "{b}");
        match b["HostPort"].as_u64().unwrap_or(0) {
            0 => assert!(p.host.is_none(), "{b}"),
            h => assert_eq!(p.host.map(|r| u64::from(*r.start())), Some(h), "{b}"),
        }
    }
    for addr in [&body["Interface"]["Address"], &body["Address"]] {
        if let Some(ip) = addr.as_str().and_then(|a| parse_addr(a).ok()) {
            assert_eq!(parse_addr(&ip.to_string()).ok(), Some(ip));
        }
    }
    if let Some(mac) = body["Interface"]["MacAddress"].as_str() {
        if is_unicast_mac(mac) {
            assert_eq!(mac.len(), 17, "{mac:?}");
        }
    }
});
