//! A cluster for overlay tests: hosts as network namespaces on one underlay bridge, and a real
//! etcd in a namespace of its own, every part inside the test's sandbox.
//!
//! ```text
//!   underlay ns: bridge ul0 100.127.R.1/24 (also the hosts' default gateway: "outside")
//!     ├── etcd ns   100.127.R.2  (etcd, data dir in the sandbox)
//!     ├── host 0 ns 100.127.R.10 (its own NETCTL_STATE_DIR and NETCTL_BPFFS)
//!     ├── host 1 ns 100.127.R.11
//!     └── …
//! ```

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use crate::{
    ip, netctl_bin, run, sweep_leftovers, teardown, BPFFS_ROOT, NEXT, NS_PREFIX, STATE_ROOT,
};

pub struct Cluster {
    pub id: String,
    pub underlay_ns: String,
    pub underlay_ip: String,
    pub etcd_ns: String,
    pub etcd_ip: String,
    pub hosts: Vec<Host>,
    etcd: Option<Child>,
    /// etcd serves TLS with certificates made for the test (None: plain http).
    pub tls: Option<Tls>,
    /// etcdctl's user once etcd's authentication is on (`NAME:PASSWORD`).
    pub etcdctl_user: Option<String>,
    /// Extra environment for every netctl command (NETCTL_CLUSTER_TTL, say).
    pub env: Vec<(String, String)>,
    state_root: PathBuf,
    bpffs_root: PathBuf,
    netctl: PathBuf,
}

/// Certificates made by the test: a CA, etcd's server certificate (its IP as the name), a
/// client certificate `client` (CN root) and one signed by another CA (`rogue`).
pub struct Tls {
    pub dir: PathBuf,
    /// etcd asks for a client certificate (`--client-cert-auth`).
    pub client_auth: bool,
}

impl Tls {
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `--cluster-store-opt` values of a host with the CA and client certificate.
    pub fn store_opts(&self) -> String {
        format!(
            "kv.cacertfile={},kv.certfile={},kv.keyfile={}",
            self.file("ca.pem"),
            self.file("client.pem"),
            self.file("client-key.pem")
        )
    }

    fn make(dir: PathBuf, etcd_ip: &str, client_auth: bool) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            r#"set -e
cd {dir}
key() {{ openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }}
ca() {{ key "$1-key.pem"; openssl req -x509 -new -key "$1-key.pem" -out "$1.pem" -days 2 -subj "/CN=$1" 2>/dev/null; }}
sign() {{ # name CN ca ext
  key "$1-key.pem"
  openssl req -new -key "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s
' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3-key.pem" -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
}}
ca ca
ca otherca
sign etcd etcd ca "subjectAltName=IP:{etcd_ip}
extendedKeyUsage=serverAuth,clientAuth"
sign client root ca "extendedKeyUsage=clientAuth"
sign rogue root otherca "extendedKeyUsage=clientAuth"
chmod 600 *-key.pem
"#,
            dir = dir.display()
        );
        let out = run(Command::new("sh").args(["-c", &script]));
        assert!(out.status.success(), "making certificates: {out:?}");
        Tls { dir, client_auth }
    }
}

pub struct Host {
    pub ns: String,
    pub ip: String,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
}

impl Cluster {
    /// `n` hosts, etcd running and answering over TLS with client certificates (as a
    /// cluster should be run).
    pub fn new(n: usize) -> Self {
        Self::build(n, netctl_bin(), Some(true))
    }

    /// `n` hosts and an etcd on plain http (`kv.insecure`), for the benchmarks.
    pub fn with_netctl(n: usize, netctl: PathBuf) -> Self {
        Self::build(n, netctl, None)
    }

    /// `n` hosts and an etcd that serves TLS only (and asks for client certificates when
    /// `client_auth`); every netctl command has the CA and the client certificate.
    pub fn with_tls(n: usize, client_auth: bool) -> Self {
        Self::build(n, netctl_bin(), Some(client_auth))
    }

