//! Debian's cloud kernels in QEMU: fetch a kernel (with a private apt state, so the machine's
//! own is untouched), pack a test script into an initramfs, boot it and read the script's exit
//! code from the console. The recipe it follows is /work/shared/vm.

// Until `cargo xtask test --kernel …` calls it.
#![cfg_attr(not(test), allow(dead_code))]

use std::{
    fs,
    io::Read,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::sh;

/// spec, Debian suite, package name prefix and suffix (the part between is the version).
/// sid splits the image: vmlinuz in linux-binary-…, the modules in linux-modules-VERSION-….
const KERNELS: &str = "
    5.10    bullseye  linux-image-5.10.0-     -cloud-amd64-unsigned
    6.1     bookworm  linux-image-6.1.0-      -cloud-amd64-unsigned
    6.12    trixie    linux-image-6.12.       -cloud-amd64-unsigned
    newest  sid       linux-binary-unsigned-  -cloud-amd64";
/// The modules the guest loads (after what they depend on); those a kernel lacks are skipped.
const MODULES: &str = "bridge veth sch_ingress cls_bpf vxlan wireguard";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn work_dir() -> PathBuf {
    crate::workspace_root().join("target/vm")
}

/// Fetches (or finds cached) the newest cloud kernel of `spec` ("5.10", "6.1", "6.12",
/// "newest") and returns the dir its packages are unpacked into.
pub fn kernel_tree(spec: &str) -> Result<PathBuf> {
    let row = KERNELS
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    let Some([_, suite, prefix, suffix]) = row
        .into_iter()
        .find(|k| k.first() == Some(&spec))
        .map(|k| [k[0], k[1], k[2], k[3]])
    else {
        bail!("unknown kernel {spec:?}: 5.10, 6.1, 6.12 or newest");
    };
    let dir = work_dir().join(suite);
    for d in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(d))?;
    }
    let sources = format!(
        "deb [arch=amd64 target=Packages] {} {suite} main\n",
        mirror()
    );
    fs::write(dir.join("sources.list"), sources)?;
    // One apt state per suite: a suite that fails to update spoils no other.
    let stamp = dir.join("updated");
    let age = fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    if age.and_then(|t| t.elapsed().ok()).map_or(true, |a| a > DAY) {
        match sh(apt(&dir, "apt-get").args(["-q", "update", "--error-on=any"])) {
            Ok(()) => fs::write(&stamp, "")?,
            Err(e) if age.is_some() => eprintln!("vm: {e:#}; using the older {suite} lists"),
            Err(e) => return Err(e),
        }
    }
    let out = apt(&dir, "apt-cache")
        .args([
            "search",
            "--names-only",
            &format!("^{}", prefix.replace('.', "\\.")),
        ])
        .output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let name = newest(&listing, prefix, suffix)
        .with_context(|| format!("no {prefix}*{suffix} in {suite}"))?;
    let tree = dir.join(&name);
    if tree.is_dir() {
        return Ok(tree);
    }
    let version = &name[prefix.len()..name.len() - suffix.len()];
    let mut packages = vec![name.clone()];
    if spec == "newest" {
        packages.push(format!("linux-modules-{version}{suffix}"));
    }
    let debs = dir.join("debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    // Our own dir: apt's _apt user need not (and cannot) write into it.
    sh(apt(&dir, "apt-get")
        .args(["-o", "APT::Sandbox::User=root", "download"])
        .args(&packages)
        .current_dir(&debs))?;
    let partial = dir.join("tree.partial");
    let _ = fs::remove_dir_all(&partial);
    for deb in fs::read_dir(&debs)? {
        sh(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb?.path())
            .arg(&partial))?;
    }
    fs::remove_dir_all(&debs)?;
    // Older trees of this suite go; the new one appears whole or not at all.
    for old in fs::read_dir(&dir)? {
        let old = old?.path();
        if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("linux-"))
        {
            fs::remove_dir_all(old)?;
        }
    }
    fs::rename(&partial, &tree)?;
    Ok(tree)
}

