//! The engine's control operations: pool shards and space, as daos_server asks.
//!
//! Every operation runs on a blocking thread under the `storage` lock, so two
//! creates never race for the same space and no file I/O runs on the tokio
//! runtime. If writing or syncing metadata ever fails, the engine stops taking
//! changes until it is restarted (and replays what is on disk): a failed fsync
//! leaves the on-disk state unknown, and retrying could acknowledge a lie.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use prost::Message;

use proto::srv::{PoolShardInfo, TargetSpace, TierSpace};
use proto::{DaosError, Der};

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::storage::{
    pool_dir, vos_path, ShardRec, Storage, SvcRec, TargetShard, EXTENT_ALIGN, SCM_ALIGN,
    SHARD_VERSION,
};
use crate::targets::{Targets, TgtState};
use crate::vos::{BulkRegion, VosConfig};

pub struct Engine {
    storage: Mutex<Storage>,
    targets: Targets,
    failed: AtomicBool,
    hlc: Hlc,
    /// This engine's rank, once the system gave it one.
    rank: AtomicU32,
    /// Data-plane connections to other engines.
    clients: cart::Clients,
    /// Per pool: rank -> data-plane URI, from the pool map.
    uris: RwLock<BTreeMap<String, BTreeMap<u32, String>>>,
    pub(crate) svcs: crate::pool_svc::Services,
    verifier: crate::auth::Verifier,
}

const NO_RANK: u32 = u32::MAX;

/// Versions older than this (and not in a snapshot) are reclaimed.
const AGGREGATE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// rank -> URI of an encoded pool map; empty if it does not decode.
fn map_uris(map: &[u8]) -> BTreeMap<u32, String> {
    proto::pool::PoolMap::decode(map)
        .map(|m| m.ranks.into_iter().map(|r| (r.rank, r.uri)).collect())
        .unwrap_or_default()
}

/// Tier totals and reservations, as STORAGE_QUERY reports them.
pub struct Space {
    pub scm: TierSpace,
    pub nvme: TierSpace,
    pub pools: Vec<PoolShardInfo>,
}

impl Engine {
    pub fn new(storage: Storage, targets: Targets, verifier: crate::auth::Verifier) -> Arc<Self> {
        let uris = storage
            .shards
            .values()
            .filter_map(|r| Some((r.pool_uuid.clone(), map_uris(&r.svc.as_ref()?.map))))
            .collect();
        Arc::new(Engine {
            storage: Mutex::new(storage),
            targets,
            failed: AtomicBool::new(false),
            hlc: Hlc::default(),
            rank: AtomicU32::new(NO_RANK),
            clients: cart::Clients::new(cart::ClientOpts::default()),
            uris: RwLock::new(uris),
            svcs: Default::default(),
            verifier,
        })
    }

    pub fn verifier(&self) -> &crate::auth::Verifier {
        &self.verifier
    }

