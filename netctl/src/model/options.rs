//! Network options: Docker's keys (`-o com.docker.network.bridge.enable_icc=false`) and the
//! short forms netctl accepts for them.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

pub const ICC: &str = "com.docker.network.bridge.enable_icc";
pub const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const MTU: &str = "com.docker.network.driver.mtu";
pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// How a dual-stack network's IPv6 leaves the host: `nat` (masquerade, the default) or
/// `routed` (the containers' own addresses; from outside, only their published ports and
/// echo requests get in).
pub const GATEWAY_MODE_V6: &str = "com.docker.network.bridge.gateway_mode_ipv6";
/// Docker's overlay option: the network's traffic between hosts is encrypted. Given alone
/// (`-o encrypted`, as Docker's docs write it) or with a boolean.
pub const ENCRYPTED: &str = "encrypted";
/// Docker's network options for the address families (the same as `--ipv6` and
/// `--ipv4=false`).
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const ENABLE_IPV4: &str = "com.docker.network.enable_ipv4";

/// (long key, short key)
const KEYS: [(&str, &str); 8] = [
    (ICC, "icc"),
    (MASQUERADE, "masquerade"),
    (GATEWAY_MODE_V6, "gateway_mode_ipv6"),
    (MTU, "mtu"),
    (BRIDGE_NAME, "bridge_name"),
    (ENCRYPTED, ENCRYPTED),
    (ENABLE_IPV6, "enable_ipv6"),
    (ENABLE_IPV4, "enable_ipv4"),
];

pub const DEFAULT_MTU: u32 = 1500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeOptions {
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: u32,
    pub bridge_name: Option<String>,
    /// `-o encrypted` (overlay networks only).
    pub encrypted: bool,
    /// `-o com.docker.network.enable_ipv6=…` / `enable_ipv4=…`, when given.
    pub enable_ipv6: Option<bool>,
    pub enable_ipv4: Option<bool>,
    /// As given, for `network inspect`.
    pub raw: BTreeMap<String, String>,
}

/// Go's strconv.ParseBool, which Docker uses for these options.
fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => bail!("invalid value {v:?} for option {key}: use true or false"),
    }
}

/// A valid Linux interface name: 1-15 bytes, no '/', ':', NUL or whitespace.
pub fn check_ifname(name: &str, what: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        bail!("invalid {what} {name:?}: interface names are 1-15 characters without '/', ':' or spaces");
    }
    Ok(())
}

pub fn parse(opts: &[String]) -> Result<BridgeOptions> {
    let mut o = BridgeOptions {
        icc: true,
        masquerade: true,
        mtu: DEFAULT_MTU,
        bridge_name: None,
        encrypted: false,
        enable_ipv6: None,
        enable_ipv4: None,
        raw: BTreeMap::new(),
    };
    for kv in opts {
        let Some((key, value)) = kv.split_once('=').or_else(|| {
            let bare = kv == ENCRYPTED;
            bare.then_some((ENCRYPTED, ""))
        }) else {
            bail!("invalid option {kv:?}: use -o KEY=VALUE");
        };
        let Some((long, short)) = KEYS.iter().find(|(l, s)| key == *l || key == *s) else {
            let known: Vec<String> = KEYS
                .iter()
                .map(|(l, s)| match l == s {
                    true => l.to_string(),
                    false => format!("{l} ({s})"),
                })
                .collect();
            bail!(
                "unknown option {key:?}: known options are {}",
                known.join(", ")
            );
        };
        match *long {
            ICC => o.icc = parse_bool(key, value)?,
            GATEWAY_MODE_V6 => {
                if value != "nat" && value != "routed" {
                    bail!("invalid value {value:?} for option {key}: use nat or routed");
                }
            }
            MASQUERADE => o.masquerade = parse_bool(key, value)?,
            ENABLE_IPV6 => o.enable_ipv6 = Some(parse_bool(key, value)?),
            ENABLE_IPV4 => o.enable_ipv4 = Some(parse_bool(key, value)?),
            MTU => {
                o.mtu = value
                    .parse()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| {
                        anyhow::anyhow!("invalid MTU {value:?}: use a number from 68 to 65535")
                    })?
            }
            BRIDGE_NAME => {
                check_ifname(value, "bridge name")?;
                o.bridge_name = Some(value.to_string());
            }
            ENCRYPTED => {
                o.encrypted = value.is_empty() || parse_bool(key, value)?;
                if !o.encrypted {
                    o.raw.remove(ENCRYPTED);
                    continue;
                }
            }
            _ => unreachable!("every key is handled"),
        }
        // One entry per option, the value in force: a long and a short key given for one
        // option would otherwise both show, one of them not applied.
        o.raw.retain(|k, _| k != long && k != short);
        o.raw.insert(key.to_string(), value.to_string());
    }
    Ok(o)
}

