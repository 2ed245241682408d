//! Sandboxes for end-to-end tests, the demo and the benchmarks.
//!
//! A sandbox is two network namespaces joined by a veth: "host" (where netctl runs and
//! containers are created) and "outside" (a client or server beyond the uplink):
//!
//! ```text
//!  outside ns                          host ns
//!  [ up0 100.64.R.1/24 ] <--veth--> [ up0 100.64.R.2/24, default route via 100.64.R.1 ]
//!                                     netctl0 / br-… bridges, container veths
//! ```
//!
//! Each sandbox has its own NETCTL_STATE_DIR and NETCTL_BPFFS, so sandboxes run in parallel
//! without seeing each other. Nothing touches the root namespace's links, routes, sysctls or
//! programs. Drop tears everything down; [`sweep_leftovers`] removes what killed runs left.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub mod cluster;
pub mod docker;

const NS_PREFIX: &str = "nctl-";
const STATE_ROOT: &str = "/tmp/netctl-sandboxes";
const BPFFS_ROOT: &str = "/sys/fs/bpf/netctl-sandboxes";
/// Name of the uplink veth on both sides.
pub const UPLINK: &str = "up0";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Sends "hi" over UDP to argv[1]:argv[2] and prints the answer.
pub const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
for _ in range(3):
    s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(2048)[0].decode()); sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"#;

/// A minimal HTTP server (python3 -c) for the sandbox's host namespace: argv = ADDR PORT BODY;
/// answers every request with BODY. (http.server looks its own address up in DNS at start,
/// which would send queries out of the sandbox.)
pub const TINY_HTTP: &str = r#"
import socket, sys, threading
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
body = sys.argv[3].encode()
def serve(c):
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    finally:
        c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Sends one hand-made TCP SYN out of an interface (AF_PACKET), whatever its addresses say:
/// argv = IFNAME DST_MAC SRC_IP DST_IP DST_PORT. For packets a normal socket cannot send
/// (a destination of 127.0.0.1 on the wire).
pub const RAW_SYN: &str = r#"
import socket, struct, sys
ifname, mac, src, dst, dport = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s_ip, d_ip = socket.inet_aton(src), socket.inet_aton(dst)
tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(s_ip + d_ip + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, s_ip, d_ip)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifname, 0))
eth = bytes.fromhex(mac.replace(":", "")) + s.getsockname()[4] + b"\x08\x00"
s.send(eth + ip + tcp)
"#;

/// The network namespace cookie of the calling thread's namespace (SO_NETNS_COOKIE).
pub fn netns_cookie() -> u64 {
    // SAFETY: plain socket/getsockopt/close on a fresh descriptor.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut cookie = 0u64;
        let mut len = 8 as libc::socklen_t;
        let r = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            71,
            &mut cookie as *mut u64 as *mut _,
            &mut len,
        );
        libc::close(fd);
        assert_eq!(r, 0, "SO_NETNS_COOKIE");
        cookie
    }
}

/// A one-file HTTP server (python3 -c): answers every GET with the client's address, and
/// UDP datagrams on the same port with "udp <client address>".
pub const WHOAMI: &str = r#"
import http.server, socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(("udp " + peer[0]).encode(), peer)
threading.Thread(target=udp, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((host, port), H).serve_forever()
"#;

/// A TCP server on [::]:PORT answering each connection with the client's address.
pub const WHOAMI6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(16)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"#;

/// Connects to [ADDR]:PORT and prints what the server said (or "failed").
pub const CONNECT6: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(c.recv(100).decode())
except OSError as e:
    print("failed", e)
"#;

pub struct Sandbox {
    pub id: String,
    pub host_ns: String,
    pub outside_ns: String,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    /// The host's address on the uplink (what outside clients connect to).
    pub host_ip: String,
    /// The outside namespace's address (what containers reach through masquerade).
    pub outside_ip: String,
    netctl: PathBuf,
    extra_env: Vec<(String, String)>,
}

/// Why a sandbox cannot be built here (not root, tools missing); tests skip with this reason.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, eBPF)".into());
    }
    for tool in ["ip", "nsenter"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return Some(format!("{tool} is missing (cargo xtask setup installs it)"));
        }
    }
    None
}

