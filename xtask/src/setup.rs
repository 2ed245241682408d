//! Installs what a fresh Debian 12 machine of this kind lacks. Idempotent: every step checks
//! first and says what it found.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::sh;

/// Debian packages the build, the tests, the demo and the benchmarks use.
const PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22 (rustc 1.95/1.97 emit LLVM 22 bitcode).
    "llvm-22-dev",
    "libpolly-22-dev",
    // etcd-client compiles etcd's protobuf definitions (which import protobuf's own, from
    // libprotobuf-dev: a recommendation of protobuf-compiler, not a dependency).
    "protobuf-compiler",
    "libprotobuf-dev",
    // The cluster store of overlay networks (tests run it in their sandboxes).
    "etcd-server",
    "etcd-client",
    "openssl", // certificates for the TLS tests of the store
    "iproute2",
    "util-linux", // nsenter
    "procps",
    "iputils-ping",
    "curl",
    "jq",
    "python3",
    "iperf3",
    "tcpdump",
    "wireguard-tools", // wg: the kernel WireGuard peer of the encrypted overlay benchmark
    "bpftool",
    "iptables",
    "nftables",
    "dnsutils",     // dig: the embedded DNS tests and benchmark
    "dnsmasq-base", // upstream DNS server in the sandbox, benchmark peer
    "dnsperf",      // the DNS benchmark's client
    "aardvark-dns", // benchmark peer (Podman's resolver)
    "tayga",        // benchmark peer (NAT64 through a TUN device)
    // Real engines on netctl: Podman through the CNI plugin, dockerd through the network
    // driver (and its docker-proxy, a benchmark peer); a local busybox image for both.
    "podman",
    "containernetworking-plugins",
    "runc",
    "containerd", // a second CNI runtime (ctr run --cni) in the tests
    "docker.io",
    "busybox-static",
    // The kernel matrix (`cargo xtask test --kernel`): Debian's kernels booted in QEMU from
    // an initramfs made here.
    "qemu-system-x86",
    "cpio",
    "binutils",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// aya-build compiles the kernel crate with `rustup run nightly … -Z build-std=core`.
const EBPF_TOOLCHAIN: &str = "nightly";

pub fn run() -> Result<()> {
    check_distribution()?;
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn step(what: &str, state: &str) {
    eprintln!("setup: {what}: {state}");
}

fn check_distribution() -> Result<()> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let debian = os
        .lines()
        .any(|l| l == "ID=debian" || (l.starts_with("ID_LIKE=") && l.contains("debian")));
    if !debian || !is_cmd("apt-get") {
        bail!(
            "cargo xtask setup knows Debian 12 only. Install by hand: LLVM 22 development \
             libraries (llvm-22-dev, libpolly-22-dev), bpf-linker {BPF_LINKER_VERSION} built \
             against them (LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --locked \
             --no-default-features --features llvm-22), rust-src for the {EBPF_TOOLCHAIN} \
             toolchain, and {}",
            PACKAGES[2..].join(", ")
        );
    }
    Ok(())
}

pub fn is_cmd(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step("debian packages", "all present");
        return Ok(());
    }
    step(
        "debian packages",
        &format!("installing {}", missing.join(" ")),
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "installing packages needs root: run as root, or install {}",
            missing.join(" ")
        );
    }
    sh(Command::new("apt-get").args(["update", "-q"]))?;
    // Installed, never started: dockerd, containerd, etcd and dnsmasq run only inside the
    // tests' sandboxes (dockerd would rewrite the machine's iptables). A policy-rc.d that
    // refuses every start, for the time of the install, keeps their packages from starting
    // them.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask setup: no service starts while installing\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let res = sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    res
}

fn rust_src() -> Result<()> {
    let listed = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .context("running rustup (the eBPF build needs rustup and a nightly toolchain)")?;
    let text = String::from_utf8_lossy(&listed.stdout);
    if !listed.status.success() {
        step("rust nightly", "installing");
        return sh(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    if text.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src (nightly)", "present");
        return Ok(());
    }
    step("rust-src (nightly)", "installing");
    sh(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker() -> Result<()> {
    // Make sure the builds started from here find what cargo install puts in ~/.cargo/bin.
    let bin = cargo_bin_dir();
    let path = std::env::var("PATH").unwrap_or_default();
    if !path.split(':').any(|p| bin == std::path::Path::new(p)) {
        std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    }
    let version = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        step("bpf-linker", &format!("{BPF_LINKER_VERSION} present"));
        return Ok(());
    }
    step(
        "bpf-linker",
        &format!("building {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"),
    );
    sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

/// cargo-fuzz, for `cargo xtask fuzz` only (the other commands do not need it).
pub fn cargo_fuzz() -> Result<()> {
    let version = Command::new("cargo-fuzz")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !version.is_empty() {
        step("cargo-fuzz", &format!("present ({})", version.trim()));
        return Ok(());
    }
    step("cargo-fuzz", &format!("installing {CARGO_FUZZ_VERSION}"));
    sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]),
    )
}
