fn main() {
    // Behave like other CLI tools when the reader of our output goes away (`| head`).
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(netctl::cli::main());
}
