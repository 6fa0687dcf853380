//! The engine's data-plane RPC handlers: object I/O from clients, DTX calls
//! between engines, and the pool and container services.
//!
//! Invariants: every request is decoded and checked here, on the tokio
//! runtime, and only then handed to the owning target's thread; storage work
//! never runs on the runtime. Values are sliced out of the request's bulk
//! payload without copying. A request that does not decode is answered with
//! `DER_PROTO` and logged; it never takes the engine down.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::obj as pb;
use proto::opcode;
use proto::{DaosError, Der};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::vos::{self, Anchor, Cond, DtxOp, Expect, FetchOut, FetchReq, Iod, Punch, Recx};

/// Serves the data plane over cart.
pub struct DataPlane {
    pub engine: Arc<Engine>,
}

impl cart::Handler for DataPlane {
    fn handle(&self, req: cart::Incoming) -> impl std::future::Future<Output = cart::Reply> + Send {
        let e = self.engine.clone();
        async move {
            let opcode = req.opcode;
            let peer = req.peer.clone();
            match dispatch(&e, req).await {
                Ok((h, b)) => cart::Reply::ok(h, b),
                Err(err) => {
                    let d = err.to_daos();
                    match d.der {
                        Der::PROTO | Der::NOSYS => {
                            tracing::warn!(%peer, "opcode {opcode:#x}: {d}")
                        }
                        _ => tracing::debug!(%peer, "opcode {opcode:#x}: {d}"),
                    }
                    cart::Reply::err(&d)
                }
            }
        }
    }
}

pub(crate) fn decode<M: Message + Default>(b: Bytes, what: &str) -> Result<M> {
    M::decode(b).map_err(|e| DaosError::new(Der::PROTO, format!("{what}: {e}")).into())
}

pub(crate) fn enc<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

fn proto_err(msg: impl Into<String>) -> Error {
    DaosError::new(Der::PROTO, msg).into()
}

async fn dispatch(e: &Arc<Engine>, req: cart::Incoming) -> Result<(Bytes, Bytes)> {
    let none = Bytes::new();
    match req.opcode {
        opcode::obj::UPDATE => {
            let r = obj_update(e, decode(req.header, "update")?, req.bulk).await?;
            Ok((enc(&r), none))
        }
        opcode::obj::FETCH => obj_fetch(e, decode(req.header, "fetch")?).await,
        opcode::obj::PUNCH => Ok((
            enc(&obj_punch(e, decode(req.header, "punch")?).await?),
            none,
        )),
        opcode::obj::ENUMERATE => Ok((
            enc(&obj_enum(e, decode(req.header, "enumerate")?).await?),
            none,
        )),
        opcode::obj::QUERY_KEY => Ok((
            enc(&obj_query(e, decode(req.header, "query key")?).await?),
            none,
        )),
        opcode::obj::QUERY_KEYS => Ok((
            enc(&obj_query_many(e, decode(req.header, "query keys")?).await?),
            none,
        )),
        opcode::obj::TX_COMMIT => {
            let r = crate::dtx::tx_commit(e, decode(req.header, "tx commit")?, req.bulk).await?;
            Ok((enc(&r), none))
        }
        opcode::dtx::PREPARE => {
            crate::dtx::prepare(e, decode(req.header, "dtx prepare")?, req.bulk).await?;
            Ok((enc(&pb::Empty {}), none))
        }
        opcode::dtx::RESOLVE => {
            crate::dtx::resolve(e, decode(req.header, "dtx resolve")?).await?;
            Ok((enc(&pb::Empty {}), none))
        }
        opcode::dtx::STATE => {
            let r = crate::dtx::state(e, decode(req.header, "dtx state")?).await?;
            Ok((enc(&r), none))
        }
        op if op >> 16 == opcode::pool::CONNECT >> 16 || op >> 16 == opcode::cont::CREATE >> 16 => {
            let h = crate::pool_svc::handle(e, op, req.header).await?;
            Ok((h, none))
        }
        other => Err(DaosError::new(Der::NOSYS, format!("unknown opcode {other:#x}")).into()),
    }
}

