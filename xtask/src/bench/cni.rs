//! CNI ADD on a busy host (the CNI plugin issue): how long a runtime waits for an ADD with one
//! published port when 1,000 attachments (each with a published port) exist already — netctl
//! against the reference plugins bridge + portmap (iptables DNAT), each in a sandbox of its
//! own, invoked exactly as a runtime does (environment, configuration on stdin).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use netctl_tests::Sandbox;
use serde_json::{json, Value};

use super::Bench;

const SECTION: &str = "CNI ADD with one published port";
const NETCTL: &str = "netctl (eBPF DNAT)";
const REFERENCE: &str = "bridge + portmap (iptables DNAT)";
const PLUGINS: &str = "/usr/lib/cni";
/// ADDs measured after the background ones.
const MEASURED: usize = 20;

/// One plugin run in the sandbox's host namespace: its result and how long it took.
fn invoke(sb: &Sandbox, plugin: &Path, id: &str, ns: &str, conf: &Value) -> Result<(Value, f64)> {
    let mut child = sb
        .in_host(plugin)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/run/netns/{ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", PLUGINS)
        .env("NETCTL_STATE_DIR", &sb.state_dir)
        .env("NETCTL_BPFFS", &sb.bpffs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", plugin.display()))?;
    let t = Instant::now();
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "{} ADD: {}{}",
            plugin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((serde_json::from_slice(&out.stdout)?, ms))
}

fn port(host_port: usize) -> Value {
    json!({ "runtimeConfig": { "portMappings": [
        { "hostPort": host_port, "containerPort": 80, "protocol": "tcp" }
    ] } })
}

/// With `ports`' runtimeConfig merged in.
fn with(conf: &Value, extra: &Value) -> Value {
    let mut c = conf.clone();
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

/// ADD of one container: netctl alone, or bridge then portmap with the bridge's result.
fn add(
    sb: &Sandbox,
    subject: &str,
    netctl: &Path,
    id: &str,
    ns: &str,
    host_port: usize,
) -> Result<f64> {
    if subject == NETCTL {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "benchnet", "type": "netctl", "subnet": "10.90.0.0/16",
        });
        return Ok(invoke(sb, netctl, id, ns, &with(&conf, &port(host_port)))?.1);
    }
    let data = sb.state_dir.join("host-local");
    let bridge = json!({
        "cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cniref0",
        "isGateway": true, "ipMasq": true,
        "ipam": { "type": "host-local", "dataDir": data, "ranges": [[{ "subnet": "10.91.0.0/16" }]],
                  "routes": [{ "dst": "0.0.0.0/0" }] }
    });
    let (result, t1) = invoke(sb, &PathBuf::from(PLUGINS).join("bridge"), id, ns, &bridge)?;
    let portmap = json!({
        "cniVersion": "1.0.0", "name": "refnet", "type": "portmap", "snat": true,
        "capabilities": { "portMappings": true }, "prevResult": result,
    });
    let (_, t2) = invoke(
        sb,
        &PathBuf::from(PLUGINS).join("portmap"),
        id,
        ns,
        &with(&portmap, &port(host_port)),
    )?;
    Ok(t1 + t2)
}

pub fn run(b: &mut Bench, netctl: &Path) -> Result<()> {
    if !Path::new(PLUGINS).join("portmap").exists() {
        bail!("the CNI reference plugins are missing: run cargo xtask setup");
    }
    let background = if b.plan.rounds == 1 { 100 } else { 1000 };
    let figure: &'static str = if background == 1000 {
        "ADD time with 1,000 attachments"
    } else {
        "ADD time with 100 attachments"
    };
    for subject in [NETCTL, REFERENCE] {
        let sb = Sandbox::with_netctl(netctl.to_path_buf());
        eprintln!("bench: CNI ADD, {subject}: {background} attachments first");
        for k in 0..background {
            let ns = sb.empty_namespace(&format!("c{k}"));
            add(&sb, subject, netctl, &format!("bg{k:016}"), &ns, 30000 + k)?;
        }
        for k in 0..MEASURED {
            let ns = sb.empty_namespace(&format!("m{k}"));
            let ms = add(&sb, subject, netctl, &format!("me{k:016}"), &ns, 20000 + k)?;
            b.extra(SECTION, figure, subject, "ms", ms);
        }
        if subject == REFERENCE {
            // What the reference left in the sandbox's netfilter (gone with the namespace).
            let rules = sb.host_sh("iptables-save | grep -c '^-A'");
            eprintln!(
                "bench: CNI reference: {} iptables rules",
                String::from_utf8_lossy(&rules.stdout).trim()
            );
        }
    }
    Ok(())
}
