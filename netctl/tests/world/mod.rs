//! The world of the program tests: the eBPF object loaded with private maps in a private
//! network namespace, a small configuration (host, three networks, a published web server),
//! packet builders, and a checker that verifies every checksum from scratch.
//!
//! Host H on the uplink; network A (10.1.0.0/24, masquerade), network B (10.2.0.0/24),
//! internal network I (10.3.0.0/24); web 10.1.0.2 publishes 8080→80/tcp and 5353→53/udp.
#![allow(dead_code)] // each test binary uses its own part

use std::{
    mem::ManuallyDrop,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    sync::Mutex,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use netctl::kernel::dataplane::{
    features::{self, parse_deny, Features},
    load::{load_unpinned, object_program, set_tail_calls},
    maps::raw,
    monotonic_ns,
};
use netctl_common::{
    ct::{CtEntry, CtKey},
    drop::DropReason,
    maps::*,
    stats::{Counters, Hook},
    XDP_DONE_MARK,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;
/// TC_ACT_UNSPEC (-1) as the test run hands it back: TCX_NEXT.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Loopback: BPF_PROG_TEST_RUN's device when none is given.
pub const LO: u32 = 1;
pub const BRIDGE_A: u32 = 100;
pub const BRIDGE_B: u32 = 200;
pub const BRIDGE_I: u32 = 300;
pub const BRIDGE_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

pub const H: &str = "192.0.2.10";
pub const CLIENT: &str = "198.51.100.7";
pub const OUT: &str = "203.0.113.5";
pub const WEB: &str = "10.1.0.2";
pub const A2: &str = "10.1.0.3";
pub const GW_A: &str = "10.1.0.1";
pub const B3: &str = "10.2.0.3";
pub const I2: &str = "10.3.0.2";
pub const GW_I: &str = "10.3.0.1";

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const SYN_ACK: u8 = 0x12;

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
    }
    ok
}

/// A tuple as the datapath keys it.
pub fn key(src: &str, sport: u16, dst: &str, dport: u16, proto: u8) -> CtKey {
    CtKey {
        saddr: raw(ip(src)),
        daddr: raw(ip(dst)),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        _pad: [0; 3],
    }
}

pub struct World {
    /// Handed back to `SPARE` when the test ends.
    pub ebpf: ManuallyDrop<Ebpf>,
    /// The CT_NEW size it was loaded with, and whether its IPv6 programs are loaded.
    ct_new: Option<u32>,
    ipv6: bool,
    /// The XDP metadata mark of the last uplink_xdp run (None: no metadata).
    pub mark: Option<u32>,
    /// This kernel's features (less NETCTL_FEATURES_DENY), as netctl loads for them.
    pub features: Features,
}

/// Whether the running kernel is older than `major.minor` (for what BPF_PROG_TEST_RUN itself
/// can do, not the datapath: that is what the feature probes are for).
pub fn kernel_before(major: u32, minor: u32) -> bool {
    let release = netctl::kernel::dataplane::features::kernel_release();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) < (major, minor)
}

/// The running kernel's features, less those `NETCTL_FEATURES_DENY` takes away.
pub fn kernel_features() -> Features {
    let deny = parse_deny(&std::env::var("NETCTL_FEATURES_DENY").unwrap_or_default()).unwrap();
    Features::detect(&deny).unwrap()
}

