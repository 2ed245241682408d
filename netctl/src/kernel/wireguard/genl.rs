//! The kernel's WireGuard device, configured through generic netlink (what `wg set` does):
//! its private key and port, and its peers with their allowed addresses.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlMessage,
};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NlAddr};
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};

/// One peer as the device should have it.
pub struct PeerSet<'a> {
    pub public_key: [u8; 32],
    pub endpoint: SocketAddrV4,
    pub allowed: &'a [Ipv4Addr],
}

/// What one `set` changes.
pub enum PeerChange<'a> {
    /// Added, or its endpoint and allowed addresses replaced.
    Set(PeerSet<'a>),
    Remove([u8; 32]),
}

impl PeerChange<'_> {
    pub fn key(&self) -> [u8; 32] {
        match self {
            PeerChange::Set(p) => p.public_key,
            PeerChange::Remove(k) => *k,
        }
    }
}

/// Allowed addresses per message: an attribute's length is 16 bits, and a peer may have
/// thousands.
const ALLOWED_PER_MESSAGE: usize = 256;

/// How long the kernel may take to answer.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A generic netlink socket with the WireGuard family resolved: one serves many requests.
pub struct Genl {
    sock: Socket,
    family: u16,
    seq: u32,
}

impl Genl {
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC).context("opening a generic netlink socket")?;
        sock.bind_auto()
            .context("binding a generic netlink socket")?;
        sock.connect(&NlAddr::new(0, 0))
            .context("connecting a generic netlink socket")?;
        let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        setsockopt(&sock, ReceiveTimeout, &timeout).context("generic netlink socket timeout")?;
        let mut g = Genl {
            sock,
            family: 0,
            seq: 0,
        };
        g.family = g.resolve()?;
        Ok(g)
    }

    fn resolve(&mut self) -> Result<u16> {
        let msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        for reply in self.request(msg, NLM_F_REQUEST)? {
            if let NetlinkPayload::InnerMessage(m) = reply.payload {
                if let Some(id) = m.payload.nlas.iter().find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                }) {
                    return Ok(id);
                }
            }
        }
        bail!("the kernel has no WireGuard (no generic netlink family \"wireguard\")")
    }

    /// Sends one request and reads its replies up to the acknowledgement (or the one reply).
    fn request<F>(
        &mut self,
        mut msg: GenlMessage<F>,
        flags: u16,
    ) -> Result<Vec<NetlinkMessage<GenlMessage<F>>>>
    where
        F: netlink_packet_generic::GenlFamily
            + netlink_packet_core::Emitable
            + netlink_packet_core::ParseableParametrized<[u8], netlink_packet_generic::GenlHeader>
            + std::fmt::Debug,
    {
        if self.family != 0 {
            msg.set_resolved_family_id(self.family);
        }
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .context("sending to generic netlink")?;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 65536];
        loop {
            let n = self
                .sock
                .recv(&mut &mut rx[..], 0)
                .context("reading from generic netlink")?;
            let mut at = 0;
            while at < n {
                let reply = NetlinkMessage::<GenlMessage<F>>::deserialize(&rx[at..n])
                    .map_err(|e| anyhow!("a generic netlink reply the kernel sent: {e}"))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number != self.seq {
                    // An answer to an earlier request (one that timed out): not this one's.
                    at += (len.max(1) + 3) & !3;
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(ref e) => {
                        if let Some(code) = e.code {
                            return Err(std::io::Error::from_raw_os_error(-code.get()).into());
                        }
                        return Ok(out);
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
                out.push(reply);
                if flags & NLM_F_ACK == 0 {
                    return Ok(out);
                }
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Applies one peer change. A peer's allowed addresses go in messages of
    /// [`ALLOWED_PER_MESSAGE`]: the first replaces them, the others add to them.
    pub fn set_peer(&mut self, dev: &str, change: &PeerChange) -> Result<()> {
        let peers: Vec<WireguardPeer> = match change {
            PeerChange::Remove(key) => vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])],
            PeerChange::Set(p) => {
                let chunks: Vec<&[Ipv4Addr]> = match p.allowed.is_empty() {
                    true => vec![&[]],
                    false => p.allowed.chunks(ALLOWED_PER_MESSAGE).collect(),
                };
                chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        let mut attrs = vec![WireguardPeerAttribute::PublicKey(p.public_key)];
                        if i == 0 {
                            attrs.push(WireguardPeerAttribute::Flags(
                                WireguardPeerFlags::ReplaceAllowedIps,
                            ));
                            attrs
                                .push(WireguardPeerAttribute::Endpoint(SocketAddr::V4(p.endpoint)));
                        }
                        attrs.push(WireguardPeerAttribute::AllowedIps(
                            chunk.iter().map(|ip| allowed_ip(*ip)).collect(),
                        ));
                        WireguardPeer(attrs)
                    })
                    .collect()
            }
        };
        for peer in peers {
            self.set(vec![
                WireguardAttribute::IfName(dev.to_string()),
                WireguardAttribute::Peers(vec![peer]),
            ])
            .with_context(|| format!("setting a peer of WireGuard device {dev}"))?;
        }
        Ok(())
    }

    fn set(&mut self, attributes: Vec<WireguardAttribute>) -> Result<()> {
        let msg = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes,
        });
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK)?;
        Ok(())
    }
}

/// Whether this kernel has WireGuard (the family resolves; the kernel loads the module when
/// it is one).
pub fn available() -> bool {
    Genl::open().is_ok()
}

/// Sets the device's private key and port; `replace_peers` first removes every peer (a
/// device this process has not configured before: whatever it holds is stale).
pub fn set_device(dev: &str, private_key: &[u8; 32], port: u16, replace_peers: bool) -> Result<()> {
    let mut attrs = vec![
        WireguardAttribute::IfName(dev.to_string()),
        WireguardAttribute::PrivateKey(*private_key),
        WireguardAttribute::ListenPort(port),
    ];
    if replace_peers {
        attrs.push(WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers,
        ));
    }
    Genl::open()?
        .set(attrs)
        .with_context(|| format!("configuring WireGuard device {dev} (port {port})"))
}

fn allowed_ip(ip: Ipv4Addr) -> WireguardAllowedIp {
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
        WireguardAllowedIpAttr::IpAddr(ip.into()),
        WireguardAllowedIpAttr::Cidr(32),
    ])
}