/// The VOS object id of a request. Objects of different containers are kept
/// apart by the container's part of the id.
pub(crate) fn vos_oid(t: &pb::ObjTarget) -> Result<vos::Oid> {
    let cont = uuid::Uuid::parse_str(&t.cont_uuid).map_err(|_| {
        DaosError::new(
            Der::INVAL,
            format!("container {:?} is not a UUID", t.cont_uuid),
        )
    })?;
    Ok(vos::Oid {
        cont: cont.as_u128(),
        hi: t.oid_hi,
        lo: t.oid_lo,
    })
}

fn recx(r: &pb::Recx) -> Recx {
    Recx::new(r.idx, r.nr)
}

/// Turns wire iods into VOS iods, slicing their data out of `bulk` in order.
pub(crate) fn vos_iods(iods: &[pb::Iod], bulk: &mut Bytes) -> Result<Vec<Iod>> {
    iods.iter()
        .map(|i| {
            let n = usize::try_from(i.data_len).unwrap_or(usize::MAX);
            if n > bulk.len() {
                return Err(proto_err(format!(
                    "iod {:?}: {} bytes described, {} left in the bulk payload",
                    String::from_utf8_lossy(&i.akey),
                    i.data_len,
                    bulk.len()
                )));
            }
            let data = bulk.split_to(n);
            let recxs: Vec<Recx> = i.recxs.iter().map(recx).collect();
            Ok(match pb::IodKind::try_from(i.kind) {
                Ok(pb::IodKind::IodSingle) => Iod::single(i.akey.clone(), data),
                Ok(pb::IodKind::IodArray) => {
                    let want = recxs
                        .iter()
                        .try_fold(0u64, |a, r| a.checked_add(r.nr))
                        .and_then(|n| n.checked_mul(u64::from(i.rec_size)));
                    if want != Some(data.len() as u64) {
                        return Err(DaosError::new(
                            Der::INVAL,
                            format!(
                                "iod {:?}: extents need {want:?} bytes, {} given",
                                String::from_utf8_lossy(&i.akey),
                                data.len()
                            ),
                        )
                        .into());
                    }
                    Iod::array(i.akey.clone(), i.rec_size, recxs, data)
                }
                Ok(pb::IodKind::IodArrayPunch) => Iod::array_punch(i.akey.clone(), recxs),
                Err(_) => return Err(proto_err(format!("iod kind {}", i.kind))),
            })
        })
        .collect()
}

fn target(t: Option<pb::ObjTarget>) -> Result<pb::ObjTarget> {
    t.ok_or_else(|| proto_err("request names no object target"))
}

pub(crate) fn vos_punch(kind: i32, dkeys: &[Vec<u8>], akeys: &[Vec<u8>]) -> Result<Punch> {
    Ok(match pb::PunchKind::try_from(kind) {
        Ok(pb::PunchKind::PunchObj) => Punch::Object,
        Ok(pb::PunchKind::PunchDkeys) => Punch::Dkeys(dkeys.to_vec()),
        Ok(pb::PunchKind::PunchAkeys) => Punch::Akeys {
            dkey: dkeys
                .first()
                .cloned()
                .ok_or_else(|| proto_err("akey punch names no dkey"))?,
            akeys: akeys.to_vec(),
        },
        Err(_) => return Err(proto_err(format!("punch kind {kind}"))),
    })
}

