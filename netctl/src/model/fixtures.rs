//! Small states for unit tests across the layers.

use crate::model::state::{Container, Endpoint, Network};

pub fn net(name: &str, subnet: &str) -> Network {
    let subnet: ipnetwork::Ipv4Network = subnet.parse().unwrap();
    Network {
        id: format!("{name}000000000000"),
        name: name.into(),
        driver: "bridge".into(),
        ipv4: Some(crate::model::state::Ipv4Subnet {
            subnet,
            gateway: std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1),
            ip_range: None,
            user_subnet: true,
        }),
        internal: false,
        icc: true,
        masquerade: true,
        mtu: 1500,
        bridge: format!("br-{name}"),
        options: Default::default(),
        created: 0,
        vni: None,
        ipv6: None,
    }
}

pub fn container(name: &str, id: &str, eps: &[(&str, &str)]) -> Container {
    Container {
        id: id.into(),
        name: name.into(),
        command: vec![],
        detached: true,
        created: 0,
        pid: None,
        pid_start: None,
        boot_id: None,
        host_network: false,
        engine_netns: None,
        engine_netns_start: None,
        engine: None,
        endpoints: eps
            .iter()
            .enumerate()
            .map(|(i, (n, ip))| Endpoint {
                network: n.to_string(),
                endpoint_id: format!("{name}{i}00000000000"),
                ifname: format!("eth{i}"),
                host_veth: format!("v{name}{i}"),
                ip: Some(ip.parse().unwrap()),
                ip6: None,
                mac: String::new(),
                aliases: vec![],
            })
            .collect(),
        ports: vec![],
        options: Default::default(),
    }
}
