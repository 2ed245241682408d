//! A CNI plugin's stdin: the network configuration, and every check ADD makes of it before
//! it touches anything (port mappings as `-p` specs, the MAC, aliases, the address).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netctl::{
    cni::{commands::Request, spec::NetConf},
    model::{ports::PortSpec, runopts::is_dns_name},
};

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = NetConf::parse(data) else {
        return;
    };
    assert!(!conf.name.is_empty());
    let _ = conf.options();
    let none = std::collections::BTreeMap::new();
    let _ = conf.requested_ips(&none);
    let _ = conf.addressing();
    for p in &conf.runtime_config.port_mappings {
        if let Ok(spec) = p.as_spec().parse::<PortSpec>() {
            // What parses is the mapping asked for.
            assert_eq!(
                u32::from(*spec.container.start()),
                p.container_port,
                "{p:?}"
            );
            let host = spec.host.as_ref().map(|h| u32::from(*h.start()));
            assert_eq!(host, Some(p.host_port), "{p:?}");
        }
    }
    if Request::of(&conf, &none).is_ok() {
        // Every alias for the network it joins passed the DNS-name rule.
        let aliases = conf
            .runtime_config
            .aliases
            .get(conf.network())
            .or_else(|| conf.runtime_config.aliases.get(&conf.name));
        assert!(aliases.into_iter().flatten().all(|a| is_dns_name(a)));
    }
});
