//! Server-to-server calls (`MgmtRaft` gRPC; only `server` certificates under TLS).
//!
//! - Raft traffic between management service replicas.
//! - Management service writes from any server are applied by the leader:
//!   [`Server::ms_write`] writes locally when this replica leads, and otherwise
//!   forwards to the leader (following one `leader:` hint) or to the replicas in turn.
//! - The leader reaches an engine hosted by another server through that server
//!   ([`Server::engine_call`], `RankControl`), which makes the dRPC call locally.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use proto::drpc::{module, DrpcClient};
use proto::mgmt::mgmt_raft_client::MgmtRaftClient;
use proto::mgmt::mgmt_raft_server::MgmtRaft;
use proto::mgmt::{EngineCallReq, EngineCallResp, RaftMsg, RankControlReq, RankResult};
use proto::{DaosError, Der};
use rdb::RpcKind;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::Result;
use crate::ms::state::{MsCmd, MsResp};
use crate::Server;

/// A lazily connecting client to another server's `MgmtRaft` service.
pub fn client(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> std::result::Result<MgmtRaftClient<Channel>, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("server address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(120));
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS for {addr}: {e}"))?;
    }
    Ok(MgmtRaftClient::new(ep.connect_lazy()))
}

/// The leader named in a `DER_NOTLEADER` message (`...; leader: host:port`).
fn leader_hint(e: &DaosError) -> Option<String> {
    (e.der == Der::NOTLEADER)
        .then(|| {
            e.msg
                .rsplit_once("leader: ")
                .map(|(_, a)| a.trim().to_string())
        })
        .flatten()
}

fn resp_result(r: MsResp) -> Result<MsResp> {
    match r {
        MsResp::Err { code, msg } => Err(DaosError::new(
            Der::from_code(code).unwrap_or(Der::MISC),
            msg,
        )),
        other => Ok(other),
    }
}

impl Server {
    fn peer(&self, addr: &str) -> Result<MgmtRaftClient<Channel>> {
        client(addr, self.peer_tls.as_ref()).map_err(|m| DaosError::new(Der::INVAL, m))
    }

    async fn forward_write(&self, addr: &str, cmd: &MsCmd) -> Result<MsResp> {
        let data = serde_json::to_vec(cmd).map_err(|e| DaosError::new(Der::MISC, e.to_string()))?;
        let reply = self
            .peer(addr)?
            .ms_write(RaftMsg { data })
            .await
            .map_err(|s| DaosError::from_status(&s))?;
        let r: MsResp = serde_json::from_slice(&reply.into_inner().data).map_err(|e| {
            DaosError::new(
                Der::PROTO,
                format!("management service reply from {addr}: {e}"),
            )
        })?;
        resp_result(r)
    }

    /// Applies `cmd` through the management service leader, wherever it is.
    pub async fn ms_write(&self, cmd: MsCmd) -> Result<MsResp> {
        let mut targets: Vec<String> = Vec::new();
        if let Some(ms) = self.ms_started() {
            match ms.known_leader(Duration::from_secs(5)).await {
                Some((_, l)) if l != self.self_addr => targets.push(l),
                _ => match ms.write(cmd.clone()).await {
                    Err(e) if e.der == Der::NOTLEADER => targets.extend(leader_hint(&e)),
                    r => return r,
                },
            }
        }
        targets.extend(
            self.cfg
                .replica_addrs()
                .into_iter()
                .filter(|a| *a != self.self_addr),
        );
        let mut last = DaosError::new(
            Der::UNREACH,
            "no management service replica could be reached",
        );
        let mut tried = Vec::new();
        while let Some(addr) = targets.first().cloned() {
            targets.remove(0);
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            match self.forward_write(&addr, &cmd).await {
                Err(e)
                    if e.der == Der::NOTLEADER
                        || e.der == Der::UNREACH
                        || e.der == Der::NOTREPLICA
                        || e.der == Der::SHUTDOWN =>
                {
                    if let Some(l) = leader_hint(&e) {
                        targets.insert(0, l);
                    }
                    last = e;
                }
                r => return r,
            }
        }
        Err(last)
    }

    /// Calls rank `rank`'s engine: directly when this server hosts it, else
    /// through the server that does (its control address in the membership).
    pub async fn engine_call<Req: Message, Resp: Message + Default>(
        &self,
        rank: u32,
        method: i32,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        if let Some(inst) = self
            .engines
            .iter()
            .find(|e| e.state().rank == Some(rank) && e.joined())
        {
            return inst.call(method, req, timeout).await;
        }
        let ms = self.ms()?;
        let addr = ms
            .read(|db| db.members.get(&rank).map(|m| m.addr.clone()))
            .await?
            .ok_or_else(|| DaosError::new(Der::NONEXIST, format!("rank {rank} is not a member")))?;
        if addr == self.self_addr {
            return Err(DaosError::new(
                Der::UNREACH,
                format!("rank {rank} is not running on {addr}"),
            ));
        }
        let call = EngineCallReq {
            rank,
            method,
            body: req.encode_to_vec(),
            timeout_ms: timeout.as_millis() as u32,
        };
        let resp = self
            .peer(&addr)?
            .engine_call(call)
            .await
            .map_err(|s| {
                let e = DaosError::from_status(&s);
                DaosError::new(e.der, format!("rank {rank} via {addr}: {}", e.msg))
            })?
            .into_inner();
        Resp::decode(resp.body.as_slice())
            .map_err(|e| DaosError::new(Der::PROTO, format!("rank {rank}: {e}")))
    }

