//! A CNI plugin's environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_NETNS`,
//! `CNI_PATH` and the `K=V;K=V` list of `CNI_ARGS`. What is accepted is safe to use as a
//! state ID and an interface name. Input: `NAME=VALUE` lines, as `env` prints them.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use netctl::{
    cni::spec::{is_container_id, Command, Env},
    model::state::{is_ifname, is_safe_id},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let Ok(env) = Env::read(|k| vars.get(k).map(|v| v.to_string())) else {
        return;
    };
    assert!(is_safe_id(&env.id), "{vars:?}: state ID {:?}", env.id);
    if matches!(env.command, Command::Add | Command::Del | Command::Check) {
        assert!(is_container_id(&env.container_id), "{vars:?}");
        assert!(is_ifname(&env.ifname), "{vars:?}");
    }
    for (k, v) in &env.args {
        assert!(!k.contains([';', '=']) && !v.contains(';'), "{vars:?}");
    }
});
