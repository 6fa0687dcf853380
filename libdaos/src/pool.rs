//! Pools: connect through the pool service, the pool map, and the container
//! service calls (which run in the same replicated service).
//!
//! Invariant: every service call goes to the replica believed to lead; a
//! `DER_NOTLEADER` or an unreachable replica moves the call to the next one,
//! until `retry_for` has passed. The pool map a [`Pool`] holds only moves
//! forward (a newer version replaces it, an older one is ignored).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use placement::PoolMap;
use prost::Message;
use proto::opcode;
use proto::pool::*;
use proto::{DaosError, Der};

use crate::client::{retryable, Daos};
use crate::cont::Container;
use crate::error::Error;

/// How a pool is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolFlags {
    ReadOnly,
    ReadWrite,
}

/// A connected pool. Cheap to clone; disconnects when asked.
#[derive(Clone)]
pub struct Pool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    pub(crate) daos: Daos,
    pub(crate) uuid: String,
    pub(crate) label: String,
    pub(crate) hdl: String,
    svc_ranks: Vec<u32>,
    /// Index in `svc_ranks` of the replica to try first.
    leader: AtomicUsize,
    map: RwLock<Arc<PoolMap>>,
    pub(crate) props: Vec<(String, String)>,
}

/// What `daos pool query` shows.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub uuid: String,
    pub label: String,
    pub map_version: u32,
    pub total_targets: u32,
    pub active_targets: u32,
    pub disabled_targets: u32,
    pub svc_ranks: Vec<u32>,
    pub leader: u32,
    pub scm: TierSpace,
    pub nvme: TierSpace,
    pub num_conts: u32,
    pub ranks: Vec<u32>,
}

impl Pool {
    pub(crate) async fn connect(daos: Daos, id: &str, flags: PoolFlags) -> Result<Pool, Error> {
        let found = daos.pool_find(id).await?;
        if found.svc_reps.is_empty() {
            return Err(DaosError::new(
                Der::NONEXIST,
                format!("pool {id:?} has no service replicas"),
            )
            .into());
        }
        let cred = daos.credential().await?;
        let hdl = uuid::Uuid::new_v4().to_string();
        let req = PoolConnectReq {
            pool: found.uuid.clone(),
            hdl: hdl.clone(),
            cred: cred.encode_to_vec(),
            flags: match flags {
                PoolFlags::ReadOnly => 1,
                PoolFlags::ReadWrite => 2,
            },
        };
        let leader = AtomicUsize::new(0);
        let resp: PoolConnectResp =
            svc_call(&daos, &found.svc_reps, &leader, opcode::pool::CONNECT, &req).await?;
        let map = resp.map.ok_or_else(|| {
            DaosError::new(
                Der::PROTO,
                format!("pool {id:?}: connect reply has no pool map"),
            )
        })?;
        let map = PoolMap::from_proto(&map).map_err(|e| Error::Daos(e.to_daos()))?;
        tracing::debug!(pool = %found.uuid, map_version = map.version, "pool connected");
        Ok(Pool {
            inner: Arc::new(PoolInner {
                daos,
                uuid: resp.pool_uuid,
                label: resp.label,
                hdl,
                svc_ranks: found.svc_reps,
                leader,
                map: RwLock::new(Arc::new(map)),
                props: resp.props.into_iter().map(|p| (p.name, p.value)).collect(),
            }),
        })
    }

