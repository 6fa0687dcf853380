//! Objects: dkey/akey I/O placed on the pool's targets by the object class,
//! and the key-value and byte-array views built on it.
//!
//! Invariants: the shard an I/O goes to is computed here from the pool map
//! with `placement::layout` (the function the engines use too); a write goes
//! to the first shard of the dkey's redundancy group, which makes it durable
//! on every replica before answering; a read goes to one replica and moves to
//! the next one if that one does not answer. A call that fails with an error
//! a restart or an election explains is retried until the context's
//! `retry_for` has passed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use placement::{Layout, ObjectClass, ObjectId, TargetId};
use prost::Message;
use proto::obj::{self as pb, IodKind, ObjTarget};
use proto::opcode;
use proto::{DaosError, Der};

use crate::client::retryable;
use crate::cont::Container;
use crate::error::Error;

/// Epoch meaning "the latest".
pub const EPOCH_LATEST: u64 = u64::MAX;

/// A range of array records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recx {
    pub idx: u64,
    pub nr: u64,
}

/// DAOS's `DAOS_COND_*` flags for conditional operations (DAOS's values).
pub mod cond {
    pub const NONE: u32 = 0;
    /// Update: fail with `DER_EXIST` if the dkey exists.
    pub const DKEY_INSERT: u32 = 1;
    /// Update: fail with `DER_NONEXIST` if the dkey does not exist.
    pub const DKEY_UPDATE: u32 = 1 << 1;
    /// Fetch: fail with `DER_NONEXIST` if the dkey does not exist.
    pub const DKEY_FETCH: u32 = 1 << 2;
    /// Punch: fail with `DER_NONEXIST` if the dkey does not exist.
    pub const DKEY_PUNCH: u32 = 1 << 3;
    pub const AKEY_INSERT: u32 = 1 << 4;
    pub const AKEY_UPDATE: u32 = 1 << 5;
    pub const AKEY_FETCH: u32 = 1 << 6;
    pub const AKEY_PUNCH: u32 = 1 << 7;
}

/// What an update writes under one akey.
#[derive(Debug, Clone)]
pub enum Value {
    /// A whole value, replacing the previous one.
    Single(Bytes),
    /// Records of `rec_size` bytes at `recxs`; `data` holds them in order.
    Array {
        rec_size: u32,
        recxs: Vec<Recx>,
        data: Bytes,
    },
    /// Punches the records at `recxs`.
    ArrayPunch { recxs: Vec<Recx> },
}

/// One akey of an update.
#[derive(Debug, Clone)]
pub struct Iod {
    pub akey: Vec<u8>,
    pub value: Value,
}

/// One akey of a fetch.
#[derive(Debug, Clone)]
pub enum FetchIod {
    Single { akey: Vec<u8> },
    Array { akey: Vec<u8>, recxs: Vec<Recx> },
}

/// What a fetch found for one akey.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Anything was stored (DAOS: iod_size != 0).
    pub found: bool,
    pub rec_size: u32,
    /// The value, or the records requested (holes read as zeros).
    pub data: Bytes,
    /// For an array: one past the highest requested record holding data
    /// (0 if none).
    pub hi: u64,
}

/// An object of a container.
#[derive(Clone)]
pub struct Object {
    pub(crate) cont: Container,
    pub(crate) oid: ObjectId,
    class: ObjectClass,
    /// The layout, and the pool map version it was computed from.
    layout: std::sync::Arc<Mutex<Option<(u32, Layout)>>>,
}

/// Requests for the first shard of each group, one per rank: the first
/// target named, then the rank's other targets in order. A message per
/// rank, not per shard, for what every shard must answer or do.
fn per_rank(groups: &[Vec<TargetId>]) -> Vec<(TargetId, Vec<u32>)> {
    let mut out: Vec<(TargetId, Vec<u32>)> = Vec::new();
    for s in groups.iter().filter_map(|g| g.first()) {
        match out.iter_mut().find(|(first, _)| first.rank == s.rank) {
            Some((_, more)) => more.push(s.tgt.0),
            None => out.push((*s, Vec::new())),
        }
    }
    out
}

