//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for the kernel-drop tracer:
//! byte offsets of struct members (through anonymous unions and structs, as `sk_buff` nests
//! its headers) and the names of an enum's values (`skb_drop_reason`).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Type {
    name: u32,
    kind: u32,
    kflag: bool,
    /// size, or the referenced type
    size_type: u32,
    /// Offset of the kind-specific data after the 12-byte header.
    extra: usize,
    vlen: usize,
}

pub struct Btf {
    data: Vec<u8>,
    strings: usize,
    /// Index = type ID (0 is void).
    types: Vec<Type>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        Btf::parse(std::fs::read("/sys/kernel/btf/vmlinux").context("reading the kernel's BTF")?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Btf> {
        let u32_at = |d: &[u8], o: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                d.get(o..o + 4).context("BTF truncated")?.try_into()?,
            ))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not little-endian BTF");
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = hdr_len + u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let strings = hdr_len + u32_at(&data, 16)? as usize;
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            kflag: false,
            size_type: 0,
            extra: 0,
            vlen: 0,
        }];
        let mut o = type_off;
        while o < type_off + type_len {
            let info = u32_at(&data, o + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let t = Type {
                name: u32_at(&data, o)?,
                kind,
                kflag: info >> 31 == 1,
                size_type: u32_at(&data, o + 8)?,
                extra: o + 12,
                vlen,
            };
            o += 12
                + match kind {
                    1 | 14 | 17 => 4,                                         // int, var, decl tag
                    3 => 12,                                                  // array
                    KIND_STRUCT | KIND_UNION | 15 | KIND_ENUM64 => 12 * vlen, // members, datasec
                    KIND_ENUM | 13 => 8 * vlen, // enum values, func params
                    _ => 0,
                };
            types.push(t);
        }
        Ok(Btf {
            data,
            strings,
            types,
        })
    }

    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.data[o..o + 4].try_into().expect("4 bytes"))
    }

    fn name(&self, off: u32) -> &str {
        let start = self.strings + off as usize;
        let end = self.data[start..]
            .iter()
            .position(|b| *b == 0)
            .map_or(self.data.len(), |n| start + n);
        std::str::from_utf8(&self.data[start..end]).unwrap_or("")
    }

    fn find(&self, name: &str, kinds: &[u32]) -> Option<usize> {
        (1..self.types.len())
            .find(|&i| kinds.contains(&self.types[i].kind) && self.name(self.types[i].name) == name)
    }

    /// Follows typedefs and qualifiers to the type itself.
    fn resolve(&self, mut id: usize) -> usize {
        while let Some(t) = self.types.get(id) {
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_type as usize
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of member `member` of `struct name`, looking into anonymous members.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = self
            .find(name, &[KIND_STRUCT])
            .with_context(|| format!("struct {name} is not in the kernel's BTF"))?;
        self.offset_in(id, member)
            .map(|bits| bits / 8)
            .with_context(|| format!("struct {name} has no member {member}"))
    }

    /// Bit offset of `member` within composite type `id`.
    fn offset_in(&self, id: usize, member: &str) -> Option<u32> {
        let t = &self.types[id];
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for i in 0..t.vlen {
            let m = t.extra + 12 * i;
            let (mname, mtype, moff) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bits = if t.kflag { moff & 0xff_ffff } else { moff };
            let n = self.name(mname);
            if n == member {
                return Some(bits);
            }
            if n.is_empty() {
                if let Some(inner) = self.offset_in(self.resolve(mtype as usize), member) {
                    return Some(bits + inner);
                }
            }
        }
        None
    }

    /// Value → name of `enum name`'s values.
    pub fn enum_values(&self, name: &str) -> Result<BTreeMap<u64, String>> {
        let id = self
            .find(name, &[KIND_ENUM, KIND_ENUM64])
            .with_context(|| format!("enum {name} is not in the kernel's BTF"))?;
        let t = &self.types[id];
        let step = if t.kind == KIND_ENUM { 8 } else { 12 };
        Ok((0..t.vlen)
            .map(|i| {
                let v = t.extra + step * i;
                let lo = u64::from(self.u32_at(v + 4));
                let value = if t.kind == KIND_ENUM64 {
                    lo | u64::from(self.u32_at(v + 8)) << 32
                } else {
                    lo
                };
                (value, self.name(self.u32_at(v)).to_string())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_sk_buff_and_drop_reasons() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no kernel BTF here");
            return;
        };
        let head = btf.member_offset("sk_buff", "head").unwrap();
        let nh = btf.member_offset("sk_buff", "network_header").unwrap();
        assert!(head > 0 && nh > 0 && head != nh);
        assert!(btf.member_offset("sk_buff", "no_such_member").is_err());
        assert!(btf.member_offset("net_device", "ifindex").is_ok());
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            reasons.values().any(|n| n == "SKB_DROP_REASON_NO_SOCKET"),
            "{reasons:?}"
        );
        assert!(Btf::parse(vec![0; 32]).is_err());
    }
}
