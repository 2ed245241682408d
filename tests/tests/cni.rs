//! netctl as a CNI plugin: the protocol spoken directly (as a runtime would), then Podman 4.3
//! with its CNI backend running real containers on netctl's datapath, all in sandboxes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use netctl_tests::{require_sandbox, Background, Sandbox, WHOAMI};
use serde_json::{json, Value};

/// One CNI invocation of the netctl binary in the sandbox's host namespace: the exit status
/// and stdout as JSON.
fn cni(sb: &Sandbox, vars: &[(&str, &str)], conf: &str) -> (bool, Value) {
    let mut cmd = sb.netctl_cmd(&[]);
    cmd.env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.stdout.is_empty() {
        return (out.status.success(), Value::Null);
    }
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn attach_vars<'a>(cmd: &'a str, id: &'a str, ns: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_NETNS", format!("/run/netns/{ns}")),
        ("CNI_IFNAME", "eth0".to_string()),
    ]
}

fn call(
    sb: &Sandbox,
    cmd: &str,
    id: &str,
    ns: &str,
    conf: &Value,
    extra: &[(&str, &str)],
) -> (bool, Value) {
    let vars = attach_vars(cmd, id, ns);
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    cni(sb, &all, &conf.to_string())
}

fn conf(ports: Value) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "cninet",
        "type": "netctl",
        "subnet": "10.77.0.0/24",
        "runtimeConfig": { "portMappings": ports }
    })
}

/// Debian's containernetworking-plugins.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

const ID1: &str = "c1c1c1c1c1c1c1c1c1c1";
const ID2: &str = "c2c2c2c2c2c2c2c2c2c2";
const ID3: &str = "c3c3c3c3c3c3c3c3c3c3";

