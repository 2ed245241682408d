//! Builds the eBPF programs (netctl-ebpf) for the BPF target and leaves the object in OUT_DIR,
//! where `dataplane::OBJECT` embeds it.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netctl-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netctl-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
