//! Loading the embedded object: verify the programs once, pin them, reuse the pins after.

use std::fs;

use anyhow::{Context, Result};
use aya::{
    programs::{CgroupSockAddr, Program, SchedClassifier, Xdp},
    EbpfLoader,
};
use aya_obj::programs::CgroupSockAddrAttachType as SockHook;
use netctl_common::{maps, overlay, programs, sock};

use crate::{
    kernel::dataplane::features::{self, Features},
    kernel::dataplane::pins::{self, Pins},
};

/// The eBPF object built from netctl-ebpf by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netctl"));

/// Every program of the object with its kind, in attach order.
pub const PROGRAMS: [(&str, ProgKind); 17] = [
    (programs::UPLINK_XDP, ProgKind::Xdp),
    (programs::UPLINK_INGRESS, ProgKind::Tc),
    (programs::UPLINK_EGRESS, ProgKind::Tc),
    (programs::FROM_CONTAINER, ProgKind::Tc),
    (programs::TO_CONTAINER, ProgKind::Tc),
    (programs::TUNNEL_INGRESS, ProgKind::Tc),
    (programs::WG_INGRESS, ProgKind::Tc),
    (
        programs::FROM_CONTAINER6,
        ProgKind::Tail(maps::TAIL_FROM_CONTAINER6),
    ),
    (
        programs::UPLINK_INGRESS6,
        ProgKind::Tail(maps::TAIL_UPLINK_INGRESS6),
    ),
    (
        programs::UPLINK_INGRESS64,
        ProgKind::Tail(maps::TAIL_UPLINK_INGRESS64),
    ),
    (programs::SOCK_CONNECT4, ProgKind::Sock(SockHook::Connect4)),
    (
        programs::SOCK_SENDMSG4,
        ProgKind::Sock(SockHook::UDPSendMsg4),
    ),
    (
        programs::SOCK_RECVMSG4,
        ProgKind::Sock(SockHook::UDPRecvMsg4),
    ),
    (
        programs::SOCK_GETPEERNAME4,
        ProgKind::Sock(SockHook::GetPeerName4),
    ),
    (programs::SOCK_CONNECT6, ProgKind::Sock(SockHook::Connect6)),
    (
        programs::SOCK_RECVMSG6,
        ProgKind::Sock(SockHook::UDPRecvMsg6),
    ),
    (
        programs::SOCK_GETPEERNAME6,
        ProgKind::Sock(SockHook::GetPeerName6),
    ),
];

#[derive(Clone, Copy, Debug)]
pub enum ProgKind {
    Xdp,
    Tc,
    /// A cgroup socket-address program, attached at the cgroup v2 root.
    Sock(SockHook),
    /// A TC program never attached: others continue in it by tail call (`TAIL_CALLS` at
    /// this index).
    Tail(u32),
}

impl PartialEq for ProgKind {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}
impl Eq for ProgKind {}

/// Identifies this binary's programs: FNV-1a of the object, 16 hex digits, computed by the
/// build script (hashing 1.7 MB at every command cost milliseconds).
pub fn object_hash() -> String {
    env!("NETCTL_OBJECT_HASH").to_string()
}

/// The object's program that runs as `name` on this kernel: the `_compat` twin of a program
/// that tracks flows where the kernel lacks `bpf_loop` or atomics, of a socket program where
/// its socket-address programs lack socket storage.
pub fn object_program<'a>(name: &'a str, f: &Features) -> &'a str {
    let storage = f.has(features::SK_STORAGE);
    match name {
        programs::SOCK_CONNECT4 if !storage => programs::SOCK_CONNECT4_COMPAT,
        programs::SOCK_SENDMSG4 if !storage => programs::SOCK_SENDMSG4_COMPAT,
        programs::SOCK_RECVMSG4 if !storage => programs::SOCK_RECVMSG4_COMPAT,
        programs::SOCK_GETPEERNAME4 if !storage => programs::SOCK_GETPEERNAME4_COMPAT,
        _ if f.modern() => name,
        programs::UPLINK_XDP => programs::UPLINK_XDP_COMPAT,
        programs::UPLINK_INGRESS => programs::UPLINK_INGRESS_COMPAT,
        programs::UPLINK_EGRESS => programs::UPLINK_EGRESS_COMPAT,
        programs::FROM_CONTAINER => programs::FROM_CONTAINER_COMPAT,
        programs::FROM_CONTAINER6 => programs::FROM_CONTAINER6_COMPAT,
        programs::UPLINK_INGRESS6 => programs::UPLINK_INGRESS6_COMPAT,
        programs::UPLINK_INGRESS64 => programs::UPLINK_INGRESS64_COMPAT,
        _ => name,
    }
}

