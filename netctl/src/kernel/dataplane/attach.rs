//! Program attachments as pinned bpf_links: `links/<program>@<ifindex>@<object hash>`.
//!
//! A pin keeps its link (and so the attachment) alive after netctl exits. The ifindex in the
//! name tells a pin of a deleted interface from a live one; the hash tells links that still run
//! an older binary's programs, which are moved to the new programs in place (no gap).
//!
//! Without TCX (before 6.6) a TC program is a cls_bpf filter on the interface's clsact qdisc
//! (direct-action, netctl's own priority and handle), which lives on without a pin; its
//! record is the program pinned as `links/<program>@<ifindex>@<hash>@nl`. Replacing a
//! filter's program is atomic too; removing the record detaches the filter first.

use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{bail, Context, Result};
use aya::programs::{
    links::{CgroupAttachMode, FdLink, PinnedLink},
    tc::{qdisc_add_clsact, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    xdp::XdpLink,
    CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
};
use aya_obj::programs::XdpAttachType;

use crate::base::config::XdpMode;
use crate::{
    kernel::dataplane::load::ProgKind,
    kernel::dataplane::pins::{file_name, list, Pins},
};

/// One program attached to one interface (or, for socket programs, to the cgroup v2 root:
/// `ifname` is its path, `ifindex` 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub program: &'static str,
    pub kind: ProgKind,
    pub ifname: String,
    pub ifindex: u32,
}

impl Attachment {
    fn key(&self) -> (String, u32) {
        (self.program.to_string(), self.ifindex)
    }
}

/// A container's host-side veth: what the container sends (ingress) and what it is handed
/// (egress).
pub fn container_attachments(name: &str, index: u32) -> [Attachment; 2] {
    [
        att(
            netctl_common::programs::FROM_CONTAINER,
            ProgKind::Tc,
            name,
            index,
        ),
        att(
            netctl_common::programs::TO_CONTAINER,
            ProgKind::Tc,
            name,
            index,
        ),
    ]
}

pub fn att(program: &'static str, kind: ProgKind, name: &str, index: u32) -> Attachment {
    Attachment {
        program,
        kind,
        ifname: name.to_string(),
        ifindex: index,
    }
}

/// How attachments are made on this kernel.
#[derive(Clone, Copy, Debug)]
pub struct Modes {
    pub xdp: XdpMode,
    /// TC programs as TCX links; netlink cls_bpf filters otherwise.
    pub tcx: bool,
}

/// The cls_bpf filter netctl owns on an interface without TCX: this priority (low numbers
/// run first: policy before other filters) and handle ("NC").
const NL_PRIORITY: u16 = 1;
const NL_HANDLE: TcHandle = TcHandle::new(0x4e43, 1);
const NL_SUFFIX: &str = "nl";

struct Pinned {
    program: String,
    ifindex: u32,
    hash: String,
    /// A record of a netlink filter rather than a link.
    netlink: bool,
    path: std::path::PathBuf,
}

fn parse_pin(path: &Path) -> Option<Pinned> {
    let name = file_name(path);
    let mut parts = name.split('@');
    let (program, ifindex, hash) = (parts.next()?, parts.next()?, parts.next()?);
    let netlink = match parts.next() {
        None => false,
        Some(NL_SUFFIX) => true,
        Some(_) => return None,
    };
    Some(Pinned {
        program: program.to_string(),
        ifindex: ifindex.parse().ok()?,
        hash: hash.to_string(),
        netlink,
        path: path.to_path_buf(),
    })
}

/// Removes a pin: for a link, that detaches it; for a netlink record, the filter is deleted
/// first (it would outlive the record).
fn unpin(pin: &Pinned) -> Result<()> {
    if pin.netlink {
        detach_filter(&pin.program, pin.ifindex);
    }
    fs::remove_file(&pin.path).with_context(|| format!("unpinning {}", pin.path.display()))
}

