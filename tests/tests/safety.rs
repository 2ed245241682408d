//! netctl never harms the host it runs on and never leaves a half-done change: host services
//! keep their ports, the state is private, a stuck lock gives up, every command is all or
//! nothing (also when killed at any step), and Docker's rules for IDs, texts and exit codes.

use std::{
    collections::BTreeSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    time::Duration,
};

use netctl_tests::{require_sandbox, Background, Sandbox};
use serde_json::Value;

/// Everything a failed command must leave as it was.
fn snapshot(sb: &Sandbox) -> (String, Vec<String>, Vec<String>) {
    (sb.state_text(), sb.host_links(), sb.netns_handles())
}

fn reserved_ports(sb: &Sandbox) -> String {
    let out = sb.host_sh("cat /proc/sys/net/ipv4/ip_local_reserved_ports");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn in_port_list(list: &str, port: u16) -> bool {
    list.split(',').any(|part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        match (a.parse::<u16>(), b.parse::<u16>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&port),
            _ => false,
        }
    })
}

/// A host service in the sandbox's host namespace: answers HTTP on `port` with "host".
fn host_service(sb: &Sandbox, port: u16) -> Background {
    sb.host_http("0.0.0.0", port, "host")
}

#[test]
fn published_ports_never_take_a_host_service_and_stay_reserved() {
    require_sandbox!();
    let sb = Sandbox::new();
    let _svc = host_service(&sb, 7000);
    // Docker refuses a port a host process listens on; nothing changes.
    let before = snapshot(&sb);
    let err = sb.netctl_err(&[
        "run", "-d", "--name", "w", "-p", "7000:80", "--", "sleep", "60",
    ]);
    assert!(err.contains("address already in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(snapshot(&sb), before);
    assert_eq!(
        sb.curl_from_outside(&format!("http://{}:7000/", sb.host_ip))
            .as_deref(),
        Some("host"),
        "the host service must keep its port"
    );
    // Listeners on the IPv6 wildcard (sshd's usual [::]:22) and on loopback hold their
    // ports too.
    let _v6 = sb.host_http("::", 7002, "host6");
    let _lo = sb.host_http("127.0.0.1", 7003, "lo");
    for port in ["7002", "7003"] {
        let err = sb.netctl_err(&[
            "run",
            "-d",
            "--name",
            "w",
            "-p",
            &format!("{port}:80"),
            "--",
            "sleep",
            "60",
        ]);
        assert!(err.contains("address already in use"), "{port}: {err}");
    }
    assert_eq!(snapshot(&sb), before);
    // A range for one port skips the served port.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "-p",
        "7000-7001:80",
        "--",
        "sleep",
        "60",
    ]);
    assert_eq!(sb.netctl_ok(&["port", "r", "80"]).trim(), "0.0.0.0:7001");

    // Ephemeral and explicit ports, and the NAT source ports, are reserved while published.
    let user = "4444";
    assert!(sb
        .host_sh(&format!(
            "echo {user} > /proc/sys/net/ipv4/ip_local_reserved_ports"
        ))
        .status
        .success());
    sb.netctl_ok(&[
        "run", "-d", "--name", "e", "-p", "80", "-p", "8080:81", "--", "sleep", "60",
    ]);
    let eph: u16 = sb
        .netctl_ok(&["port", "e", "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let list = reserved_ports(&sb);
    for p in [eph, 8080, 7001, 61000, 65535, 4444] {
        assert!(in_port_list(&list, p), "{p} not reserved in {list}");
    }
    sb.netctl_ok(&["rm", "-f", "e", "r"]);
    let list = reserved_ports(&sb);
    assert!(
        !in_port_list(&list, eph) && !in_port_list(&list, 8080),
        "{list}"
    );
    assert!(
        in_port_list(&list, 4444),
        "the user's reservation must stay: {list}"
    );
}

#[test]
fn host_addresses_for_p_must_exist_and_loopback_is_accepted() {
    require_sandbox!();
    let sb = Sandbox::new();
    let err = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "a",
        "-p",
        "192.0.2.77:8080:80",
        "--",
        "sleep",
        "9",
    ]);
    assert!(err.contains("cannot assign requested address"), "{err}");
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "-p",
        "127.0.0.1:8080:80",
        "--",
        "sleep",
        "9",
    ]);
    let host_p = format!("{}:8081:80", sb.host_ip);
    sb.netctl_ok(&[
        "run", "-d", "--name", "c", "-p", &host_p, "--", "sleep", "9",
    ]);
}

