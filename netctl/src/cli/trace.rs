use std::{
    collections::BTreeMap,
    fs::File,
    io::BufWriter,
    net::Ipv6Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use netctl_common::{
    ct::{
        CtEntry, CtEntry6, CtKey, CtKey6, KIND_DNAT, KIND_HAIRPIN, KIND_NAT64, KIND_ROUTED,
        KIND_ROUTED_IN, KIND_SNAT,
    },
    drop::DropReason,
    event::*,
    stats::Hook,
};
use serde_json::{json, Value};

use crate::{
    cli::pcap::Pcap,
    engine::ctx::Ctx,
    kernel::dataplane::{maps::from_raw, monotonic_ns, Dataplane},
    model::frame,
    model::names::Names,
};

/// Stream what the datapath does, live: new and ended flows, drops with their reason, and
/// (with --packets) every packet with its verdict
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    netctl trace --drops --container a          why can't container a reach anything?\n  \
    netctl trace --flows --port 8080 --json     who is hitting port 8080?\n  \
    netctl trace --pcap web.pcapng --container web --duration 10s\n\n\
    Without --drops/--flows/--packets, drops and flows are shown.")]
pub struct Args {
    /// Show drops (with the reason)
    #[arg(long)]
    drops: bool,
    /// Show NAT flows as they start and end
    #[arg(long)]
    flows: bool,
    /// Show every packet the programs see, with the verdict (costly on busy hosts)
    #[arg(long)]
    packets: bool,
    /// Only events involving this network
    #[arg(long)]
    network: Option<String>,
    /// Only events involving this container (its addresses or published ports)
    #[arg(long)]
    container: Option<String>,
    /// Only events with this port on either side, before or after translation
    #[arg(long)]
    port: Option<u16>,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
    /// Stop after this many events
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 10s, 500ms, 2m)
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Write the traced packets to FILE (pcapng: tcpdump -r / Wireshark); implies --packets
    #[arg(long, value_name = "FILE")]
    pcap: Option<std::path::PathBuf>,
    /// Bytes of each packet to capture (1-128)
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=128))]
    snaplen: u32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.trim().len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration {s:?}: use e.g. 10s, 500ms, 2m")),
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| d.as_secs() <= 366 * 86_400)
        .ok_or_else(|| format!("invalid duration {s:?}: use at most a year (e.g. 10s, 500ms, 2m)"))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        _ => "ip",
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        KIND_DNAT => "published-port",
        KIND_SNAT => "masquerade",
        KIND_HAIRPIN => "hairpin",
        KIND_ROUTED => "routed",
        KIND_ROUTED_IN => "routed-in",
        KIND_NAT64 => "nat64",
        _ => "unknown",
    }
}

/// The running kernel's names of its drop reasons (set while the kernel-drop tracer runs).
static KERNEL_REASONS: std::sync::OnceLock<BTreeMap<u64, String>> = std::sync::OnceLock::new();

fn kernel_reason(r: u8) -> String {
    KERNEL_REASONS
        .get()
        .and_then(|m| m.get(&u64::from(r)))
        .cloned()
        .unwrap_or_else(|| format!("REASON_{r}"))
}

fn hook_name(h: u8) -> &'static str {
    if h == HOOK_KERNEL {
        return "kernel";
    }
    Hook::ALL
        .get(h as usize)
        .map(|h| h.name())
        .unwrap_or("unknown")
}

fn reason_name(r: u8) -> &'static str {
    DropReason::ALL
        .get(r as usize)
        .map(|r| r.name())
        .unwrap_or("unknown")
}

fn endpoint(k: &CtKey, src: bool) -> String {
    let (a, p) = if src {
        (k.saddr, k.sport)
    } else {
        (k.daddr, k.dport)
    };
    if k.proto == 1 || (k.proto != 6 && k.proto != 17) {
        from_raw(a).to_string()
    } else {
        format!("{}:{}", from_raw(a), u16::from_be(p))
    }
}

struct Filter {
    kinds: u32,
    network: Option<String>,
    container: Option<String>,
    port: Option<u16>,
}