/// Sends a request to engine `rank`, retrying what a restart explains
/// (`oid`: the object it is about, for the log).
async fn call_rank<Req: Message, Resp: Message + Default>(
    cont: &Container,
    rank: u32,
    oid: Option<ObjectId>,
    opcode: u32,
    req: &Req,
    bulk: Bytes,
) -> Result<(Resp, Bytes), Error> {
    let daos = cont.pool().daos().clone();
    let deadline = tokio::time::Instant::now() + daos.opts().retry_for;
    let mut delay = Duration::from_millis(20);
    loop {
        match daos.rpc(rank, opcode, req, bulk.clone()).await {
            Err(e) if retryable(e.der()) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(?oid, rank, "opcode {opcode:#x}: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

/// The largest dkey and, for the akey asked, one past its highest record
/// under it: the answers of every rank holding the object merged.
fn merge_max(all: impl IntoIterator<Item = pb::QueryKeyResp>) -> Option<(Vec<u8>, Option<u64>)> {
    all.into_iter()
        .filter(|r| r.found)
        .max_by(|a, b| a.max_dkey.cmp(&b.max_dkey))
        .map(|r| (r.max_dkey, r.has_recx.then_some(r.recx_end)))
}

/// The shards after the first of a group: the replicas its writes reach.
fn replica_locs(shards: &[TargetId]) -> Vec<pb::ShardLoc> {
    shards
        .iter()
        .skip(1)
        .map(|s| pb::ShardLoc {
            rank: s.rank.0,
            tgt: s.tgt.0,
        })
        .collect()
}

pub(crate) fn to_pb_recx(r: &Recx) -> pb::Recx {
    pb::Recx {
        idx: r.idx,
        nr: r.nr,
    }
}

/// Encodes iods for the wire: their descriptions, and the bulk payload (the
/// values in order). A single value is the caller's own bytes, not a copy.
pub(crate) fn encode_iods(iods: &[Iod]) -> Result<(Vec<pb::Iod>, Bytes), Error> {
    let descs = iods
        .iter()
        .map(|iod| {
            Ok(match &iod.value {
                Value::Single(v) => pb::Iod {
                    akey: iod.akey.clone(),
                    kind: IodKind::IodSingle as i32,
                    rec_size: v.len() as u32,
                    recxs: vec![],
                    data_len: v.len() as u64,
                },
                Value::Array {
                    rec_size,
                    recxs,
                    data,
                } => {
                    let want: u64 = recxs.iter().map(|r| r.nr).sum::<u64>() * u64::from(*rec_size);
                    if want != data.len() as u64 {
                        return Err(DaosError::new(
                            Der::INVAL,
                            format!(
                                "akey {:?}: extents need {want} bytes, {} given",
                                String::from_utf8_lossy(&iod.akey),
                                data.len()
                            ),
                        )
                        .into());
                    }
                    pb::Iod {
                        akey: iod.akey.clone(),
                        kind: IodKind::IodArray as i32,
                        rec_size: *rec_size,
                        recxs: recxs.iter().map(to_pb_recx).collect(),
                        data_len: data.len() as u64,
                    }
                }
                Value::ArrayPunch { recxs } => pb::Iod {
                    akey: iod.akey.clone(),
                    kind: IodKind::IodArrayPunch as i32,
                    rec_size: 0,
                    recxs: recxs.iter().map(to_pb_recx).collect(),
                    data_len: 0,
                },
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let datas: Vec<&Bytes> = iods
        .iter()
        .filter_map(|iod| match &iod.value {
            Value::Single(d) | Value::Array { data: d, .. } => Some(d),
            Value::ArrayPunch { .. } => None,
        })
        .collect();
    let bulk = match datas.as_slice() {
        [] => Bytes::new(),
        [one] => (*one).clone(),
        many => {
            let mut b = BytesMut::with_capacity(many.iter().map(|d| d.len()).sum());
            for d in many {
                b.extend_from_slice(d);
            }
            b.freeze()
        }
    };
    Ok((descs, bulk))
}

impl Object {
    pub(crate) fn new(cont: Container, oid: ObjectId) -> Result<Object, Error> {
        let class = oid.class().map_err(|e| Error::Daos(e.to_daos()))?;
        if class.name().starts_with("EC_") {
            return Err(DaosError::new(
                Der::NOSYS,
                format!(
                    "object {oid}: erasure-coded class {} is not supported yet",
                    class.name()
                ),
            )
            .into());
        }
        Ok(Object {
            cont,
            oid,
            class,
            layout: Default::default(),
        })
    }

    pub fn oid(&self) -> ObjectId {
        self.oid
    }

    pub fn class(&self) -> &ObjectClass {
        &self.class
    }

    /// The object's layout under the current pool map.
    pub(crate) fn layout(&self) -> Result<(u32, Layout), Error> {
        let map = self.cont.pool().map();
        let mut g = match self.layout.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((v, l)) = g.as_ref() {
            if *v == map.version {
                return Ok((*v, l.clone()));
            }
        }
        let l = placement::layout(&map, self.oid).map_err(|e| Error::Daos(e.to_daos()))?;
        *g = Some((map.version, l.clone()));
        Ok((map.version, l))
    }

    /// The shards of the redundancy group holding `dkey`.
    pub(crate) fn group_of(&self, dkey: &[u8]) -> Result<(u32, Vec<TargetId>), Error> {
        let (v, l) = self.layout()?;
        let g = placement::dkey_group(&l, dkey);
        let shards = l.groups.get(g).cloned().unwrap_or_default();
        if shards.is_empty() {
            return Err(DaosError::new(
                Der::INVAL,
                format!("object {}: empty redundancy group {g}", self.oid),
            )
            .into());
        }
        Ok((v, shards))
    }

    pub(crate) fn target(&self, tgt: u32, map_version: u32) -> ObjTarget {
        let c = &self.cont.inner;
        ObjTarget {
            pool_uuid: c.pool.uuid().to_string(),
            cont_uuid: c.uuid.clone(),
            coh: c.coh.clone(),
            oid_hi: self.oid.hi,
            oid_lo: self.oid.lo,
            tgt,
            map_version,
        }
    }

    /// Sends a request to one shard, retrying what a restart explains.
    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        shard: TargetId,
        opcode: u32,
        req: &Req,
        bulk: Bytes,
    ) -> Result<(Resp, Bytes), Error> {
        call_rank(&self.cont, shard.rank.0, Some(self.oid), opcode, req, bulk).await
    }

    /// Writes `iods` under `dkey`; returns the epoch of the write.
    pub async fn update(&self, dkey: &[u8], iods: &[Iod], cond: u32) -> Result<u64, Error> {
        self.cont.check_rw()?;
        let (v, shards) = self.group_of(dkey)?;
        let (descs, bulk) = encode_iods(iods)?;
        let req = pb::UpdateReq {
            t: Some(self.target(shards[0].tgt.0, v)),
            epoch: 0,
            dkey: dkey.to_vec(),
            iods: descs,
            cond,
            replicas: replica_locs(&shards),
        };
        let (r, _): (pb::UpdateResp, _) = self
            .call(shards[0], opcode::obj::UPDATE, &req, bulk)
            .await?;
        self.cont.observe(r.epoch);
        Ok(r.epoch)
    }

    /// Reads `iods` under `dkey` at `epoch` ([`EPOCH_LATEST`] for the newest).
    pub async fn fetch(
        &self,
        dkey: &[u8],
        iods: &[FetchIod],
        epoch: u64,
        cond: u32,
    ) -> Result<Vec<Fetched>, Error> {
        let daos = self.cont.pool().daos().clone();
        let deadline = tokio::time::Instant::now() + daos.opts().retry_for;
        let mut delay = Duration::from_millis(20);
        loop {
            let (v, shards) = self.group_of(dkey)?;
            let mut last = None;
            for shard in &shards {
                let req = pb::FetchReq {
                    t: Some(self.target(shard.tgt.0, v)),
                    epoch,
                    dkey: dkey.to_vec(),
                    iods: iods
                        .iter()
                        .map(|f| match f {
                            FetchIod::Single { akey } => pb::FetchIod {
                                akey: akey.clone(),
                                kind: IodKind::IodSingle as i32,
                                recxs: vec![],
                            },
                            FetchIod::Array { akey, recxs } => pb::FetchIod {
                                akey: akey.clone(),
                                kind: IodKind::IodArray as i32,
                                recxs: recxs.iter().map(to_pb_recx).collect(),
                            },
                        })
                        .collect(),
                    cond,
                };
                match daos
                    .rpc::<_, pb::FetchResp>(shard.rank.0, opcode::obj::FETCH, &req, Bytes::new())
                    .await
                {
                    Ok((r, mut bulk)) => {
                        let mut out = Vec::with_capacity(r.outs.len());
                        for o in r.outs {
                            let n = o.data_len as usize;
                            if n > bulk.len() {
                                return Err(DaosError::new(
                                    Der::PROTO,
                                    format!(
                                        "fetch reply from rank {}: bulk shorter than described",
                                        shard.rank.0
                                    ),
                                )
                                .into());
                            }
                            out.push(Fetched {
                                found: o.found,
                                rec_size: o.rec_size,
                                data: bulk.split_to(n),
                                hi: o.hi,
                            });
                        }
                        return Ok(out);
                    }
                    // Another replica may answer, or this one a little later.
                    Err(e) if retryable(e.der()) => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            let last =
                last.unwrap_or_else(|| DaosError::new(Der::UNREACH, "no replica answered").into());
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tracing::debug!(oid = %self.oid, "fetch: {last}; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn punch_req(
        &self,
        dkey_for_group: Option<&[u8]>,
        kind: pb::PunchKind,
        dkeys: Vec<Vec<u8>>,
        akeys: Vec<Vec<u8>>,
        cond: u32,
    ) -> Result<(), Error> {
        self.cont.check_rw()?;
        let (v, l) = self.layout()?;
        let groups: Vec<Vec<TargetId>> = match dkey_for_group {
            Some(d) => vec![self.group_of(d)?.1],
            None => l.groups.clone(),
        };
        // Replicated groups run as transactions, one each; the shards of the
        // others are punched a message per rank.
        let (single, replicated): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| g.len() == 1);
        let sends = replicated
            .into_iter()
            .map(|shards| (shards[0], Vec::new(), replica_locs(&shards)))
            .chain(
                per_rank(&single)
                    .into_iter()
                    .map(|(first, more)| (first, more, Vec::new())),
            );
        let calls: Vec<_> = sends
            .map(|(first, more_tgts, replicas)| {
                let req = pb::PunchReq {
                    t: Some(self.target(first.tgt.0, v)),
                    epoch: 0,
                    kind: kind as i32,
                    dkeys: dkeys.clone(),
                    akeys: akeys.clone(),
                    cond,
                    replicas,
                    more_tgts,
                };
                async move {
                    let _: (pb::PunchResp, _) = self
                        .call(first, opcode::obj::PUNCH, &req, Bytes::new())
                        .await?;
                    Ok::<(), Error>(())
                }
            })
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Punches the whole object.
    pub async fn punch(&self) -> Result<(), Error> {
        self.punch_req(None, pb::PunchKind::PunchObj, vec![], vec![], cond::NONE)
            .await
    }

    /// Punches one dkey (with `cond::DKEY_PUNCH`: fails `DER_NONEXIST` if absent).
    pub async fn punch_dkey(&self, dkey: &[u8], cond: u32) -> Result<(), Error> {
        self.punch_req(
            Some(dkey),
            pb::PunchKind::PunchDkeys,
            vec![dkey.to_vec()],
            vec![],
            cond,
        )
        .await
    }

    /// Punches akeys under one dkey.
    pub async fn punch_akeys(
        &self,
        dkey: &[u8],
        akeys: &[Vec<u8>],
        cond: u32,
    ) -> Result<(), Error> {
        self.punch_req(
            Some(dkey),
            pb::PunchKind::PunchAkeys,
            vec![dkey.to_vec()],
            akeys.to_vec(),
            cond,
        )
        .await
    }

    /// One enumeration page from the first shard of a group; `req` names
    /// what to list (its target is filled in here).
    async fn enumerate_group(
        &self,
        shards: &[TargetId],
        v: u32,
        mut req: pb::EnumReq,
    ) -> Result<pb::EnumResp, Error> {
        let shard = shards[0];
        req.t = Some(self.target(shard.tgt.0, v));
        let (r, _) = self
            .call(shard, opcode::obj::ENUMERATE, &req, Bytes::new())
            .await?;
        Ok(r)
    }

    /// Every dkey of the object (over all its redundancy groups; order is by
    /// group, then by key).
    pub async fn list_dkeys(&self) -> Result<Vec<Vec<u8>>, Error> {
        let (v, l) = self.layout()?;
        let mut out = Vec::new();
        for shards in &l.groups {
            let mut anchor = Vec::new();
            loop {
                let r = self
                    .enumerate_group(
                        shards,
                        v,
                        enum_req(pb::EnumKind::EnumDkeys, &[], anchor, 1024),
                    )
                    .await?;
                out.extend(r.keys);
                if r.eof {
                    break;
                }
                anchor = r.anchor;
            }
        }
        Ok(out)
    }

    /// One page of dkeys from `anchor`; returns the keys and the next anchor
    /// (`None` at the end). An anchor is the group index and the engine's anchor.
    pub async fn list_dkeys_page(
        &self,
        anchor: Option<(usize, Vec<u8>)>,
        max: u32,
    ) -> Result<(Vec<Vec<u8>>, Option<(usize, Vec<u8>)>), Error> {
        let (page, next) = self.dkeys_page(anchor, max, &[]).await?;
        Ok((page.into_iter().map(|(k, _)| k).collect(), next))
    }

    /// Like [`Object::list_dkeys_page`], each dkey with its single values of
    /// `akeys`, in that order (empty where it has none), read by the engine
    /// in the same call: a page of a directory with its entries in one
    /// round trip.
    pub async fn list_dkeys_page_with(
        &self,
        anchor: Option<(usize, Vec<u8>)>,
        max: u32,
        akeys: &[&[u8]],
    ) -> Result<(Vec<(Vec<u8>, Vec<Bytes>)>, Option<(usize, Vec<u8>)>), Error> {
        self.dkeys_page(anchor, max, akeys).await
    }

    async fn dkeys_page(
        &self,
        anchor: Option<(usize, Vec<u8>)>,
        max: u32,
        akeys: &[&[u8]],
    ) -> Result<(Vec<(Vec<u8>, Vec<Bytes>)>, Option<(usize, Vec<u8>)>), Error> {
        let (v, l) = self.layout()?;
        let (mut g, mut a) = anchor.unwrap_or((0, Vec::new()));
        while let Some(shards) = l.groups.get(g) {
            let mut req = enum_req(pb::EnumKind::EnumDkeys, &[], a, max);
            req.value_akeys = akeys.iter().map(|k| k.to_vec()).collect();
            let r = self.enumerate_group(shards, v, req).await?;
            let n = akeys.len();
            if r.values.len() != r.keys.len() * n {
                return Err(DaosError::new(
                    Der::PROTO,
                    format!(
                        "dkey enumeration: {} values for {} keys of {n} akeys",
                        r.values.len(),
                        r.keys.len()
                    ),
                )
                .into());
            }
            let mut values = r.values.into_iter().map(Bytes::from);
            let page: Vec<(Vec<u8>, Vec<Bytes>)> = r
                .keys
                .into_iter()
                .map(|k| (k, values.by_ref().take(n).collect()))
                .collect();
            if r.eof {
                g += 1;
                a = Vec::new();
                if page.is_empty() {
                    continue;
                }
                let next = (g < l.groups.len()).then_some((g, Vec::new()));
                return Ok((page, next));
            }
            return Ok((page, Some((g, r.anchor))));
        }
        Ok((Vec::new(), None))
    }

    /// Every akey under `dkey`.
    pub async fn list_akeys(&self, dkey: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        self.akey_pages(dkey, pb::EnumKind::EnumAkeys, 1024, |r| out.extend(r.keys))
            .await?;
        Ok(out)
    }

    /// How many akeys `dkey` holds (the engine counts; no keys are sent).
    pub async fn count_akeys(&self, dkey: &[u8]) -> Result<u64, Error> {
        let mut n = 0;
        self.akey_pages(dkey, pb::EnumKind::EnumAkeyCount, 4096, |r| n += r.count)
            .await?;
        Ok(n)
    }

    /// Runs an akey enumeration of `dkey` to its end, handing each page to `page`.
    async fn akey_pages(
        &self,
        dkey: &[u8],
        kind: pb::EnumKind,
        max: u32,
        mut page: impl FnMut(pb::EnumResp),
    ) -> Result<(), Error> {
        let (v, shards) = self.group_of(dkey)?;
        let mut anchor = Vec::new();
        loop {
            let mut r = self
                .enumerate_group(&shards, v, enum_req(kind, dkey, anchor, max))
                .await?;
            let eof = r.eof;
            anchor = std::mem::take(&mut r.anchor);
            page(r);
            if eof {
                return Ok(());
            }
        }
    }

    /// The largest dkey of the object and, for `akey`, one past its highest
    /// record under that dkey (over all groups).
    pub async fn query_max(&self, akey: &[u8]) -> Result<Option<(Vec<u8>, Option<u64>)>, Error> {
        Ok(merge_max(self.query_all(akey, false).await?))
    }

    /// Every rank's answer to a key query of `akey` (with `want_epoch`, each
    /// also scans for the newest change).
    async fn query_all(
        &self,
        akey: &[u8],
        want_epoch: bool,
    ) -> Result<Vec<pb::QueryKeyResp>, Error> {
        let (v, l) = self.layout()?;
        let calls: Vec<_> = per_rank(&l.groups)
            .into_iter()
            .map(|(shard, more_tgts)| {
                let req = pb::QueryKeyReq {
                    t: Some(self.target(shard.tgt.0, v)),
                    epoch: EPOCH_LATEST,
                    akey: akey.to_vec(),
                    more_tgts,
                    want_epoch,
                };
                async move {
                    let (r, _): (pb::QueryKeyResp, _) = self
                        .call(shard, opcode::obj::QUERY_KEY, &req, Bytes::new())
                        .await?;
                    Ok::<_, Error>(r)
                }
            })
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(16)
            .try_collect()
            .await
    }
}

/// An enumeration request at the latest epoch, target left for the caller.
fn enum_req(kind: pb::EnumKind, dkey: &[u8], anchor: Vec<u8>, max: u32) -> pb::EnumReq {
    pb::EnumReq {
        t: None,
        epoch: EPOCH_LATEST,
        kind: kind as i32,
        dkey: dkey.to_vec(),
        akey: Vec::new(),
        anchor,
        max,
        value_akeys: Vec::new(),
    }
}

/// A key-value object: each key is a dkey holding one single value.
#[derive(Clone)]
pub struct Kv {
    obj: Object,
}

const KV_AKEY: &[u8] = b"\0";

impl Kv {
    pub(crate) fn new(obj: Object) -> Kv {
        Kv { obj }
    }

    pub fn object(&self) -> &Object {
        &self.obj
    }

    /// Stores `value` under `key`, replacing what was there.
    pub async fn put(&self, key: &[u8], value: Bytes) -> Result<(), Error> {
        self.put_cond(key, value, cond::NONE).await
    }

    /// Stores `value` under `key` only if `key` does not exist (`DER_EXIST` otherwise).
    pub async fn insert(&self, key: &[u8], value: Bytes) -> Result<(), Error> {
        self.put_cond(key, value, cond::DKEY_INSERT).await
    }

    async fn put_cond(&self, key: &[u8], value: Bytes, cond: u32) -> Result<(), Error> {
        let iod = Iod {
            akey: KV_AKEY.to_vec(),
            value: Value::Single(value),
        };
        self.obj.update(key, &[iod], cond).await.map(|_| ())
    }

    /// The value under `key`, if any.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        let f = self
            .obj
            .fetch(
                key,
                &[FetchIod::Single {
                    akey: KV_AKEY.to_vec(),
                }],
                EPOCH_LATEST,
                cond::NONE,
            )
            .await?;
        Ok(f.into_iter().next().filter(|f| f.found).map(|f| f.data))
    }

    /// Removes `key`; `DER_NONEXIST` if it was not there.
    pub async fn remove(&self, key: &[u8]) -> Result<(), Error> {
        self.obj.punch_dkey(key, cond::DKEY_PUNCH).await
    }

    /// Every key.
    pub async fn list(&self) -> Result<Vec<Vec<u8>>, Error> {
        self.obj.list_dkeys().await
    }
}

/// A byte array: byte `i` lives in dkey `i / chunk_size` (8 bytes,
/// big-endian, so key order is chunk order), akey `\0`, record index `i`.
#[derive(Clone)]
pub struct Array {
    obj: Object,
    chunk: u64,
}

const ARRAY_AKEY: &[u8] = b"\0";

/// One QUERY_KEYS to `rank`: the answers paired with `who` asked each.
async fn query_keys(
    cont: &Container,
    rank: u32,
    who: Vec<usize>,
    queries: Vec<pb::QueryKeyReq>,
) -> Result<Vec<(usize, pb::QueryKeyResp)>, Error> {
    let req = pb::QueryKeysReq { queries };
    let (r, _): (pb::QueryKeysResp, _) = call_rank(
        cont,
        rank,
        None,
        opcode::obj::QUERY_KEYS,
        &req,
        Bytes::new(),
    )
    .await?;
    if r.answers.len() != who.len() {
        return Err(Error::Daos(DaosError::new(
            Der::PROTO,
            format!(
                "rank {rank}: {} answers to {} queries",
                r.answers.len(),
                who.len()
            ),
        )));
    }
    Ok(who.into_iter().zip(r.answers).collect())
}

/// An array's size from its largest chunk dkey and the end of its records.
fn size_of(max: Option<(Vec<u8>, Option<u64>)>) -> u64 {
    match max {
        Some((_, Some(end))) => end,
        _ => 0,
    }
}

/// What [`Array::stat`] tells (DAOS's `daos_array_stbuf_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArrayStat {
    /// One past the highest written byte.
    pub size: u64,
    /// The epoch of the newest write or punch of the array's bytes, 0 if
    /// there was none: epochs are nanoseconds of the engines' hybrid clocks,
    /// so this is its modification time.
    pub max_epoch: u64,
}

/// The stat of an array from every rank's answer.
fn stat_of(all: Vec<pb::QueryKeyResp>) -> ArrayStat {
    let max_epoch = all.iter().map(|r| r.max_epoch).max().unwrap_or(0);
    ArrayStat {
        size: size_of(merge_max(all)),
        max_epoch,
    }
}

fn chunk_dkey(c: u64) -> [u8; 8] {
    c.to_be_bytes()
}

/// Splits `[off, off+len)` at chunk boundaries: (chunk, offset, length).
fn split(off: u64, len: u64, chunk: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let (mut o, end) = (off, off + len);
    while o < end {
        let c = o / chunk;
        let stop = ((c + 1) * chunk).min(end);
        out.push((c, o, stop - o));
        o = stop;
    }
    out
}

/// How many chunk I/Os of one array call run at once.
const ARRAY_PARALLEL: usize = 16;

impl Array {
    pub(crate) fn new(obj: Object, chunk: u64) -> Result<Array, Error> {
        if chunk == 0 {
            return Err(DaosError::new(Der::INVAL, "array chunk size 0").into());
        }
        Ok(Array { obj, chunk })
    }

    pub fn object(&self) -> &Object {
        &self.obj
    }

    /// Writes `data` at byte `off`.
    pub async fn write(&self, off: u64, data: Bytes) -> Result<(), Error> {
        let pieces = split(off, data.len() as u64, self.chunk);
        let calls: Vec<_> = pieces
            .into_iter()
            .map(|(c, o, n)| {
                let s = (o - off) as usize;
                let piece = data.slice(s..s + n as usize);
                async move {
                    let iod = Iod {
                        akey: ARRAY_AKEY.to_vec(),
                        value: Value::Array {
                            rec_size: 1,
                            recxs: vec![Recx { idx: o, nr: n }],
                            data: piece,
                        },
                    };
                    self.obj.update(&chunk_dkey(c), &[iod], cond::NONE).await
                }
            })
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(ARRAY_PARALLEL)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(())
    }

    /// Reads `len` bytes at `off`; what was never written reads as zeros.
    pub async fn read(&self, off: u64, len: u64) -> Result<Bytes, Error> {
        Ok(self.fetch_range(off, len).await?.0)
    }

    /// Reads up to `len` bytes at `off`, ending at the array's size (empty at
    /// or past it; holes before it read as zeros). The size is asked for only
    /// when the range does not end in data: a read inside a written file is
    /// one round trip.
    pub async fn read_to_size(&self, off: u64, len: u64) -> Result<Bytes, Error> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| DaosError::new(Der::OVERFLOW, "array read past 2^64"))?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (data, hi) = self.fetch_range(off, len).await?;
        if hi == end {
            return Ok(data);
        }
        let size = self.size().await?;
        if off >= size {
            return Ok(Bytes::new());
        }
        Ok(data.slice(..(size - off).min(len) as usize))
    }

    /// The bytes of `[off, off + len)` (zeros where nothing is) and one past
    /// the highest byte holding data in the range's last chunk (0 if none).
    async fn fetch_range(&self, off: u64, len: u64) -> Result<(Bytes, u64), Error> {
        let pieces = split(off, len, self.chunk);
        let calls: Vec<_> = pieces
            .into_iter()
            .map(|(c, o, n)| async move {
                let f = self
                    .obj
                    .fetch(
                        &chunk_dkey(c),
                        &[FetchIod::Array {
                            akey: ARRAY_AKEY.to_vec(),
                            recxs: vec![Recx { idx: o, nr: n }],
                        }],
                        EPOCH_LATEST,
                        cond::NONE,
                    )
                    .await?;
                let (data, hi) = f
                    .into_iter()
                    .next()
                    .map(|f| (f.data, f.hi))
                    .unwrap_or_default();
                Ok::<_, Error>((o, n, data, hi))
            })
            .collect();
        let parts: Vec<(u64, u64, Bytes, u64)> = futures::stream::iter(calls)
            .buffered(ARRAY_PARALLEL)
            .try_collect()
            .await?;
        let hi = parts.last().map_or(0, |p| p.3);
        if let [(_, n, d, _)] = parts.as_slice() {
            if d.len() as u64 == *n {
                return Ok((d.clone(), hi));
            }
        }
        let mut out = BytesMut::zeroed(len as usize);
        for (o, n, d, _) in parts {
            let s = (o - off) as usize;
            let m = (n as usize).min(d.len());
            out[s..s + m].copy_from_slice(&d[..m]);
        }
        Ok((out.freeze(), hi))
    }

    /// Punches `[off, off + len)`: those bytes read as zeros again and their
    /// space is reclaimed (the size stays unless the range was its end).
    pub async fn punch(&self, off: u64, len: u64) -> Result<(), Error> {
        let pieces = split(off, len, self.chunk);
        let calls: Vec<_> = pieces
            .into_iter()
            .map(|(c, o, n)| async move {
                let iod = Iod {
                    akey: ARRAY_AKEY.to_vec(),
                    value: Value::ArrayPunch {
                        recxs: vec![Recx { idx: o, nr: n }],
                    },
                };
                self.obj.update(&chunk_dkey(c), &[iod], cond::NONE).await
            })
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(ARRAY_PARALLEL)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(())
    }

    /// The array's size: one past its highest written byte.
    pub async fn size(&self) -> Result<u64, Error> {
        Ok(size_of(self.obj.query_max(ARRAY_AKEY).await?))
    }

    /// The array's size and last modification.
    pub async fn stat(&self) -> Result<ArrayStat, Error> {
        Ok(stat_of(self.obj.query_all(ARRAY_AKEY, true).await?))
    }

    /// [`Array::stat`] of each of `arrays` (of one container), in order: one
    /// message per engine for all of them (up to
    /// [`opcode::obj::MAX_QUERY_KEYS`] queries each), where `stat` of each
    /// costs one per engine holding it.
    pub async fn stats(arrays: &[Array]) -> Result<Vec<ArrayStat>, Error> {
        let Some(first) = arrays.first() else {
            return Ok(Vec::new());
        };
        // Per rank: which array each query is for, and the query.
        let mut by_rank: BTreeMap<u32, Vec<(usize, pb::QueryKeyReq)>> = BTreeMap::new();
        for (i, a) in arrays.iter().enumerate() {
            let (v, l) = a.obj.layout()?;
            for (shard, more_tgts) in per_rank(&l.groups) {
                by_rank.entry(shard.rank.0).or_default().push((
                    i,
                    pb::QueryKeyReq {
                        t: Some(a.obj.target(shard.tgt.0, v)),
                        epoch: EPOCH_LATEST,
                        akey: ARRAY_AKEY.to_vec(),
                        more_tgts,
                        want_epoch: true,
                    },
                ));
            }
        }
        let mut calls = Vec::new();
        for (rank, qs) in by_rank {
            for batch in qs.chunks(opcode::obj::MAX_QUERY_KEYS) {
                let (who, queries) = batch.iter().cloned().unzip();
                calls.push(query_keys(&first.obj.cont, rank, who, queries));
            }
        }
        let answered: Vec<Vec<(usize, pb::QueryKeyResp)>> = futures::stream::iter(calls)
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut per_array: Vec<Vec<pb::QueryKeyResp>> = vec![Vec::new(); arrays.len()];
        for (i, a) in answered.into_iter().flatten() {
            per_array[i].push(a);
        }
        Ok(per_array.into_iter().map(stat_of).collect())
    }

    /// Truncates or extends the array to `size` bytes.
    pub async fn set_size(&self, size: u64) -> Result<(), Error> {
        let cur = self.size().await?;
        if size > cur {
            // The last byte is written (as zero) so the size is recorded.
            return self.write(size - 1, Bytes::from_static(&[0])).await;
        }
        if size == cur {
            return Ok(());
        }
        let first_gone = size.div_ceil(self.chunk);
        for d in self.obj.list_dkeys().await? {
            let Ok(b) = <[u8; 8]>::try_from(d.as_slice()) else {
                continue;
            };
            if u64::from_be_bytes(b) >= first_gone {
                self.obj.punch_dkey(&d, cond::NONE).await?;
            }
        }
        if !size.is_multiple_of(self.chunk) {
            let c = size / self.chunk;
            let end = ((c + 1) * self.chunk).min(cur.max(size));
            let iod = Iod {
                akey: ARRAY_AKEY.to_vec(),
                value: Value::ArrayPunch {
                    recxs: vec![Recx {
                        idx: size,
                        nr: end - size,
                    }],
                },
            };
            self.obj.update(&chunk_dkey(c), &[iod], cond::NONE).await?;
        }
        // The size is where the last record is: if the new last byte is in a
        // hole, write it (as zero) so the size reads back as set.
        if size > 0 && self.size().await? < size {
            self.write(size - 1, Bytes::from_static(&[0])).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_rank() {
        let t = TargetId::new;
        let groups = vec![
            vec![t(1, 0)],
            vec![t(0, 1), t(1, 1)],
            vec![t(1, 1)],
            vec![t(0, 0)],
            vec![],
        ];
        assert_eq!(
            per_rank(&groups),
            vec![(t(1, 0), vec![1]), (t(0, 1), vec![0])]
        );
    }

    #[test]
    fn split_at_chunks() {
        assert_eq!(split(0, 10, 4), vec![(0, 0, 4), (1, 4, 4), (2, 8, 2)]);
        assert_eq!(split(5, 2, 4), vec![(1, 5, 2)]);
        assert_eq!(split(3, 0, 4), vec![]);
    }

    #[test]
    fn iods_encode_without_copying_one_value() {
        let data = Bytes::from(vec![7u8; 4096]);
        let one = [Iod {
            akey: b"a".to_vec(),
            value: Value::Array {
                rec_size: 1,
                recxs: vec![Recx { idx: 0, nr: 4096 }],
                data: data.clone(),
            },
        }];
        let (d, bulk) = encode_iods(&one).unwrap();
        assert_eq!(d[0].data_len, 4096);
        assert_eq!(
            bulk.as_ptr(),
            data.as_ptr(),
            "the caller's bytes, not a copy"
        );
        let two = [
            Iod {
                akey: b"a".to_vec(),
                value: Value::Single(Bytes::from_static(b"xy")),
            },
            Iod {
                akey: b"b".to_vec(),
                value: Value::ArrayPunch {
                    recxs: vec![Recx { idx: 0, nr: 1 }],
                },
            },
            Iod {
                akey: b"c".to_vec(),
                value: Value::Single(Bytes::from_static(b"z")),
            },
        ];
        let (d, bulk) = encode_iods(&two).unwrap();
        assert_eq!(&bulk[..], b"xyz");
        assert_eq!(
            d.iter().map(|i| i.data_len).collect::<Vec<_>>(),
            vec![2, 0, 1]
        );
        let bad = [Iod {
            akey: b"a".to_vec(),
            value: Value::Array {
                rec_size: 2,
                recxs: vec![Recx { idx: 0, nr: 3 }],
                data: Bytes::from_static(b"abc"),
            },
        }];
        assert_eq!(encode_iods(&bad).unwrap_err().der(), Der::INVAL);
    }

    #[test]
    fn chunk_keys_sort_by_chunk() {
        assert!(chunk_dkey(1) < chunk_dkey(2));
        assert!(chunk_dkey(255) < chunk_dkey(256));
    }
}
