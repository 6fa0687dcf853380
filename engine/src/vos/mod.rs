//! VOS: the versioned object store of one pool shard on one target.
//!
//! One [`Vos`] per (pool, target), owned by that target (see `targets`,
//! which also serves an idle target's reads and small changes on other
//! threads): no locks, no threads, no async here. A read with
//! [`Reach::Memory`] never waits on a device (bulk bytes only from the
//! kernel's page cache), so it may run where blocking is not allowed. Data
//! model as DAOS: object → dkey → akey → single value or array of records,
//! every change stamped with an epoch; reads at epoch E see, per akey, the
//! newest version at or below E not hidden by a punch at or below E.
//!
//! # Durability contract
//!
//! Every mutation ([`Vos::update`], [`Vos::punch`], the DTX calls,
//! [`Vos::set_snapshots`], [`Vos::aggregate`]) is applied in memory and
//! appended to a pending batch; it is durable only once [`Vos::flush`] has
//! returned `Ok`. **The caller acknowledges a mutation only after a
//! successful flush.** A crash loses exactly the mutations of unflushed
//! batches; reads may observe unflushed mutations before that.
//!
//! # Storage
//!
//! - The SCM tier is the in-memory image (metadata and values under 4 KiB,
//!   or every value when there is no bulk region), made durable by a
//!   write-ahead log (`vos.log`, one checksummed record per flushed batch,
//!   ONE write + fdatasync per flush) and a checkpoint (`vos.ckpt`, the whole
//!   image, replaced atomically when the log passes its threshold).
//! - Budget split of `scm_bytes`: the image may use one third (mutations that
//!   would grow it past that fail `DER_NOSPACE` and change nothing); the log
//!   one third (a flush that would pass it writes a checkpoint instead and
//!   resets the log); the last third is for the new checkpoint while the old
//!   one still exists. So checkpoint + checkpoint being written + log never
//!   exceed `scm_bytes`.
//! - The bulk tier holds values/extents of 4 KiB and more in the target's
//!   region of a device file, placed by a first-fit 4 KiB-block allocator.
//!   Bulk data is written when the mutation is applied and fdatasync'ed by
//!   the flush before the log record that points at it (when the log is on
//!   a tmpfs, by the next checkpoint: see [`Vos::flush`]). Bulk space freed by
//!   a mutation (overwrite, aggregation, DTX abort) becomes reusable only
//!   after the flush that logs the free, so a replay never meets a
//!   reference to reused space. The allocator is rebuilt from the index on
//!   open. (SCM space freed in the image is reusable at once: a crash
//!   replays to the last flushed image, which fit.)
//! - A failed write or fsync is not retried: the `Vos` refuses every further
//!   mutation with `DER_IO` until it is reopened.
//!
//! # Semantics worth knowing
//!
//! - Objects belong to containers (`Oid::cont`); snapshots are per
//!   container, [`Vos::destroy_cont`] drops a container whole.
//! - Aggregation up to U keeps every read at a snapshot or at an epoch >= U
//!   unchanged; reads at other epochs below U may change. Afterwards updates
//!   and punches below the highest aggregated epoch are refused with
//!   `DER_AGAIN` (the client must restart with a newer epoch, DAOS's
//!   `DER_TX_RESTART`), since the punches that would hide them may be gone.
//!   Aggregation never passes the epoch of a prepared DTX.
//! - A key is visible at E if some value under it is (a single value, or at
//!   least one array record with data). Enumeration lists visible keys only.
//! - An akey's value type (single, or array with a record size) is fixed by
//!   its first write; a mismatch is `DER_INVAL`. It becomes free again only
//!   when aggregation has removed everything in it.
//! - Destroying a container aborts the prepared DTXs that touch it.
//! - Updates at the same epoch: a later single value replaces the earlier; a
//!   later array extent wins over earlier ones where they overlap.
//! - DTX: a prepared DTX's ops are invisible. A read (fetch, list of dkeys,
//!   akeys, recxs, query_max) at an epoch >= the DTX's epoch that touches a
//!   dkey it writes (or its object, for an object punch) fails
//!   `DER_INPROGRESS`, and so does any update, punch or prepare of such a
//!   dkey at any epoch. Object enumeration ignores prepared DTXs. The
//!   conditions of a DTX's ops are checked at prepare against committed
//!   state. The outcome of the last [`DTX_HISTORY`] decided DTXs is
//!   remembered (in the image, so across restarts).

mod alloc;
mod index;
pub mod layout;
mod types;
mod wal;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use proto::Der;

use crate::error::{Error, Result};
use alloc::ExtentAlloc;
use index::{Image, Kind, LValShape};
use layout::{LIod, LOp, LVal, Mutation, Payload};

pub use alloc::BLOCK as BULK_BLOCK;
pub use index::DTX_HISTORY;
use types::{der, inval, show_key};
pub use types::{
    AggStats, Anchor, BulkRegion, Cond, DtxId, DtxOp, DtxState, Expect, FetchOut, FetchReq, Iod,
    IodValue, Oid, Punch, QueryMax, Reach, Recx, RecxEntry, VosConfig, VosSpace,
};

/// The default `data_thresh` (DAOS's): values of 4 KiB and more go to the
/// bulk tier.
pub const DEFAULT_DATA_THRESH: u64 = 4096;
/// Log room a flush must leave for [`Vos::flush_is_cheap`]: one batch of
/// small changes stays far below it, so such a flush writes no checkpoint.
const CHEAP_FLUSH_ROOM: u64 = 64 << 10;
/// The most bulk bytes of a change [`Vos::writes_to_memory`] counts as a
/// write to memory.
pub const SMALL_BULK: u64 = 64 << 10;
/// The most bytes one fetch returns.
pub const MAX_FETCH_BYTES: u64 = 1 << 30;

/// The versioned object store of one pool shard on one target. See the
/// module docs for the durability contract: acknowledge a mutation only
/// after [`Vos::flush`] returned `Ok`.
pub struct Vos {
    cfg: VosConfig,
    img: Image,
    bulk: Option<Bulk>,
    log: wal::Log,
    /// The sequence number of the last durable batch.
    seq: u64,
    /// Encoded mutations of the pending batch.
    batch: Vec<u8>,
    batch_count: u32,
    /// Bulk extents freed by pending mutations: reusable after the flush.
    pending_free: Vec<(u64, u64)>,
    failed: Option<String>,
    image_limit: u64,
    log_limit: u64,
    checkpoints: u64,
    /// The log's filesystem keeps it in memory (see [`Vos::flush`]).
    log_in_memory: bool,
    bulk_syncs: u64,
}

/// Whether `dir` is on a tmpfs.
pub(crate) fn in_memory(dir: &std::path::Path) -> bool {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    statfs(dir).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
}

impl std::fmt::Debug for Vos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vos")
            .field("dir", &self.cfg.dir)
            .field("seq", &self.seq)
            .field("image_bytes", &self.img.bytes)
            .field("objects", &self.img.objs.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

struct Bulk {
    file: File,
    region: BulkRegion,
    alloc: ExtentAlloc,
    /// Written since the last flush that synced it (or, with `sync` off,
    /// would have).
    dirty: bool,
}

/// Counters for tests and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VosStats {
    /// Bytes in the log file.
    pub log_bytes: u64,
    /// Encoded bytes of the pending (unflushed) batch.
    pub pending_bytes: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// The highest epoch aggregated up to.
    pub agg_boundary: u64,
    /// fdatasyncs of the bulk device since open.
    pub bulk_syncs: u64,
}

