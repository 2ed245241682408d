//! The eBPF programs run on crafted packets with BPF_PROG_TEST_RUN (aya's TestRun): verdicts
//! and counters, checked without any interface. Needs root; skips otherwise.

use aya::{
    maps::PerCpuArray,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use netctl::dataplane::load::load_unpinned;
use netctl_common::{
    maps::HOOK_STATS,
    stats::{Counters, Hook},
};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
    }
    ok
}

/// Ethernet + IPv4 + UDP with valid checksums.
fn udp_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[0..6].copy_from_slice(&[0x02, 0x42, 0, 0, 0, 1]);
    p[6..12].copy_from_slice(&[0x02, 0x42, 0, 0, 0, 2]);
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(payload);
    p.extend_from_slice(&udp);
    p
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn hook_packets(ebpf: &mut aya::Ebpf, hook: Hook) -> u64 {
    let map: PerCpuArray<_, Counters> = ebpf.map_mut(HOOK_STATS).unwrap().try_into().unwrap();
    map.get(&(hook as u32), 0)
        .unwrap()
        .iter()
        .map(|c| c.packets)
        .sum()
}

#[test]
fn uplink_xdp_passes_and_counts_a_udp_packet() {
    if !root() {
        return;
    }
    let mut ebpf = load_unpinned().unwrap();
    let prog: &mut Xdp = ebpf.program_mut("uplink_xdp").unwrap().try_into().unwrap();
    prog.load().unwrap();
    let pkt = udp_packet([10, 0, 0, 1], [10, 0, 0, 2], 40000, 53, b"hello");
    let mut out = vec![0u8; pkt.len() + 64];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(&pkt),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(res.return_value, XDP_PASS);
    assert_eq!(
        &out[..res.data_size_out as usize],
        &pkt[..],
        "packet unchanged"
    );
    assert_eq!(hook_packets(&mut ebpf, Hook::UplinkXdp), 1);
}

#[test]
fn tc_programs_accept_and_count() {
    if !root() {
        return;
    }
    let mut ebpf = load_unpinned().unwrap();
    let pkt = udp_packet([172, 17, 0, 2], [10, 0, 0, 1], 5000, 80, b"x");
    for (name, hook) in [
        ("uplink_ingress", Hook::UplinkIngress),
        ("uplink_egress", Hook::UplinkEgress),
        ("from_container", Hook::FromContainer),
    ] {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
        prog.load().unwrap();
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(&pkt),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res.return_value, TC_ACT_OK, "{name}");
        assert_eq!(hook_packets(&mut ebpf, hook), 1, "{name}");
    }
}