#[test]
fn state_is_private_and_a_stuck_lock_gives_up_naming_its_holder() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--",
        "sh",
        "-c",
        "echo secret; sleep 60",
    ]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sb.state_dir), 0o700);
    for f in [
        "state.db",
        "state.lock",
        "applied",
        "reserved-ports",
        "netns-cookies",
    ] {
        assert_eq!(mode(&sb.state_dir.join(f)), 0o600, "{f}");
    }
    let id = sb.state()["containers"]["a"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = sb.state_dir.join("containers").join(&id);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(mode(&dir.join("log")), 0o600);

    // A holder that never lets go: every command gives up after NETCTL_LOCK_TIMEOUT.
    let lock = sb.state_dir.join("state.lock");
    let mut holder = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo \"$$ stuck-tool --forever\" > {0}; exec flock {0} sleep 30",
            lock.display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = snapshot(&sb);
    let t = std::time::Instant::now();
    let out = sb
        .netctl_cmd(&["network", "create", "x"])
        .env("NETCTL_LOCK_TIMEOUT", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("gave up after 1 s") && err.contains("stuck-tool --forever"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", holder.id())), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(snapshot(&sb), before);
    let out = sb
        .netctl_cmd(&["network", "create", "x"])
        .env("NETCTL_LOCK_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("NETCTL_LOCK_TIMEOUT=soon is not valid"));
    let _ = holder.kill();
    let _ = holder.wait();

    // A lock file left open to others (an older netctl's 0644, in a 0755 directory) that an
    // unprivileged user holds: netctl replaces it instead of waiting for them.
    std::fs::set_permissions(&sb.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut user = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "flock",
            "-s",
        ])
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = sb
        .netctl_cmd(&["network", "create", "y"])
        .env("NETCTL_LOCK_TIMEOUT", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&sb.state_dir), 0o700);
    assert_eq!(mode(&lock), 0o600);
    assert_eq!(std::fs::metadata(&lock).unwrap().uid(), 0);
    let _ = user.kill();
    let _ = user.wait();
}

#[test]
fn a_command_that_fails_while_applying_changes_nothing() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&[
        "run", "-d", "--name", "a", "-p", "8080:80", "--", "sleep", "60",
    ]);
    // More published ports than the datapath map holds: found while applying, after the
    // namespace and veth were made; all of it goes.
    let before = snapshot(&sb);
    let err = sb.netctl_err(&[
        "run",
        "-d",
        "--name",
        "big",
        "-p",
        "20000-60000:20000-60000",
        "-p",
        "20000-60000:20000-60000/udp",
        "--",
        "sleep",
        "60",
    ]);
    assert!(err.contains("too many published ports"), "{err}");
    assert_eq!(snapshot(&sb), before);
    // The maps still hold exactly the state: a full sync finds nothing to change.
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
}

/// Runs `args` with a crash at step `n`; true when the command completed without crashing.
fn run_killed_at(sb: &Sandbox, args: &[&str], n: u32) -> bool {
    killed_at(sb, args, n).is_none()
}

