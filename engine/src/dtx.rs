//! Distributed transactions (DAOS's DTX): one update that touches several
//! shards, on this engine or others, becomes visible everywhere or nowhere.
//!
//! Protocol (two-phase commit, coordinator = the target the client sent the
//! transaction to):
//! 1. every participant target prepares its ops durably (`Vos::dtx_prepare`):
//!    conditions checked, space reserved, data written, invisible to readers,
//!    who get `DER_INPROGRESS` meanwhile;
//! 2. if all prepared, the coordinator commits its own part: **that durable
//!    commit is the decision**; then it tells the others to commit. If any
//!    failed, everyone that prepared aborts.
//!
//! A participant left with a prepared DTX (the coordinator died, or its
//! commit message was lost) asks the coordinator, named inside the DTX id,
//! what became of it. A coordinator asked about a DTX it has no record of
//! answers "aborted" and remembers never to commit it, so a late commit can
//! never contradict an answer already given. A coordinator that restarts
//! aborts the DTXs it had prepared but not decided: nobody was told they
//! committed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use proto::obj as pb;
use proto::opcode;
use proto::{DaosError, Der};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::peer::{call, call_bulk};
use crate::rpc::{op_bulk_len, vos_dtx_ops};
use crate::vos::{DtxId, DtxState};

/// One participant's share of a transaction.
pub struct Part {
    pub rank: u32,
    pub tgt: u32,
    pub ops: Vec<pb::TxOp>,
    /// The update data of `ops`, in op order.
    pub bulk: Bytes,
}

/// A DTX id naming its coordinator: rank, target, then 64 unique bits.
pub fn new_id(rank: u32, tgt: u32, unique: u64) -> DtxId {
    DtxId((u128::from(rank) << 96) | (u128::from(tgt) << 64) | u128::from(unique))
}

fn coordinator_of(id: DtxId) -> (u32, u32) {
    ((id.0 >> 96) as u32, (id.0 >> 64) as u32)
}

fn id_bytes(id: DtxId) -> Vec<u8> {
    id.0.to_le_bytes().to_vec()
}

fn id_from(b: &[u8]) -> Result<DtxId> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| DaosError::new(Der::PROTO, format!("dtx id of {} bytes", b.len())))?;
    Ok(DtxId(u128::from_le_bytes(a)))
}

async fn prepare_part(e: &Arc<Engine>, pool: &str, id: DtxId, epoch: u64, p: Part) -> Result<()> {
    if p.rank == e.rank()? {
        let bytes = p.bulk.len() as u64;
        let mut bulk = p.bulk;
        let ops = vos_dtx_ops(&p.ops, &mut bulk)?;
        let owned = pool.to_string();
        return e
            .targets()
            .write(p.tgt, pool, bytes, move |ts| {
                ts.change(&owned, epoch, |v| v.dtx_prepare(id, epoch, ops.clone()))
            })
            .await;
    }
    let req = pb::DtxPrepareReq {
        dtx_id: id_bytes(id),
        epoch,
        pool_uuid: pool.to_string(),
        tgt: p.tgt,
        ops: p.ops,
    };
    let _: pb::Empty = call_bulk(e, pool, p.rank, opcode::dtx::PREPARE, &req, p.bulk).await?;
    Ok(())
}

async fn resolve_part(
    e: &Arc<Engine>,
    pool: &str,
    id: DtxId,
    rank: u32,
    tgt: u32,
    commit: bool,
) -> Result<()> {
    if rank == e.rank()? {
        return resolve_local(e, pool, id, tgt, commit).await;
    }
    let req = pb::DtxResolveReq {
        dtx_id: id_bytes(id),
        pool_uuid: pool.to_string(),
        tgt,
        commit,
    };
    let _: pb::Empty = call(e, pool, rank, opcode::dtx::RESOLVE, &req).await?;
    Ok(())
}

async fn resolve_local(
    e: &Arc<Engine>,
    pool: &str,
    id: DtxId,
    tgt: u32,
    commit: bool,
) -> Result<()> {
    let owned = pool.to_string();
    e.targets()
        .write(tgt, pool, 0, move |ts| {
            let v = ts.vos_mut(&owned)?;
            match (v.dtx_state(id), commit) {
                (DtxState::Committed, true) | (DtxState::Aborted, false) => Ok(()),
                (DtxState::Unknown, false) => Ok(()),
                (_, true) => v.dtx_commit(id),
                (_, false) => v.dtx_abort(id),
            }
        })
        .await
}

