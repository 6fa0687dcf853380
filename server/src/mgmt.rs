//! The management gRPC API (`MgmtSvc`) and the raft peer service, with TLS when
//! `transport_config.allow_insecure` is false.
//!
//! Handlers run each request on a spawned task: tonic drops a handler's future
//! when the client goes away, and a pool create must not stop half way because
//! dmg was interrupted.

use std::sync::Arc;
use std::time::Duration;

use proto::mgmt::mgmt_raft_server::MgmtRaftServer;
use proto::mgmt::mgmt_svc_server::{MgmtSvc, MgmtSvcServer};
use proto::mgmt::*;
use proto::{DaosError, Der};
use tokio_util::sync::CancellationToken;
use tonic::transport::ClientTlsConfig;
use tonic::{Request, Response, Status};

use crate::config::TransportConfig;
use crate::error::{io, Result};
use crate::ms::state::{MemberState, MsCmd};
use crate::storage::{bdev_size, fs_total, is_mountpoint};
use crate::Server;

/// What the config and the filesystem say about one engine's storage. Blocks.
fn scan_engine(cfg: &crate::config::EngineConfig) -> (ScmMount, Vec<BdevDevice>, bool) {
    use crate::config::Tier;
    let scm_tier = cfg.scm();
    let mount = cfg
        .scm_mount()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let scm_total = match scm_tier {
        Some(Tier::Ram { scm_size, .. }) => *scm_size,
        _ if is_mountpoint(&mount) => fs_total(&mount).unwrap_or(0),
        _ => 0,
    };
    let scm = ScmMount {
        class: scm_tier.map(|t| t.class().to_string()).unwrap_or_default(),
        mount: mount.display().to_string(),
        total: scm_total,
        avail: scm_total,
        devices: match scm_tier {
            Some(Tier::Dcpm { scm_list, .. }) => scm_list.clone(),
            _ => vec![],
        },
    };
    let bdevs = cfg
        .bdev_tiers()
        .flat_map(|t| t.bdev_list().iter().map(move |p| (t, p)))
        .map(|(t, p)| {
            let size = bdev_size(t, p);
            BdevDevice {
                class: t.class().into(),
                path: p.display().to_string(),
                total: size,
                avail: size,
            }
        })
        .collect();
    let formatted = matches!(crate::storage::read_superblock(&mount), Ok(Some(_)));
    (scm, bdevs, formatted)
}

fn tls_files(t: &TransportConfig) -> proto::tls::TlsFiles<'_> {
    proto::tls::TlsFiles {
        ca_cert: t.ca_cert.as_deref(),
        cert: t.cert.as_deref(),
        key: t.key.as_deref(),
    }
}

fn tls_err(e: proto::tls::TlsError) -> DaosError {
    DaosError::new(Der::INVAL, e.to_string())
}

/// TLS settings for calls to other servers (raft peers).
pub fn client_tls(t: &TransportConfig) -> Result<Option<ClientTlsConfig>> {
    if t.allow_insecure {
        return Ok(None);
    }
    tls_files(t).client().map(Some).map_err(tls_err)
}

/// Builds the gRPC server future; it ends when `shutdown` is cancelled.
pub fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>> {
    let mut b = tonic::transport::Server::builder();
    let t = &server.cfg.transport_config;
    if !t.allow_insecure {
        let tls = tls_files(t).server().map_err(tls_err)?;
        b = b
            .tls_config(tls)
            .map_err(|e| DaosError::new(Der::INVAL, format!("transport_config: {e}")))?;
    }
    let router = b
        .add_service(MgmtRaftServer::new(crate::peer::PeerService::new(
            server.clone(),
        )))
        .add_service(MgmtSvcServer::new(Svc { server }));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    Ok(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
        {
            tracing::error!("gRPC server failed: {e}");
        }
    })
}

struct Svc {
    server: Arc<Server>,
}

use proto::tls::Component;

/// Who may manage the system: dmg, and servers acting for it.
const ADMIN: &[Component] = &[Component::Admin, Component::Server];
/// Who may ask for attach info: agents too.
const ATTACH: &[Component] = &[Component::Admin, Component::Agent, Component::Server];

/// With TLS, refuses a caller whose certificate names another component.
pub(crate) fn authorize<T>(
    insecure: bool,
    req: &Request<T>,
    who: &[Component],
) -> std::result::Result<(), Status> {
    if insecure {
        return Ok(());
    }
    let refuse = |m: String| {
        tracing::warn!("refusing call: {m}");
        Err(DaosError::new(Der::NO_PERM, m).to_status())
    };
    match proto::tls::peer_component(req) {
        Ok(c) if who.contains(&c) => Ok(()),
        Ok(c) => refuse(format!("a {c:?} certificate may not make this call")),
        Err(e) => refuse(e),
    }
}

