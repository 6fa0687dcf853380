//! The client context: the agent (attach info, credentials, pool lookup) and
//! the data-plane connections to every rank.
//!
//! Invariant: one [`Daos`] holds one connection per engine (cart reconnects it
//! after the engine restarts); rank addresses come from the agent's attach
//! info and are refreshed when a rank is missing or unreachable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use proto::auth_pb::Credential;
use proto::{DaosError, Der};
use tokio::sync::Mutex;

use crate::agent::AgentClient;
use crate::error::Error;
use crate::pool::{Pool, PoolFlags};

/// The default DAOS system name.
pub const DEFAULT_SYS: &str = "daos_server";

/// Options of a client context.
#[derive(Debug, Clone)]
pub struct DaosOpts {
    /// The agent's runtime directory (default: `DAOS_AGENT_DRPC_DIR` or /var/run/daos_agent).
    pub agent_dir: Option<PathBuf>,
    /// The system to attach to (default: `DAOS_SYSTEM` or `daos_server`).
    pub sys: String,
    /// How long one data-plane RPC may take.
    pub rpc_timeout: Duration,
    /// How long a call retries while a service elects a leader or an engine restarts.
    pub retry_for: Duration,
}

impl Default for DaosOpts {
    fn default() -> Self {
        DaosOpts {
            agent_dir: None,
            sys: std::env::var("DAOS_SYSTEM").unwrap_or_else(|_| DEFAULT_SYS.to_string()),
            rpc_timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(60),
        }
    }
}

/// A client's connection to a DAOS system. Cheap to clone.
#[derive(Clone)]
pub struct Daos {
    inner: Arc<Inner>,
}

struct Inner {
    opts: DaosOpts,
    agent: Mutex<AgentClient>,
    ranks: RwLock<BTreeMap<u32, String>>,
    clients: cart::Clients,
}

impl Daos {
    /// Attaches to the system through the local agent.
    pub async fn connect() -> Result<Daos, Error> {
        Daos::with_opts(DaosOpts::default()).await
    }

    pub async fn with_opts(opts: DaosOpts) -> Result<Daos, Error> {
        let agent = AgentClient::connect(opts.agent_dir.as_deref()).await?;
        let d = Daos {
            inner: Arc::new(Inner {
                opts,
                agent: Mutex::new(agent),
                ranks: RwLock::new(BTreeMap::new()),
                clients: cart::Clients::new(cart::ClientOpts::default()),
            }),
        };
        d.refresh_ranks().await?;
        Ok(d)
    }

    pub fn opts(&self) -> &DaosOpts {
        &self.inner.opts
    }

    /// Connects to pool `id` (UUID or label).
    pub async fn pool_connect(&self, id: &str, flags: PoolFlags) -> Result<Pool, Error> {
        Pool::connect(self.clone(), id, flags).await
    }

    /// Re-reads the ranks' addresses from the agent.
    pub(crate) async fn refresh_ranks(&self) -> Result<(), Error> {
        let info = self
            .inner
            .agent
            .lock()
            .await
            .get_attach_info(&self.inner.opts.sys)
            .await?;
        let map: BTreeMap<u32, String> = info
            .rank_uris
            .into_iter()
            .map(|r| (r.rank, r.uri))
            .collect();
        if let Ok(mut g) = self.inner.ranks.write() {
            *g = map;
        }
        Ok(())
    }

    pub(crate) async fn credential(&self) -> Result<Credential, Error> {
        self.inner.agent.lock().await.request_credential().await
    }

    pub(crate) async fn pool_find(&self, id: &str) -> Result<proto::mgmt::PoolFindResp, Error> {
        self.inner
            .agent
            .lock()
            .await
            .pool_find(&self.inner.opts.sys, id)
            .await
    }

    fn known_uri(&self, rank: u32) -> Option<String> {
        self.inner.ranks.read().ok()?.get(&rank).cloned()
    }

    /// The data-plane address of `rank`, asking the agent again if it is unknown.
    pub(crate) async fn rank_uri(&self, rank: u32) -> Result<String, Error> {
        if let Some(u) = self.known_uri(rank) {
            return Ok(u);
        }
        self.refresh_ranks().await?;
        self.known_uri(rank).ok_or_else(|| {
            DaosError::new(
                Der::UNREACH,
                format!("rank {rank} is not in the system's attach info"),
            )
            .into()
        })
    }

    /// One RPC to `rank`: encodes `req`, sends it with `bulk`, decodes the reply.
    pub(crate) async fn rpc<Req: Message, Resp: Message + Default>(
        &self,
        rank: u32,
        opcode: u32,
        req: &Req,
        bulk: Bytes,
    ) -> Result<(Resp, Bytes), Error> {
        let uri = self.rank_uri(rank).await?;
        let client = self
            .inner
            .clients
            .get(&uri)
            .map_err(|e| Error::Daos(e.to_daos()))?;
        let reply = client
            .call(cart::Request {
                opcode,
                header: Bytes::from(req.encode_to_vec()),
                bulk,
                timeout: self.inner.opts.rpc_timeout,
            })
            .await
            .map_err(|e| {
                let d = e.to_daos();
                Error::Daos(DaosError::new(
                    d.der,
                    format!("rank {rank} ({uri}): {}", d.msg),
                ))
            })?;
        let (header, bulk) = reply.into_result()?;
        let resp = Resp::decode(header).map_err(|e| {
            DaosError::new(
                Der::PROTO,
                format!("rank {rank}: reply to opcode {opcode:#x} does not decode: {e}"),
            )
        })?;
        Ok((resp, bulk))
    }
}

/// Errors after which the same call may succeed a little later (or on another
/// replica): a service electing a leader, an engine restarting.
pub(crate) fn retryable(der: Der) -> bool {
    matches!(
        der,
        Der::NOTLEADER
            | Der::NOTREPLICA
            | Der::UNREACH
            | Der::TIMEDOUT
            | Der::AGAIN
            | Der::BUSY
            | Der::INPROGRESS
            | Der::SHUTDOWN
    )
}