impl Filter {
    fn keys(ev: &Event) -> [&CtKey; 2] {
        [&ev.before, &ev.after]
    }

    fn accepts(&self, ev: &Event, names: &Names) -> bool {
        let wanted_kind = match ev.kind {
            EV_FLOW_NEW | EV_FLOW_END => TRACE_FLOWS,
            EV_DROP | EV_KERNEL_DROP => TRACE_DROPS,
            _ => TRACE_PACKETS,
        };
        if self.kinds & wanted_kind == 0 {
            return false;
        }
        if let Some(s) = ipv6_of(ev) {
            return self.accepts6(&s, names);
        }
        if let Some(t) = ev.flow6() {
            return self.accepts_flow6(&t, names);
        }
        let keys = Self::keys(ev);
        if let Some(p) = self.port {
            if !keys
                .iter()
                .any(|k| u16::from_be(k.sport) == p || u16::from_be(k.dport) == p)
            {
                return false;
            }
        }
        if let Some(c) = &self.container {
            let hit = keys.iter().any(|k| {
                names.container_of(k.saddr) == Some(c)
                    || names.container_of(k.daddr) == Some(c)
                    || names.published_by(u16::from_be(k.dport), k.proto) == Some(c)
            });
            if !hit {
                return false;
            }
        }
        if let Some(n) = &self.network {
            let hit = keys.iter().any(|k| {
                names.network_of(k.saddr) == Some(n) || names.network_of(k.daddr) == Some(n)
            });
            if !hit {
                return false;
            }
        }
        true
    }
}

impl Filter {
    /// The same for an IPv6 packet of a drop.
    fn accepts6(&self, s: &frame::Ipv6Summary, names: &Names) -> bool {
        let (src, dst) = (names.of6(s.src), names.of6(s.dst));
        self.port.is_none_or(|p| s.sport == p || s.dport == p)
            && self
                .container
                .as_ref()
                .is_none_or(|c| [src, dst].iter().flatten().any(|(name, _)| name == c))
            && self
                .network
                .as_ref()
                .is_none_or(|n| [src, dst].iter().flatten().any(|(_, net)| net == n))
    }
}

impl Filter {
    /// The same for an IPv6 flow: each condition met by either tuple, as for IPv4.
    fn accepts_flow6(&self, t: &[CtKey6; 2], names: &Names) -> bool {
        let addrs = || {
            t.iter()
                .flat_map(|k| [k.saddr, k.daddr].map(Ipv6Addr::from))
        };
        self.port.is_none_or(|p| {
            t.iter()
                .any(|k| u16::from_be(k.sport) == p || u16::from_be(k.dport) == p)
        }) && self.container.as_ref().is_none_or(|c| {
            addrs().any(|a| names.of6(a).is_some_and(|(n, _)| n == c))
                || t.iter()
                    .any(|k| names.published_by(u16::from_be(k.dport), k.proto) == Some(c))
        }) && self
            .network
            .as_ref()
            .is_none_or(|n| addrs().any(|a| names.of6(a).is_some_and(|(_, net)| net == n)))
    }
}

/// An IPv6 tuple's end as `trace` prints it.
fn end6(k: &CtKey6, src: bool) -> String {
    let (a, p) = if src {
        (k.saddr, k.sport)
    } else {
        (k.daddr, k.dport)
    };
    endpoint6(Ipv6Addr::from(a), u16::from_be(p), k.proto)
}

/// The IPv6 packet a drop without a tuple carried, from its first bytes.
fn ipv6_of(ev: &Event) -> Option<frame::Ipv6Summary> {
    if ev.kind != EV_DROP || ev.flags != 0 {
        return None;
    }
    frame::ipv6(&ev.data[..(ev.cap as usize).min(ev.data.len())])
}

fn endpoint6(addr: std::net::Ipv6Addr, port: u16, proto: u8) -> String {
    match proto {
        6 | 17 => format!("[{addr}]:{port}"),
        _ => addr.to_string(),
    }
}

