//! dockerd in a sandbox for the engine tests and the benchmark: the real dockerd 20.10
//! (Debian's docker.io) in the sandbox's host namespace with its own data, exec root and
//! socket, and netctl's plugin as a network and IPAM driver.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Background, Sandbox};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (another one may come first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
const SPEC_DIR: &str = "/etc/docker/plugins";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// dockerd and netctl's plugin in one sandbox; everything stopped and removed when dropped.
pub struct Docker<'a> {
    sb: &'a Sandbox,
    dir: PathBuf,
    /// The driver's name: its spec file's (unique per test, the spec directory is global).
    pub driver: String,
    pub plugin: Option<Background>,
    dockerd: Option<std::process::Child>,
}

impl<'a> Docker<'a> {
    /// dockerd without a bridge of its own; with `iptables` it manages netfilter as usual
    /// (for its own bridge networks), else it leaves every rule to netctl.
    pub fn start(sb: &'a Sandbox, iptables: bool) -> Self {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let driver = format!("nctl{}x{k}", std::process::id());
        let dir = std::env::temp_dir().join(format!("netctl-docker-{}", sb.id));
        for d in ["data", "exec", "run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::create_dir_all(SPEC_DIR).unwrap();
        std::fs::write(
            Path::new(SPEC_DIR).join(format!("{driver}.spec")),
            format!("unix://{}\n", dir.join("plugin.sock").display()),
        )
        .unwrap();
        let mut d = Docker {
            sb,
            dir,
            driver,
            plugin: None,
            dockerd: None,
        };
        d.start_plugin();
        let dockerd = sb
            .in_host(DOCKERD)
            .arg("--data-root")
            .arg(d.dir.join("data"))
            .arg("--exec-root")
            .arg(d.dir.join("exec"))
            .arg("--pidfile")
            .arg(d.dir.join("run/docker.pid"))
            .arg("-H")
            .arg(d.host())
            .arg(format!("--iptables={iptables}"))
            .arg(format!("--ip-masq={iptables}"))
            .args([
                "--userland-proxy=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("dockerd");
        d.dockerd = Some(dockerd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.docker(&["info"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let tar = crate::busybox_image_tar(&d.dir);
        d.ok(&["import", &tar.to_string_lossy(), "busybox:local"]);
        d
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("run/docker.sock").display())
    }

    pub fn start_plugin(&mut self) {
        let sock = self.dir.join("plugin.sock");
        let _ = std::fs::remove_file(&sock);
        let child = self
            .sb
            .netctl_cmd(&["docker-plugin", "--socket", &sock.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("plugin.log")).unwrap())
            .spawn()
            .unwrap();
        self.plugin = Some(Background(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "the plugin did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.sb
            .in_host(DOCKER)
            .arg("-H")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn err(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {} should fail",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A raw API call to the plugin, as dockerd makes them: (HTTP status, body).
    pub fn plugin_call(&self, method: &str, body: &str) -> (u32, Value) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(self.dir.join("plugin.sock"))
            .args(["-X", "POST", "-d", body])
            .arg(format!("http://plugin/{method}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    pub fn ip_of(&self, name: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            name,
        ])
    }
}

impl Drop for Docker<'_> {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut d) = self.dockerd.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        self.plugin.take();
        let _ = std::fs::remove_file(Path::new(SPEC_DIR).join(format!("{}.spec", self.driver)));
        // dockerd's mounts under its roots go with it; what stays mounted stays in place.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
