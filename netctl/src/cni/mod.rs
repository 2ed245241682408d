//! netctl as a CNI plugin. When `CNI_COMMAND` is set the binary speaks CNI: the network
//! configuration on stdin, the result (or the spec's error object) on stdout. Installing it
//! is a link named `netctl` in the runtime's plugin directory and `"type": "netctl"` in the
//! configuration. A CNI container is an ordinary netctl container whose namespace is the
//! runtime's: same state, same lock, same datapath, names and tools.

pub mod commands;
pub mod spec;

use std::io::Read;

use serde_json::Value;
use spec::{Code, Command, Env, Error, NetConf};

/// Runs one CNI command; returns the exit status.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are written in the caller's version when it can be read.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| spec::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| spec::SUPPORTED[spec::SUPPORTED.len() - 1].to_string());
    let result = read
        .map_err(|e| Error::new(Code::Io, format!("reading the configuration: {e}")))
        .and_then(|_| run(&stdin));
    match result {
        Ok(Some(out)) => {
            println!("{out}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", e.to_json(&version));
            // The whole chain for a person reading the runtime's log.
            let text = if e.details.is_empty() {
                &e.msg
            } else {
                &e.details
            };
            eprintln!("netctl (CNI): {text}");
            1
        }
    }
}

fn run(stdin: &[u8]) -> spec::Result<Option<Value>> {
    let env = Env::read(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        let asked: Value = serde_json::from_slice(stdin).unwrap_or_default();
        let asked = asked["cniVersion"].as_str().unwrap_or(spec::SUPPORTED[2]);
        return Ok(Some(spec::version_info(asked)));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => commands::add(&env, &conf).map(Some),
        Command::Del => commands::del(&env, &conf).map(|_| None),
        Command::Check => commands::check(&env, &conf).map(|_| None),
        Command::Gc => commands::gc(&conf).map(|_| None),
        Command::Status => commands::status().map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}
