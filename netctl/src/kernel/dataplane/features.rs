//! What this kernel can do for the datapath, probed once per boot by loading tiny programs
//! (aya's probes where it has them) and cached in `/run/netctl`. Each optional feature has a
//! fallback (see [`FEATURES`]); a missing required one is a clear error before anything is
//! loaded or switched on. `NETCTL_FEATURES_DENY` (a test aid) reports features absent so
//! every fallback runs on any kernel.

use std::{collections::BTreeMap, os::fd::FromRawFd, path::Path};

use anyhow::{bail, Result};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};
use aya_obj::generated::{bpf_attr, bpf_cmd};
use serde::{Deserialize, Serialize};

pub use crate::model::features::*;

/// What the probes found, as cached.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Probed {
    /// `uname -r`, `uname -v` and the boot ID: the cache is redone when any changes.
    kernel: String,
    boot: String,
    found: BTreeMap<String, bool>,
}

/// The kernel's features with the denied ones taken away.
#[derive(Clone, Debug)]
pub struct Features {
    pub kernel: String,
    found: BTreeMap<String, bool>,
    denied: Vec<String>,
}

impl Features {
    /// Probes (or reads the cache of this boot) and applies `deny`.
    pub fn detect(deny: &[String]) -> Result<Self> {
        // A command asks several times (its checks, the dataplane, containers' files): the
        // kernel does not change under it, so it is read (or probed) once per process.
        static PROBED: std::sync::OnceLock<Probed> = std::sync::OnceLock::new();
        let probed = PROBED.get_or_init(probed);
        Ok(Self::from_found(
            probed.kernel.clone(),
            probed.found.clone(),
            deny,
        ))
    }

    fn from_found(kernel: String, found: BTreeMap<String, bool>, deny: &[String]) -> Self {
        Self {
            kernel,
            found,
            denied: deny.to_vec(),
        }
    }

    /// Whether the kernel has `name` and it is not denied.
    pub fn has(&self, name: &str) -> bool {
        self.probed(name) && !self.is_denied(name)
    }

    /// What the probe found, denial aside.
    pub fn probed(&self, name: &str) -> bool {
        self.found.get(name).copied().unwrap_or(false)
    }

    pub fn is_denied(&self, name: &str) -> bool {
        self.denied.iter().any(|d| d == name)
    }

    /// Fails, naming the first missing required feature, when the datapath cannot run here.
    pub fn check_required(&self) -> Result<()> {
        for f in FEATURES.iter().filter(|f| f.fallback.is_none()) {
            self.require(f.name)?;
        }
        Ok(())
    }

    /// One line naming `name`, the kernel that has it and what needs it, when it is absent.
    pub fn require(&self, name: &str) -> Result<()> {
        if self.has(name) {
            return Ok(());
        }
        let f = feature(name).expect("a known feature");
        let why = if self.is_denied(name) {
            " (denied by NETCTL_FEATURES_DENY)".to_string()
        } else {
            format!(
                " (kernel {} lacks it)",
                self.kernel.split(' ').next().unwrap_or_default()
            )
        };
        bail!(
            "this needs the kernel feature {} (Linux {} or newer, for {}){why}",
            f.name,
            f.since,
            f.used_for
        )
    }

    /// The socket programs run only with every hook and helper they need.
    pub fn socket_programs(&self) -> Result<()> {
        SOCKET_FEATURES.iter().try_for_each(|n| self.require(n))
    }

    /// The bits of the programs' `FEATURES` global.
    pub fn globals(&self) -> u32 {
        use netctl_common::features as g;
        [
            (XDP_ADJUST_META, g::XDP_ADJUST_META),
            (XDP_LOAD_BYTES, g::XDP_LOAD_BYTES),
            (CHECK_MTU, g::CHECK_MTU),
        ]
        .into_iter()
        .filter(|(name, _)| self.has(name))
        .fold(0, |bits, (_, bit)| bits | bit)
    }

    /// A short tag of what changes the loaded programs (the globals and the variants): pins
    /// made under other features are not reused.
    pub fn variant(&self) -> String {
        format!(
            "f{:x}{}{}",
            self.globals(),
            if self.modern() { "" } else { "c" },
            if self.has(SK_STORAGE) { "" } else { "s" }
        )
    }

