//! daos_engine: the data plane process. It owns its SCM mount and bulk devices,
//! runs one thread per target, joins the system through daos_server over dRPC,
//! and creates and destroys pool shards when the server asks.
//!
//! Dependency rule: depends on `proto`, `cart` and `placement` only.

mod engine;
pub mod error;
mod server_link;
pub mod storage;
mod targets;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use prost::Message;
use proto::drpc::{self, method, module, ConnInfo, Handler, HandlerError};
use proto::srv::*;
use proto::{DaosError, Der};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::Error;

/// What daos_server tells an engine on its command line and environment.
#[derive(Debug, Clone)]
pub struct EngineArgs {
    pub targets: u32,
    pub nr_xs_helpers: u32,
    pub group: String,
    pub socket_dir: PathBuf,
    pub scm_mount: PathBuf,
    pub nvme_conf: Option<PathBuf>,
    pub instance_idx: u32,
    pub first_core: u32,
    pub provider: String,
    pub fabric_iface: String,
    pub fabric_port: u16,
}

/// The engine's dRPC socket path for instance `idx`.
pub fn engine_sock(socket_dir: &std::path::Path, idx: u32) -> PathBuf {
    socket_dir.join(format!("daos_engine_{idx}.sock"))
}

/// Finds the IPv4 address of a network interface.
fn iface_addr(name: &str) -> Result<IpAddr, DaosError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| DaosError::new(Der::IO, format!("listing interfaces: {e}")))?;
    for a in addrs {
        if a.interface_name != name {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(IpAddr::V4(sin.ip()));
        }
    }
    Err(DaosError::new(
        Der::INVAL,
        format!("fabric_iface {name:?}: no such interface with an IPv4 address"),
    ))
}

/// Runs the engine until `shutdown` is cancelled.
pub async fn run(args: EngineArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let scm = args.scm_mount.clone();
    let nvme = args.nvme_conf.clone();
    let storage =
        tokio::task::spawn_blocking(move || storage::Storage::open(&scm, nvme.as_deref()))
            .await
            .map_err(|e| Error::io("opening storage", std::io::Error::other(e)))??;
    tracing::info!(
        system = %args.group,
        instance = args.instance_idx,
        provider = %args.provider,
        first_core = args.first_core,
        scm_mount = %args.scm_mount.display(),
        scm_total = storage.scm_total,
        bdevs = storage.devices.len(),
        pools = storage.shards.len(),
        "storage opened"
    );
    let targets = targets::Targets::start(args.targets)
        .map_err(|e| Error::io("starting target threads", e))?;
    let engine = Engine::new(storage, targets);

    // The data-plane endpoint: its address is what clients are told to reach.
    // Object I/O over it arrives with the CaRT transport.
    let ip = iface_addr(&args.fabric_iface)?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, args.fabric_port))
        .await
        .map_err(|e| {
            Error::io(
                format!("binding data-plane endpoint {ip}:{}", args.fabric_port),
                e,
            )
        })?;
    let uri = format!("tcp://{ip}:{}", args.fabric_port);
    let fabric = tokio::spawn(serve_fabric(listener, shutdown.clone()));

    let sock = engine_sock(&args.socket_dir, args.instance_idx);
    let drpc_listener = drpc::bind(&sock)
        .map_err(|e| Error::io(format!("binding dRPC socket {}", sock.display()), e))?;
    let handler = Arc::new(EngineHandler {
        engine: engine.clone(),
    });
    let drpc_task = tokio::spawn(drpc::serve(
        drpc_listener,
        handler,
        shutdown.clone().cancelled_owned(),
    ));

    let notify = NotifyReadyReq {
        uri,
        nctxs: args.targets + args.nr_xs_helpers + 1,
        drpc_listener_sock: sock.display().to_string(),
        instance_idx: args.instance_idx,
        ntgts: args.targets,
        incarnation: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        pid: std::process::id(),
    };
    server_link::stay_joined(&args.socket_dir, notify, shutdown.clone()).await;

    let _ = drpc_task.await;
    let _ = fabric.await;
    let _ = std::fs::remove_file(&sock);
    match Arc::try_unwrap(engine) {
        Ok(e) => e.into_targets().stop(),
        Err(_) => tracing::warn!(
            "engine still referenced at shutdown; target threads left to exit with the process"
        ),
    }
    tracing::info!("engine stopped");
    Ok(())
}

async fn serve_fabric(listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((_s, peer)) => tracing::debug!(%peer, "data-plane connection closed: object I/O is not served yet"),
                Err(e) => tracing::warn!("data-plane accept: {e}"),
            }
        }
    }
}

struct EngineHandler {
    engine: Arc<Engine>,
}

fn status_of(r: &Result<(), Error>) -> (i32, String) {
    match r {
        Ok(()) => (0, String::new()),
        Err(e) => {
            let d = e.to_daos();
            (d.der.code(), d.msg)
        }
    }
}

impl Handler for EngineHandler {
    async fn handle(
        &self,
        conn: ConnInfo,
        module: i32,
        method: i32,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, HandlerError> {
        if module != module::MGMT {
            return Err(HandlerError::UnknownModule);
        }
        // Only daos_server (same user, or root) may manage this engine.
        if !conn.peer.is_self_or_root() {
            tracing::warn!(
                uid = conn.peer.uid,
                "refusing dRPC call {method} from another user"
            );
            return Err(HandlerError::Failure);
        }
        let e = &self.engine;
        Ok(match method {
            method::POOL_CREATE => {
                let req = PoolCreateShardReq::decode(body.as_slice())?;
                let r = e
                    .pool_create(req.pool_uuid.clone(), req.scm_bytes, req.nvme_bytes)
                    .await;
                match &r {
                    Ok(()) => {
                        tracing::info!(pool = %req.pool_uuid, scm = req.scm_bytes, nvme = req.nvme_bytes, "pool shard created")
                    }
                    Err(err) => {
                        tracing::warn!(pool = %req.pool_uuid, "pool shard create failed: {err}")
                    }
                }
                let (status, info) = status_of(&r);
                PoolCreateShardResp { status, info }.encode_to_vec()
            }
            method::POOL_DESTROY => {
                let req = PoolDestroyShardReq::decode(body.as_slice())?;
                let (status, info) = status_of(&e.pool_destroy(req.pool_uuid).await);
                PoolDestroyShardResp { status, info }.encode_to_vec()
            }
            method::STORAGE_QUERY => {
                StorageQueryReq::decode(body.as_slice())?;
                match e.space().await {
                    Ok(s) => StorageQueryResp {
                        status: 0,
                        scm: Some(s.scm),
                        nvme: Some(s.nvme),
                        pools: s.pools,
                    },
                    Err(err) => StorageQueryResp {
                        status: err.to_daos().der.code(),
                        ..Default::default()
                    },
                }
                .encode_to_vec()
            }
            method::POOL_QUERY => {
                let req = PoolQueryShardReq::decode(body.as_slice())?;
                match e.pool_query(req.pool_uuid).await {
                    Ok(shard) => PoolQueryShardResp {
                        status: 0,
                        shard: Some(shard),
                    },
                    Err(err) => PoolQueryShardResp {
                        status: err.to_daos().der.code(),
                        shard: None,
                    },
                }
                .encode_to_vec()
            }
            method::PREP_SHUTDOWN => {
                PrepShutdownReq::decode(body.as_slice())?;
                tracing::info!("preparing to shut down");
                PrepShutdownResp { status: 0 }.encode_to_vec()
            }
            _ => return Err(HandlerError::UnknownMethod),
        })
    }
}