async fn obj_update(e: &Arc<Engine>, r: pb::UpdateReq, bulk: Bytes) -> Result<pb::UpdateResp> {
    let t = target(r.t)?;
    let oid = vos_oid(&t)?;
    let epoch = e.epoch(r.epoch);
    if r.replicas.is_empty() {
        let bytes = bulk.len() as u64;
        let mut b = bulk;
        let iods = vos_iods(&r.iods, &mut b)?;
        let (pool, dkey, cond) = (t.pool_uuid.clone(), r.dkey, Cond(r.cond));
        e.targets()
            .write(t.tgt, &t.pool_uuid, bytes, move |ts| {
                ts.change(&pool, epoch, |v| v.update(oid, epoch, &dkey, &iods, cond))
            })
            .await?;
        return Ok(pb::UpdateResp { epoch });
    }
    // A replicated write: one transaction over every replica of the group.
    let op = pb::TxOp {
        dkey: r.dkey,
        iods: r.iods,
        cond: r.cond,
        ..Default::default()
    };
    replicate(e, &t, &r.replicas, op, bulk, epoch).await?;
    Ok(pb::UpdateResp { epoch })
}

/// Runs `op` on this engine's shard and on every replica of its group as
/// one transaction coordinated here.
async fn replicate(
    e: &Arc<Engine>,
    t: &pb::ObjTarget,
    replicas: &[pb::ShardLoc],
    op: pb::TxOp,
    bulk: Bytes,
    epoch: u64,
) -> Result<()> {
    let me = e.rank()?;
    let here = pb::ShardLoc {
        rank: me,
        tgt: t.tgt,
    };
    let parts = std::iter::once(&here)
        .chain(replicas)
        .map(|s| crate::dtx::Part {
            rank: s.rank,
            tgt: s.tgt,
            ops: vec![pb::TxOp {
                t: Some(pb::ObjTarget {
                    tgt: s.tgt,
                    ..t.clone()
                }),
                rank: s.rank,
                ..op.clone()
            }],
            bulk: bulk.clone(),
        })
        .collect();
    let id = crate::dtx::new_id(me, t.tgt, rand_u64());
    crate::dtx::coordinate(e, &t.pool_uuid, id, epoch, parts).await
}

fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

async fn obj_punch(e: &Arc<Engine>, r: pb::PunchReq) -> Result<pb::PunchResp> {
    let t = target(r.t)?;
    let oid = vos_oid(&t)?;
    let epoch = e.epoch(r.epoch);
    let what = vos_punch(r.kind, &r.dkeys, &r.akeys)?;
    if r.replicas.is_empty() {
        let punches = std::iter::once(t.tgt).chain(r.more_tgts).map(|tgt| {
            let (pool, what, cond) = (t.pool_uuid.clone(), what.clone(), Cond(r.cond));
            e.targets().write(tgt, &t.pool_uuid, 0, move |ts| {
                ts.change(&pool, epoch, |v| v.punch(oid, epoch, what.clone(), cond))
            })
        });
        futures::future::try_join_all(punches).await?;
        return Ok(pb::PunchResp { epoch });
    }
    if !r.more_tgts.is_empty() {
        return Err(proto_err("a replicated punch names more targets"));
    }
    let op = pb::TxOp {
        punch: true,
        punch_kind: r.kind,
        dkeys: r.dkeys,
        akeys: r.akeys,
        cond: r.cond,
        ..Default::default()
    };
    replicate(e, &t, &r.replicas, op, Bytes::new(), epoch).await?;
    Ok(pb::PunchResp { epoch })
}

