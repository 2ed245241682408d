use anyhow::{bail, Result};

use crate::{engine::ctx::Ctx, model::ports};

/// List a container's published ports, or the host address of one port (Docker's format)
#[derive(clap::Args)]
pub struct Args {
    /// Container: name, ID or unique ID prefix
    #[arg(value_name = "CONTAINER")]
    name: String,
    /// PORT[/PROTO] of the container
    port: Option<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let state = Ctx::open_unchecked()?.store.snapshot()?;
    let c = state.find_container(&args.name)?;
    match args.port {
        None => c
            .ports
            .iter()
            .for_each(|p| println!("{}", ports::describe(p))),
        Some(spec) => {
            let (port, proto) = match spec.split_once('/') {
                Some((p, proto)) => (p, proto.parse()?),
                None => (spec.as_str(), ports::Proto::Tcp),
            };
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid port {spec:?}: use PORT or PORT/PROTO"))?;
            let found: Vec<_> = c
                .ports
                .iter()
                .filter(|p| p.container_port == port && p.proto == proto)
                .collect();
            if found.is_empty() {
                bail!(
                    "no public port {port}/{proto} published for container {}",
                    c.name
                );
            }
            found.iter().for_each(|p| {
                println!("{}", crate::model::ports::host_port(p.host_ip, p.host_port))
            });
        }
    }
    Ok(0)
}
