//! Names (issue 10): each container's own /etc/hosts, /etc/resolv.conf and hostname; the
//! embedded DNS on user-defined networks, asked at 127.0.0.11 as a container does; the
//! daemon that serves it; legacy links, --expose and -P; bad input.

use std::time::{Duration, Instant};

use netctl_tests::{require_sandbox, Sandbox};

/// `dig +short NAME` (TYPE A unless given) from a container, through its resolv.conf
/// (127.0.0.11 on user-defined networks): the answer lines.
fn dig(sb: &Sandbox, container: &str, args: &str) -> String {
    let out = sb.container_sh(container, &format!("dig +short +time=2 +tries=1 {args}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The status dig reports (NOERROR, NXDOMAIN, REFUSED, SERVFAIL…).
fn dig_status(sb: &Sandbox, container: &str, args: &str) -> String {
    let out = sb.container_sh(
        container,
        &format!("dig +time=2 +tries=1 {args} | sed -n 's/.*status: \\([A-Z]*\\).*/\\1/p'"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A detached container that just sleeps.
fn idle(sb: &Sandbox, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend(extra);
    args.extend(["--", "sleep", "600"]);
    sb.netctl_ok(&args).trim().to_string()
}

fn ip_of(sb: &Sandbox, container: &str, network: &str) -> String {
    let st = sb.state();
    st["containers"][container]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network"] == network)
        .map(|e| e["ip"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn containers_resolve_names_of_their_networks_only() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // The world's DNS knows a `db` and an `api.github.com` of its own.
    let _upstream = sb.upstream_dns(&[("db", "192.0.2.66"), ("api.github.com", "192.0.2.67")]);
    sb.host_dns(&[&sb.outside_ip.clone()]);
    sb.netctl_ok(&["network", "create", "front"]);
    sb.netctl_ok(&["network", "create", "back"]);
    let web_id = idle(
        &sb,
        "web",
        &["--network", "front", "--network-alias", "site"],
    );
    idle(
        &sb,
        "web2",
        &["--network", "front", "--network-alias", "site"],
    );
    idle(&sb, "db", &["--network", "back"]);
    idle(&sb, "client", &["--network", "front"]);
    let web = ip_of(&sb, "web", "front");
    let web2 = ip_of(&sb, "web2", "front");
    let inspect: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["inspect", "web"])).unwrap();
    assert_eq!(
        inspect[0]["NetworkSettings"]["Networks"]["front"]["Aliases"],
        serde_json::json!(["site"])
    );
    assert_eq!(inspect[0]["Config"]["Hostname"], &web_id[..12]);

    // A container's resolv.conf points at Docker's 127.0.0.11.
    let rc = sb.container_sh("client", "cat /etc/resolv.conf");
    let rc = String::from_utf8_lossy(&rc.stdout).to_string();
    assert!(rc.contains("nameserver 127.0.0.11\n"), "{rc}");
    assert!(rc.contains("options ndots:0"), "{rc}");

    assert_eq!(dig(&sb, "client", "web"), web);
    assert_eq!(dig(&sb, "client", "web.front"), web);
    assert_eq!(dig(&sb, "client", &web_id[..12]), web, "short ID");
    let mut both: Vec<String> = dig(&sb, "client", "site")
        .lines()
        .map(str::to_string)
        .collect();
    both.sort();
    let mut want = vec![web.clone(), web2.clone()];
    want.sort();
    assert_eq!(both, want, "one alias on two containers: both addresses");
    // PTR: the address back to name.network.
    let rev = dig(&sb, "client", &format!("-x {web}"));
    assert_eq!(rev, "web.front.");
    // db is on back only: front's resolver does not answer for it, the world's DNS does (a
    // name on another network never hides a real one), and so for back's alias
    // api.github.com; NAME.NETWORK of a network one is not on is forwarded too.
    assert_eq!(dig(&sb, "client", "db"), "192.0.2.66");
    sb.netctl_ok(&[
        "network",
        "connect",
        "--alias",
        "api.github.com",
        "back",
        "web2",
    ]);
    assert_eq!(dig(&sb, "client", "api.github.com"), "192.0.2.67");
    assert_eq!(
        dig(&sb, "db", "api.github.com"),
        ip_of(&sb, "web2", "back"),
        "its own network wins"
    );
    assert_eq!(dig_status(&sb, "client", "db.back"), "NXDOMAIN");
    // NAME.NETWORK of its own network that has no such container: not forwarded.
    assert_eq!(dig_status(&sb, "client", "nobody.front"), "NXDOMAIN");
    // The host itself (not a container) gets nothing from the resolver.
    let gw = sb.state()["networks"]["front"]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let out = sb.host_sh(&format!(
        "dig +time=2 +tries=1 @{gw} web | grep -o 'status: [A-Z]*'"
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "status: REFUSED"
    );
    // getaddrinfo (curl, ping…) resolves through the same path.
    let out = sb.container_sh("client", "getent hosts web");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&web),
        "{out:?}"
    );
}

#[test]
fn curl_by_name_on_a_user_defined_network() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "front"]);
    sb.whoami("web", Some("front"), &[], 80);
    let out = sb.netctl_ok(&[
        "run",
        "--name",
        "probe",
        "--network",
        "front",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "5",
        "http://web/",
    ]);
    let client: std::net::Ipv4Addr = out.trim().parse().expect("whoami answers the address");
    assert!(client
        .to_string()
        .starts_with(ip_of(&sb, "web", "front").rsplit_once('.').unwrap().0));
}

#[test]
fn removed_and_disconnected_containers_stop_resolving_at_once() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    // Names the resolver no longer knows go upstream: an NXDOMAIN-for-all server here.
    let _upstream = sb.upstream_dns(&[]);
    sb.host_dns(&[&sb.outside_ip.clone()]);
    sb.netctl_ok(&["network", "create", "front"]);
    sb.netctl_ok(&["network", "create", "other"]);
    idle(&sb, "web", &["--network", "front"]);
    idle(&sb, "api", &["--network", "other"]);
    sb.netctl_ok(&["network", "connect", "--alias", "svc", "front", "api"]);
    idle(&sb, "client", &["--network", "front"]);
    let api = ip_of(&sb, "api", "front");
    assert_eq!(dig(&sb, "client", "svc"), api);
    assert_eq!(dig(&sb, "client", "api"), api);

    sb.netctl_ok(&["network", "disconnect", "front", "api"]);
    let t = Instant::now();
    assert_eq!(dig_status(&sb, "client", "api"), "NXDOMAIN");
    assert_eq!(dig_status(&sb, "client", "svc"), "NXDOMAIN");
    sb.netctl_ok(&["rm", "-f", "web"]);
    assert_eq!(dig_status(&sb, "client", "web"), "NXDOMAIN");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn each_container_has_its_own_hosts_resolv_conf_and_hostname() {
    require_sandbox!();
    let sb = Sandbox::new();
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    sb.netctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "front"]);
    let id = idle(
        &sb,
        "web",
        &[
            "--network",
            "front",
            "--add-host",
            "db.example:192.0.2.9",
            "--add-host",
            "host.docker.internal:host-gateway",
        ],
    );
    idle(&sb, "named", &["--network", "front", "--hostname", "box1"]);
    let sh = |c: &str, s: &str| String::from_utf8_lossy(&sb.container_sh(c, s).stdout).to_string();
    // The short ID is the default hostname, in the UTS namespace and the files; exec sees
    // the same as the container's own process.
    assert_eq!(sh("web", "hostname").trim(), &id[..12]);
    assert_eq!(sh("web", "cat /etc/hostname").trim(), &id[..12]);
    let pid = sb.state()["containers"]["web"]["pid"].as_u64().unwrap();
    let uts = |pid: &str| {
        let out = sb.host_sh(&format!("nsenter -t {pid} -u hostname"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        uts(&pid.to_string()),
        &id[..12],
        "the run process's own hostname"
    );
    assert_eq!(sh("named", "hostname").trim(), "box1");
    let hosts = sh("web", "cat /etc/hosts");
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains("192.0.2.9\tdb.example\n"), "{hosts}");
    assert!(
        hosts.contains("10.61.0.1\thost.docker.internal\n"),
        "host-gateway is the network's gateway: {hosts}"
    );
    assert!(
        hosts.contains(&format!("10.61.0.2\t{}\n", &id[..12])),
        "{hosts}"
    );
    let out = sb.container_sh("web", "getent hosts db.example");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("192.0.2.9"));
    // The host's files and hostname are untouched, and its processes still see them.
    assert_eq!(
        std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        host_hosts
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
        host_name
    );
    let out = sb.host_sh("cat /etc/hosts; hostname");
    let host_view = String::from_utf8_lossy(&out.stdout);
    assert!(!host_view.contains("db.example") && !host_view.contains(&id[..12]));
    // --network none has its own files too; --network host has the host's.
    let out = sb.netctl_ok(&[
        "run",
        "--name",
        "iso",
        "--network",
        "none",
        "--",
        "hostname",
    ]);
    assert_eq!(out.trim().len(), 12, "the short ID: {out}");
    let out = sb.netctl_ok(&["run", "--name", "h", "--network", "host", "--", "hostname"]);
    assert_eq!(out.trim(), host_name.trim());
    // A network connected later shows in the running container's /etc/hosts.
    sb.netctl_ok(&["network", "create", "--subnet", "10.62.0.0/24", "back"]);
    sb.netctl_ok(&["network", "connect", "back", "web"]);
    assert!(sh("web", "cat /etc/hosts").contains(&format!("10.62.0.2\t{}\n", &id[..12])));
}