async fn obj_fetch(e: &Arc<Engine>, r: pb::FetchReq) -> Result<(Bytes, Bytes)> {
    let t = target(r.t)?;
    let oid = vos_oid(&t)?;
    let epoch = if r.epoch == 0 { u64::MAX } else { r.epoch };
    let reqs: Vec<FetchReq> = r
        .iods
        .iter()
        .map(|f| match pb::IodKind::try_from(f.kind) {
            Ok(pb::IodKind::IodSingle) => Ok(FetchReq::Single {
                akey: f.akey.clone(),
            }),
            Ok(pb::IodKind::IodArray) => Ok(FetchReq::Array {
                akey: f.akey.clone(),
                recxs: f.recxs.iter().map(recx).collect(),
            }),
            _ => Err(proto_err(format!("fetch iod kind {}", f.kind))),
        })
        .collect::<Result<_>>()?;
    let (pool, dkey, cond) = (t.pool_uuid.clone(), r.dkey, Cond(r.cond));
    let outs = e
        .targets()
        .read(t.tgt, move |ts, reach| {
            ts.vos(&pool)?.fetch(oid, epoch, &dkey, &reqs, cond, reach)
        })
        .await?;
    // One value: its bytes go out as they are; several: concatenated once.
    let mut descs = Vec::with_capacity(outs.len());
    let mut datas = Vec::with_capacity(outs.len());
    for o in outs {
        let (found, rec_size, data, hi) = match o {
            FetchOut::Single(Some(d)) => (true, d.len() as u32, d, 0),
            FetchOut::Single(None) => (false, 0, Bytes::new(), 0),
            FetchOut::Array { rec_size, data, hi } => (rec_size != 0, rec_size, data, hi),
        };
        descs.push(pb::FetchOut {
            found,
            rec_size,
            data_len: data.len() as u64,
            hi,
        });
        datas.push(data);
    }
    let bulk = match datas.len() {
        0 => Bytes::new(),
        1 => datas.pop().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(datas.iter().map(Bytes::len).sum());
            for d in &datas {
                b.extend_from_slice(d);
            }
            b.freeze()
        }
    };
    Ok((enc(&pb::FetchResp { outs: descs, epoch }), bulk))
}

async fn obj_enum(e: &Arc<Engine>, r: pb::EnumReq) -> Result<pb::EnumResp> {
    let t = target(r.t)?;
    let oid = vos_oid(&t)?;
    let epoch = if r.epoch == 0 { u64::MAX } else { r.epoch };
    let anchor = if r.anchor.is_empty() {
        Anchor::start()
    } else {
        Anchor::from_bytes(&r.anchor)?
    };
    let max = (r.max as usize).clamp(1, 4096);
    let kind =
        pb::EnumKind::try_from(r.kind).map_err(|_| proto_err(format!("enum kind {}", r.kind)))?;
    let (pool, dkey, akey, with) = (t.pool_uuid.clone(), r.dkey, r.akey, r.value_akeys);
    e.targets()
        .read(t.tgt, move |ts, reach| {
            let v = ts.vos(&pool)?;
            let mut out = pb::EnumResp::default();
            let next = match kind {
                pb::EnumKind::EnumDkeys => {
                    let (keys, a) = v.list_dkeys(oid, epoch, &anchor, max)?;
                    if !with.is_empty() {
                        // One page of a directory with its entries' records:
                        // one round trip instead of one per entry.
                        let want: Vec<FetchReq> = with
                            .iter()
                            .map(|a| FetchReq::Single { akey: a.clone() })
                            .collect();
                        out.values.reserve(keys.len() * want.len());
                        for k in &keys {
                            let got = v.fetch(oid, epoch, k, &want, Cond::NONE, reach)?;
                            let mut got = got.into_iter();
                            for _ in &want {
                                out.values.push(match got.next() {
                                    Some(FetchOut::Single(Some(d))) => d.to_vec(),
                                    _ => Vec::new(),
                                });
                            }
                        }
                    }
                    out.keys = keys;
                    a
                }
                pb::EnumKind::EnumAkeys => {
                    let (keys, a) = v.list_akeys(oid, epoch, &dkey, &anchor, max)?;
                    out.keys = keys;
                    a
                }
                pb::EnumKind::EnumAkeyCount => {
                    let (n, a) = v.count_akeys(oid, epoch, &dkey, &anchor, max)?;
                    out.count = n;
                    a
                }
                pb::EnumKind::EnumRecxs => {
                    let (recxs, a) = v.list_recxs(oid, epoch, &dkey, &akey, &anchor, max)?;
                    out.recxs = recxs
                        .into_iter()
                        .map(|x| pb::Recx {
                            idx: x.recx.idx,
                            nr: x.recx.nr,
                        })
                        .collect();
                    a
                }
                pb::EnumKind::EnumObjects => {
                    let (oids, a) = v.list_objects(oid.cont, epoch, &anchor, max)?;
                    out.oids = oids
                        .into_iter()
                        .map(|o| pb::ObjId { hi: o.hi, lo: o.lo })
                        .collect();
                    a
                }
            };
            out.eof = next.is_eof();
            out.anchor = next.to_bytes();
            Ok(out)
        })
        .await
}

