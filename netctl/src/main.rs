fn main() {
    // Behave like other CLI tools when the reader of our output goes away (`| head`).
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    netctl::cluster::backend::install();
    // Invoked by a container runtime as its CNI plugin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(netctl::cni::main());
    }
    std::process::exit(netctl::cli::main(netctl::cli::Servers {
        daemon: netctl::daemon::main,
        docker_plugin: netctl::docker::serve,
    }));
}