#[test]
fn default_network_gets_upstream_servers_not_the_embedded_dns() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    let _up = sb.upstream_dns(&[("outside.example", "192.0.2.77")]);
    let up = sb.outside_ip.clone();
    // Loopback servers of the host (a systemd-resolved stub) mean nothing in a container.
    sb.host_dns(&["127.0.0.53", &up]);
    idle(&sb, "plain", &[]);
    let rc = sb.container_sh("plain", "cat /etc/resolv.conf");
    let rc = String::from_utf8_lossy(&rc.stdout).to_string();
    assert!(rc.contains(&format!("nameserver {up}\n")), "{rc}");
    assert!(!rc.contains("127.0.0"), "{rc}");
    assert_eq!(dig(&sb, "plain", "outside.example"), "192.0.2.77");
    // No resolver: the daemon (which follows the host's interfaces) listens on no port 53.
    let listening = sb.host_sh("ss -lunH; ss -ltnH");
    assert!(
        !String::from_utf8_lossy(&listening.stdout).contains(":53 "),
        "{}",
        String::from_utf8_lossy(&listening.stdout)
    );
    idle(&sb, "own", &["--dns", "192.0.2.53"]);
    let rc = sb.container_sh("own", "cat /etc/resolv.conf");
    assert!(String::from_utf8_lossy(&rc.stdout).contains("nameserver 192.0.2.53\n"));
}

