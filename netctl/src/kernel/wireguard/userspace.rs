//! WireGuard in userspace (boringtun's protocol state machine) for kernels without their
//! own: the daemon serves the TUN device — what the datapath sends into it is encrypted to
//! the peer whose containers include the destination, what arrives on the UDP port is
//! decrypted and written back into the device only if its source is one of the sending
//! peer's containers (WireGuard's cryptokey routing), where `wg_ingress` checks it again.

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use boringtun::{
    noise::{handshake::parse_handshake_anon, rate_limiter::RateLimiter, Packet, Tunn, TunnResult},
    x25519::{PublicKey, StaticSecret},
};
use nix::sys::socket::{setsockopt, sockopt};

use super::peer::Peer;

/// Handshakes a second before cookies are asked for (each is counted twice: checked before
/// it is routed to its peer, and again by that peer's state machine).
const HANDSHAKE_RATE: u64 = 200;
/// How often each peer's timers run (handshake retries, keepalives, session expiry).
const TICK: Duration = Duration::from_millis(250);
/// The UDP socket's buffers each way.
const SOCKET_BUFFER: usize = 8 << 20;
/// Room for any datagram and its encryption (boringtun wants the input + 32, at least 148).
const BUF: usize = 65_536 + 256;

struct Session {
    index: u32,
    endpoint: SocketAddrV4,
    allowed: BTreeSet<Ipv4Addr>,
    tunn: Arc<Mutex<Tunn>>,
}

#[derive(Default)]
struct Sessions {
    by_index: HashMap<u32, Arc<Session>>,
    by_key: HashMap<[u8; 32], Arc<Session>>,
    by_addr: HashMap<Ipv4Addr, Arc<Session>>,
}

struct Shared {
    tun: File,
    udp: UdpSocket,
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    sessions: RwLock<Sessions>,
    next_index: Mutex<u32>,
    stop: AtomicBool,
}

/// The running engine of one TUN device with one private key (a new key: a new engine).
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Engine {
    pub fn start(dev: &str, port: u16, secret: [u8; 32]) -> Result<Self> {
        let tun = super::tun::open_existing(dev)?;
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe {
            let flags = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).with_context(|| {
            format!(
                "binding UDP port {port} for WireGuard (set NETCTL_WIREGUARD_PORT to a free one)"
            )
        })?;
        udp.set_read_timeout(Some(TICK))?;
        // A burst of a fast sender outruns one decrypting thread: with the default buffer
        // (~200 KB) the kernel drops datagrams and TCP inside backs off (measured: a
        // retransmission for every 7 packets). Root may go past rmem_max.
        // (Best effort: the defaults still carry traffic, only slower.)
        let _ = setsockopt(&udp, sockopt::RcvBufForce, &SOCKET_BUFFER);
        let _ = setsockopt(&udp, sockopt::SndBufForce, &SOCKET_BUFFER);
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        let shared = Arc::new(Shared {
            tun,
            udp,
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE)),
            secret,
            public,
            sessions: RwLock::new(Sessions::default()),
            next_index: Mutex::new(1),
            stop: AtomicBool::new(false),
        });
        let out = shared.clone();
        let inn = shared.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("wg-out".into())
                .spawn(move || outbound(&out))?,
            std::thread::Builder::new()
                .name("wg-in".into())
                .spawn(move || inbound(&inn))?,
        ];
        Ok(Self { shared, threads })
    }

    /// Whether it still serves its device (it stops when the device goes).
    pub fn alive(&self) -> bool {
        !self.shared.stop.load(Ordering::Relaxed)
    }

    /// The peers as they should be: a peer kept (same key) keeps its session.
    pub fn set_peers(&self, peers: &[Peer]) {
        let s = &self.shared;
        let mut sessions = s.sessions.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Sessions::default();
        for p in peers {
            let (index, tunn) = match sessions.by_key.get(&p.public_key) {
                Some(old) => (old.index, old.tunn.clone()),
                None => {
                    let mut n = s.next_index.lock().unwrap_or_else(|e| e.into_inner());
                    let index = *n;
                    // Session indexes are 24 bits (the low 8 are boringtun's).
                    *n = (*n % 0x00ff_ffff) + 1;
                    let tunn = Tunn::new(
                        s.secret.clone(),
                        PublicKey::from(p.public_key),
                        None,
                        None,
                        index,
                        Some(s.limiter.clone()),
                    );
                    (index, Arc::new(Mutex::new(tunn)))
                }
            };
            let session = Arc::new(Session {
                index,
                endpoint: p.endpoint,
                allowed: p.allowed.iter().copied().collect(),
                tunn,
            });
            next.by_index.insert(index, session.clone());
            next.by_key.insert(p.public_key, session.clone());
            for a in &p.allowed {
                next.by_addr.insert(*a, session.clone());
            }
        }
        *sessions = next;
    }

    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Device → network: each packet to the peer whose containers include its destination,
