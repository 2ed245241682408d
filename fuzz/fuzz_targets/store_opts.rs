//! `--cluster-store-opt` (and `NETCTL_CLUSTER_STORE_OPT`): a parsed setting is never plain
//! http unless asked for, and never both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netctl::base::store_opts::StoreSecurity;

fuzz_target!(|data: &[u8]| {
    let Ok(opts) = std::str::from_utf8(data) else {
        return;
    };
    // No environment: only the options count. File options must name existing files; the
    // corpus uses /dev/null and /etc/hostname.
    let Ok(s) = StoreSecurity::parse(opts, |_| None) else {
        return;
    };
    assert!(s.tls() != s.insecure, "{opts:?}: {s:?}");
    assert!(s.identity.is_none() || s.tls(), "{opts:?}");
    let _ = s.describe();
});