#[test]
fn other_names_are_forwarded_to_the_containers_servers_internal_networks_never() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    let _up = sb.upstream_dns(&[("outside.example", "192.0.2.77")]);
    let up = sb.outside_ip.clone();
    sb.netctl_ok(&["network", "create", "front"]);
    sb.netctl_ok(&["network", "create", "--internal", "vault"]);
    // No host servers: only --dns leads anywhere.
    idle(&sb, "with-dns", &["--network", "front", "--dns", &up]);
    idle(&sb, "without", &["--network", "front"]);
    assert_eq!(dig(&sb, "with-dns", "outside.example"), "192.0.2.77");
    assert_eq!(dig(&sb, "with-dns", "+tcp outside.example"), "192.0.2.77");
    assert_eq!(dig_status(&sb, "with-dns", "nothing.example"), "NXDOMAIN");
    assert_eq!(dig_status(&sb, "without", "outside.example"), "SERVFAIL");
    // The host's resolv.conf servers, read again when it changes.
    sb.host_dns(&[&up]);
    sb.netctl_ok(&["sync", "-q"]);
    assert_eq!(dig(&sb, "without", "outside.example"), "192.0.2.77");
    // Internal: local names only.
    idle(&sb, "safe", &["--network", "vault", "--dns", &up]);
    idle(&sb, "peer", &["--network", "vault"]);
    assert_eq!(dig(&sb, "safe", "peer"), ip_of(&sb, "peer", "vault"));
    assert_eq!(dig_status(&sb, "safe", "outside.example"), "NXDOMAIN");
}

