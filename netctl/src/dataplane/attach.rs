//! Program attachments as pinned bpf_links: `links/<program>@<ifindex>@<object hash>`.
//!
//! A pin keeps its link (and so the attachment) alive after netctl exits. The ifindex in the
//! name tells a pin of a deleted interface from a live one; the hash tells links that still run
//! an older binary's programs, which are moved to the new programs in place (no gap).

use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{bail, Context, Result};
use aya::programs::{
    links::{CgroupAttachMode, FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
    CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
};
use aya_obj::programs::XdpAttachType;

use super::{
    load::ProgKind,
    pins::{file_name, list, Pins},
};
use crate::config::XdpMode;

/// One program attached to one interface (or, for socket programs, to the cgroup v2 root:
/// `ifname` is its path, `ifindex` 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub program: &'static str,
    pub kind: ProgKind,
    pub ifname: String,
    pub ifindex: u32,
    /// TC direction; unused for XDP.
    pub egress: bool,
}

impl Attachment {
    fn key(&self) -> (String, u32) {
        (self.program.to_string(), self.ifindex)
    }
}

struct Pinned {
    program: String,
    ifindex: u32,
    hash: String,
    path: std::path::PathBuf,
}

fn parse_pin(path: &Path) -> Option<Pinned> {
    let name = file_name(path);
    let mut parts = name.split('@');
    let (program, ifindex, hash) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Pinned {
        program: program.to_string(),
        ifindex: ifindex.parse().ok()?,
        hash: hash.to_string(),
        path: path.to_path_buf(),
    })
}

/// What changed, one line each, for the caller to report.
pub type Changes = Vec<String>;

/// Makes the pinned links exactly `desired`: detaches what is not wanted (or whose interface
/// is gone), moves links of older programs to `hash`'s programs, attaches what is missing.
pub fn reconcile(pins: &Pins, hash: &str, desired: &[Attachment], xdp: XdpMode) -> Result<Changes> {
    let mut changes = Changes::new();
    let wanted: BTreeSet<(String, u32)> = desired.iter().map(Attachment::key).collect();
    let mut have = BTreeSet::new();
    for path in list(&pins.links()) {
        let Some(pin) = parse_pin(&path) else {
            let _ = fs::remove_file(&path);
            continue;
        };
        let key = (pin.program.clone(), pin.ifindex);
        if !wanted.contains(&key) || have.contains(&key) {
            // Removing the last reference to a link detaches the program.
            fs::remove_file(&pin.path)
                .with_context(|| format!("unpinning {}", pin.path.display()))?;
            changes.push(format!(
                "detached {} from ifindex {}",
                pin.program, pin.ifindex
            ));
            continue;
        }
        if pin.hash != hash {
            let att = desired.iter().find(|a| a.key() == key).expect("wanted");
            replace(pins, hash, att, &pin.path)?;
            changes.push(format!("updated {} on {}", att.program, att.ifname));
        }
        have.insert(key);
    }
    for att in desired {
        if !have.contains(&att.key()) {
            let mode = attach(pins, hash, att, xdp)?;
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
pub fn attach_missing(pins: &Pins, hash: &str, att: &Attachment, xdp: XdpMode) -> Result<()> {
    if !pin_path(pins, hash, att).exists() {
        attach(pins, hash, att, xdp)?;
    }
    Ok(())
}

fn pin_path(pins: &Pins, hash: &str, att: &Attachment) -> std::path::PathBuf {
    pins.links()
        .join(format!("{}@{}@{}", att.program, att.ifindex, hash))
}

fn tc_direction(att: &Attachment) -> TcAttachType {
    if att.egress {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

/// Attaches and pins; returns a note on the mode used.
fn attach(pins: &Pins, hash: &str, att: &Attachment, xdp: XdpMode) -> Result<&'static str> {
    let prog_pin = pins.progs(hash).join(att.program);
    let target = pin_path(pins, hash, att);
    match att.kind {
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
            link.pin(&target)
                .with_context(|| format!("pinning link {}", target.display()))?;
            Ok(" (cgroup)")
        }
        ProgKind::Tc => {
            let mut prog = SchedClassifier::from_pin(&prog_pin)
                .with_context(|| format!("opening pinned program {}", prog_pin.display()))?;
            let id = prog
                .attach(&att.ifname, tc_direction(att))
                .with_context(|| format!("attaching {} to {} (TCX)", att.program, att.ifname))?;
            let link: FdLink = prog.take_link(id)?.try_into()?;
            link.pin(&target)
                .with_context(|| format!("pinning link {}", target.display()))?;
            Ok(" (tcx)")
        }
        ProgKind::Xdp => {
            let mut prog = Xdp::from_pin(&prog_pin, XdpAttachType::Interface)
                .with_context(|| format!("opening pinned program {}", prog_pin.display()))?;
            let tries: &[(AyaXdpMode, &'static str)] = match xdp {
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
                        link.pin(&target)
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

/// Moves an attached link to this binary's program atomically and re-pins it.
fn replace(pins: &Pins, hash: &str, att: &Attachment, old_pin: &Path) -> Result<()> {
    if let ProgKind::Sock(_) = att.kind {
        // The new program goes on beside the old one, then the old one goes: for a moment
        // both run, and the second finds nothing left to translate.
        attach(pins, hash, att, XdpMode::Off)?;
        return fs::remove_file(old_pin)
            .with_context(|| format!("unpinning {}", old_pin.display()));
    }
    let prog_pin = pins.progs(hash).join(att.program);
    let fd_link = FdLink::from(
        PinnedLink::from_pin(old_pin)
            .with_context(|| format!("opening pinned link {}", old_pin.display()))?,
    );
    let target = pin_path(pins, hash, att);
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
        ProgKind::Sock(_) => unreachable!("handled above"),
    };
    link.pin(&target)
        .with_context(|| format!("pinning link {}", target.display()))?;
    fs::remove_file(old_pin).with_context(|| format!("unpinning {}", old_pin.display()))
}
