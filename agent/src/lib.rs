//! daos_agent: the client-node daemon that tells local DAOS clients who they are
//! and where the system is.
//!
//! It listens on `<runtime_dir>/daos_sock` (mode 0666: any local user may ask)
//! and answers two dRPC calls: a credential signed with the agent's Ed25519 key,
//! naming the caller as the kernel sees it; and the system's attach info,
//! fetched from the management servers and cached.
//!
//! Invariants: while [`run`] serves, the socket file is this process's; it is
//! removed when `run` returns, unless another process has replaced it. `run`
//! refuses to start over a socket another live agent answers on.
//!
//! Dependency rule: this crate uses `proto` only, never another crate's
//! internals.

mod attach;
pub mod config;
mod creds;
pub mod dump;
pub mod error;
mod handler;
pub mod logging;

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proto::drpc::Limits;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::Error;

use attach::{AttachCache, GrpcSource};
use creds::SystemDb;
use handler::AgentHandler;

/// What the agent's listener tolerates. The socket is 0666, so any local user
/// can connect: calls are a few hundred bytes, so 64 KiB frames are plenty; the
/// connection cap and the body timeout keep one user from holding the agent's
/// memory or every connection slot.
const LIMITS: Limits = Limits {
    max_frame: 64 << 10,
    max_conns: 1024,
    body_timeout: Duration::from_secs(5),
};

/// Serves the agent socket until `shutdown` is cancelled, then removes it.
///
/// Validates `config`, creates `runtime_dir` (0755) if missing, loads or
/// generates the credential key, reads TLS material, binds the socket (0666).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate("given to agent::run")?;
    let (listener, guard, handler) =
        tokio::task::spawn_blocking(move || prepare(&config)).await??;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("agent socket", &guard.path, e))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| Error::io("agent socket", &guard.path, e))?;
    tracing::info!(socket = %guard.path.display(), pid = std::process::id(), "daos_agent {} listening", proto::VERSION);
    proto::drpc::serve_with(listener, Arc::new(handler), shutdown.cancelled(), LIMITS).await;
    tracing::info!("daos_agent shutting down");
    drop(guard);
    Ok(())
}

type RealHandler = AgentHandler<GrpcSource, SystemDb>;

/// Everything blocking that must happen before serving.
fn prepare(config: &Config) -> Result<(UnixListener, SocketGuard, RealHandler), Error> {
    // TLS first: a wrong certificate path should fail before anything is created.
    let source = GrpcSource::new(config)?;
    let dir = &config.runtime_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io("runtime_dir", dir, e))?;

    let signer =
        creds::load_or_create_signer(&config.credential_key_path(), &config.credential_pub_path())?;
    tracing::info!(
        key = %config.credential_key_path().display(),
        public_key = %config.credential_pub_path().display(),
        key_id = %signer.key_id(),
        "credential signing key loaded"
    );
    let machinename = nix::unistd::gethostname()
        .map_err(Error::Hostname)?
        .to_string_lossy()
        .into_owned();
    let aps: Vec<String> = config
        .access_points()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(
        system = %config.name,
        access_points = %aps.join(","),
        tls = !config.transport_config.allow_insecure,
        cache = ?config.cache_policy(),
        "attach info source"
    );
    let handler = AgentHandler::new(
        config.name.clone(),
        machinename,
        signer,
        SystemDb,
        AttachCache::new(source, config.cache_policy()),
    );

    let path = config.socket_path();
    let (listener, guard) = bind(&path)?;
    Ok((listener, guard, handler))
}

/// Binds the agent socket at `path`, replacing a stale file but never a live
/// agent's socket, and opens it to every local user.
fn bind(path: &Path) -> Result<(UnixListener, SocketGuard), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::AlreadyRunning {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!(socket = %path.display(), "removing stale agent socket");
            std::fs::remove_file(path).map_err(|e| Error::io("stale agent socket", path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("agent socket", path, e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io("agent socket", path, e))?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io("agent socket", path, e))?;
    let guard = SocketGuard {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| Error::io("agent socket", path, e))?;
    Ok((listener, guard))
}

/// Removes the socket file when dropped, if it is still the one this process
/// bound (same device and inode).
struct SocketGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(socket = %self.path.display(), "cannot remove agent socket: {e}");
                }
            }
            Ok(_) => {
                tracing::warn!(socket = %self.path.display(), "agent socket was replaced; leaving it")
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replaces_stale_but_not_live_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daos_sock");
        let (l, g) = bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o666
        );
        // Live: a listener answers connects.
        assert!(matches!(bind(&path), Err(Error::AlreadyRunning { .. })));
        // Stale: the listener is gone but the file remains.
        drop(l);
        std::mem::forget(g);
        let (_l, g) = bind(&path).unwrap();
        drop(g);
        assert!(!path.exists());
    }

    #[test]
    fn guard_leaves_a_replaced_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daos_sock");
        let (l, g) = bind(&path).unwrap();
        drop(l);
        // Moved aside (not deleted, so its inode cannot be reused) and replaced.
        std::fs::rename(&path, dir.path().join("old_sock")).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        drop(g);
        assert!(path.exists());
    }
}
