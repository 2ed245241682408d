//! `netctl docker-plugin`: Docker's remote network driver and IPAM driver (plugin API v1.2)
//! on a unix socket, so `docker network create -d netctl` and `docker run -p` get netctl's
//! datapath. Everything it knows lives in netctl's state: a restarted plugin resumes.

pub mod driver;
pub mod http;

use std::{
    os::{
        fd::AsRawFd,
        unix::{
            fs::{FileTypeExt, PermissionsExt},
            net::{UnixListener, UnixStream},
        },
    },
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};

/// Serves dockerd on `socket` until killed.
pub fn serve(socket: &Path) -> Result<i32> {
    crate::base::sigpipe::ignore();
    crate::engine::ctx::require_root()?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by an earlier run (nothing answers on it any more) goes; anything else
    // at that path is someone's and stays.
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket: remove it or choose another --socket",
                socket.display()
            );
        }
        if UnixStream::connect(socket).is_err() {
            let _ = std::fs::remove_file(socket);
        }
    }
    // Root-only from the moment it exists: the umask covers the window before chmod.
    // SAFETY: umask has no preconditions; the old mask is put back right after.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(socket);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| {
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
        // dockerd runs as root; nobody else drives the network.
        if peer_uid(&stream) != Some(0) {
            eprintln!("netctl docker-plugin: refused a connection from a non-root process");
            continue;
        }
        // A client that stops talking mid-request gives its thread back.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        std::thread::spawn(move || {
            http::serve(stream, &|req| {
                driver::handle(&req.path, &req.body).map_err(|e| {
                    let msg = crate::model::text::one_line(&e);
                    eprintln!("netctl docker-plugin: {}: {msg}", req.path);
                    msg
                })
            })
        });
    }
    Ok(0)
}

/// The uid of the process at the other end (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}