/// Runs `args` with a crash at step `n`; the step's name when it crashed there.
fn killed_at(sb: &Sandbox, args: &[&str], n: u32) -> Option<String> {
    let out = sb
        .netctl_cmd(args)
        .env("NETCTL_FAILPOINT", n.to_string())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    if out.status.signal() == Some(9) {
        // "netctl: failpoint N (STEP): killed"
        let err = String::from_utf8_lossy(&out.stderr);
        let step = err
            .split_once(" (")
            .and_then(|(_, r)| r.split_once("): killed"));
        return Some(step.map_or(String::new(), |(s, _)| s.to_string()));
    }
    assert!(
        out.status.success(),
        "netctl {} (failpoint {n}): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    None
}

/// The kernel holds exactly what the state says: nothing for `sync` to change.
fn assert_in_sync(sb: &Sandbox, when: &str) {
    let out = sb.netctl_ok(&["sync"]);
    assert_eq!(out.trim(), "in sync: nothing to change", "{when}");
    let st = sb.state();
    let handles: BTreeSet<String> = st["containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["id"].as_str().unwrap()[..12].to_string())
        .collect();
    assert_eq!(
        sb.netns_handles().into_iter().collect::<BTreeSet<_>>(),
        handles,
        "{when}"
    );
}

/// `run` killed at each of its steps, then the next commands; returns the steps it was
/// killed at. With `spares`, each `run` first waits for one of the daemon's spares.
fn run_killed_at_every_step(sb: &Sandbox, run: &[&str], spares: bool) -> Vec<String> {
    let mut steps = Vec::new();
    for n in 1..60 {
        if spares {
            netctl_tests::wait_for("a spare", std::time::Duration::from_secs(10), || {
                sb.host_links().iter().any(|l| l.starts_with("spare"))
            });
        }
        let killed = killed_at(sb, run, n);
        let done = killed.is_none();
        steps.extend(killed);
        // The next ordinary commands work at once, whatever the kill left: the same port
        // and name are usable again after rm, and other containers start.
        sb.netctl_ok(&[
            "run", "-d", "--name", "other", "-p", "9090:80", "--", "sleep", "300",
        ]);
        sb.netctl_ok(&["ps", "-a"]);
        if sb.state()["containers"].get("web").is_some() {
            sb.netctl_ok(&["rm", "-f", "web"]);
        }
        sb.netctl_ok(&["rm", "-f", "other"]);
        assert_in_sync(sb, &format!("after run killed at step {n}"));
        if done {
            break;
        }
    }
    steps
}

#[test]
fn run_and_rm_killed_at_every_step_are_repaired_by_the_next_commands() {
    require_sandbox!();
    let sb = Sandbox::new();
    let run = [
        "run", "-d", "--name", "web", "-p", "8080:80", "--", "sleep", "300",
    ];
    let steps = run_killed_at_every_step(&sb, &run, false);
    assert!(steps.len() > 5, "run should pass several steps ({steps:?})");

    let mut steps = 0;
    for n in 1..60 {
        sb.netctl_ok(&run);
        let done = run_killed_at(&sb, &["rm", "-f", "web"], n);
        sb.netctl_ok(&["ps", "-a"]);
        if sb.state()["containers"].get("web").is_some() {
            sb.netctl_ok(&["rm", "-f", "web"]);
        }
        // The address and port are free again for a new container.
        sb.netctl_ok(&[
            "run", "-d", "--name", "next", "-p", "8080:80", "--", "sleep", "300",
        ]);
        sb.netctl_ok(&["rm", "-f", "next"]);
        assert_in_sync(&sb, &format!("after rm killed at step {n}"));
        if done {
            steps = n;
            break;
        }
    }
    assert!(steps > 3, "rm should pass several steps ({steps})");
}

/// The same with the daemon's spares (`NETCTL_SPARES`): a `run` killed while taking one leaves
/// nothing the next commands and `sync` do not repair.
#[test]
fn run_killed_at_every_step_while_taking_a_spare_is_repaired_by_the_next_commands() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_SPARES", "2");
    sb.netctl_ok(&["network", "create", "--subnet", "10.96.0.0/24", "spared"]);
    if !sb.has_feature("tcx") {
        eprintln!("skipped: spares need TCX");
        return;
    }
    let run = [
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "spared",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "300",
    ];
    let steps = run_killed_at_every_step(&sb, &run, true);
    assert!(
        steps.iter().any(|s| s == "run: spare's veth taken"),
        "run did not take a spare: {steps:?}"
    );
}

#[test]
fn the_instance_does_not_depend_on_how_the_state_dir_is_spelled() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "one"]);
    let link = sb.state_dir.with_extension("link");
    std::os::unix::fs::symlink(&sb.state_dir, &link).unwrap();
    let spellings = [
        format!("{}/", sb.state_dir.display()),
        link.display().to_string(),
        format!(
            "{}/../{}",
            sb.state_dir.display(),
            sb.state_dir.file_name().unwrap().to_string_lossy()
        ),
    ];
    for (i, dir) in spellings.iter().enumerate() {
        let out = sb
            .netctl_cmd(&[
                "network",
                "create",
                "--subnet",
                &format!("10.6{}.0.0/24", i + 2),
                &format!("n{i}"),
            ])
            .env("NETCTL_STATE_DIR", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every bridge carries one interface group: leftovers of any spelling are recognised.
    let out = sb.host_sh("ip -d -j link show type bridge");
    let links: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups: BTreeSet<String> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["group"].to_string())
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(sb.state()["networks"].as_object().unwrap().len(), 4);
    // A relative spelling from another working directory is the same instance too.
    let parent = sb.state_dir.parent().unwrap();
    let out = sb
        .netctl_cmd(&["network", "ls", "-q"])
        .env("NETCTL_STATE_DIR", sb.state_dir.file_name().unwrap())
        .current_dir(parent)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 7);
    std::fs::remove_file(&link).unwrap();
}