fn ps(sb: &Sandbox) -> Vec<Value> {
    sb.netctl_ok(&["ps", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_cni_protocol_spoken_directly() {
    require_sandbox!();
    let sb = Sandbox::new();
    // VERSION needs nothing but the command.
    let (ok, v) = cni(
        &sb,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(ok);
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    // ADD: a network made on first use, an address, the published port.
    let ns1 = sb.empty_namespace("c1");
    let c = conf(json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }]));
    let (ok, r) = call(
        &sb,
        "ADD",
        ID1,
        &ns1,
        &c,
        &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")],
    );
    assert!(ok, "{r}");
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.77.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.77.0.1");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], format!("/run/netns/{ns1}"));
    assert_eq!(r["dns"]["nameservers"][0], "10.77.0.1");
    let addr = sb.ns_sh(&ns1, "ip -o -4 addr show eth0");
    assert!(String::from_utf8_lossy(&addr.stdout).contains("10.77.0.2/24"));
    // A netctl container like any other, with the engine's ID.
    let listed = ps(&sb);
    assert!(
        listed
            .iter()
            .any(|p| p["ID"].as_str().is_some_and(|i| ID1.starts_with(i)) && p["Names"] == "web"),
        "{listed:?}"
    );
    let inspect: Value =
        serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "cninet"])).unwrap();
    assert!(
        inspect[0]["Containers"].to_string().contains("10.77.0.2"),
        "{inspect}"
    );
    // The same ADD again answers the same.
    let (ok, again) = call(&sb, "ADD", ID1, &ns1, &c, &[]);
    assert!(ok);
    assert_eq!(again["ips"], r["ips"]);
    assert_eq!(call(&sb, "CHECK", ID1, &ns1, &c, &[]), (true, Value::Null));

    // Traffic: the published port with the client's address kept, masquerade out.
    let _srv = Background(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns1}"))
            .args(["python3", "-c", WHOAMI, "0.0.0.0", "80"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait =
        "for i in $(seq 100); do ss -ltnH | grep -q ':80 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.ns_sh(&ns1, wait).status.success());
    assert_eq!(
        sb.curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
            .as_deref(),
        Some(sb.outside_ip.as_str())
    );
    let _out = sb.outside_whoami_server(9000, 30);
    let got = sb.ns_sh(
        &ns1,
        &format!("curl -sf --max-time 3 http://{}:9000/", sb.outside_ip),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout), sb.host_ip);

    // A second container: names resolve between them through the network's resolver.
    let ns2 = sb.empty_namespace("c2");
    let (ok, r2) = call(
        &sb,
        "ADD",
        ID2,
        &ns2,
        &conf(json!([])),
        &[("CNI_ARGS", "K8S_POD_NAME=peer")],
    );
    assert!(ok, "{r2}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = sb.ns_sh(&ns2, "dig +short +time=1 +tries=1 @10.77.0.1 web");
        if String::from_utf8_lossy(&out.stdout).trim() == "10.77.0.2" {
            break;
        }
        assert!(Instant::now() < deadline, "web does not resolve: {out:?}");
    }

    // Bad input: the spec's error object, a non-zero exit, nothing made.
    let links = sb.host_links().len();
    let ns3 = sb.empty_namespace("c3");
    let taken = conf(json!([{ "hostPort": 8080, "containerPort": 80 }]));
    let (ok, e) = call(&sb, "ADD", ID3, &ns3, &taken, &[]);
    assert!(!ok);
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("8080"), "{e}");
    let (ok, e) = cni(&sb, &[("CNI_COMMAND", "ADD")], &c.to_string());
    assert!(!ok);
    assert_eq!(e["code"], 4, "{e}");
    let (ok, e) = call(&sb, "ADD", ID3, &ns3, &json!("{not json"), &[]);
    assert!(!ok);
    assert_eq!(e["code"], 6, "{e}");
    let mut old = c.clone();
    old["cniVersion"] = json!("0.3.1");
    let (ok, e) = call(&sb, "ADD", ID3, &ns3, &old, &[]);
    assert!(!ok);
    assert_eq!(e["code"], 1, "{e}");
    let (ok, e) = call(&sb, "FROB", ID3, &ns3, &c, &[]);
    assert!(!ok);
    assert_eq!(e["code"], 4, "{e}");
    let mut bad_ip = conf(json!([]));
    bad_ip["runtimeConfig"]["ips"] = json!(["10.99.0.5/24"]);
    let (ok, e) = call(&sb, "ADD", ID3, &ns3, &bad_ip, &[]);
    assert!(!ok);
    assert!(e["code"].as_u64().unwrap() >= 7, "{e}");
    assert_eq!(sb.host_links().len(), links, "nothing left behind");
    assert_eq!(ps(&sb).len(), 2);
    let inside = sb.ns_sh(&ns3, "ip -o link");
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).lines().count(),
        1,
        "only lo"
    );

    // A static address and a MAC of the runtime's choosing.
    let mut fixed = conf(json!([]));
    fixed["runtimeConfig"]["ips"] = json!(["10.77.0.50/24"]);
    fixed["runtimeConfig"]["mac"] = json!("0a:58:0a:4d:00:32");
    let (ok, r3) = call(&sb, "ADD", ID3, &ns3, &fixed, &[]);
    assert!(ok, "{r3}");
    assert_eq!(r3["ips"][0]["address"], "10.77.0.50/24");
    let link = sb.ns_sh(&ns3, "ip -o link show eth0");
    assert!(String::from_utf8_lossy(&link.stdout).contains("0a:58:0a:4d:00:32"));
    assert!(sb.ns_sh(&ns3, "ping -c1 -W1 10.77.0.2").status.success());

    // GC keeps what the runtime lists, removes the rest of this network's attachments.
    let gc = json!({
        "cniVersion": "1.1.0", "name": "cninet", "type": "netctl",
        "cni.dev/valid-attachments": [
            { "containerID": ID1, "ifname": "eth0" },
            { "containerID": ID2, "ifname": "eth0" }
        ]
    });
    let (ok, _) = cni(
        &sb,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &gc.to_string(),
    );
    assert!(ok);
    assert_eq!(ps(&sb).len(), 2);
    let inside = sb.ns_sh(&ns3, "ip -o link");
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).lines().count(),
        1,
        "GC removed eth0"
    );

    // DEL: gone from netctl and from the namespace; twice is fine, so is a DEL after the
    // namespace is gone.
    assert!(call(&sb, "DEL", ID1, &ns1, &c, &[]).0);
    assert!(!ps(&sb).iter().any(|p| p["Names"] == "web"));
    assert!(sb.ns_sh(&ns1, "ip link show eth0").stdout.is_empty());
    assert!(call(&sb, "DEL", ID1, &ns1, &c, &[]).0);
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_none());
    let (ok, e) = call(&sb, "CHECK", ID1, &ns1, &c, &[]);
    assert!(!ok);
    assert_eq!(e["code"], 3, "{e}");
    assert!(Command::new("ip")
        .args(["netns", "del", &ns2])
        .status()
        .unwrap()
        .success());
    let vars = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", ID2),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    assert!(cni(&sb, &vars, &conf(json!([])).to_string()).0);
    assert!(ps(&sb).is_empty());

    // STATUS: the datapath is there.
    let (ok, _) = cni(
        &sb,
        &[("CNI_COMMAND", "STATUS")],
        &conf(json!([])).to_string(),
    );
    assert!(ok);
}