/// Skips the calling test (returns from it) when sandboxes cannot run here.
#[macro_export]
macro_rules! require_sandbox {
    () => {
        if let Some(reason) = $crate::unavailable() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// Where the netctl binary under test is: NETCTL_BIN, else target/debug/netctl.
pub fn netctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETCTL_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netctl");
    assert!(
        p.exists(),
        "{} not built: run `cargo xtask test` (or `cargo build -p netctl` first)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{:?} {:?} failed: {}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    must(Command::new("ip").args(args));
}

impl Sandbox {
    /// Builds a fresh sandbox; panics with the failing step if it cannot.
    pub fn new() -> Self {
        Self::with_netctl(netctl_bin())
    }

    pub fn with_netctl(netctl: PathBuf) -> Self {
        sweep_leftovers();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{pid}-{n}");
        // Distinct addresses per sandbox make captures and logs unambiguous.
        let r = (pid.wrapping_mul(7).wrapping_add(n)) % 200 + 20;
        let mut sb = Sandbox {
            host_ns: format!("{NS_PREFIX}{id}-h"),
            outside_ns: format!("{NS_PREFIX}{id}-o"),
            state_dir: PathBuf::from(STATE_ROOT).join(&id),
            bpffs: PathBuf::from(BPFFS_ROOT).join(&id),
            // 100.64.0.0/10 (shared address space): never one of the tests' own 10.x subnets.
            host_ip: format!("100.64.{r}.2"),
            outside_ip: format!("100.64.{r}.1"),
            id,
            netctl,
            extra_env: Vec::new(),
        };
        ip(&["netns", "add", &sb.host_ns]);
        ip(&["netns", "add", &sb.outside_ns]);
        ip(&[
            "link",
            "add",
            UPLINK,
            "netns",
            &sb.host_ns,
            "type",
            "veth",
            "peer",
            "name",
            UPLINK,
            "netns",
            &sb.outside_ns,
        ]);
        for (ns, addr) in [(&sb.host_ns, &sb.host_ip), (&sb.outside_ns, &sb.outside_ip)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                UPLINK,
            ]);
            ip(&["-n", ns, "link", "set", UPLINK, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &sb.host_ns,
            "route",
            "add",
            "default",
            "via",
            &sb.outside_ip,
        ]);
        // The daemon's upstream DNS servers are the sandbox's, never the machine's: none
        // until a test names one (`host_dns`).
        sb.host_dns(&[]);
        sb
    }

    /// What netctl reads as the host's resolv.conf (NETCTL_RESOLV_CONF): these servers.
    pub fn host_dns(&mut self, servers: &[&str]) {
        fs::create_dir_all(&self.state_dir).expect("creating the sandbox's state dir");
        let path = self.state_dir.join("host-resolv.conf");
        let text: String = servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        fs::write(&path, format!("# the sandbox's upstream DNS\n{text}")).expect("writing");
        self.env("NETCTL_RESOLV_CONF", &path.to_string_lossy());
    }

    /// An upstream DNS server (dnsmasq) in the outside namespace on its address, port 53,
    /// answering `records` (name → IPv4 address; NODATA for their other types) and NXDOMAIN
    /// for everything else; it forwards nothing. Stops when the returned handle is dropped.
    pub fn upstream_dns(&self, records: &[(&str, &str)]) -> Background {
        let mut cmd = self.in_outside("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            "--port=53",
            &format!("--listen-address={}", self.outside_ip),
            // Everything not given below: NXDOMAIN, answered here.
            "--address=/#/",
        ]);
        for (name, ip) in records {
            // The host record makes the name's other types NODATA (as real servers answer
            // an AAAA question for an IPv4-only name), where the catch-all says NXDOMAIN.
            cmd.arg(format!("--address=/{name}/{ip}"));
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq (cargo xtask setup installs dnsmasq-base)");
        let wait =
            "for i in $(seq 100); do ss -lunH | grep -q ':53 ' && exit 0; sleep 0.05; done; exit 1";
        assert!(
            self.outside_sh(wait).status.success(),
            "dnsmasq did not start"
        );
        Background(child)
    }

    /// The netctl daemon's pid, when one runs for this sandbox.
    pub fn daemon_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.state_dir.join("daemon.pid")).ok()?;
        let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    /// Sets an environment variable for every netctl run of this sandbox (e.g. NETCTL_XDP).
    pub fn env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.into(), value.into()));
    }

    fn ns_path(ns: &str) -> String {
        format!("/run/netns/{ns}")
    }

    /// A command run inside the host namespace via setns (nsenter), not `ip netns exec`, which
    /// would remount /sys and hide the bpffs pins.
    pub fn in_host(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", Self::ns_path(&self.host_ns)))
            .arg("--")
            .arg(program);
        c
    }

    pub fn in_outside(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", Self::ns_path(&self.outside_ns)))
            .arg("--")
            .arg(program);
        c
    }

    /// `netctl ARGS` in the host namespace with this sandbox's state and pins.
    pub fn netctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.in_host(&self.netctl);
        c.args(args)
            .env("NETCTL_STATE_DIR", &self.state_dir)
            .env("NETCTL_BPFFS", &self.bpffs)
            .env_remove("NETCTL_UPLINKS")
            .env_remove("NETCTL_XDP");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs netctl and returns its output, whatever the exit status.
    pub fn netctl(&self, args: &[&str]) -> Output {
        run(&mut self.netctl_cmd(args))
    }

    /// Runs netctl, panics unless it succeeds, returns stdout.
    pub fn netctl_ok(&self, args: &[&str]) -> String {
        let out = self.netctl(args);
        assert!(
            out.status.success(),
            "netctl {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs netctl, panics unless it fails, returns stderr.
    pub fn netctl_err(&self, args: &[&str]) -> String {
        let out = self.netctl(args);
        assert!(
            !out.status.success(),
            "netctl {} should have failed but succeeded:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs a shell command in the host namespace; returns its output.
    pub fn host_sh(&self, script: &str) -> Output {
        run(self.in_host("sh").args(["-c", script]))
    }

    /// Runs a shell command in the outside namespace; returns its output.
    pub fn outside_sh(&self, script: &str) -> Output {
        run(self.in_outside("sh").args(["-c", script]))
    }

    /// Starts a background process in the outside namespace (killed on drop of the Child
    /// holder or the sandbox).
    pub fn spawn_outside(&self, script: &str) -> Child {
        self.in_outside("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in outside namespace")
    }

    /// A container that sleeps on network `net` ([`sleeper_args`]).
    pub fn sleeper(&self, name: &str, net: &str) {
        self.netctl_ok(&sleeper_args(name, net));
    }

    /// The saved state, as `netctl state-dump` prints it.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.state_text()).expect("the state dump parses")
    }

    /// The saved state as JSON text, for "nothing changed" comparisons.
    pub fn state_text(&self) -> String {
        self.netctl_ok(&["state-dump"])
    }

    /// Replaces the saved state with `json` the way an older netctl kept it (`state.json`,
    /// moved into the database by the next command that changes something).
    pub fn replace_state(&self, json: &str) {
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(self.state_dir.join(f));
        }
        std::fs::write(self.state_dir.join("state.json"), json).unwrap();
    }

    /// Container namespace handles netctl keeps.
    pub fn netns_handles(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.state_dir.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Waits (bounded, 10 s) until something listens on `port` (tcp) in a container.
    pub fn wait_listening(&self, container: &str, port: u16) {
        let script = format!(
            "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.1; done; exit 1"
        );
        let out = self.netctl(&["exec", container, "--", "sh", "-c", &script]);
        assert!(
            out.status.success(),
            "nothing listens on {port} in {container}"
        );
    }

    /// Starts a small HTTP server in the outside namespace on `port` that answers with the
    /// client's address (so tests see what source address arrived). Stops after `secs`.
    pub fn outside_whoami_server(&self, port: u16, secs: u32) -> Background {
        let script = format!(
            "timeout {secs} python3 -c '{WHOAMI}' {} {port}",
            self.outside_ip
        );
        let child = self.spawn_outside(&script);
        let wait = format!(
            "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.05; done; exit 1"
        );
        assert!(
            self.outside_sh(&wait).status.success(),
            "outside server did not start"
        );
        Background(child)
    }

    /// `curl` from the outside namespace; returns the body, or None when it fails.
    /// [`Sandbox::curl_from_outside`] until it answers (a server still starting), for at
    /// most `secs`; panics when it never does.
    pub fn curl_from_outside_within(&self, url: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(body) = self.curl_from_outside(url) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url} does not answer from outside"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn curl_from_outside(&self, url: &str) -> Option<String> {
        let out = self.outside_sh(&format!("curl -sf --max-time 5 {url}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sends one UDP datagram from the outside namespace and returns the answer (2 s timeout,
    /// three tries).
    pub fn udp_from_outside(&self, addr: &str, port: u16) -> Option<String> {
        let out = self.outside_sh(&format!("python3 -c '{UDP_CLIENT}' {addr} {port}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts a container `name` running the [`WHOAMI`] server on `port`, optionally on a
    /// network and with published ports, and waits until it listens.
    pub fn whoami(&self, name: &str, network: Option<&str>, publish: &[&str], port: u16) {
        let mut args = vec!["run", "-d", "--name", name];
        if let Some(n) = network {
            args.extend(["--network", n]);
        }
        for p in publish {
            args.extend(["-p", p]);
        }
        let port_s = port.to_string();
        args.extend(["--", "python3", "-c", WHOAMI, "0.0.0.0", &port_s]);
        self.netctl_ok(&args);
        self.wait_listening(name, port);
    }

    /// Starts a container `name` running an iperf3 server published on `port`.
    pub fn iperf_server(&self, name: &str, port: u16) {
        let spec = format!("{port}:{port}");
        let port_s = port.to_string();
        self.netctl_ok(&[
            "run", "-d", "--name", name, "-p", &spec, "--", "iperf3", "-s", "-p", &port_s,
        ]);
        self.wait_listening(name, port);
    }

    /// Detaches every netctl program of this sandbox behind netctl's back (as a reboot
    /// would): the pins go, and with them the links; cls_bpf filters (kernels without TCX,
    /// or NETCTL_FEATURES_DENY=tcx) outlive their pins and are deleted by hand.
    pub fn detach_programs(&self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        self.host_sh(
            "for d in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do \
             tc filter del dev $d ingress pref 1 2>/dev/null; tc filter del dev $d egress pref 1 2>/dev/null; done",
        );
    }

    /// Whether this sandbox's netctl has a kernel feature (the probes less
    /// NETCTL_FEATURES_DENY, as `netctl info` reports them).
    pub fn has_feature(&self, name: &str) -> bool {
        feature_present(&self.netctl_ok(&["info", "--format", "json"]), name)
    }

    /// A container's eth0 address, as the container sees it.
    /// Starts a container `name` on `network` running the [`WHOAMI6`] server on `port`
    /// (publishing `publish`, if given) and waits until it listens.
    pub fn serve6(&self, name: &str, network: &str, publish: Option<&str>, port: u16) {
        let port_s = port.to_string();
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        if let Some(p) = publish {
            args.extend(["-p", p]);
        }
        args.extend(["--", "python3", "-c", WHOAMI6, &port_s]);
        self.netctl_ok(&args);
        self.wait_listening(name, port);
    }

    /// From container `from`, [`CONNECT6`] to [ADDR]:PORT: what the server said, or
    /// "failed …".
    pub fn connect6(&self, from: &str, addr: &str, port: u16) -> String {
        let port = port.to_string();
        let out = self.netctl(&["exec", from, "--", "python3", "-c", CONNECT6, addr, &port]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A container's global IPv6 address on `network`, as `inspect` shows it.
    pub fn ip6_of(&self, name: &str, network: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.netctl_ok(&["inspect", name])).expect("inspect json");
        v[0]["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no IPv6 address on {network}"))
            .to_string()
    }

    pub fn container_ip(&self, name: &str) -> String {
        eth0_address(&self.container_sh(name, SHOW_ETH0))
    }

    /// Runs a shell command in a container; returns its output.
    pub fn container_sh(&self, name: &str, script: &str) -> Output {
        self.netctl(&["exec", name, "--", "sh", "-c", script])
    }

    /// A further namespace joined to the host namespace by a veth: `host_if` in the host with
    /// `host_addr`/24, `peer` (named `ext0`) in the new namespace with `peer_addr`/24. Torn
    /// down with the sandbox. Returns the namespace's name.
    pub fn add_peer_namespace(
        &self,
        suffix: &str,
        host_if: &str,
        host_addr: &str,
        peer_addr: &str,
    ) -> String {
        let ns = format!("{NS_PREFIX}{}-{suffix}", self.id);
        ip(&["netns", "add", &ns]);
        ip(&[
            "link",
            "add",
            host_if,
            "netns",
            &self.host_ns,
            "type",
            "veth",
            "peer",
            "name",
            "ext0",
            "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.host_ns,
            "addr",
            "add",
            &format!("{host_addr}/24"),
            "dev",
            host_if,
        ]);
        ip(&["-n", &self.host_ns, "link", "set", host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{peer_addr}/24"),
            "dev",
            "ext0",
        ]);
        ip(&["-n", &ns, "link", "set", "ext0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// An empty namespace of this sandbox, `nctl-<id>-<suffix>` with `lo` up (torn down
    /// with it): what a container runtime would make for a container.
    pub fn empty_namespace(&self, suffix: &str) -> String {
        let ns = format!("{NS_PREFIX}{}-{suffix}", self.id);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A shell command in a namespace made by [`Sandbox::add_peer_namespace`].
    pub fn ns_sh(&self, ns: &str, script: &str) -> Output {
        ns_sh(ns, script)
    }

    /// A pinned map of this sandbox's instance (whatever its layout version).
    pub fn pinned_map(&self, name: &str) -> PathBuf {
        fs::read_dir(&self.bpffs)
            .expect("bpffs dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('v'))
            })
            .expect("a layout directory")
            .join("maps")
            .join(name)
    }

    /// Starts [`TINY_HTTP`] in the host namespace on ADDR:PORT answering BODY; waits until it
    /// listens.
    pub fn host_http(&self, addr: &str, port: u16, body: &str) -> Background {
        let child = self
            .in_host("python3")
            .args(["-c", TINY_HTTP, addr, &port.to_string(), body])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("host http server");
        let wait = format!(
            "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.05; done; exit 1"
        );
        assert!(
            self.host_sh(&wait).status.success(),
            "host server did not start"
        );
        Background(child)
    }

    /// Names of the links in the host namespace.
    pub fn host_links(&self) -> Vec<String> {
        let out = self.host_sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A shell command in the named network namespace (one of a sandbox's or cluster's).
/// The command that shows a container's eth0 address, and its address from that output.
pub const SHOW_ETH0: &str = "ip -o -4 addr show eth0";

pub fn eth0_address(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no eth0 address in {out:?}"))
        .to_string()
}

pub fn ns_sh(ns: &str, script: &str) -> Output {
    run(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["--", "sh", "-c", script]))
}

/// What the netctl daemon serves on its metrics socket (`STATE_DIR/metrics.sock`).
pub fn scrape_metrics(sock: &Path) -> String {
    let out = run(Command::new("curl")
        .args(["-s", "--max-time", "5", "--unix-socket"])
        .arg(sock)
        .arg("http://netctl/metrics"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process started for a test, killed and reaped when dropped.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        teardown(&self.id, &self.state_dir, &self.bpffs);
    }
}

/// Network-namespace inode of a namespace file (bind mount or /proc/PID/ns/net).
pub fn ns_inode(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Kills every process whose network namespace is one of `inodes`.
pub fn kill_in_namespaces(inodes: &[u64]) {
    if inodes.is_empty() {
        return;
    }
    let me = std::process::id();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        if let Some(ino) = ns_inode(&entry.path().join("ns/net")) {
            if inodes.contains(&ino) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Mount points below `dir` (netctl's namespace handles).
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort();
    out.reverse();
    out
}

/// Every namespace of a sandbox: host, outside and any added with
/// [`Sandbox::add_peer_namespace`] (all named `nctl-<id>-<suffix>`).
fn sandbox_namespaces(id: &str) -> Vec<String> {
    let prefix = format!("{NS_PREFIX}{id}-");
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('-'))
        })
        .collect()
}

fn teardown(id: &str, state_dir: &Path, bpffs: &Path) {
    let mounts = mounts_below(state_dir);
    let mut inodes: Vec<u64> = mounts.iter().filter_map(|m| ns_inode(m)).collect();
    let namespaces = sandbox_namespaces(id);
    for ns in &namespaces {
        if let Some(i) = ns_inode(&PathBuf::from(format!("/run/netns/{ns}"))) {
            inodes.push(i);
        }
    }
    kill_in_namespaces(&inodes);
    // Pins hold links and maps: drop them before the namespaces go.
    let _ = fs::remove_dir_all(bpffs);
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(state_dir);
    for ns in &namespaces {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
    remove_empty_daemon_cgroups();
}

/// The daemons' own cgroups and the tests' "service" groups that no process holds any more (a
/// daemon killed by a teardown leaves its group, so does a test that failed half-way; a group
/// still in use keeps it, as rmdir refuses).
fn remove_empty_daemon_cgroups() {
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
    ] {
        for entry in fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A test's group (`netctl-test-<pid>-<n>`) only once its test process is gone:
            // a running test's may be empty for a moment.
            let dead_test = name
                .strip_prefix("netctl-test-")
                .and_then(|id| id.split('-').next()?.parse::<u32>().ok())
                .is_some_and(|pid| !process_alive(pid));
            if name.starts_with("netctl-daemon-") || dead_test {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
}

/// Polls `ok` until it holds; fails the test, naming `what`, after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last four bytes of a container's Docker-style MAC (`02:42:` + its address), as hex.
pub fn container_mac_hex(addr: &str) -> String {
    addr.split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect()
}

/// The count of drops for `reason` in `netctl stats --json` output.
pub fn drop_count(stats_json: &str, reason: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(stats_json).expect("stats json");
    v["drops"][reason].as_u64().unwrap_or(0)
}

/// Every drop of `netctl stats --json`, whatever the reason.
pub fn all_drops(stats_json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(stats_json).expect("stats json");
    v["drops"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0)
}

/// A process exists and is not a zombie waiting for its parent to reap it.
pub fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| !s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// `run -d --name NAME --network NET -- sleep 300`: a container that only sleeps.
pub fn sleeper_args<'a>(name: &'a str, net: &'a str) -> [&'a str; 9] {
    [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        "--",
        "sleep",
        "300",
    ]
}

/// Removes sandboxes whose creating process is gone (a killed test run).
pub fn sweep_leftovers() {
    let mut ids = std::collections::BTreeSet::new();
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(NS_PREFIX) {
            if let Some((id, _suffix)) = rest.rsplit_once('-') {
                ids.insert(id.to_string());
            }
        }
    }
    for root in [STATE_ROOT, BPFFS_ROOT] {
        for entry in fs::read_dir(root).into_iter().flatten().flatten() {
            ids.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    for id in ids {
        let pid: Option<u32> = id.split('-').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(process_alive) {
            continue;
        }
        teardown(
            &id,
            &PathBuf::from(STATE_ROOT).join(&id),
            &PathBuf::from(BPFFS_ROOT).join(&id),
        );
    }
}

/// A busybox image (a tar of its root file system) for Podman or dockerd to import, from
/// Debian's busybox-static (no registry), with an HTTP CGI `/www/cgi-bin/ip` that answers the
/// client's address (`httpd -f -p 80 -h /www`).
pub fn busybox_image_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let script = format!(
        "set -e; mkdir -p {r}/bin {r}/www/cgi-bin {r}/tmp {r}/etc; cp /bin/busybox {r}/bin/busybox; \
         for a in $(/bin/busybox --list); do [ $a = busybox ] || ln -sf busybox {r}/bin/$a; done; \
         printf '#!/bin/sh\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\n%%s\" \"$REMOTE_ADDR\"\\n' > {r}/www/cgi-bin/ip; \
         chmod +x {r}/www/cgi-bin/ip; tar -C {r} -cf {d}/busybox.tar .",
        r = root.display(),
        d = dir.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    dir.join("busybox.tar")
}

/// Whether `netctl info --format json` output `info` lists kernel feature `name` as present.
pub fn feature_present(info: &str, name: &str) -> bool {
    let info: serde_json::Value = serde_json::from_str(info).expect("info json");
    info["Features"]
        .as_array()
        .expect("features")
        .iter()
        .any(|f| f["Name"] == name && f["Present"] == true)
}