#[test]
fn one_daemon_started_on_demand_restarted_when_killed_gone_when_unneeded() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_FAILPOINT", "999"); // never reached; the daemon must not inherit it
    assert_eq!(sb.daemon_pid(), None);
    sb.netctl_ok(&["network", "create", "front"]);
    let pid = sb.daemon_pid().expect("network create started the daemon");
    // In the sandbox's host namespace, not the machine's.
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    let host_ns = sb.host_sh("readlink /proc/self/ns/net");
    assert_eq!(
        ns(pid).to_string_lossy(),
        String::from_utf8_lossy(&host_ns.stdout).trim()
    );
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains("NETCTL_FAILPOINT"));
    let log = sb.state_dir.join("daemon.log");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Never two: a second one started by hand leaves at once.
    let out = sb.netctl(&["daemon"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert_eq!(sb.daemon_pid(), Some(pid));

    idle(&sb, "web", &["--network", "front"]);
    idle(&sb, "client", &["--network", "front"]);
    let web = ip_of(&sb, "web", "front");
    assert_eq!(dig(&sb, "client", "web"), web);
    // Killed: the next command (here sync) starts a new one, which answers correctly.
    sb.host_sh(&format!("kill -9 {pid}"));
    for _ in 0..100 {
        if sb.daemon_pid().is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dig(&sb, "client", "web").contains(&web),
        "no resolver while it is dead"
    );
    sb.netctl_ok(&["sync", "-q"]);
    let again = sb.daemon_pid().expect("sync restarted it");
    assert_ne!(again, pid);
    assert_eq!(dig(&sb, "client", "web"), web);
    // Any command that finds it dead restarts it too.
    sb.host_sh(&format!("kill -9 {again}"));
    std::thread::sleep(Duration::from_millis(100));
    sb.netctl_ok(&["rm", "-f", "web"]);
    assert!(sb.daemon_pid().is_some());
    assert!(
        !dig(&sb, "client", "web").contains(&web),
        "removed: never its address"
    );

    // No network needs it: it exits by itself.
    sb.netctl_ok(&["rm", "-f", "client"]);
    sb.netctl_ok(&["network", "rm", "front"]);
    let t = Instant::now();
    while sb.daemon_pid().is_some() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sb.daemon_pid(),
        None,
        "the daemon outlived its last network"
    );
}