#[test]
fn foreground_runs_pass_signals_and_clean_up_detached_ones_record_their_exit() {
    require_sandbox!();
    let sb = Sandbox::new();
    // `timeout` sends SIGTERM to netctl: it reaches the container, and netctl cleans up.
    let t = std::time::Instant::now();
    let cmd = sb.netctl_cmd(&["run", "--name", "fg", "-p", "8080:80", "--", "sleep", "60"]);
    let out = std::process::Command::new("timeout")
        .arg("2")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    // (On a slow machine the signal may come before the first state was saved: no file.)
    assert!(sb.state()["containers"]
        .as_object()
        .is_none_or(|c| c.is_empty()));
    assert!(sb.netns_handles().is_empty());
    assert!(!sb.host_links().iter().any(|l| l.starts_with("veth")));

    // The container's environment is the user's, not netctl's.
    let env = sb.netctl_ok(&["run", "--name", "env", "--", "env"]);
    assert!(!env.contains("NETCTL_"), "{env}");

    // Detached: a session of its own; the exit status is recorded.
    let id = sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "d",
        "--",
        "sh",
        "-c",
        "sleep 0.3; exit 42",
    ]);
    let pid = sb.state()["containers"]["d"]["pid"].as_u64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let sid: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(sid, std::process::id());
    std::thread::sleep(Duration::from_millis(1500));
    let ps = sb.netctl_ok(&["ps", "-a", "--format", "json"]);
    let j: Value = serde_json::from_str(ps.trim()).unwrap();
    assert_eq!(j["State"], "exited");
    assert_eq!(j["ExitCode"], 42);
    assert!(sb.netctl_ok(&["ps", "-a"]).contains("Exited (42)"));
    assert!(sb.netctl_ok(&["ps"]).lines().count() == 1);
    let err = sb.netctl_err(&["exec", "d", "--", "true"]);
    assert!(err.contains("is not running"), "{err}");
    sb.netctl_ok(&["rm", id.trim()]);
}

