//! The pool service (with the container service inside it, as in DAOS): a
//! raft group (`rdb`) over the pool's service ranks holding the pool map,
//! properties, ACL, handles and the container table.
//!
//! Invariants: every change goes through the replicated log of the group
//! (`Rdb::write`), so it is on a majority of replicas before it is answered;
//! reads are linearizable (`Rdb::read`). A replica that does not lead answers
//! `DER_NOTLEADER` and the client moves on to another. State every target
//! must act on (a destroyed container's objects, the snapshots that pin
//! epochs) is committed first and then pushed to every rank of the pool map;
//! a push that fails is retried by the next change.

pub mod db;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use proto::opcode;
use proto::pool::*;
use proto::{DaosError, Der};
use rdb::{Rdb, RdbOpts, RpcKind, Transport, TransportError};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::rpc::{decode, enc};
use crate::storage::{pool_dir, ShardRec};
use db::{acl_perms, PoolCmd, PoolDb, PoolResp};

impl rdb::Db for PoolDb {
    type Cmd = PoolCmd;
    type Resp = PoolResp;

    fn apply(&mut self, cmd: PoolCmd) -> PoolResp {
        PoolDb::apply(self, cmd)
    }

    fn resp_error(resp: &PoolResp) -> Option<DaosError> {
        resp.clone().into_result().err()
    }
}

/// Raft messages between the replicas of one pool service, over cart.
pub struct CartTransport {
    clients: cart::Clients,
    pool: String,
}

impl Transport for CartTransport {
    async fn call(
        &self,
        addr: &str,
        rpc: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<Vec<u8>, TransportError> {
        let client = self
            .clients
            .get(addr)
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        let msg = RdbMsg {
            pool_uuid: self.pool.clone(),
            kind: match rpc {
                RpcKind::AppendEntries => 0,
                RpcKind::Vote => 1,
                RpcKind::InstallSnapshot => 2,
            },
            payload,
        };
        let reply = client
            .call(cart::Request {
                opcode: opcode::pool::RDB,
                header: enc(&msg),
                bulk: Bytes::new(),
                timeout,
            })
            .await
            .map_err(|e| match e.to_daos().der {
                Der::TIMEDOUT => TransportError::Timeout(timeout),
                Der::UNREACH => TransportError::Unreachable(e.to_string()),
                _ => TransportError::Failed(e.to_string()),
            })?;
        let (h, _) = reply
            .into_result()
            .map_err(|e| TransportError::Failed(e.to_string()))?;
        RdbReply::decode(h)
            .map(|r| r.payload)
            .map_err(|e| TransportError::Failed(format!("reply does not decode: {e}")))
    }
}

pub type Svc = Rdb<PoolDb, CartTransport>;

/// The pool service replicas running on this engine, by pool UUID.
#[derive(Default)]
pub struct Services {
    map: Mutex<BTreeMap<String, Arc<Svc>>>,
    /// Held from "is it running?" to "it is in the map": a pool create the
    /// server re-sends while the first start is still opening the replica's
    /// files finds it running instead of racing it for the directory lock.
    starting: tokio::sync::Mutex<()>,
}

impl Services {
    fn get(&self, pool: &str) -> Option<Arc<Svc>> {
        match self.map.lock() {
            Ok(g) => g.get(pool).cloned(),
            Err(p) => p.into_inner().get(pool).cloned(),
        }
    }

    fn insert(&self, pool: &str, svc: Arc<Svc>) {
        if let Ok(mut g) = self.map.lock() {
            g.insert(pool.to_string(), svc);
        }
    }