/// apt-get or apt-cache on the suite's own sources list, lists and cache.
fn apt(dir: &Path, tool: &str) -> Command {
    let mut c = Command::new(tool);
    for (key, value) in [
        ("Dir::Etc::sourcelist", dir.join("sources.list")),
        ("Dir::Etc::sourceparts", "-".into()),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
    ] {
        c.arg("-o").arg(format!("{key}={}", value.display()));
    }
    c
}

/// The machine's own Debian mirror (its main archive, not -security).
fn mirror() -> String {
    let mut texts: Vec<String> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sources"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .collect();
    texts.extend(fs::read_to_string("/etc/apt/sources.list").ok());
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The first non-security URI of a deb822 `.sources` file or a one-line sources.list.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(uris) = l.strip_prefix("URIs:") {
                return Some(uris.split_whitespace().collect::<Vec<_>>());
            }
            let rest = l.strip_prefix("deb ")?.trim_start();
            // Options in brackets come before the URI.
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?.1,
                None => rest,
            };
            Some(rest.split_whitespace().take(1).collect())
        })
        .flatten()
        .find(|uri| !uri.trim_end_matches('/').ends_with("-security"))
        .map(|uri| uri.trim_end_matches('/').to_string())
}

/// The highest-versioned package named PREFIX VERSION SUFFIX in an `apt-cache search` listing.
fn newest(listing: &str, prefix: &str, suffix: &str) -> Option<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            let version = n.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix));
            version.is_some_and(|v| !v.is_empty() && !v.contains('-'))
        })
        // Versions compare by their numbers: 6.12.9+deb13 < 6.12.117+deb13.
        .max_by_key(|n| {
            let numbers = n.split(|c: char| !c.is_ascii_digit());
            numbers
                .filter_map(|d| d.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .map(String::from)
}

/// The dir of the tree's modules: lib/modules/VERSION (usr/lib/modules in newer packages).
fn modules_dir(tree: &Path) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| fs::read_dir(tree.join(d)).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
}

/// The kernel's release (its modules dir's name), e.g. 6.1.0-28-cloud-amd64.
pub fn kernel_version(tree: &Path) -> String {
    modules_dir(tree)
        .and_then(|d| Some(d.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

/// Makes a gzipped initramfs: busybox, the network modules, `script` as /test.sh, each of
/// `binaries` (and the host's ip, bpftool, nsenter) in /opt/bin with its libraries, and
/// `files` (host path, guest path). Busybox's shell prefers its applets: call /opt/bin/ip.
pub fn initramfs(
    tree: &Path,
    out: &Path,
    script: &Path,
    binaries: &[PathBuf],
    files: &[(PathBuf, String)],
) -> Result<()> {
    let root = TempDir::new("initramfs")?;
    let r = &root.0;
    for d in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "run", "etc", "root", "mods", "opt/bin",
    ] {
        fs::create_dir_all(r.join(d))?;
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).context("/bin/busybox (busybox-static)")?;

    // Modules, decompressed, each after those its modinfo says it depends on.
    let mut found = Vec::new();
    walk(
        &modules_dir(tree).context("no modules in the kernel tree")?,
        &mut found,
    );
    let mut order = Vec::new();
    for m in MODULES.split_whitespace() {
        add_module(m, &found, r, &mut order)?;
    }
    fs::write(r.join("mods/order"), order.join("\n") + "\n")?;

    let mut bins: Vec<PathBuf> = binaries.to_vec();
    for tool in ["ip", "bpftool", "nsenter"] {
        bins.push(which(tool).with_context(|| format!("{tool} not found on this machine"))?);
    }
    for b in &bins {
        let name = b.file_name().context("binary without a name")?;
        fs::copy(b, r.join("opt/bin").join(name)).with_context(|| b.display().to_string())?;
        let ldd = Command::new("ldd").arg(b).output()?;
        for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if lib.starts_with('/') {
                copy_to(Path::new(lib), r, lib)?;
            }
        }
    }
    for (host, guest) in files {
        copy_to(host, r, guest)?;
    }
    fs::copy(script, r.join("test.sh")).with_context(|| script.display().to_string())?;
    fs::write(r.join("init"), INIT)?;
    for f in ["init", "test.sh"] {
        fs::set_permissions(r.join(f), fs::Permissions::from_mode(0o755))?;
    }

    sh(Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            "find . | cpio -o -H newc --quiet | gzip -1",
        ])
        .current_dir(r)
        .stdout(fs::File::create(out)?))
    .context("packing the initramfs (apt-get install cpio)")
}

