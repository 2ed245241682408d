//! The listeners: UDP and TCP port 53 on the gateway address of every network with embedded
//! DNS. The asking container is the source address; the table says what it may know.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    task::JoinHandle,
};

use crate::{
    daemon::dns::forward,
    daemon::dns::message::{self, Reply, Transport},
    daemon::dns::stats::{Counters, Stats},
    daemon::dns::table::Table,
};
use std::sync::atomic::Ordering::Relaxed;

/// The current table; a reload swaps the inner `Arc` (queries in flight keep theirs).
pub type Shared = Arc<RwLock<Arc<Table>>>;

pub const PORT: u16 = 53;
/// Forwarded questions waiting for upstream at once; more are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 1024;
/// …of which one container may hold this many, so it cannot starve the others.
const MAX_IN_FLIGHT_PER_SOURCE: usize = 64;
/// TCP connections at once, and per container: beyond, a connection is closed at once
/// (one container cannot take the daemon's descriptors).
const MAX_TCP: usize = 512;
const MAX_TCP_PER_SOURCE: usize = 16;
/// A TCP client gets this long between questions, and this many questions per connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_MAX_QUERIES: usize = 1000;

fn current(table: &Shared) -> Arc<Table> {
    table.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How many of something each container holds at once, capped.
#[derive(Clone, Default)]
pub struct PerSource(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One held by a container; given back when dropped.
pub struct Held(PerSource, IpAddr);

impl PerSource {
    pub fn take(&self, from: IpAddr, max: usize) -> Option<Held> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(from).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held(self.clone(), from))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Prints a line at most once per `every` (a flood of errors must not flood the log).
struct Throttled {
    last: Option<Instant>,
    every: Duration,
    skipped: u64,
}

impl Throttled {
    const fn new(every: Duration) -> Self {
        Self {
            last: None,
            every,
            skipped: 0,
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            self.skipped += 1;
            return;
        }
        let more = std::mem::take(&mut self.skipped);
        let more = if more > 0 {
            format!(" ({more} more like it)")
        } else {
            String::new()
        };
        eprintln!("{}{more}", line());
        self.last = Some(Instant::now());
    }
}

/// The listening tasks, per gateway.
pub struct Listeners {
    running: BTreeMap<IpAddr, [JoinHandle<()>; 2]>,
    in_flight: Arc<Semaphore>,
    forwarding: PerSource,
    tcp: Arc<Semaphore>,
    tcp_per_source: PerSource,
    pub stats: Stats,
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
            forwarding: PerSource::default(),
            tcp: Arc::new(Semaphore::new(MAX_TCP)),
            tcp_per_source: PerSource::default(),
            stats: Stats::default(),
        }
    }

    /// Listens on exactly `want`: new gateways bound, gone ones closed. Returns the
    /// gateways it could not bind, with why.
    pub fn update(&mut self, want: &BTreeSet<IpAddr>, table: &Shared) -> Vec<String> {
        self.running.retain(|gw, tasks| {
            let keep = want.contains(gw) && !tasks.iter().any(|t| t.is_finished());
            if !keep {
                tasks.iter().for_each(|t| t.abort());
            }
            keep
        });
        self.stats.keep(want);
        let mut problems = Vec::new();
        for gw in want {
            if self.running.contains_key(gw) {
                continue;
            }
            match bind(*gw) {
                Ok((udp, tcp)) => {
                    let udp = tokio::spawn(serve_udp(
                        Arc::new(udp),
                        table.clone(),
                        self.in_flight.clone(),
                        self.forwarding.clone(),
                        self.stats.of(*gw),
                    ));
                    let tcp = tokio::spawn(serve_tcp(
                        tcp,
                        table.clone(),
                        self.tcp.clone(),
                        self.tcp_per_source.clone(),
                        self.stats.of(*gw),
                    ));
                    self.running.insert(*gw, [udp, tcp]);
                }
                Err(e) => problems.push(format!("{gw}:{PORT}: {e:#}")),
            }
        }
        problems
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.running.keys().copied().collect()
    }
}

