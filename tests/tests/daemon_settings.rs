//! The daemon serves with the settings the commands saved in the state directory, whoever
//! starts it, and runs outside the cgroup of whoever started it.

use std::{os::unix::process::CommandExt, process::Stdio, time::Duration};

use netctl_tests::{cluster::Cluster, require_sandbox, sleeper_args, wait_for, Sandbox};
use serde_json::Value;

fn daemon_pid(state_dir: &std::path::Path) -> Option<i32> {
    let text = std::fs::read_to_string(state_dir.join("daemon.pid")).ok()?;
    let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
    netctl_tests::process_alive(pid as u32).then_some(pid)
}

#[test]
fn a_daemon_started_by_a_cni_add_keeps_the_hosts_lease() {
    require_sandbox!();
    let mut c = Cluster::new(1);
    c.env.push(("NETCTL_CLUSTER_TTL".into(), "3".into()));
    c.overlay(0, &["--subnet", "10.64.0.0/24", "ov"]);
    c.sleeper(0, "a", "ov");
    let h = &c.hosts[0];
    // The daemon goes; a runtime's ADD, without any cluster setting, starts the next one.
    let old = daemon_pid(&h.state_dir).expect("a daemon");
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("the daemon to die", Duration::from_secs(5), || {
        daemon_pid(&h.state_dir).is_none()
    });
    let ns = c.namespace("cni");
    let mut add = c.netctl_cmd(0, &[]);
    for (k, _) in std::env::vars().chain(c.env.clone()) {
        if k.starts_with("NETCTL_CLUSTER") {
            add.env_remove(&k);
        }
    }
    add.env_remove("NETCTL_CLUSTER_STORE")
        .env_remove("NETCTL_CLUSTER_ADVERTISE")
        .env_remove("NETCTL_CLUSTER_STORE_OPT")
        .env_remove("NETCTL_CLUSTER_TTL")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "cnicnicnicnicnicnicni")
        .env("CNI_NETNS", format!("/run/netns/{ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            br#"{"cniVersion":"1.0.0","name":"podnet","type":"netctl","subnet":"10.65.0.0/24"}"#,
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = daemon_pid(&h.state_dir).expect("the ADD starts a daemon");
    assert_ne!(new, old);
    // Three lease times later the agent is connected and renewing: the host is still a
    // member, its container still known to the store.
    std::thread::sleep(Duration::from_secs(9));
    let info: Value = serde_json::from_str(&c.netctl_ok(0, &["info", "--format", "json"])).unwrap();
    assert_eq!(info["Cluster"]["AgentRunning"], true, "{info}");
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/"]);
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.contains(&h.ip), "{keys}");
}

#[test]
fn new_settings_replace_the_daemon_and_others_keep_them() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.66.0.0/24", "n"]);
    sb.sleeper("a", "n");
    let first = sb.daemon_pid().expect("a daemon");
    let scrape = || {
        let out = sb.host_sh("curl -s --max-time 2 http://127.0.0.1:9155/metrics");
        String::from_utf8_lossy(&out.stdout).contains("netctl_")
    };
    assert!(!scrape());
    // A command that sets the metrics address: the daemon is replaced and serves there.
    let out = sb
        .netctl_cmd(&sleeper_args("b", "n"))
        .env("NETCTL_METRICS_ADDR", "127.0.0.1:9155")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = sb.daemon_pid().expect("a daemon");
    assert_ne!(first, second);
    wait_for(
        "metrics on the saved address",
        Duration::from_secs(5),
        scrape,
    );
    // Commands that do not set it keep it, and keep the daemon.
    sb.sleeper("c", "n");
    assert_eq!(sb.daemon_pid(), Some(second));
    assert!(scrape());
    // An empty value removes it.
    let out = sb
        .netctl_cmd(&["rm", "-f", "c"])
        .env("NETCTL_METRICS_ADDR", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "no metrics on the removed address",
        Duration::from_secs(5),
        || !scrape(),
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sb.state_dir.join("daemon-settings.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn stopping_the_callers_cgroup_leaves_the_daemon_running() {
    require_sandbox!();
    let Some(root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|r| std::path::Path::new(r).join("cgroup.procs").exists())
    else {
        eprintln!("skipped: no cgroup v2 hierarchy");
        return;
    };
    let sb = Sandbox::new();
    // A "service": a cgroup of the test's, whose every process is killed at its stop.
    let unit = std::path::PathBuf::from(root).join(format!("netctl-test-{}", sb.id));
    std::fs::create_dir(&unit).unwrap();
    let procs = unit.join("cgroup.procs");
    let in_unit = |args: &[&str]| {
        let mut cmd = sb.netctl_cmd(args);
        let procs = procs.clone();
        // SAFETY: only a write(2) of the child's own pid between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, "0"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    in_unit(&["network", "create", "--subnet", "10.67.0.0/24", "n"]);
    in_unit(&sleeper_args("a", "n"));
    let daemon = sb.daemon_pid().expect("a daemon");
    let cgroup = std::fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap();
    assert!(cgroup.contains("/netctl-daemon-"), "{cgroup}");
    // The unit stops: everything in its cgroup is killed.
    for _ in 0..20 {
        let pids = std::fs::read_to_string(&procs).unwrap();
        if pids.trim().is_empty() {
            break;
        }
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::fs::remove_dir(&unit);
    assert_eq!(
        sb.daemon_pid(),
        Some(daemon),
        "the daemon died with the caller's unit"
    );
    // It still serves: a new container's name resolves from another.
    sb.sleeper("b", "n");
    let out = sb.netctl(&["exec", "b", "--", "getent", "hosts", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