#[test]
fn inputs_that_used_to_panic_are_one_line_errors() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["run", "-d", "--name", "a", "--", "sleep", "60"]);
    let err = sb.netctl_err(&["trace", "--drops", "--duration", "99999999999999999999"]);
    assert!(
        err.contains("invalid duration") && !err.contains("panicked"),
        "{err}"
    );
    // A huge grace period is fine: sleep ends at SIGTERM.
    sb.netctl_ok(&["rm", "-t", "18446744073709551615", "a"]);

    let good = sb.state_text();
    let state: Value = serde_json::from_str(&good).unwrap();
    let mut cases = Vec::new();
    // A container on a network that does not exist.
    let mut s = state.clone();
    s["containers"] = serde_json::json!({"x": {"id": "0123456789abcdef0123", "name": "x", "command": ["true"],
        "detached": true, "created": 0, "pid": null, "pid_start": null,
        "endpoints": [{"network": "gone", "endpoint_id": "0123456789abcdef0123", "ifname": "eth0",
            "host_veth": "veth01234567", "ip": "10.9.9.2", "mac": "02:42:0a:09:09:02"}], "ports": []}});
    cases.push((s, "does not exist"));
    // A short ID, and an ID that would escape the state directory.
    for id in ["abc", "../../../../etc"] {
        let mut s = state.clone();
        s["containers"] = serde_json::json!({"x": {"id": id, "name": "x", "command": ["true"],
            "detached": true, "created": 0, "pid": null, "pid_start": null, "endpoints": [], "ports": []}});
        cases.push((s, "is not a valid ID"));
    }
    for (s, expect) in cases {
        sb.replace_state(&s.to_string());
        for args in [
            vec!["ps", "-a"],
            vec!["rm", "-f", "x"],
            vec!["sync"],
            vec!["network", "ls"],
        ] {
            let err = sb.netctl_err(&args);
            assert!(
                err.contains(expect) && err.trim_end().lines().count() == 1,
                "{args:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    sb.replace_state(&good);
    assert!(std::path::Path::new("/etc/passwd").exists());
}

#[test]
fn ids_and_prefixes_work_everywhere_as_docker_takes_them() {
    require_sandbox!();
    let sb = Sandbox::new();
    // `network inspect bridge` on a fresh host shows it without making it.
    let v: Value = serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(v[0]["Name"], "bridge");
    assert!(!sb.host_links().contains(&"netctl0".to_string()));
    let host: Value =
        serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "host", "none"])).unwrap();
    assert_eq!(
        (host[0]["Driver"].as_str(), host[1]["Driver"].as_str()),
        (Some("host"), Some("null"))
    );

    let net_id = sb.netctl_ok(&["network", "create", "--subnet", "10.44.0.0/24", "front"]);
    let net_id = net_id.trim();
    let back_id = sb.netctl_ok(&["network", "create", "back"]);
    let id = sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        &net_id[..6],
        "--",
        "sleep",
        "60",
    ]);
    let id = id.trim();
    assert_eq!(
        sb.state()["containers"]["a"]["endpoints"][0]["network"],
        "front"
    );
    sb.netctl_ok(&[
        "run", "-d", "--name", "b", "-p", "8080:80", "--", "sleep", "60",
    ]);
    sb.netctl_ok(&["network", "connect", &back_id[..8], &id[..5]]);
    sb.netctl_ok(&["network", "disconnect", "back", id]);
    sb.netctl_ok(&["network", "connect", "back", &id[..12]]);
    sb.netctl_ok(&["exec", &id[..7], "--", "true"]);
    assert!(sb.netctl_ok(&["port", "b"]).contains("8080"));

    // inspect prints what it found, then fails for the rest.
    let out = sb.netctl(&["network", "inspect", &net_id[..12], "nope"]);
    assert!(!out.status.success());
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found[0]["Name"], "front");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such network: nope"));

    // The classic clean-ups.
    let ids = sb.netctl_ok(&["ps", "-aq"]);
    let mut args = vec!["rm", "-f"];
    args.extend(ids.lines());
    sb.netctl_ok(&args);
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
    let ids = sb.netctl_ok(&["network", "ls", "-q"]);
    let mut args = vec!["network", "rm"];
    args.extend(ids.lines());
    let out = sb.netctl(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pre-defined network"), "{err}");
    let left: Vec<String> = sb.state()["networks"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        left,
        ["bridge"],
        "user networks removed, the pre-defined one stays"
    );
}