type Res<T> = std::result::Result<Response<T>, Status>;

type Job<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>;

impl Svc {
    fn allow<T>(&self, req: &Request<T>, who: &[Component]) -> std::result::Result<(), Status> {
        authorize(self.server.cfg.transport_config.allow_insecure, req, who)
    }

    /// Checks the caller, then runs `f` on the request on its own task, so a
    /// client hanging up cannot cut it short.
    async fn run<Q, T: Send + 'static>(
        &self,
        r: Request<Q>,
        who: &[Component],
        f: impl FnOnce(Arc<Server>, Q) -> Job<T>,
    ) -> Res<T> {
        self.allow(&r, who)?;
        match tokio::spawn(f(self.server.clone(), r.into_inner())).await {
            Ok(Ok(v)) => Ok(Response::new(v)),
            Ok(Err(e)) => {
                tracing::debug!("request failed: {e}");
                Err(e.to_status())
            }
            Err(e) => {
                Err(DaosError::new(Der::MISC, format!("request task failed: {e}")).to_status())
            }
        }
    }
}

impl Server {
    async fn system_query(&self, ranks: &[u32]) -> Result<SystemQueryResp> {
        let ms = self.ms()?;
        let (members, data_version) = ms
            .read(|db| {
                let m: Vec<SystemMember> = db
                    .members
                    .values()
                    .filter(|m| ranks.is_empty() || ranks.contains(&m.rank))
                    .map(|m| SystemMember {
                        rank: m.rank,
                        uuid: m.uuid.clone(),
                        addr: m.addr.clone(),
                        fabric_uri: m.fabric_uri.clone(),
                        state: m.state.as_str().into(),
                        info: m.info.clone(),
                        fault_domain: m.fault_domain.clone(),
                        incarnation: m.incarnation,
                        instance_idx: m.instance_idx,
                    })
                    .collect();
                (m, db.data_version)
            })
            .await?;
        Ok(SystemQueryResp {
            members,
            sys_name: self.cfg.name.clone(),
            data_version,
        })
    }

    /// Local engine index of each requested rank (all members when `ranks` is empty).
    /// The members named by `ranks` (all when empty): rank, engine index on its
    /// server, and that server's address.
    async fn target_members(&self, ranks: &[u32]) -> Result<Vec<(u32, u32, String)>> {
        let ms = self.ms()?;
        let members = ms
            .read(|db| {
                db.members
                    .values()
                    .map(|m| (m.rank, m.instance_idx, m.addr.clone()))
                    .collect::<Vec<_>>()
            })
            .await?;
        if let Some(r) = ranks.iter().find(|r| !members.iter().any(|m| m.0 == **r)) {
            return Err(DaosError::new(
                Der::NONEXIST,
                format!("rank {r} is not a member of the system"),
            ));
        }
        Ok(members
            .into_iter()
            .filter(|(r, _, _)| ranks.is_empty() || ranks.contains(r))
            .collect())
    }