    /// The SCM mount this engine owns.
    pub fn scm_mount(&self) -> std::path::PathBuf {
        self.lock().scm_mount.clone()
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    pub fn clients(&self) -> &cart::Clients {
        &self.clients
    }

    /// An epoch for a write: `asked` if the caller chose one, else a fresh one.
    pub fn epoch(&self, asked: u64) -> u64 {
        if asked == 0 {
            self.hlc.now()
        } else {
            self.hlc.observe(asked);
            asked
        }
    }

    /// Records the rank the system gave this engine.
    pub fn set_rank(&self, rank: u32) {
        self.rank.store(rank, Ordering::Release);
    }

    /// This engine's rank; `DER_AGAIN` until it has joined.
    pub fn rank(&self) -> Result<u32> {
        match self.rank.load(Ordering::Acquire) {
            NO_RANK => {
                Err(DaosError::new(Der::AGAIN, "this engine has not joined the system yet").into())
            }
            r => Ok(r),
        }
    }

    /// The data-plane URI of `rank` in `pool`'s map.
    pub fn rank_uri(&self, pool: &str, rank: u32) -> Result<String> {
        let g = match self.uris.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.get(pool)
            .and_then(|m| m.get(&rank))
            .cloned()
            .ok_or_else(|| {
                DaosError::new(
                    Der::UNREACH,
                    format!("pool {pool}: rank {rank} is not in the pool map this engine has"),
                )
                .into()
            })
    }

    /// The shard record of `pool`, if this engine holds one.
    pub fn shard(&self, pool: &str) -> Option<ShardRec> {
        self.lock().shards.get(pool).cloned()
    }

    /// Every shard record.
    pub fn shards(&self) -> Vec<ShardRec> {
        self.lock().shards.values().cloned().collect()
    }

    /// Reclaims versions no reader can see: older than ten seconds and not pinned
    /// by a snapshot, on every target.
    pub async fn aggregate(&self) {
        let upto = self
            .hlc
            .now()
            .saturating_sub(AGGREGATE_AFTER.as_nanos() as u64);
        for tgt in 0..self.targets.len() {
            let r = self
                .targets
                .run(tgt, move |ts| {
                    for (pool, v) in ts.pools() {
                        match v.aggregate(upto) {
                            Ok(s) if s.versions_removed + s.keys_removed > 0 => {
                                tracing::debug!(pool = %pool, tgt, removed = s.versions_removed, scm_freed = s.scm_freed, bulk_freed = s.bulk_freed, "aggregated")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(pool = %pool, tgt, "aggregation: {e}"),
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(tgt, "aggregation not run: {e}");
            }
        }
    }

    /// Every prepared DTX on every target: (pool, target, id, epoch).
    pub async fn prepared_dtxs(&self) -> Vec<(String, u32, crate::vos::DtxId, u64)> {
        let mut out = Vec::new();
        for tgt in 0..self.targets.len() {
            let r = self
                .targets
                .run(tgt, move |ts| {
                    Ok(ts
                        .pools()
                        .flat_map(|(p, v)| {
                            v.dtx_prepared()
                                .into_iter()
                                .map(|(id, ep)| (p.clone(), tgt, id, ep))
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>())
                })
                .await;
            if let Ok(v) = r {
                out.extend(v);
            }
        }
        out
    }

    pub fn into_targets(self) -> Targets {
        self.targets
    }

    fn lock(&self) -> MutexGuard<'_, Storage> {
        match self.storage.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs `f` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| Error::io("engine task", std::io::Error::other(e.to_string())))?
    }

    fn check_writable(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(DaosError::new(
                Der::IO,
                "storage failed earlier on this engine; restart it to recover",
            )
            .into());
        }
        Ok(())
    }

    /// Latches the failure of a metadata write: no more changes until restart.
    fn latch<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::Io { what, source }) = &r {
            tracing::error!("{what}: {source}; refusing further changes until the engine restarts");
            self.failed.store(true, Ordering::Release);
        }
        r
    }

    /// Reserves `scm_bytes` and `nvme_bytes` for a pool, split evenly over the targets.
    /// Repeating a create that already succeeded with the same sizes succeeds.
    pub async fn pool_create(
        self: &Arc<Self>,
        uuid: String,
        scm_bytes: u64,
        nvme_bytes: u64,
        svc: Option<SvcRec>,
    ) -> Result<()> {
        self.blocking(move |e| e.pool_create_sync(&uuid, scm_bytes, nvme_bytes, svc))
            .await
    }

    fn pool_create_sync(
        &self,
        uuid: &str,
        scm_bytes: u64,
        nvme_bytes: u64,
        svc: Option<SvcRec>,
    ) -> Result<()> {
        self.check_writable()?;
        if uuid::Uuid::parse_str(uuid).is_err() {
            return Err(
                DaosError::new(Der::INVAL, format!("pool uuid {uuid:?} is not a UUID")).into(),
            );
        }
        let mut st = self.lock();
        if let Some(rec) = st.shards.get(uuid) {
            if rec.scm_bytes == scm_bytes && rec.nvme_bytes == nvme_bytes {
                return Ok(());
            }
            return Err(DaosError::new(
                Der::EXIST,
                format!("pool {uuid} already has a shard of other sizes"),
            )
            .into());
        }
        let n = u64::from(self.targets.len());
        let scm_tgt = (scm_bytes / n) / SCM_ALIGN * SCM_ALIGN;
        let nvme_tgt = (nvme_bytes / n) / EXTENT_ALIGN * EXTENT_ALIGN;
        if scm_tgt == 0 {
            return Err(DaosError::new(
                Der::INVAL,
                format!("pool {uuid}: {scm_bytes} bytes of SCM is too small for {n} targets"),
            )
            .into());
        }
        if nvme_bytes > 0 && nvme_tgt == 0 {
            return Err(DaosError::new(
                Der::INVAL,
                format!("pool {uuid}: {nvme_bytes} bytes of NVMe is too small for {n} targets"),
            )
            .into());
        }
        let fmt = proto::units::format_bytes;
        let scm_free = st.scm_total.saturating_sub(st.scm_reserved());
        if scm_tgt * n > scm_free {
            return Err(DaosError::new(
                Der::NOSPACE,
                format!(
                    "pool {uuid}: {} of SCM requested, {} free",
                    fmt(scm_tgt * n),
                    fmt(scm_free)
                ),
            )
            .into());
        }
        if nvme_tgt > 0 && st.devices.is_empty() {
            return Err(DaosError::new(
                Der::NOSPACE,
                format!("pool {uuid}: NVMe space requested but this engine has no bulk devices"),
            )
            .into());
        }
        // Reserve bulk extents for every target, or none.
        let mut tshards: Vec<TargetShard> = Vec::new();
        for tgt in 0..self.targets.len() {
            let bdev = if nvme_tgt > 0 {
                let Some(e) = st.alloc.alloc(nvme_tgt) else {
                    let free = st.alloc.total() - st.alloc.reserved();
                    for e in tshards.iter().filter_map(|t| t.bdev) {
                        st.alloc.free(e);
                    }
                    return Err(DaosError::new(
                        Der::NOSPACE,
                        format!(
                            "pool {uuid}: {} of NVMe requested, {} free",
                            fmt(nvme_bytes),
                            fmt(free)
                        ),
                    )
                    .into());
                };
                Some(e)
            } else {
                None
            };
            tshards.push(TargetShard {
                tgt,
                scm_bytes: scm_tgt,
                bdev,
            });
        }
        let rec = ShardRec {
            version: SHARD_VERSION,
            pool_uuid: uuid.to_string(),
            scm_bytes,
            nvme_bytes,
            targets: tshards,
            svc,
        };
        if let Some(svc) = &rec.svc {
            if let Ok(mut g) = self.uris.write() {
                g.insert(rec.pool_uuid.clone(), map_uris(&svc.map));
            }
        }
        let r = self
            .create_files(&st, &rec)
            .and_then(|()| self.latch(st.commit_shard(rec.clone())));
        if r.is_err() {
            for e in rec.targets.iter().filter_map(|t| t.bdev) {
                st.alloc.free(e);
            }
            let _ = std::fs::remove_dir_all(pool_dir(&st.scm_mount, uuid));
        }
        r
    }

    fn create_files(&self, st: &Storage, rec: &ShardRec) -> Result<()> {
        let dir = pool_dir(&st.scm_mount, &rec.pool_uuid);
        proto::durable::create_dir_all_durable(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        self.open_vos(st, rec).into_iter().collect()
    }

    /// Opens (creating where new) the VOS of every target of a shard.
    fn open_vos(&self, st: &Storage, rec: &ShardRec) -> Vec<Result<()>> {
        let data_thresh = data_thresh(rec);
        let cfgs: Vec<VosConfig> = rec
            .targets
            .iter()
            .map(|t| VosConfig {
                dir: vos_path(&st.scm_mount, &rec.pool_uuid, t.tgt),
                scm_bytes: t.scm_bytes,
                bulk: t.bdev.and_then(|e| {
                    st.devices.get(e.dev as usize).map(|d| BulkRegion {
                        path: d.path.clone(),
                        offset: e.off,
                        len: e.len,
                    })
                }),
                sync: true,
                data_thresh,
            })
            .collect();
        let uuid = rec.pool_uuid.clone();
        self.targets.run_all_blocking(|tgt| {
            let cfg = cfgs.get(tgt as usize).cloned();
            let uuid = uuid.clone();
            Box::new(move |ts: &mut TgtState| match cfg {
                Some(cfg) => ts.open_vos(&uuid, cfg),
                None => Ok(()),
            })
        })
    }

    /// Opens the VOS of every pool shard found at start.
    pub async fn open_all(self: &Arc<Self>) -> Result<()> {
        self.blocking(|e| {
            let st = e.lock();
            for rec in st.shards.values() {
                for r in e.open_vos(&st, rec) {
                    if let Err(err) = r {
                        tracing::error!(pool = %rec.pool_uuid, "opening VOS: {err}");
                        return Err(err);
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Frees a pool's shard. A pool this engine does not have is an error only if
    /// nothing of it is left.
    pub async fn pool_destroy(self: &Arc<Self>, uuid: String) -> Result<()> {
        self.blocking(move |e| e.pool_destroy_sync(&uuid)).await
    }

    fn pool_destroy_sync(&self, uuid: &str) -> Result<()> {
        self.check_writable()?;
        let mut st = self.lock();
        let dir = pool_dir(&st.scm_mount, uuid);
        if !st.shards.contains_key(uuid) {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
                return Ok(());
            }
            return Err(DaosError::new(
                Der::NONEXIST,
                format!("pool {uuid} has no shard on this engine"),
            )
            .into());
        }
        // The targets let go of the VOS before its files and extents go.
        let u = uuid.to_string();
        self.targets.run_all_blocking(|_| {
            let u = u.clone();
            Box::new(move |ts: &mut TgtState| {
                ts.close_vos(&u);
                Ok(())
            })
        });
        let dropped = st.drop_shard(uuid);
        self.latch(dropped)?;
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        tracing::info!(pool = uuid, "pool shard destroyed");
        Ok(())
    }

    /// Tier totals and what pools reserve of them.
    pub async fn space(self: &Arc<Self>) -> Result<Space> {
        self.blocking(|e| Ok(e.space_sync())).await
    }

    fn space_sync(&self) -> Space {
        let st = self.lock();
        Space {
            scm: TierSpace {
                class: "scm".into(),
                total: st.scm_total,
                reserved: st.scm_reserved(),
            },
            nvme: TierSpace {
                class: st
                    .devices
                    .first()
                    .map(|d| d.class.clone())
                    .unwrap_or_default(),
                total: st.alloc.total(),
                reserved: st.alloc.reserved(),
            },
            pools: st.shards.values().map(|r| self.shard_info(r)).collect(),
        }
    }

    pub async fn pool_query(self: &Arc<Self>, uuid: String) -> Result<PoolShardInfo> {
        self.blocking(move |e| e.pool_query_sync(&uuid)).await
    }

    fn pool_query_sync(&self, uuid: &str) -> Result<PoolShardInfo> {
        let st = self.lock();
        st.shards
            .get(uuid)
            .map(|r| self.shard_info(r))
            .ok_or_else(|| {
                DaosError::new(
                    Der::NONEXIST,
                    format!("pool {uuid} has no shard on this engine"),
                )
                .into()
            })
    }
}

/// Space per target, as each target's VOS counts it.
impl Engine {
    fn shard_info(&self, rec: &ShardRec) -> PoolShardInfo {
        let uuid = rec.pool_uuid.clone();
        let used = self.targets.run_all_blocking(|_| {
            let uuid = uuid.clone();
            Box::new(move |ts: &mut TgtState| Ok(ts.vos(&uuid)?.space()))
        });
        PoolShardInfo {
            pool_uuid: rec.pool_uuid.clone(),
            targets: rec
                .targets
                .iter()
                .map(|t| {
                    let nvme = t.bdev.map(|e| e.len).unwrap_or(0);
                    let (scm_used, nvme_used) = match used.get(t.tgt as usize) {
                        Some(Ok(s)) => (s.scm_used, s.bulk_used),
                        _ => (0, 0),
                    };
                    TargetSpace {
                        tgt: t.tgt,
                        scm_total: t.scm_bytes,
                        scm_free: t.scm_bytes.saturating_sub(scm_used),
                        nvme_total: nvme,
                        nvme_free: nvme.saturating_sub(nvme_used),
                    }
                })
                .collect(),
        }
    }
}

/// The pool's `data_thresh` as it was created (the default if not given).
/// At least 1: `data_thresh:0` sends every value to the bulk tier, but an
/// empty one has no bytes to place there.
fn data_thresh(rec: &ShardRec) -> u64 {
    rec.svc
        .as_ref()
        .and_then(|s| s.props.get("data_thresh"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::vos::DEFAULT_DATA_THRESH)
        .max(1)
}