    /// Starts or stops a rank hosted by another server.
    pub async fn remote_rank_control(&self, addr: &str, req: RankControlReq) -> Result<RankResult> {
        let r = self
            .peer(addr)?
            .rank_control(req)
            .await
            .map_err(|s| DaosError::from_status(&s))?;
        Ok(r.into_inner())
    }
}

/// The receiving side of server-to-server calls.
pub struct PeerService {
    server: Arc<Server>,
}

impl PeerService {
    pub fn new(server: Arc<Server>) -> Self {
        PeerService { server }
    }

    fn allow<T>(&self, req: &Request<T>) -> std::result::Result<(), Status> {
        crate::mgmt::authorize(
            self.server.cfg.transport_config.allow_insecure,
            req,
            &[proto::tls::Component::Server],
        )
    }

    fn raft(&self) -> std::result::Result<Arc<crate::ms::Ms>, Status> {
        self.server
            .ms_started()
            .ok_or_else(|| Status::unavailable("management service not started"))
    }

    /// Hands a raft message to this server's replica and returns its reply.
    async fn raft_rpc(&self, rpc: RpcKind, req: Request<RaftMsg>) -> Res<RaftMsg> {
        self.allow(&req)?;
        let data = self
            .raft()?
            .handle(rpc, &req.get_ref().data)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(RaftMsg { data }))
    }
}

fn decode<T: DeserializeOwned>(m: &RaftMsg) -> std::result::Result<T, Status> {
    serde_json::from_slice(&m.data)
        .map_err(|e| Status::invalid_argument(format!("message does not decode: {e}")))
}

fn encode<T: Serialize>(v: &T) -> std::result::Result<Response<RaftMsg>, Status> {
    serde_json::to_vec(v)
        .map(|data| Response::new(RaftMsg { data }))
        .map_err(|e| Status::internal(e.to_string()))
}

type Res<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl MgmtRaft for PeerService {
    async fn append_entries(&self, req: Request<RaftMsg>) -> Res<RaftMsg> {
        self.raft_rpc(RpcKind::AppendEntries, req).await
    }

    async fn vote(&self, req: Request<RaftMsg>) -> Res<RaftMsg> {
        self.raft_rpc(RpcKind::Vote, req).await
    }

    async fn install_snapshot(&self, req: Request<RaftMsg>) -> Res<RaftMsg> {
        self.raft_rpc(RpcKind::InstallSnapshot, req).await
    }

    async fn ms_write(&self, req: Request<RaftMsg>) -> Res<RaftMsg> {
        self.allow(&req)?;
        let cmd: MsCmd = decode(req.get_ref())?;
        let s = self.server.clone();
        // Detached: a forwarded join must not stop half way if the caller gives up.
        let r = tokio::spawn(async move {
            match s.ms() {
                Ok(ms) => ms.write(cmd).await,
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        encode(&r.unwrap_or_else(|e| MsResp::Err {
            code: e.der.code(),
            msg: e.msg,
        }))
    }

    async fn engine_call(&self, req: Request<EngineCallReq>) -> Res<EngineCallResp> {
        self.allow(&req)?;
        let r = req.into_inner();
        let inst = self
            .server
            .engines
            .iter()
            .find(|e| e.state().rank == Some(r.rank) && e.joined())
            .cloned()
            .ok_or_else(|| {
                DaosError::new(
                    Der::UNREACH,
                    format!(
                        "rank {} is not running on {}",
                        r.rank, self.server.self_addr
                    ),
                )
                .to_status()
            })?;
        let sock = inst
            .state()
            .drpc_sock
            .clone()
            .ok_or_else(|| DaosError::new(Der::UNREACH, "engine has no socket").to_status())?;
        let timeout = Duration::from_millis(u64::from(r.timeout_ms.max(1000)));
        let body = async {
            let mut c = DrpcClient::connect(&sock).await?.with_timeout(timeout);
            c.call_raw(module::MGMT, r.method, r.body).await
        }
        .await
        .map_err(|e| DaosError::from(e).to_status())?;
        Ok(Response::new(EngineCallResp { body }))
    }

    async fn rank_control(&self, req: Request<RankControlReq>) -> Res<RankResult> {
        self.allow(&req)?;
        let r = req.into_inner();
        let s = self.server.clone();
        let res = tokio::spawn(async move {
            let idx = r.instance_idx as usize;
            if r.start {
                s.start_engine(idx).await
            } else {
                s.stop_engine(idx, r.force).await
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RankResult {
            rank: r.rank,
            action: if r.start {
                "start".into()
            } else {
                "stop".into()
            },
            errored: res.is_err(),
            msg: res.err().map(|e| e.to_string()).unwrap_or_default(),
            state: String::new(),
            addr: self.server.self_addr.clone(),
        }))
    }
}
