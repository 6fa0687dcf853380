//! daos_engine: the data plane process. It owns its SCM mount and bulk devices,
//! runs one thread per target, joins the system through daos_server over dRPC,
//! and creates and destroys pool shards when the server asks.
//!
//! Dependency rule: depends on `proto`, `cart` and `placement` only.

mod auth;
mod dtx;
mod engine;
pub mod error;
mod hlc;
mod peer;
mod pool_svc;
mod rpc;
mod server_link;
pub mod storage;
mod targets;
pub mod vos;

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
    let key_dir = std::env::var_os(auth::AGENT_KEY_DIR_ENV).map(PathBuf::from);
    let verifier = auth::Verifier::load(key_dir.as_deref())?;
    let engine = Engine::new(storage, targets, verifier);
    engine.open_all().await?;
    let started_ns = engine.hlc().now();

    // The data-plane endpoint: its address is what clients are told to reach.
    let ip = iface_addr(&args.fabric_iface)?;
    let addr = cart::Addr::tcp(SocketAddr::new(ip, args.fabric_port));
    let listener = cart::bind(&addr).await.map_err(|e| {
        let d = e.to_daos();
        DaosError::new(
            d.der,
            format!("binding data-plane endpoint {addr}: {}", d.msg),
        )
    })?;
    let uri = listener.local_addr().to_string();
    let fabric = tokio::spawn(cart::serve(
        listener,
        Arc::new(rpc::DataPlane {
            engine: engine.clone(),
        }),
        cart::ServerLimits::default(),
        shutdown.clone(),
    ));
    let bg = tokio::spawn(background(engine.clone(), started_ns, shutdown.clone()));

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
    let joined = engine.clone();
    server_link::stay_joined(&args.socket_dir, notify, shutdown.clone(), move |rank| {
        joined.set_rank(rank)
    })
    .await;

    let _ = drpc_task.await;
    let _ = fabric.await;
    let _ = bg.await;
    pool_svc::stop_all(&engine).await;
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

/// Work the engine does on its own: once it has a rank, start the pool
/// service replicas it hosts; then settle pending transactions and reclaim
/// old versions every few seconds.
async fn background(engine: Arc<Engine>, started_ns: u64, shutdown: CancellationToken) {
    while engine.rank().is_err() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
    pool_svc::start_all(&engine).await;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        dtx::resolve_pending(&engine, started_ns).await;
        n += 1;
        if n.is_multiple_of(3) {
            engine.aggregate().await;
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
                let svc = req.map.as_ref().map(|m| storage::SvcRec {
                    rank: req.rank,
                    svc_ranks: req.svc_ranks.clone(),
                    map: m.encode_to_vec(),
                    label: req.label.clone(),
                    owner: req.owner.clone(),
                    group: req.group.clone(),
                    acl: req.acl.clone(),
                    props: req
                        .props
                        .iter()
                        .map(|p| (p.name.clone(), p.value.clone()))
                        .collect(),
                });
                let mut r = e
                    .pool_create(req.pool_uuid.clone(), req.scm_bytes, req.nvme_bytes, svc)
                    .await;
                if r.is_ok() {
                    if let Some(rec) = e.shard(&req.pool_uuid) {
                        r = pool_svc::start(e, &rec).await;
                    }
                }
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
                pool_svc::stop(e, &req.pool_uuid).await;
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
