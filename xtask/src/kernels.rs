//! `cargo xtask test --kernel LIST`: netctl on Debian's cloud kernels in QEMU. Each guest
//! prints what the probes found, runs the eBPF program suites (BPF_PROG_TEST_RUN) on its own
//! verifier, then the end-to-end demo twice — with what the kernel has, and with the
//! fallbacks forced — and checks that a refused kernel feature leaves forwarding off.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, sh, vm, workspace_root};

/// Debian 11, 12, 13 and sid's newest: `--kernel all`.
pub const ALL: [&str; 4] = ["5.10", "6.1", "6.12", "newest"];

/// A guest's whole run, under TCG (one emulated CPU): 5.10's takes about 6 minutes (the
/// limit leaves room for a slower machine).
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);

pub fn run(list: &str) -> Result<()> {
    let specs: Vec<&str> = match list {
        "all" => ALL.to_vec(),
        l => l
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if specs.is_empty() {
        bail!("--kernel: name kernels (5.10, 6.1, 6.12, newest) or all");
    }
    let bins = binaries()?;
    let dir = workspace_root().join("target/vm");
    let script = dir.join("guest-test.sh");
    std::fs::write(&script, GUEST_TEST)?;
    // The kernels and initramfs one after the other (apt and the disk), then the guests side
    // by side: each emulates one CPU under TCG, so a machine runs as many as it has cores.
    let prepared: Vec<(&str, Result<Guest>)> = specs
        .iter()
        .map(|spec| (*spec, prepare(spec, &dir, &script, &bins)))
        .collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Longest first, so that two lanes end together: 5.10 (~350 s under TCG), 6.1 (~290),
    // the newest (~260), 6.12 (~210). Taken from the end of the queue.
    let mut queue: Vec<_> = prepared.into_iter().enumerate().collect();
    let cost = |spec: &str| match spec {
        "5.10" => 0,
        "6.1" => 1,
        "newest" => 2,
        _ => 3,
    };
    queue.sort_by_key(|(_, (spec, _))| std::cmp::Reverse(cost(spec)));
    let queue = std::sync::Mutex::new(queue);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(specs.len()) {
            s.spawn(|| loop {
                let Some((i, (spec, guest))) = queue.lock().unwrap().pop() else {
                    return;
                };
                let started = Instant::now();
                let outcome = guest.and_then(|g| one(spec, &dir, g));
                let secs = started.elapsed().as_secs_f64();
                match &outcome {
                    Ok((version, _)) => {
                        eprintln!("kernel {spec} ({version}): passed in {secs:.0} s")
                    }
                    Err(e) => eprintln!("kernel {spec}: FAILED in {secs:.0} s: {e:#}"),
                }
                done.lock().unwrap().push((i, spec, outcome, secs));
            });
        }
    });
    let mut results = done.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let results: Vec<_> = results.into_iter().map(|(_, s, o, t)| (s, o, t)).collect();
    println!("\nkernel matrix:");
    let mut failed = 0;
    for (spec, outcome, secs) in &results {
        let (version, verdict) = match outcome {
            Ok((v, _)) => (v.clone(), "passed".to_string()),
            Err(e) => {
                failed += 1;
                (String::new(), format!("FAILED ({})", one_line(e)))
            }
        };
        println!("  {spec:<7} {version:<28} {secs:>5.0} s  {verdict}");
    }
    if failed > 0 {
        bail!("{failed} kernel(s) failed: their consoles are in target/vm/*.log");
    }
    Ok(())
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A kernel unpacked and its initramfs made, ready to boot.
struct Guest {
    tree: PathBuf,
    version: String,
    initrd: PathBuf,
}

fn prepare(spec: &str, dir: &Path, script: &Path, bins: &[PathBuf]) -> Result<Guest> {
    let tree = vm::kernel_tree(spec)?;
    let version = vm::kernel_version(&tree);
    let initrd = dir.join(format!("{spec}.cpio.gz"));
    vm::initramfs(&tree, &initrd, script, bins, &[])?;
    Ok(Guest {
        tree,
        version,
        initrd,
    })
}