/// Whether a network's options (as saved) route its IPv6 without NAT.
pub fn routed6(raw: &BTreeMap<String, String>) -> bool {
    [GATEWAY_MODE_V6, "gateway_mode_ipv6"]
        .iter()
        .any(|k| raw.get(*k).is_some_and(|v| v == "routed"))
}

/// Whether a network's options (as saved) ask for encryption between hosts.
pub fn encrypted(raw: &BTreeMap<String, String>) -> bool {
    raw.contains_key(ENCRYPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv6_gateway_mode_is_nat_or_routed() {
        assert!(routed6(&p(&["gateway_mode_ipv6=routed"]).unwrap().raw));
        assert!(routed6(
            &p(&[&format!("{GATEWAY_MODE_V6}=routed")]).unwrap().raw
        ));
        assert!(!routed6(&p(&["gateway_mode_ipv6=nat"]).unwrap().raw));
        assert!(!routed6(&p(&[]).unwrap().raw));
        let e = p(&["gateway_mode_ipv6=isolated"]).unwrap_err().to_string();
        assert!(e.contains("use nat or routed"), "{e}");
    }

    #[test]
    fn encrypted_alone_or_with_a_boolean() {
        for given in ["encrypted", "encrypted=", "encrypted=true", "encrypted=1"] {
            let o = p(&[given]).unwrap();
            assert!(o.encrypted && encrypted(&o.raw), "{given}");
        }
        let o = p(&["encrypted", "encrypted=false"]).unwrap();
        assert!(!o.encrypted && !encrypted(&o.raw));
        let e = p(&["encrypted=maybe"]).unwrap_err().to_string();
        assert!(e.contains("use true or false"), "{e}");
        assert!(!p(&[]).unwrap().encrypted);
    }

    #[test]
    fn the_address_families_as_options() {
        let o = p(&[&format!("{ENABLE_IPV6}=true"), "enable_ipv4=false"]).unwrap();
        assert_eq!((o.enable_ipv6, o.enable_ipv4), (Some(true), Some(false)));
        let d = p(&[]).unwrap();
        assert_eq!((d.enable_ipv6, d.enable_ipv4), (None, None));
        assert!(p(&["enable_ipv6=yes"]).is_err());
    }

    fn p(v: &[&str]) -> Result<BridgeOptions> {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn long_and_short_keys() {
        let o = p(&[
            "com.docker.network.bridge.enable_icc=false",
            "masquerade=0",
            "mtu=1400",
            "bridge_name=mybr0",
        ])
        .unwrap();
        assert!(!o.icc && !o.masquerade);
        assert_eq!(o.mtu, 1400);
        assert_eq!(o.bridge_name.as_deref(), Some("mybr0"));
        assert_eq!(o.raw.len(), 4);
        let d = p(&[]).unwrap();
        assert!(d.icc && d.masquerade && d.mtu == 1500 && d.bridge_name.is_none());
    }

    /// Found by the net_options fuzz target: the long and the short key of one option both
    /// stayed in `raw` (what inspect shows), the one given first not in force.
    #[test]
    fn one_option_given_twice_shows_once_with_the_value_in_force() {
        let o = p(&[
            "com.docker.network.bridge.name=mtu=9000",
            "bridge_name=mybr0",
            "mtu=1400",
            "com.docker.network.driver.mtu=1450",
        ])
        .unwrap();
        assert_eq!(o.bridge_name.as_deref(), Some("mybr0"));
        assert_eq!(o.mtu, 1450);
        let raw: Vec<(&str, &str)> = o.raw.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            raw,
            [
                ("bridge_name", "mybr0"),
                ("com.docker.network.driver.mtu", "1450")
            ]
        );
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(p(&["icc"]).unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(p(&["icc=maybe"])
            .unwrap_err()
            .to_string()
            .contains("true or false"));
        assert!(p(&["mtu=20"])
            .unwrap_err()
            .to_string()
            .contains("68 to 65535"));
        assert!(p(&["bridge_name=waytoolongbridgename"]).is_err());
        assert!(p(&["bridge_name=a/b"]).is_err());
        // Found by the net_options fuzz target: netlink would cut the name at the NUL.
        assert!(p(&["bridge_name=myybr\u{1}\0\u{4}=t"]).is_err());
        assert!(p(&["color=blue"])
            .unwrap_err()
            .to_string()
            .contains("unknown option"));
    }
}
