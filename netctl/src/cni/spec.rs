//! The CNI protocol's data (spec 1.1; 1.0 and 0.4 accepted): the network configuration on
//! stdin, the environment, the result and error objects on stdout, the error codes.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::Deserialize;
use serde_json::{json, Value};

/// The versions this plugin speaks, oldest first; results are written in the caller's.
pub const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The spec's well-known error codes (and netctl's own, 100+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    /// The request was understood but netctl could not carry it out (no free address, a
    /// port taken, …).
    Failed = 100,
}

/// An error as the spec prints it: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug)]
pub struct Error {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.msg)
    }
}

/// netctl's own failures: the first line is the message, the cause chain the details.
impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        let text = format!("{e:#}");
        let code = if text.contains("lock") && text.contains("held by") {
            Code::TryAgainLater
        } else {
            Code::Failed
        };
        Error {
            code,
            msg: e.to_string(),
            details: text,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The operation, from `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// The `CNI_*` variables a command needs.
#[derive(Debug)]
pub struct Env {
    pub command: Command,
    /// `CNI_CONTAINERID` as the runtime gave it.
    pub container_id: String,
    /// The container's ID in netctl's state ([`state_id`] of `container_id`).
    pub id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V` (Podman sends the container's name as `K8S_POD_NAME`).
    pub args: BTreeMap<String, String>,
}

/// A container ID as the CNI spec defines it: non-empty, a letter or digit, then letters,
/// digits, `_`, `.` or `-`.
pub fn is_container_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The ID netctl keeps a CNI container under: the runtime's own where it makes a state ID
/// (12 to 128 characters), else `cni-` and a hash of it (a short `ctr1`, a very long one).
pub fn state_id(container_id: &str) -> String {
    if crate::model::state::is_safe_id(container_id) {
        return container_id.to_string();
    }
    let h = container_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("cni-{h:016x}")
}

impl Env {
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        let command = match cmd.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => {
                return Err(Error::new(
                    Code::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {cmd:?}: ADD, DEL, CHECK, STATUS, GC or VERSION"),
                ))
            }
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let need = |name: &str| -> Result<String> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v),
                None if !per_attachment => Ok(String::new()),
                None => Err(Error::new(
                    Code::InvalidEnvironment,
                    format!("{name} is not set: the runtime must pass it for {cmd}"),
                )),
            }
        };
        let container_id = need("CNI_CONTAINERID")?;
        let ifname = need("CNI_IFNAME")?;
        need("CNI_PATH")?;
        let netns = match command {
            Command::Add | Command::Check => Some(PathBuf::from(need("CNI_NETNS")?)),
            // DEL may come after the namespace is gone.
            _ => get("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        if per_attachment {
            if !is_container_id(&container_id) {
                return Err(Error::new(
                    Code::InvalidEnvironment,
                    format!("CNI_CONTAINERID {container_id:?} is not a valid container ID (a letter or digit, then letters, digits, _ . -)"),
                ));
            }
            crate::model::options::check_ifname(&ifname, "CNI_IFNAME")
                .map_err(|e| Error::new(Code::InvalidEnvironment, e.to_string()))?;
        }
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Env {
            id: state_id(&container_id),
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

/// The network configuration (one plugin's entry of a conflist, with `name` and
/// `cniVersion` filled in by the runtime). Keys of other plugins are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The netctl network to join (default: `name`); created on first ADD when missing.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub icc: Option<bool>,
    #[serde(default)]
    pub masquerade: Option<bool>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// host-local's `ranges`, for dual stack: one range set per address family (the first
    /// range of each is used), `[[{"subnet": V4}], [{"subnet": V6}]]`.
    #[serde(default)]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` for GC.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Ipam {
    #[serde(default)]
    pub ranges: Vec<Vec<Range>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Range {
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A network's addressing as the configuration gives it: (subnet, gateway) per family.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Addressing {
    pub v4: (Option<String>, Option<String>),
    pub v6: Option<(Option<String>, Option<String>)>,
    /// `ipam.ranges` of IPv6 alone (no IPv4 range, no `subnet`): an IPv6-only network.
    pub v6_only: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Requested addresses (`ips` capability), CIDR or plain.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Podman's `aliases` capability: network name → names.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

impl PortMapping {
    /// The same mapping in `-p` syntax, so it gets `run -p`'s checks.
    pub fn as_spec(&self) -> String {
        let proto = self.protocol.to_ascii_lowercase();
        match self.host_ip.as_str() {
            "" => format!("{}:{}/{proto}", self.host_port, self.container_port),
            ip => format!("{ip}:{}:{}/{proto}", self.host_port, self.container_port),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                Code::Decode,
                format!("the network configuration is not valid JSON for netctl: {e}"),
            )
        })?;
        check_version(&conf.cni_version)?;
        if conf.name.is_empty() {
            return Err(Error::new(
                Code::InvalidConfig,
                "the network configuration has no \"name\"",
            ));
        }
        Ok(conf)
    }

    /// The netctl network this configuration joins.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// `netctl network create`'s options for a missing network.
    pub fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(icc) = self.icc {
            o.push(format!("icc={icc}"));
        }
        if let Some(m) = self.masquerade {
            o.push(format!("masquerade={m}"));
        }
        if let Some(mtu) = self.mtu {
            o.push(format!("mtu={mtu}"));
        }
        o
    }

    /// The address asked for with the `ips` capability, if any.
    /// The requested addresses: the `ips` capability, else `IP=` of `CNI_ARGS` (what Podman
    /// sends for one static address, comma-separated as host-local reads it); at most one
    /// per family.
    pub fn requested_ips(
        &self,
        args: &BTreeMap<String, String>,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let from_args: Vec<String> = match (self.runtime_config.ips.is_empty(), args.get("IP")) {
            (true, Some(list)) => list.split(',').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let mut out = (None, None);
        for one in self.runtime_config.ips.iter().chain(&from_args) {
            let bad = || {
                Error::new(
                    Code::InvalidConfig,
                    format!("runtimeConfig.ips: {one:?} is not an IP address"),
                )
            };
            let ip: IpAddr = one
                .split('/')
                .next()
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(bad)?;
            let twice = match ip {
                IpAddr::V4(v4) => out.0.replace(v4).is_some(),
                IpAddr::V6(v6) => out.1.replace(v6).is_some(),
            };
            if twice {
                return Err(Error::new(
                    Code::UnsupportedField,
                    "runtimeConfig.ips: one address per family and attachment",
                ));
            }
        }
        Ok(out)
    }

    /// The subnet and gateway of each family: `subnet`/`gateway`, or `ipam.ranges`.
    pub fn addressing(&self) -> Result<Addressing> {
        let mut a = Addressing {
            v4: (self.subnet.clone(), self.gateway.clone()),
            v6: None,
            v6_only: false,
        };
        let ranges = self.ipam.as_ref().map_or(&[][..], |i| &i.ranges[..]);
        for set in ranges {
            let Some(r) = set.first() else { continue };
            let conflict = |what: &str| {
                Error::new(
                    Code::InvalidConfig,
                    format!("ipam.ranges: two {what} range sets, or `subnet` and an {what} range: give one per family"),
                )
            };
            let pair = (Some(r.subnet.clone()), r.gateway.clone());
            if r.subnet.contains(':') {
                if a.v6.replace(pair).is_some() {
                    return Err(conflict("IPv6"));
                }
            } else if a.v4.0.is_some() {
                return Err(conflict("IPv4"));
            } else {
                a.v4 = pair;
            }
        }
        a.v6_only = a.v6.is_some() && a.v4.0.is_none();
        Ok(a)
    }
}

pub fn check_version(v: &str) -> Result<()> {
    if SUPPORTED.contains(&v) {
        return Ok(());
    }
    Err(Error::new(
        Code::IncompatibleVersion,
        format!(
            "CNI version {v:?} is not supported: netctl speaks {}",
            SUPPORTED.join(", ")
        ),
    ))
}

/// What VERSION prints.
pub fn version_info(asked: &str) -> Value {
    json!({ "cniVersion": asked, "supportedVersions": SUPPORTED })
}

/// One attachment's result: the host veth, the container interface, its address, the
/// default route and the resolver.
pub struct Attached<'a> {
    pub host_veth: &'a str,
    pub ifname: &'a str,
    pub mac: &'a str,
    pub netns: &'a str,
    /// On a network with IPv4: the address, its prefix length, the gateway.
    pub ip: Option<(Ipv4Addr, u8, Ipv4Addr)>,
    /// On a network with IPv6: the address, its prefix length, the gateway.
    pub ip6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
    /// The attachment carries the container's IPv4 / IPv6 default route.
    pub default_route: bool,
    pub default_route6: bool,
    pub dns: Option<IpAddr>,
}

