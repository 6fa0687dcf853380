//! Raft messages between replicas, over the embedder's [`Transport`].
//!
//! The sending side encodes openraft's requests as JSON and decodes the reply,
//! which is the receiving replica's `Result<response, RaftError>`, also JSON; the
//! receiving side ([`crate::Rdb::handle`]) does the reverse. The wire format is
//! therefore the one the management service has always used over `MgmtRaft`.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::RdbTypes;
use crate::{Db, RpcKind, Transport, TransportError};

/// Hands openraft one [`Conn`] per target replica.
pub(crate) struct Network<T> {
    node_id: u64,
    transport: Arc<T>,
}

impl<T> Network<T> {
    pub(crate) fn new(node_id: u64, transport: Arc<T>) -> Self {
        Network { node_id, transport }
    }
}

/// The way to one target replica.
pub(crate) struct Conn<T> {
    node_id: u64,
    target: u64,
    addr: String,
    transport: Arc<T>,
}

impl<D: Db, T: Transport> RaftNetworkFactory<RdbTypes<D>> for Network<T> {
    type Network = Conn<T>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Conn<T> {
        Conn {
            node_id: self.node_id,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// A [`TransportError`] as the error openraft acts on: an unreachable replica
/// makes the leader back off before trying it again.
fn rpc_error<E: std::error::Error>(
    e: TransportError,
    node_id: u64,
    target: u64,
    rpc: RpcKind,
) -> RPCError<u64, BasicNode, E> {
    match e {
        TransportError::Unreachable(m) => {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m)))
        }
        TransportError::Timeout(timeout) => RPCError::Timeout(Timeout {
            action: match rpc {
                RpcKind::AppendEntries => RPCTypes::AppendEntries,
                RpcKind::Vote => RPCTypes::Vote,
                RpcKind::InstallSnapshot => RPCTypes::InstallSnapshot,
            },
            id: node_id,
            target,
            timeout,
        }),
        TransportError::Failed(m) => {
            RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
        }
    }
}

impl<T: Transport> Conn<T> {
    async fn send<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        rpc: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .transport
            .call(&self.addr, rpc, data, option.hard_ttl())
            .await
            .map_err(|e| rpc_error(e, self.node_id, self.target, rpc))?;
        let res: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<D: Db, T: Transport> RaftNetwork<RdbTypes<D>> for Conn<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<RdbTypes<D>>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.send(RpcKind::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<RdbTypes<D>>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.send(RpcKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.send(RpcKind::Vote, &rpc, &option).await
    }
}