/// The guest's /init. `vmprobe` on the kernel command line skips the test (the KVM probe).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/opt/bin:/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mkdir -p /sys/fs/bpf /sys/fs/cgroup /run/netns
mount -t bpf bpf /sys/fs/bpf; mount -t cgroup2 none /sys/fs/cgroup
for m in $(cat /mods/order); do insmod /mods/$m.ko 2>/dev/null; done
echo "=== guest kernel $(uname -r)"
if grep -q vmprobe /proc/cmdline; then true; else /test.sh; fi
echo "=== test exit $?"
poweroff -f
"#;

/// Puts module `name` (and first what it depends on) into the initramfs' /mods.
fn add_module(name: &str, found: &[PathBuf], root: &Path, order: &mut Vec<String>) -> Result<()> {
    let norm = |s: &str| s.replace('-', "_");
    if order.iter().any(|m| norm(m) == norm(name)) {
        return Ok(());
    }
    let Some(file) = found.iter().find(|p| {
        let f = p.file_name().unwrap_or_default().to_string_lossy();
        f.split_once(".ko")
            .is_some_and(|(stem, _)| norm(stem) == norm(name))
    }) else {
        return Ok(()); // built in, or not in this kernel
    };
    let ext = file.extension().unwrap_or_default().to_string_lossy();
    let bytes = match &*ext {
        "xz" | "zst" => {
            let tool = if ext == "xz" { "xz" } else { "zstd" };
            let o = Command::new(tool).arg("-dcq").arg(file).output()?;
            if !o.status.success() {
                bail!("{tool} -d {} failed", file.display());
            }
            o.stdout
        }
        _ => fs::read(file)?,
    };
    // modinfo's NUL-separated key=value strings name the modules this one needs.
    let depends = bytes
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    for dep in depends.split(',').filter(|d| !d.is_empty()) {
        add_module(dep, found, root, order)?;
    }
    fs::write(root.join(format!("mods/{name}.ko")), bytes)?;
    order.push(name.to_string());
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Copies a host file to `guest` (an absolute path) under the initramfs root.
fn copy_to(host: &Path, root: &Path, guest: &str) -> Result<()> {
    let to = root.join(guest.trim_start_matches('/'));
    fs::create_dir_all(to.parent().expect("under the root"))?;
    fs::copy(host, &to).with_context(|| format!("copying {}", host.display()))?;
    Ok(())
}

/// A dir under target/vm, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = work_dir().join(format!("tmp-{what}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Boots the tree's kernel with `initramfs`; returns the test script's exit code and the
/// console output. KVM if a short probe boot works (a KVM guest hung at boot on these
/// machines), else TCG.
pub fn boot(tree: &Path, initramfs: &Path, timeout: Duration) -> Result<(i32, String)> {
    static KVM: OnceLock<bool> = OnceLock::new();
    let kvm = *KVM.get_or_init(|| {
        let usable = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let ok = usable
            && qemu(tree, initramfs, true, " vmprobe", Duration::from_secs(20))
                .is_ok_and(|(code, _)| code == 0);
        eprintln!("vm: {}", if ok { "KVM" } else { "no working KVM: TCG" });
        ok
    });
    qemu(tree, initramfs, kvm, "", timeout)
}

fn qemu(
    tree: &Path,
    initrd: &Path,
    kvm: bool,
    append: &str,
    timeout: Duration,
) -> Result<(i32, String)> {
    let release = kernel_version(tree);
    // boot/vmlinuz-RELEASE, or (sid) usr/lib/modules/RELEASE/vmlinuz.unsigned.
    let mut candidates = vec![tree.join(format!("boot/vmlinuz-{release}"))];
    walk(&modules_dir(tree).unwrap_or_default(), &mut candidates);
    let kernel = candidates
        .into_iter()
        .find(|k| {
            k.is_file()
                && k.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .with_context(|| format!("no vmlinuz in {}", tree.display()))?;
    let (accel, cpu, smp) = if kvm {
        ("kvm", "host", "2")
    } else {
        ("tcg", "max", "1")
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-cpu", cpu, "-smp", smp, "-m", "1024"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet{append}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl and setrlimit are async-signal-safe. QEMU dies with us, even if we are killed.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // No core files: QEMU aborts where KVM cannot set up the host's CPU.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = Reaped(
        cmd.spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?,
    );
    let readers = [
        drain(child.0.stdout.take().expect("piped")),
        drain(child.0.stderr.take().expect("piped")),
    ];
    let timed_out = loop {
        if child.0.try_wait()?.is_some() {
            break false;
        }
        if started.elapsed() > timeout {
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child); // kills QEMU if it still runs, which ends the readers
    let output: String = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect::<String>()
        .replace('\r', "");
    let tail = || {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    if timed_out {
        bail!(
            "{release}: no power-off within {timeout:?} ({accel}); the console's end:\n{}",
            tail()
        );
    }
    match exit_code(&output) {
        Some(code) => Ok((code, output)),
        None => bail!(
            "{release}: the guest gave no test exit code ({accel}); the console's end:\n{}",
            tail()
        ),
    }
}

/// Kills and reaps the child when dropped: QEMU never outlives a boot.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// N of the last "=== test exit N" line.
fn exit_code(console: &str) -> Option<i32> {
    console.lines().rev().find_map(|l| {
        let rest = &l[l.find("=== test exit ")? + 14..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..digits].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version() {
        let listing = "\
linux-image-6.12.9+deb13-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.117+deb13-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.117+deb13-cloud-amd64-unsigned-dbg - debug symbols
linux-image-6.12.38+deb13-rt-amd64-unsigned - Linux 6.12 for x86-64, PREEMPT_RT
linux-image-cloud-amd64 - Linux for x86-64 cloud (meta-package)";
        let name = newest(listing, "linux-image-6.12.", "-cloud-amd64-unsigned");
        assert_eq!(
            name.as_deref(),
            Some("linux-image-6.12.117+deb13-cloud-amd64-unsigned")
        );
        let sid = "linux-binary-unsigned-7.2.9+deb14-cloud-amd64 - x\n\
                   linux-binary-unsigned-7.2.13+deb14-cloud-amd64 - x";
        let name = newest(sid, "linux-binary-unsigned-", "-cloud-amd64");
        assert_eq!(
            name.as_deref(),
            Some("linux-binary-unsigned-7.2.13+deb14-cloud-amd64")
        );
        assert_eq!(
            newest("", "linux-image-6.1.0-", "-cloud-amd64-unsigned"),
            None
        );
    }

    #[test]
    fn mirror_of_the_machine() {
        let sources = "Types: deb\n# http://snapshot.debian.org/archive/debian-security/x\n\
                       URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n\
                       Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            mirror_in(sources).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# deb http://old/debian x main\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main";
        assert_eq!(
            mirror_in(list).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(mirror_in("Types: deb\n"), None);
    }

    #[test]
    fn test_exit_line() {
        let console = "=== guest kernel 6.1.0-28-cloud-amd64\r\nhello\n=== test exit 3\n[ 1.2] reboot: Power down\n";
        assert_eq!(exit_code(console), Some(3));
        assert_eq!(exit_code("=== test exit \n"), None);
        assert_eq!(exit_code("[    2.0] Kernel panic"), None);
    }
}
