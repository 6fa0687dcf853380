//! Raft messages between management service replicas, over the `MgmtRaft` gRPC
//! service. Payloads are openraft's own types, JSON encoded.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use proto::mgmt::mgmt_raft_client::MgmtRaftClient;
use proto::mgmt::mgmt_raft_server::MgmtRaft;
use proto::mgmt::RaftMsg;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::TypeConfig;

type NodeId = u64;

pub struct Network {
    tls: Option<ClientTlsConfig>,
}

impl Network {
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Network { tls }
    }
}

/// The three raft RPCs.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

pub struct Conn {
    target: NodeId,
    addr: String,
    tls: Option<ClientTlsConfig>,
    client: Option<MgmtRaftClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Conn {
        Conn {
            target,
            addr: node.addr.clone(),
            tls: self.tls.clone(),
            client: None,
        }
    }
}

impl Conn {
    async fn client(&mut self) -> Result<&mut MgmtRaftClient<Channel>, std::io::Error> {
        if self.client.is_none() {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            let mut ep = Endpoint::from_shared(format!("{scheme}://{}", self.addr))
                .map_err(std::io::Error::other)?
                .connect_timeout(std::time::Duration::from_secs(2));
            if let Some(tls) = &self.tls {
                ep = ep.tls_config(tls.clone()).map_err(std::io::Error::other)?;
            }
            self.client = Some(MgmtRaftClient::new(ep.connect_lazy()));
        }
        self.client
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no client"))
    }

    async fn send<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &mut self,
        rpc: Rpc,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let target = self.target;
        let client = self
            .client()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let msg = RaftMsg { data };
        let r = match rpc {
            Rpc::AppendEntries => client.append_entries(msg).await,
            Rpc::Vote => client.vote(msg).await,
            Rpc::InstallSnapshot => client.install_snapshot(msg).await,
        };
        let reply = match r {
            Ok(r) => r.into_inner(),
            Err(st) => {
                self.client = None;
                return Err(RPCError::Unreachable(Unreachable::new(&st)));
            }
        };
        let res: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(Rpc::AppendEntries, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(Rpc::InstallSnapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(Rpc::Vote, &rpc).await
    }
}

/// The receiving side: hands peers' messages to the local raft.
pub struct RaftService {
    raft: Arc<tokio::sync::OnceCell<Arc<super::Ms>>>,
    insecure: bool,
}

impl RaftService {
    /// With TLS (`insecure` false), only `server` certificates may speak raft.
    pub fn new(raft: Arc<tokio::sync::OnceCell<Arc<super::Ms>>>, insecure: bool) -> Self {
        RaftService { raft, insecure }
    }

    fn allow<T>(&self, req: &tonic::Request<T>) -> Result<(), tonic::Status> {
        crate::mgmt::authorize(self.insecure, req, &[proto::tls::Component::Server])
    }

    fn raft(&self) -> Result<&Raft<TypeConfig>, tonic::Status> {
        self.raft
            .get()
            .map(|ms| ms.raft())
            .ok_or_else(|| tonic::Status::unavailable("management service not started"))
    }
}

fn decode<T: DeserializeOwned>(m: &RaftMsg) -> Result<T, tonic::Status> {
    serde_json::from_slice(&m.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("raft message does not decode: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMsg>, tonic::Status> {
    serde_json::to_vec(v)
        .map(|data| tonic::Response::new(RaftMsg { data }))
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl MgmtRaft for RaftService {
    async fn append_entries(
        &self,
        req: tonic::Request<RaftMsg>,
    ) -> Result<tonic::Response<RaftMsg>, tonic::Status> {
        self.allow(&req)?;
        let r = self.raft()?.append_entries(decode(req.get_ref())?).await;
        encode(&r)
    }

    async fn vote(
        &self,
        req: tonic::Request<RaftMsg>,
    ) -> Result<tonic::Response<RaftMsg>, tonic::Status> {
        self.allow(&req)?;
        let r = self.raft()?.vote(decode(req.get_ref())?).await;
        encode(&r)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftMsg>,
    ) -> Result<tonic::Response<RaftMsg>, tonic::Status> {
        self.allow(&req)?;
        let r = self.raft()?.install_snapshot(decode(req.get_ref())?).await;
        encode(&r)
    }
}
