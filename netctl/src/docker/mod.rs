//! `netctl docker-plugin`: Docker's remote network driver and IPAM driver (plugin API v1.2)
//! on a unix socket, so `docker network create -d netctl` and `docker run -p` get netctl's
//! datapath. Everything it knows lives in netctl's state: a restarted plugin resumes.

mod driver;
mod http;

use std::{
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::Path,
};

use anyhow::{Context, Result};

/// Where dockerd looks for a plugin named `netctl`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netctl.sock";

/// Serves dockerd on `socket` until killed.
pub fn serve(socket: &Path) -> Result<i32> {
    crate::ctx::require_root()?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by an earlier run (nothing answers on it any more).
    if std::os::unix::net::UnixStream::connect(socket).is_err() {
        let _ = std::fs::remove_file(socket);
    }
    let listener = UnixListener::bind(socket).with_context(|| {
        format!(
            "listening on {} (is another plugin running?)",
            socket.display()
        )
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    eprintln!(
        "netctl docker-plugin: serving dockerd on {}",
        socket.display()
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            http::serve(stream, &|req| {
                driver::handle(&req.path, &req.body).map_err(|e| {
                    let msg = crate::cli::one_line(&e);
                    eprintln!("netctl docker-plugin: {}: {msg}", req.path);
                    msg
                })
            })
        });
    }
    Ok(0)
}
