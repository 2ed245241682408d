//! The TUN device that carries encrypted overlays where the kernel has no WireGuard: made
//! persistent by a command (so programs attach to it like to any device of netctl's, and it
//! outlives a daemon restart), served by the daemon's userspace WireGuard.

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{Context, Result};

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
// _IOW('T', 202, int) and _IOW('T', 203, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
// _IOR('T', 210, unsigned int).
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const IFF_PERSIST: libc::c_short = 0x0800;

fn ioctl(file: &File, request: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: the caller passes what the request reads (a plain integer or a live ifreq).
    match unsafe { libc::ioctl(file.as_raw_fd(), request, arg) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens (and so makes, if it does not exist) the TUN device `name`: bare IP packets, no
/// packet-information header. The file is one queue of the device.
pub fn open(name: &str) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun (the kernel has no TUN: load the tun module)")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    for (d, s) in req
        .name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    ioctl(&file, TUNSETIFF, &mut req as *mut IfReq as libc::c_ulong)
        .with_context(|| format!("attaching to TUN device {name}"))?;
    Ok(file)
}

/// Attaches to the persistent TUN device `name` that a command made; fails (and makes
/// nothing that stays) when there is none: opening by name would make a device of its own.
pub fn open_existing(name: &str) -> Result<File> {
    let file = open(name)?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    ioctl(&file, TUNGETIFF, &mut req as *mut IfReq as libc::c_ulong)
        .with_context(|| format!("reading TUN device {name}"))?;
    if req.flags & IFF_PERSIST == 0 {
        // Closing the file removes the device just made.
        anyhow::bail!("TUN device {name} is gone (its encrypted overlays were removed)");
    }
    Ok(file)
}

/// Makes the TUN device `name`, persistent: it stays (with no carrier, so it drops what is
/// sent to it) while nobody serves it.
pub fn create_persistent(name: &str) -> Result<()> {
    let file = open(name)?;
    ioctl(&file, TUNSETPERSIST, 1)
        .with_context(|| format!("making TUN device {name} persistent"))?;
    Ok(())
}
