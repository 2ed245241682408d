//! Reading and rewriting packets, the same way in TC and XDP. TC rewrites through the kernel's
//! store and checksum helpers (which know about partial checksums); XDP writes memory directly
//! and updates checksums incrementally (RFC 1624).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_adjust_meta, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use netctl_common::{event::SNAP_MAX, features, maps::UPLINK_XDP_NAT, XDP_DONE_MARK};

/// The L4 checksum a rewrite has to keep right.
#[derive(Clone, Copy)]
pub struct L4Csum {
    /// Offset of the checksum field.
    pub off: usize,
    /// The checksum covers the IPv4 pseudo header (TCP, UDP; not ICMP).
    pub pseudo: bool,
    /// UDP: a zero checksum means "none" and must stay zero.
    pub udp: bool,
}

pub trait Packet {
    /// Only IPv4 headers without options: XDP's direct packet access needs constant offsets
    /// to satisfy the verifier; TC (which loads through helpers) takes any header length.
    const NO_IP_OPTIONS: bool;
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    fn len(&self) -> u32;
    /// Replaces the IPv4 address at `off` (`old` → `new`), fixing the IP header checksum at
    /// `ip_csum` and the L4 checksum.
    fn set_addr(
        &mut self,
        off: usize,
        old: u32,
        new: u32,
        ip_csum: usize,
        l4: Option<L4Csum>,
    ) -> Option<()>;
    /// Replaces a 16-bit port or identifier at `off`, fixing the L4 checksum.
    fn set_port(&mut self, off: usize, old: u16, new: u16, l4: Option<L4Csum>) -> Option<()>;
    /// Writes Ethernet addresses (no checksum involved).
    fn set_macs(&mut self, dst: &[u8; 6], src: &[u8; 6]) -> Option<()>;
    /// Writes a 16-bit field without touching any checksum.
    fn store16(&mut self, off: usize, v: u16) -> Option<()>;
    /// Writes a 32-bit field without touching any checksum.
    fn store32(&mut self, off: usize, v: u32) -> Option<()>;
    /// Adjusts the plain checksum (no pseudo header, not the skb's) at `csum` for a 16-bit
    /// field that changed from `old` to `new`.
    fn csum16(&mut self, csum: usize, old: u16, new: u16) -> Option<()>;
    /// The same for a 32-bit field.
    fn csum32(&mut self, csum: usize, old: u32, new: u32) -> Option<()>;
    /// The program's context, for helpers that take it (socket and FIB lookups).
    fn ctx(&self) -> *mut core::ffi::c_void;
    /// Copies the packet's first bytes into `buf`; returns how many.
    fn snapshot(&self, buf: &mut [u8; SNAP_MAX]) -> u32;
}

pub struct Tc<'a>(pub &'a TcContext);

