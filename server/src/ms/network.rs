//! The sending side of raft between management service replicas, over the
//! `MgmtRaft` gRPC service (served by `crate::peer`). Payloads are openraft's own
//! types, JSON encoded.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use proto::mgmt::mgmt_raft_client::MgmtRaftClient;
use proto::mgmt::RaftMsg;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig};

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
            self.client = Some(
                crate::peer::client(&self.addr, self.tls.as_ref())
                    .map_err(std::io::Error::other)?,
            );
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
