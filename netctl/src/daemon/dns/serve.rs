//! The listeners: UDP and TCP port 53 on the gateway address of every network with embedded
//! DNS. The asking container is the source address; the table says what it may know.
//!
//! UDP, the hot path, is a plain thread per gateway blocked in `recvfrom`: the kernel wakes
//! it straight away, without an event loop round per question (about a third of the CPU a
//! question cost through tokio). Forwarded questions and TCP go to the tokio runtime.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Handle,
    sync::Semaphore,
    task::JoinHandle,
};

use super::{
    forward,
    message::{self, Reply},
    table::Table,
};

/// The current table; a reload swaps the inner `Arc` (queries in flight keep theirs).
pub type Shared = Arc<RwLock<Arc<Table>>>;

pub const PORT: u16 = 53;
/// Forwarded questions waiting for upstream at once; more are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 1024;
/// A TCP client gets this long between questions, and this many questions per connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_MAX_QUERIES: usize = 1000;
/// How often a UDP thread looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

fn current(table: &Shared) -> Arc<Table> {
    table.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// One gateway's listeners: the UDP thread (stopped through its flag) and the TCP task.
struct Listening {
    udp_stop: Arc<AtomicBool>,
    udp: std::thread::JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl Listening {
    fn alive(&self) -> bool {
        !self.udp.is_finished() && !self.tcp.is_finished()
    }

    fn stop(&self) {
        self.udp_stop.store(true, Ordering::Relaxed);
        self.tcp.abort();
    }
}

/// The listeners, per gateway.
pub struct Listeners {
    running: BTreeMap<Ipv4Addr, Listening>,
    in_flight: Arc<Semaphore>,
}

impl Default for Listeners {
    fn default() -> Self {
        Self::new()
    }
}

impl Listeners {
    pub fn new() -> Self {
        Self {
            running: BTreeMap::new(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Listens on exactly `want`: new gateways bound, gone ones closed. Returns the
    /// gateways it could not bind, with why.
    pub fn update(&mut self, want: &BTreeSet<Ipv4Addr>, table: &Shared) -> Vec<String> {
        self.running.retain(|gw, l| {
            let keep = want.contains(gw) && l.alive();
            if !keep {
                l.stop();
            }
            keep
        });
        let mut problems = Vec::new();
        for gw in want {
            if self.running.contains_key(gw) {
                continue;
            }
            let started = bind(*gw).and_then(|(udp, tcp)| {
                let udp_stop = Arc::new(AtomicBool::new(false));
                let tcp_table = table.clone();
                let (table, in_flight, stop) =
                    (table.clone(), self.in_flight.clone(), udp_stop.clone());
                let rt = Handle::current();
                let udp = std::thread::Builder::new()
                    .name(format!("dns {gw}"))
                    .spawn(move || serve_udp(udp, table, in_flight, rt, stop))?;
                let tcp = tokio::spawn(serve_tcp(tcp, tcp_table));
                Ok(Listening { udp_stop, udp, tcp })
            });
            match started {
                Ok(l) => {
                    self.running.insert(*gw, l);
                }
                Err(e) => problems.push(format!("{gw}:{PORT}: {e:#}")),
            }
        }
        problems
    }

    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.running.keys().copied().collect()
    }
}

/// Binds UDP and TCP on gw:53. IP_FREEBIND: a gateway whose bridge is being re-created (after
/// a reboot, before `sync`) is bound anyway and answers as soon as its address is back.
fn bind(gw: Ipv4Addr) -> Result<(std::net::UdpSocket, TcpListener)> {
    let addr: SocketAddr = (gw, PORT).into();
    let udp = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    udp.set_freebind_v4(true)?;
    udp.set_reuse_address(true)?;
    udp.bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    udp.set_read_timeout(Some(STOP_CHECK))?;
    let tcp = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    tcp.set_freebind_v4(true)?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&addr.into())
        .with_context(|| format!("binding TCP {addr}"))?;
    tcp.listen(128)?;
    tcp.set_nonblocking(true)?;
    Ok((udp.into(), TcpListener::from_std(tcp.into())?))
}

fn serve_udp(
    sock: std::net::UdpSocket,
    table: Shared,
    in_flight: Arc<Semaphore>,
    rt: Handle,
    stop: Arc<AtomicBool>,
) {
    let sock = Arc::new(sock);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                eprintln!("dns: receiving on {:?}: {e}", sock.local_addr());
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let SocketAddr::V4(from) = peer else {
            continue;
        };
        match message::handle(&current(&table), *from.ip(), &buf[..n]) {
            Reply::Answer(bytes) => {
                let _ = sock.send_to(&bytes, peer);
            }
            Reply::Forward(servers) => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                rt.spawn(async move {
                    let answer = match forward::udp(&query, &servers).await {
                        Some(a) => Some(a),
                        None => message::servfail(&query),
                    };
                    if let Some(a) = answer {
                        // A datagram socket's send does not wait for the peer.
                        let _ = sock.send_to(&a, peer);
                    }
                    drop(permit);
                });
            }
            Reply::Ignore => {}
        }
    }
}

async fn serve_tcp(listener: TcpListener, table: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, SocketAddr::V4(peer))) => {
                tokio::spawn(serve_tcp_client(stream, *peer.ip(), table.clone()));
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("dns: accepting on {:?}: {e}", listener.local_addr());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Length-prefixed questions (RFC 1035 4.2.2) until the client is done or idle.
async fn serve_tcp_client(mut s: TcpStream, from: Ipv4Addr, table: Shared) {
    for _ in 0..TCP_MAX_QUERIES {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return;
        };
        let mut query = vec![0u8; len as usize];
        if tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .is_err()
        {
            return;
        }
        let answer = match message::handle(&current(&table), from, &query) {
            Reply::Answer(a) => a,
            Reply::Forward(servers) => match forward::tcp(&query, &servers).await {
                Some(a) => a,
                None => match message::servfail(&query) {
                    Some(a) => a,
                    None => return,
                },
            },
            Reply::Ignore => return,
        };
        let mut out = (answer.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}