impl Packet for Tc<'_> {
    const NO_IP_OPTIONS: bool = false;

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load::<T>(off).ok()
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        self.0.len()
    }

    #[inline(always)]
    fn set_addr(
        &mut self,
        off: usize,
        old: u32,
        new: u32,
        ip_csum: usize,
        l4: Option<L4Csum>,
    ) -> Option<()> {
        if let Some(l4) = l4.filter(|l| l.pseudo) {
            let mut flags = 4u64 | BPF_F_PSEUDO_HDR as u64;
            if l4.udp {
                flags |= BPF_F_MARK_MANGLED_0 as u64;
            }
            self.0
                .l4_csum_replace(l4.off, old as u64, new as u64, flags)
                .ok()?;
        }
        self.0
            .l3_csum_replace(ip_csum, old as u64, new as u64, 4)
            .ok()?;
        self.0.store(off, &new, 0).ok()
    }

    #[inline(always)]
    fn set_port(&mut self, off: usize, old: u16, new: u16, l4: Option<L4Csum>) -> Option<()> {
        if let Some(l4) = l4 {
            let mut flags = 2u64;
            if l4.udp {
                flags |= BPF_F_MARK_MANGLED_0 as u64;
            }
            self.0
                .l4_csum_replace(l4.off, old as u64, new as u64, flags)
                .ok()?;
        }
        self.0.store(off, &new, 0).ok()
    }

    #[inline(always)]
    fn set_macs(&mut self, dst: &[u8; 6], src: &[u8; 6]) -> Option<()> {
        self.0.store(0, dst, 0).ok()?;
        self.0.store(6, src, 0).ok()
    }

    #[inline(always)]
    fn store16(&mut self, off: usize, v: u16) -> Option<()> {
        self.0.store(off, &v, 0).ok()
    }

    #[inline(always)]
    fn store32(&mut self, off: usize, v: u32) -> Option<()> {
        self.0.store(off, &v, 0).ok()
    }

    #[inline(always)]
    fn csum16(&mut self, csum: usize, old: u16, new: u16) -> Option<()> {
        // l3_csum_replace is the plain RFC 1624 update, whatever the skb's checksum state.
        self.0
            .l3_csum_replace(csum, u64::from(old), u64::from(new), 2)
            .ok()
    }

    #[inline(always)]
    fn csum32(&mut self, csum: usize, old: u32, new: u32) -> Option<()> {
        self.0
            .l3_csum_replace(csum, u64::from(old), u64::from(new), 4)
            .ok()
    }

    #[inline(always)]
    fn ctx(&self) -> *mut core::ffi::c_void {
        self.0.skb.skb.cast()
    }

    #[inline(always)]
    fn snapshot(&self, buf: &mut [u8; SNAP_MAX]) -> u32 {
        let Some(n) = snap_len(self.0.len()) else {
            return 0;
        };
        // SAFETY: helper call; n is within 1..=SNAP_MAX, the buffer's size.
        let ret =
            unsafe { bpf_skb_load_bytes(self.0.skb.skb.cast(), 0, buf.as_mut_ptr().cast(), n) };
        if ret == 0 {
            n
        } else {
            0
        }
    }
}

pub struct Xdp<'a>(pub &'a XdpContext);

impl Xdp<'_> {
    #[inline(always)]
    fn ptr<T>(&self, off: usize) -> Option<*mut T> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + off + core::mem::size_of::<T>() > end {
            return None;
        }
        Some((start + off) as *mut T)
    }

    /// Adds `new - old` (one's complement) to the 16-bit checksum at `off`.
    #[inline(always)]
    fn csum_update(&mut self, off: usize, old: u32, new: u32, udp: bool) -> Option<()> {
        let p = self.ptr::<u16>(off)?;
        // SAFETY: bounds checked by ptr().
        let cur = unsafe { p.read_unaligned() };
        if udp && cur == 0 {
            return Some(());
        }
        let mut sum = u32::from(!cur);
        sum += (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
        let mut folded = fold(sum);
        if udp && folded == 0 {
            folded = 0xffff;
        }
        unsafe { p.write_unaligned(folded) };
        Some(())
    }
}

impl Xdp<'_> {
    /// Makes room for [`XDP_DONE_MARK`] in the metadata area (zeroed). False when the driver
    /// keeps no metadata: then XDP must leave the packet to TC.
    #[inline(always)]
    pub fn reserve_mark(&mut self) -> bool {
        if !crate::features::has(features::XDP_ADJUST_META) {
            return false;
        }
        // SAFETY: helper call on this program's context.
        if unsafe { bpf_xdp_adjust_meta(self.0.ctx, -(MARK_LEN as i32)) } != 0 {
            return false;
        }
        self.write_mark(0)
    }

    /// Writes the mark reserved by [`Self::reserve_mark`].
    #[inline(always)]
    pub fn write_mark(&mut self, mark: u32) -> bool {
        let meta = self.0.metadata();
        if meta + MARK_LEN > self.0.data() {
            return false;
        }
        // SAFETY: bounds checked against data (the end of the metadata area).
        unsafe { (meta as *mut u32).write_unaligned(mark) };
        true
    }
}

const MARK_LEN: usize = core::mem::size_of::<u32>();

/// Whether `uplink_xdp` did this packet's ingress work (its mark in the metadata area).
#[inline(always)]
pub fn xdp_done(ctx: &TcContext, ifindex: u32) -> bool {
    // Only where netctl's XDP runs and translates: another program's metadata proves nothing.
    if crate::maps::uplink(ifindex).is_none_or(|u| u.flags & UPLINK_XDP_NAT == 0) {
        return false;
    }
    // SAFETY: the context's skb pointer is valid for the whole run.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + MARK_LEN > data {
        return false;
    }
    // SAFETY: bounds checked against data (the end of the metadata area).
    unsafe { (meta as *const u32).read_unaligned() == XDP_DONE_MARK }
}

