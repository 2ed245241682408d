//! Debian's cloud kernels in QEMU: fetch a kernel (with a private apt state, so the machine's
//! own is untouched), pack a test script into an initramfs, boot it and read the script's exit
//! code from the console. It follows the recipe in /work/shared/vm.

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
/// The modules the guest loads (after those they depend on); those a kernel lacks are skipped.
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
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|k| k.first() == Some(&spec));
    let Some(&[_, suite, prefix, suffix]) = row.as_deref() else {
        bail!("unknown kernel {spec:?}: 5.10, 6.1, 6.12 or newest");
    };
    // One apt state per suite: a suite that fails to update spoils no other.
    let dir = work_dir().join(suite);
    for d in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(d))?;
    }
    let sources = format!(
        "deb [arch=amd64 target=Packages] {} {suite} main\n",
        mirror()
    );
    fs::write(dir.join("sources.list"), sources)?;
    let stamp = dir.join("updated");
    let updated = fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    if updated
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > DAY)
    {
        match sh(apt(&dir, "apt-get").args(["-q", "update", "--error-on=any"])) {
            Ok(()) => fs::write(&stamp, "")?,
            Err(e) if updated.is_some() => eprintln!("vm: {e:#}; using the older {suite} lists"),
            Err(e) => return Err(e),
        }
    }
    let regex = format!("^{}", prefix.replace('.', "\\."));
    let listing = apt(&dir, "apt-cache")
        .args(["search", "--names-only", &regex])
        .output()?;
    let name = newest(&String::from_utf8_lossy(&listing.stdout), prefix, suffix)
        .with_context(|| format!("no {prefix}*{suffix} in {suite}"))?;
    let tree = dir.join(&name);
    if tree.is_dir() {
        return Ok(tree);
    }
    let mut packages = vec![name.clone()];
    if spec == "newest" {
        let version = &name[prefix.len()..name.len() - suffix.len()];
        packages.push(format!("linux-modules-{version}{suffix}"));
    }
    let (debs, partial) = (dir.join("debs"), dir.join("tree.partial"));
    let _ = (fs::remove_dir_all(&debs), fs::remove_dir_all(&partial));
    fs::create_dir_all(&debs)?;
    // Into our own dir, which apt's _apt user cannot write to.
    sh(apt(&dir, "apt-get")
        .args(["-o", "APT::Sandbox::User=root", "download"])
        .args(&packages)
        .current_dir(&debs))?;
    for deb in fs::read_dir(&debs)? {
        sh(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb?.path())
            .arg(&partial))?;
    }
    fs::remove_dir_all(&debs)?;
    // Older trees of the suite go; the new one appears whole or not at all.
    for old in fs::read_dir(&dir)?.flatten() {
        if old.file_name().to_string_lossy().starts_with("linux-") {
            fs::remove_dir_all(old.path())?;
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
    let sources = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten();
    sources
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .chain([PathBuf::from("/etc/apt/sources.list")])
        .find_map(|p| mirror_in(&fs::read_to_string(p).unwrap_or_default()))
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The first non-security URI of a deb822 `.sources` file or a one-line sources.list.
fn mirror_in(text: &str) -> Option<String> {
    let uris = text.lines().flat_map(|l| {
        let l = l.trim();
        let uris = match (l.strip_prefix("URIs:"), l.strip_prefix("deb ")) {
            (Some(uris), _) => uris,
            // One line: options in brackets come before the URI.
            (_, Some(rest)) => rest.rsplit_once(']').map_or(rest, |(_, r)| r),
            _ => "",
        };
        let one_line = !l.starts_with("URIs:");
        uris.split_whitespace()
            .take(if one_line { 1 } else { usize::MAX })
    });
    uris.map(|u| u.trim_end_matches('/'))
        .find(|u| !u.ends_with("-security"))
        .map(String::from)
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

/// lib/modules/RELEASE in the tree (usr/lib/modules/RELEASE in newer packages).
fn modules_dir(tree: &Path) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| fs::read_dir(tree.join(d)).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
}

/// The kernel's release (its modules dir's name), e.g. 6.1.0-28-cloud-amd64; empty if none.
pub fn kernel_version(tree: &Path) -> String {
    let dir = modules_dir(tree).unwrap_or_default();
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), out);
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
    for d in "bin sbin proc sys dev tmp run etc root mods opt/bin".split(' ') {
        fs::create_dir_all(r.join(d))?;
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).context("/bin/busybox (busybox-static)")?;

    let mut found = Vec::new();
    walk(
        &modules_dir(tree).context("no modules in the kernel tree")?,
        &mut found,
    );
    let mut order = Vec::new();
    for m in MODULES.split(' ') {
        add_module(m, &found, r, &mut order)?;
    }
    fs::write(r.join("mods/order"), order.join("\n") + "\n")?;

    let mut bins = binaries.to_vec();
    for tool in ["ip", "bpftool", "nsenter"] {
        let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
        let hit = path
            .split(':')
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file());
        bins.push(hit.with_context(|| format!("no {tool} on this machine"))?);
    }
    for b in &bins {
        let name = b.file_name().context("a binary without a name")?;
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
    copy_to(script, r, "test.sh")?;
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

/// Puts module `name`, decompressed, into the initramfs' /mods after those it depends on
/// (which differ between kernels: wireguard's crypto libraries were regrouped in 7.x).
fn add_module(name: &str, found: &[PathBuf], root: &Path, order: &mut Vec<String>) -> Result<()> {
    let norm = |s: &str| s.replace('-', "_");
    let file = found.iter().find(|p| {
        let f = p.file_name().unwrap_or_default().to_string_lossy();
        f.split_once(".ko")
            .is_some_and(|(stem, _)| norm(stem) == norm(name))
    });
    let Some(file) = file.filter(|_| !order.iter().any(|m| norm(m) == norm(name))) else {
        return Ok(()); // loaded before, built in, or not in this kernel
    };
    let bytes = match file.extension().and_then(|x| x.to_str()) {
        Some(x @ ("xz" | "zst")) => {
            let tool = if x == "xz" { "xz" } else { "zstd" };
            let o = Command::new(tool).arg("-dcq").arg(file).output()?;
            if !o.status.success() {
                bail!("{tool} -d {} failed", file.display());
            }
            o.stdout
        }
        _ => fs::read(file)?,
    };
    // The module's modinfo strings (key=value, NUL-separated) name the modules it needs.
    let depends = bytes
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="));
    for dep in String::from_utf8_lossy(depends.unwrap_or_default()).split(',') {
        if !dep.is_empty() {
            add_module(dep, found, root, order)?;
        }
    }
    fs::write(root.join(format!("mods/{name}.ko")), bytes)?;
    order.push(name.to_string());
    Ok(())
}

/// Copies a host file to `guest` (a path in the guest) under the initramfs root.
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
/// console output. KVM if a short probe boot works (on these machines QEMU's KVM guest either
/// aborts setting an MSR or hangs at boot), else TCG.
pub fn boot(tree: &Path, initramfs: &Path, timeout: Duration) -> Result<(i32, String)> {
    static KVM: OnceLock<bool> = OnceLock::new();
    let kvm = *KVM.get_or_init(|| {
        let kvm = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm");
        let ok = kvm.is_ok()
            && qemu(tree, initramfs, true, " vmprobe", Duration::from_secs(20))
                .is_ok_and(|(code, _)| code == 0);
        eprintln!("vm: {}", if ok { "KVM" } else { "no working KVM, so TCG" });
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
    // 1.5 GB: the demo runs several netctl instances side by side, each with its own
    // conntrack tables for both families (1 GB ran out once IPv6 had its own).
    cmd.args(["-accel", accel, "-cpu", cpu, "-smp", smp, "-m", "1536"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet{append}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // QEMU dies with us, even if we are killed; and leaves no core when it aborts.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::setrlimit(
                libc::RLIMIT_CORE,
                &libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                },
            );
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = Reaped(
        cmd.spawn()
            .context("starting QEMU (apt-get install qemu-system-x86)")?,
    );
    let stdout = drain(child.0.stdout.take().expect("piped"));
    let stderr = drain(child.0.stderr.take().expect("piped"));
    while child.0.try_wait()?.is_none() && started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(100));
    }
    let timed_out = child.0.try_wait()?.is_none();
    drop(child); // kills QEMU if it still runs, which ends the readers
    let output = [stdout, stderr]
        .map(|r| r.join().unwrap_or_default())
        .concat()
        .replace('\r', "");
    let lines: Vec<&str> = output.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    match exit_code(&output) {
        _ if timed_out => {
            bail!("{release} ({accel}): no power-off within {timeout:?}; console:\n{tail}")
        }
        Some(code) => Ok((code, output)),
        None => bail!("{release} ({accel}): the guest gave no test exit code; console:\n{tail}"),
    }
}

/// Kills and reaps QEMU when dropped: it never outlives a boot.
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
        let rest = &l[l.find("=== test exit ")? + "=== test exit ".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version() {
        let trixie = "linux-image-6.12.9+deb13-cloud-amd64-unsigned - Linux 6.12 for cloud
linux-image-6.12.117+deb13-cloud-amd64-unsigned - Linux 6.12 for cloud
linux-image-6.12.118+deb13-cloud-amd64-unsigned-dbg - debug symbols
linux-image-6.12.119+deb13-rt-amd64-unsigned - Linux 6.12 PREEMPT_RT
linux-image-cloud-amd64 - Linux for cloud (meta-package)";
        let suffix = "-cloud-amd64-unsigned";
        let want = "linux-image-6.12.117+deb13-cloud-amd64-unsigned";
        assert_eq!(
            newest(trixie, "linux-image-6.12.", suffix).as_deref(),
            Some(want)
        );
        let sid = "linux-binary-unsigned-7.2.9+deb14-cloud-amd64 - x\n\
                   linux-binary-unsigned-7.2.13+deb14-cloud-amd64 - x";
        let want = "linux-binary-unsigned-7.2.13+deb14-cloud-amd64";
        assert_eq!(
            newest(sid, "linux-binary-unsigned-", "-cloud-amd64").as_deref(),
            Some(want)
        );
        assert_eq!(newest("", "linux-image-6.1.0-", suffix), None);
    }

    #[test]
    fn mirror_of_the_machine() {
        let sources = "Types: deb\n# http://snapshot.debian.org/archive/debian/x\n\
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
        let console = "=== guest kernel 6.1.0-28\r\nhi\n=== test exit 3\n[ 1.2] reboot: Power down";
        assert_eq!(exit_code(console), Some(3));
        assert_eq!(exit_code("=== test exit \n"), None);
        assert_eq!(exit_code("[    2.0] Kernel panic"), None);
    }
}
