use std::process::Command;

/// The build depends on the `bpf-linker` binary, which cargo cannot track as a dependency:
/// rebuild when it changes, and say how to get it when it is missing.
fn main() {
    let found = Command::new("sh")
        .args(["-c", "command -v bpf-linker"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match found {
        Some(path) => println!("cargo:rerun-if-changed={path}"),
        None => println!("cargo:warning=bpf-linker not found on PATH: run `cargo xtask setup`"),
    }
}