/// Runs a transaction over `parts` as its coordinator. The first part must be
/// this engine's (its target decides).
pub async fn coordinate(
    e: &Arc<Engine>,
    pool: &str,
    id: DtxId,
    epoch: u64,
    parts: Vec<Part>,
) -> Result<()> {
    let me = e.rank()?;
    let (crank, ctgt) = coordinator_of(id);
    if crank != me || !parts.iter().any(|p| p.rank == me && p.tgt == ctgt) {
        return Err(DaosError::new(
            Der::INVAL,
            format!("dtx {id}: the coordinator (rank {crank} target {ctgt}) takes no part"),
        )
        .into());
    }
    if parts.len() == 1 {
        // The coordinator is the only participant: prepare and commit in one
        // visit of its target, so the log takes both records in one write.
        let bytes = parts[0].bulk.len() as u64;
        let mut bulk = parts[0].bulk.clone();
        let ops = vos_dtx_ops(&parts[0].ops, &mut bulk)?;
        let p = pool.to_string();
        return e
            .targets()
            .write(ctgt, pool, bytes, move |ts| {
                ts.change(&p, epoch, |v| {
                    if v.dtx_state(id) == DtxState::Unknown {
                        v.dtx_prepare(id, epoch, ops.clone())?;
                    }
                    v.dtx_commit(id)
                })
            })
            .await;
    }
    let who: Vec<(u32, u32)> = parts.iter().map(|p| (p.rank, p.tgt)).collect();
    let results = join_all(
        parts
            .into_iter()
            .map(|p| prepare_part(e, pool, id, epoch, p)),
    )
    .await;
    if let Some(first) = pick_error(&results) {
        tracing::debug!(%id, "dtx aborted: {first}");
        let aborts = who
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((rank, tgt), _)| resolve_part(e, pool, id, *rank, *tgt, false));
        for r in join_all(aborts).await {
            if let Err(err) = r {
                // The participant asks the coordinator later and aborts then.
                tracing::debug!(%id, "dtx abort message lost: {err}");
            }
        }
        return Err(first);
    }
    // The decision: the coordinator's own durable commit, unless it has
    // already told someone the transaction does not exist.
    let p = pool.to_string();
    e.targets()
        .write(ctgt, pool, 0, move |ts| {
            if ts.refused.remove(&id) {
                let v = ts.vos_mut(&p)?;
                v.dtx_abort(id)?;
                return Err(DaosError::new(
                    Der::AGAIN,
                    format!("dtx {id} was given up while it prepared; retry"),
                )
                .into());
            }
            ts.vos_mut(&p)?.dtx_commit(id)
        })
        .await?;
    let commits = who
        .iter()
        .filter(|w| **w != (me, ctgt))
        .map(|(rank, tgt)| resolve_part(e, pool, id, *rank, *tgt, true));
    for r in join_all(commits).await {
        if let Err(err) = r {
            tracing::debug!(%id, "dtx commit message lost (the participant will ask): {err}");
        }
    }
    Ok(())
}

/// The error to report for a failed prepare: a failed condition says more
/// than a participant that could not be reached.
fn pick_error(results: &[Result<()>]) -> Option<Error> {
    let errs: Vec<DaosError> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(Error::to_daos))
        .collect();
    errs.iter()
        .find(|d| {
            matches!(
                d.der,
                Der::EXIST | Der::NONEXIST | Der::NOSPACE | Der::INVAL | Der::MISMATCH
            )
        })
        .or(errs.first())
        .cloned()
        .map(Error::Daos)
}

/// A client's transaction: group its ops by participant target and run them.
pub async fn tx_commit(
    e: &Arc<Engine>,
    r: pb::TxCommitReq,
    mut bulk: Bytes,
) -> Result<pb::TxCommitResp> {
    let me = e.rank()?;
    let first = r
        .ops
        .first()
        .ok_or_else(|| DaosError::new(Der::INVAL, "transaction has no operations"))?;
    if first.rank != me {
        return Err(DaosError::new(
            Der::INVAL,
            format!(
                "transaction sent to rank {me}, its coordinator is rank {}",
                first.rank
            ),
        )
        .into());
    }
    let ctgt = first.t.as_ref().map(|t| t.tgt).unwrap_or(0);
    let unique = r
        .dtx_id
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| DaosError::new(Der::PROTO, "transaction id shorter than 8 bytes"))?;
    let id = new_id(me, ctgt, unique);
    // A re-sent commit whose first reply was lost. Asked in place while the
    // target is idle: its state then includes every flushed commit, and one
    // still being made holds the target, so the question waits for it.
    let pool = r.pool_uuid.clone();
    let seen = {
        let pool = pool.clone();
        e.targets()
            .read(ctgt, move |ts, _| Ok(ts.vos(&pool)?.dtx_state(id)))
            .await?
    };
    match seen {
        DtxState::Committed => return Ok(pb::TxCommitResp { epoch: 0 }),
        DtxState::Prepared => {
            return Err(
                DaosError::new(Der::INPROGRESS, format!("dtx {id} is being committed")).into(),
            )
        }
        DtxState::Aborted | DtxState::Unknown => {}
    }
    // Group the ops by participant, keeping each op's data slice; a part's
    // bulk is its slices joined once (one slice is passed on as is).
    let mut groups: Vec<(u32, u32, Vec<pb::TxOp>, Vec<Bytes>)> = Vec::new();
    for op in r.ops {
        let n = usize::try_from(op_bulk_len(&op)).unwrap_or(usize::MAX);
        if n > bulk.len() {
            return Err(DaosError::new(Der::PROTO, "transaction bulk shorter than its ops").into());
        }
        let data = bulk.split_to(n);
        let tgt = op.t.as_ref().map(|t| t.tgt).unwrap_or(0);
        match groups.iter_mut().find(|g| g.0 == op.rank && g.1 == tgt) {
            Some(g) => {
                g.2.push(op);
                g.3.push(data);
            }
            None => groups.push((op.rank, tgt, vec![op], vec![data])),
        }
    }
    let parts = groups
        .into_iter()
        .map(|(rank, tgt, ops, datas)| Part {
            rank,
            tgt,
            ops,
            bulk: match datas.as_slice() {
                [one] => one.clone(),
                many => Bytes::from(many.concat()),
            },
        })
        .collect();
    let epoch = e.epoch(r.epoch);
    coordinate(e, &pool, id, epoch, parts).await?;
    Ok(pb::TxCommitResp { epoch })
}