/// Bytes to copy for a snapshot: 1..=SNAP_MAX, in a form the verifier can bound (a masked
/// value the compiler cannot fold away).
#[inline(always)]
fn snap_len(len: u32) -> Option<u32> {
    if len == 0 {
        return None;
    }
    let n = if len < SNAP_MAX as u32 {
        len
    } else {
        SNAP_MAX as u32
    };
    // SAFETY: a volatile read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    Some(((n - 1) & (SNAP_MAX as u32 - 1)) + 1)
}

#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The Internet checksum of `v`, a message built in memory with its checksum field zero
/// (and, for ICMPv6, its pseudo header in front): the value for that field. `T`'s size is
/// a multiple of 4, as the helper requires.
#[inline(always)]
pub fn checksum_of<T>(v: &mut T) -> Option<u16> {
    // SAFETY: helper call over memory of the size given, valid for the call.
    let sum = unsafe {
        aya_ebpf::helpers::bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            v as *mut T as *mut u32,
            core::mem::size_of::<T>() as u32,
            0,
        )
    };
    (sum >= 0).then(|| fold(sum as u32))
}

impl Packet for Xdp<'_> {
    const NO_IP_OPTIONS: bool = true;

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        // SAFETY: bounds checked by ptr().
        self.ptr::<T>(off).map(|p| unsafe { p.read_unaligned() })
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (self.0.data_end() - self.0.data()) as u32
    }

    #[inline(always)]
    fn set_addr(
        &mut self,
        off: usize,
        old: u32,
        new: u32,
        ip_csum: usize,
        l4: Option<L4Csum>,
    ) -> Option<()> {
        let p = self.ptr::<u32>(off)?;
        self.csum_update(ip_csum, old, new, false)?;
        if let Some(l4) = l4 {
            if l4.pseudo {
                self.csum_update(l4.off, old, new, l4.udp)?;
            }
        }
        unsafe { p.write_unaligned(new) };
        Some(())
    }

    #[inline(always)]
    fn set_port(&mut self, off: usize, old: u16, new: u16, l4: Option<L4Csum>) -> Option<()> {
        let p = self.ptr::<u16>(off)?;
        if let Some(l4) = l4 {
            self.csum_update(l4.off, u32::from(old), u32::from(new), l4.udp)?;
        }
        unsafe { p.write_unaligned(new) };
        Some(())
    }

    #[inline(always)]
    fn set_macs(&mut self, dst: &[u8; 6], src: &[u8; 6]) -> Option<()> {
        let p = self.ptr::<[u8; 12]>(0)?;
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(dst);
        macs[6..].copy_from_slice(src);
        unsafe { p.write_unaligned(macs) };
        Some(())
    }

    #[inline(always)]
    fn store16(&mut self, off: usize, v: u16) -> Option<()> {
        let p = self.ptr::<u16>(off)?;
        unsafe { p.write_unaligned(v) };
        Some(())
    }

    #[inline(always)]
    fn store32(&mut self, off: usize, v: u32) -> Option<()> {
        let p = self.ptr::<u32>(off)?;
        unsafe { p.write_unaligned(v) };
        Some(())
    }

    #[inline(always)]
    fn csum16(&mut self, csum: usize, old: u16, new: u16) -> Option<()> {
        self.csum_update(csum, u32::from(old), u32::from(new), false)
    }

    #[inline(always)]
    fn csum32(&mut self, csum: usize, old: u32, new: u32) -> Option<()> {
        self.csum_update(csum, old, new, false)
    }

    #[inline(always)]
    fn ctx(&self) -> *mut core::ffi::c_void {
        self.0.ctx.cast()
    }

    #[inline(always)]
    fn snapshot(&self, buf: &mut [u8; SNAP_MAX]) -> u32 {
        let Some(n) = snap_len(self.len()) else {
            return 0;
        };
        if !crate::features::has(features::XDP_LOAD_BYTES) {
            return 0;
        }
        // SAFETY: helper call; n is within 1..=SNAP_MAX, the buffer's size.
        let ret = unsafe { bpf_xdp_load_bytes(self.0.ctx, 0, buf.as_mut_ptr().cast(), n) };
        if ret == 0 {
            n
        } else {
            0
        }
    }
}
