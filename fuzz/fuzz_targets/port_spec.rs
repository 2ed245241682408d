//! `-p` specs (`run -p`, the CNI plugin's portMappings, Docker's port bindings all end here):
//! a spec that parses prints back to the same spec, and allocating it on an empty host
//! gives one mapping per container port, inside the ranges asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netctl::model::ports::{allocate, HostSockets, PortSpec};

/// The spec in its longest form: IP:HOST-END:CPORT-END/PROTO.
fn render(s: &PortSpec) -> String {
    let r = |r: &std::ops::RangeInclusive<u16>| format!("{}-{}", r.start(), r.end());
    let host = s.host.as_ref().map(r).unwrap_or_default();
    format!("{}:{host}:{}/{}", s.host_ip, r(&s.container), s.proto)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = text.parse::<PortSpec>() else {
        return;
    };
    let again: PortSpec = render(&spec)
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} printed as {:?}: {e:#}", render(&spec)));
    assert_eq!(spec, again, "{text:?}");

    let ephemeral = 32768..=60999;
    let Ok(mapped) = allocate(
        std::slice::from_ref(&spec),
        &[],
        ephemeral.clone(),
        &HostSockets(Vec::new()),
    ) else {
        // Only an ephemeral range too small for the container range may fail here.
        assert!(
            spec.host.is_none() && spec.container.len() > ephemeral.len(),
            "{text:?}"
        );
        return;
    };
    let one_of_range = spec
        .host
        .as_ref()
        .is_some_and(|h| h.len() != spec.container.len());
    let want = if one_of_range {
        1
    } else {
        spec.container.len()
    };
    assert_eq!(mapped.len(), want, "{text:?}");
    for m in &mapped {
        assert!(
            spec.container.contains(&m.container_port),
            "{text:?}: {m:?}"
        );
        assert_eq!((m.proto, m.host_ip), (spec.proto, spec.host_ip));
        let hosts = spec.host.clone().unwrap_or(ephemeral.clone());
        assert!(hosts.contains(&m.host_port), "{text:?}: {m:?}");
    }
});