    fn build(n: usize, netctl: PathBuf, tls: Option<bool>) -> Self {
        sweep_leftovers();
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{pid}-{k}");
        let r = (pid.wrapping_mul(13).wrapping_add(k)) % 200 + 20;
        let net = format!("100.127.{r}");
        let state_root = PathBuf::from(STATE_ROOT).join(&id);
        let bpffs_root = PathBuf::from(BPFFS_ROOT).join(&id);
        let underlay_ns = format!("{NS_PREFIX}{id}-u");
        let mut c = Cluster {
            underlay_ip: format!("{net}.1"),
            etcd_ns: format!("{NS_PREFIX}{id}-e"),
            etcd_ip: format!("{net}.2"),
            underlay_ns,
            hosts: Vec::new(),
            etcd: None,
            tls: None,
            etcdctl_user: None,
            env: Vec::new(),
            id,
            state_root,
            bpffs_root,
            netctl,
        };
        ip(&["netns", "add", &c.underlay_ns]);
        let u = c.underlay_ns.clone();
        ip(&["-n", &u, "link", "add", "ul0", "type", "bridge"]);
        ip(&[
            "-n",
            &u,
            "addr",
            "add",
            &format!("{}/24", c.underlay_ip),
            "dev",
            "ul0",
        ]);
        ip(&["-n", &u, "link", "set", "ul0", "up"]);
        ip(&["-n", &u, "link", "set", "lo", "up"]);
        let etcd_ns = c.etcd_ns.clone();
        let etcd_ip = c.etcd_ip.clone();
        c.attach(&etcd_ns, &etcd_ip, "e");
        for i in 0..n {
            let ns = format!("{NS_PREFIX}{}-h{i}", c.id);
            let host_ip = format!("{net}.{}", 10 + i);
            c.attach(&ns, &host_ip, &format!("h{i}"));
            ip(&["-n", &ns, "route", "add", "default", "via", &c.underlay_ip]);
            c.hosts.push(Host {
                ns,
                ip: host_ip,
                state_dir: c.state_root.join(format!("h{i}")),
                bpffs: c.bpffs_root.join(format!("h{i}")),
            });
        }
        if let Some(client_auth) = tls {
            c.tls = Some(Tls::make(c.state_root.join("tls"), &c.etcd_ip, client_auth));
        }
        c.start_etcd();
        c
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A namespace joined to the underlay bridge with `addr`/24 on its `up0`.
    fn attach(&self, ns: &str, addr: &str, tag: &str) {
        ip(&["netns", "add", ns]);
        let peer = format!("ul-{tag}");
        ip(&[
            "-n",
            &self.underlay_ns,
            "link",
            "add",
            &peer,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            ns,
        ]);
        ip(&[
            "-n",
            &self.underlay_ns,
            "link",
            "set",
            &peer,
            "master",
            "ul0",
        ]);
        ip(&["-n", &self.underlay_ns, "link", "set", &peer, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "up0"]);
        ip(&["-n", ns, "link", "set", "up0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// The store as netctl takes it.
    pub fn store_url(&self) -> String {
        format!("etcd://{}:2379", self.etcd_ip)
    }

    /// Starts etcd (again, after [`Cluster::stop_etcd`]) and waits until it answers.
    pub fn start_etcd(&mut self) {
        let data = self.state_root.join("etcd");
        std::fs::create_dir_all(&data).unwrap();
        let url = |port: u16| format!("http://{}:{port}", self.etcd_ip);
        let client_url = format!("{}://{}:2379", self.scheme(), self.etcd_ip);
        let mut etcd = Command::new("nsenter");
        etcd.arg(format!("--net=/run/netns/{}", self.etcd_ns))
            .args(["--", "etcd", "--name", "e1", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ]);
        if let Some(tls) = &self.tls {
            etcd.args(["--cert-file", &tls.file("etcd.pem")])
                .args(["--key-file", &tls.file("etcd-key.pem")]);
            // etcd 3.4 asks every client for a certificate once it has a CA to check them.
            if tls.client_auth {
                etcd.args(["--trusted-ca-file", &tls.file("ca.pem")])
                    .arg("--client-cert-auth");
            }
        }
        let child = etcd
            .args([
                "--listen-peer-urls",
                &url(2380),
                "--initial-advertise-peer-urls",
                &url(2380),
            ])
            .args(["--initial-cluster", &format!("e1={}", url(2380))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (cargo xtask setup installs etcd-server)");
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not start: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes etcd (SIGSTOP: its connections stay open and nothing answers) or thaws it.
    pub fn freeze_etcd(&self, frozen: bool) {
        if let Some(child) = &self.etcd {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    pub fn stop_etcd(&mut self) {
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `network create -d overlay ARGS` on host `i`; the network's ID.
    pub fn overlay(&self, i: usize, args: &[&str]) -> String {
        let mut a = vec!["network", "create", "-d", "overlay"];
        a.extend(args);
        self.netctl_ok(i, &a)
    }

    /// A container on host `i` that sleeps on network `net` (`run -d … sleep 300`).
    pub fn sleeper(&self, i: usize, name: &str, net: &str) {
        self.netctl_ok(i, &crate::sleeper_args(name, net));
    }

    /// etcdctl (v3 API) against the cluster's etcd, from the etcd namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.etcd_ns))
            .args([
                "--",
                "etcdctl",
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "--endpoints",
            ])
            .arg(format!("{}://{}:2379", self.scheme(), self.etcd_ip));
        if let Some(tls) = &self.tls {
            c.args(["--cacert", &tls.file("ca.pem")]);
            if tls.client_auth {
                c.args(["--cert", &tls.file("client.pem")])
                    .args(["--key", &tls.file("client-key.pem")]);
            }
        }
        if let Some(user) = &self.etcdctl_user {
            c.args(["--user", user]);
        }
        run(c.args(args).env("ETCDCTL_API", "3"))
    }

    /// `netctl ARGS` on host `i`, as a member of the cluster.
    pub fn netctl_cmd(&self, i: usize, args: &[&str]) -> Command {
        let h = &self.hosts[i];
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", h.ns))
            .arg("--")
            .arg(&self.netctl)
            .args(args)
            .env("NETCTL_STATE_DIR", &h.state_dir)
            .env("NETCTL_BPFFS", &h.bpffs)
            .env("NETCTL_CLUSTER_STORE", self.store_url())
            .env("NETCTL_CLUSTER_ADVERTISE", &h.ip)
            .env(
                "NETCTL_CLUSTER_STORE_OPT",
                self.tls.as_ref().map_or("kv.insecure=true".into(), |t| {
                    if t.client_auth {
                        t.store_opts()
                    } else {
                        format!("kv.cacertfile={}", t.file("ca.pem"))
                    }
                }),
            )
            .env_remove("NETCTL_UPLINKS")
            .env_remove("NETCTL_XDP")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    pub fn netctl(&self, i: usize, args: &[&str]) -> Output {
        run(&mut self.netctl_cmd(i, args))
    }

    /// netctl on host `i`; panics unless it succeeds; returns stdout.
    pub fn netctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.netctl(i, args);
        assert!(
            out.status.success(),
            "host {i}: netctl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// netctl on host `i`; panics unless it fails; returns stderr.
    pub fn netctl_err(&self, i: usize, args: &[&str]) -> String {
        let out = self.netctl(i, args);
        assert!(
            !out.status.success(),
            "host {i}: netctl {} should fail",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A shell command in host `i`'s namespace.
    pub fn host_sh(&self, i: usize, script: &str) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.hosts[i].ns))
            .args(["--", "sh", "-c", script]))
    }

    /// A shell command in the underlay namespace (the "outside" of every host).
    pub fn underlay_sh(&self, script: &str) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.underlay_ns))
            .args(["--", "sh", "-c", script]))
    }

    /// A shell command in the underlay namespace, not started yet (tcpdump beside a test).
    pub fn underlay_cmd(&self, script: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.underlay_ns))
            .args(["--", "sh", "-c", script]);
        c
    }

    /// Starts the [`crate::WHOAMI`] server in the underlay namespace (the hosts' "outside")
    /// on its address and `port`, for `secs`; waits until it listens.
    pub fn underlay_whoami(&self, port: u16, secs: u32) -> crate::Background {
        let child = self
            .underlay_cmd(&format!(
                "timeout {secs} python3 -c '{}' {} {port}",
                crate::WHOAMI,
                self.underlay_ip
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = format!(
            "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.05; done; exit 1"
        );
        assert!(self.underlay_sh(&wait).status.success(), "underlay server");
        crate::Background(child)
    }

    /// The eth0 address of container `name` on host `i`.
    pub fn container_ip(&self, i: usize, name: &str) -> String {
        crate::eth0_address(&self.container_sh(i, name, crate::SHOW_ETH0))
    }

    /// A container on host `i` answering HTTP (and UDP) on port 80 with the client's address
    /// ([`crate::WHOAMI`]), publishing `publish`; returns once it listens.
    pub fn whoami(&self, i: usize, name: &str, net: &str, publish: &[&str]) {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        for p in publish {
            args.extend(["-p", p]);
        }
        args.extend(["--", "python3", "-c", crate::WHOAMI, "0.0.0.0", "80"]);
        self.netctl_ok(i, &args);
        self.wait_listening(i, name, 80);
    }

    /// A container on host `i` running the [`crate::WHOAMI6`] server on `port` (as
    /// [`crate::Sandbox::serve6`]); returns once it listens.
    pub fn serve6(&self, i: usize, name: &str, net: &str, port: u16) {
        let port_s = port.to_string();
        self.netctl_ok(
            i,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                net,
                "--",
                "python3",
                "-c",
                crate::WHOAMI6,
                &port_s,
            ],
        );
        self.wait_listening(i, name, port);
    }

    fn wait_listening(&self, i: usize, name: &str, port: u16) {
        let wait = format!(
            "for i in $(seq 100); do ss -ltnH | grep -q ':{port} ' && exit 0; sleep 0.05; done; exit 1"
        );
        assert!(
            self.container_sh(i, name, &wait).status.success(),
            "{name} does not listen on {port}"
        );
    }

    /// From container `from` on host `i`, [`crate::CONNECT6`] to [ADDR]:PORT: what the
    /// server said, or "failed …" (as [`crate::Sandbox::connect6`]).
    pub fn connect6(&self, i: usize, from: &str, addr: &str, port: u16) -> String {
        let port = port.to_string();
        let out = self.netctl(
            i,
            &[
                "exec",
                from,
                "--",
                "python3",
                "-c",
                crate::CONNECT6,
                addr,
                &port,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether host `i`'s `netctl info` says the kernel has feature `name`.
    pub fn has_feature(&self, i: usize, name: &str) -> bool {
        crate::feature_present(&self.netctl_ok(i, &["info", "--format", "json"]), name)
    }

    /// `curl URL` from container `name` on host `i` (3 s at most): the body, if it answered.
    pub fn curl(&self, i: usize, name: &str, url: &str) -> Option<String> {
        let out = self.container_sh(i, name, &format!("curl -sf --max-time 3 {url}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A shell command in container `name` on host `i`.
    pub fn container_sh(&self, i: usize, name: &str, script: &str) -> Output {
        self.netctl(i, &["exec", name, "--", "sh", "-c", script])
    }

    /// A further namespace of this cluster, `nctl-<id>-<suffix>` (torn down with it).
    pub fn namespace(&self, suffix: &str) -> String {
        let ns = format!("{NS_PREFIX}{}-{suffix}", self.id);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Kills every process in host `i`'s namespace (its daemon, say): a host that died.
    pub fn kill_host_processes(&self, i: usize) {
        let ns = format!("/run/netns/{}", self.hosts[i].ns);
        if let Some(ino) = crate::ns_inode(std::path::Path::new(&ns)) {
            crate::kill_in_namespaces(&[ino]);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_etcd();
        teardown(&self.id, &self.state_root, &self.bpffs_root);
    }
}