    fn remove(&self, pool: &str) -> Option<Arc<Svc>> {
        self.map.lock().ok()?.remove(pool)
    }
}

fn rdb_dir(e: &Engine, pool: &str) -> std::path::PathBuf {
    pool_dir(&e.scm_mount(), pool).join("rdb")
}

/// Starts this engine's replica of `rec`'s pool service, if it is one, and
/// proposes the pool's initial state until the group has it.
pub async fn start(e: &Arc<Engine>, rec: &ShardRec) -> Result<()> {
    let Some(svc) = rec.svc.clone() else {
        return Ok(());
    };
    let _starting = e.svcs.starting.lock().await;
    if !svc.svc_ranks.contains(&svc.rank) || e.svcs.get(&rec.pool_uuid).is_some() {
        return Ok(());
    }
    let map = proto::pool::PoolMap::decode(svc.map.as_slice()).map_err(|err| {
        DaosError::new(
            Der::IO,
            format!("pool {}: stored map: {err}", rec.pool_uuid),
        )
    })?;
    let replicas: BTreeMap<u64, String> = svc
        .svc_ranks
        .iter()
        .filter_map(|r| {
            map.ranks
                .iter()
                .find(|m| m.rank == *r)
                .map(|m| (u64::from(*r), m.uri.clone()))
        })
        .collect();
    let dir = rdb_dir(e, &rec.pool_uuid);
    let mut opts = RdbOpts::new("pool service");
    opts.replica_noun = format!("rank {} is not the pool service leader", svc.rank);
    opts.cluster = format!("pool-{}", rec.pool_uuid);
    let transport = CartTransport {
        clients: e.clients().clone(),
        pool: rec.pool_uuid.clone(),
    };
    let r = Rdb::start(&dir, u64::from(svc.rank), replicas, transport, opts).await?;
    e.svcs.insert(&rec.pool_uuid, r.clone());
    tracing::info!(pool = %rec.pool_uuid, rank = svc.rank, "pool service replica started");
    let init = PoolCmd::Init {
        uuid: rec.pool_uuid.clone(),
        label: svc.label.clone(),
        map: svc.map.clone(),
        map_version: map.version,
        svc_ranks: svc.svc_ranks.clone(),
        owner: svc.owner.clone(),
        group: svc.group.clone(),
        acl: svc.acl.clone(),
        props: svc.props.clone(),
    };
    let e2 = e.clone();
    let pool = rec.pool_uuid.clone();
    tokio::spawn(async move {
        // Whichever replica leads first writes the initial state; the others'
        // proposals are refused (not leader) or applied as no-ops.
        loop {
            let Some(s) = e2.svcs.get(&pool) else { return };
            if s.read_local(|d| d.init) {
                return;
            }
            if s.status().is_leader {
                match s.write(init.clone()).await {
                    Ok(_) => {
                        tracing::info!(pool = %pool, "pool service initialised");
                        return;
                    }
                    Err(err) => tracing::debug!(pool = %pool, "pool service init: {err}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(())
}

/// Starts the replicas of every pool this engine serves.
pub async fn start_all(e: &Arc<Engine>) {
    for rec in e.shards() {
        if let Err(err) = start(e, &rec).await {
            tracing::error!(pool = %rec.pool_uuid, "starting pool service replica: {err}");
        }
    }
}

/// Stops this engine's replica of `pool`'s service (before its files go).
pub async fn stop(e: &Engine, pool: &str) {
    if let Some(s) = e.svcs.remove(pool) {
        s.shutdown().await;
        tracing::info!(pool, "pool service replica stopped");
    }
}

/// Stops every replica.
pub async fn stop_all(e: &Engine) {
    for rec in e.shards() {
        stop(e, &rec.pool_uuid).await;
    }
}

/// The service replica of `pool` on this engine, once its state is
/// initialised (`DER_AGAIN` before: the client retries).
fn svc_of(e: &Engine, pool: &str) -> Result<Arc<Svc>> {
    let svc = e.svcs.get(pool).ok_or_else(|| {
        Error::from(DaosError::new(
            Der::NOTREPLICA,
            format!("this engine runs no replica of pool {pool}'s service"),
        ))
    })?;
    if !svc.read_local(|d| d.init) {
        return Err(DaosError::new(
            Der::AGAIN,
            format!("pool {pool}: the pool service is starting"),
        )
        .into());
    }
    Ok(svc)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Handles a pool or container service request (and raft traffic).
pub async fn handle(e: &Arc<Engine>, op: u32, header: Bytes) -> Result<Bytes> {
    match op {
        opcode::pool::RDB => {
            let m: RdbMsg = decode(header, "rdb message")?;
            let kind = match m.kind {
                0 => RpcKind::AppendEntries,
                1 => RpcKind::Vote,
                2 => RpcKind::InstallSnapshot,
                k => return Err(DaosError::new(Der::PROTO, format!("rdb message kind {k}")).into()),
            };
            let svc = e.svcs.get(&m.pool_uuid).ok_or_else(|| {
                DaosError::new(
                    Der::NOTREPLICA,
                    format!(
                        "this engine runs no replica of pool {}'s service",
                        m.pool_uuid
                    ),
                )
            })?;
            let payload = svc.handle(kind, &m.payload).await?;
            Ok(enc(&RdbReply { payload }))
        }
        opcode::pool::CONNECT => Ok(enc(&connect(e, decode(header, "pool connect")?).await?)),
        opcode::pool::DISCONNECT => {
            let r: PoolHdlReq = decode(header, "pool disconnect")?;
            svc_of(e, &r.pool_uuid)?
                .write(PoolCmd::Disconnect { hdl: r.hdl })
                .await?;
            Ok(enc(&proto::obj::Empty {}))
        }
        opcode::pool::QUERY => Ok(enc(&query(e, decode(header, "pool query")?).await?)),
        opcode::pool::TGT_SPACE => {
            let r: TgtSpaceReq = decode(header, "target space")?;
            let s = e.pool_query(r.pool_uuid).await?;
            Ok(enc(&TgtSpaceResp {
                targets: s
                    .targets
                    .into_iter()
                    .map(|t| TgtSpace {
                        tgt: t.tgt,
                        scm_total: t.scm_total,
                        scm_free: t.scm_free,
                        nvme_total: t.nvme_total,
                        nvme_free: t.nvme_free,
                    })
                    .collect(),
            }))
        }
        opcode::cont::TGT_UPDATE => {
            cont_tgt_update(e, decode(header, "container target update")?).await?;
            Ok(enc(&proto::obj::Empty {}))
        }
        _ => cont_op(e, op, header).await,
    }
}

async fn connect(e: &Arc<Engine>, r: PoolConnectReq) -> Result<PoolConnectResp> {
    let svc = svc_of(e, &r.pool)?;
    let cred = proto::auth_pb::Credential::decode(r.cred.as_slice()).map_err(|err| {
        DaosError::new(Der::NO_PERM, format!("credential does not decode: {err}"))
    })?;
    let who = e.verifier().identify(&cred)?;
    let rw = r.flags & 2 != 0;
    let (acl, owner, group) = svc
        .read(|d| (d.acl.clone(), d.owner.clone(), d.group.clone()))
        .await?;
    let mut groups = who.groups.clone();
    groups.push(who.group.clone());
    let perms = acl_perms(&acl, &owner, &group, &who.user, &groups);
    if !perms.read || (rw && !perms.write) {
        return Err(DaosError::new(
            Der::NO_PERM,
            format!(
                "user {} may not connect to pool {} {}",
                who.user,
                r.pool,
                if rw { "read-write" } else { "read-only" }
            ),
        )
        .into());
    }
    svc.write(PoolCmd::Connect {
        hdl: r.hdl,
        user: who.user.clone(),
        rw,
    })
    .await?;
    let (uuid, label, map, props) = svc
        .read(|d| {
            (
                d.uuid.clone(),
                d.label.clone(),
                d.map.clone(),
                d.props.clone(),
            )
        })
        .await?;
    let map = proto::pool::PoolMap::decode(map.as_slice())
        .map_err(|err| DaosError::new(Der::IO, format!("pool map does not decode: {err}")))?;
    Ok(PoolConnectResp {
        pool_uuid: uuid,
        label,
        map: Some(map),
        props: props
            .into_iter()
            .map(|(name, value)| Prop { name, value })
            .collect(),
    })
}

fn check_hdl(d: &PoolDb, hdl: &str) -> std::result::Result<bool, DaosError> {
    d.handles
        .get(hdl)
        .map(|(_, rw)| *rw)
        .ok_or_else(|| DaosError::new(Der::NO_HDL, format!("pool handle {hdl} is not connected")))
}

/// Space of every target of the pool, from every rank of the map.
async fn query(e: &Arc<Engine>, r: PoolHdlReq) -> Result<PoolQueryResp> {
    let svc = svc_of(e, &r.pool_uuid)?;
    let (checked, uuid, label, map, svc_ranks, nconts) = svc
        .read(|d| {
            (
                check_hdl(d, &r.hdl),
                d.uuid.clone(),
                d.label.clone(),
                d.map.clone(),
                d.svc_ranks.clone(),
                d.conts.len() as u32,
            )
        })
        .await?;
    checked?;
    let map = proto::pool::PoolMap::decode(map.as_slice())
        .map_err(|err| DaosError::new(Der::IO, format!("pool map does not decode: {err}")))?;
    let asks = map.ranks.iter().map(|rk| {
        let e = e.clone();
        let uuid = uuid.clone();
        let rank = rk.rank;
        async move {
            let req = TgtSpaceReq {
                pool_uuid: uuid.clone(),
            };
            let r: Result<TgtSpaceResp> =
                crate::peer::call(&e, &uuid, rank, opcode::pool::TGT_SPACE, &req).await;
            r
        }
    });
    let mut scm = Vec::new();
    let mut nvme = Vec::new();
    let mut disabled = 0u32;
    for (rk, r) in map.ranks.iter().zip(futures::future::join_all(asks).await) {
        match r {
            Ok(s) => {
                for t in s.targets {
                    scm.push((t.scm_total, t.scm_free));
                    nvme.push((t.nvme_total, t.nvme_free));
                }
            }
            Err(err) => {
                tracing::warn!(pool = %uuid, rank = rk.rank, "pool query: {err}");
                disabled += rk.targets.len() as u32;
            }
        }
    }
    let tier = |v: &[(u64, u64)]| {
        let frees: Vec<u64> = v.iter().map(|x| x.1).collect();
        TierSpace {
            total: v.iter().map(|x| x.0).sum(),
            free: frees.iter().sum(),
            min: frees.iter().copied().min().unwrap_or(0),
            max: frees.iter().copied().max().unwrap_or(0),
            mean: if frees.is_empty() {
                0
            } else {
                frees.iter().sum::<u64>() / frees.len() as u64
            },
        }
    };
    let total: u32 = map.ranks.iter().map(|r| r.targets.len() as u32).sum();
    Ok(PoolQueryResp {
        pool_uuid: uuid,
        label,
        total_targets: total,
        active_targets: total - disabled,
        disabled_targets: disabled,
        scm: Some(tier(&scm)),
        nvme: Some(tier(&nvme)),
        leader: svc.leader().map(|l| l.0 as u32).unwrap_or(0),
        svc_ranks,
        num_conts: nconts,
        map: Some(map),
    })
}

fn cont_info(c: &db::ContRec) -> ContInfo {
    let mut props: Vec<Prop> = db::CONT_PROPS
        .iter()
        .map(|(n, d)| Prop {
            name: n.to_string(),
            value: c.props.get(*n).cloned().unwrap_or_else(|| d.to_string()),
        })
        .collect();
    props.extend(
        c.props
            .iter()
            .filter(|(n, _)| !db::CONT_PROPS.iter().any(|(k, _)| k == n))
            .map(|(n, v)| Prop {
                name: n.clone(),
                value: v.clone(),
            }),
    );
    ContInfo {
        uuid: c.uuid.clone(),
        label: c.label.clone(),
        props,
        create_time: c.create_time,
        open_handles: c.handles.len() as u64,
        num_snapshots: c.snaps.len() as u64,
        latest_snapshot: c.snaps.keys().next_back().copied().unwrap_or(0),
    }
}

/// The container named by `c`, after checking the pool handle: (uuid, rw handle).
async fn find_cont(svc: &Svc, c: &ContReq) -> Result<(db::ContRec, bool)> {
    let (hdl, cont) = svc
        .read(|d| (check_hdl(d, &c.pool_hdl), d.cont(&c.cont).cloned()))
        .await?;
    let rw = hdl?;
    let cont = cont.ok_or_else(|| {
        DaosError::new(
            Der::NONEXIST,
            format!("container {:?} does not exist", c.cont),
        )
    })?;
    Ok((cont, rw))
}

fn need_rw(rw: bool, what: &str) -> Result<()> {
    if rw {
        return Ok(());
    }
    Err(DaosError::new(
        Der::NO_PERM,
        format!("{what} needs a read-write pool connection"),
    )
    .into())
}

async fn cont_op(e: &Arc<Engine>, op: u32, header: Bytes) -> Result<Bytes> {
    let empty = || enc(&proto::obj::Empty {});
    match op {
        opcode::cont::CREATE => {
            let r: ContCreateReq = decode(header, "container create")?;
            let svc = svc_of(e, &r.pool_uuid)?;
            let rw = svc.read(|d| check_hdl(d, &r.pool_hdl)).await??;
            need_rw(rw, "creating a container")?;
            if uuid::Uuid::parse_str(&r.cont_uuid).is_err() {
                return Err(DaosError::new(
                    Der::INVAL,
                    format!("container uuid {:?}", r.cont_uuid),
                )
                .into());
            }
            let mut props: BTreeMap<String, String> =
                r.props.into_iter().map(|p| (p.name, p.value)).collect();
            let label = props.remove("label").unwrap_or_default();
            if !label.is_empty() {
                proto::names::check_label(&label)
                    .map_err(|m| DaosError::new(Der::INVAL, format!("container label: {m}")))?;
            }
            svc.write(PoolCmd::ContCreate {
                uuid: r.cont_uuid.clone(),
                label,
                props,
                time: now_ns(),
            })
            .await?;
            let c = svc
                .read(|d| d.conts.get(&r.cont_uuid).map(cont_info))
                .await?;
            Ok(enc(&ContResp { info: c }))
        }
        opcode::cont::LIST => {
            let r: ContReq = decode(header, "container list")?;
            let svc = svc_of(e, &r.pool_uuid)?;
            let (hdl, conts) = svc
                .read(|d| {
                    (
                        check_hdl(d, &r.pool_hdl),
                        d.conts.values().map(cont_info).collect(),
                    )
                })
                .await?;
            hdl?;
            Ok(enc(&ContListResp { conts }))
        }
        opcode::cont::ALLOC_OIDS => {
            let r: OidAllocReq = decode(header, "oid alloc")?;
            let c =
                r.c.ok_or_else(|| DaosError::new(Der::PROTO, "oid alloc names no container"))?;
            let svc = svc_of(e, &c.pool_uuid)?;
            let (cont, _) = find_cont(&svc, &c).await?;
            match svc
                .write(PoolCmd::AllocOids {
                    uuid: cont.uuid,
                    count: r.count.clamp(1, 1 << 20),
                })
                .await?
            {
                PoolResp::Oids(start) => Ok(enc(&OidAllocResp { start })),
                other => {
                    Err(DaosError::new(Der::PROTO, format!("oid alloc answered {other:?}")).into())
                }
            }
        }
        opcode::cont::SET_PROP => {
            let r: ContPropSetReq = decode(header, "container set-prop")?;
            let c =
                r.c.ok_or_else(|| DaosError::new(Der::PROTO, "set-prop names no container"))?;
            let svc = svc_of(e, &c.pool_uuid)?;
            let (cont, rw) = find_cont(&svc, &c).await?;
            need_rw(rw, "setting container properties")?;
            let props = r.props.into_iter().map(|p| (p.name, p.value)).collect();
            svc.write(PoolCmd::ContSetProps {
                uuid: cont.uuid,
                props,
            })
            .await?;
            Ok(empty())
        }
        opcode::cont::SET_ATTR | opcode::cont::GET_ATTR | opcode::cont::DEL_ATTR => {
            let r: ContAttrReq = decode(header, "container attributes")?;
            let c =
                r.c.ok_or_else(|| DaosError::new(Der::PROTO, "attribute call names no container"))?;
            let svc = svc_of(e, &c.pool_uuid)?;
            let (cont, rw) = find_cont(&svc, &c).await?;
            match op {
                opcode::cont::SET_ATTR => {
                    need_rw(rw, "setting attributes")?;
                    let attrs = r.attrs.into_iter().map(|a| (a.name, a.value)).collect();
                    svc.write(PoolCmd::ContSetAttrs {
                        uuid: cont.uuid,
                        attrs,
                    })
                    .await?;
                    Ok(empty())
                }
                opcode::cont::DEL_ATTR => {
                    need_rw(rw, "deleting attributes")?;
                    svc.write(PoolCmd::ContDelAttrs {
                        uuid: cont.uuid,
                        names: r.names,
                    })
                    .await?;
                    Ok(empty())
                }
                _ => {
                    let attrs = if r.names.is_empty() {
                        cont.attrs
                            .iter()
                            .map(|(n, v)| Attr {
                                name: n.clone(),
                                value: v.clone(),
                            })
                            .collect()
                    } else {
                        r.names
                            .iter()
                            .map(|n| {
                                cont.attrs
                                    .get(n)
                                    .map(|v| Attr {
                                        name: n.clone(),
                                        value: v.clone(),
                                    })
                                    .ok_or_else(|| {
                                        Error::from(DaosError::new(
                                            Der::NONEXIST,
                                            format!(
                                                "container {} has no attribute {n:?}",
                                                cont.uuid
                                            ),
                                        ))
                                    })
                            })
                            .collect::<Result<_>>()?
                    };
                    Ok(enc(&ContAttrResp { attrs }))
                }
            }
        }
        opcode::cont::SNAP_CREATE | opcode::cont::SNAP_LIST | opcode::cont::SNAP_DESTROY => {
            let r: ContSnapReq = decode(header, "container snapshot")?;
            let c =
                r.c.ok_or_else(|| DaosError::new(Der::PROTO, "snapshot call names no container"))?;
            let svc = svc_of(e, &c.pool_uuid)?;
            let (cont, rw) = find_cont(&svc, &c).await?;
            let snap = |(epoch, (name, time)): (&u64, &(String, u64))| Snapshot {
                epoch: *epoch,
                name: name.clone(),
                create_time: *time,
            };
            match op {
                opcode::cont::SNAP_LIST => Ok(enc(&ContSnapResp {
                    snaps: cont.snaps.iter().map(snap).collect(),
                })),
                opcode::cont::SNAP_CREATE => {
                    need_rw(rw, "creating a snapshot")?;
                    let epoch = e.hlc().now();
                    svc.write(PoolCmd::SnapCreate {
                        uuid: cont.uuid.clone(),
                        epoch,
                        name: r.name.clone(),
                        time: now_ns(),
                    })
                    .await?;
                    push_snapshots(e, &svc, &c.pool_uuid, &cont.uuid).await;
                    Ok(enc(&ContSnapResp {
                        snaps: vec![Snapshot {
                            epoch,
                            name: r.name,
                            create_time: now_ns(),
                        }],
                    }))
                }
                _ => {
                    need_rw(rw, "destroying a snapshot")?;
                    let epoch = if r.epoch != 0 {
                        r.epoch
                    } else {
                        cont.snaps
                            .iter()
                            .find(|(_, (n, _))| *n == r.name)
                            .map(|(e, _)| *e)
                            .ok_or_else(|| {
                                DaosError::new(
                                    Der::NONEXIST,
                                    format!(
                                        "container {} has no snapshot named {:?}",
                                        cont.uuid, r.name
                                    ),
                                )
                            })?
                    };
                    svc.write(PoolCmd::SnapDestroy {
                        uuid: cont.uuid.clone(),
                        epoch,
                    })
                    .await?;
                    push_snapshots(e, &svc, &c.pool_uuid, &cont.uuid).await;
                    Ok(empty())
                }
            }
        }
        _ => {
            let r: ContReq = decode(header, "container request")?;
            let svc = svc_of(e, &r.pool_uuid)?;
            let (cont, rw) = find_cont(&svc, &r).await?;
            match op {
                opcode::cont::OPEN => {
                    let want_rw = r.flags & 2 != 0;
                    if want_rw {
                        need_rw(rw, "opening a container read-write")?;
                    }
                    svc.write(PoolCmd::ContOpen {
                        uuid: cont.uuid.clone(),
                        coh: format!("{}/{}", r.pool_hdl, r.coh),
                        rw: want_rw,
                    })
                    .await?;
                    Ok(enc(&ContResp {
                        info: Some(cont_info(&cont)),
                    }))
                }
                opcode::cont::CLOSE => {
                    svc.write(PoolCmd::ContClose {
                        uuid: cont.uuid,
                        coh: format!("{}/{}", r.pool_hdl, r.coh),
                    })
                    .await?;
                    Ok(empty())
                }
                opcode::cont::QUERY => Ok(enc(&ContResp {
                    info: Some(cont_info(&cont)),
                })),
                opcode::cont::DESTROY => {
                    need_rw(rw, "destroying a container")?;
                    svc.write(PoolCmd::ContDestroy {
                        uuid: cont.uuid.clone(),
                        force: r.flags & 1 != 0,
                    })
                    .await?;
                    let req = ContTgtReq {
                        pool_uuid: r.pool_uuid.clone(),
                        cont_uuid: cont.uuid.clone(),
                        destroy: true,
                        snapshots: vec![],
                    };
                    broadcast(e, &svc, &r.pool_uuid, &req).await;
                    Ok(empty())
                }
                other => Err(DaosError::new(
                    Der::NOSYS,
                    format!("unknown container opcode {other:#x}"),
                )
                .into()),
            }
        }
    }
}

/// Tells every rank a container's snapshot epochs.
async fn push_snapshots(e: &Arc<Engine>, svc: &Svc, pool: &str, cont: &str) {
    let snaps = match svc
        .read(|d| {
            d.conts
                .get(cont)
                .map(|c| c.snaps.keys().copied().collect::<Vec<u64>>())
        })
        .await
    {
        Ok(Some(s)) => s,
        _ => return,
    };
    let req = ContTgtReq {
        pool_uuid: pool.to_string(),
        cont_uuid: cont.to_string(),
        destroy: false,
        snapshots: snaps,
    };
    broadcast(e, svc, pool, &req).await;
}

/// Sends a container update to every rank of the pool map.
async fn broadcast(e: &Arc<Engine>, svc: &Svc, pool: &str, req: &ContTgtReq) {
    let map = match svc.read(|d| d.map.clone()).await {
        Ok(m) => m,
        Err(_) => return,
    };
    let Ok(map) = proto::pool::PoolMap::decode(map.as_slice()) else {
        return;
    };
    let calls = map.ranks.iter().map(|r| {
        let rank = r.rank;
        async move {
            let res: Result<proto::obj::Empty> =
                crate::peer::call(e, pool, rank, opcode::cont::TGT_UPDATE, req).await;
            if let Err(err) = res {
                tracing::warn!(pool, rank, "container update not delivered: {err}");
            }
        }
    });
    futures::future::join_all(calls).await;
}

/// A container's state reaches this engine's targets.
async fn cont_tgt_update(e: &Arc<Engine>, r: ContTgtReq) -> Result<()> {
    let cont = uuid::Uuid::parse_str(&r.cont_uuid)
        .map_err(|_| DaosError::new(Der::INVAL, format!("container {:?}", r.cont_uuid)))?
        .as_u128();
    for tgt in 0..e.targets().len() {
        let (pool, snaps, destroy) = (r.pool_uuid.clone(), r.snapshots.clone(), r.destroy);
        e.targets()
            .run(tgt, move |ts| {
                let v = ts.vos_mut(&pool)?;
                if destroy {
                    v.destroy_cont(cont)
                } else {
                    v.set_snapshots(cont, snaps)
                }
            })
            .await?;
    }
    Ok(())
}
