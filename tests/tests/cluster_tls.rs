//! The cluster store reached only as configured: TLS with the store's CA, client certificates,
//! etcd users and their roles; plain http only when asked for. Certificates are made by the
//! test; etcd runs in the cluster's sandbox.

use netctl_tests::{cluster::Cluster, require_sandbox};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `network create -d overlay` on host `i` with the store options `opts` fails in one line
/// that contains `want`.
fn refused(c: &Cluster, i: usize, opts: &str, want: &str) {
    let out = c
        .netctl_cmd(
            i,
            &[
                "network",
                "create",
                "-d",
                "overlay",
                "--subnet",
                "10.62.0.0/24",
                "x",
            ],
        )
        .env("NETCTL_CLUSTER_STORE_OPT", opts)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success() && err.contains(want), "{opts}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{opts}: {err}");
}

#[test]
fn tls_with_client_certificates_and_nothing_else() {
    require_sandbox!();
    let c = Cluster::with_tls(2, true);
    let tls = c.tls.as_ref().unwrap();
    // With the CA and a client certificate: an overlay across two hosts.
    c.overlay(0, &["--subnet", "10.61.0.0/24", "sec"]);
    c.sleeper(0, "a", "sec");
    c.sleeper(1, "b", "sec");
    let a: serde_json::Value = serde_json::from_str(&c.netctl_ok(0, &["inspect", "a"])).unwrap();
    let a = a[0]["NetworkSettings"]["Networks"]["sec"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    // The other host hears of a within a moment (its agent's watch): a few tries.
    let ping = c.netctl(1, &["exec", "b", "--", "ping", "-c3", "-W2", &a]);
    assert!(ping.status.success(), "{}", stderr_of(&ping));
    let info = c.netctl_ok(0, &["info"]);
    assert!(info.contains("TLS, client certificate"), "{info}");

    // Each wrong setting is one line saying what to do, and creates nothing.
    let cases: Vec<(String, &str)> = vec![
        // No options at all: plain http is refused before anything is sent.
        (String::new(), "kv.insecure=true"),
        // Plain http to a TLS port.
        ("kv.insecure=true".into(), "unreachable"),
        // The CA but no client certificate: etcd wants one.
        (
            format!("kv.cacertfile={}", tls.file("ca.pem")),
            "unreachable",
        ),
        // A certificate from another CA.
        (
            format!(
                "kv.cacertfile={},kv.certfile={},kv.keyfile={}",
                tls.file("ca.pem"),
                tls.file("rogue.pem"),
                tls.file("rogue-key.pem")
            ),
            "unreachable",
        ),
        // A store whose certificate the given CA did not sign.
        (
            format!(
                "kv.cacertfile={},kv.certfile={},kv.keyfile={}",
                tls.file("otherca.pem"),
                tls.file("client.pem"),
                tls.file("client-key.pem")
            ),
            "unreachable",
        ),
        (
            format!("kv.cacertfile={}", tls.file("missing.pem")),
            "cannot read it",
        ),
    ];
    let before = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/"]);
    for (opts, want) in cases {
        refused(&c, 1, &opts, want);
    }
    let after = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/"]);
    assert_eq!(
        before.stdout, after.stdout,
        "a refused command wrote to the store"
    );
    assert!(!c.netctl_ok(1, &["network", "ls"]).contains(" x "));
}

#[test]
fn etcd_users_and_roles_decide_what_a_host_may_do() {
    require_sandbox!();
    let mut c = Cluster::with_tls(1, false);
    // Users: root (administration), netctl (read and write under /netctl/), reader (read).
    let dir = c.tls.as_ref().unwrap().dir.clone();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good = file("netctl.pw", "s3cret\n");
    let bad = file("wrong.pw", "guess\n");
    let reader = file("reader.pw", "r3ad\n");
    for args in [
        vec!["user", "add", "root", "--new-user-password=rootpw"],
        vec!["user", "add", "netctl", "--new-user-password=s3cret"],
        vec!["user", "add", "reader", "--new-user-password=r3ad"],
        vec!["role", "add", "netctl"],
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "netctl",
            "--prefix=true",
            "readwrite",
            "/netctl/",
        ],
        vec![
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "read",
            "/netctl/",
        ],
        vec!["user", "grant-role", "netctl", "netctl"],
        vec!["user", "grant-role", "reader", "reader"],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let out = c.etcdctl(&args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    c.etcdctl_user = Some("root:rootpw".into());
    let ca = c.tls.as_ref().unwrap().file("ca.pem");
    let as_user = |user: &str, pw: &str| {
        format!("kv.cacertfile={ca},kv.username={user},kv.passwordfile={pw}")
    };
    // Without a user, with a wrong password, as a reader: refused in one line.
    for (opts, want) in [
        (format!("kv.cacertfile={ca}"), "requires a user"),
        (as_user("netctl", &bad), "authentication failed"),
        (as_user("reader", &reader), "permission denied"),
    ] {
        refused(&c, 0, &opts, want);
    }
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/networks/"]);
    assert!(keys.stdout.is_empty(), "{keys:?}");
    // The netctl user does everything a member does.
    c.env
        .push(("NETCTL_CLUSTER_STORE_OPT".into(), as_user("netctl", &good)));
    c.overlay(0, &["--subnet", "10.63.0.0/24", "ok"]);
    c.sleeper(0, "a", "ok");
    let info = c.netctl_ok(0, &["info"]);
    assert!(info.contains("TLS, user netctl"), "{info}");
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netctl/v1/"]);
    assert!(!keys.stdout.is_empty(), "{keys:?}");
}
