//! The demo: what netctl does, shown in a sandbox that tears itself down.

use std::path::Path;

use anyhow::{bail, Result};
use netctl_tests::Sandbox;

fn show(sb: &Sandbox, args: &[&str]) -> Result<String> {
    println!("\n$ netctl {}", args.join(" "));
    let out = sb.netctl(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("netctl {} failed", args.join(" "));
    }
    Ok(stdout)
}

pub fn run(netctl: &Path) -> Result<()> {
    if let Some(reason) = netctl_tests::unavailable() {
        bail!("the demo {reason}");
    }
    println!("== netctl demo: a sandbox host namespace with an uplink to an outside namespace");
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    println!("   host {} <-> outside {}", sb.host_ip, sb.outside_ip);

    show(&sb, &["sync"])?;
    println!("\n$ ping -c 3 {} (from outside)", sb.host_ip);
    let ping = sb.outside_sh(&format!("ping -c 3 -i 0.2 -W 1 -q {}", sb.host_ip));
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    let stats = show(&sb, &["stats"])?;
    let xdp_packets: u64 = stats
        .lines()
        .find(|l| l.starts_with("uplink-xdp"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !ping.status.success() || xdp_packets < 3 {
        bail!("demo failed: traffic did not pass through the eBPF programs");
    }
    println!("\n== demo OK: programs loaded, pinned and attached; {xdp_packets} packets seen by XDP on the uplink");
    Ok(())
}
