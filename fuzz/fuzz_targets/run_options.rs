//! The name options of `run`: `--add-host`, `--link`, `--expose`, `--dns`, `--hostname`,
//! `--network-alias`. What parses satisfies the rule its error message states.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netctl::model::runopts::{
    check_alias, check_hostname, is_dns_name, parse_add_host, parse_dns, parse_expose, parse_link,
    AddHost,
};

// Input: a letter choosing the option (h: --add-host, l: --link, e: --expose, d: --dns,
// n: --hostname and --network-alias), then its value.
fuzz_target!(|data: &[u8]| {
    let Some((&which, s)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(s) else {
        return;
    };
    match which {
        b'h' => match parse_add_host(s) {
            Ok(AddHost::Addr(name, ip)) => {
                assert!(is_dns_name(&name), "{s:?}");
                // Printed back (IPv6 unbracketed: the name ends at the first ':').
                let again = parse_add_host(&format!("{name}:{ip}")).expect("reparses");
                assert_eq!(again, AddHost::Addr(name, ip), "{s:?}");
            }
            Ok(AddHost::Gateway(name)) => assert!(is_dns_name(&name), "{s:?}"),
            Err(_) => {}
        },
        b'l' => {
            if let Ok((name, alias)) = parse_link(s) {
                assert!(!name.starts_with('/'), "{s:?}");
                if let Some(a) = alias {
                    assert!(is_dns_name(&a), "{s:?}");
                }
            }
        }
        b'e' => {
            if let Ok(ports) = parse_expose(s) {
                assert!(!ports.is_empty(), "{s:?}");
                assert!(ports
                    .iter()
                    .all(|p| p.port > 0 && p.proto == ports[0].proto));
                assert!(
                    ports.windows(2).all(|w| w[1].port == w[0].port + 1),
                    "{s:?}"
                );
            }
        }
        b'd' => {
            if let Ok(ip) = parse_dns(s) {
                assert_eq!(parse_dns(&ip.to_string()).ok(), Some(ip), "{s:?}");
            }
        }
        b'n' => {
            if check_hostname(s).is_ok() {
                assert!(s.len() <= 64 && is_dns_name(s), "{s:?}");
            }
            assert_eq!(check_alias(s, "--network-alias").is_ok(), is_dns_name(s));
        }
        _ => {}
    }
});