/// Binds UDP and TCP on gw:53. IP_FREEBIND: a gateway whose bridge is being re-created (after
/// a reboot, before `sync`) is bound anyway and answers as soon as its address is back.
fn bind(gw: IpAddr) -> Result<(UdpSocket, TcpListener)> {
    let addr: SocketAddr = (gw, PORT).into();
    let socket = |ty: Type, proto: Protocol| -> Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
        match gw {
            IpAddr::V4(_) => s.set_freebind_v4(true)?,
            IpAddr::V6(_) => {
                s.set_freebind_v6(true)?;
                s.set_only_v6(true)?;
            }
        }
        s.set_reuse_address(true)?;
        Ok(s)
    };
    let udp = socket(Type::DGRAM, Protocol::UDP)?;
    udp.bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    udp.set_nonblocking(true)?;
    let tcp = socket(Type::STREAM, Protocol::TCP)?;
    tcp.bind(&addr.into())
        .with_context(|| format!("binding TCP {addr}"))?;
    tcp.listen(128)?;
    tcp.set_nonblocking(true)?;
    Ok((
        UdpSocket::from_std(udp.into())?,
        TcpListener::from_std(tcp.into())?,
    ))
}

async fn serve_udp(
    sock: Arc<UdpSocket>,
    table: Shared,
    in_flight: Arc<Semaphore>,
    forwarding: PerSource,
    stats: Arc<Counters>,
) {
    let mut buf = vec![0u8; 4096];
    let mut errors = Throttled::new(Duration::from_secs(10));
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                errors.log(|| format!("dns: receiving on {:?}: {e}", sock.local_addr()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let from = peer;
        let asked = Instant::now();
        stats.queries.fetch_add(1, Relaxed);
        match message::handle(&current(&table), from.ip(), &buf[..n], Transport::Udp) {
            Reply::Answer(bytes) => {
                let _ = sock.send_to(&bytes, peer).await;
                stats.local.fetch_add(1, Relaxed);
                stats.answered(asked.elapsed());
            }
            Reply::Forward(servers) => {
                // Over this container's share, or the daemon's: it retries.
                let (Some(mine), Ok(permit)) = (
                    forwarding.take(from.ip(), MAX_IN_FLIGHT_PER_SOURCE),
                    in_flight.clone().try_acquire_owned(),
                ) else {
                    stats.dropped.fetch_add(1, Relaxed);
                    continue;
                };
                stats.forwarded.fetch_add(1, Relaxed);
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                let stats = stats.clone();
                let dns64 = current(&table).dns64(from.ip());
                tokio::spawn(async move {
                    let answer = match forward::udp(&query, &servers).await {
                        Some(a) if dns64 => Some(forward::dns64(&query, a, &servers, false).await),
                        Some(a) => Some(a),
                        None => {
                            stats.forward_errors.fetch_add(1, Relaxed);
                            message::servfail(&query)
                        }
                    };
                    if let Some(a) = answer {
                        let _ = sock.send_to(&a, peer).await;
                        stats.answered(asked.elapsed());
                    }
                    drop((permit, mine));
                });
            }
            Reply::Ignore => {}
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    table: Shared,
    slots: Arc<Semaphore>,
    per_source: PerSource,
    stats: Arc<Counters>,
) {
    let mut errors = Throttled::new(Duration::from_secs(10));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Over its share, or the daemon's: closed at once (the client falls back or
                // retries), so descriptors stay for the others.
                let Some(mine) = per_source.take(peer.ip(), MAX_TCP_PER_SOURCE) else {
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let table = table.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    serve_tcp_client(stream, peer.ip(), table, &stats).await;
                    drop((slot, mine));
                });
            }
            Err(e) => {
                errors.log(|| format!("dns: accepting on {:?}: {e}", listener.local_addr()));
                // Out of descriptors (EMFILE) or memory: wait for some to be given back.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Length-prefixed questions (RFC 1035 4.2.2) until the client is done or idle.
async fn serve_tcp_client(mut s: TcpStream, from: IpAddr, table: Shared, stats: &Counters) {
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
        let asked = Instant::now();
        stats.queries.fetch_add(1, Relaxed);
        let answer = match message::handle(&current(&table), from, &query, Transport::Tcp) {
            Reply::Answer(a) => {
                stats.local.fetch_add(1, Relaxed);
                a
            }
            Reply::Forward(servers) => {
                stats.forwarded.fetch_add(1, Relaxed);
                let dns64 = current(&table).dns64(from);
                match forward::tcp(&query, &servers).await {
                    Some(a) if dns64 => forward::dns64(&query, a, &servers, true).await,
                    Some(a) => a,
                    None => {
                        stats.forward_errors.fetch_add(1, Relaxed);
                        match message::servfail(&query) {
                            Some(a) => a,
                            None => return,
                        }
                    }
                }
            }
            Reply::Ignore => return,
        };
        let mut out = (answer.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        if s.write_all(&out).await.is_err() {
            return;
        }
        stats.answered(asked.elapsed());
    }
}
