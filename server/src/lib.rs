//! daos_server: reads `daos_server.yml`, formats and supervises the engines, runs
//! the management service (raft) and serves the management gRPC API.
//!
//! Dependency rule: depends on `proto` and `rdb` (the replicated database the
//! management service runs on) only; engines are separate processes it
//! talks to over dRPC, never a library it links.

pub mod config;
mod engines;
pub mod error;
mod mgmt;
pub mod ms;
mod peer;
mod pool;
mod props;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proto::{DaosError, Der};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::config::{is_local_addr, ServerConfig};
use crate::engines::EngineInst;
use crate::error::{io, Result};
use crate::ms::state::MsCmd;
use crate::ms::Ms;

/// One daos_server: its config, its engines, and (on replicas) the management service.
pub struct Server {
    pub cfg: ServerConfig,
    pub host: String,
    /// This server's control address as the system knows it.
    pub self_addr: String,
    /// Index of this server in the replica list, if it is a replica.
    pub replica_id: Option<usize>,
    pub engines: Vec<Arc<EngineInst>>,
    pub engine_bin: PathBuf,
    ms: Arc<OnceCell<Arc<Ms>>>,
    start_ms_lock: tokio::sync::Mutex<()>,
    /// TLS for calls to other servers (`None` when insecure).
    pub(crate) peer_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Pools whose create is running on this server; destroy waits them out.
    pub(crate) creating: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Server {
    /// `replica_id` is this server's position in the replica list, if it is one
    /// (see [`config::is_local_addr`]).
    pub fn new(
        cfg: ServerConfig,
        engine_bin: PathBuf,
        replica_id: Option<usize>,
        peer_tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Arc<Self> {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let replicas = cfg.replica_addrs();
        let self_addr = replica_id
            .and_then(|i| replicas.get(i).cloned())
            .unwrap_or_else(|| format!("{host}:{}", cfg.port));
        let engines = cfg
            .engines
            .iter()
            .enumerate()
            .map(|(i, e)| Arc::new(EngineInst::new(i as u32, e.clone())))
            .collect();
        Arc::new(Server {
            cfg,
            host,
            self_addr,
            replica_id,
            engines,
            engine_bin,
            ms: Arc::new(OnceCell::new()),
            start_ms_lock: tokio::sync::Mutex::new(()),
            peer_tls,
            creating: Default::default(),
        })
    }

    /// The management service replica on this server, if started (leader or not).
    pub fn ms_started(&self) -> Option<Arc<Ms>> {
        self.ms.get().cloned()
    }

    /// The management service, if this replica has started it.
    pub fn ms(&self) -> Result<Arc<Ms>> {
        if let Some(ms) = self.ms.get() {
            return Ok(ms.clone());
        }
        if self.replica_id.is_none() {
            return Err(DaosError::new(
                Der::NOTREPLICA,
                format!(
                    "{} is not a management service replica; ask one of {:?}",
                    self.self_addr,
                    self.cfg.replica_addrs()
                ),
            ));
        }
        Err(DaosError::new(
            Der::UNINIT,
            "system storage is not formatted: run `dmg storage format`",
        ))
    }

    /// Where the management service keeps its state: `control_metadata.path`, else
    /// the first engine's SCM mount once formatted (as DAOS does).
    async fn ms_dir(&self) -> Result<Option<PathBuf>> {
        if let Some(m) = &self.cfg.control_metadata {
            return Ok(Some(m.path.join("control_raft")));
        }
        let Some(e0) = self.engines.first() else {
            return Ok(None);
        };
        Ok(e0
            .superblock()
            .await?
            .map(|_| e0.scm_mount().join("control_raft")))
    }

    /// Starts the management service if this is a replica and its directory is ready.
    pub async fn start_ms(&self) -> Result<()> {
        let _g = self.start_ms_lock.lock().await;
        if self.ms.get().is_some() {
            return Ok(());
        }
        let (Some(id), Some(dir)) = (self.replica_id, self.ms_dir().await?) else {
            return Ok(());
        };
        let tls = self.peer_tls.clone();
        let ms = ms::start(&dir, id, self.cfg.replica_addrs(), tls).await?;
        let _ = self.ms.set(ms);
        tracing::info!(dir = %dir.display(), "management service started");
        Ok(())
    }
}

impl Server {
    /// After a restart, members of this server are not joined until their engines
    /// say so again (re-adopted engines rejoin within a second).
    async fn mark_local_members_unresponsive(&self) {
        let mut formatted = false;
        for e in &self.engines {
            formatted |= matches!(e.superblock().await, Ok(Some(_)));
        }
        if !formatted {
            return;
        }
        let cmd = MsCmd::ServerRestarted {
            addr: self.self_addr.clone(),
        };
        if let Err(e) = self.ms_write(cmd).await {
            tracing::warn!("marking this server's ranks unresponsive: {e}");
        }
    }
}

/// Runs the server until `shutdown` is cancelled: gRPC on `listener`, the dRPC
/// socket for engines, and the engines themselves.
pub async fn run(
    cfg: ServerConfig,
    listener: tokio::net::TcpListener,
    engine_bin: PathBuf,
    shutdown: CancellationToken,
) -> Result<()> {
    for w in cfg.warnings() {
        tracing::warn!("config: {w}");
    }
    let (replicas, port) = (cfg.replica_addrs(), cfg.port);
    let replica_id =
        tokio::task::spawn_blocking(move || replicas.iter().position(|a| is_local_addr(a, port)))
            .await
            .map_err(|e| io("resolving mgmt_svc_replicas", e))?;
    let t = cfg.transport_config.clone();
    let peer_tls = tokio::task::spawn_blocking(move || mgmt::client_tls(&t))
        .await
        .map_err(|e| io("reading certificates", e))??;
    let server = Server::new(cfg, engine_bin, replica_id, peer_tls);
    tokio::fs::create_dir_all(&server.cfg.socket_dir)
        .await
        .map_err(|e| {
            io(
                format!("creating socket_dir {}", server.cfg.socket_dir.display()),
                e,
            )
        })?;
    // The management service before the API: a request never finds it half started.
    if let Err(e) = server.start_ms().await {
        tracing::error!("management service: {e}");
    }
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| io("control listener", e))?;
    let grpc = mgmt::serve(server.clone(), listener, shutdown.clone())?;
    let grpc_task = tokio::spawn(grpc);
    tracing::info!(%addr, system = %server.cfg.name, replica = ?server.replica_id, "daos_server listening");

    server.mark_local_members_unresponsive().await;
    // Engines join only after that, so a join is never overwritten by the mark.
    let sock = server.cfg.socket_dir.join("daos_server.sock");
    let drpc_listener = proto::drpc::bind(&sock)
        .map_err(|e| io(format!("binding dRPC socket {}", sock.display()), e))?;
    let handler = Arc::new(engines::SrvHandler {
        server: server.clone(),
    });
    let drpc_task = tokio::spawn(proto::drpc::serve(
        drpc_listener,
        handler,
        shutdown.clone().cancelled_owned(),
    ));

    for i in 0..server.engines.len() {
        if !matches!(server.engines[i].superblock().await, Ok(Some(_))) {
            tracing::info!(
                engine = i,
                "storage not formatted: waiting for `dmg storage format`"
            );
            continue;
        }
        let s = server.clone();
        tokio::spawn(async move {
            if let Err(e) = s.start_engine(i).await {
                tracing::error!(engine = i, "start failed: {e}");
            }
        });
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping engines");
    for i in 0..server.engines.len() {
        if let Err(e) = server.stop_engine(i, false).await {
            tracing::warn!(engine = i, "stop: {e}");
        }
    }
    let _ = grpc_task.await;
    let _ = drpc_task.await;
    if let Some(ms) = server.ms.get() {
        ms.shutdown().await;
    }
    let _ = tokio::fs::remove_file(&sock).await;
    tracing::info!("daos_server stopped");
    Ok(())
}