/// A coordinator asks this engine to prepare its part.
pub async fn prepare(e: &Arc<Engine>, r: pb::DtxPrepareReq, mut bulk: Bytes) -> Result<()> {
    let id = id_from(&r.dtx_id)?;
    e.hlc().observe(r.epoch);
    let bytes = bulk.len() as u64;
    let ops = vos_dtx_ops(&r.ops, &mut bulk)?;
    let (pool, epoch) = (r.pool_uuid, r.epoch);
    let p = pool.clone();
    e.targets()
        .write(r.tgt, &p, bytes, move |ts| {
            ts.change(&pool, epoch, |v| v.dtx_prepare(id, epoch, ops.clone()))
        })
        .await
}

/// A coordinator's decision reaches this participant.
pub async fn resolve(e: &Arc<Engine>, r: pb::DtxResolveReq) -> Result<()> {
    let id = id_from(&r.dtx_id)?;
    resolve_local(e, &r.pool_uuid, id, r.tgt, r.commit).await
}

/// A participant asks this coordinator what became of a DTX.
pub async fn state(e: &Arc<Engine>, r: pb::DtxStateReq) -> Result<pb::DtxStateResp> {
    let id = id_from(&r.dtx_id)?;
    let pool = r.pool_uuid;
    let s = e
        .targets()
        .run(r.tgt, move |ts| {
            let s = ts.vos(&pool)?.dtx_state(id);
            if s == DtxState::Unknown {
                // Never commit it from now on: it was reported as not done.
                ts.refused.insert(id);
                return Ok(DtxState::Aborted);
            }
            Ok(s)
        })
        .await?;
    Ok(pb::DtxStateResp {
        state: match s {
            DtxState::Prepared => pb::DtxState::DtxPrepared,
            DtxState::Committed => pb::DtxState::DtxCommitted,
            DtxState::Aborted | DtxState::Unknown => pb::DtxState::DtxAborted,
        } as i32,
    })
}

/// How old a prepared DTX must be before its participant asks about it.
const RESOLVE_AFTER: Duration = Duration::from_secs(2);
/// How old a DTX this engine coordinates may get before it gives it up.
const ABANDON_AFTER: Duration = Duration::from_secs(60);

/// Settles prepared DTXs that nobody finished: asks their coordinators, and
/// aborts the ones this engine coordinated and no longer drives.
pub async fn resolve_pending(e: &Arc<Engine>, started_ns: u64) {
    let Ok(me) = e.rank() else {
        return;
    };
    let now = e.hlc().now();
    for (pool, tgt, id, epoch) in e.prepared_dtxs().await {
        let age = Duration::from_nanos(now.saturating_sub(epoch));
        if age < RESOLVE_AFTER {
            continue;
        }
        let (crank, ctgt) = coordinator_of(id);
        let decided = if crank == me {
            // Prepared before this engine started, or stuck for far too long:
            // nobody was told it committed.
            (epoch < started_ns || age > ABANDON_AFTER).then_some(false)
        } else {
            let req = pb::DtxStateReq {
                dtx_id: id_bytes(id),
                pool_uuid: pool.clone(),
                tgt: ctgt,
            };
            match call::<_, pb::DtxStateResp>(e, &pool, crank, opcode::dtx::STATE, &req).await {
                Ok(r) if r.state == pb::DtxState::DtxCommitted as i32 => Some(true),
                Ok(r) if r.state == pb::DtxState::DtxAborted as i32 => Some(false),
                Ok(_) => None,
                Err(err) => {
                    tracing::debug!(%id, "coordinator rank {crank} not reachable: {err}");
                    None
                }
            }
        };
        if let Some(commit) = decided {
            match resolve_local(e, &pool, id, tgt, commit).await {
                Ok(()) => {
                    tracing::info!(%id, pool = %pool, tgt, commit, "settled a pending transaction")
                }
                Err(err) => {
                    tracing::warn!(%id, pool = %pool, tgt, "settling a pending transaction: {err}")
                }
            }
        }
    }
}