/// Wall-clock time of a monotonic timestamp, RFC 3339 with microseconds.
fn wall(ts: u64, mono_now: u64, real_now: Duration) -> String {
    let at = real_now.saturating_sub(Duration::from_nanos(mono_now.saturating_sub(ts)));
    let base = crate::model::text::rfc3339(at.as_secs());
    format!("{}.{:06}Z", base.trim_end_matches('Z'), at.subsec_micros())
}

fn describe(ev: &Event, names: &Names) -> Value {
    let named = |k: &CtKey, src: bool| {
        let addr = if src { k.saddr } else { k.daddr };
        let mut n = names.addr(addr);
        if n.is_empty() && !src {
            n = names
                .published(u16::from_be(k.dport), k.proto)
                .unwrap_or_default();
        }
        n
    };
    let mut v = json!({
        "hook": hook_name(ev.hook),
        "proto": proto_name(ev.before.proto),
        "src": endpoint(&ev.before, true),
        "dst": endpoint(&ev.before, false),
        "src_name": named(&ev.before, true),
        "dst_name": named(&ev.before, false),
    });
    match ev.kind {
        EV_FLOW_NEW | EV_FLOW_END => {
            v["type"] = json!(if ev.kind == EV_FLOW_NEW {
                "flow-new"
            } else {
                "flow-end"
            });
            v["kind"] = json!(kind_name(ev.code));
            // What the original direction becomes: the reply tuple reversed.
            if let Some([orig, reply]) = ev.flow6() {
                let name = |a: [u8; 16]| names.addr6(Ipv6Addr::from(a));
                let dst_name = match name(orig.daddr) {
                    n if n.is_empty() => names
                        .published(u16::from_be(orig.dport), orig.proto)
                        .unwrap_or_default(),
                    n => n,
                };
                v["proto"] = json!(proto_name(orig.proto));
                v["src"] = json!(end6(&orig, true));
                v["dst"] = json!(end6(&orig, false));
                v["src_name"] = json!(name(orig.saddr));
                v["dst_name"] = json!(dst_name);
                v["translated_src"] = json!(end6(&reply, false));
                v["translated_dst"] = json!(end6(&reply, true));
                v["reply_src"] = json!(end6(&reply, true));
                v["reply_dst"] = json!(end6(&reply, false));
                v["translated_dst_name"] = json!(name(reply.saddr));
            } else {
                v["translated_src"] = json!(endpoint(&ev.after, false));
                v["translated_dst"] = json!(endpoint(&ev.after, true));
                v["reply_src"] = json!(endpoint(&ev.after, true));
                v["reply_dst"] = json!(endpoint(&ev.after, false));
                v["translated_dst_name"] = json!(names.addr(ev.after.saddr));
            }
            if ev.kind == EV_FLOW_END {
                v["end"] = json!(if ev.flags & !FLOW_IPV6 == END_CLOSED {
                    "closed"
                } else {
                    "expired"
                });
            }
        }
        EV_KERNEL_DROP => {
            // The kernel's own reason, in its words (SKB_DROP_REASON_…).
            v["type"] = json!("drop");
            v["reason"] = json!(kernel_reason(ev.code));
            v["interface"] = json!(names.ifname(ev.ifindex));
            v["len"] = json!(ev.len);
        }
        EV_DROP => {
            v["type"] = json!("drop");
            v["reason"] = json!(reason_name(ev.code));
            v["interface"] = json!(names.ifname(ev.ifindex));
            v["len"] = json!(ev.len);
            if let Some(s) = ipv6_of(ev) {
                v["proto"] = json!(proto_name(s.proto));
                v["src"] = json!(endpoint6(s.src, s.sport, s.proto));
                v["dst"] = json!(endpoint6(s.dst, s.dport, s.proto));
                v["src_name"] = json!(names.addr6(s.src));
                v["dst_name"] = json!(names.addr6(s.dst));
            } else if ev.flags == 0 {
                v["src"] = json!("");
                v["dst"] = json!("");
            }
        }
        _ => {
            v["type"] = json!("packet");
            v["verdict"] = json!(match ev.code {
                VERDICT_DROP => "drop",
                VERDICT_REDIRECT => "redirect",
                _ => "pass",
            });
            v["interface"] = json!(names.ifname(ev.ifindex));
            v["len"] = json!(ev.len);
            v["out_src"] = json!(endpoint(&ev.after, true));
            v["out_dst"] = json!(endpoint(&ev.after, false));
        }
    }
    v
}