struct Podman<'a> {
    sb: &'a Sandbox,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    /// Podman with its CNI backend in dirs of its own, netctl (and the reference plugins) in
    /// its plugin directory, a network per (name, plugin list), a local busybox image.
    fn new(sb: &'a Sandbox, networks: &[(&str, Value)]) -> Self {
        let dir = std::env::temp_dir().join(format!("netctl-podman-{}", sb.id));
        let plugins = dir.join("plugins");
        let netconf = dir.join("net.d");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&netconf).unwrap();
        for d in ["root", "runroot", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // Installing the plugin: a link named netctl in the runtime's plugin directory.
        std::os::unix::fs::symlink(netctl_tests::netctl_bin(), plugins.join("netctl")).unwrap();
        for reference in ["tuning", "bandwidth", "loopback"] {
            let _ = std::os::unix::fs::symlink(
                Path::new(REFERENCE_PLUGINS).join(reference),
                plugins.join(reference),
            );
        }
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\ncni_plugin_dirs = [\"{}\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                netconf.display(),
                plugins.display()
            ),
        )
        .unwrap();
        for (name, plugins) in networks {
            let conflist = json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins });
            std::fs::write(
                netconf.join(format!("{name}.conflist")),
                conflist.to_string(),
            )
            .unwrap();
        }
        let podman = Podman {
            sb,
            dir: dir.clone(),
        };
        let tar = netctl_tests::busybox_image_tar(&dir);
        podman.ok(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            &tar.to_string_lossy(),
            "localhost/busybox:latest",
        ]);
        podman
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = &self.dir;
        // Podman passes its environment to the plugin: this sandbox's netctl instance.
        let mut c = self.sb.in_host("/usr/bin/podman");
        c.env("NETCTL_STATE_DIR", &self.sb.state_dir)
            .env("NETCTL_BPFFS", &self.sb.bpffs)
            .env_remove("NETCTL_UPLINKS")
            .env_remove("NETCTL_XDP");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .args(["--root", &d.join("root").to_string_lossy()])
            .args(["--runroot", &d.join("runroot").to_string_lossy()])
            .args(["--tmpdir", &d.join("tmp").to_string_lossy()])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            // crun refuses this machine's hybrid cgroup layout; runc runs.
            .args(["--runtime", "runc"])
            .args(["--events-backend", "file"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", "-a", "-t", "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_runs_containers_on_netctl_through_cni() {
    require_sandbox!();
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("skipped: podman is not installed (cargo xtask setup installs it)");
        return;
    }
    let sb = Sandbox::new();
    let plugins = |subnet: &str| {
        json!([{
            "type": "netctl",
            "subnet": subnet,
            "capabilities": { "portMappings": true, "ips": true, "mac": true, "aliases": true }
        }])
    };
    let podman = Podman::new(
        &sb,
        &[
            ("pnet", plugins("10.78.0.0/24")),
            ("pother", plugins("10.79.0.0/24")),
        ],
    );
    let iptables_before = sb.host_sh(
        "iptables-save 2>/dev/null | grep -c '^-A' ; nft list ruleset 2>/dev/null | wc -l",
    );

    podman.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "pnet",
        "-p",
        "8080:80",
        "localhost/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    // Published with eBPF DNAT, the client's address kept.
    let url = format!("http://{}:8080/cgi-bin/ip", sb.host_ip);
    let got = sb.curl_from_outside_within(&url, 10);
    // busybox httpd listens on IPv6 and writes v4-mapped addresses.
    let client = |s: &str| {
        s.trim()
            .trim_start_matches("[::ffff:")
            .trim_end_matches(']')
            .to_string()
    };
    assert_eq!(client(&got), sb.outside_ip);
    // netctl sees the container under the engine's ID and name.
    let id = podman
        .ok(&["inspect", "-f", "{{.Id}}", "web"])
        .trim()
        .to_string();
    let listed = ps(&sb);
    assert!(
        listed
            .iter()
            .any(|p| p["Names"] == "web" && id.starts_with(p["ID"].as_str().unwrap())),
        "{listed:?}"
    );
    // No iptables or nftables rule was added for it.
    let iptables_after = sb.host_sh(
        "iptables-save 2>/dev/null | grep -c '^-A' ; nft list ruleset 2>/dev/null | wc -l",
    );
    assert_eq!(iptables_before.stdout, iptables_after.stdout);

    // Names between Podman containers (the network's resolver at its gateway), masquerade out.
    let _srv = sb.outside_whoami_server(9000, 60);
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "pnet",
        "--dns",
        "10.78.0.1",
        "localhost/busybox",
        "sh",
        "-c",
        &format!(
            "nslookup web; wget -q -O - http://web/cgi-bin/ip; echo; wget -q -O - http://{}:9000/",
            sb.outside_ip
        ),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("10.78.0.2"), "{text}");
    assert!(
        text.trim_end().ends_with(&sb.host_ip),
        "masqueraded: {text}"
    );
    // Isolation: a container of another netctl network cannot reach web.
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "pother",
        "localhost/busybox",
        "wget",
        "-q",
        "-T",
        "2",
        "-O",
        "-",
        "http://10.78.0.2/cgi-bin/ip",
    ]);
    assert!(
        !out.status.success(),
        "isolation: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // podman rm: the DEL removes it from netctl and the port stops answering.
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(ps(&sb).is_empty(), "nothing left in netctl");
    // The pair goes with Podman's namespace, which the kernel dismantles a moment later.
    netctl_tests::wait_for("no veth left", Duration::from_secs(5), || {
        !sb.host_links()
            .iter()
            .any(|l| l.starts_with("veth") || l.starts_with("nv"))
    });
    assert!(sb.curl_from_outside(&url).is_none());
}