/// Boots one kernel with the guest test; the console goes to target/vm/SPEC.log.
fn one(spec: &str, dir: &Path, g: Guest) -> Result<(String, i32)> {
    let Guest {
        tree,
        version,
        initrd,
    } = g;
    let (code, console) = vm::boot(&tree, &initrd, GUEST_TIMEOUT)?;
    let log = dir.join(format!("{spec}.log"));
    std::fs::write(&log, &console)?;
    // The guest's own summary lines: what it found and each step's verdict.
    for line in console
        .lines()
        .filter(|l| l.starts_with("=== ") || l.starts_with("test result:") || l.contains("FAILED"))
    {
        println!("  [{spec}] {line}");
    }
    if code != 0 {
        bail!("the guest test exited {code} (console: {})", log.display());
    }
    Ok((version, code))
}

/// netctl and the program-test binaries, stripped of debug info (the initramfs lives in the
/// guest's memory).
fn binaries() -> Result<Vec<PathBuf>> {
    sh(cargo().args(["build", "--package", "netctl"]))?;
    let out = cargo()
        .args([
            "test",
            "--package",
            "netctl",
            "--test",
            "programs",
            "--test",
            "conntrack",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("building the program tests")?;
    if !out.status.success() {
        bail!(
            "building the program tests failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if let (Some(exe), true) = (
            msg["executable"].as_str(),
            matches!(name, "programs" | "conntrack"),
        ) {
            tests.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if tests.len() != 2 {
        bail!("expected the programs and conntrack test binaries, found {tests:?}");
    }
    let dir = workspace_root().join("target/vm/bin");
    std::fs::create_dir_all(&dir)?;
    let mut bins = Vec::new();
    let netctl = workspace_root().join("target/debug/netctl");
    for (name, src) in std::iter::once(("netctl".to_string(), netctl)).chain(tests) {
        let dst = dir.join(&name);
        sh(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&src)
            .arg(&dst))?;
        bins.push(dst);
    }
    // The guest's own tools besides busybox (ip, bpftool and nsenter come with the image);
    // etcd for the encrypted overlay on the kernel's WireGuard.
    for tool in ["/usr/bin/curl", "/usr/sbin/tc", "/usr/bin/etcd"] {
        bins.push(PathBuf::from(tool));
    }
    Ok(bins)
}

/// The guest's test (busybox sh; the host's tools are in /opt/bin). Exits non-zero when any
/// step fails.
const GUEST_TEST: &str = r#"#!/bin/sh
export PATH=/opt/bin:/bin:/sbin
fail=0
bad() { echo "=== FAILED: $*"; fail=1; }
IP=/opt/bin/ip
H="nsenter --net=/run/netns/h"
X="nsenter --net=/run/netns/x"
$IP link set lo up

echo "=== features"
/opt/bin/netctl info || bad "netctl info"

echo "=== program tests (BPF_PROG_TEST_RUN)"
for t in programs conntrack; do
  /opt/bin/$t --test-threads=1 >/tmp/$t.log 2>&1 || bad "$t"
  grep -E 'test result|FAILED|panicked' /tmp/$t.log
  grep -A3 'panicked at' /tmp/$t.log | grep -v '^note:' | head -40
done

# The demo: a host namespace h with an uplink to x, two networks, a published port.
demo() {
  label=$1
  export NETCTL_STATE_DIR=/tmp/st-$label NETCTL_BPFFS=/sys/fs/bpf/nt-$label
  $IP netns add h; $IP netns add x
  $IP link add u0 type veth peer name x0; $IP link set u0 netns h; $IP link set x0 netns x
  $IP -n h addr add 10.210.0.1/24 dev u0; $IP -n h link set u0 up; $IP -n h link set lo up
  $IP -n x addr add 10.210.0.2/24 dev x0; $IP -n x link set x0 up; $IP -n x link set lo up
  mkdir -p /tmp/www; echo hello-$label > /tmp/www/index.html
  $H netctl network create --subnet 10.10.0.0/24 front >/dev/null || bad "$label: network create"
  $H netctl network create --subnet 10.20.0.0/24 back >/dev/null || bad "$label: network create back"
  [ "$($H cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || bad "$label: forwarding not on"
  $H netctl run -d --name web --network front -p 8080:80 -- /bin/busybox httpd -f -p 80 -h /tmp/www 2>/dev/null || bad "$label: run"
  $H netctl run -d --name other --network back -- /bin/busybox sleep 600 2>/dev/null || bad "$label: run other"
  got=""
  for i in 1 2 3 4 5 6 7 8 9 10; do
    got=$($X /opt/bin/curl -s --max-time 3 http://10.210.0.1:8080/index.html) && [ -n "$got" ] && break
    sleep 1
  done
  [ "$got" = hello-$label ] && echo "=== $label: published port answers from outside" || bad "$label: published port ($got)"
  if $H netctl exec other -- /bin/busybox ping -c 1 -W 2 10.10.0.2 >/dev/null 2>&1; then
    bad "$label: isolation"
  fi
  $H netctl stats | grep -q '^isolation' && echo "=== $label: isolation drop counted" || bad "$label: no isolation drop counted"
  # NAT64 (the programs with bpf_loop): an IPv6-only container reaches an IPv4 server of x
  # at 64:ff9b::/96.
  if /opt/bin/netctl info | grep -Eq '^loop +yes'; then
  $H netctl network create --ipv6 --ipv4=false --subnet fd10::/64 six >/dev/null || bad "$label: network create six"
  $H netctl run -d --name v6c --network six -- /bin/busybox sleep 600 2>/dev/null || bad "$label: run v6c"
  $X /bin/busybox httpd -f -p 10.210.0.2:8081 -h /tmp/www & hp=$!
  got=""
  for i in 1 2 3 4 5; do
    got=$($H netctl exec v6c -- /opt/bin/curl -s -g --max-time 3 "http://[64:ff9b::10.210.0.2]:8081/index.html") && [ -n "$got" ] && break
    sleep 1
  done
  kill $hp 2>/dev/null
  [ "$got" = hello-$label ] && echo "=== $label: NAT64 to an IPv4 server" || bad "$label: NAT64 ($got)"
  $H netctl rm -f v6c >/dev/null; $H netctl network rm six >/dev/null
  fi
  $H netctl info | sed -n '/^PATH/,$p'
  $H netctl rm -f web other >/dev/null; $H netctl network rm front back >/dev/null || bad "$label: cleanup"
  if $H tc filter show dev u0 ingress 2>/dev/null | grep -q uplink_; then bad "$label: filter left"; fi
  $IP netns del h; $IP netns del x
}
demo native
# The fallbacks forced, where the kernel has any of what they replace (5.10 has none: its
# native run was that already).
DENY=tcx,loop,atomics,xdp_load_bytes
if /opt/bin/netctl info | grep -Eq "^(${DENY//,/|}) +yes "; then
  NETCTL_FEATURES_DENY=$DENY demo fallback
  unset NETCTL_FEATURES_DENY
else
  echo "=== fallback: the native run was it (the kernel has none of $DENY)"
fi

# An encrypted overlay on the kernel's own WireGuard: etcd and two hosts on an underlay
# bridge, a request from a container on one host to a container on the other.
encrypted() {
  U="nsenter --net=/run/netns/u"
  $IP netns add u; $IP -n u link add ul0 type bridge; $IP -n u link set ul0 up; $IP -n u link set lo up
  $IP -n u addr add 10.220.0.1/24 dev ul0
  for n in e:2 h1:11 h2:12; do
    ns=${n%:*}; a=${n#*:}
    $IP netns add $ns; $IP -n $ns link set lo up
    $IP -n u link add ul-$ns type veth peer name up0 netns $ns
    $IP -n u link set ul-$ns master ul0; $IP -n u link set ul-$ns up
    $IP -n $ns addr add 10.220.0.$a/24 dev up0; $IP -n $ns link set up0 up
  done
  nsenter --net=/run/netns/e /opt/bin/etcd --name e1 --data-dir /tmp/etcd \
    --listen-client-urls http://10.220.0.2:2379 --advertise-client-urls http://10.220.0.2:2379 \
    --listen-peer-urls http://10.220.0.2:2380 --initial-advertise-peer-urls http://10.220.0.2:2380 \
    --initial-cluster e1=http://10.220.0.2:2380 >/tmp/etcd.log 2>&1 &
  etcd=$!
  for i in $(seq 60); do $U /opt/bin/curl -s --max-time 1 http://10.220.0.2:2379/health | grep -q true && break; sleep 1; done
  $U /opt/bin/curl -s --max-time 1 http://10.220.0.2:2379/health | grep -q true || { bad "encrypted: etcd did not start"; tail -5 /tmp/etcd.log; }
  export NETCTL_CLUSTER_STORE=etcd://10.220.0.2:2379 NETCTL_CLUSTER_STORE_OPT=kv.insecure=true
  # Each command bounded: a hang is a failure with its name, not the guest's time limit.
  on() { h=$1; shift; NETCTL_STATE_DIR=/tmp/st-$h NETCTL_BPFFS=/sys/fs/bpf/nt-$h NETCTL_CLUSTER_ADVERTISE=10.220.0.1${h#h} \
    timeout 120 nsenter --net=/run/netns/$h netctl "$@"; }
  echo "=== encrypted overlay: etcd up"
  on h1 network create -d overlay --subnet 10.230.0.0/24 -o encrypted sov >/dev/null || bad "encrypted: network create"
  mkdir -p /tmp/www; echo across-hosts > /tmp/www/index.html
  on h1 run -d --name web --network sov --ip 10.230.0.10 -- /bin/busybox httpd -f -p 80 -h /tmp/www >/dev/null 2>&1 || bad "encrypted: run web"
  on h2 run -d --name cl --network sov -- /bin/busybox sleep 600 >/dev/null 2>&1 || bad "encrypted: run cl"
  got=""
  for i in $(seq 20); do
    got=$(on h2 exec cl -- /opt/bin/curl -s --max-time 3 http://10.230.0.10/index.html) && [ -n "$got" ] && break
    sleep 1
  done
  [ "$got" = across-hosts ] && echo "=== encrypted overlay: TCP across hosts" || {
    bad "encrypted overlay ($got)"; tail -5 /tmp/st-h1/daemon.log /tmp/st-h2/daemon.log; }
  nsenter --net=/run/netns/h1 $IP -d link show nctl-wg | grep -q wireguard \
    && echo "=== encrypted overlay: on the kernel's WireGuard" || bad "encrypted: nctl-wg is not the kernel's WireGuard"
  if nsenter --net=/run/netns/h1 $IP link show nctl-vxlan >/dev/null 2>&1; then bad "encrypted: a VXLAN device"; fi
  on h1 rm -f web >/dev/null; on h2 rm -f cl >/dev/null
  on h1 network rm sov >/dev/null || bad "encrypted: network rm"
  kill $etcd; wait $etcd 2>/dev/null
  for n in h1 h2 e u; do $IP netns del $n; done
  unset NETCTL_CLUSTER_STORE NETCTL_CLUSTER_STORE_OPT
}
encrypted

# A kernel feature refused: one line, nothing changed, forwarding stays off.
$IP netns add h
export NETCTL_STATE_DIR=/tmp/st-refused NETCTL_BPFFS=/sys/fs/bpf/nt-refused
err=$(NETCTL_FEATURES_DENY=redirect_peer $H netctl network create --subnet 10.30.0.0/24 n 2>&1)
echo "$err" | grep -q redirect_peer || bad "refused: $err"
[ "$($H cat /proc/sys/net/ipv4/ip_forward)" = 0 ] && echo "=== refused kernel: forwarding stays off" || bad "refused: forwarding on"
$IP netns del h
exit $fail
"#;
