//! `cargo xtask …`: the project's own commands. `setup` installs what a fresh machine lacks;
//! every other command runs it first.

mod bench;
mod demo;
mod fuzz;
mod kernels;
mod lint;
mod setup;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: LLVM 22, bpf-linker, rust-src, test and benchmark tools
    Setup,
    /// Build netctl (with its eBPF programs embedded)
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run netctl with ARGS as root; with no ARGS run the demo in a sandbox
    BuildAndRun {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark netctl against Docker's iptables layout, an nftables map and plain routing
    Bench {
        /// A reduced set (about two minutes)
        #[arg(long)]
        quick: bool,
        /// Only these sections (repeatable): dataplane, host-local, overlay, dns, cni, docker,
        /// busy; default all
        #[arg(long)]
        only: Vec<String>,
    },
    /// Fuzz the parsers of outside input (fuzz/: DNS, CNI, plugin HTTP/JSON, etcd records,
    /// -p, -o, run's name options, store options), each target for a bounded time
    Fuzz {
        /// Seconds per target
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all of fuzz/fuzz_targets)
        targets: Vec<String>,
    },
    /// Check that netctl's imports follow its layers (docs/ARCHITECTURE.md) and run in no circle
    Lint,
    /// Run the whole suite: format and lint checks, unit tests, eBPF program tests, end-to-end
    Test {
        /// Instead of the suite: boot Debian's cloud kernels in QEMU and run the program
        /// tests and the demo inside (5.10, 6.1, 6.12, newest, comma-separated, or all)
        #[arg(long, value_name = "LIST")]
        kernel: Option<String>,
        /// Extra arguments for `cargo test` (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Lint => lint::run(&workspace_root()),
        Cmd::Build { release } => {
            setup::run()?;
            build(release)
        }
        Cmd::BuildAndRun { args } => {
            setup::run()?;
            build(false)?;
            let bin = netctl_bin(false);
            if args.is_empty() {
                demo::run(&bin)
            } else {
                let status = Command::new(&bin).args(&args).status()?;
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        Cmd::Bench { quick, only } => {
            setup::run()?;
            build(true)?;
            sh(cargo().args([
                "build",
                "--release",
                "--package",
                "xtask",
                "--bin",
                "loadgen",
            ]))?;
            let loadgen = workspace_root().join("target/release/loadgen");
            bench::run(&netctl_bin(true), &loadgen, quick, &only)
        }
        Cmd::Fuzz { seconds, targets } => {
            setup::run()?;
            setup::cargo_fuzz()?;
            fuzz::run(seconds, &targets)
        }
        Cmd::Test { kernel, args } => {
            setup::run()?;
            match kernel {
                Some(list) => kernels::run(&list),
                None => test(&args),
            }
        }
    }
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn netctl_bin(release: bool) -> std::path::PathBuf {
    workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("netctl")
}

/// Runs a command, echoing it, and fails if it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn build(release: bool) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--package", "netctl"]);
    if release {
        c.arg("--release");
    }
    sh(&mut c)
}

/// What `NETCTL_FEATURES_DENY` takes away in the suite's second pass: what kernels before
/// 5.17 (and 6.6 for TCX) lack, less the kernel-drop tracer that the tracing tests need.
const FALLBACKS: &str = "tcx,loop,atomics,xdp_adjust_meta,xdp_load_bytes,sk_storage,check_mtu";

/// Test binaries the forced fallbacks change nothing for, left out of the second pass: the
/// state database, the daemon's saved settings and the cluster store's TLS never touch
/// the datapath's choices, and `kernels` sets `NETCTL_FEATURES_DENY` itself, test by test.
/// (The unit tests are pure logic.)
const SAME_EITHER_WAY: [&str; 4] = ["state_db", "daemon_settings", "cluster_tls", "kernels"];

/// The second pass's test binaries: the program tests and every end-to-end suite but those.
fn fallback_targets() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for dir in ["netctl/tests", "tests/tests"] {
        for e in std::fs::read_dir(workspace_root().join(dir))? {
            let p = e?.path();
            let Some(name) = p.file_stem().and_then(|n| n.to_str()) else {
                continue;
            };
            if p.extension().is_some_and(|x| x == "rs") && !SAME_EITHER_WAY.contains(&name) {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One `cargo test` with `deny` in the environment — of the workspace, or of the test
/// binaries `only` names — its output passed through, every test binary's result line added
/// up (the last binary's line alone is often a doc-test run with 0 tests). Returns (passed,
/// failed, skipped) and whether it exited 0.
fn cargo_test(args: &[String], deny: &str, only: &[String]) -> Result<([u64; 3], bool)> {
    let mut cmd = cargo();
    cmd.arg("test");
    if only.is_empty() {
        cmd.arg("--workspace");
    } else {
        cmd.args(["--package", "netctl", "--package", "netctl-tests"]);
        for t in only {
            cmd.args(["--test", t]);
        }
    }
    cmd.args(args)
        .env("NETCTL_BIN", netctl_bin(false))
        .env("NETCTL_FEATURES_DENY", deny)
        .stdout(std::process::Stdio::piped());
    eprintln!("+ {}", show(&cmd));
    let mut child = cmd.spawn().context("starting cargo test")?;
    let mut counts = [0u64; 3];
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for line in std::io::BufRead::lines(stdout) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word).map(str::trim))
                    .and_then(|n| n.rsplit(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            for (c, word) in counts.iter_mut().zip(["passed", "failed", "ignored"]) {
                *c += count(word);
            }
        }
    }
    let status = child.wait()?;
    Ok((counts, status.success()))
}

fn test(args: &[String]) -> Result<()> {
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    lint::run(&workspace_root())?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    build(false)?;
    // Twice: on the kernel as it is, then with the older kernels' fallbacks forced (netlink
    // filters instead of TCX, the _compat programs, no XDP hand-off), so both paths stay
    // tested on any machine — the second time the binaries whose subject they change. The
    // same binaries: only the environment differs.
    let mut totals = [0u64; 3];
    let mut failures = Vec::new();
    let passes = [
        ("as the kernel is", "", Vec::new()),
        ("fallbacks forced", FALLBACKS, fallback_targets()?),
    ];
    for (pass, deny, only) in passes {
        eprintln!("xtask: test pass: {pass} (NETCTL_FEATURES_DENY={deny})");
        let (counts, ok) = cargo_test(args, deny, &only)?;
        println!(
            "\n{pass}: {} passed, {} failed, {} skipped",
            counts[0], counts[1], counts[2]
        );
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
        if !ok || counts[1] > 0 {
            failures.push(pass);
        }
    }
    println!("\nall test binaries, both passes:");
    println!(
        "{} passed, {} failed, {} skipped",
        totals[0], totals[1], totals[2]
    );
    if !failures.is_empty() {
        bail!("cargo test failed ({})", failures.join(", "));
    }
    Ok(())
}
