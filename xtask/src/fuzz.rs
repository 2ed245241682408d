//! `cargo xtask fuzz`: builds the cargo-fuzz crate (`fuzz/`) with nightly and runs each
//! target for a bounded time, one line per target. A crash, a timeout or running out of
//! memory fails the command, naming the input libFuzzer saved.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{sh, workspace_root};

/// What one input may take: a slower one is a failure (the quadratic `-p` allocation was
/// found this way), as is a target that outgrows the memory a CI machine has.
const TIMEOUT_S: u32 = 10;
const RSS_LIMIT_MB: u32 = 2048;

/// The targets: one file each in fuzz/fuzz_targets.
fn all_targets(fuzz: &Path) -> Result<Vec<String>> {
    let mut t: Vec<String> = fs::read_dir(fuzz.join("fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    t.sort();
    Ok(t)
}

/// `cargo +nightly fuzz …` through rustup's proxy: the `cargo` this xtask was started by
/// is the stable toolchain's own, which takes no `+nightly`.
fn cargo_fuzz(fuzz: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .arg("fuzz")
        .current_dir(fuzz.parent().expect("fuzz/ has a parent"));
    for var in ["CARGO", "RUSTC", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"] {
        c.env_remove(var);
    }
    // No eBPF object in the targets' netctl (they never load programs): see netctl/build.rs.
    c.env("NETCTL_NO_EBPF", "1");
    c
}

/// Release code with overflow checks; no AddressSanitizer (the code is safe Rust, and
/// without it the build of netctl's dependencies takes about half the time).
const BUILD: [&str; 4] = ["-O", "--debug-assertions", "--sanitizer", "none"];

pub fn run(seconds: u64, asked: &[String]) -> Result<()> {
    let fuzz = workspace_root().join("fuzz");
    let all = all_targets(&fuzz)?;
    if let Some(t) = asked.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {t}: there are {}", all.join(", "));
    }
    let targets = if asked.is_empty() { &all } else { asked };
    let start = std::time::Instant::now();
    sh(cargo_fuzz(&fuzz).arg("build").args(BUILD))?;
    eprintln!(
        "xtask: fuzz targets built in {} s",
        start.elapsed().as_secs()
    );
    // As many targets at once as there are cores (libFuzzer runs one thread each).
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queue = std::sync::Mutex::new(targets.iter().enumerate());
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(targets.len()) {
            s.spawn(|| loop {
                let Some((i, t)) = queue.lock().unwrap().next() else {
                    return;
                };
                let r = run_one(&fuzz, t, seconds);
                done.lock().unwrap().push((i, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|d| d.0);
    let mut failed = Vec::new();
    for ((_, r), t) in done.into_iter().zip(targets) {
        let (runs, problem) = r?;
        let result = problem.as_deref().unwrap_or("ok");
        println!(
            "fuzz {t:<12} {runs:>10} runs ({:>6}/s)  {result}",
            runs / seconds.max(1)
        );
        if problem.is_some() {
            failed.push(t.as_str());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) failed: {} (reproduce: cargo +nightly fuzz run {} TARGET FILE; the \
             fix gets a unit test with the input, and the input goes to fuzz/corpus/TARGET)",
            failed.join(", "),
            BUILD.join(" ")
        );
    }
    Ok(())
}

/// Runs one target; returns its number of runs and, when it failed, what and where.
fn run_one(fuzz: &Path, target: &str, seconds: u64) -> Result<(u64, Option<String>)> {
    // New inputs go to a working corpus under target/ (the first directory given); the
    // committed seeds in fuzz/corpus are only read.
    let work = fuzz.join("target/corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    fs::create_dir_all(&work)?;
    fs::create_dir_all(&artifacts)?;
    let log_path = fuzz.join("target").join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let status = cargo_fuzz(fuzz)
        .args(["run"])
        .args(BUILD)
        .arg(target)
        .arg(&work)
        .arg(fuzz.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_S}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("running fuzz target {target}"))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    // "Done N runs in S second(s)" at the end; after a crash, the last "#N\t…" status line.
    let count = |l: &str| -> Option<u64> {
        let n = l.strip_prefix("Done ").or_else(|| l.strip_prefix('#'))?;
        n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let runs = text.lines().rev().find_map(count).unwrap_or(0);
    if status.success() {
        return Ok((runs, None));
    }
    // libFuzzer names the input it saved ("Test unit written to …/crash-…").
    let saved: Option<PathBuf> = text
        .lines()
        .filter_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .rfind(|p| !p.to_string_lossy().contains("slow-unit-"));
    let tail: Vec<&str> = text.lines().rev().take(25).collect();
    for l in tail.iter().rev() {
        eprintln!("  {target}: {l}");
    }
    let what = match saved {
        Some(p) => format!("FAILED: {}", p.display()),
        None => format!("FAILED ({status}; log {})", log_path.display()),
    };
    Ok((runs, Some(what)))
}