    pub fn uuid(&self) -> &str {
        &self.inner.uuid
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// A pool property as it was at connect time.
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.inner
            .props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn daos(&self) -> &Daos {
        &self.inner.daos
    }

    /// The pool map as last seen.
    pub fn map(&self) -> Arc<PoolMap> {
        match self.inner.map.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs `map` if it is newer than the one held.
    pub(crate) fn update_map(&self, map: &proto::pool::PoolMap) {
        let Ok(m) = PoolMap::from_proto(map) else {
            return;
        };
        if let Ok(mut g) = self.inner.map.write() {
            if m.version > g.version {
                tracing::debug!(pool = %self.inner.uuid, version = m.version, "pool map updated");
                *g = Arc::new(m);
            }
        }
    }

    /// A call to the pool service.
    pub(crate) async fn svc<Req: Message, Resp: Message + Default>(
        &self,
        opcode: u32,
        req: &Req,
    ) -> Result<Resp, Error> {
        let i = &self.inner;
        svc_call(&i.daos, &i.svc_ranks, &i.leader, opcode, req).await
    }

    fn hdl_req(&self) -> PoolHdlReq {
        PoolHdlReq {
            pool_uuid: self.inner.uuid.clone(),
            hdl: self.inner.hdl.clone(),
        }
    }

    /// Space, targets and service of the pool (`daos pool query`).
    pub async fn query(&self) -> Result<PoolInfo, Error> {
        let r: PoolQueryResp = self.svc(opcode::pool::QUERY, &self.hdl_req()).await?;
        if let Some(m) = &r.map {
            self.update_map(m);
        }
        let map = self.map();
        Ok(PoolInfo {
            uuid: r.pool_uuid,
            label: r.label,
            map_version: map.version,
            total_targets: r.total_targets,
            active_targets: r.active_targets,
            disabled_targets: r.disabled_targets,
            svc_ranks: r.svc_ranks,
            leader: r.leader,
            scm: r.scm.unwrap_or_default(),
            nvme: r.nvme.unwrap_or_default(),
            num_conts: r.num_conts,
            ranks: map.ranks.iter().map(|r| r.rank.0).collect(),
        })
    }

    pub(crate) fn cont_req(&self, cont: &str) -> ContReq {
        ContReq {
            pool_uuid: self.inner.uuid.clone(),
            pool_hdl: self.inner.hdl.clone(),
            cont: cont.to_string(),
            coh: String::new(),
            flags: 0,
        }
    }

    /// Every container of the pool.
    pub async fn list_containers(&self) -> Result<Vec<ContInfo>, Error> {
        let r: ContListResp = self.svc(opcode::cont::LIST, &self.cont_req("")).await?;
        Ok(r.conts)
    }

    /// Creates a container; `props` are DAOS property names and values (the
    /// label among them). Returns its UUID.
    pub async fn create_container(&self, props: Vec<(String, String)>) -> Result<String, Error> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let req = ContCreateReq {
            pool_uuid: self.inner.uuid.clone(),
            pool_hdl: self.inner.hdl.clone(),
            cont_uuid: uuid.clone(),
            props: props
                .into_iter()
                .map(|(name, value)| Prop { name, value })
                .collect(),
        };
        let r: ContResp = self.svc(opcode::cont::CREATE, &req).await?;
        Ok(r.info.map(|i| i.uuid).unwrap_or(uuid))
    }

    /// Destroys a container; with `force`, even while it is open.
    pub async fn destroy_container(&self, cont: &str, force: bool) -> Result<(), Error> {
        let mut req = self.cont_req(cont);
        req.flags = u32::from(force);
        let _: proto::obj::Empty = self.svc(opcode::cont::DESTROY, &req).await?;
        Ok(())
    }

    /// Opens a container by UUID or label.
    pub async fn open_container(&self, cont: &str, rw: bool) -> Result<Container, Error> {
        Container::open(self.clone(), cont, rw).await
    }

    /// Ends the connection; handles of this connection are closed by the service.
    pub async fn disconnect(self) -> Result<(), Error> {
        let _: proto::obj::Empty = self.svc(opcode::pool::DISCONNECT, &self.hdl_req()).await?;
        Ok(())
    }
}

/// Sends a service call to the replicas, leader first, moving on after
/// `DER_NOTLEADER` or a replica that does not answer, for up to `retry_for`.
async fn svc_call<Req: Message, Resp: Message + Default>(
    daos: &Daos,
    ranks: &[u32],
    leader: &AtomicUsize,
    opcode: u32,
    req: &Req,
) -> Result<Resp, Error> {
    let deadline = tokio::time::Instant::now() + daos.opts().retry_for;
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0usize;
    loop {
        let i = (leader.load(Ordering::Relaxed) + attempt) % ranks.len().max(1);
        let Some(&rank) = ranks.get(i) else {
            return Err(DaosError::new(Der::INVAL, "pool service has no replicas").into());
        };
        match daos.rpc::<Req, Resp>(rank, opcode, req, Bytes::new()).await {
            Ok((r, _)) => {
                leader.store(i, Ordering::Relaxed);
                return Ok(r);
            }
            Err(e) if retryable(e.der()) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(rank, "pool service call {opcode:#x}: {e}; trying again");
                if e.der() == Der::UNREACH {
                    let _ = daos.refresh_ranks().await;
                }
                attempt += 1;
                if attempt.is_multiple_of(ranks.len().max(1)) {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
            Err(e) => return Err(e),
        }
    }
}
