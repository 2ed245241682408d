//! netctl as the CNI plugin of a second runtime: containerd 1.6 (Debian's) with `ctr run
//! --cni`, which names the container's namespace `/proc/PID/ns/net`, in a sandbox namespace
//! with its own root, state and socket, a busybox image imported from a local OCI archive,
//! and netctl chained with the reference `tuning` and `bandwidth` plugins.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use netctl_tests::{require_sandbox, Background, Sandbox};
use serde_json::{json, Value};

const CTR_NS: &str = "netctl-test";
const IMAGE: &str = "localhost/busybox:latest";

/// containerd in the sandbox's host namespace, with everything of its own under `dir`.
struct Containerd<'a> {
    sb: &'a Sandbox,
    dir: PathBuf,
    daemon: Option<Background>,
}

impl<'a> Containerd<'a> {
    fn start(sb: &'a Sandbox) -> Self {
        let dir = std::env::temp_dir().join(format!("netctl-containerd-{}", sb.id));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let daemon = Background(
            sb.in_host("containerd")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let me = Containerd {
            sb,
            dir,
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !me.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                std::fs::read_to_string(me.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.sb.in_host("ctr");
        c.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", CTR_NS])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().unwrap()
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {}: {out:?}", args.join(" "));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports the busybox rootfs as an OCI image (one uncompressed layer).
    fn import_busybox(&self) {
        let tar = netctl_tests::busybox_image_tar(&self.dir);
        let script = format!(
            r#"set -e
            L={d}/oci; mkdir -p $L/blobs/sha256; cd $L
            blob() {{ h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" blobs/sha256/$h; echo $h; }}
            size() {{ stat -c %s blobs/sha256/$1; }}
            cp {tar} layer; layer=$(blob layer)
            printf '{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' $layer > config
            config=$(blob config)
            printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' $config $(size $config) $layer $(size $layer) > manifest
            manifest=$(blob manifest)
            printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"org.opencontainers.image.ref.name":"{IMAGE}"}}}}]}}' $manifest $(size $manifest) > index.json
            echo '{{"imageLayoutVersion":"1.0.0"}}' > oci-layout
            tar -cf {d}/image.tar oci-layout index.json blobs"#,
            d = self.dir.display(),
            tar = tar.display()
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let archive = self.dir.join("image.tar");
        self.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            &archive.to_string_lossy(),
        ]);
    }

    /// `ctr run --cni` in a mount namespace of its own, where the runtime's fixed CNI
    /// directories (/etc/cni/net.d, /opt/cni/bin) are this test's: the host's stay untouched.
    fn run_cni(&self, conflist: &Value, args: &[&str]) -> Background {
        let net_d = self.dir.join("net.d");
        std::fs::create_dir_all(&net_d).unwrap();
        std::fs::write(net_d.join("10-netctl.conflist"), conflist.to_string()).unwrap();
        let script = format!(
            "set -e; mount --bind {net_d} /etc/cni/net.d; mount -t tmpfs tmpfs /opt; \
             mkdir -p /opt/cni/bin; ln -s {netctl} /opt/cni/bin/netctl; \
             for p in loopback tuning bandwidth; do ln -s /usr/lib/cni/$p /opt/cni/bin/$p; done; exec \"$@\"",
            net_d = net_d.display(),
            netctl = netctl_tests::netctl_bin().display()
        );
        let ctr = self.ctr_cmd(&[]);
        let mut cmd = self.sb.in_host("unshare");
        cmd.args(["-m", "sh", "-c", &script, "sh"])
            .arg("ctr")
            .args(ctr.get_args().skip(3)) // after nsenter's own: --net=…, --, ctr
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("ctr-run.log")).unwrap());
        // The plugin gets the runtime's environment: this sandbox's netctl instance.
        for (k, v) in self.sb.netctl_cmd(&[]).get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Background(cmd.spawn().unwrap())
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        for args in [
            &["task", "kill", "-s", "KILL", "web"][..],
            &["task", "delete", "-f", "web"],
            &["container", "delete", "web"],
        ] {
            let _ = self.ctr(args);
        }
        drop(self.daemon.take());
        // A shim killed half-way may leave its rootfs mounted under the state dir.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn containerd_runs_containers_on_netctl_through_cni() {
    require_sandbox!();
    for tool in ["/usr/bin/containerd", "/usr/bin/ctr", "/etc/cni/net.d"] {
        if !Path::new(tool).exists() {
            eprintln!(
                "skipped: {tool} is missing (cargo xtask setup installs containerd and podman)"
            );
            return;
        }
    }
    let sb = Sandbox::new();
    let cd = Containerd::start(&sb);
    cd.import_busybox();
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "ctrnet",
        "plugins": [
            { "type": "netctl", "subnet": "10.82.0.0/24" },
            { "type": "tuning", "mtu": 1400 },
            // What enters the container held to 100 Mbit/s: a tbf on its host-side veth.
            { "type": "bandwidth", "ingressRate": 100_000_000u64, "ingressBurst": 1_000_000u64 }
        ]
    });
    let run = cd.run_cni(
        &conflist,
        &[
            "run",
            "--cni",
            "--rm",
            "--snapshotter",
            "native",
            IMAGE,
            "web",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    // ctr attaches the task's namespace by its PID: /proc/PID/ns/net, recorded with the
    // process's start time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let web = loop {
        if let Some(c) = sb.state()["containers"]
            .as_object()
            .and_then(|m| m.values().find(|c| c["engine"] == "cni").cloned())
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no CNI attachment: {}",
            std::fs::read_to_string(cd.dir.join("ctr-run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let ns = web["engine_netns"].as_str().unwrap().to_string();
    assert!(ns.starts_with("/proc/") && ns.ends_with("/ns/net"), "{web}");
    assert!(web["engine_netns_start"].as_u64().is_some(), "{web}");
    let ip = web["endpoints"][0]["ip"].as_str().unwrap().to_string();

    // The container serves the host (its gateway) and reaches out through masquerade; the
    // chained tuning plugin set its MTU.
    let got = sb.host_sh(&format!(
        "for i in $(seq 50); do curl -s --max-time 2 http://{ip}/cgi-bin/ip && exit 0; sleep 0.1; done; exit 1"
    ));
    assert!(got.status.success(), "{got:?}");
    // busybox httpd listens on IPv6 and writes v4-mapped addresses.
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "[::ffff:10.82.0.1]"
    );
    let _srv = sb.outside_whoami_server(9000, 60);
    let out = cd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "probe",
        "web",
        "sh",
        "-c",
        &format!(
            "cat /sys/class/net/eth0/mtu; wget -q -O - http://{}:9000/",
            sb.outside_ip
        ),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"1400"), "{out}");
    let host_veth = web["endpoints"][0]["host_veth"].as_str().unwrap();
    let qdisc = sb.host_sh(&format!("tc qdisc show dev {host_veth} root"));
    assert!(
        String::from_utf8_lossy(&qdisc.stdout).contains("tbf"),
        "the chained bandwidth plugin's qdisc: {qdisc:?}"
    );
    assert_eq!(
        lines.last().map(|l| l.trim()),
        Some(sb.host_ip.as_str()),
        "{out}"
    );

    // The task ends: ctr's DEL through the chain removes everything netctl made.
    cd.ctr_ok(&["task", "kill", "-s", "KILL", "web"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sb.state()["containers"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the DEL did not come: {}",
            std::fs::read_to_string(cd.dir.join("ctr-run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(run);
    assert!(
        !sb.host_links().iter().any(|l| l.starts_with("veth")),
        "{:?}",
        sb.host_links()
    );
}