#[test]
fn legacy_links_expose_and_publish_all_with_icc_off() {
    require_sandbox!();
    let mut sb = Sandbox::new();
    sb.env("NETCTL_ICC", "false");
    // db serves 5432 (exposed) and 8080 (not exposed).
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--expose",
        "5432",
        "--expose",
        "7000-7001/udp",
        "--",
        "python3",
        "-c",
        netctl_tests::WHOAMI,
        "0.0.0.0",
        "5432",
    ]);
    sb.wait_listening("db", 5432);
    sb.container_sh(
        "db",
        &format!(
            "python3 -c '{}' 0.0.0.0 8080 >/dev/null 2>&1 &",
            netctl_tests::WHOAMI
        ),
    );
    sb.wait_listening("db", 8080);
    let db = ip_of(&sb, "db", "bridge");
    assert_eq!(
        sb.state()["networks"]["bridge"]["icc"],
        serde_json::json!(false),
        "NETCTL_ICC=false made the default network without ICC"
    );
    let ps = sb.netctl_ok(&["ps"]);
    assert!(ps.contains("5432/tcp, 7000/udp, 7001/udp"), "{ps}");

    // The link: a hosts entry (alias, hostname, name) and Docker's variables.
    let out = sb.netctl_ok(&[
        "run", "--name", "web", "--link", "db:mydb", "--", "sh", "-c",
        "grep mydb /etc/hosts; echo $MYDB_NAME $MYDB_PORT $MYDB_PORT_5432_TCP_ADDR $MYDB_PORT_7000_UDP_PROTO; \
         curl -sf --max-time 3 http://mydb:5432/ >/dev/null && echo linked-port-ok; \
         curl -sf --max-time 2 http://mydb:8080/ >/dev/null && echo other-port-open; true",
    ]);
    let db_id = sb.state()["containers"]["db"]["id"].as_str().unwrap()[..12].to_string();
    assert!(out.contains(&format!("{db}\tmydb {db_id} db")), "{out}");
    assert!(
        out.contains(&format!("/web/mydb tcp://{db}:5432 {db} udp")),
        "{out}"
    );
    assert!(
        out.contains("linked-port-ok"),
        "a link opens the exposed port: {out}"
    );
    assert!(!out.contains("other-port-open"), "and nothing else: {out}");
    // Without a link ICC=false isolates.
    let out = sb.netctl(&[
        "run",
        "--name",
        "stranger",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "2",
        &format!("http://{db}:5432/"),
    ]);
    assert!(!out.status.success(), "icc=false: no link, no way");

    // -P: every exposed port on an ephemeral host port, as `port` shows.
    sb.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--expose",
        "5432",
        "-P",
        "--",
        "python3",
        "-c",
        netctl_tests::WHOAMI,
        "0.0.0.0",
        "5432",
    ]);
    sb.wait_listening("pub", 5432);
    let port = sb.netctl_ok(&["port", "pub", "5432"]);
    let host_port: u16 = port.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(host_port >= 1024, "{port}");
    let inspect: serde_json::Value =
        serde_json::from_str(&sb.netctl_ok(&["inspect", "pub", "db"])).unwrap();
    assert_eq!(
        inspect[0]["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"],
        host_port.to_string()
    );
    assert!(
        inspect[1]["Config"]["ExposedPorts"]["7001/udp"].is_object(),
        "{inspect}"
    );
    let body = sb.curl_from_outside(&format!("http://{}:{host_port}/", sb.host_ip));
    assert_eq!(body.as_deref(), Some(sb.outside_ip.as_str()));
}

#[test]
fn bad_name_options_are_one_line_and_change_nothing() {
    require_sandbox!();
    let sb = Sandbox::new();
    sb.netctl_ok(&["network", "create", "front"]);
    idle(&sb, "c", &["--network", "front"]);
    let state = sb.state_text();
    let handles = sb.netns_handles();
    let cases: &[(&[&str], &str)] = &[
        (&["--hostname=-bad"], "invalid hostname"),
        (&["--hostname", &"a".repeat(70)], "invalid hostname"),
        (&["--hostname", "under_score"], "invalid hostname"),
        (
            &["--network", "front", "--network-alias", "a b"],
            "invalid --network-alias",
        ),
        (&["--network-alias", "x"], "user defined networks"),
        (&["--add-host", "nocolon"], "invalid --add-host"),
        (&["--add-host", "db:300.1.1.1"], "invalid --add-host"),
        (&["--add-host", "bad name:1.2.3.4"], "invalid --add-host"),
        (&["--dns", "dns.example"], "invalid --dns"),
        (&["--link", "nosuch"], "no such container"),
        (&["--link", "c:bad_alias"], "invalid --link alias"),
        (&["--link", "c"], "does not belong to the default network"),
        (&["--expose", "0"], "invalid --expose"),
        (&["--expose", "80/sctp"], "--expose"),
        (&["--expose", "90-80", "-P"], "invalid --expose"),
        (&["--network", "host", "--hostname", "h"], "--network host"),
    ];
    for (extra, why) in cases {
        let mut args = vec!["run", "--name", "bad"];
        args.extend_from_slice(extra);
        args.extend(["--", "true"]);
        let out = sb.netctl(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    for alias in ["a_b", "-x", ""] {
        let flag = format!("--alias={alias}");
        let out = sb.netctl(&["network", "connect", &flag, "bridge", "c"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{alias}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("invalid --alias"), "{err}");
    }
    let err = sb.netctl_err(&["network", "connect", "--alias", "ok", "bridge", "c"]);
    assert!(err.contains("user defined networks"), "{err}");
    assert_eq!(sb.state_text(), state, "nothing changed");
    assert_eq!(sb.netns_handles(), handles);
}