impl World {
    /// Loads the IPv6 programs `from_container` and `uplink_ingress` continue in, and NAT64's
    /// (until then they drop IPv6): only for the tests that send IPv6, as their verification is the
    /// slowest of all (seconds under an emulated CPU).
    pub fn with_ipv6(&mut self) {
        for name in ["from_container6", "uplink_ingress6", "uplink_ingress64"]
            .iter()
            .filter(|_| !self.ipv6)
        {
            let name = object_program(name, &self.features);
            let p: &mut SchedClassifier = self.ebpf.program_mut(name).unwrap().try_into().unwrap();
            p.load().unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        self.ipv6 = true;
        set_tail_calls(&mut self.ebpf, &self.features).unwrap();
    }

    pub fn new(icc: bool, fast_path: bool) -> Self {
        Self::build(icc, fast_path, None)
    }

    /// `ct_new`: capacity of the unconfirmed-flow table (small to flood it quickly).
    pub fn build(icc: bool, fast_path: bool, ct_new: Option<u32>) -> Self {
        // BPF_PROG_TEST_RUN runs in the caller's network namespace (its loopback device, its
        // sockets, its routes): each test thread gets a fresh one.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let features = kernel_features();
        let spare = SPARE.lock().unwrap().iter().position(|s| s.0 == ct_new);
        let (ebpf, ipv6) = match spare {
            Some(i) => {
                let (_, mut ebpf, ipv6) = SPARE.lock().unwrap().swap_remove(i);
                empty_maps(&mut ebpf);
                (ebpf, ipv6)
            }
            None => (load(ct_new, &features), false),
        };
        let mut w = World {
            ebpf: ManuallyDrop::new(ebpf),
            ct_new,
            ipv6,
            mark: None,
            features,
        };
        w.set_config(if fast_path { CONFIG_FAST_PATH } else { 0 }, 61000, 65535);
        let mut host: HashMap<_, u32, u32> =
            w.ebpf.map_mut(HOST_ADDRS).unwrap().try_into().unwrap();
        for a in [H, GW_A, "10.2.0.1", GW_I] {
            host.insert(raw(ip(a)), 1, 0).unwrap();
        }
        w.set_uplink_flags(UPLINK_XDP_NAT);
        let mut nets: HashMap<_, u32, NetInfo> =
            w.ebpf.map_mut(NETWORKS).unwrap().try_into().unwrap();
        let icc_flag = if icc { NET_ICC } else { 0 };
        for (br, gw, flags) in [
            (BRIDGE_A, GW_A, NET_MASQUERADE | icc_flag),
            (BRIDGE_B, "10.2.0.1", NET_MASQUERADE | NET_ICC),
            (BRIDGE_I, GW_I, NET_INTERNAL | NET_ICC),
        ] {
            nets.insert(
                br,
                NetInfo {
                    gateway: raw(ip(gw)),
                    flags,
                    mac: BRIDGE_MAC,
                    _pad: [0; 2],
                    gateway6: [0; 16],
                },
                0,
            )
            .unwrap();
        }
        let mut subnets: LpmTrie<_, u32, u32> =
            w.ebpf.map_mut(SUBNETS).unwrap().try_into().unwrap();
        for (net, br) in [
            ("10.1.0.0", BRIDGE_A),
            ("10.2.0.0", BRIDGE_B),
            ("10.3.0.0", BRIDGE_I),
        ] {
            subnets.insert(&Key::new(24, raw(ip(net))), br, 0).unwrap();
        }
        // Every endpoint sits on "lo" so from_container's anti-spoofing check passes in tests.
        let mut eps: HashMap<_, u32, EndpointInfo> =
            w.ebpf.map_mut(ENDPOINTS).unwrap().try_into().unwrap();
        for (addr, br) in [
            (WEB, BRIDGE_A),
            (A2, BRIDGE_A),
            (B3, BRIDGE_B),
            (I2, BRIDGE_I),
        ] {
            eps.insert(
                raw(ip(addr)),
                EndpointInfo {
                    ifindex: LO,
                    network: br,
                    mac: netctl::kernel::topology::parse_mac(&netctl::model::state::mac_for(ip(
                        addr,
                    ))),
                    _pad: [0; 2],
                },
                0,
            )
            .unwrap();
        }
        let mut pm: HashMap<_, PortKey, Backend> =
            w.ebpf.map_mut(PORTMAP).unwrap().try_into().unwrap();
        for (host_port, proto, port) in [(8080u16, TCP, 80u16), (5353, UDP, 53)] {
            pm.insert(
                PortKey {
                    addr: 0,
                    port: host_port.to_be(),
                    proto,
                    _pad: 0,
                },
                Backend {
                    addr: raw(ip(WEB)),
                    port: port.to_be(),
                    _pad: 0,
                },
                0,
            )
            .unwrap();
        }
        w
    }

    pub fn set_config(&mut self, flags: u32, nat_port_min: u16, nat_port_max: u16) {
        let mut cfg: Array<_, Config> = self.ebpf.map_mut(CONFIG).unwrap().try_into().unwrap();
        cfg.set(
            0,
            Config {
                flags,
                nat_port_min,
                nat_port_max,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    }

    /// The conntrack fill watermark and per-owner quota (entries; 0: none).
    pub fn set_ct_limits(&mut self, fill: u32, owner: u32) {
        let mut cfg: Array<_, Config> = self.ebpf.map_mut(CONFIG).unwrap().try_into().unwrap();
        let mut c = cfg.get(&0, 0).unwrap();
        c.ct_fill_max = fill;
        c.ct_owner_max = owner;
        cfg.set(0, c, 0).unwrap();
    }

    /// The entries of CT counted against `owner`, and in all.
    pub fn ct_counts(&mut self, owner: &str) -> (u64, u64) {
        let owned: HashMap<_, u32, u64> = self.ebpf.map(CT_OWNED).unwrap().try_into().unwrap();
        let fill: Array<_, u64> = self.ebpf.map(CT_FILL).unwrap().try_into().unwrap();
        (
            owned.get(&raw(ip(owner)), 0).unwrap_or(0),
            fill.get(&0, 0).unwrap(),
        )
    }

    pub fn set_uplink_flags(&mut self, flags: u32) {
        let mut up: HashMap<_, u32, Uplink> =
            self.ebpf.map_mut(UPLINKS).unwrap().try_into().unwrap();
        up.insert(
            LO,
            Uplink {
                addr: raw(ip(H)),
                flags,
            },
            0,
        )
        .unwrap();
    }

    pub fn run(&mut self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(prog, pkt)
            .unwrap_or_else(|e| panic!("{prog}: {e}"))
    }

    /// BPF_PROG_TEST_RUN refuses some inputs itself (EINVAL), e.g. an skb whose IPv4 header is
    /// cut: the kernel never hands such packets to the program either.
    pub fn try_run(
        &mut self,
        prog: &str,
        pkt: &[u8],
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        self.run_ctx(prog, pkt, None)
    }

    /// A TC run whose skb arrived on interface `iif` (`__sk_buff.ingress_ifindex`): a packet
    /// the host forwards rather than one it sends itself.
    /// None where the kernel's test runs take no input interface (before 5.13).
    pub fn run_forwarded(&mut self, prog: &str, pkt: &[u8], iif: u32) -> Option<(u32, Vec<u8>)> {
        // __sk_buff up to ifindex: len, pkt_type, mark, queue_mapping, protocol, vlan_present,
        // vlan_tci, vlan_proto, priority, ingress_ifindex (offset 36), ifindex.
        let mut ctx = [0u8; 44];
        ctx[36..40].copy_from_slice(&iif.to_ne_bytes());
        match self.run_ctx(prog, pkt, Some(&ctx)) {
            Ok(r) => Some(r),
            Err(e) if kernel_before(5, 13) => {
                eprintln!("{prog}: this kernel's test runs take no input interface ({e})");
                None
            }
            Err(e) => panic!("{prog}: {e}"),
        }
    }

    /// Whether the kernel's XDP test runs hand back the metadata area (5.12 on), where
    /// `uplink_xdp` leaves its mark.
    pub fn xdp_meta_visible(&self) -> bool {
        !kernel_before(5, 12)
    }

    /// Whether XDP does the uplink's ingress work on this kernel (else TC does it all).
    pub fn xdp_nat(&self) -> bool {
        self.features.has(features::XDP_ADJUST_META)
    }

    /// A run of `prog`; on a kernel where XDP leaves everything to TC, a run of `uplink_xdp`
    /// is the uplink's whole ingress path (XDP, which must leave the packet untouched and
    /// unmarked, then TC), with TC's verdict given as XDP's.
    fn run_ctx(
        &mut self,
        prog: &str,
        pkt: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        if prog == "from_container" {
            // What passes a container's veth goes on to the veth's other filters (TCX_NEXT,
            // TC_ACT_UNSPEC), never TC_ACT_OK: the tests read it as passed.
            let (v, out) = self.run_one(prog, pkt, ctx)?;
            assert_ne!(v, TC_ACT_OK, "from_container passes on with TC_ACT_UNSPEC");
            return Ok((if v == TC_ACT_UNSPEC { TC_ACT_OK } else { v }, out));
        }
        if prog != "uplink_xdp" || self.xdp_nat() {
            return self.run_one(prog, pkt, ctx);
        }
        let (v, out) = self.run_one(prog, pkt, ctx)?;
        assert_eq!(
            (v, &out[..], self.mark),
            (XDP_PASS, pkt, None),
            "XDP without the mark"
        );
        let (v, out) = self.run_one("uplink_ingress", pkt, ctx)?;
        let v = match v {
            TC_ACT_OK | TC_ACT_REDIRECT => XDP_PASS,
            TC_ACT_SHOT => XDP_DROP,
            other => panic!("uplink_ingress returned {other}"),
        };
        Ok((v, out))
    }

    pub fn run_one(
        &mut self,
        prog: &str,
        pkt: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let xdp = prog == "uplink_xdp";
        let prog = object_program(prog, &self.features);
        let mut out = vec![0u8; pkt.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: ctx,
            ..Default::default()
        };
        let res = if xdp {
            let p: &mut Xdp = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
            p.test_run(opts)?
        } else {
            let p: &mut SchedClassifier = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
            p.test_run(opts)?
        };
        out.truncate(res.data_size_out as usize);
        // XDP output starts at the metadata area: 4 bytes when the program reserved its mark.
        self.mark = None;
        if xdp && out.len() == pkt.len() + 4 {
            self.mark = Some(u32::from_ne_bytes(out[..4].try_into().unwrap()));
            out.drain(..4);
        }
        Ok((res.return_value, out))
    }

    /// Whether the last uplink_xdp run told TC it did the work.
    pub fn xdp_done(&self) -> bool {
        self.mark == Some(XDP_DONE_MARK)
    }

    pub fn drops(&mut self, reason: DropReason) -> u64 {
        let m: PerCpuArray<_, u64> = self.ebpf.map_mut(DROP_STATS).unwrap().try_into().unwrap();
        m.get(&(reason as u32), 0).unwrap().iter().sum()
    }

    pub fn hook_packets(&mut self, hook: Hook) -> u64 {
        let m: PerCpuArray<_, Counters> =
            self.ebpf.map_mut(HOOK_STATS).unwrap().try_into().unwrap();
        m.get(&(hook as u32), 0)
            .unwrap()
            .iter()
            .map(|c| c.packets)
            .sum()
    }

    fn table(&mut self, new: bool) -> HashMap<&mut aya::maps::MapData, CtKey, CtEntry> {
        let name = if new { CT_NEW } else { CT };
        self.ebpf.map_mut(name).unwrap().try_into().unwrap()
    }

    /// Entries in CT (confirmed flows) and CT_NEW.
    pub fn ct_lens(&mut self) -> (usize, usize) {
        (
            self.table(false).keys().count(),
            self.table(true).keys().count(),
        )
    }

    pub fn ct_len(&mut self) -> usize {
        let (a, b) = self.ct_lens();
        a + b
    }

    /// The entry for `k` and whether it is still unconfirmed (in CT_NEW).
    pub fn ct_get(&mut self, k: &CtKey) -> Option<(CtEntry, bool)> {
        if let Ok(e) = self.table(false).get(k, 0) {
            return Some((e, false));
        }
        self.table(true).get(k, 0).ok().map(|e| (e, true))
    }

    /// What an eviction does: the entry is gone.
    pub fn ct_remove(&mut self, k: &CtKey) {
        let (found, new) = self.ct_get(k).map_or((false, false), |(_, n)| (true, n));
        assert!(found, "no entry to remove");
        self.table(new).remove(k).unwrap();
    }

    pub fn ct_insert(&mut self, new: bool, k: &CtKey, e: &CtEntry) {
        self.table(new).insert(k, e, 0).unwrap();
    }

    /// Makes a flow look idle for `secs` seconds (both entries).
    pub fn ct_age(&mut self, k: &CtKey, secs: u64) {
        let (e, new) = self.ct_get(k).expect("no entry to age");
        // A machine up for less than `secs` gives its whole uptime: a guest just booted waits
        // until that is past the longest timeout a test lets run out (a minute: handshake,
        // TIME_WAIT), so that ageing there is what it is elsewhere.
        let past = secs.min(62) * 1_000_000_000;
        while monotonic_ns() < past {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let then = monotonic_ns().saturating_sub(secs * 1_000_000_000);
        for key in [*k, e.peer] {
            if let Ok(mut x) = self.table(new).get(&key, 0) {
                x.last_seen = then;
                self.table(new).insert(key, x, 0).unwrap();
            }
        }
    }
}

/// Objects whose tests ended, by CT_NEW size, with whether their IPv6 programs are loaded:
/// each test gets one with its maps emptied, so the verifier (most of a test's time, minutes
/// under an emulated CPU) checks each program once per test binary.
static SPARE: Mutex<Vec<(Option<u32>, Ebpf, bool)>> = Mutex::new(Vec::new());

impl Drop for World {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is never used again.
        let ebpf = unsafe { ManuallyDrop::take(&mut self.ebpf) };
        if let Ok(mut spare) = SPARE.lock() {
            spare.push((self.ct_new, ebpf, self.ipv6));
        }
    }
}

/// The object with the programs every test runs loaded, IPv6's left for `with_ipv6`.
fn load(ct_new: Option<u32>, features: &Features) -> Ebpf {
    let mut ebpf = load_unpinned(ct_new, features).unwrap();
    for name in [
        "uplink_ingress",
        "uplink_egress",
        "from_container",
        "to_container",
    ] {
        let name = object_program(name, features);
        let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    let name = object_program("uplink_xdp", features);
    let p: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
    p.load().unwrap_or_else(|e| panic!("{name}: {e:#}"));
    ebpf
}

/// Every map as a fresh load leaves it: hash tables and tail calls empty, arrays zero, the
/// event ring read; global data (`.rodata`, …) stays as the loader set it.
fn empty_maps(ebpf: &mut Ebpf) {
    let cpus = aya::util::nr_cpus().unwrap();
    for (name, map) in ebpf.maps_mut() {
        if name.starts_with('.') {
            continue;
        }
        let per_cpu = matches!(map, Map::PerCpuArray(_));
        match map {
            Map::HashMap(m) | Map::LruHashMap(m) | Map::PerCpuHashMap(m) | Map::LpmTrie(m) => {
                let info = m.info().unwrap();
                let mut key = vec![0u8; info.key_size() as usize];
                // Bounded: each round deletes the first key.
                for _ in 0..=info.max_entries() {
                    if map_elem(m, BPF_MAP_GET_NEXT_KEY, &[], &mut key).is_err() {
                        break;
                    }
                    map_elem(m, BPF_MAP_DELETE_ELEM, &key.clone(), &mut []).unwrap();
                }
            }
            Map::ProgramArray(m) => {
                for i in 0..m.info().unwrap().max_entries() {
                    let _ = map_elem(m, BPF_MAP_DELETE_ELEM, &i.to_ne_bytes(), &mut []);
                }
            }
            Map::Array(m) | Map::PerCpuArray(m) => {
                let info = m.info().unwrap();
                let size = if per_cpu {
                    (info.value_size() as usize).div_ceil(8) * 8 * cpus
                } else {
                    info.value_size() as usize
                };
                let mut zero = vec![0u8; size];
                for i in 0..info.max_entries() {
                    map_elem(m, BPF_MAP_UPDATE_ELEM, &i.to_ne_bytes(), &mut zero).unwrap();
                }
            }
            Map::RingBuf(_) => {
                let mut ring: RingBuf<&mut MapData> = map.try_into().unwrap();
                while ring.next().is_some() {}
            }
            _ => {}
        }
    }
}

use aya_obj::generated::{
    bpf_attr,
    bpf_cmd::{self, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_MAP_UPDATE_ELEM},
};

/// One map element command: `key` (none: the first, for GET_NEXT_KEY) and `value`, which
/// is the next key for GET_NEXT_KEY.
fn map_elem(m: &MapData, cmd: bpf_cmd, key: &[u8], value: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: bpf_attr is plain data; all zero is its empty value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the map-element member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_2 };
    u.map_fd = m.fd().as_fd().as_raw_fd() as u32;
    if !key.is_empty() {
        u.key = key.as_ptr() as u64;
    }
    // The kernel refuses a command with fields beyond its own set (DELETE takes no value).
    if !value.is_empty() {
        u.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
    }
    // SAFETY: attr is whole and its pointers outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// ---- packet building and checking ----

pub fn csum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 frame as its sender would send it to the gateway: from the MAC netctl gives the
/// source address (`02:42:<address>`), to the bridge.
pub fn eth(payload: Vec<u8>) -> Vec<u8> {
    let src: [u8; 4] = payload[12..16].try_into().unwrap();
    eth_frame(BRIDGE_MAC, mac_of(src), 0x0800, payload)
}

pub fn mac_of(addr: [u8; 4]) -> [u8; 6] {
    [0x02, 0x42, addr[0], addr[1], addr[2], addr[3]]
}

pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: Vec<u8>) -> Vec<u8> {
    let mut p = dst.to_vec();
    p.extend(src);
    p.extend(ethertype.to_be_bytes());
    p.extend(payload);
    p
}

pub fn eth_type(ethertype: u16, payload: Vec<u8>) -> Vec<u8> {
    let mut p = vec![0x02, 0x42, 0, 0, 0, 9, 0x02, 0x42, 0, 0, 0, 8];
    p.extend(ethertype.to_be_bytes());
    p.extend(payload);
    p
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) and its payload.
pub fn ipv4_opts(
    proto: u8,
    src: &str,
    dst: &str,
    l4: Vec<u8>,
    frag: u16,
    options: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let mut h = vec![0x40 | ihl as u8, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h.extend(ip(src).octets());
    h.extend(ip(dst).octets());
    h.extend(options);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(l4);
    h
}

pub fn ipv4(proto: u8, src: &str, dst: &str, l4: Vec<u8>, frag: u16) -> Vec<u8> {
    ipv4_opts(proto, src, dst, l4, frag, &[])
}

pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
    let mut b = Vec::new();
    b.extend(src);
    b.extend(dst);
    b.extend([0, proto]);
    b.extend((seg.len() as u16).to_be_bytes());
    b.extend(seg);
    csum(&b)
}

/// A TCP segment (no Ethernet/IP) with its checksum.
#[allow(clippy::too_many_arguments)]
pub fn tcp_seg(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend(payload);
    let c = pseudo_sum(ip(src).octets(), ip(dst).octets(), TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A TCP packet with explicit sequence and acknowledgment numbers.
#[allow(clippy::too_many_arguments)]
pub fn tcp_full(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    eth(ipv4(
        TCP,
        src,
        dst,
        tcp_seg(src, sport, dst, dport, flags, seq, ack, payload),
        0,
    ))
}

pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    tcp_full(
        src,
        sport,
        dst,
        dport,
        flags,
        1000,
        0,
        b"GET / HTTP/1.0\r\n\r\n",
    )
}

pub fn udp_seg(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u.extend(payload);
    let len = u.len() as u16;
    u[4..6].copy_from_slice(&len.to_be_bytes());
    let c = pseudo_sum(ip(src).octets(), ip(dst).octets(), UDP, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    eth(ipv4(
        UDP,
        src,
        dst,
        udp_seg(src, sport, dst, dport, b"query"),
        0,
    ))
}

pub fn icmp_echo(src: &str, dst: &str, ty: u8, id: u16) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend(id.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    m.extend(b"pingdata");
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    eth(ipv4(ICMP, src, dst, m, 0))
}

/// An ICMP error (type `ty`, code `code`) from `src` to `dst` quoting `quoted` (an IP packet
/// without its Ethernet header).
pub fn icmp_error(src: &str, dst: &str, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
    m.extend(quoted);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    eth(ipv4(ICMP, src, dst, m, 0))
}

/// The parsed view of an output packet, with every checksum verified from scratch.
#[derive(Debug)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

pub fn check(p: &[u8]) -> Seen {
    let ihl = usize::from(p[14] & 0x0f) * 4;
    let iph = &p[14..14 + ihl];
    assert_eq!(csum(iph), 0, "IPv4 header checksum");
    let proto = iph[9];
    let src: [u8; 4] = iph[12..16].try_into().unwrap();
    let dst: [u8; 4] = iph[16..20].try_into().unwrap();
    let l4 = &p[14 + ihl..];
    let (sport, dport) = match proto {
        TCP | UDP => {
            if !(proto == UDP && l4[6..8] == [0, 0]) {
                assert_eq!(pseudo_sum(src, dst, proto, l4), 0, "L4 checksum");
            }
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        }
        _ => {
            assert_eq!(csum(l4), 0, "ICMP checksum");
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
    };
    Seen {
        src: src.into(),
        dst: dst.into(),
        sport,
        dport,
        ttl: iph[8],
        dst_mac: p[0..6].try_into().unwrap(),
        src_mac: p[6..12].try_into().unwrap(),
    }
}

/// Runs `args` of `ip` inside this thread's network namespace (the test's own).
pub fn ip_cmd(args: &str) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let ns = format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id());
    let out = std::process::Command::new("nsenter")
        .arg(ns)
        .arg("ip")
        .args(args.split_whitespace())
        .output()
        .expect("nsenter ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The packet with another TTL (IPv4 header checksum fixed).
pub fn with_ttl(mut p: Vec<u8>, ttl: u8) -> Vec<u8> {
    p[14 + 8] = ttl;
    p[24..26].copy_from_slice(&[0, 0]);
    let ihl = usize::from(p[14] & 0x0f) * 4;
    let c = csum(&p[14..14 + ihl]);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    p
}