async fn obj_query(e: &Arc<Engine>, r: pb::QueryKeyReq) -> Result<pb::QueryKeyResp> {
    let t = target(r.t)?;
    let oid = vos_oid(&t)?;
    let epoch = if r.epoch == 0 { u64::MAX } else { r.epoch };
    let akey = Arc::new(r.akey);
    let want_epoch = r.want_epoch;
    let queries = std::iter::once(t.tgt).chain(r.more_tgts).map(|tgt| {
        let (pool, akey) = (t.pool_uuid.clone(), akey.clone());
        e.targets().read(tgt, move |ts, _| {
            let a = (!akey.is_empty()).then_some(akey.as_slice());
            let v = ts.vos(&pool)?;
            if want_epoch {
                v.query_max_and_epoch(oid, epoch, a)
            } else {
                Ok((v.query_max(oid, epoch, None, a)?, 0))
            }
        })
    });
    // As over shards on different ranks (libdaos): the highest dkey decides,
    // the newest change of any shard is the object's.
    let mut max_epoch = 0;
    let q = futures::future::try_join_all(queries)
        .await?
        .into_iter()
        .filter_map(|(q, m)| {
            max_epoch = max_epoch.max(m);
            q
        })
        .max_by(|a, b| a.dkey.cmp(&b.dkey));
    Ok(match q {
        None => pb::QueryKeyResp {
            max_epoch,
            ..Default::default()
        },
        Some(q) => pb::QueryKeyResp {
            found: true,
            max_dkey: q.dkey,
            has_recx: q.recx_end.is_some(),
            recx_end: q.recx_end.unwrap_or(0),
            max_epoch,
        },
    })
}

async fn obj_query_many(e: &Arc<Engine>, r: pb::QueryKeysReq) -> Result<pb::QueryKeysResp> {
    if r.queries.len() > opcode::obj::MAX_QUERY_KEYS {
        return Err(DaosError::new(
            Der::INVAL,
            format!(
                "{} queries in one message, at most {}",
                r.queries.len(),
                opcode::obj::MAX_QUERY_KEYS
            ),
        )
        .into());
    }
    let answers =
        futures::future::try_join_all(r.queries.into_iter().map(|q| obj_query(e, q))).await?;
    Ok(pb::QueryKeysResp { answers })
}

/// Turns a participant's wire ops into VOS DTX ops, slicing update data out
/// of `bulk` in op order.
pub(crate) fn vos_dtx_ops(ops: &[pb::TxOp], bulk: &mut Bytes) -> Result<Vec<DtxOp>> {
    ops.iter()
        .map(|op| {
            let t =
                op.t.as_ref()
                    .ok_or_else(|| proto_err("transaction op names no object"))?;
            let oid = vos_oid(t)?;
            let expect = op
                .expect
                .iter()
                .map(|x| Expect {
                    akey: x.akey.clone(),
                    offset: x.offset,
                    value: x.value.clone(),
                })
                .collect();
            if op.punch {
                Ok(DtxOp::Punch {
                    oid,
                    what: vos_punch(op.punch_kind, &op.dkeys, &op.akeys)?,
                    cond: Cond(op.cond),
                    expect,
                })
            } else {
                Ok(DtxOp::Update {
                    oid,
                    dkey: op.dkey.clone(),
                    iods: vos_iods(&op.iods, bulk)?,
                    cond: Cond(op.cond),
                    expect,
                })
            }
        })
        .collect()
}

/// Bytes of bulk data an op carries.
pub(crate) fn op_bulk_len(op: &pb::TxOp) -> u64 {
    if op.punch {
        return 0;
    }
    op.iods.iter().map(|i| i.data_len).sum()
}
