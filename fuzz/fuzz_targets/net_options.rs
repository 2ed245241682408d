//! `network create -o KEY=VALUE` (also what a CNI configuration's icc/masquerade/mtu and
//! Docker's generic options become): what parses is in bounds, and its raw options parse
//! again to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netctl::model::{options, state::is_ifname};

// Input: the options, one a line.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts: Vec<String> = text.lines().map(str::to_string).collect();
    let Ok(o) = options::parse(&opts) else {
        return;
    };
    assert!((68..=65535).contains(&o.mtu), "{opts:?}");
    if let Some(b) = &o.bridge_name {
        assert!(is_ifname(b), "{opts:?}: bridge {b:?}");
    }
    // The last value of a key wins, so its raw map alone says the same.
    let raw: Vec<String> = o.raw.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let again = options::parse(&raw).unwrap_or_else(|e| panic!("{raw:?}: {e:#}"));
    assert_eq!(
        (o.icc, o.masquerade, o.mtu),
        (again.icc, again.masquerade, again.mtu)
    );
    assert_eq!(o.bridge_name, again.bridge_name);
    assert_eq!(o.encrypted, again.encrypted, "{opts:?}");
    assert_eq!(o.encrypted, options::encrypted(&o.raw), "{opts:?}");
});