    /// Starts or stops each named rank, on this server or through the one hosting it.
    async fn rank_control(
        self: &Arc<Self>,
        ranks: &[u32],
        start: bool,
        force: bool,
    ) -> Result<Vec<RankResult>> {
        let ms = self.ms()?;
        let mut results = Vec::new();
        for (rank, idx, addr) in self.target_members(ranks).await? {
            if !start {
                let cmd = MsCmd::SetMemberState {
                    rank,
                    state: MemberState::Stopping,
                    info: "stop requested".into(),
                    incarnation: None,
                };
                let _ = ms.write(cmd).await;
            }
            let r = if addr == self.self_addr {
                if start {
                    self.start_engine(idx as usize).await
                } else {
                    self.stop_engine(idx as usize, force).await
                }
            } else {
                let req = RankControlReq {
                    rank,
                    start,
                    force,
                    instance_idx: idx,
                };
                match self.remote_rank_control(&addr, req).await {
                    Ok(res) if res.errored => Err(DaosError::new(Der::MISC, res.msg)),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            };
            let state = ms
                .read(|db| db.members.get(&rank).map(|m| m.state.as_str().to_string()))
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            results.push(RankResult {
                rank,
                action: if start { "start" } else { "stop" }.into(),
                errored: r.is_err(),
                msg: r.err().map(|e| e.to_string()).unwrap_or_default(),
                state,
                addr,
            });
        }
        Ok(results)
    }

    async fn storage_scan(&self, usage: bool) -> Result<StorageScanResp> {
        let cfgs: Vec<_> = self.engines.iter().map(|i| i.cfg.clone()).collect();
        // Mount tables, statvfs and device sizes: off the runtime.
        let scanned =
            tokio::task::spawn_blocking(move || cfgs.iter().map(scan_engine).collect::<Vec<_>>())
                .await
                .map_err(|e| io("scanning storage", e))?;
        let mut engines = Vec::new();
        for (inst, (mut scm, mut bdevs, formatted)) in self.engines.iter().zip(scanned) {
            if usage && inst.joined() {
                let q: Result<proto::srv::StorageQueryResp> = inst
                    .call(
                        proto::drpc::method::STORAGE_QUERY,
                        &proto::srv::StorageQueryReq {},
                        Duration::from_secs(10),
                    )
                    .await;
                match q {
                    Ok(q) => {
                        if let Some(t) = q.scm {
                            scm.total = t.total;
                            scm.avail = t.total.saturating_sub(t.reserved);
                        }
                        // Reservations are per engine; show them against the devices in order.
                        let mut reserved = q.nvme.map(|t| t.reserved).unwrap_or(0);
                        for b in &mut bdevs {
                            let take = reserved.min(b.total);
                            b.avail = b.total - take;
                            reserved -= take;
                        }
                    }
                    Err(e) => tracing::warn!(engine = inst.idx, "storage query: {e}"),
                }
            }
            let st = inst.state();
            engines.push(EngineStorage {
                instance_idx: inst.idx,
                formatted,
                running: st.pid.is_some(),
                rank: st.rank.map(i64::from).unwrap_or(-1),
                scm: Some(scm),
                bdevs,
            });
        }
        Ok(StorageScanResp {
            host: self.host.clone(),
            engines,
        })
    }

    async fn storage_format(self: &Arc<Self>, force: bool) -> Result<StorageFormatResp> {
        if force {
            if let Some(i) = self.engines.iter().find(|e| e.state().pid.is_some()) {
                return Err(DaosError::new(
                    Der::BUSY,
                    format!(
                        "engine {} is running: run `dmg system stop` before a forced format",
                        i.idx
                    ),
                ));
            }
            if let Ok(ms) = self.ms() {
                let n = ms.read(|db| db.pools.len()).await?;
                if n > 0 {
                    return Err(DaosError::new(
                        Der::BUSY,
                        format!("the system has {n} pool(s): destroy them before a forced format"),
                    ));
                }
            }
            if self.cfg.control_metadata.is_none() && self.ms.get().is_some() {
                return Err(DaosError::new(
                    Der::BUSY,
                    "the management service lives in engine 0's scm_mount; set control_metadata.path to reformat a running system",
                ));
            }
        }
        let mut results = Vec::new();
        for inst in &self.engines {
            let (idx, cfg, name) = (inst.idx, inst.cfg.clone(), self.cfg.name.clone());
            let r = tokio::task::spawn_blocking(move || {
                crate::storage::format_engine(idx, &cfg, &name, force)
            })
            .await
            .map_err(|e| DaosError::new(Der::MISC, e.to_string()))?;
            match &r {
                Ok(info) => tracing::info!(engine = idx, "{info}"),
                Err(e) => tracing::error!(engine = idx, "format failed: {e}"),
            }
            results.push(EngineFormatResult {
                instance_idx: idx,
                errored: r.is_err(),
                info: r.unwrap_or_else(|e| e.to_string()),
            });
        }
        self.start_ms().await?;
        for (i, res) in results.iter_mut().enumerate() {
            if res.errored {
                continue;
            }
            if let Err(e) = self.start_engine(i).await {
                res.errored = true;
                res.info = format!("formatted, but the engine did not start: {e}");
            }
        }
        Ok(StorageFormatResp {
            host: self.host.clone(),
            results,
        })
    }

    async fn attach_info(&self, req: GetAttachInfoReq) -> Result<GetAttachInfoResp> {
        if !req.sys.is_empty() && req.sys != self.cfg.name {
            return Err(DaosError::new(
                Der::INVAL,
                format!(
                    "system {:?} is not served here (this is {:?})",
                    req.sys, self.cfg.name
                ),
            ));
        }
        let ms = self.ms()?;
        let replicas = self.cfg.replica_addrs();
        let (uris, ms_ranks, data_version) = ms
            .read(|db| {
                // Ranks on management service replicas, as DAOS reports them.
                let ms_ranks: Vec<u32> = db
                    .members
                    .values()
                    .filter(|m| replicas.contains(&m.addr))
                    .map(|m| m.rank)
                    .collect();
                let uris: Vec<RankUri> = db
                    .members
                    .values()
                    .filter(|m| m.state == MemberState::Joined)
                    .map(|m| RankUri {
                        rank: m.rank,
                        uri: m.fabric_uri.clone(),
                        provider: self.cfg.provider.clone(),
                        nctxs: m.nctxs,
                    })
                    .collect();
                (uris, ms_ranks, db.data_version)
            })
            .await?;
        let e0 = self.cfg.engines.first();
        Ok(GetAttachInfoResp {
            status: 0,
            sys: self.cfg.name.clone(),
            ms_ranks,
            rank_uris: if req.all_ranks {
                uris
            } else {
                uris.into_iter().take(1).collect()
            },
            client_net_hint: Some(ClientNetHint {
                provider: self.cfg.provider.clone(),
                interface: e0.map(|e| e.fabric_iface.clone()).unwrap_or_default(),
                domain: e0.map(|e| e.fabric_iface.clone()).unwrap_or_default(),
                crt_timeout: self.cfg.crt_timeout,
            }),
            data_version,
            access_points: self.cfg.replica_addrs(),
        })
    }
}

#[tonic::async_trait]
impl MgmtSvc for Svc {
    async fn system_query(&self, r: Request<SystemQueryReq>) -> Res<SystemQueryResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.system_query(&req.ranks).await })
        })
        .await
    }

    async fn system_stop(&self, r: Request<SystemStopReq>) -> Res<SystemStopResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move {
                Ok(SystemStopResp {
                    results: s.rank_control(&req.ranks, false, req.force).await?,
                })
            })
        })
        .await
    }

    async fn system_start(&self, r: Request<SystemStartReq>) -> Res<SystemStartResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move {
                Ok(SystemStartResp {
                    results: s.rank_control(&req.ranks, true, false).await?,
                })
            })
        })
        .await
    }

    async fn leader_query(&self, r: Request<LeaderQueryReq>) -> Res<LeaderQueryResp> {
        self.run(r, ADMIN, |s, _| {
            Box::pin(async move {
                let ms = s.ms()?;
                let _ = ms.wait_leader(Duration::from_secs(3)).await;
                Ok(LeaderQueryResp {
                    current_leader: ms.leader().map(|(_, a)| a).unwrap_or_default(),
                    replicas: ms.replicas().into_values().collect(),
                    down_replicas: ms.lagging_replicas().into_iter().map(|(_, a)| a).collect(),
                })
            })
        })
        .await
    }

    async fn storage_scan(&self, r: Request<StorageScanReq>) -> Res<StorageScanResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.storage_scan(req.usage).await })
        })
        .await
    }

    async fn storage_format(&self, r: Request<StorageFormatReq>) -> Res<StorageFormatResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.storage_format(req.force).await })
        })
        .await
    }

    async fn pool_create(&self, r: Request<PoolCreateReq>) -> Res<PoolCreateResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.pool_create(req).await })
        })
        .await
    }

    async fn pool_destroy(&self, r: Request<PoolDestroyReq>) -> Res<PoolDestroyResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.pool_destroy(req).await.map(|_| PoolDestroyResp {}) })
        })
        .await
    }

    async fn pool_list(&self, r: Request<PoolListReq>) -> Res<PoolListResp> {
        self.run(r, ADMIN, |s, _| {
            Box::pin(async move { s.pool_list().await })
        })
        .await
    }

    async fn pool_query(&self, r: Request<PoolQueryReq>) -> Res<PoolQueryResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.pool_query(&req.id).await })
        })
        .await
    }

    async fn pool_get_prop(&self, r: Request<PoolGetPropReq>) -> Res<PoolGetPropResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.pool_get_prop(req).await })
        })
        .await
    }

    async fn pool_set_prop(&self, r: Request<PoolSetPropReq>) -> Res<PoolSetPropResp> {
        self.run(r, ADMIN, |s, req| {
            Box::pin(async move { s.pool_set_prop(req).await.map(|_| PoolSetPropResp {}) })
        })
        .await
    }

    /// Any component may ask for the version.
    async fn server_version(&self, _r: Request<ServerVersionReq>) -> Res<ServerVersionResp> {
        Ok(Response::new(ServerVersionResp {
            version: proto::VERSION.into(),
            host: self.server.host.clone(),
        }))
    }

    async fn pool_find(&self, r: Request<PoolFindReq>) -> Res<PoolFindResp> {
        self.run(r, ATTACH, |s, req| {
            Box::pin(async move { s.pool_find(&req.id).await })
        })
        .await
    }

    async fn get_attach_info(&self, r: Request<GetAttachInfoReq>) -> Res<GetAttachInfoResp> {
        self.run(r, ATTACH, |s, req| {
            Box::pin(async move { s.attach_info(req).await })
        })
        .await
    }
}
