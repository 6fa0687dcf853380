//! The sending side of raft between management service replicas: an
//! [`rdb::Transport`] over the `MgmtRaft` gRPC service (served by `crate::peer`).
//! One lazily connecting client per peer address is kept and shared by all
//! calls to it; a failed call drops it so the next one reconnects.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use proto::mgmt::mgmt_raft_client::MgmtRaftClient;
use proto::mgmt::RaftMsg;
use rdb::{RpcKind, Transport, TransportError};
use tonic::transport::{Channel, ClientTlsConfig};

pub struct GrpcTransport {
    tls: Option<ClientTlsConfig>,
    clients: Mutex<HashMap<String, MgmtRaftClient<Channel>>>,
}

impl GrpcTransport {
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        GrpcTransport {
            tls,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<MgmtRaftClient<Channel>, TransportError> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| TransportError::Failed("raft client table lock poisoned".into()))?;
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c =
            crate::peer::client(addr, self.tls.as_ref()).map_err(TransportError::Unreachable)?;
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn forget(&self, addr: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(addr);
        }
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        addr: &str,
        rpc: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let addr = addr.to_string();
        async move {
            let mut client = self.client(&addr)?;
            let msg = RaftMsg { data: payload };
            let call = async {
                match rpc {
                    RpcKind::AppendEntries => client.append_entries(msg).await,
                    RpcKind::Vote => client.vote(msg).await,
                    RpcKind::InstallSnapshot => client.install_snapshot(msg).await,
                }
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(r)) => Ok(r.into_inner().data),
                Ok(Err(st)) => {
                    self.forget(&addr);
                    Err(TransportError::Unreachable(format!("{addr}: {st}")))
                }
                Err(_) => Err(TransportError::Timeout(timeout)),
            }
        }
    }
}
