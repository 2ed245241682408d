//! The benchmark's own load generator and server (no external tool does connect-request-close
//! rates with latency percentiles here). Every run is bounded in time; it only talks to the
//! address it is given, which the benchmark points inside its sandbox.
//!
//!   loadgen serve PORT                      TCP request/response + UDP echo on PORT
//!   loadgen crr ADDR:PORT SECS WORKERS      new connection, one request, close
//!   loadgen rr ADDR:PORT SECS WORKERS       requests on kept-open connections
//!   loadgen udp ADDR:PORT SECS WORKERS      UDP request/response
//!   loadgen udp4k ADDR:PORT SECS WORKERS    the same with 4,000-byte datagrams (fragmented)
//!   loadgen hold ADDR:PORT COUNT SECS       opens COUNT TCP connections and keeps them idle
//!                                           for SECS (a neighbour that hoards a server's
//!                                           connections); prints {"opened", "kept"}
//!
//! Clients print one JSON object: {"ops": N, "secs": S, "rate": N/S, "p50_us", "p99_us", "errors"}.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: loadgen serve PORT | crr|rr|udp|udp4k ADDR:PORT SECS WORKERS | hold ADDR:PORT COUNT SECS";
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(args[2].parse().expect(usage)),
        Some("hold") => hold(
            args[2].parse().expect(usage),
            args[3].parse().expect(usage),
            Duration::from_secs_f64(args[4].parse().expect(usage)),
        ),
        Some(mode @ ("crr" | "rr" | "udp" | "udp4k")) => {
            let addr: SocketAddr = args[2].parse().expect(usage);
            let secs: f64 = args[3].parse().expect(usage);
            let workers: usize = args[4].parse().expect(usage);
            client(mode, addr, Duration::from_secs_f64(secs), workers);
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

fn handle(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if s.write_all(RESPONSE).is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves on [::] (both families) where the kernel has IPv6, else on 0.0.0.0.
fn serve(port: u16) {
    let udp = UdpSocket::bind(("::", port))
        .or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
        .expect("bind udp");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], peer);
        }
    });
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .expect("bind tcp");
    for s in listener.incoming().flatten() {
        std::thread::spawn(move || handle(s));
    }
}

struct Result {
    ops: u64,
    errors: u64,
    lat_us: Vec<u32>,
}

fn one_crr(addr: SocketAddr, buf: &mut [u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_nodelay(true)?;
    s.write_all(REQUEST)?;
    let n = s.read(buf)?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Opens `count` connections to `addr`, keeps them idle for `secs`, then counts those the
/// server has not closed (a closed one reads end-of-file at once).
fn hold(addr: SocketAddr, count: usize, secs: Duration) {
    let conns: Vec<TcpStream> = (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect();
    std::thread::sleep(secs);
    let mut byte = [0u8; 1];
    let kept = conns
        .iter()
        .filter(|&c| {
            let mut c: &TcpStream = c;
            c.set_nonblocking(true).is_ok()
                && matches!(c.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    println!("{{\"opened\":{},\"kept\":{kept}}}", conns.len());
}

fn worker(mode: &str, addr: SocketAddr, stop: Arc<AtomicBool>) -> Result {
    let mut r = Result {
        ops: 0,
        errors: 0,
        lat_us: Vec::new(),
    };
    let mut buf = vec![0u8; 65536];
    let big = vec![0x5au8; 4000];
    let mut conn: Option<TcpStream> = None;
    let udp = matches!(mode, "udp" | "udp4k").then(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.connect(addr).unwrap();
        s
    });
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = match mode {
            "crr" => one_crr(addr, &mut buf).is_ok(),
            "rr" => {
                if conn.is_none() {
                    conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
                    if let Some(c) = &conn {
                        let _ = c.set_nodelay(true);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                    }
                }
                match conn.as_mut() {
                    Some(c) => {
                        let ok = c.write_all(REQUEST).is_ok()
                            && matches!(c.read(&mut buf), Ok(n) if n > 0);
                        if !ok {
                            conn = None;
                        }
                        ok
                    }
                    None => false,
                }
            }
            "udp4k" => {
                let s = udp.as_ref().unwrap();
                s.send(&big).is_ok() && matches!(s.recv(&mut buf), Ok(4000))
            }
            _ => {
                let s = udp.as_ref().unwrap();
                s.send(REQUEST).is_ok() && s.recv(&mut buf).is_ok()
            }
        };
        if ok {
            r.ops += 1;
            r.lat_us
                .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            r.errors += 1;
            if r.errors > 10_000 {
                break;
            }
        }
    }
    r
}

fn client(mode: &str, addr: SocketAddr, secs: Duration, workers: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let stop = stop.clone();
            let mode = mode.to_string();
            std::thread::spawn(move || worker(&mode, addr, stop))
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let mut all = Result {
        ops: 0,
        errors: 0,
        lat_us: Vec::new(),
    };
    for h in handles {
        let r = h.join().expect("worker");
        all.ops += r.ops;
        all.errors += r.errors;
        all.lat_us.extend(r.lat_us);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.lat_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.lat_us.is_empty() {
            return 0;
        }
        all.lat_us[((all.lat_us.len() - 1) as f64 * p) as usize]
    };
    println!(
        "{{\"ops\":{},\"secs\":{:.3},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"errors\":{}}}",
        all.ops,
        elapsed,
        all.ops as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.errors
    );
}