#[test]
fn docker_texts_and_exit_codes() {
    require_sandbox!();
    let sb = Sandbox::new();
    let code = |args: &[&str]| sb.netctl(args).status.code();
    // netctl's own failure in run: 125; cannot execute: 126; not found: 127.
    assert_eq!(
        code(&["run", "--name", "a", "--network", "nope", "--", "true"]),
        Some(125)
    );
    assert_eq!(
        code(&["run", "--name", "a", "--", "/etc/passwd"]),
        Some(126)
    );
    assert_eq!(
        code(&["run", "--name", "a", "--", "no-such-command-here"]),
        Some(127)
    );
    assert_eq!(
        code(&["run", "-d", "--name", "a", "--", "no-such-command-here"]),
        Some(127)
    );
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
    // An unknown option is an error, never the command to start.
    let before = snapshot(&sb);
    let out = sb.netctl(&["run", "--name", "a", "--bogus-flag", "x", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown flag: --bogus-flag") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(snapshot(&sb), before);
    // --ip only where the user chose the subnet, as in Docker.
    let err = sb.netctl_err(&["run", "--name", "a", "--ip", "172.17.0.9", "--", "true"]);
    assert!(
        err.contains("user specified IP address is supported only"),
        "{err}"
    );
    sb.netctl_ok(&["network", "create", "auto"]);
    let err = sb.netctl_err(&[
        "run",
        "--name",
        "a",
        "--network",
        "auto",
        "--ip",
        "172.18.0.9",
        "--",
        "true",
    ]);
    assert!(
        err.contains("user specified IP address is supported only"),
        "{err}"
    );
    sb.netctl_ok(&["network", "create", "--subnet", "10.0.2.0/24", "mine"]);
    let err = sb.netctl_err(&[
        "run",
        "--name",
        "a",
        "--network",
        "mine",
        "--ip",
        "10.0.3.100",
        "--",
        "true",
    ]);
    assert!(err.contains("Invalid preferred address 10.0.3.100: It does not belong to any of this network's subnets"), "{err}");
}

#[test]
fn host_network_runs_in_the_host_namespace() {
    require_sandbox!();
    let sb = Sandbox::new();
    let out = sb.netctl(&[
        "run",
        "--name",
        "h",
        "--network",
        "host",
        "-p",
        "80:80",
        "--",
        "ip",
        "-o",
        "link",
    ]);
    assert!(out.status.success());
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(
        links.contains(netctl_tests::UPLINK),
        "sees the host's interfaces: {links}"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Published ports are discarded when using host network mode"));
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "hd",
        "--network",
        "host",
        "--",
        "sleep",
        "60",
    ]);
    let ps = sb.netctl_ok(&["ps"]);
    assert!(ps.contains("hd") && ps.contains("host"), "{ps}");
    let v: Value = serde_json::from_str(&sb.netctl_ok(&["network", "inspect", "host"])).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 1);
    let pid = sb.state()["containers"]["hd"]["pid"].as_u64().unwrap() as u32;
    sb.netctl_ok(&["rm", "hd"]);
    assert!(!netctl_tests::process_alive(pid));
    let err = sb.netctl_err(&["network", "rm", "host"]);
    assert!(err.contains("pre-defined"), "{err}");
    let err = sb.netctl_err(&["network", "create", "host"]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn sync_after_a_reboot_restores_everything_and_marks_containers_exited() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.whoami("web", None, &["8080:80"], 80);
    assert!(sb
        .curl_from_outside(&format!("http://{}:8080/", sb.host_ip))
        .is_some());
    // What a reboot loses: processes, namespaces, links, pinned programs and maps; the state
    // and the boot it was written in stay.
    let st = sb.state();
    let id = st["containers"]["web"]["id"].as_str().unwrap().to_string();
    let handle = sb.state_dir.join("netns").join(&id[..12]);
    let pid = st["containers"]["web"]["pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    nix::mount::umount2(&handle, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_file(sb.state_dir.join("containers").join(&id).join("exit")).ok();
    sb.host_sh("ip link del netctl0");
    std::fs::remove_dir_all(&sb.bpffs).unwrap();
    let text = sb.state_text().replace(
        st["containers"]["web"]["boot_id"].as_str().unwrap(),
        "00000000-0000-0000-0000-000000000000",
    );
    sb.replace_state(&text);

    let out = sb.netctl_ok(&["sync"]);
    assert!(out.contains("re-created bridge netctl0"), "{out}");
    assert!(out.contains("container web marked exited"), "{out}");
    assert!(sb.netctl_ok(&["ps", "-a"]).contains("Exited (255)"));
    assert_eq!(sb.netctl_ok(&["sync"]).trim(), "in sync: nothing to change");
    // The datapath is back: a new container's published port answers.
    sb.whoami("web2", None, &["8081:80"], 80);
    assert!(sb
        .curl_from_outside(&format!("http://{}:8081/", sb.host_ip))
        .is_some());
}

#[test]
fn a_state_directory_that_is_not_roots_is_refused_and_left_alone() {
    require_sandbox!();
    let sb = Sandbox::new();
    std::fs::create_dir_all(&sb.state_dir).unwrap();
    std::os::unix::fs::chown(&sb.state_dir, Some(65534), Some(65534)).unwrap();
    let listing = || {
        let mut v: Vec<_> = std::fs::read_dir(&sb.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let files = listing();
    let before = sb.host_links();
    let err = sb.netctl_err(&["network", "create", "n"]);
    assert!(
        err.contains("owned by uid 65534") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(sb.host_links(), before, "nothing made");
    assert_eq!(listing(), files, "nothing written into it");
    std::os::unix::fs::chown(&sb.state_dir, Some(0), Some(0)).unwrap();
}

/// A symlink someone else planted where the state directory should be (in a world-writable
/// place) would lead netctl into a directory of their choosing: refused, and the directory
/// it points to is left as it was (not made root's or private).
#[test]
fn a_state_directory_reached_through_someone_elses_symlink_is_refused() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    let target = sb.state_dir.with_extension("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let link = sb.state_dir.with_extension("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    sb.env("NETCTL_STATE_DIR", &link.to_string_lossy());
    let before = sb.host_links();
    let err = sb.netctl_err(&["network", "create", "n"]);
    assert!(
        err.contains("symlink of uid 65534") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(sb.host_links(), before, "nothing made");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&target).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o755,
        "the directory it points to is untouched"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    // The same link made by root is root's word: followed.
    std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
    sb.netctl_ok(&["network", "create", "n"]);
    sb.netctl_ok(&["network", "rm", "n"]);
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&target);
}

/// `ip netns exec` gives each command a private mount namespace with a fresh /sys: the pins
/// (and so the programs on every veth) and the namespace handles a command made there would
/// vanish as it exits. A command that changes things says so and how to run it instead, and
/// makes nothing.
#[test]
fn a_command_under_ip_netns_exec_is_refused_with_the_way_out_and_changes_nothing() {
    require_sandbox!();
    let sb = Sandbox::new();
    let links = sb.host_links();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &sb.host_ns])
        .arg(netctl_tests::netctl_bin())
        .args(["run", "-d", "--name", "web", "--", "sleep", "60"])
        .env("NETCTL_STATE_DIR", &sb.state_dir)
        .env("NETCTL_BPFFS", &sb.bpffs)
        .env("NETCTL_RESOLV_CONF", sb.state_dir.join("host-resolv.conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("ip netns exec") && err.contains("nsenter --net="),
        "{err}"
    );
    assert_eq!(sb.host_links(), links);
    assert!(sb.netns_handles().is_empty());
    assert!(!sb.netctl_ok(&["ps", "-a"]).contains("web"));
    // The same command entering the network namespace only works.
    sb.netctl_ok(&["run", "-d", "--name", "web", "--", "sleep", "60"]);
}
