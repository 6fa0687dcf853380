//! The engine's control operations: pool shards and space, as daos_server asks.
//!
//! Every operation runs on a blocking thread under the `storage` lock, so two
//! creates never race for the same space and no file I/O runs on the tokio
//! runtime. If writing or syncing metadata ever fails, the engine stops taking
//! changes until it is restarted (and replays what is on disk): a failed fsync
//! leaves the on-disk state unknown, and retrying could acknowledge a lie.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use proto::srv::{PoolShardInfo, TargetSpace, TierSpace};
use proto::{DaosError, Der};

use crate::error::{Error, Result};
use crate::storage::{
    pool_dir, vos_path, ShardRec, Storage, TargetShard, EXTENT_ALIGN, SCM_ALIGN, SHARD_VERSION,
};
use crate::targets::{Targets, TgtOp};

pub struct Engine {
    storage: Mutex<Storage>,
    targets: Targets,
    failed: AtomicBool,
}

/// Tier totals and reservations, as STORAGE_QUERY reports them.
pub struct Space {
    pub scm: TierSpace,
    pub nvme: TierSpace,
    pub pools: Vec<PoolShardInfo>,
}

impl Engine {
    pub fn new(storage: Storage, targets: Targets) -> Arc<Self> {
        Arc::new(Engine {
            storage: Mutex::new(storage),
            targets,
            failed: AtomicBool::new(false),
        })
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
    ) -> Result<()> {
        self.blocking(move |e| e.pool_create_sync(&uuid, scm_bytes, nvme_bytes))
            .await
    }

    fn pool_create_sync(&self, uuid: &str, scm_bytes: u64, nvme_bytes: u64) -> Result<()> {
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
        };
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
        let ops = rec
            .targets
            .iter()
            .map(|t| {
                let path = vos_path(&st.scm_mount, &rec.pool_uuid, t.tgt);
                (
                    t.tgt,
                    TgtOp::CreateVos {
                        path,
                        scm_bytes: t.scm_bytes,
                    },
                )
            })
            .collect();
        self.targets.run_all(ops).into_iter().collect()
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
        let dropped = st.drop_shard(uuid);
        let Some(rec) = self.latch(dropped)? else {
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
        };
        let ops = rec
            .targets
            .iter()
            .map(|t| {
                (
                    t.tgt,
                    TgtOp::DestroyVos {
                        path: vos_path(&st.scm_mount, uuid, t.tgt),
                    },
                )
            })
            .collect();
        for r in self.targets.run_all(ops) {
            if let Err(e) = r {
                tracing::warn!(pool = uuid, "destroy: {e}");
            }
        }
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
            pools: st.shards.values().map(shard_info).collect(),
        }
    }

    pub async fn pool_query(self: &Arc<Self>, uuid: String) -> Result<PoolShardInfo> {
        self.blocking(move |e| e.pool_query_sync(&uuid)).await
    }

    fn pool_query_sync(&self, uuid: &str) -> Result<PoolShardInfo> {
        self.lock().shards.get(uuid).map(shard_info).ok_or_else(|| {
            DaosError::new(
                Der::NONEXIST,
                format!("pool {uuid} has no shard on this engine"),
            )
            .into()
        })
    }
}

/// Space per target. Nothing is written into pools yet, so free equals reserved.
fn shard_info(rec: &ShardRec) -> PoolShardInfo {
    PoolShardInfo {
        pool_uuid: rec.pool_uuid.clone(),
        targets: rec
            .targets
            .iter()
            .map(|t| {
                let nvme = t.bdev.map(|e| e.len).unwrap_or(0);
                TargetSpace {
                    tgt: t.tgt,
                    scm_total: t.scm_bytes,
                    scm_free: t.scm_bytes,
                    nvme_total: nvme,
                    nvme_free: nvme,
                }
            })
            .collect(),
    }
}