/// The programs this kernel runs: the socket programs only where every hook they need is
/// there, XDP only where XDP programs load.
pub fn wanted_programs(f: &Features) -> impl Iterator<Item = (&'static str, ProgKind)> + '_ {
    let sock = f.socket_programs().is_ok();
    let storage = f.has(features::SK_STORAGE);
    let xdp = f.has(features::XDP);
    PROGRAMS.into_iter().filter(move |(_, kind)| match kind {
        // The IPv6 ones keep what a socket dialled in socket storage only.
        ProgKind::Sock(SockHook::Connect6 | SockHook::UDPRecvMsg6 | SockHook::GetPeerName6) => {
            sock && storage
        }
        ProgKind::Sock(_) => sock,
        ProgKind::Xdp => xdp,
        ProgKind::Tc | ProgKind::Tail(_) => true,
    })
}

/// A loader for this kernel: `bits` ([`Features::globals`]) in the features global.
fn base_loader(bits: &u32) -> EbpfLoader<'_> {
    let mut loader = EbpfLoader::new();
    loader.override_global(netctl_common::features::GLOBAL, bits, true);
    loader
}

/// The object's loader with every map at its pin (created there on first use).
fn loader<'a>(pins: &Pins, ct_entries: u32, bits: &'a u32) -> EbpfLoader<'a> {
    let mut loader = base_loader(bits);
    for name in maps::ALL.into_iter().chain(sock::MAPS).chain(overlay::MAPS) {
        loader.map_pin_path(name, pins.map(name));
    }
    loader.map_max_entries(maps::CT, ct_entries);
    loader.map_max_entries(maps::CT_NEW, (ct_entries / maps::CT_NEW_RATIO).max(1024));
    let ct6 = (ct_entries / maps::CT6_SHARE).max(1024);
    loader.map_max_entries(maps::CT6, ct6);
    loader.map_max_entries(maps::CT6_NEW, (ct6 / maps::CT_NEW_RATIO).max(1024));
    loader
}

/// Loads and pins the programs unless this object's pins are already there. Maps are created
/// and pinned on first load and reused by every later load of the same layout.
/// Returns true when it loaded (so attached links must move to the new programs).
pub fn ensure_programs(pins: &Pins, hash: &str, ct_entries: u32, f: &Features) -> Result<bool> {
    let dir = pins.progs(hash);
    if wanted_programs(f).all(|(name, _)| dir.join(name).exists()) {
        return Ok(false);
    }
    let bits = f.globals();
    let mut ebpf = loader(pins, ct_entries, &bits)
        .load(OBJECT)
        .context("loading netctl's eBPF object")?;

    // Pin into a temporary directory and rename, so a killed run never leaves a half set.
    // bpffs rejects dots in names, hence no ".tmp".
    let tmp = dir.with_file_name(format!("{}-tmp", pins::file_name(&dir)));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for (name, kind) in wanted_programs(f) {
        let source = object_program(name, f);
        let prog = ebpf
            .program_mut(source)
            .with_context(|| format!("program {source} missing from the eBPF object"))?;
        match kind {
            ProgKind::Xdp => load_as::<Xdp>(prog, name)?,
            ProgKind::Tc | ProgKind::Tail(_) => load_as::<SchedClassifier>(prog, name)?,
            ProgKind::Sock(_) => load_as::<CgroupSockAddr>(prog, name)?,
        }
        prog.pin(tmp.join(name))
            .with_context(|| format!("pinning program {name} under {}", tmp.display()))?;
    }
    set_tail_calls(&mut ebpf, f)?;
    fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    Ok(true)
}

