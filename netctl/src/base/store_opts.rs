//! How the cluster store is reached safely, in dockerd's words (`--cluster-store-opt
//! kv.cacertfile=…`): TLS with the store's CA, a client certificate, a user and password.
//! Plain http only when asked for (`kv.insecure=true`): anyone who reaches an open etcd
//! controls every member's overlay traffic.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// What a host presents to the store and checks of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSecurity {
    /// `kv.cacertfile`: the CA the store's certificate must chain to; TLS when set.
    pub ca: Option<PathBuf>,
    /// `kv.certfile` and `kv.keyfile`: this host's client certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// `kv.username` and `kv.passwordfile`: an etcd user (role-based access).
    pub user: Option<(String, PathBuf)>,
    /// `kv.insecure=true`: plain http, as asked.
    pub insecure: bool,
}

/// The options' names, with the environment variable each also comes from.
pub const OPTIONS: [(&str, &str); 6] = [
    ("kv.cacertfile", "NETCTL_CLUSTER_CACERT"),
    ("kv.certfile", "NETCTL_CLUSTER_CERT"),
    ("kv.keyfile", "NETCTL_CLUSTER_KEY"),
    ("kv.username", "NETCTL_CLUSTER_USERNAME"),
    ("kv.passwordfile", "NETCTL_CLUSTER_PASSWORD_FILE"),
    ("kv.insecure", "NETCTL_CLUSTER_INSECURE"),
];

impl StoreSecurity {
    /// From `opts` (`KEY=VALUE`, as `--cluster-store-opt` or `NETCTL_CLUSTER_STORE_OPT`
    /// gives them, comma-separated) and the variables of [`OPTIONS`]; the options win.
    pub fn parse(opts: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut values: Vec<(&str, String)> = Vec::new();
        for (key, var) in OPTIONS {
            if let Some(v) = env(var) {
                values.push((key, v));
            }
        }
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let Some((key, value)) = opt.split_once('=') else {
                bail!("cluster store option {opt:?} is not KEY=VALUE: use e.g. kv.cacertfile=/etc/netctl/ca.pem");
            };
            let Some((known, _)) = OPTIONS.iter().find(|(k, _)| *k == key.trim()) else {
                let names: Vec<&str> = OPTIONS.iter().map(|(k, _)| *k).collect();
                bail!(
                    "cluster store option {:?} is not known: use {}",
                    key.trim(),
                    names.join(", ")
                );
            };
            values.retain(|(k, _)| k != known);
            values.push((known, value.trim().to_string()));
        }
        let get = |key: &str| {
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        };
        let file = |key: &str| -> Result<Option<PathBuf>> {
            let Some(path) = get(key) else {
                return Ok(None);
            };
            std::fs::metadata(&path)
                .with_context(|| format!("cluster store option {key}={path}: cannot read it"))?;
            Ok(Some(PathBuf::from(path)))
        };
        let insecure = match get("kv.insecure").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                bail!("cluster store option kv.insecure={other} is not valid: use true or false")
            }
        };
        let s = StoreSecurity {
            ca: file("kv.cacertfile")?,
            identity: match (file("kv.certfile")?, file("kv.keyfile")?) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => bail!("cluster store options kv.certfile and kv.keyfile go together: give both, or neither"),
            },
            user: match (get("kv.username"), file("kv.passwordfile")?) {
                (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
                (None, None) => None,
                _ => bail!("cluster store options kv.username and kv.passwordfile go together: give both, or neither"),
            },
            insecure,
        };
        if s.insecure && (s.ca.is_some() || s.identity.is_some()) {
            bail!("cluster store option kv.insecure=true contradicts kv.cacertfile/kv.certfile: drop one");
        }
        if s.ca.is_none() && s.identity.is_some() {
            bail!("cluster store option kv.certfile needs kv.cacertfile (the CA that signed the store's certificate)");
        }
        if s.ca.is_none() && !s.insecure {
            bail!(
                "the cluster store would be reached over plain http, where anyone who reaches it controls the overlay: \
                 give --cluster-store-opt kv.cacertfile=CA.pem (and kv.certfile/kv.keyfile, or kv.username/kv.passwordfile), \
                 or kv.insecure=true to accept plain http"
            );
        }
        Ok(s)
    }

    pub fn tls(&self) -> bool {
        self.ca.is_some()
    }

    /// How the store is reached, for `netctl info` and the daemon's log.
    pub fn describe(&self) -> String {
        let mut how = vec![if self.tls() {
            "TLS".to_string()
        } else {
            "plain http (kv.insecure): no TLS".to_string()
        }];
        if self.identity.is_some() {
            how.push("client certificate".into());
        }
        if let Some((user, _)) = &self.user {
            how.push(format!("user {user}"));
        }
        how.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &str, env: &[(&str, &str)]) -> Result<StoreSecurity> {
        StoreSecurity::parse(opts, |k| {
            env.iter()
                .find(|(e, _)| *e == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn options_and_their_rules() {
        let f = "/proc/self/status"; // a file that exists
        let s = parse(
            &format!("kv.cacertfile={f}, kv.certfile={f},kv.keyfile={f}"),
            &[],
        )
        .unwrap();
        assert!(s.tls() && s.identity.is_some() && !s.insecure);
        assert_eq!(s.describe(), "TLS, client certificate");
        // The environment, overridden by the options.
        let s = parse(
            "kv.username=bob",
            &[
                ("NETCTL_CLUSTER_CACERT", f),
                ("NETCTL_CLUSTER_USERNAME", "al"),
                ("NETCTL_CLUSTER_PASSWORD_FILE", f),
            ],
        )
        .unwrap();
        assert_eq!(s.user.as_ref().unwrap().0, "bob");
        assert!(parse("kv.insecure=true", &[]).unwrap().insecure);
        for (opts, want) in [
            ("", "plain http"),
            ("kv.cacertfile=/nonexistent/ca.pem", "cannot read it"),
            (&format!("kv.cacertfile={f},kv.certfile={f}"), "go together"),
            (
                &format!("kv.certfile={f},kv.keyfile={f}"),
                "needs kv.cacertfile",
            ),
            (
                &format!("kv.insecure=true,kv.cacertfile={f}"),
                "contradicts",
            ),
            ("kv.insecure=yes", "true or false"),
            ("kv.cacert=x", "not known"),
            ("kv.cacertfile", "KEY=VALUE"),
            (&format!("kv.cacertfile={f},kv.username=bob"), "go together"),
        ] {
            let e = parse(opts, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{opts}: {e}");
        }
    }
}