fn line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let with = |addr: String, name: String| {
        if name.is_empty() {
            addr
        } else {
            format!("{addr} ({name})")
        }
    };
    let tuple = format!(
        "{} {} -> {}",
        s("proto"),
        with(s("src"), s("src_name")),
        with(s("dst"), s("dst_name"))
    );
    match v["type"].as_str().unwrap_or("") {
        "drop" => format!(
            "{} drop      {:<15} {:<20} {tuple} on {}",
            s("time"),
            s("hook"),
            s("reason"),
            s("interface")
        ),
        "flow-new" => format!(
            "{} flow-new  {:<15} {tuple} => {} -> {}",
            s("time"),
            s("kind"),
            s("translated_src"),
            with(s("translated_dst"), s("translated_dst_name"))
        ),
        "flow-end" => format!(
            "{} flow-end  {:<15} {tuple} ({})",
            s("time"),
            s("kind"),
            s("end")
        ),
        "packet" => format!(
            "{} packet    {:<15} {:<8} {tuple} => {} -> {} on {} len {}",
            s("time"),
            s("hook"),
            s("verdict"),
            s("out_src"),
            s("out_dst"),
            s("interface"),
            v["len"]
        ),
        _ => format!("{} {}", s("time"), v),
    }
}

/// Tracers register their wishes in the state directory; the datapath gets their union, so
/// two `netctl trace` at once do not switch each other off.
struct Registration {
    dir: std::path::PathBuf,
    me: std::path::PathBuf,
}

impl Registration {
    fn new(state_dir: &std::path::Path, cfg: TraceConfig) -> Result<Self> {
        let dir = state_dir.join("tracers");
        std::fs::create_dir_all(&dir)?;
        let me = dir.join(std::process::id().to_string());
        std::fs::write(&me, format!("{} {}", cfg.flags, cfg.snaplen))?;
        Ok(Self { dir, me })
    }

    /// The union of live tracers' flags, the largest snap length.
    fn union(&self) -> TraceConfig {
        let mut cfg = TraceConfig::default();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let alive = e
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let mut it = text
                .split_whitespace()
                .filter_map(|n| n.parse::<u32>().ok());
            cfg.flags |= it.next().unwrap_or(0);
            cfg.snaplen = cfg.snaplen.max(it.next().unwrap_or(0));
        }
        cfg
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.me);
    }
}