impl Vos {
    /// Opens (or creates) the VOS in `cfg.dir`: loads the checkpoint, replays
    /// the log (cutting a torn tail), and rebuilds the bulk allocator.
    pub fn open(cfg: VosConfig) -> Result<Vos> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| Error::io(format!("creating VOS directory {}", cfg.dir.display()), e))?;
        let tmp = cfg.dir.join(wal::CKPT_TMP);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", tmp.display()), e)),
        }
        let ckpt_path = cfg.dir.join(wal::CKPT_FILE);
        let (ckpt_seq, mut img) = match wal::read_checkpoint(&ckpt_path)? {
            Some(c) => (c.seq, c.image),
            None => (0, Image::default()),
        };
        let replayed = wal::open_log(&cfg.dir, ckpt_seq, cfg.sync)?;
        let mut seq = ckpt_seq;
        let mut sink = Vec::new();
        for (off, rec) in &replayed.records {
            for m in &rec.mutations {
                img.apply(m, &mut sink).map_err(|msg| {
                    wal::corrupt(
                        &replayed.log.path,
                        *off,
                        format!("replaying record {}: {msg}", rec.seq),
                    )
                })?;
            }
            seq = rec.seq;
        }
        let bulk = match &cfg.bulk {
            None => {
                let mut refs = 0u64;
                img.for_each_bulk(&mut |_, _| refs += 1);
                if refs > 0 {
                    return Err(inval(format!(
                        "VOS {}: {refs} values live in a bulk region, but none is configured",
                        cfg.dir.display()
                    )));
                }
                None
            }
            Some(region) => Some(Self::open_bulk(region, &img)?),
        };
        let third = cfg.scm_bytes / 3;
        let log_in_memory = in_memory(&cfg.dir);
        tracing::debug!(
            dir = %cfg.dir.display(),
            seq,
            records = replayed.records.len(),
            truncated = replayed.truncated,
            image = img.bytes,
            "VOS opened"
        );
        Ok(Vos {
            // Leave room for the file headers so the three parts fit exactly.
            image_limit: third.saturating_sub(layout::CKPT_HEADER_LEN as u64),
            log_limit: third,
            img,
            bulk,
            log: replayed.log,
            seq,
            batch: Vec::new(),
            batch_count: 0,
            pending_free: Vec::new(),
            failed: None,
            checkpoints: 0,
            log_in_memory,
            bulk_syncs: 0,
            cfg,
        })
    }

    /// The size from which new values go to the bulk tier; `None` without
    /// a bulk region.
    pub fn bulk_thresh(&self) -> Option<u64> {
        self.bulk.as_ref().map(|_| self.cfg.data_thresh)
    }

    /// Whether a change whose values add up to `bytes` writes to memory
    /// only: it stays in the SCM tier (each of its values is smaller than
    /// the threshold), or the log is on a tmpfs, so its bulk values go to
    /// the page cache with no sync per flush (see [`Vos::flush`]), and they
    /// are few enough ([`SMALL_BULK`]) not to be held up by the kernel's
    /// writeback throttling.
    pub fn writes_to_memory(&self, bytes: u64) -> bool {
        self.bulk_thresh().is_none_or(|t| bytes < t) || (self.log_in_memory && bytes <= SMALL_BULK)
    }

    /// Whether a flush now would be a copy in memory: the log is on a
    /// tmpfs (DAOS's `class: ram` SCM, where the bulk device is synced only
    /// by checkpoints: see [`Vos::flush`]) and far from the size that calls
    /// for a checkpoint.
    pub fn flush_is_cheap(&self) -> bool {
        self.log_in_memory && self.log.len.saturating_add(CHEAP_FLUSH_ROOM) < self.log_limit
    }

    fn open_bulk(region: &BulkRegion, img: &Image) -> Result<Bulk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&region.path)
            .map_err(|e| Error::io(format!("opening bulk device {}", region.path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| {
                Error::io(
                    format!("reading size of bulk device {}", region.path.display()),
                    e,
                )
            })?
            .len();
        if region
            .offset
            .checked_add(region.len)
            .is_none_or(|end| end > size)
        {
            return Err(inval(format!(
                "bulk region [{}, +{}) lies beyond the end of {} ({size} bytes)",
                region.offset,
                region.len,
                region.path.display()
            )));
        }
        let mut alloc = ExtentAlloc::new(region.len);
        let mut bad = None;
        img.for_each_bulk(&mut |off, len| {
            if bad.is_none() {
                if let Err(e) = alloc.mark_used(off, len) {
                    bad = Some(e);
                }
            }
        });
        if let Some(e) = bad {
            return Err(Error::io(
                format!("rebuilding the bulk allocator of {}", region.path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            ));
        }
        Ok(Bulk {
            file,
            region: region.clone(),
            alloc,
            dirty: false,
        })
    }

    // ------------------------------------------------------------ mutations

    /// Writes `iods` under `dkey` at `epoch`, all or nothing.
    pub fn update(
        &mut self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        iods: &[Iod],
        cond: Cond,
    ) -> Result<()> {
        self.check_ok()?;
        self.check_epoch(epoch)?;
        check_update(dkey, iods, cond)?;
        if let Some((id, e)) = self.img.lock_conflict(oid, Some(dkey), None) {
            return Err(in_progress(oid, dkey, id, e));
        }
        let mut kinds = HashMap::new();
        self.check_kinds(oid, dkey, iods, &mut kinds)?;
        self.check_update_cond(oid, epoch, dkey, iods, cond)?;
        let op = self.resolve_update(oid, dkey, iods)?;
        self.commit(Mutation::Op { epoch, op })?;
        Ok(())
    }

    /// Punches an object, dkeys or akeys at `epoch`.
    pub fn punch(&mut self, oid: Oid, epoch: u64, what: Punch, cond: Cond) -> Result<()> {
        self.check_ok()?;
        self.check_epoch(epoch)?;
        check_punch(&what)?;
        self.check_punch_locks(oid, &what)?;
        self.check_punch_cond(oid, epoch, &what, cond)?;
        let op = LOp::Punch { oid, what };
        self.check_scm(index::op_bound(&op), || format!("punch of object {oid}"))?;
        self.commit(Mutation::Op { epoch, op })?;
        Ok(())
    }

    /// Pins these epochs of container `cont` (replacing its previous set;
    /// empty unpins all): aggregation keeps what reads at them see in that
    /// container's objects. Durable after the next flush.
    pub fn set_snapshots(&mut self, cont: u128, epochs: Vec<u64>) -> Result<()> {
        self.check_ok()?;
        let mut v = epochs;
        v.sort_unstable();
        v.dedup();
        let had = self.img.snapshots.get(&cont).map_or(0, Vec::len);
        let grow = (v.len().saturating_sub(had) * 8 + 20) as u64;
        self.check_scm(grow, || {
            format!("{} snapshots of container {cont:032x}", v.len())
        })?;
        self.commit(Mutation::SetSnapshots { cont, epochs: v })?;
        Ok(())
    }

    /// Removes everything of container `cont`: its objects (their bulk space
    /// is reusable after the next flush), its snapshots, and the prepared
    /// DTXs touching it, which are aborted. Durable after the next flush.
    pub fn destroy_cont(&mut self, cont: u128) -> Result<()> {
        self.check_ok()?;
        let touched = self.img.cont_range(cont).next().is_some()
            || self.img.snapshots.contains_key(&cont)
            || self.img.locks.keys().any(|o| o.cont == cont);
        if touched {
            self.commit(Mutation::DestroyCont { cont })?;
        }
        Ok(())
    }

    /// Removes every version no read at a snapshot, or at an epoch >= `upto`,
    /// can see; `upto` is lowered to the oldest prepared DTX's epoch. Freed
    /// bulk space is reusable after the next flush.
    pub fn aggregate(&mut self, upto: u64) -> Result<AggStats> {
        self.check_ok()?;
        let upto = self
            .img
            .prepared
            .values()
            .map(|p| p.epoch)
            .fold(upto, u64::min);
        let st = self.commit(Mutation::Aggregate { upto })?;
        Ok(st.unwrap_or(AggStats {
            upto,
            ..AggStats::default()
        }))
    }

    /// Makes every mutation since the last flush durable: fdatasync of the
    /// bulk data they wrote, then ONE write + fdatasync of a log record (or a
    /// checkpoint, when the log is full). Then frees pending bulk space.
    ///
    /// When the log is on a tmpfs (SCM `class: ram`) the bulk data is not
    /// synced per flush: written, it is in the kernel's page cache, which
    /// survives `kill -9` of any process as the tmpfs does, and a power loss
    /// that would lose unsynced bulk data loses the SCM tier, and with it
    /// every reference to that data, anyway. A checkpoint still syncs it
    /// first, which bounds what waits for the kernel's writeback and
    /// surfaces a writeback error (the VOS then refuses changes, as for any
    /// failed write).
    pub fn flush(&mut self) -> Result<()> {
        self.check_ok()?;
        if self.batch_count == 0 {
            return Ok(());
        }
        self.flush_inner(false)
    }

    /// Flushes, writing the whole image as a new checkpoint and resetting the log.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.check_ok()?;
        self.flush_inner(true)
    }

    fn flush_inner(&mut self, force_ckpt: bool) -> Result<()> {
        let r = self.flush_io(force_ckpt);
        if let Err(e) = &r {
            tracing::error!(dir = %self.cfg.dir.display(), "VOS flush failed, refusing further writes: {e}");
            self.failed = Some(e.to_string());
        }
        r
    }

    fn flush_io(&mut self, force_ckpt: bool) -> Result<()> {
        let seq = self.seq + 1;
        let rec_len = (layout::REC_HEADER_LEN + 12 + self.batch.len()) as u64;
        // A batch too big for one record (its length is a u32) goes into a
        // checkpoint too.
        let ckpt =
            force_ckpt || self.log.len + rec_len > self.log_limit || rec_len > u64::from(u32::MAX);
        if let Some(b) = &mut self.bulk {
            if b.dirty && (ckpt || !self.log_in_memory) {
                if self.cfg.sync {
                    b.file.sync_data().map_err(|e| {
                        Error::io(
                            format!("syncing bulk device {}", b.region.path.display()),
                            e,
                        )
                    })?;
                    self.bulk_syncs += 1;
                }
                b.dirty = false;
            }
        }
        if ckpt {
            wal::write_checkpoint(&self.cfg.dir, &self.img, seq, self.cfg.sync)?;
            let what = || format!("resetting log {}", self.log.path.display());
            self.log
                .file
                .set_len(layout::LOG_HEADER_LEN as u64)
                .map_err(|e| Error::io(what(), e))?;
            if self.cfg.sync {
                self.log
                    .file
                    .sync_data()
                    .map_err(|e| Error::io(what(), e))?;
            }
            self.log.len = layout::LOG_HEADER_LEN as u64;
            self.checkpoints += 1;
        } else {
            let rec = layout::encode_record(seq, self.batch_count, &self.batch);
            let what = || format!("appending to log {}", self.log.path.display());
            self.log
                .file
                .write_all_at(&rec, self.log.len)
                .map_err(|e| Error::io(what(), e))?;
            if self.cfg.sync {
                self.log
                    .file
                    .sync_data()
                    .map_err(|e| Error::io(what(), e))?;
            }
            self.log.len += rec.len() as u64;
        }
        self.seq = seq;
        self.batch.clear();
        self.batch_count = 0;
        if let Some(b) = &mut self.bulk {
            for (off, len) in self.pending_free.drain(..) {
                b.alloc.free(off, len).map_err(|e| {
                    Error::io(
                        format!("freeing bulk space of {}", b.region.path.display()),
                        std::io::Error::other(e),
                    )
                })?;
            }
        }
        self.pending_free.clear();
        Ok(())
    }

    // ------------------------------------------------------------ DTX

    /// Checks the ops' conditions, reserves their space, writes their bulk
    /// data and logs them as prepared: invisible until [`Vos::dtx_commit`].
    pub fn dtx_prepare(&mut self, id: DtxId, epoch: u64, ops: Vec<DtxOp>) -> Result<()> {
        self.check_ok()?;
        self.check_epoch(epoch)?;
        match self.dtx_state(id) {
            DtxState::Unknown => {}
            s => return Err(der(Der::EXIST, format!("dtx {id}: already {s:?}"))),
        }
        if ops.is_empty() {
            return Err(inval(format!("dtx {id}: no ops")));
        }
        let mut kinds = HashMap::new();
        for op in &ops {
            match op {
                DtxOp::Update {
                    oid,
                    dkey,
                    iods,
                    cond,
                    expect,
                } => {
                    check_update(dkey, iods, *cond)?;
                    if let Some((other, e)) = self.img.lock_conflict(*oid, Some(dkey), None) {
                        return Err(in_progress(*oid, dkey, other, e));
                    }
                    self.check_kinds(*oid, dkey, iods, &mut kinds)?;
                    self.check_update_cond(*oid, epoch, dkey, iods, *cond)?;
                    self.check_expect(*oid, epoch, dkey, expect)?;
                }
                DtxOp::Punch {
                    oid,
                    what,
                    cond,
                    expect,
                } => {
                    check_punch(what)?;
                    self.check_punch_locks(*oid, what)?;
                    self.check_punch_cond(*oid, epoch, what, *cond)?;
                    if !expect.is_empty() {
                        let dkey = match what {
                            Punch::Dkeys(ds) if ds.len() == 1 => &ds[0],
                            Punch::Akeys { dkey, .. } => dkey,
                            _ => {
                                return Err(inval(format!(
                                    "dtx {id}: expected values on a punch of other than one dkey"
                                )))
                            }
                        };
                        self.check_expect(*oid, epoch, dkey, expect)?;
                    }
                }
            }
        }
        // Space: the entry, plus the index growth its commit may cause.
        let mut bound = index::HIST_COST + 64;
        for op in &ops {
            bound += match op {
                DtxOp::Update { dkey, iods, .. } => {
                    2 * upper_update_bound(dkey, iods, self.bulk_thresh())
                }
                DtxOp::Punch { what, oid, .. } => {
                    2 * index::op_bound(&LOp::Punch {
                        oid: *oid,
                        what: what.clone(),
                    })
                }
            };
        }
        self.check_scm(bound, || format!("dtx {id}"))?;
        let mut resolved = Vec::with_capacity(ops.len());
        let mut placed = Vec::new();
        for op in ops {
            let r = match op {
                DtxOp::Update {
                    oid, dkey, iods, ..
                } => self.place_update(oid, &dkey, &iods, &mut placed),
                DtxOp::Punch { oid, what, .. } => Ok(LOp::Punch { oid, what }),
            };
            match r {
                Ok(op) => resolved.push(op),
                Err(e) => {
                    self.unplace(&placed);
                    return Err(e);
                }
            }
        }
        self.write_placed(&placed)?;
        self.commit(Mutation::DtxPrepare {
            id,
            epoch,
            ops: resolved,
        })?;
        Ok(())
    }

    /// Makes a prepared DTX's ops visible at its epoch. Committing a committed
    /// DTX succeeds again; an aborted or unknown one is `DER_NONEXIST`.
    pub fn dtx_commit(&mut self, id: DtxId) -> Result<()> {
        self.check_ok()?;
        match self.dtx_state(id) {
            DtxState::Prepared => {
                self.commit(Mutation::DtxCommit { id })?;
                Ok(())
            }
            DtxState::Committed => Ok(()),
            DtxState::Aborted => Err(der(
                Der::NONEXIST,
                format!("dtx {id}: aborted, cannot commit"),
            )),
            DtxState::Unknown => Err(der(Der::NONEXIST, format!("dtx {id}: not prepared here"))),
        }
    }

    /// Discards a prepared DTX and frees its space (bulk after the next
    /// flush). Aborting an aborted DTX succeeds again; a committed one is
    /// `DER_ALREADY`, an unknown one `DER_NONEXIST`.
    pub fn dtx_abort(&mut self, id: DtxId) -> Result<()> {
        self.check_ok()?;
        match self.dtx_state(id) {
            DtxState::Prepared => {
                self.commit(Mutation::DtxAbort { id })?;
                Ok(())
            }
            DtxState::Aborted => Ok(()),
            DtxState::Committed => Err(der(
                Der::ALREADY,
                format!("dtx {id}: committed, cannot abort"),
            )),
            DtxState::Unknown => Err(der(Der::NONEXIST, format!("dtx {id}: not prepared here"))),
        }
    }

    /// The prepared (in-doubt) DTXs, by id.
    pub fn dtx_prepared(&self) -> Vec<(DtxId, u64)> {
        self.img
            .prepared
            .iter()
            .map(|(id, p)| (*id, p.epoch))
            .collect()
    }

    pub fn dtx_state(&self, id: DtxId) -> DtxState {
        if self.img.prepared.contains_key(&id) {
            DtxState::Prepared
        } else {
            match self.img.hist_idx.get(&id) {
                Some((true, _)) => DtxState::Committed,
                Some((false, _)) => DtxState::Aborted,
                None => DtxState::Unknown,
            }
        }
    }

    // ------------------------------------------------------------ reads

    /// Reads `reqs` under `dkey` at `epoch`; answers are in request order.
    /// With [`Reach::Memory`], an answer that needs bulk bytes the page
    /// cache does not hold fails with [`Error::NeedsDevice`] instead of
    /// reading them from the device.
    pub fn fetch(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        reqs: &[FetchReq],
        cond: Cond,
        reach: Reach,
    ) -> Result<Vec<FetchOut>> {
        if let Some((id, e)) = self.img.lock_conflict(oid, Some(dkey), Some(epoch)) {
            return Err(in_progress(oid, dkey, id, e));
        }
        if cond.has(Cond::DKEY_FETCH) && !self.img.dkey_visible(oid, dkey, epoch) {
            return Err(nonexist_dkey(oid, dkey, epoch));
        }
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            let akey = match req {
                FetchReq::Single { akey } | FetchReq::Array { akey, .. } => akey,
            };
            if cond.has(Cond::AKEY_FETCH) && !self.img.akey_visible(oid, dkey, akey, epoch) {
                return Err(nonexist_akey(oid, dkey, akey, epoch));
            }
            out.push(match req {
                FetchReq::Single { akey } => {
                    FetchOut::Single(self.fetch_single(oid, epoch, dkey, akey, reach)?)
                }
                FetchReq::Array { akey, recxs } => {
                    self.fetch_array(oid, epoch, dkey, akey, recxs, reach)?
                }
            });
        }
        Ok(out)
    }

    fn fetch_single(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        akey: &[u8],
        reach: Reach,
    ) -> Result<Option<Bytes>> {
        let Some((a, p)) = self.img.akey_at(oid, dkey, akey, epoch) else {
            return Ok(None);
        };
        let p = index::punch_le(&a.punches, epoch).max(p);
        match &a.val {
            index::Val::Single(m) => match m.range(..=epoch).next_back() {
                Some((e, v)) if p.is_none_or(|p| *e > p) => Ok(Some(self.read_payload(v, reach)?)),
                _ => Ok(None),
            },
            index::Val::Array { exts, .. } if exts.is_empty() => Ok(None),
            index::Val::Array { .. } => Err(inval(format!(
                "object {oid} dkey {} akey {}: holds an array, fetched as a single value",
                show_key(dkey),
                show_key(akey)
            ))),
        }
    }

    fn fetch_array(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        akey: &[u8],
        recxs: &[Recx],
        reach: Reach,
    ) -> Result<FetchOut> {
        let none = FetchOut::Array {
            rec_size: 0,
            data: Bytes::new(),
            hi: 0,
        };
        let Some((a, p)) = self.img.akey_at(oid, dkey, akey, epoch) else {
            return Ok(none);
        };
        let p = index::punch_le(&a.punches, epoch).max(p);
        let (rec_size, exts) = match &a.val {
            index::Val::Array { rec_size, exts } => (*rec_size, exts),
            index::Val::Single(m) if m.is_empty() => return Ok(none),
            index::Val::Single(_) => {
                return Err(inval(format!(
                    "object {oid} dkey {} akey {}: holds a single value, fetched as an array",
                    show_key(dkey),
                    show_key(akey)
                )))
            }
        };
        let mut total = 0u64;
        for r in recxs {
            if r.nr == 0 || r.end().is_none() {
                return Err(inval(format!(
                    "fetch of akey {}: invalid recx {r:?}",
                    show_key(akey)
                )));
            }
            total = total.saturating_add(r.nr);
        }
        let paint = index::paint(exts, epoch, p);
        let has_data = |s: u64, e: u64| {
            paint
                .range(..e)
                .rev()
                .take_while(|(_, (pe, _))| *pe > s)
                .any(|(_, (_, i))| exts[*i].data.is_some())
        };
        if recxs.is_empty() {
            let any = paint.values().any(|(_, i)| exts[*i].data.is_some());
            return Ok(if any {
                FetchOut::Array {
                    rec_size,
                    data: Bytes::new(),
                    hi: 0,
                }
            } else {
                none
            });
        }
        if !recxs.iter().any(|r| has_data(r.idx, r.idx + r.nr)) {
            return Ok(none);
        }
        let rs = u64::from(rec_size);
        let bytes = total.saturating_mul(rs);
        if bytes > MAX_FETCH_BYTES {
            return Err(inval(format!(
                "fetch of akey {}: {bytes} bytes asked, at most {MAX_FETCH_BYTES} per fetch",
                show_key(akey)
            )));
        }
        let mut out = vec![0u8; bytes as usize];
        let mut base = 0u64;
        let mut hi = 0u64;
        for r in recxs {
            let (s, e) = (r.idx, r.idx + r.nr);
            let first = paint.range(..=s).next_back().map_or(s, |(k, _)| *k);
            for (&ps, &(pe, i)) in paint.range(first..e) {
                let x = &exts[i];
                let Some(payload) = &x.data else { continue };
                let (cs, ce) = (ps.max(s), pe.min(e));
                if cs >= ce {
                    continue;
                }
                let src = (cs - x.recx.idx) * rs;
                let dst = ((base + cs - s) * rs) as usize;
                let n = ((ce - cs) * rs) as usize;
                self.read_into(payload, src, &mut out[dst..dst + n], reach)?;
                hi = hi.max(ce);
            }
            base += r.nr;
        }
        Ok(FetchOut::Array {
            rec_size,
            data: Bytes::from(out),
            hi,
        })
    }

    fn read_payload(&self, p: &Payload, reach: Reach) -> Result<Bytes> {
        match p {
            Payload::Inline(b) => Ok(b.clone()),
            Payload::Bulk { len, .. } => {
                let mut v = vec![0u8; *len as usize];
                self.read_into(p, 0, &mut v, reach)?;
                Ok(Bytes::from(v))
            }
        }
    }

    /// Copies `out.len()` bytes from byte `off` of a payload.
    fn read_into(&self, p: &Payload, off: u64, out: &mut [u8], reach: Reach) -> Result<()> {
        match p {
            Payload::Inline(b) => {
                let s = off as usize;
                let src = b.get(s..s + out.len()).ok_or_else(|| {
                    der(
                        Der::IO,
                        format!(
                            "inline value of {} bytes read at {s}+{}",
                            b.len(),
                            out.len()
                        ),
                    )
                })?;
                out.copy_from_slice(src);
                Ok(())
            }
            Payload::Bulk { off: boff, .. } => {
                let b = self.bulk.as_ref().ok_or_else(|| {
                    der(
                        Der::IO,
                        "a value lives in the bulk tier but no bulk region is configured",
                    )
                })?;
                let at = b.region.offset + boff + off;
                if reach == Reach::Memory {
                    return read_cached(&b.file, out, at);
                }
                b.file.read_exact_at(out, at).map_err(|e| {
                    Error::io(
                        format!("reading bulk device {} at {at}", b.region.path.display()),
                        e,
                    )
                })
            }
        }
    }

    /// Lists the objects of container `cont` with something visible at
    /// `epoch`, in id order, at most `max` per call. Prepared DTXs are not
    /// considered.
    pub fn list_objects(
        &self,
        cont: u128,
        epoch: u64,
        anchor: &Anchor,
        max: usize,
    ) -> Result<(Vec<Oid>, Anchor)> {
        check_max(max)?;
        if anchor.eof {
            return Ok((Vec::new(), anchor.clone()));
        }
        let start = match &anchor.after {
            None => None,
            Some(k) => {
                let b: [u8; 16] = k.as_slice().try_into().map_err(|_| {
                    inval(format!(
                        "object enumeration anchor of {} bytes, not 16",
                        k.len()
                    ))
                })?;
                Some(Oid::from_obj_key(cont, b))
            }
        };
        let end = std::ops::Bound::Included(Oid::new(cont, u64::MAX, u64::MAX));
        let iter = match start {
            None => self.img.cont_range(cont),
            Some(s) => self.img.objs.range((std::ops::Bound::Excluded(s), end)),
        };
        let mut out = Vec::new();
        for (oid, o) in iter {
            if Image::obj_visible_in(o, epoch) {
                out.push(*oid);
                if out.len() == max {
                    return Ok((
                        out,
                        Anchor {
                            after: Some(oid.obj_key().to_vec()),
                            eof: false,
                        },
                    ));
                }
            }
        }
        Ok((out, eof_anchor(anchor)))
    }

    /// Lists the visible dkeys of an object at `epoch`, in byte order.
    pub fn list_dkeys(
        &self,
        oid: Oid,
        epoch: u64,
        anchor: &Anchor,
        max: usize,
    ) -> Result<(Vec<Vec<u8>>, Anchor)> {
        check_max(max)?;
        if let Some((id, e)) = self.img.lock_conflict(oid, None, Some(epoch)) {
            return Err(in_progress(oid, b"", id, e));
        }
        let Some(o) = self.img.objs.get(&oid) else {
            return Ok((Vec::new(), eof_anchor(anchor)));
        };
        list_keys(&o.dkeys, anchor, max, |d| {
            Image::dkey_visible_in(o, d, epoch)
        })
    }

    /// Lists the visible akeys of a dkey at `epoch`, in byte order.
    pub fn list_akeys(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        anchor: &Anchor,
        max: usize,
    ) -> Result<(Vec<Vec<u8>>, Anchor)> {
        let mut keys = Vec::new();
        let next = self.walk_akeys(oid, epoch, dkey, anchor, max, |k| keys.push(k.to_vec()))?;
        Ok((keys, next))
    }

    /// Counts the visible akeys of a dkey at `epoch` (at most `max` from the
    /// anchor), copying none.
    pub fn count_akeys(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        anchor: &Anchor,
        max: usize,
    ) -> Result<(u64, Anchor)> {
        let mut n = 0;
        let next = self.walk_akeys(oid, epoch, dkey, anchor, max, |_| n += 1)?;
        Ok((n, next))
    }

    fn walk_akeys(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        anchor: &Anchor,
        max: usize,
        take: impl FnMut(&[u8]),
    ) -> Result<Anchor> {
        check_max(max)?;
        if let Some((id, e)) = self.img.lock_conflict(oid, Some(dkey), Some(epoch)) {
            return Err(in_progress(oid, dkey, id, e));
        }
        let Some((o, d)) = self
            .img
            .objs
            .get(&oid)
            .and_then(|o| o.dkeys.get(dkey).map(|d| (o, d)))
        else {
            return Ok(eof_anchor(anchor));
        };
        let p = index::punch_le(&o.punches, epoch).max(index::punch_le(&d.punches, epoch));
        walk_keys(
            &d.akeys,
            anchor,
            max,
            |a| Image::akey_visible_in(a, epoch, p),
            take,
        )
    }

    /// Lists the visible record ranges of an array akey at `epoch`, in index
    /// order: each entry is a maximal run of records whose newest visible
    /// write has the same epoch (given with the run, with the akey's record
    /// size). Punched records and holes are skipped. The anchor is
    /// the end of the last range returned, so a resumed listing starts there
    /// even if extents changed in between.
    pub fn list_recxs(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        akey: &[u8],
        anchor: &Anchor,
        max: usize,
    ) -> Result<(Vec<RecxEntry>, Anchor)> {
        check_max(max)?;
        if anchor.eof {
            return Ok((Vec::new(), anchor.clone()));
        }
        if let Some((id, e)) = self.img.lock_conflict(oid, Some(dkey), Some(epoch)) {
            return Err(in_progress(oid, dkey, id, e));
        }
        let from = match &anchor.after {
            None => 0,
            Some(k) => {
                let b: [u8; 8] = k.as_slice().try_into().map_err(|_| {
                    inval(format!(
                        "recx enumeration anchor of {} bytes, not 8",
                        k.len()
                    ))
                })?;
                u64::from_be_bytes(b)
            }
        };
        let Some((a, p)) = self.img.akey_at(oid, dkey, akey, epoch) else {
            return Ok((Vec::new(), eof_anchor(anchor)));
        };
        let p = index::punch_le(&a.punches, epoch).max(p);
        let index::Val::Array { rec_size, exts } = &a.val else {
            return Ok((Vec::new(), eof_anchor(anchor)));
        };
        let paint = index::paint(exts, epoch, p);
        let first = paint.range(..=from).next_back().map_or(from, |(k, _)| *k);
        let mut out: Vec<RecxEntry> = Vec::new();
        for (&s, &(e, i)) in paint.range(first..) {
            let x = &exts[i];
            if x.data.is_none() || e <= from {
                continue;
            }
            let s = s.max(from);
            if let Some(last) = out.last_mut() {
                if last.recx.idx + last.recx.nr == s && last.epoch == x.epoch {
                    last.recx.nr = e - last.recx.idx;
                    continue;
                }
            }
            if out.len() == max {
                let end = out.last().map_or(from, |l| l.recx.idx + l.recx.nr);
                return Ok((
                    out,
                    Anchor {
                        after: Some(end.to_be_bytes().to_vec()),
                        eof: false,
                    },
                ));
            }
            out.push(RecxEntry {
                recx: Recx::new(s, e - s),
                epoch: x.epoch,
                rec_size: *rec_size,
            });
        }
        Ok((out, eof_anchor(anchor)))
    }

    /// The largest visible dkey of an object at `epoch` (or `dkey` itself,
    /// when given and visible); with `akey`, the largest dkey under which
    /// that akey is visible, and for an array akey one past its highest
    /// visible record there (what an array's size needs). `None` if nothing
    /// matches.
    pub fn query_max(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: Option<&[u8]>,
        akey: Option<&[u8]>,
    ) -> Result<Option<QueryMax>> {
        if let Some((id, e)) = self.img.lock_conflict(oid, dkey, Some(epoch)) {
            return Err(in_progress(oid, dkey.unwrap_or(b""), id, e));
        }
        let Some(o) = self.img.objs.get(&oid) else {
            return Ok(None);
        };
        let candidates: Box<dyn Iterator<Item = (&Vec<u8>, &index::Dkey)>> = match dkey {
            Some(k) => Box::new(o.dkeys.get_key_value(k).into_iter()),
            None => Box::new(o.dkeys.iter().rev()),
        };
        for (dk, d) in candidates {
            let p = index::punch_le(&o.punches, epoch).max(index::punch_le(&d.punches, epoch));
            match akey {
                None => {
                    if d.akeys
                        .values()
                        .any(|a| Image::akey_visible_in(a, epoch, p))
                    {
                        return Ok(Some(QueryMax {
                            dkey: dk.clone(),
                            recx_end: None,
                        }));
                    }
                }
                Some(ak) => {
                    let Some(a) = d.akeys.get(ak) else { continue };
                    if !Image::akey_visible_in(a, epoch, p) {
                        continue;
                    }
                    let recx_end = match &a.val {
                        index::Val::Single(_) => None,
                        index::Val::Array { exts, .. } => {
                            let ap = index::punch_le(&a.punches, epoch).max(p);
                            index::paint(exts, epoch, ap)
                                .values()
                                .rev()
                                .find(|(_, i)| exts[*i].data.is_some())
                                .map(|(e, _)| *e)
                        }
                    };
                    return Ok(Some(QueryMax {
                        dkey: dk.clone(),
                        recx_end,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// [`Vos::query_max`] of the whole object, and beside it the newest
    /// epoch at or below `epoch` at which `oid` changed on this target (with
    /// `akey`: its values under that akey), 0 if never: DAOS's `max_epoch`
    /// of a key query, which dfs shows as a file's mtime. The object's locks
    /// are checked once for both.
    pub fn query_max_and_epoch(
        &self,
        oid: Oid,
        epoch: u64,
        akey: Option<&[u8]>,
    ) -> Result<(Option<QueryMax>, u64)> {
        let q = self.query_max(oid, epoch, None, akey)?;
        Ok((q, self.img.max_epoch(oid, epoch, akey)))
    }

    /// Space use; see [`VosSpace`].
    pub fn space(&self) -> VosSpace {
        VosSpace {
            scm_total: self.image_limit,
            scm_used: self.img.bytes + self.img.reserved,
            bulk_total: self.bulk.as_ref().map_or(0, |b| b.alloc.total_bytes()),
            bulk_used: self.bulk.as_ref().map_or(0, |b| b.alloc.used_bytes()),
        }
    }

    pub fn stats(&self) -> VosStats {
        VosStats {
            log_bytes: self.log.len,
            pending_bytes: self.batch.len() as u64,
            checkpoints: self.checkpoints,
            agg_boundary: self.img.boundary,
            bulk_syncs: self.bulk_syncs,
        }
    }

    /// The snapshots currently pinned in container `cont`.
    pub fn snapshots(&self, cont: u128) -> &[u64] {
        self.img.snapshots.get(&cont).map_or(&[], Vec::as_slice)
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &VosConfig {
        &self.cfg
    }

    // ------------------------------------------------------------ helpers

    fn check_ok(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(der(
                Der::IO,
                format!(
                    "VOS {} refuses writes after a failed write ({why}); reopen it",
                    self.cfg.dir.display()
                ),
            )),
        }
    }

    fn check_epoch(&self, epoch: u64) -> Result<()> {
        if epoch < self.img.boundary {
            return Err(der(
                Der::AGAIN,
                format!(
                    "epoch {epoch} is below the aggregated epoch {}: restart with a newer epoch",
                    self.img.boundary
                ),
            ));
        }
        Ok(())
    }

    fn check_scm(&self, grow: u64, what: impl FnOnce() -> String) -> Result<()> {
        let used = self.img.bytes + self.img.reserved;
        if used.saturating_add(grow) > self.image_limit {
            return Err(der(
                Der::NOSPACE,
                format!(
                    "VOS {}: {} needs up to {grow} bytes of SCM, {used} of {} used",
                    self.cfg.dir.display(),
                    what(),
                    self.image_limit
                ),
            ));
        }
        Ok(())
    }

    fn check_kinds(
        &self,
        oid: Oid,
        dkey: &[u8],
        iods: &[Iod],
        kinds: &mut HashMap<(Oid, Vec<u8>, Vec<u8>), Kind>,
    ) -> Result<()> {
        for iod in iods {
            let k = (oid, dkey.to_vec(), iod.akey.clone());
            let cur = match kinds.get(&k) {
                Some(c) => *c,
                None => self.img.akey_kind(oid, dkey, &iod.akey),
            };
            let shape = match &iod.value {
                IodValue::Single(_) => LValShape::Single,
                IodValue::Array { rec_size, .. } => LValShape::Array(*rec_size),
                IodValue::ArrayPunch { .. } => LValShape::ArrayPunch,
            };
            let nk = index::next_kind(cur, &shape).map_err(|why| {
                inval(format!(
                    "object {oid} dkey {} akey {}: {why}",
                    show_key(dkey),
                    show_key(&iod.akey)
                ))
            })?;
            kinds.insert(k, nk);
        }
        Ok(())
    }

    fn check_update_cond(
        &self,
        oid: Oid,
        epoch: u64,
        dkey: &[u8],
        iods: &[Iod],
        cond: Cond,
    ) -> Result<()> {
        if cond.has(Cond::DKEY_INSERT) && self.img.dkey_visible(oid, dkey, epoch) {
            return Err(der(
                Der::EXIST,
                format!(
                    "object {oid} dkey {}: exists at epoch {epoch}",
                    show_key(dkey)
                ),
            ));
        }
        if cond.has(Cond::DKEY_UPDATE) && !self.img.dkey_visible(oid, dkey, epoch) {
            return Err(nonexist_dkey(oid, dkey, epoch));
        }
        for iod in iods {
            let vis = || self.img.akey_visible(oid, dkey, &iod.akey, epoch);
            if cond.has(Cond::AKEY_INSERT) && vis() {
                return Err(der(
                    Der::EXIST,
                    format!(
                        "object {oid} dkey {} akey {}: exists at epoch {epoch}",
                        show_key(dkey),
                        show_key(&iod.akey)
                    ),
                ));
            }
            if cond.has(Cond::AKEY_UPDATE) && !vis() {
                return Err(nonexist_akey(oid, dkey, &iod.akey, epoch));
            }
        }
        Ok(())
    }

    /// `DER_MISMATCH` unless every expectation holds at `epoch`. The values
    /// compared are read with device reach: those under `data_thresh` (dfs's
    /// inode records) live in SCM, but a larger one may wait on the bulk
    /// device, even where the prepare runs in place on the network thread.
    fn check_expect(&self, oid: Oid, epoch: u64, dkey: &[u8], expect: &[Expect]) -> Result<()> {
        for x in expect {
            let v = self.fetch_single(oid, epoch, dkey, &x.akey, Reach::Device)?;
            let at = x.offset as usize;
            let holds = v.as_ref().is_some_and(|v| {
                v.get(at..at.saturating_add(x.value.len())) == Some(x.value.as_slice())
            });
            if !holds {
                return Err(der(
                    Der::MISMATCH,
                    format!(
                        "object {oid} dkey {} akey {}: not the value expected at epoch {epoch}",
                        show_key(dkey),
                        show_key(&x.akey)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_punch_locks(&self, oid: Oid, what: &Punch) -> Result<()> {
        let conflict = |dkey: Option<&[u8]>| self.img.lock_conflict(oid, dkey, None);
        let hit = match what {
            Punch::Object => conflict(None).map(|c| (c, Vec::new())),
            Punch::Dkeys(ds) => ds
                .iter()
                .find_map(|d| conflict(Some(d)).map(|c| (c, d.clone()))),
            Punch::Akeys { dkey, .. } => conflict(Some(dkey)).map(|c| (c, dkey.clone())),
        };
        match hit {
            Some(((id, e), dkey)) => Err(in_progress(oid, &dkey, id, e)),
            None => Ok(()),
        }
    }

    fn check_punch_cond(&self, oid: Oid, epoch: u64, what: &Punch, cond: Cond) -> Result<()> {
        let dk = cond.has(Cond::DKEY_PUNCH);
        let ak = cond.has(Cond::AKEY_PUNCH);
        match what {
            Punch::Object => {
                if (dk || ak) && !self.img.obj_visible(oid, epoch) {
                    return Err(der(
                        Der::NONEXIST,
                        format!("object {oid}: nothing to punch at epoch {epoch}"),
                    ));
                }
            }
            Punch::Dkeys(ds) => {
                if dk {
                    if let Some(d) = ds.iter().find(|d| !self.img.dkey_visible(oid, d, epoch)) {
                        return Err(nonexist_dkey(oid, d, epoch));
                    }
                }
            }
            Punch::Akeys { dkey, akeys } => {
                if dk && !self.img.dkey_visible(oid, dkey, epoch) {
                    return Err(nonexist_dkey(oid, dkey, epoch));
                }
                if ak {
                    if let Some(a) = akeys
                        .iter()
                        .find(|a| !self.img.akey_visible(oid, dkey, a, epoch))
                    {
                        return Err(nonexist_akey(oid, dkey, a, epoch));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks space, places bulk values and writes them: the resolved op.
    fn resolve_update(&mut self, oid: Oid, dkey: &[u8], iods: &[Iod]) -> Result<LOp> {
        self.check_scm(upper_update_bound(dkey, iods, self.bulk_thresh()), || {
            format!("update of object {oid} dkey {}", show_key(dkey))
        })?;
        let mut placed = Vec::new();
        let op = match self.place_update(oid, dkey, iods, &mut placed) {
            Ok(op) => op,
            Err(e) => {
                self.unplace(&placed);
                return Err(e);
            }
        };
        self.write_placed(&placed)?;
        Ok(op)
    }

    /// Builds the resolved op, allocating bulk space for big values; the
    /// allocations are pushed on `placed` (with their data) to be written.
    fn place_update(
        &mut self,
        oid: Oid,
        dkey: &[u8],
        iods: &[Iod],
        placed: &mut Vec<(u64, Bytes)>,
    ) -> Result<LOp> {
        let mut out = Vec::with_capacity(iods.len());
        for iod in iods {
            let val = match &iod.value {
                IodValue::Single(b) => LVal::Single(self.place(b.clone(), placed)?),
                IodValue::Array {
                    rec_size,
                    recxs,
                    data,
                } => {
                    let rs = *rec_size as usize;
                    let mut exts = Vec::with_capacity(recxs.len());
                    let mut pos = 0usize;
                    for r in recxs {
                        let n = r.nr as usize * rs;
                        exts.push((*r, self.place(data.slice(pos..pos + n), placed)?));
                        pos += n;
                    }
                    LVal::Array {
                        rec_size: *rec_size,
                        exts,
                    }
                }
                IodValue::ArrayPunch { recxs } => LVal::ArrayPunch(recxs.clone()),
            };
            out.push(LIod {
                akey: iod.akey.clone(),
                val,
            });
        }
        Ok(LOp::Update {
            oid,
            dkey: dkey.to_vec(),
            iods: out,
        })
    }

    fn place(&mut self, b: Bytes, placed: &mut Vec<(u64, Bytes)>) -> Result<Payload> {
        match &mut self.bulk {
            Some(bulk) if b.len() as u64 >= self.cfg.data_thresh => {
                let off = bulk.alloc.alloc(b.len() as u64).ok_or_else(|| {
                    der(
                        Der::NOSPACE,
                        format!(
                            "bulk region of {}: no room for {} bytes ({} of {} used)",
                            bulk.region.path.display(),
                            b.len(),
                            bulk.alloc.used_bytes(),
                            bulk.alloc.total_bytes()
                        ),
                    )
                })?;
                let len = b.len() as u64;
                placed.push((off, b));
                Ok(Payload::Bulk { off, len })
            }
            // Copy, so a small value does not pin the whole network frame it came in.
            _ => Ok(Payload::Inline(Bytes::copy_from_slice(&b))),
        }
    }

    /// Releases allocations that were never referenced by a logged mutation.
    fn unplace(&mut self, placed: &[(u64, Bytes)]) {
        if let Some(bulk) = &mut self.bulk {
            for (off, b) in placed {
                if let Err(e) = bulk.alloc.free(*off, b.len() as u64) {
                    tracing::warn!("releasing an unused bulk allocation: {e}");
                }
            }
        }
    }

    fn write_placed(&mut self, placed: &[(u64, Bytes)]) -> Result<()> {
        if placed.is_empty() {
            return Ok(());
        }
        let Some(bulk) = &mut self.bulk else {
            return Ok(());
        };
        for (off, b) in placed {
            let at = bulk.region.offset + off;
            if let Err(e) = bulk.file.write_all_at(b, at) {
                let err = Error::io(
                    format!("writing bulk device {} at {at}", bulk.region.path.display()),
                    e,
                );
                tracing::error!(dir = %self.cfg.dir.display(), "VOS bulk write failed, refusing further writes: {err}");
                self.failed = Some(err.to_string());
                return Err(err);
            }
        }
        bulk.dirty = true;
        Ok(())
    }

    /// Applies a checked mutation to the image and queues it for the next flush.
    fn commit(&mut self, m: Mutation) -> Result<Option<AggStats>> {
        let mut freed = Vec::new();
        let r = self.img.apply(&m, &mut freed);
        match r {
            Ok(st) => {
                layout::encode_mutation(&mut self.batch, &m);
                self.batch_count += 1;
                self.pending_free.extend(freed);
                Ok(st)
            }
            Err(msg) => {
                // Checked before applying, so this is a bug; the image may be
                // half-changed, so stop taking writes.
                let e = der(
                    Der::IO,
                    format!(
                        "VOS {}: internal error applying a mutation: {msg}",
                        self.cfg.dir.display()
                    ),
                );
                tracing::error!("{e}");
                self.failed = Some(msg);
                Err(e)
            }
        }
    }
}

/// Upper bound of the image growth of an update, before values are placed
/// (`bulk_thresh`: the size from which values go to the bulk tier, if any).
fn upper_update_bound(dkey: &[u8], iods: &[Iod], bulk_thresh: Option<u64>) -> u64 {
    let sized = |n: u64| {
        if bulk_thresh.is_some_and(|t| n >= t) {
            None
        } else {
            Some(n)
        }
    };
    let shapes = iods.iter().map(|iod| {
        let v = match &iod.value {
            IodValue::Single(b) => index::BoundVal::Single(sized(b.len() as u64)),
            IodValue::Array {
                rec_size, recxs, ..
            } => index::BoundVal::Array(
                recxs
                    .iter()
                    .map(|r| sized(r.nr.saturating_mul(u64::from(*rec_size))))
                    .collect(),
            ),
            IodValue::ArrayPunch { recxs } => index::BoundVal::Punch(recxs.len()),
        };
        (iod.akey.len(), v)
    });
    index::update_bound(dkey.len(), shapes)
}

fn check_key(what: &str, k: &[u8]) -> Result<()> {
    if k.is_empty() {
        return Err(inval(format!("empty {what}")));
    }
    if k.len() > u32::MAX as usize {
        return Err(inval(format!("{what} of {} bytes", k.len())));
    }
    Ok(())
}

fn check_recxs(akey: &[u8], recxs: &[Recx]) -> Result<u64> {
    let mut total = 0u64;
    for r in recxs {
        if r.nr == 0 || r.end().is_none() {
            return Err(inval(format!(
                "akey {}: invalid recx {r:?}",
                show_key(akey)
            )));
        }
        total = total.saturating_add(r.nr);
    }
    Ok(total)
}

fn check_update(dkey: &[u8], iods: &[Iod], cond: Cond) -> Result<()> {
    check_key("dkey", dkey)?;
    if iods.is_empty() {
        return Err(inval(format!("update of dkey {}: no iods", show_key(dkey))));
    }
    if cond.0 & !Cond::MASK != 0 {
        return Err(inval(format!("unknown condition flags {:#x}", cond.0)));
    }
    if cond.has(Cond::DKEY_INSERT) && cond.has(Cond::DKEY_UPDATE) {
        return Err(inval("conditions DKEY_INSERT and DKEY_UPDATE together"));
    }
    if cond.has(Cond::AKEY_INSERT) && cond.has(Cond::AKEY_UPDATE) {
        return Err(inval("conditions AKEY_INSERT and AKEY_UPDATE together"));
    }
    for iod in iods {
        check_key("akey", &iod.akey)?;
        match &iod.value {
            IodValue::Single(b) => {
                if b.len() > u32::MAX as usize {
                    return Err(inval(format!(
                        "akey {}: value of {} bytes",
                        show_key(&iod.akey),
                        b.len()
                    )));
                }
            }
            IodValue::Array {
                rec_size,
                recxs,
                data,
            } => {
                if *rec_size == 0 {
                    return Err(inval(format!(
                        "akey {}: record size 0",
                        show_key(&iod.akey)
                    )));
                }
                if recxs.is_empty() {
                    return Err(inval(format!(
                        "akey {}: array update without recxs",
                        show_key(&iod.akey)
                    )));
                }
                let total = check_recxs(&iod.akey, recxs)?;
                let want = total.checked_mul(u64::from(*rec_size));
                if want != Some(data.len() as u64) {
                    return Err(inval(format!(
                        "akey {}: {} bytes of data for {total} records of {rec_size} bytes",
                        show_key(&iod.akey),
                        data.len()
                    )));
                }
                if recxs
                    .iter()
                    .any(|r| r.nr * u64::from(*rec_size) > u64::from(u32::MAX))
                {
                    return Err(inval(format!(
                        "akey {}: an extent over 4 GiB",
                        show_key(&iod.akey)
                    )));
                }
            }
            IodValue::ArrayPunch { recxs } => {
                if recxs.is_empty() {
                    return Err(inval(format!(
                        "akey {}: extent punch without recxs",
                        show_key(&iod.akey)
                    )));
                }
                check_recxs(&iod.akey, recxs)?;
            }
        }
    }
    Ok(())
}

fn check_punch(what: &Punch) -> Result<()> {
    match what {
        Punch::Object => Ok(()),
        Punch::Dkeys(ds) => {
            if ds.is_empty() {
                return Err(inval("punch of no dkeys"));
            }
            ds.iter().try_for_each(|d| check_key("dkey", d))
        }
        Punch::Akeys { dkey, akeys } => {
            check_key("dkey", dkey)?;
            if akeys.is_empty() {
                return Err(inval(format!(
                    "punch of no akeys under dkey {}",
                    show_key(dkey)
                )));
            }
            akeys.iter().try_for_each(|a| check_key("akey", a))
        }
    }
}

fn check_max(max: usize) -> Result<()> {
    if max == 0 {
        return Err(inval("enumeration with max 0"));
    }
    Ok(())
}

fn eof_anchor(a: &Anchor) -> Anchor {
    Anchor {
        after: a.after.clone(),
        eof: true,
    }
}

/// Lists keys of `m` after the anchor for which `visible` holds.
fn list_keys<V>(
    m: &std::collections::BTreeMap<Vec<u8>, V>,
    anchor: &Anchor,
    max: usize,
    visible: impl Fn(&V) -> bool,
) -> Result<(Vec<Vec<u8>>, Anchor)> {
    let mut out = Vec::new();
    let next = walk_keys(m, anchor, max, visible, |k| out.push(k.to_vec()))?;
    Ok((out, next))
}

/// Hands `take` up to `max` keys of `m` after the anchor for which `visible`
/// holds; the anchor after them.
fn walk_keys<V>(
    m: &std::collections::BTreeMap<Vec<u8>, V>,
    anchor: &Anchor,
    max: usize,
    visible: impl Fn(&V) -> bool,
    mut take: impl FnMut(&[u8]),
) -> Result<Anchor> {
    if anchor.eof {
        return Ok(anchor.clone());
    }
    let iter: Box<dyn Iterator<Item = (&Vec<u8>, &V)>> = match &anchor.after {
        None => Box::new(m.iter()),
        Some(k) => Box::new(m.range::<[u8], _>((
            std::ops::Bound::Excluded(k.as_slice()),
            std::ops::Bound::Unbounded,
        ))),
    };
    let mut n = 0;
    for (k, v) in iter {
        if visible(v) {
            take(k);
            n += 1;
            if n == max {
                return Ok(Anchor {
                    after: Some(k.clone()),
                    eof: false,
                });
            }
        }
    }
    Ok(eof_anchor(anchor))
}

fn in_progress(oid: Oid, dkey: &[u8], id: DtxId, epoch: u64) -> Error {
    der(
        Der::INPROGRESS,
        format!(
            "object {oid} dkey {}: dtx {id} at epoch {epoch} is prepared, retry",
            show_key(dkey)
        ),
    )
}

fn nonexist_dkey(oid: Oid, dkey: &[u8], epoch: u64) -> Error {
    der(
        Der::NONEXIST,
        format!(
            "object {oid} dkey {}: not found at epoch {epoch}",
            show_key(dkey)
        ),
    )
}

fn nonexist_akey(oid: Oid, dkey: &[u8], akey: &[u8], epoch: u64) -> Error {
    der(
        Der::NONEXIST,
        format!(
            "object {oid} dkey {} akey {}: not found at epoch {epoch}",
            show_key(dkey),
            show_key(akey)
        ),
    )
}

/// Fills `out` from byte `at` of `file` only if the kernel's page cache holds
/// all of it (`preadv2` with `RWF_NOWAIT`); anything else (a page not cached,
/// a short read, a kernel or filesystem without the flag) is
/// [`Error::NeedsDevice`], and the blocking read on the target's thread
/// reports real I/O errors.
fn read_cached(file: &std::fs::File, out: &mut [u8], at: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(at) = libc::off_t::try_from(at) else {
        return Err(Error::NeedsDevice);
    };
    let iov = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    // SAFETY: the iovec points at `out`, which is valid for writes of its
    // length for the whole call; the descriptor is owned by `file`.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    if usize::try_from(n).is_ok_and(|n| n == out.len()) {
        Ok(())
    } else {
        Err(Error::NeedsDevice)
    }
}
