//! The engine's control operations: pool shards and space, as daos_server asks.
//!
//! All changes to the shard table run under `storage` (a tokio mutex held across
//! the target calls), so two creates never race for the same space.

use std::sync::Arc;

use futures::future::join_all;
use proto::srv::{PoolShardInfo, TargetSpace, TierSpace};
use proto::{DaosError, Der};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::storage::{
    pool_dir, vos_path, ShardRec, Storage, TargetShard, EXTENT_ALIGN, SCM_ALIGN, SHARD_VERSION,
};
use crate::targets::{Targets, TgtReq};

pub struct Engine {
    pub storage: Mutex<Storage>,
    pub targets: Targets,
    pub ntgts: u32,
}

impl Engine {
    pub fn new(storage: Storage, targets: Targets) -> Arc<Self> {
        let ntgts = targets.list.len() as u32;
        Arc::new(Engine {
            storage: Mutex::new(storage),
            targets,
            ntgts,
        })
    }

    /// Reserves `scm_bytes` and `nvme_bytes` for a pool, split evenly over the targets.
    /// Repeating a create that already succeeded with the same sizes succeeds.
    pub async fn pool_create(&self, uuid: &str, scm_bytes: u64, nvme_bytes: u64) -> Result<()> {
        if uuid::Uuid::parse_str(uuid).is_err() {
            return Err(
                DaosError::new(Der::INVAL, format!("pool uuid {uuid:?} is not a UUID")).into(),
            );
        }
        let mut st = self.storage.lock().await;
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
        let n = self.ntgts as u64;
        let scm_tgt = (scm_bytes / n) / SCM_ALIGN * SCM_ALIGN;
        let nvme_tgt = (nvme_bytes / n) / EXTENT_ALIGN * EXTENT_ALIGN;
        if nvme_bytes > 0 && nvme_tgt == 0 {
            return Err(DaosError::new(
                Der::INVAL,
                format!("pool {uuid}: {nvme_bytes} bytes of NVMe is too small for {n} targets"),
            )
            .into());
        }
        if scm_tgt == 0 {
            return Err(DaosError::new(
                Der::INVAL,
                format!("pool {uuid}: {scm_bytes} bytes of SCM is too small for {n} targets"),
            )
            .into());
        }
        let scm_free = st.scm_total.saturating_sub(st.scm_reserved());
        if scm_tgt * n > scm_free {
            return Err(DaosError::new(
                Der::NOSPACE,
                format!(
                    "pool {uuid}: {} of SCM requested, {} free",
                    proto::units::format_bytes(scm_tgt * n),
                    proto::units::format_bytes(scm_free)
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
        let mut tshards = Vec::new();
        for tgt in 0..self.ntgts {
            let bdev = if nvme_tgt > 0 {
                match st.alloc.alloc(nvme_tgt) {
                    Some(e) => Some(e),
                    None => {
                        let free = st.alloc.total() - st.alloc.reserved();
                        for t in &tshards {
                            let t: &TargetShard = t;
                            if let Some(e) = t.bdev {
                                st.alloc.free(e);
                            }
                        }
                        return Err(DaosError::new(
                            Der::NOSPACE,
                            format!(
                                "pool {uuid}: {} of NVMe requested, {} free",
                                proto::units::format_bytes(nvme_bytes),
                                proto::units::format_bytes(free)
                            ),
                        )
                        .into());
                    }
                }
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
        match self.create_files(&st, &rec).await {
            Ok(()) => st.commit_shard(rec.clone()),
            Err(e) => Err(e),
        }
        .inspect_err(|_| {
            for t in &rec.targets {
                if let Some(e) = t.bdev {
                    st.alloc.free(e);
                }
            }
            let _ = std::fs::remove_dir_all(pool_dir(&st.scm_mount, uuid));
        })
    }

    async fn create_files(&self, st: &Storage, rec: &ShardRec) -> Result<()> {
        let dir = pool_dir(&st.scm_mount, &rec.pool_uuid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let calls = rec.targets.iter().map(|t| {
            let path = vos_path(&st.scm_mount, &rec.pool_uuid, t.tgt);
            let scm_bytes = t.scm_bytes;
            self.targets.call(t.tgt, move |reply| TgtReq::CreateVos {
                path,
                scm_bytes,
                reply,
            })
        });
        for r in join_all(calls).await {
            r?;
        }
        Ok(())
    }

    /// Frees a pool's shard. A pool this engine does not have is an error only if
    /// nothing of it is left.
    pub async fn pool_destroy(&self, uuid: &str) -> Result<()> {
        let mut st = self.storage.lock().await;
        let dir = pool_dir(&st.scm_mount, uuid);
        let Some(rec) = st.drop_shard(uuid)? else {
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
        let calls = rec.targets.iter().map(|t| {
            let path = vos_path(&st.scm_mount, uuid, t.tgt);
            self.targets
                .call(t.tgt, move |reply| TgtReq::DestroyVos { path, reply })
        });
        for r in join_all(calls).await {
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
    pub async fn space(&self) -> (TierSpace, TierSpace, Vec<PoolShardInfo>, Vec<String>) {
        let st = self.storage.lock().await;
        let scm = TierSpace {
            class: "scm".into(),
            total: st.scm_total,
            reserved: st.scm_reserved(),
        };
        let nvme = TierSpace {
            class: st
                .devices
                .first()
                .map(|d| d.class.clone())
                .unwrap_or_default(),
            total: st.alloc.total(),
            reserved: st.alloc.reserved(),
        };
        let pools = st.shards.values().map(shard_info).collect();
        let bdevs = st
            .devices
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        (scm, nvme, pools, bdevs)
    }

    pub async fn pool_query(&self, uuid: &str) -> Result<PoolShardInfo> {
        let st = self.storage.lock().await;
        st.shards.get(uuid).map(shard_info).ok_or_else(|| {
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