pub fn run(mut args: Args) -> Result<i32> {
    let ctx = Ctx::open()?;
    let state = ctx.store.snapshot()?;
    if let Some(n) = &args.network {
        args.network = Some(state.find_network(n)?.name.clone());
    }
    if let Some(c) = &args.container {
        args.container = Some(state.find_container(c)?.name.clone());
    }
    let mut kinds = 0;
    if args.drops {
        kinds |= TRACE_DROPS;
    }
    if args.flows {
        kinds |= TRACE_FLOWS;
    }
    if args.packets || args.pcap.is_some() {
        kinds |= TRACE_PACKETS;
    }
    if kinds == 0 {
        kinds = TRACE_DROPS | TRACE_FLOWS;
    }
    let mut pcap = match &args.pcap {
        Some(path) => {
            let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Some(Pcap::new(BufWriter::new(f), args.snaplen)?)
        }
        None => None,
    };
    let dp = Dataplane::open(&ctx.cfg)?;
    let ifnames: BTreeMap<u32, String> = ctx
        .nl
        .links()?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let names = Names::new(&state, ifnames);
    let filter = Filter {
        kinds,
        network: args.network.clone(),
        container: args.container.clone(),
        port: args.port,
    };

    // SAFETY: the handler only stores to an atomic.
    unsafe {
        use nix::sys::signal::{signal, SigHandler, Signal};
        signal(Signal::SIGINT, SigHandler::Handler(on_signal))?;
        signal(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    }
    let reg = Registration::new(
        &ctx.cfg.state_dir,
        TraceConfig {
            flags: kinds,
            snaplen: args.snaplen,
        },
    )?;
    // The baseline before anything is announced: events lost from here on are reported.
    let lost_at_start = dp.events_lost()?;
    let ring = dp.events()?;
    dp.set_trace(reg.union())?;

    let what: Vec<&str> = [
        (TRACE_DROPS, "drops"),
        (TRACE_FLOWS, "flows"),
        (TRACE_PACKETS, "packets"),
    ]
    .iter()
    .filter(|(f, _)| kinds & f != 0)
    .map(|(_, n)| *n)
    .collect();
    // The kernel's own drops of container packets, for as long as this tracer runs
    // (attached before saying so: what comes after is seen).
    let (_kernel, kernel_error) =
        match (kinds & TRACE_DROPS != 0).then(|| dp.trace_kernel_drops(&ctx.cfg)) {
            Some(Ok(k)) => {
                let _ = KERNEL_REASONS.set(k.reasons.clone());
                (Some(k), None)
            }
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
    eprintln!("netctl: tracing {}; Ctrl-C stops", what.join(", "));
    if let Some(e) = kernel_error {
        eprintln!("netctl: warning: the kernel's own drops are not traced: {e:#}");
    }

    let result = stream(
        &dp,
        ring,
        lost_at_start,
        &args,
        &filter,
        &names,
        &mut pcap,
        kinds,
    );
    drop(reg);
    // Switch off what no remaining tracer wants.
    let remaining = Registration {
        dir: ctx.cfg.state_dir.join("tracers"),
        me: std::path::PathBuf::new(),
    }
    .union();
    dp.set_trace(remaining)?;
    result?;
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn stream<W: std::io::Write>(
    dp: &Dataplane,
    mut ring: aya::maps::RingBuf<aya::maps::MapData>,
    lost_at_start: u64,
    args: &Args,
    filter: &Filter,
    names: &Names,
    pcap: &mut Option<Pcap<W>>,
    kinds: u32,
) -> Result<()> {
    let start = Instant::now();
    let mut lost_reported = lost_at_start;
    let mut shown = 0u64;
    let mut last_gc = Instant::now();
    let emit = |v: &mut Value, shown: &mut u64| {
        let mono = monotonic_ns();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ts = v["ts"].as_u64().unwrap_or(mono);
        v["time"] = json!(wall(ts, mono, real));
        if let Some(o) = v.as_object_mut() {
            o.remove("ts");
        }
        if args.json {
            println!("{v}");
        } else {
            println!("{}", line(v));
        }
        *shown += 1;
    };
    while !STOP.load(Ordering::SeqCst) {
        if args.count.is_some_and(|c| shown >= c)
            || args.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        let mut got = false;
        while let Some(item) = ring.next() {
            got = true;
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the programs write whole Events; read_unaligned copes with alignment.
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            drop(item);
            if !filter.accepts(&ev, names) {
                continue;
            }
            if ev.kind == EV_PACKET {
                if let Some(p) = pcap.as_mut() {
                    let hook = ev.hook;
                    let inbound = hook != Hook::UplinkEgress as u8;
                    let name = format!("{} {}", names.ifname(ev.ifindex), hook_name(hook));
                    let cap = (ev.cap as usize).min(SNAP_MAX);
                    p.packet(
                        ev.ifindex,
                        hook,
                        &name,
                        inbound,
                        real_ns(ev.ts),
                        ev.len,
                        &ev.data[..cap],
                    )?;
                }
                if !args.packets {
                    continue;
                }
            }
            let mut v = describe(&ev, names);
            v["ts"] = json!(ev.ts);
            emit(&mut v, &mut shown);
            if args.count.is_some_and(|c| shown >= c) {
                break;
            }
        }
        let lost = dp.events_lost()?;
        if lost > lost_reported {
            let mut v = json!({"type": "lost", "count": lost - lost_reported,
                "note": "the event ring buffer was full; these events were not delivered"});
            if args.json {
                emit(&mut v, &mut shown);
            } else {
                let real = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                println!(
                    "{} lost      {} events (ring buffer full)",
                    wall(monotonic_ns(), monotonic_ns(), real),
                    lost - lost_reported
                );
            }
            lost_reported = lost;
        }
        // Flows whose last packet was long ago end here (the programs only notice at the
        // flow's next packet).
        if kinds & TRACE_FLOWS != 0 && last_gc.elapsed() >= Duration::from_secs(5) {
            last_gc = Instant::now();
            let swept = dp.expire_flows()?;
            let ends = swept.v4.iter().map(|(k, e)| flow_end_event(k, e));
            let ends6 = swept.v6.iter().map(|(k, e)| flow6_end_event(k, e));
            for ev in ends.chain(ends6) {
                if filter.accepts(&ev, names) {
                    let mut v = describe(&ev, names);
                    v["ts"] = json!(monotonic_ns());
                    emit(&mut v, &mut shown);
                }
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if lost_reported > lost_at_start && !args.json {
        eprintln!(
            "netctl: {} events were lost in all (ring buffer full)",
            lost_reported - lost_at_start
        );
    }
    Ok(())
}

fn real_ns(ts: u64) -> u64 {
    let mono = monotonic_ns();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (real.as_nanos() as u64).saturating_sub(mono.saturating_sub(ts))
}

fn flow_end_event(k: &CtKey, e: &CtEntry) -> Event {
    Event {
        ts: monotonic_ns(),
        kind: EV_FLOW_END,
        hook: 0,
        code: e.kind,
        flags: END_EXPIRED,
        ifindex: 0,
        before: *k,
        after: e.peer,
        len: 0,
        cap: 0,
        data: [0; SNAP_MAX],
    }
}

/// The same for an IPv6 flow.
fn flow6_end_event(k: &CtKey6, e: &CtEntry6) -> Event {
    let mut ev = flow_end_event(&CtKey::default(), &CtEntry::default());
    ev.code = e.kind;
    ev.set_flow6(k, &e.peer);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t6(s: &str, sp: u16, d: &str, dp: u16) -> CtKey6 {
        CtKey6 {
            saddr: s.parse::<Ipv6Addr>().unwrap().octets(),
            daddr: d.parse::<Ipv6Addr>().unwrap().octets(),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto: 6,
            _pad: [0; 3],
        }
    }

    #[test]
    fn an_ipv6_flow_shows_both_tuples_and_filters_on_them() {
        // Masquerade: [fd66:1::2]:40000 → [fd64::1]:9090 leaves as [fd64::2]:61000.
        let orig = t6("fd66:1::2", 40000, "fd64::1", 9090);
        let reply = t6("fd64::1", 9090, "fd64::2", 61000);
        let mut ev = flow_end_event(&CtKey::default(), &CtEntry::default());
        ev.code = KIND_SNAT;
        ev.flags = END_CLOSED;
        ev.set_flow6(&orig, &reply);
        assert_eq!(ev.flow6(), Some([orig, reply]));
        let names = Names::new(&Default::default(), BTreeMap::new());
        let v = describe(&ev, &names);
        assert_eq!(v["type"], "flow-end");
        assert_eq!(v["end"], "closed");
        assert_eq!(v["kind"], "masquerade");
        assert_eq!(v["src"], "[fd66:1::2]:40000");
        assert_eq!(v["dst"], "[fd64::1]:9090");
        assert_eq!(v["translated_src"], "[fd64::2]:61000");
        assert_eq!(v["reply_dst"], "[fd64::2]:61000");
        let by_port = |port| Filter {
            kinds: TRACE_FLOWS,
            network: None,
            container: None,
            port: Some(port),
        };
        // Either side, before or after translation.
        for port in [40000, 9090, 61000] {
            assert!(by_port(port).accepts(&ev, &names), "{port}");
        }
        assert!(!by_port(80).accepts(&ev, &names));
    }
}
