//! Builds the eBPF programs (netctl-ebpf) for the BPF target and leaves the object in OUT_DIR,
//! where `dataplane::OBJECT` embeds it.
fn main() -> anyhow::Result<()> {
    // The fuzz targets (`cargo xtask fuzz`) parse input and never load programs: an empty
    // object spares their release build the eBPF one (a minute of CI).
    println!("cargo:rerun-if-env-changed=NETCTL_NO_EBPF");
    if std::env::var_os("NETCTL_NO_EBPF").is_some() {
        let object = std::path::Path::new(&std::env::var("OUT_DIR")?).join("netctl");
        std::fs::write(object, [])?;
        println!("cargo:rustc-env=NETCTL_OBJECT_HASH=0000000000000000");
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netctl-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netctl-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )?;
    // The object's identity (`dataplane::load::object_hash`): FNV-1a, 16 hex digits.
    let object = std::path::Path::new(&std::env::var("OUT_DIR")?).join("netctl");
    let h = std::fs::read(&object)?
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
    println!("cargo:rustc-env=NETCTL_OBJECT_HASH={h:016x}");
    Ok(())
}