/// what the device has ready sent in one `sendmmsg`.
fn outbound(s: &Shared) {
    let _stops = StopOnExit(&s.stop);
    let mut pkt = vec![0u8; BUF];
    let mut batch = Batch::new();
    let mut pfd = libc::pollfd {
        fd: s.tun.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !s.stop.load(Ordering::Relaxed) {
        // SAFETY: poll on one descriptor the engine owns.
        let ready = unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as i32) };
        if ready <= 0 {
            continue;
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            break;
        }
        // Bounded, so that a device kept full (a container flooding a peer) still lets the
        // engine see that it is to stop.
        for _ in 0..4 * BATCH {
            let n = match (&s.tun).read(&mut pkt) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // The device is gone (its networks removed): nothing left to serve.
                Err(_) => {
                    s.stop.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if n < 20 || pkt[0] >> 4 != 4 {
                continue;
            }
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            let Some(peer) = s.read_sessions().by_addr.get(&dst).cloned() else {
                continue;
            };
            let mut tunn = peer.tunn.lock().unwrap_or_else(|e| e.into_inner());
            let (slot, to) = batch.next(peer.endpoint);
            if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&pkt[..n], slot) {
                let len = d.len();
                batch.push(len, to);
            }
            drop(tunn);
            if batch.full() {
                batch.send(&s.udp);
            }
        }
        batch.send(&s.udp);
    }
    s.stop.store(true, Ordering::Relaxed);
}

/// Marks the engine stopped when a thread of it ends, however it ends (a panic too): the
/// daemon then starts a new one.
struct StopOnExit<'a>(&'a AtomicBool);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Encrypted datagrams waiting for one `sendmmsg`.
struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    to: Vec<libc::sockaddr_in>,
}

/// Datagrams one `sendmmsg` takes.
const BATCH: usize = 32;

