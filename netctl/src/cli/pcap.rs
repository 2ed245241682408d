//! A pcapng writer: one interface block per (interface, hook) so the capture records where and
//! in which direction each packet was seen; tcpdump and Wireshark read it.

use std::{collections::BTreeMap, io::Write};

use anyhow::Result;

const LINKTYPE_ETHERNET: u16 = 1;

pub struct Pcap<W: Write> {
    out: W,
    interfaces: BTreeMap<(u32, u8), u32>,
    snaplen: u32,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// An option: code, value, padded.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend(code.to_le_bytes());
    buf.extend((value.len() as u16).to_le_bytes());
    buf.extend(value);
    buf.resize(pad4(buf.len()), 0);
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> std::io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

impl<W: Write> Pcap<W> {
    pub fn new(mut out: W, snaplen: u32) -> Result<Self> {
        let mut shb = Vec::new();
        shb.extend(0x1A2B_3C4Du32.to_le_bytes());
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        shb.extend((-1i64).to_le_bytes());
        option(&mut shb, 4, b"netctl trace"); // shb_userappl
        shb.extend([0, 0, 0, 0]); // opt_endofopt
        block(&mut out, 0x0A0D_0D0A, &shb)?;
        Ok(Self {
            out,
            interfaces: BTreeMap::new(),
            snaplen,
        })
    }

    /// Writes one packet seen on `ifname` (ifindex) by `hook`; `inbound` sets the direction.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        ifindex: u32,
        hook: u8,
        name: &str,
        inbound: bool,
        ts_ns: u64,
        orig_len: u32,
        data: &[u8],
    ) -> Result<()> {
        let next = self.interfaces.len() as u32;
        let id = match self.interfaces.get(&(ifindex, hook)) {
            Some(id) => *id,
            None => {
                let mut idb = Vec::new();
                idb.extend(LINKTYPE_ETHERNET.to_le_bytes());
                idb.extend(0u16.to_le_bytes());
                idb.extend(self.snaplen.to_le_bytes());
                option(&mut idb, 2, name.as_bytes()); // if_name
                option(&mut idb, 9, &[9]); // if_tsresol: nanoseconds
                idb.extend([0, 0, 0, 0]);
                block(&mut self.out, 1, &idb)?;
                self.interfaces.insert((ifindex, hook), next);
                next
            }
        };
        let mut epb = Vec::new();
        epb.extend(id.to_le_bytes());
        epb.extend(((ts_ns >> 32) as u32).to_le_bytes());
        epb.extend((ts_ns as u32).to_le_bytes());
        epb.extend((data.len() as u32).to_le_bytes());
        epb.extend(orig_len.to_le_bytes());
        epb.extend(data);
        epb.resize(pad4(epb.len()), 0);
        let flags: u32 = if inbound { 1 } else { 2 }; // epb_flags: direction
        option(&mut epb, 2, &flags.to_le_bytes());
        epb.extend([0, 0, 0, 0]);
        block(&mut self.out, 6, &epb)?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_well_formed() {
        let mut buf = Vec::new();
        {
            let mut p = Pcap::new(&mut buf, 128).unwrap();
            p.packet(
                3,
                1,
                "up0 uplink-ingress",
                true,
                1_000_000_123,
                60,
                &[0xab; 42],
            )
            .unwrap();
            p.packet(
                3,
                1,
                "up0 uplink-ingress",
                true,
                1_000_000_456,
                60,
                &[0xcd; 42],
            )
            .unwrap();
        }
        // Walk the blocks: each starts and ends with the same total length, 4-byte aligned.
        let mut off = 0;
        let mut kinds = Vec::new();
        while off < buf.len() {
            let kind = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap());
            let len = u32::from_le_bytes(buf[off + 4..off + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let tail =
                u32::from_le_bytes(buf[off + len - 4..off + len].try_into().unwrap()) as usize;
            assert_eq!(len, tail);
            kinds.push(kind);
            off += len;
        }
        assert_eq!(
            kinds,
            vec![0x0A0D_0D0A, 1, 6, 6],
            "one interface block for one interface"
        );
    }
}