    /// Whether the programs that track flows can use `bpf_loop` and atomics; otherwise their
    /// `_compat` twins run.
    pub fn modern(&self) -> bool {
        self.has(LOOP) && self.has(ATOMICS)
    }
}

/// This boot's probe results: the cache if it is this kernel's and boot's, else new probes
/// (and a new cache).
fn probed() -> Probed {
    let (kernel, boot) = identity();
    let cache = Path::new(CACHE);
    let cached = std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<Probed>(&b).ok())
        .filter(|p| p.kernel == kernel && p.boot == boot && p.found.len() == FEATURES.len());
    if let Some(p) = cached {
        return p;
    }
    let p = Probed {
        kernel,
        boot,
        found: probe_all(),
    };
    // A cache that cannot be written only costs the next command the probes.
    if let Ok(bytes) = serde_json::to_vec_pretty(&p) {
        let _ = std::fs::create_dir_all(cache.parent().expect("a parent"));
        let _ = crate::base::atomic_file::write_cache(cache, &bytes, 0o644);
    }
    p
}

const CACHE: &str = "/run/netctl/features.json";

fn identity() -> (String, String) {
    let u = nix::sys::utsname::uname().ok();
    let kernel = u
        .as_ref()
        .map(|u| {
            format!(
                "{} {}",
                u.release().to_string_lossy(),
                u.version().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    (kernel, boot)
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn probe_all() -> BTreeMap<String, bool> {
    let helper = |t, h| is_helper_supported(t, h).unwrap_or(false);
    let tc = ProgramType::SchedClassifier;
    let sock = ProgramType::CgroupSockAddr;
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let found = [
        (TCX, tcx()),
        (XDP, is_program_supported(ProgramType::Xdp).unwrap_or(false)),
        (
            XDP_ADJUST_META,
            helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_adjust_meta),
        ),
        (
            XDP_LOAD_BYTES,
            helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_load_bytes),
        ),
        (LOOP, helper(tc, BpfHelper::BPF_FUNC_loop)),
        (ATOMICS, atomics()),
        (REDIRECT_PEER, helper(tc, BpfHelper::BPF_FUNC_redirect_peer)),
        (
            SKC_LOOKUP_TCP,
            helper(tc, BpfHelper::BPF_FUNC_skc_lookup_tcp),
        ),
        (RINGBUF, is_map_supported(MapType::RingBuf).unwrap_or(false)),
        (
            GET_NETNS_COOKIE,
            helper(sock, BpfHelper::BPF_FUNC_get_netns_cookie),
        ),
        (CONNECT4, sock_hook(BPF_CGROUP_INET4_CONNECT)),
        (SENDMSG4, sock_hook(BPF_CGROUP_UDP4_SENDMSG)),
        (RECVMSG4, sock_hook(BPF_CGROUP_UDP4_RECVMSG)),
        (GETPEERNAME4, sock_hook(BPF_CGROUP_INET4_GETPEERNAME)),
        (SO_NETNS_COOKIE, crate::kernel::netns::own_cookie().is_ok()),
        (KFREE_SKB_REASON, btf && kfree_skb_reason()),
        (BTF, btf),
        (SK_STORAGE, helper(sock, BpfHelper::BPF_FUNC_sk_storage_get)),
        (CHECK_MTU, helper(tc, BpfHelper::BPF_FUNC_check_mtu)),
    ];
    found.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

// Attach types and program types of the uapi (stable numbers).
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
const BPF_TCX_INGRESS: u32 = 46;
const PROG_TYPE_SCHED_CLS: u32 = 3;
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;

/// One instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst & 0xf) << 8
        | u64::from(src & 0xf) << 12
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}
const MOV64_IMM: u8 = 0xb7;
const EXIT: u8 = 0x95;

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<i64> {
    // SAFETY: attr is a whole, zero-initialised bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads a program; the fd closes when the result drops.
fn load(prog_type: u32, attach_type: u32, insns: &[u64]) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: bpf_attr is plain data; all zero is its empty value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: union member of BPF_PROG_LOAD.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = prog_type;
    u.insn_cnt = insns.len() as u32;
    u.insns = insns.as_ptr() as u64;
    u.license = c"GPL".as_ptr() as u64;
    u.expected_attach_type = attach_type;
    let fd = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just handed us this descriptor.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn sock_hook(attach_type: u32) -> bool {
    let prog = [insn(MOV64_IMM, 0, 0, 0, 1), insn(EXIT, 0, 0, 0, 0)];
    load(PROG_TYPE_CGROUP_SOCK_ADDR, attach_type, &prog).is_ok()
}

/// BPF_ATOMIC with BPF_OR | BPF_FETCH on a stack slot.
fn atomics() -> bool {
    let prog = [
        insn(0x7a, 10, 0, -8, 0),    // *(u64 *)(r10 - 8) = 0
        insn(MOV64_IMM, 1, 0, 0, 1), // r1 = 1
        insn(0xdb, 10, 1, -8, 0x41), // r1 = atomic_fetch_or((u64 *)(r10 - 8), r1)
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ];
    load(PROG_TYPE_SCHED_CLS, 0, &prog).is_ok()
}

/// A TCX link to an interface that cannot exist: a kernel with TCX looks for the device
/// (ENODEV), one without refuses the attach type (EINVAL). Nothing is attached either way.
fn tcx() -> bool {
    let prog = [insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
    let Ok(fd) = load(PROG_TYPE_SCHED_CLS, 0, &prog) else {
        return false;
    };
    // SAFETY: as in load.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: union members of BPF_LINK_CREATE.
    let link = unsafe { &mut attr.link_create };
    link.__bindgen_anon_1.prog_fd = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
    link.__bindgen_anon_2.target_ifindex = u32::MAX;
    link.attach_type = BPF_TCX_INGRESS;
    match sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) {
        Ok(link) => {
            // SAFETY: a descriptor the kernel handed us; closing it detaches.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(link as i32) });
            true
        }
        Err(e) => e.raw_os_error() == Some(libc::ENODEV),
    }
}

/// The `kfree_skb` tracepoint passes a drop reason from 5.17 on (its enum is in BTF).
fn kfree_skb_reason() -> bool {
    crate::kernel::dataplane::btf::Btf::from_sys_fs()
        .and_then(|b| b.enum_values("skb_drop_reason"))
        .is_ok_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_list_names_known_features_only() {
        assert_eq!(parse_deny(" tcx,loop ,").unwrap(), ["tcx", "loop"]);
        let e = parse_deny("tcx,warp").unwrap_err().to_string();
        assert!(
            e.contains("\"warp\"") && e.contains("xdp_adjust_meta"),
            "{e}"
        );
    }

    #[test]
    fn denied_features_are_absent_and_named() {
        let found = FEATURES
            .iter()
            .map(|f| (f.name.to_string(), true))
            .collect();
        let all = Features::from_found("6.18".into(), found, &[]);
        assert_eq!(all.variant(), "f7");
        let deny = parse_deny("loop,xdp_adjust_meta,redirect_peer,check_mtu,sk_storage").unwrap();
        let found = FEATURES
            .iter()
            .map(|f| (f.name.to_string(), true))
            .collect();
        let some = Features::from_found("6.18".into(), found, &deny);
        assert!(!some.has(LOOP) && some.probed(LOOP) && some.has(TCX));
        assert_eq!(some.globals(), netctl_common::features::XDP_LOAD_BYTES);
        assert_eq!(some.variant(), "f2cs");
        let e = some.check_required().unwrap_err().to_string();
        assert!(
            e.contains("redirect_peer") && e.contains("5.10") && e.contains("NETCTL_FEATURES_DENY"),
            "{e}"
        );
    }

    /// Every feature of the table is probed: one missing would never be on, and the cache
    /// (which must hold them all) would be redone by every command.
    #[test]
    fn every_feature_is_probed_and_the_cache_holds() {
        let found = probe_all();
        let names: Vec<&str> = found.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(probed().found.len(), FEATURES.len());
    }

    #[test]
    fn instructions_encode_as_the_uapi_says() {
        // r1 = 1: BPF_ALU64 | BPF_MOV | BPF_K, dst 1, imm 1.
        assert_eq!(insn(MOV64_IMM, 1, 0, 0, 1), 0x0000_0001_0000_01b7);
        // *(u64 *)(r10 - 8) = r1 (stx): off -8 in bits 16..32.
        assert_eq!(insn(0x7b, 10, 1, -8, 0), 0x0000_0000_fff8_1a7b);
    }
}
