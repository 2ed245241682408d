//! netctl as dockerd's network and IPAM driver: the real dockerd 20.10 (Debian's docker.io)
//! in a sandbox host namespace with its own data, exec root and socket, and no iptables,
//! masquerade or userland proxy of its own — every rule is netctl's.

use std::path::Path;

use netctl_tests::{
    docker::{Docker, DOCKER, DOCKERD},
    require_sandbox, Sandbox,
};
use serde_json::Value;

fn ps_names(sb: &Sandbox) -> Vec<(String, String)> {
    sb.netctl_ok(&["ps", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["Names"].as_str().unwrap_or_default().to_string(),
                v["Networks"].to_string(),
            )
        })
        .collect()
}

/// Whether dockerd and its client are installed (else the test says it is skipped).
fn have_docker() -> bool {
    let there = Path::new(DOCKERD).exists() && Path::new(DOCKER).exists();
    if !there {
        eprintln!("skipped: docker.io is not installed (cargo xtask setup installs it)");
    }
    there
}

#[test]
fn dockerd_runs_containers_on_netctl_through_the_network_driver() {
    require_sandbox!();
    if !have_docker() {
        return;
    }
    let sb = Sandbox::new();
    let mut d = Docker::start(&sb, false);
    let drv = d.driver.clone();
    let rules_before = sb
        .host_sh("iptables-save 2>/dev/null | grep -c '^-A'; nft list ruleset 2>/dev/null | wc -l");

    // Networks: netctl's IPAM for one, Docker's own for the other.
    let n1 = d.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--subnet",
        "10.81.0.0/24",
        "n1",
    ]);
    let n2 = d.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--subnet",
        "10.82.0.0/24",
        "n2",
    ]);
    let ls = sb.netctl_ok(&["network", "ls"]);
    assert!(ls.contains(&n1[..12]) && ls.contains(&n2[..12]), "{ls}");
    // An overlapping subnet is refused and leaves nothing.
    let err = d.err(&[
        "network",
        "create",
        "-d",
        &drv,
        "--subnet",
        "10.81.0.0/16",
        "bad",
    ]);
    assert!(err.contains("overlap"), "{err}");
    assert_eq!(sb.netctl_ok(&["network", "ls"]), ls);

    // A published port, DNAT in eBPF, the client's address kept.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "-p",
        "8080:80",
        "busybox:local",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let web = d.ip_of("web", "n1");
    assert!(web.starts_with("10.81.0."), "{web}");
    let url = format!("http://{}:8080/cgi-bin/ip", sb.host_ip);
    let got = sb.curl_from_outside_within(&url, 10);
    let client = |s: &str| {
        s.trim()
            .trim_start_matches("[::ffff:")
            .trim_end_matches(']')
            .to_string()
    };
    assert_eq!(client(&got), sb.outside_ip);
    // netctl shows the endpoint as a container of its network, with its published port
    // (dockerd cannot show a remote driver's port map: it decodes it as untyped JSON).
    let (name, _) = ps_names(&sb)
        .into_iter()
        .find(|(_, nets)| nets.contains(&n1[..12]))
        .expect("web in netctl ps");
    let port = sb.netctl_ok(&["port", &name, "80"]);
    assert!(port.contains("8080"), "{port}");

    // Masquerade out; a static address; isolation between the two networks.
    let _srv = sb.outside_whoami_server(9000, 60);
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "busybox:local",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{}:9000/", sb.outside_ip),
    ]);
    assert_eq!(out, sb.host_ip);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "n2",
        "--ip",
        "10.82.0.50",
        "busybox:local",
        "sleep",
        "300",
    ]);
    assert_eq!(d.ip_of("fixed", "n2"), "10.82.0.50");
    // (busybox's static wget crashes under `docker exec` here: nc speaks the HTTP.)
    let get = |addr: &str| {
        let script = format!("printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} 80");
        let out = d.docker(&["exec", "fixed", "sh", "-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!get(&web).contains("200 OK"), "n2 reached n1");
    // network connect: now on n1 too, it reaches web; disconnect takes it away again.
    d.ok(&["network", "connect", "n1", "fixed"]);
    let fixed1 = d.ip_of("fixed", "n1");
    let answer = get(&web);
    assert!(answer.contains("200 OK"), "{answer}");
    assert_eq!(client(answer.rsplit("\r\n\r\n").next().unwrap()), fixed1);
    d.ok(&["network", "disconnect", "n1", "fixed"]);
    let out = d.docker(&["exec", "fixed", "ip", "-o", "-4", "addr"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&fixed1));

    // A restarted plugin resumes from netctl's state.
    d.plugin.take();
    d.start_plugin();
    assert!(
        sb.curl_from_outside(&url).is_some(),
        "the datapath does not need the plugin"
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "later",
        "--network",
        "n1",
        "busybox:local",
        "sleep",
        "300",
    ]);
    let later = d.ip_of("later", "n1");
    assert_ne!(later, web);

    // The API's error answers for what the plugin does not know, and nothing made.
    let (code, body) = d.plugin_call(
        "NetworkDriver.DeleteNetwork",
        r#"{"NetworkID":"0123456789abcdef0123"}"#,
    );
    assert_eq!(code, 500);
    assert!(
        body["Err"].as_str().unwrap().contains("not found"),
        "{body}"
    );
    let (code, body) = d.plugin_call(
        "NetworkDriver.Join",
        r#"{"NetworkID":"x","EndpointID":"0123456789abcdef0123","SandboxKey":"/nonexistent"}"#,
    );
    assert_eq!(code, 500, "{body}");
    assert!(body["Err"].is_string());
    // A Join after its network was deleted (the endpoint never joined): an error, and the
    // plugin still answers.
    let (code, body) = d.plugin_call(
        "NetworkDriver.CreateNetwork",
        r#"{"NetworkID":"feedfacefeedface0001","Options":{},"IPv4Data":[{"Pool":"10.89.0.0/24","Gateway":"10.89.0.1/24"}]}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = d.plugin_call(
        "NetworkDriver.CreateEndpoint",
        r#"{"NetworkID":"feedfacefeedface0001","EndpointID":"e0e0e0e0e0e0e0e0e0e0","Interface":{"Address":"10.89.0.5/24"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = d.plugin_call(
        "NetworkDriver.DeleteNetwork",
        r#"{"NetworkID":"feedfacefeedface0001"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = d.plugin_call(
        "NetworkDriver.Join",
        r#"{"NetworkID":"feedfacefeedface0001","EndpointID":"e0e0e0e0e0e0e0e0e0e0","SandboxKey":"/nonexistent"}"#,
    );
    assert_eq!(code, 500, "{body}");
    assert!(body["Err"].as_str().unwrap().contains("gone"), "{body}");
    let (code, _) = d.plugin_call("NetworkDriver.GetCapabilities", "{}");
    assert_eq!(code, 200, "the plugin survived");
    let (code, body) = d.plugin_call(
        "NetworkDriver.DeleteEndpoint",
        r#"{"NetworkID":"feedfacefeedface0001","EndpointID":"e0e0e0e0e0e0e0e0e0e0"}"#,
    );
    assert_eq!(code, 200, "{body}");

    // rm -f: the endpoint leaves netctl, the port stops answering.
    let before = ps_names(&sb).len();
    d.ok(&["rm", "-f", "web"]);
    assert_eq!(ps_names(&sb).len(), before - 1);
    assert!(sb.curl_from_outside(&url).is_none());
    d.ok(&["rm", "-f", "fixed", "later"]);
    d.ok(&["network", "rm", "n1", "n2"]);
    assert!(ps_names(&sb).is_empty(), "{:?}", ps_names(&sb));
    let left: Vec<_> = sb
        .host_links()
        .into_iter()
        .filter(|l| l.starts_with("br-") || l.starts_with("veth") || l.starts_with("vpeer"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let ls_after = sb.netctl_ok(&["network", "ls"]);
    assert!(
        !ls_after.contains(&n1[..12]) && !ls_after.contains(&n2[..12]),
        "{ls_after}"
    );
    // dockerd added no iptables or nftables rule.
    let rules_after = sb
        .host_sh("iptables-save 2>/dev/null | grep -c '^-A'; nft list ruleset 2>/dev/null | wc -l");
    assert_eq!(rules_before.stdout, rules_after.stdout);
}

#[test]
fn the_plugin_socket_keeps_what_is_not_its_own_and_answers_root_only() {
    require_sandbox!();
    let sb = Sandbox::new();
    std::fs::create_dir_all(&sb.state_dir).unwrap();
    // A file that is not a socket at --socket: refused, left as it was.
    let file = sb.state_dir.join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = sb.netctl_err(&["docker-plugin", "--socket", &file.to_string_lossy()]);
    assert!(
        err.contains("is not a socket") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    // A socket root-only from the start; a non-root process that gets through anyway (the
    // mode opened by hand) is not served.
    // Somewhere any user can reach, so that only the plugin itself can say no.
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::path::PathBuf::from(format!("/tmp/netctl-plugin-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _gone = Gone(dir.clone());
    let sock = dir.join("p.sock");
    let _plugin = netctl_tests::Background(
        sb.netctl_cmd(&["docker-plugin", "--socket", &sock.to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ask = |uid: u32| {
        let script = format!(
            "import os, socket\n\
os.setuid({uid})\n\
s = socket.socket(socket.AF_UNIX); s.settimeout(3)\n\
try:\n    s.connect('{}')\nexcept Exception:\n    print('connect-failed'); raise SystemExit\n\
try:\n    s.sendall(b'POST /Plugin.Activate HTTP/1.1\\r\\nContent-Length: 0\\r\\n\\r\\n')\n    print(s.recv(1000).decode().split(' ')[1])\nexcept Exception as e:\n    print('none')\n",
            sock.display()
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if text.is_empty() {
            panic!("{}", String::from_utf8_lossy(&out.stderr));
        }
        text
    };
    assert_eq!(ask(0), "200", "root is served");
    assert_eq!(ask(65534), "none", "nobody is not");
}

#[test]
fn dockerd_makes_dual_stack_networks_on_netctl() {
    require_sandbox!();
    if !have_docker() {
        return;
    }
    let sb = Sandbox::new();
    let d = Docker::start(&sb, false);
    let drv = d.driver.clone();
    // Docker's own IPAM hands out the IPv6 subnet's addresses here.
    d.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipv6",
        "--subnet",
        "10.85.0.0/24",
        "--subnet",
        "fd85::/64",
        "dual",
    ]);
    for name in ["one", "two"] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "dual",
            "busybox:local",
            "sleep",
            "300",
        ]);
    }
    // A field of a container's endpoint on a network, as `docker inspect` shows it.
    let field = |name: &str, net: &str, f: &str| {
        d.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").{f}}}}}"),
            name,
        ])
        .trim()
        .to_string()
    };
    let two = field("two", "dual", "GlobalIPv6Address");
    assert!(two.starts_with("fd85::"), "{two}");
    // netctl holds the same addresses, and its programs carry IPv6 between them.
    let state = sb.state_text();
    assert!(state.contains(&format!("\"{two}\"")), "{state}");
    let out = d.docker(&["exec", "one", "ping", "-6", "-c", "2", "-W", "2", &two]);
    assert!(out.status.success(), "{out:?}");
    let route = d.ok(&["exec", "one", "ip", "-6", "route", "show", "default"]);
    assert!(route.contains("via fd85::1"), "{route}");

    // netctl's IPAM: IPv6 pools too, a /64 of the host's unique local prefix unless asked;
    // never one that overlaps a network's.
    let err = d.err(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--ipv6",
        "--subnet",
        "10.86.0.0/24",
        "--subnet",
        "fd85::/64",
        "taken",
    ]);
    assert!(err.contains("overlaps"), "{err}");
    d.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--ipv6",
        "--subnet",
        "10.87.0.0/24",
        "ours",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "three",
        "--network",
        "ours",
        "busybox:local",
        "sleep",
        "300",
    ]);
    let three = field("three", "ours", "GlobalIPv6Address");
    let gw = field("three", "ours", "IPv6Gateway");
    assert!(three.starts_with("fd") && three.ends_with("::2"), "{three}");
    assert!(
        gw.ends_with("::1") && gw[..gw.len() - 1] == three[..three.len() - 1],
        "{gw}"
    );
    let out = d.docker(&["exec", "three", "ping", "-6", "-c", "1", "-W", "2", &gw]);
    assert!(out.status.success(), "{out:?}");
    d.ok(&["rm", "-f", "three"]);
    d.ok(&["network", "rm", "ours"]);
    let pools = sb.state()["docker"]["pools"].clone();
    assert!(
        pools
            .as_object()
            .is_none_or(|p| p.keys().all(|k| !k.starts_with("netctl-fd"))),
        "IPv6 pool left: {pools}"
    );
}