#[test]
fn short_ids_a_stale_namespace_and_only_its_own_attachments() {
    require_sandbox!();
    let sb = Sandbox::new();
    let c = conf(json!([]));
    // A short ID, as cnitool and many harnesses use: accepted as the spec says.
    let ns = sb.empty_namespace("short");
    let (ok, r) = call(&sb, "ADD", "ctr1", &ns, &c, &[]);
    assert!(ok, "{r}");
    let first = r["ips"][0]["address"].as_str().unwrap().to_string();
    let (ok, again) = call(&sb, "ADD", "ctr1", &ns, &c, &[]);
    assert!(
        ok && again["ips"][0]["address"] == first.as_str(),
        "{again}"
    );
    // The runtime lost track (a crash, a reboot) and adds the same ID in a new namespace
    // without a DEL: a fresh attachment there, not the old result.
    let ns2 = sb.empty_namespace("short2");
    let (ok, r2) = call(&sb, "ADD", "ctr1", &ns2, &c, &[]);
    assert!(ok, "{r2}");
    assert_eq!(r2["interfaces"][1]["sandbox"], format!("/run/netns/{ns2}"));
    let addr = sb.ns_sh(&ns2, "ip -o -4 addr show eth0");
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains("10.77.0."),
        "{addr:?}"
    );
    assert_eq!(ps(&sb).len(), 1, "the stale attachment went");
    let (ok, _) = call(&sb, "CHECK", "ctr1", &ns2, &c, &[]);
    assert!(ok);
    // A DEL for the ID of a container that netctl run made touches nothing of it.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "own",
        "--network",
        "cninet",
        "--",
        "sleep",
        "300",
    ]);
    let own_id = sb.state()["containers"]["own"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _) = call(&sb, "DEL", &own_id, &ns2, &c, &[]);
    assert!(ok, "nothing of ours: success");
    assert!(
        sb.netctl_ok(&["ps"]).contains("own"),
        "netctl's container stays"
    );
    // GC with nothing valid removes the CNI attachment, never netctl's own container.
    let gc = json!({
        "cniVersion": "1.1.0", "name": "cninet", "type": "netctl", "subnet": "10.77.0.0/24",
        "cni.dev/valid-attachments": []
    });
    let (ok, r) = cni(&sb, &[("CNI_COMMAND", "GC")], &gc.to_string());
    assert!(ok, "{r}");
    let names: Vec<String> = ps(&sb)
        .iter()
        .map(|p| p["Names"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["own"]);
    let (ok, _) = call(&sb, "DEL", "ctr1", &ns2, &c, &[]);
    assert!(ok, "a second DEL is success");
}