impl Batch {
    fn new() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; BUF]).collect(),
            lens: Vec::with_capacity(BATCH),
            to: Vec::with_capacity(BATCH),
        }
    }

    fn full(&self) -> bool {
        self.lens.len() == BATCH
    }

    /// The next free buffer, and where its datagram goes.
    fn next(&mut self, to: SocketAddrV4) -> (&mut [u8], SocketAddrV4) {
        let i = self.lens.len();
        (&mut self.bufs[i], to)
    }

    fn push(&mut self, len: usize, to: SocketAddrV4) {
        self.lens.push(len);
        self.to.push(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.ip().octets()),
            },
            sin_zero: [0; 8],
        });
    }

    fn send(&mut self, udp: &UdpSocket) {
        let n = self.lens.len();
        if n == 0 {
            return;
        }
        let mut iov: Vec<libc::iovec> = (0..n)
            .map(|i| libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.lens[i],
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid; the pointers set below outlive the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = &mut self.to[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: the messages point at buffers and addresses alive for the call.
            let r = unsafe {
                libc::sendmmsg(
                    udp.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            match r {
                1.. => sent += r as usize,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                // The first one failed (that peer unreachable, say): the others still go.
                _ => sent += 1,
            }
        }
        self.lens.clear();
        self.to.clear();
    }
}

/// Network → device, and every peer's timers; what the socket has ready is taken in one
/// `recvmmsg`.
fn inbound(s: &Shared) {
    let _stops = StopOnExit(&s.stop);
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF]).collect();
    let mut out = vec![0u8; BUF];
    let mut ticked = Instant::now();
    let mut reset = Instant::now();
    while !s.stop.load(Ordering::Relaxed) {
        if ticked.elapsed() >= TICK {
            ticked = Instant::now();
            timers(s, &mut out);
        }
        if reset.elapsed() >= Duration::from_secs(1) {
            reset = Instant::now();
            s.limiter.reset_count();
        }
        // SAFETY: all-zero sockaddr_in and mmsghdr are valid; the pointers set below point
        // at buffers that outlive the call.
        let mut from: Vec<libc::sockaddr_in> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = &mut from[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // Blocks for the first (up to the socket's timeout, for the timers), not the rest.
        // SAFETY: the messages point at buffers and addresses alive for the call.
        let got = unsafe {
            libc::recvmmsg(
                s.udp.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        for i in 0..got.max(0) as usize {
            let sender = SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(from[i].sin_addr.s_addr)),
                u16::from_be(from[i].sin_port),
            );
            let len = msgs[i].msg_len as usize;
            received(s, &bufs[i][..len], sender, &mut out);
        }
    }
}

fn timers(s: &Shared, out: &mut [u8]) {
    let peers: Vec<Arc<Session>> = s.read_sessions().by_index.values().cloned().collect();
    for p in peers {
        let mut tunn = p.tunn.lock().unwrap_or_else(|e| e.into_inner());
        if let TunnResult::WriteToNetwork(d) = tunn.update_timers(out) {
            let _ = s.udp.send_to(d, p.endpoint);
        }
    }
}

fn received(s: &Shared, datagram: &[u8], from: SocketAddrV4, out: &mut [u8]) {
    // MAC1 and the handshake rate first, as boringtun's own device does: a forged
    // handshake must not cost a Diffie-Hellman (under load, a cookie is asked for).
    let ip = std::net::IpAddr::V4(*from.ip());
    let packet = match s.limiter.verify_packet(Some(ip), datagram, out) {
        Ok(packet) => packet,
        Err(TunnResult::WriteToNetwork(cookie)) => {
            let _ = s.udp.send_to(cookie, from);
            return;
        }
        Err(_) => return,
    };
    // Who it is for: a handshake names its sender's key (after decryption), anything else
    // the session index this side handed out.
    let session = match packet {
        Packet::HandshakeInit(p) => parse_handshake_anon(&s.secret, &s.public, &p)
            .ok()
            .and_then(|h| s.read_sessions().by_key.get(&h.peer_static_public).cloned()),
        Packet::HandshakeResponse(p) => s.session(p.receiver_idx),
        Packet::PacketCookieReply(p) => s.session(p.receiver_idx),
        Packet::PacketData(p) => s.session(p.receiver_idx),
    };
    let Some(peer) = session else {
        return;
    };
    let mut tunn = peer.tunn.lock().unwrap_or_else(|e| e.into_inner());
    match tunn.decapsulate(Some(ip), datagram, out) {
        TunnResult::WriteToNetwork(d) => {
            let _ = s.udp.send_to(d, from);
            // Packets queued while the handshake was under way go now.
            while let TunnResult::WriteToNetwork(d) = tunn.decapsulate(None, &[], out) {
                let _ = s.udp.send_to(d, peer.endpoint);
            }
        }
        // Cryptokey routing: only what this peer's containers sent goes in.
        TunnResult::WriteToTunnelV4(d, src) if peer.allowed.contains(&src) => {
            let _ = (&s.tun).write(d);
        }
        _ => {}
    }
}

impl Shared {
    fn read_sessions(&self) -> std::sync::RwLockReadGuard<'_, Sessions> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn session(&self, receiver: u32) -> Option<Arc<Session>> {
        self.read_sessions().by_index.get(&(receiver >> 8)).cloned()
    }
}