trait Loadable {
    fn load_prog(&mut self) -> Result<(), aya::programs::ProgramError>;
}
impl Loadable for Xdp {
    fn load_prog(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}
impl Loadable for SchedClassifier {
    fn load_prog(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}
impl Loadable for CgroupSockAddr {
    fn load_prog(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

fn load_as<'a, P>(prog: &'a mut Program, name: &str) -> Result<()>
where
    P: Loadable + 'a,
    &'a mut P: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    let p: &mut P = prog
        .try_into()
        .with_context(|| format!("program {name} has an unexpected type"))?;
    p.load_prog()
        .with_context(|| format!("the kernel verifier rejected program {name}"))
}

/// Points `TAIL_CALLS` at this object's tail programs (loaded already). Until it does, the
/// programs that continue there drop IPv6 rather than pass it unchecked.
pub fn set_tail_calls(ebpf: &mut aya::Ebpf, f: &Features) -> Result<()> {
    for (name, kind) in PROGRAMS {
        let ProgKind::Tail(index) = kind else {
            continue;
        };
        let source = object_program(name, f);
        let prog: &SchedClassifier = ebpf
            .program(source)
            .with_context(|| format!("program {source} missing from the eBPF object"))?
            .try_into()?;
        let fd = prog.fd()?.try_clone()?;
        let mut tails: aya::maps::ProgramArray<_> = ebpf
            .map_mut(maps::TAIL_CALLS)
            .context("map TAIL_CALLS missing from the eBPF object")?
            .try_into()?;
        tails
            .set(index, &fd, 0)
            .with_context(|| format!("setting tail call {index} to {name}"))?;
    }
    Ok(())
}

/// Loads the object with private, unpinned maps: for program tests (BPF_PROG_TEST_RUN), which
/// must not share state with a running netctl. `ct_new_entries` sizes the unconfirmed-flow
/// table (a small one lets a test flood it quickly).
pub fn load_unpinned(ct_new_entries: Option<u32>, f: &Features) -> Result<aya::Ebpf> {
    let bits = f.globals();
    let mut loader = base_loader(&bits);
    if let Some(n) = ct_new_entries {
        loader.map_max_entries(maps::CT_NEW, n);
    }
    loader.load(OBJECT).context("loading netctl's eBPF object")
}

/// The kernel-drop tracer while it is attached (dropping it detaches and unloads it), and the
/// kernel's names of its drop reasons (`SKB_DROP_REASON_` left off).
pub struct KernelDrops {
    _ebpf: aya::Ebpf,
    pub reasons: std::collections::BTreeMap<u64, String>,
}

/// Loads `kernel_drop` beside the pinned maps, tells it where `sk_buff` keeps what it reads
/// (from the running kernel's BTF) and attaches it to the `kfree_skb` tracepoint.
pub fn kernel_drops(pins: &Pins, ct_entries: u32, f: &Features) -> Result<KernelDrops> {
    f.require(features::KFREE_SKB_REASON)?;
    use aya::{maps::Array, programs::BtfTracePoint};
    use netctl_common::event::KernelDropConfig;
    let own = crate::kernel::dataplane::btf::Btf::from_sys_fs()?;
    let config = KernelDropConfig {
        head: own.member_offset("sk_buff", "head")?,
        network_header: own.member_offset("sk_buff", "network_header")?,
        len: own.member_offset("sk_buff", "len")?,
        dev: own.member_offset("sk_buff", "dev")?,
        dev_ifindex: own.member_offset("net_device", "ifindex")?,
        ready: 1,
    };
    let reasons = own
        .enum_values("skb_drop_reason")?
        .into_iter()
        .map(|(v, n)| (v, n.trim_start_matches("SKB_DROP_REASON_").to_string()))
        .collect();
    let bits = f.globals();
    let mut ebpf = loader(pins, ct_entries, &bits)
        .load(OBJECT)
        .context("loading netctl's eBPF object")?;
    let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(programs::KERNEL_DROP)
        .context("kernel_drop missing from the eBPF object")?
        .try_into()?;
    prog.load("kfree_skb", &btf)
        .context("loading the kfree_skb tracer")?;
    prog.attach().context("attaching to kfree_skb")?;
    let mut cfg: Array<_, KernelDropConfig> = Array::try_from(
        ebpf.map_mut(maps::KDROP_CONFIG)
            .context("KDROP_CONFIG missing")?,
    )?;
    cfg.set(0, config, 0)?;
    Ok(KernelDrops {
        _ebpf: ebpf,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_hash_is_the_embedded_objects() {
        let h = crate::kernel::dataplane::load::OBJECT
            .iter()
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
            });
        assert_eq!(
            crate::kernel::dataplane::load::object_hash(),
            format!("{h:016x}")
        );
    }
}