impl Attached<'_> {
    pub fn to_json(&self, version: &str) -> Value {
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        if let Some((ip4, prefix, gw)) = self.ip {
            let mut ip = json!({
                "address": format!("{ip4}/{prefix}"),
                "gateway": gw.to_string(),
                "interface": 1,
            });
            if version.starts_with("0.") {
                ip["version"] = json!("4");
            }
            ips.push(ip);
            if self.default_route {
                routes.push(json!({ "dst": "0.0.0.0/0", "gw": gw.to_string() }));
            }
        }
        if let Some((ip6, prefix, gw6)) = self.ip6 {
            let mut ip = json!({
                "address": format!("{ip6}/{prefix}"),
                "gateway": gw6.to_string(),
                "interface": 1,
            });
            if version.starts_with("0.") {
                ip["version"] = json!("6");
            }
            ips.push(ip);
            if self.default_route6 {
                routes.push(json!({ "dst": "::/0", "gw": gw6.to_string() }));
            }
        }
        let dns = match self.dns {
            Some(d) => json!({ "nameservers": [d.to_string()] }),
            None => json!({}),
        };
        json!({
            "cniVersion": version,
            "interfaces": [
                { "name": self.host_veth },
                { "name": self.ifname, "mac": self.mac, "sandbox": self.netns },
            ],
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| map.get(k).cloned())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123def4567890"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn environment_is_checked_per_command() {
        let e = env(&ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.netns, Some(PathBuf::from("/run/netns/x")));
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let vars: Vec<_> = ADD.iter().filter(|(k, _)| *k != missing).copied().collect();
            let err = env(&vars).unwrap_err();
            assert_eq!(err.code, Code::InvalidEnvironment);
            assert!(err.msg.contains(missing), "{}", err.msg);
        }
        // DEL without a namespace (it is gone), VERSION with nothing else.
        let vars: Vec<_> = ADD
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert_eq!(env(&vars).unwrap().netns, None);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            Code::InvalidEnvironment
        );
        let mut bad = ADD.to_vec();
        for id in ["../../etc", "", "-x", "a/b", "a b"] {
            bad[1] = ("CNI_CONTAINERID", id);
            assert_eq!(
                env(&bad).unwrap_err().code,
                Code::InvalidEnvironment,
                "{id:?}"
            );
        }
        // What the spec accepts, short IDs included (cnitool, test harnesses): kept under a
        // state ID of their own, the same one every time.
        for id in ["ctr1", "a", "x.y_z-1"] {
            bad[1] = ("CNI_CONTAINERID", id);
            let e = env(&bad).unwrap();
            assert!(
                crate::model::state::is_safe_id(&e.id) && e.id.starts_with("cni-"),
                "{}",
                e.id
            );
            assert_eq!(e.id, state_id(id));
        }
        assert_eq!(state_id("abc123def4567890"), "abc123def4567890");
        assert_ne!(state_id("ctr1"), state_id("ctr2"));
        let mut args = ADD.to_vec();
        args.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"));
        assert_eq!(env(&args).unwrap().args["K8S_POD_NAME"], "web");
    }

    #[test]
    fn dual_stack_ranges_requests_and_results() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"d","type":"netctl",
                 "ipam":{"ranges":[[{"subnet":"10.9.0.0/24"}],[{"subnet":"fd09::/64","gateway":"fd09::fe"}]]},
                 "runtimeConfig":{"ips":["10.9.0.7/24","fd09::7/64"]}}"#,
        )
        .unwrap();
        let a = c.addressing().unwrap();
        assert_eq!(a.v4, (Some("10.9.0.0/24".into()), None));
        assert_eq!(
            a.v6,
            Some((Some("fd09::/64".into()), Some("fd09::fe".into())))
        );
        let (v4, v6) = c.requested_ips(&BTreeMap::new()).unwrap();
        assert_eq!(v4, Some("10.9.0.7".parse().unwrap()));
        assert_eq!(v6, Some("fd09::7".parse().unwrap()));
        // Podman's one static address, in CNI_ARGS.
        let plain = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"d"}"#).unwrap();
        let args: BTreeMap<String, String> = [("IP".to_string(), "fd09::9".to_string())].into();
        assert_eq!(
            plain.requested_ips(&args).unwrap(),
            (None, Some("fd09::9".parse().unwrap()))
        );
        // Two sets of one family, or `subnet` beside an IPv4 range: which one is meant?
        let two = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"d","subnet":"10.1.0.0/24",
                 "ipam":{"ranges":[[{"subnet":"10.9.0.0/24"}]]}}"#,
        )
        .unwrap();
        assert_eq!(two.addressing().unwrap_err().code, Code::InvalidConfig);
        assert!(!a.v6_only);
        // IPv6 ranges alone: an IPv6-only network, whose result has IPv6 alone.
        let only6 = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"d","ipam":{"ranges":[[{"subnet":"fd09::/64"}]]}}"#,
        )
        .unwrap();
        assert!(only6.addressing().unwrap().v6_only);
        let v = Attached {
            host_veth: "vethx",
            ifname: "eth0",
            mac: "02:42:00:00:00:07",
            netns: "/run/netns/x",
            ip: None,
            ip6: Some(("fd09::7".parse().unwrap(), 64, "fd09::1".parse().unwrap())),
            default_route: true,
            default_route6: true,
            dns: Some("fd09::1".parse().unwrap()),
        }
        .to_json("1.0.0");
        assert_eq!(v["ips"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["ips"][0]["address"], "fd09::7/64");
        assert_eq!(
            v["routes"],
            serde_json::json!([{"dst": "::/0", "gw": "fd09::1"}])
        );
        assert_eq!(v["dns"]["nameservers"][0], "fd09::1");
        let result = Attached {
            host_veth: "vethx",
            ifname: "eth0",
            mac: "02:42:0a:09:00:07",
            netns: "/run/netns/x",
            ip: Some(("10.9.0.7".parse().unwrap(), 24, "10.9.0.1".parse().unwrap())),
            ip6: Some(("fd09::7".parse().unwrap(), 64, "fd09::fe".parse().unwrap())),
            default_route: true,
            default_route6: true,
            dns: None,
        };
        let v = result.to_json("0.4.0");
        assert_eq!(v["ips"][1]["address"], "fd09::7/64");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(v["routes"][1]["dst"], "::/0");
        assert_eq!(v["routes"][1]["gw"], "fd09::fe");
    }

    #[test]
    fn configuration_parsing_and_versions() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"front","type":"netctl","subnet":"10.9.0.0/24",
                 "icc":false,"mtu":1400,"foo":{"other":"plugin"},
                 "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                                                  {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}],
                                  "ips":["10.9.0.7/24"],"aliases":{"front":["www"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.network(), "front");
        assert_eq!(c.options(), vec!["icc=false", "mtu=1400"]);
        let specs: Vec<_> = c
            .runtime_config
            .port_mappings
            .iter()
            .map(|p| p.as_spec())
            .collect();
        assert_eq!(specs, vec!["8080:80/tcp", "127.0.0.1:53:53/udp"]);
        for s in &specs {
            s.parse::<crate::model::ports::PortSpec>().unwrap();
        }
        assert_eq!(
            c.requested_ips(&BTreeMap::new()).unwrap().0,
            Some("10.9.0.7".parse().unwrap())
        );
        assert_eq!(c.runtime_config.aliases["front"], vec!["www"]);

        let err = |t: &[u8]| NetConf::parse(t).unwrap_err().code;
        assert_eq!(err(b"{not json"), Code::Decode);
        assert_eq!(
            err(br#"{"cniVersion":"0.3.1","name":"n"}"#),
            Code::IncompatibleVersion
        );
        assert_eq!(
            err(br#"{"cniVersion":"1.1.0","name":""}"#),
            Code::InvalidConfig
        );
        assert_eq!(err(br#"{"name":"n"}"#), Code::Decode);
        let two = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2"]}}"#,
        )
        .unwrap();
        assert_eq!(
            two.requested_ips(&BTreeMap::new()).unwrap_err().code,
            Code::UnsupportedField
        );
    }

    #[test]
    fn results_and_errors_in_the_callers_version() {
        let a = Attached {
            host_veth: "vethab",
            ifname: "eth0",
            mac: "02:42:0a:09:00:02",
            netns: "/run/netns/x",
            ip: Some(("10.9.0.2".parse().unwrap(), 24, "10.9.0.1".parse().unwrap())),
            ip6: None,
            default_route: true,
            default_route6: true,
            dns: Some("10.9.0.1".parse().unwrap()),
        };
        let v = a.to_json("1.1.0");
        assert_eq!(v["ips"][0]["address"], "10.9.0.2/24");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(v["routes"][0]["gw"], "10.9.0.1");
        assert_eq!(a.to_json("0.4.0")["ips"][0]["version"], "4");
        let e = Error::new(Code::UnknownContainer, "no such container").to_json("1.0.0");
        assert_eq!(e["code"], 3);
        assert_eq!(e["msg"], "no such container");
        assert_eq!(version_info("1.1.0")["supportedVersions"][2], "1.1.0");
    }
}