/// A TC program's direction is its own: the ones on the way out of the host (uplink egress,
/// into a container) are egress programs.
fn direction_of(program: &str) -> TcAttachType {
    use netctl_common::programs::{TO_CONTAINER, UPLINK_EGRESS};
    if program == UPLINK_EGRESS || program == TO_CONTAINER {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

/// Deletes netctl's filter for `program` on `ifindex` (nothing to do if the interface went:
/// its filters went with it).
fn detach_filter(program: &str, ifindex: u32) {
    let Ok(name) = nix::net::if_::if_indextoname(ifindex) else {
        return;
    };
    let name = name.to_string_lossy();
    if let Ok(link) =
        SchedClassifierLink::attached(&name, direction_of(program), NL_PRIORITY, NL_HANDLE, None)
    {
        // Dropping a netlink link detaches its filter.
        drop(link);
    }
}

/// What is attached where, from the pins: (program, ifindex, how: tcx, tc netlink, xdp or
/// cgroup).
pub fn attached(links_dir: &Path) -> Vec<(String, u32, &'static str)> {
    list(links_dir)
        .iter()
        .filter_map(|p| parse_pin(p))
        .map(|pin| {
            let how = match pin.program.as_str() {
                _ if pin.netlink => "tc netlink",
                netctl_common::programs::UPLINK_XDP => "xdp",
                p if p.starts_with("sock_") => "cgroup",
                _ => "tcx",
            };
            (pin.program, pin.ifindex, how)
        })
        .collect()
}

/// Removes every pin and netlink filter of this instance's links directory (teardown).
pub fn detach_all(links_dir: &Path) {
    for path in list(links_dir) {
        if let Some(pin) = parse_pin(&path) {
            let _ = unpin(&pin);
        }
    }
}

/// What changed, one line each, for the caller to report.
pub type Changes = Vec<String>;

/// Makes the pinned links exactly `desired`: detaches what is not wanted (or whose interface
/// is gone), moves links of older programs to `hash`'s programs, attaches what is missing.
pub fn reconcile(pins: &Pins, hash: &str, desired: &[Attachment], modes: Modes) -> Result<Changes> {
    let mut changes = Changes::new();
    let wanted: BTreeSet<(String, u32)> = desired.iter().map(Attachment::key).collect();
    let tc_keys: BTreeSet<(String, u32)> = desired
        .iter()
        .filter(|a| a.kind == ProgKind::Tc)
        .map(Attachment::key)
        .collect();
    let mut have = BTreeSet::new();
    for path in list(&pins.links()) {
        let Some(pin) = parse_pin(&path) else {
            let _ = fs::remove_file(&path);
            continue;
        };
        let key = (pin.program.clone(), pin.ifindex);
        let tc = tc_keys.contains(&key);
        // A filter where links are wanted or the other way round (the kernel's features were
        // denied differently) is detached and made again.
        let other_mode = tc && pin.netlink == modes.tcx;
        if !wanted.contains(&key) || have.contains(&key) || other_mode {
            // Removing the last reference to a link detaches the program.
            unpin(&pin)?;
            changes.push(format!(
                "detached {} from ifindex {}",
                pin.program, pin.ifindex
            ));
            continue;
        }
        if pin.hash != hash {
            let att = desired.iter().find(|a| a.key() == key).expect("wanted");
            replace(pins, hash, att, &pin)?;
            changes.push(format!("updated {} on {}", att.program, att.ifname));
        }
        have.insert(key);
    }
    for att in desired {
        if !have.contains(&att.key()) {
            let mode = attach(pins, hash, att, modes)?;
            changes.push(format!(
                "attached {} to {}{}",
                att.program, att.ifname, mode
            ));
            have.insert(att.key());
        }
    }
    Ok(changes)
}

/// Attaches `att` unless its pin is there already (see [`reconcile`], which keeps it).
pub fn attach_missing(pins: &Pins, hash: &str, att: &Attachment, modes: Modes) -> Result<()> {
    if !pin_path(pins, hash, att, modes).exists() {
        attach(pins, hash, att, modes)?;
    }
    Ok(())
}

/// Where `att`'s link (or filter record) is pinned.
pub fn pin_path(pins: &Pins, hash: &str, att: &Attachment, modes: Modes) -> std::path::PathBuf {
    let suffix = match att.kind {
        ProgKind::Tc if !modes.tcx => format!("@{NL_SUFFIX}"),
        _ => String::new(),
    };
    pins.links()
        .join(format!("{}@{}@{}{suffix}", att.program, att.ifindex, hash))
}

fn tc_direction(att: &Attachment) -> TcAttachType {
    direction_of(att.program)
}

/// Attaches and pins; returns a note on the mode used.
fn attach(pins: &Pins, hash: &str, att: &Attachment, modes: Modes) -> Result<&'static str> {
    attach_at(pins, hash, att, modes, &pin_path(pins, hash, att, modes))
}

/// Attaches and pins at `target`; returns a note on the mode used.
pub fn attach_at(
    pins: &Pins,
    hash: &str,
    att: &Attachment,
    modes: Modes,
    target: &Path,
) -> Result<&'static str> {
    let prog_pin = pins.progs(hash).join(att.program);
    match att.kind {
        ProgKind::Tail(_) => anyhow::bail!("{} is entered by tail call, not attached", att.program),
        ProgKind::Sock(hook) => {
            let mut prog = CgroupSockAddr::from_pin(&prog_pin, hook)
                .with_context(|| format!("opening pinned program {}", prog_pin.display()))?;
            let cgroup = fs::File::open(&att.ifname)
                .with_context(|| format!("opening cgroup {}", att.ifname))?;
            // Several netctl instances (and other tools) share the root: each program only
            // acts on its own instance's namespaces. A cgroup bpf_link is always
            // multi-attach; the kernel wants no flags for it ("Single" is 0).
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {} to cgroup {}", att.program, att.ifname))?;
            let link: FdLink = prog.take_link(id)?.try_into()?;
            link.pin(target)
                .with_context(|| format!("pinning link {}", target.display()))?;
            Ok(" (cgroup)")
        }
        ProgKind::Tc if !modes.tcx => {
            let mut prog = SchedClassifier::from_pin(&prog_pin)
                .with_context(|| format!("opening pinned program {}", prog_pin.display()))?;
            attach_filter(&mut prog, att)?;
            prog.pin(target)
                .with_context(|| format!("recording {}", target.display()))?;
            Ok(" (tc netlink)")
        }
        ProgKind::Tc => {
            let mut prog = SchedClassifier::from_pin(&prog_pin)
                .with_context(|| format!("opening pinned program {}", prog_pin.display()))?;
            let id = prog
                .attach_with_options(
                    &att.ifname,
                    tc_direction(att),
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .with_context(|| format!("attaching {} to {} (TCX)", att.program, att.ifname))?;
            let link: FdLink = prog.take_link(id)?.try_into()?;
            link.pin(target)
                .with_context(|| format!("pinning link {}", target.display()))?;
            Ok(" (tcx)")
        }
        ProgKind::Xdp => {
            let mut prog = Xdp::from_pin(&prog_pin, XdpAttachType::Interface)
                .with_context(|| format!("opening pinned program {}", prog_pin.display()))?;
            let tries: &[(AyaXdpMode, &'static str)] = match modes.xdp {
                XdpMode::Auto | XdpMode::Native => &[(AyaXdpMode::Driver, " (xdp native)")],
                XdpMode::Generic => &[(AyaXdpMode::Skb, " (xdp generic)")],
                XdpMode::Off => {
                    bail!("XDP is off (NETCTL_XDP=off) but an XDP attachment was asked for")
                }
            };
            let mut last_err = None;
            for (mode, note) in tries {
                match prog.attach(&att.ifname, *mode) {
                    Ok(id) => {
                        let link: FdLink = prog.take_link(id)?.try_into().with_context(|| {
                            format!("XDP on {} did not attach as a bpf_link", att.ifname)
                        })?;
                        link.pin(target)
                            .with_context(|| format!("pinning link {}", target.display()))?;
                        return Ok(note);
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            Err(last_err.expect("one try")).with_context(|| {
                format!(
                    "attaching XDP to {} (set NETCTL_XDP=generic or off)",
                    att.ifname
                )
            })
        }
    }
}

/// Puts netctl's cls_bpf filter for `att` on its interface (clsact first), or moves an
/// existing one (a killed command's, unrecorded) to this program.
fn attach_filter(prog: &mut SchedClassifier, att: &Attachment) -> Result<()> {
    // Already there (ours from before, or another tool's) is fine; a real failure shows in
    // the attach below.
    let _ = qdisc_add_clsact(&att.ifname);
    let options = TcAttachOptions::Netlink(NlOptions {
        priority: NL_PRIORITY,
        handle: NL_HANDLE,
        classid: None,
    });
    let id = match prog.attach_with_options(&att.ifname, tc_direction(att), options) {
        Ok(id) => id,
        Err(_) => {
            let existing = SchedClassifierLink::attached(
                &att.ifname,
                tc_direction(att),
                NL_PRIORITY,
                NL_HANDLE,
                None,
            )?;
            prog.attach_to_link(existing).with_context(|| {
                format!("attaching {} to {} (tc netlink)", att.program, att.ifname)
            })?
        }
    };
    // The filter stays after this process: a netlink link detaches when dropped.
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

/// Moves an attached link to this binary's program atomically and re-pins it.
fn replace(pins: &Pins, hash: &str, att: &Attachment, old: &Pinned) -> Result<()> {
    let old_pin = &old.path;
    let modes = Modes {
        xdp: XdpMode::Off,
        tcx: !old.netlink,
    };
    if let ProgKind::Sock(_) = att.kind {
        // The new program goes on beside the old one, then the old one goes: for a moment
        // both run, and the second finds nothing left to translate.
        attach(pins, hash, att, modes)?;
        return fs::remove_file(old_pin)
            .with_context(|| format!("unpinning {}", old_pin.display()));
    }
    let prog_pin = pins.progs(hash).join(att.program);
    if old.netlink {
        let mut prog = SchedClassifier::from_pin(&prog_pin)?;
        attach_filter(&mut prog, att)?;
        let target = pin_path(pins, hash, att, modes);
        prog.pin(&target)
            .with_context(|| format!("recording {}", target.display()))?;
        return fs::remove_file(old_pin)
            .with_context(|| format!("unpinning {}", old_pin.display()));
    }
    let fd_link = FdLink::from(
        PinnedLink::from_pin(old_pin)
            .with_context(|| format!("opening pinned link {}", old_pin.display()))?,
    );
    let target = pin_path(pins, hash, att, modes);
    let link: FdLink = match att.kind {
        ProgKind::Tc => {
            let mut prog = SchedClassifier::from_pin(&prog_pin)?;
            let id = prog.attach_to_link(SchedClassifierLink::try_from(fd_link)?)?;
            prog.take_link(id)?.try_into()?
        }
        ProgKind::Xdp => {
            let mut prog = Xdp::from_pin(&prog_pin, XdpAttachType::Interface)?;
            let id = prog.attach_to_link(XdpLink::try_from(fd_link)?)?;
            prog.take_link(id)?.try_into()?
        }
        ProgKind::Sock(_) | ProgKind::Tail(_) => unreachable!("handled above / never attached"),
    };
    link.pin(&target)
        .with_context(|| format!("pinning link {}", target.display()))?;
    fs::remove_file(old_pin).with_context(|| format!("unpinning {}", old_pin.display()))
}
