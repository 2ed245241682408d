//! The demo: what netctl does, shown in a sandbox that tears itself down.

use std::path::Path;

use anyhow::{bail, Result};
use netctl_tests::{Sandbox, WHOAMI};

fn show(sb: &Sandbox, args: &[&str]) -> Result<String> {
    let shown: Vec<&str> = args
        .iter()
        .map(|a| if *a == WHOAMI { "<whoami server>" } else { a })
        .collect();
    println!("\n$ netctl {}", shown.join(" "));
    let out = sb.netctl(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("netctl {} failed", shown.join(" "));
    }
    Ok(stdout)
}

fn check(ok: bool, what: &str, failures: &mut Vec<String>) {
    println!("   {} {what}", if ok { "ok  " } else { "FAIL" });
    if !ok {
        failures.push(what.to_string());
    }
}

pub fn run(netctl: &Path) -> Result<()> {
    if let Some(reason) = netctl_tests::unavailable() {
        bail!("the demo {reason}");
    }
    let sb = Sandbox::with_netctl(netctl.to_path_buf());
    println!(
        "== netctl demo in a sandbox: host namespace {} <-> outside namespace {}",
        sb.host_ip, sb.outside_ip
    );
    let mut failures = Vec::new();

    show(
        &sb,
        &["network", "create", "--subnet", "10.10.0.0/24", "front"],
    )?;
    show(
        &sb,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "front",
            "-p",
            "8080:80",
            "--",
            "python3",
            "-c",
            WHOAMI,
            "0.0.0.0",
            "80",
        ],
    )?;
    sb.wait_listening("web", 80);
    show(&sb, &["ps"])?;
    show(&sb, &["port", "web"])?;

    println!("\n== 1. a published port, fetched from outside (DNAT in XDP/TC, no docker-proxy)");
    let url = format!("http://{}:8080/", sb.host_ip);
    println!(
        "$ curl {url}   (from the outside namespace; the server answers with the client it saw)"
    );
    let seen = sb.curl_from_outside(&url);
    println!("{}", seen.as_deref().unwrap_or("(failed)"));
    check(
        seen.as_deref() == Some(sb.outside_ip.as_str()),
        "the container saw the real client address",
        &mut failures,
    );

    println!("\n== 2. container traffic leaves masqueraded (SNAT on the uplink's TC egress)");
    let _srv = sb.outside_whoami_server(9999, 60);
    let out = sb.container_sh(
        "web",
        &format!("curl -sf --max-time 5 http://{}:9999/", sb.outside_ip),
    );
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "$ netctl exec web -- curl http://{}:9999/\n{seen}",
        sb.outside_ip
    );
    check(
        seen == sb.host_ip,
        "the outside server saw the uplink address",
        &mut failures,
    );

    println!("\n== 3. networks are isolated (TC ingress on the container's veth)");
    show(
        &sb,
        &["network", "create", "--subnet", "10.20.0.0/24", "back"],
    )?;
    show(
        &sb,
        &[
            "run",
            "-d",
            "--name",
            "other",
            "--network",
            "back",
            "--",
            "sleep",
            "600",
        ],
    )?;
    let out = sb.container_sh("other", "curl -sf --max-time 2 http://10.10.0.2/");
    println!(
        "$ netctl exec other -- curl http://10.10.0.2/   -> {}",
        if out.status.success() {
            "answered"
        } else {
            "blocked"
        }
    );
    check(
        !out.status.success(),
        "a container on another network cannot reach web",
        &mut failures,
    );
    let out = sb.container_sh("other", &format!("curl -sf --max-time 5 {url}"));
    check(
        out.status.success(),
        "…but it reaches web's published port (hairpin)",
        &mut failures,
    );

    println!("\n== 4. the eBPF programs' own counters");
    let stats = show(&sb, &["stats"])?;
    check(
        stats.contains("isolation"),
        "the isolation drop is counted by reason",
        &mut failures,
    );

    println!();
    if failures.is_empty() {
        println!("== demo OK: published port, masquerade, isolation and hairpin, all in eBPF; sandbox removed");
        Ok(())
    } else {
        bail!("demo failed: {}", failures.join("; "))
    }
}