/// A runtime that names the namespace `/proc/PID/ns/net` (runc hooks, cnitool): once that
/// process exits and its PID goes to another process, netctl must never take the new
/// process's namespace for the container's — not to answer CHECK, not to re-create an
/// interface there in `sync`. The PID is reused for real, in a PID namespace of the test's.
#[test]
fn a_process_namespace_whose_pid_was_reused_is_not_entered() {
    require_sandbox!();
    let sb = Sandbox::new();
    // PID 1 of the test's PID namespace is bash, which reaps what is left to it.
    let holder = Background(
        sb.in_host("unshare")
            .args(["--pid", "--kill-child", "--mount-proc", "bash", "-c"])
            .arg("while :; do sleep 1; done")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let init = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", holder.0.id()))
                .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.to_string();
        }
        assert!(Instant::now() < deadline, "the PID namespace did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    // netctl (and the shell around it) in that PID namespace, with the sandbox's settings.
    let netctl = sb.netctl_cmd(&[]);
    let in_pidns = |script: &str, vars: &[(&str, String)]| -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &init, "-p", "-m", "-n", "--", "sh", "-c", script])
            .env("NETCTL", netctl.get_args().last().unwrap())
            .env("CONF", conf(json!([])).to_string())
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_CONTAINERID", "pidreuse")
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::null());
        for (k, v) in netctl.get_envs() {
            if let (k, Some(v)) = (k, v) {
                cmd.env(k, v);
            }
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // A process in a namespace of its own is attached; it exits, and the next process of
    // the PID namespace is given its PID (ns_last_pid), in another new namespace.
    let out = in_pidns(
        r#"set -e
        own() { # until process $1 is in a namespace of its own (bounded)
            for _ in $(seq 100); do
                [ "$(readlink /proc/$1/ns/net)" != "$(readlink /proc/self/ns/net)" ] && return
                sleep 0.02
            done; exit 1; }
        unshare -n sleep 300 & p=$!
        own $p
        echo "$CONF" | CNI_COMMAND=ADD CNI_NETNS=/proc/$p/ns/net "$NETCTL" > /tmp/add.$p.json
        kill $p; wait $p || true
        # Another process of the namespace may fork in between (PID 1's sleep): retry.
        for _ in 1 2 3 4 5 6 7 8; do
            echo $((p - 1)) > /proc/sys/kernel/ns_last_pid
            unshare -n sleep 300 >/dev/null 2>&1 & q=$!
            [ "$q" = "$p" ] && break
            kill $q; wait $q || true
        done
        own $q
        echo "$p $q"; cat /tmp/add.$p.json; rm -f /tmp/add.$p.json"#,
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (pids, added) = text.split_once('\n').unwrap();
    let (p, q) = pids.split_once(' ').unwrap();
    assert_eq!(p, q, "the PID was not reused");
    let added: Value = serde_json::from_str(added).unwrap();
    let host_veth = added["interfaces"][0]["name"].as_str().unwrap().to_string();
    let path = format!("/proc/{q}/ns/net");
    let ns = vec![("CNI_NETNS", path.clone())];
    let q_links = || {
        String::from_utf8_lossy(
            &in_pidns(&format!("nsenter --net={path} ip -o link show"), &[]).stdout,
        )
        .into_owned()
    };
    // CHECK in the same path: not the container's namespace any more.
    let check = in_pidns(r#"echo "$CONF" | CNI_COMMAND=CHECK "$NETCTL""#, &ns);
    assert!(
        !check.status.success(),
        "CHECK passed in another process's namespace: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    // The veth went with the old namespace; `sync` re-creates nothing in the new one.
    assert!(!sb
        .host_sh(&format!("ip link show {host_veth}"))
        .status
        .success());
    let sync = in_pidns(r#""$NETCTL" sync"#, &[]);
    assert!(sync.status.success(), "{sync:?}");
    assert!(
        !q_links().contains("eth0"),
        "sync made an interface in another process's namespace: {}",
        q_links()
    );
    // The runtime attaching the new process (same path): a fresh attachment, in its namespace.
    let add = in_pidns(r#"echo "$CONF" | CNI_COMMAND=ADD "$NETCTL""#, &ns);
    assert!(add.status.success(), "{add:?}");
    assert!(q_links().contains("eth0"), "{}", q_links());
    let check = in_pidns(r#"echo "$CONF" | CNI_COMMAND=CHECK "$NETCTL""#, &ns);
    assert!(check.status.success(), "{check:?}");
    let containers = sb.state()["containers"].as_object().unwrap().len();
    assert_eq!(containers, 1, "the stale attachment went");
    let del = in_pidns(r#"echo "$CONF" | CNI_COMMAND=DEL "$NETCTL""#, &ns);
    assert!(del.status.success(), "{del:?}");
    assert!(!q_links().contains("eth0"));
    drop(holder);
}

/// The reference `tuning` and `bandwidth` plugins chained after netctl, as a Podman network's
/// conflist has them: netctl's result is complete enough for both (the bandwidth plugin finds
/// the host-side veth in it), the interface gets tuning's MTU and sysctl, and the container's
/// traffic is held to bandwidth's rates both ways — the datapath's fast paths go through the
/// plugin's qdiscs instead of around them.
#[test]
fn tuning_and_bandwidth_chained_after_netctl_with_podman() {
    require_sandbox!();
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("skipped: podman is not installed (cargo xtask setup installs it)");
        return;
    }
    let sb = Sandbox::new();
    let chain = json!([
        { "type": "netctl", "subnet": "10.81.0.0/24",
          "capabilities": { "portMappings": true, "aliases": true } },
        { "type": "tuning", "mtu": 1300, "sysctl": { "net.ipv4.conf.eth0.arp_ignore": "1" } },
        { "type": "bandwidth", "ingressRate": RATE_BITS, "ingressBurst": 64000,
          "egressRate": RATE_BITS, "egressBurst": 64000 }
    ]);
    let podman = Podman::new(&sb, &[("pshape", chain)]);
    let run = [
        "run",
        "-d",
        "--name",
        "shaped",
        "--network",
        "pshape",
        "-p",
        "8081:80",
        "localhost/busybox",
        "sh",
        "-c",
        &format!("head -c {BULK} /dev/zero > /www/big; httpd -f -p 80 -h /www"),
    ];
    sb.netctl_ok(&["sync", "-q"]);
    if sb.netctl_ok(&["info"]).contains("netlink cls_bpf filters") {
        // Without TCX netctl's programs sit in a clsact qdisc on the veth, which takes the
        // ingress hook the plugin's egress limit needs: its ADD fails, and the runtime's DEL
        // leaves nothing behind (README, "Chaining").
        let out = podman.run(&run);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("ingress qdisc"),
            "{err}"
        );
        assert!(ps(&sb).is_empty(), "nothing left in netctl");
        assert!(!sb.host_links().iter().any(|l| l.starts_with("veth")));
        return;
    }
    podman.ok(&run);
    let tuned = podman.ok(&[
        "exec",
        "shaped",
        "sh",
        "-c",
        "cat /sys/class/net/eth0/mtu /proc/sys/net/ipv4/conf/eth0/arp_ignore",
    ]);
    assert_eq!(tuned.split_whitespace().collect::<Vec<_>>(), ["1300", "1"]);
    let qdiscs = String::from_utf8_lossy(&sb.host_sh("tc qdisc show").stdout).into_owned();
    assert!(
        qdiscs.contains("tbf") && qdiscs.contains("ingress"),
        "{qdiscs}"
    );

    // Into the container (bandwidth's ingress: a tbf on the host-side veth), from a server
    // outside; then out of it (its egress: through an ifb), to a client outside through the
    // published port. Each way takes at least what the rate allows.
    let www = std::env::temp_dir().join(format!("netctl-www-{}", sb.id));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("big"), vec![0u8; BULK]).unwrap();
    let _httpd = Background(
        sb.in_outside("busybox")
            .args(["httpd", "-f", "-p", "9002", "-h"])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let listening =
        "for i in $(seq 100); do ss -ltnH | grep -q ':9002 ' && exit 0; sleep 0.05; done; exit 1";
    assert!(sb.outside_sh(listening).status.success());
    let floor = Duration::from_secs_f64(BULK as f64 * 8.0 / RATE_BITS as f64 * 0.6);
    let t = Instant::now();
    let got = podman.run(&[
        "exec",
        "shaped",
        "sh",
        "-c",
        &format!("wget -q -O /dev/null http://{}:9002/big", sb.outside_ip),
    ]);
    assert!(got.status.success(), "{got:?}");
    let into = t.elapsed();
    let t = Instant::now();
    let got = sb.outside_sh(&format!(
        "curl -s --max-time 60 -o /dev/null -w '%{{size_download}}' http://{}:8081/big",
        sb.host_ip
    ));
    let out_of = t.elapsed();
    assert_eq!(String::from_utf8_lossy(&got.stdout), BULK.to_string());
    assert!(
        into >= floor && out_of >= floor,
        "{BULK} bytes at {RATE_BITS} bit/s took {into:?} in and {out_of:?} out (at least {floor:?})"
    );
    let _ = std::fs::remove_dir_all(&www);

    // podman rm: the chain's DEL removes the ifb, netctl's attachment and the map's entry.
    podman.ok(&["rm", "-f", "-t", "0", "shaped"]);
    assert!(ps(&sb).is_empty(), "nothing left in netctl");
    assert!(
        !sb.host_links()
            .iter()
            .any(|l| l.starts_with("bwp") || l.starts_with("veth")),
        "{:?}",
        sb.host_links()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let map = sb.pinned_map("SHAPED");
    let entries = || {
        let out = sb.host_sh(&format!("bpftool -j map dump pinned {}", map.display()));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).map_or(usize::MAX, |v| v.len())
    };
    while entries() != 0 {
        assert!(Instant::now() < deadline, "SHAPED keeps a gone veth");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the shaping test moves each way, and the rate it is held to.
const BULK: usize = 3_000_000;
const RATE_BITS: u64 = 8_000_000;

#[test]
fn podman_runs_dual_stack_containers_on_netctl_through_cni() {
    require_sandbox!();
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("skipped: podman is not installed (cargo xtask setup installs it)");
        return;
    }
    let sb = Sandbox::new();
    let plugins = json!([{
        "type": "netctl",
        "ipam": { "ranges": [[{ "subnet": "10.88.7.0/24" }], [{ "subnet": "fd88:7::/64" }]] },
        "capabilities": { "portMappings": true, "ips": true, "mac": true, "aliases": true }
    }]);
    let podman = Podman::new(&sb, &[("dual", plugins)]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "one",
        "--network",
        "dual",
        "localhost/busybox",
        "sleep",
        "300",
    ]);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "two",
        "--network",
        "dual",
        "--ip6",
        "fd88:7::20",
        "localhost/busybox",
        "sleep",
        "300",
    ]);
    // Podman took both addresses from netctl's result; a static one (`--ip6`, `--ip`) comes
    // as CNI_ARGS IP=, as Podman sends a single one.
    let v6 = podman.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}",
        "two",
    ]);
    assert_eq!(v6.trim(), "fd88:7::20");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "three",
        "--network",
        "dual",
        "--ip",
        "10.88.7.50",
        "localhost/busybox",
        "sleep",
        "300",
    ]);
    let v4 = podman.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.dual.IPAddress}}",
        "three",
    ]);
    assert_eq!(v4.trim(), "10.88.7.50");
    let addrs = podman.ok(&["exec", "one", "ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd88:7::2/64"), "{addrs}");
    let route = podman.ok(&["exec", "one", "ip", "-6", "route", "show", "default"]);
    assert!(route.contains("via fd88:7::1"), "{route}");
    // IPv6 between them, policed by netctl's programs like IPv4.
    podman.ok(&[
        "exec",
        "one",
        "ping",
        "-6",
        "-c",
        "2",
        "-W",
        "2",
        "fd88:7::20",
    ]);
    podman.ok(&["exec", "one", "ping", "-c", "1", "-W", "2", "10.88.7.3"]);
    let net: Value = serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "dual"])).unwrap();
    assert_eq!(net[0]["EnableIPv6"], true, "{net}");
    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert_eq!(netctl_tests::all_drops(&stats), 0, "{stats}");
}

