//! Transactions: updates and punches over several objects (and so several
//! shards, ranks and replicas) that become visible together or not at all.
//!
//! Invariant: a transaction is sent whole to one engine, the coordinator (the
//! first shard of its first operation), which runs DAOS's two-phase DTX
//! protocol over every shard involved: all prepare durably, then all commit.
//! A reader that meets a prepared but not yet committed operation gets
//! `DER_INPROGRESS` and retries, so nobody sees half a transaction. The
//! transaction id is chosen here, so re-sending a commit whose reply was lost
//! is answered from the coordinator's record instead of being applied twice.

use bytes::{Bytes, BytesMut};
use proto::obj as pb;
use proto::opcode;
use proto::{DaosError, Der};

use crate::cont::Container;
use crate::error::Error;
use crate::obj::{encode_iods, Iod, Object};

/// A transaction id no other commit carries: a random base drawn once per
/// process (as DAOS draws a client's `dti_uuid` once), plus a count. The
/// coordinator tells a re-sent commit by the id's first 8 bytes (the low
/// half, little-endian), which the count keeps distinct within the process
/// and the base across processes; no random draw (a system call) per commit.
fn new_dtx_id() -> [u8; 16] {
    static BASE: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = *BASE.get_or_init(|| uuid::Uuid::new_v4().as_u128());
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    base.wrapping_add(u128::from(n)).to_le_bytes()
}

enum Op {
    Update {
        dkey: Vec<u8>,
        iods: Vec<Iod>,
        cond: u32,
    },
    Punch {
        kind: pb::PunchKind,
        dkey: Vec<u8>,
        akeys: Vec<Vec<u8>>,
        cond: u32,
    },
}

/// A transaction being built; nothing is sent before [`Tx::commit`].
pub struct Tx {
    cont: Container,
    /// Each op with the values it expects ([`Tx::expect`]).
    ops: Vec<(Object, Op, Vec<pb::Expect>)>,
}

impl Tx {
    pub(crate) fn new(cont: Container) -> Tx {
        Tx {
            cont,
            ops: Vec::new(),
        }
    }

    /// Adds an update of `iods` under `dkey` of `obj`.
    pub fn update(&mut self, obj: &Object, dkey: &[u8], iods: Vec<Iod>, cond: u32) -> &mut Self {
        self.ops.push((
            obj.clone(),
            Op::Update {
                dkey: dkey.to_vec(),
                iods,
                cond,
            },
            Vec::new(),
        ));
        self
    }

    /// Adds a punch of `dkey` of `obj`.
    pub fn punch_dkey(&mut self, obj: &Object, dkey: &[u8], cond: u32) -> &mut Self {
        self.ops.push((
            obj.clone(),
            Op::Punch {
                kind: pb::PunchKind::PunchDkeys,
                dkey: dkey.to_vec(),
                akeys: vec![],
                cond,
            },
            Vec::new(),
        ));
        self
    }

    /// Adds a punch of `akeys` under `dkey` of `obj`.
    pub fn punch_akeys(
        &mut self,
        obj: &Object,
        dkey: &[u8],
        akeys: Vec<Vec<u8>>,
        cond: u32,
    ) -> &mut Self {
        self.ops.push((
            obj.clone(),
            Op::Punch {
                kind: pb::PunchKind::PunchAkeys,
                dkey: dkey.to_vec(),
                akeys,
                cond,
            },
            Vec::new(),
        ));
        self
    }

    /// Makes the op added last run only if the single value under `akey`
    /// of its dkey then holds `value` at byte `offset`; otherwise the
    /// commit fails with `DER_MISMATCH` and changes nothing. A client that
    /// read a value earlier changes it (or punches its dkey) without reading
    /// it again. An op with expectations that is a punch must punch one
    /// dkey, or akeys under one.
    pub fn expect(&mut self, akey: &[u8], offset: u32, value: &[u8]) -> &mut Self {
        if let Some((_, _, expect)) = self.ops.last_mut() {
            expect.push(pb::Expect {
                akey: akey.to_vec(),
                offset,
                value: value.to_vec(),
            });
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Commits every operation atomically; returns the transaction's epoch.
    /// A failed condition (`DER_EXIST`, `DER_NONEXIST`) or expectation
    /// (`DER_MISMATCH`) aborts the whole transaction.
    pub async fn commit(self) -> Result<u64, Error> {
        self.cont.check_rw()?;
        let mut ops = Vec::new();
        let mut bulk = BytesMut::new();
        let mut coordinator = None;
        for (obj, op, expect) in &self.ops {
            let dkey = match op {
                Op::Update { dkey, .. } | Op::Punch { dkey, .. } => dkey,
            };
            let (v, shards) = obj.group_of(dkey)?;
            coordinator.get_or_insert(shards[0]);
            // Every replica of the group runs the operation.
            for shard in &shards {
                let mut t = pb::TxOp {
                    t: Some(obj.target(shard.tgt.0, v)),
                    rank: shard.rank.0,
                    dkey: dkey.clone(),
                    expect: expect.clone(),
                    ..Default::default()
                };
                match op {
                    Op::Update { iods, cond, .. } => {
                        let (descs, data) = encode_iods(iods)?;
                        t.iods = descs;
                        bulk.extend_from_slice(&data);
                        t.cond = *cond;
                    }
                    Op::Punch {
                        kind, akeys, cond, ..
                    } => {
                        t.punch = true;
                        t.punch_kind = *kind as i32;
                        t.dkeys = vec![dkey.clone()];
                        t.akeys = akeys.clone();
                        t.cond = *cond;
                    }
                }
                ops.push(t);
            }
        }
        let Some(coord) = coordinator else {
            return Ok(0);
        };
        let req = pb::TxCommitReq {
            dtx_id: new_dtx_id().to_vec(),
            epoch: 0,
            ops,
            pool_uuid: self.cont.pool().uuid().to_string(),
        };
        let bulk: Bytes = bulk.freeze();
        let daos = self.cont.pool().daos().clone();
        let deadline = tokio::time::Instant::now() + daos.opts().retry_for;
        let mut delay = std::time::Duration::from_millis(20);
        loop {
            match daos
                .rpc::<_, pb::TxCommitResp>(
                    coord.rank.0,
                    opcode::obj::TX_COMMIT,
                    &req,
                    bulk.clone(),
                )
                .await
            {
                Ok((r, _)) => {
                    self.cont.observe(r.epoch);
                    return Ok(r.epoch);
                }
                Err(e)
                    if matches!(
                        e.der(),
                        Der::UNREACH | Der::TIMEDOUT | Der::AGAIN | Der::INPROGRESS
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(rank = coord.rank.0, "transaction commit: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(match e {
                        Error::Daos(d) => {
                            Error::Daos(DaosError::new(d.der, format!("transaction: {}", d.msg)))
                        }
                        other => other,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::new_dtx_id;

    #[test]
    fn transaction_ids_differ_in_the_bytes_the_coordinator_compares() {
        let ids: std::collections::HashSet<[u8; 8]> = (0..10_000)
            .map(|_| {
                let id = new_dtx_id();
                let mut head = [0u8; 8];
                head.copy_from_slice(&id[..8]);
                head
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
    }
}