/// A Podman network whose `ipam.ranges` hold one IPv6 range alone is an IPv6-only network:
/// its containers have IPv6 alone, reach one another, and the network says so.
#[test]
fn podman_runs_ipv6_only_containers_on_netctl_through_cni() {
    require_sandbox!();
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("skipped: podman is not installed (cargo xtask setup installs it)");
        return;
    }
    let sb = Sandbox::new();
    let plugins = json!([{
        "type": "netctl",
        "ipam": { "ranges": [[{ "subnet": "fd88:9::/64" }]] },
        "capabilities": { "portMappings": true, "ips": true, "mac": true, "aliases": true }
    }]);
    let podman = Podman::new(&sb, &[("only6", plugins)]);
    for name in ["one", "two"] {
        podman.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "only6",
            "localhost/busybox",
            "sleep",
            "300",
        ]);
    }
    let v6 = podman.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.only6.GlobalIPv6Address}}/{{.NetworkSettings.Networks.only6.IPAddress}}",
        "two",
    ]);
    assert_eq!(v6.trim(), "fd88:9::3/", "{v6}");
    let v4 = podman.ok(&["exec", "one", "ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(v4.trim().is_empty(), "{v4}");
    let route = podman.ok(&["exec", "one", "ip", "-6", "route", "show", "default"]);
    assert!(route.contains("via fd88:9::1"), "{route}");
    podman.ok(&[
        "exec",
        "one",
        "ping",
        "-6",
        "-c",
        "2",
        "-W",
        "2",
        "fd88:9::3",
    ]);
    let net: Value = serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "only6"])).unwrap();
    assert_eq!(net[0]["EnableIPv4"], false, "{net}");
    assert_eq!(net[0]["EnableIPv6"], true, "{net}");
    let stats = sb.netctl_ok(&["stats", "--json"]);
    assert_eq!(netctl_tests::all_drops(&stats), 0, "{stats}");
}
