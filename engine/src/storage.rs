//! The engine's storage: the SCM mount it owns, its bulk devices, and the pool
//! shards reserved on them.
//!
//! Layout under the SCM mount:
//! - `daos_nvme.conf`: the bulk devices (written by daos_server at format time);
//! - `pools/<uuid>/vos-<tgt>/`: the VOS of each target (its log and checkpoint),
//!   kept within the target's SCM share;
//! - `pools/<uuid>/rdb/`: the pool service replica, on the service ranks;
//! - `pools/<uuid>/shard`: the shard record (sizes and bulk extents per target,
//!   and what the pool service needs to start).
//!
//! The shard record is written last on create (atomically: temp file, fsync,
//! rename, fsync of the directory) and removed first on destroy, so a pool
//! directory without one is an interrupted create and is cleared at start. Bulk
//! extents are never handed out twice: the allocator is rebuilt from the shard
//! records at start and updated under the engine's metadata lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use prost::Message;
use proto::srv::NvmeConf;
use proto::{DaosError, Der};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bulk extents are aligned to this.
pub const EXTENT_ALIGN: u64 = 1 << 20;
/// SCM shares per target are aligned to this.
pub const SCM_ALIGN: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub dev: u32,
    pub off: u64,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetShard {
    pub tgt: u32,
    pub scm_bytes: u64,
    pub bdev: Option<Extent>,
}

/// The durable record of one pool's shard on this engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRec {
    pub version: u32,
    pub pool_uuid: String,
    pub scm_bytes: u64,
    pub nvme_bytes: u64,
    pub targets: Vec<TargetShard>,
    /// The pool as the management service created it: what a pool service
    /// replica starts from.
    #[serde(default)]
    pub svc: Option<SvcRec>,
}

/// What the management service told this engine about a new pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvcRec {
    /// This engine's rank.
    pub rank: u32,
    pub svc_ranks: Vec<u32>,
    /// The first pool map, prost-encoded `proto::pool::PoolMap`.
    pub map: Vec<u8>,
    pub label: String,
    pub owner: String,
    pub group: String,
    pub acl: Vec<String>,
    pub props: BTreeMap<String, String>,
}

pub const SHARD_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct Device {
    pub class: String,
    pub path: PathBuf,
    pub size: u64,
}

/// First-fit allocator over the bulk devices.
#[derive(Debug, Default)]
pub struct Allocator {
    /// Per device: used extents, offset -> length.
    used: Vec<BTreeMap<u64, u64>>,
    sizes: Vec<u64>,
}

impl Allocator {
    pub fn new(sizes: Vec<u64>) -> Self {
        Allocator {
            used: vec![BTreeMap::new(); sizes.len()],
            sizes,
        }
    }

    pub fn total(&self) -> u64 {
        self.sizes.iter().sum()
    }

    pub fn reserved(&self) -> u64 {
        self.used.iter().flat_map(|m| m.values()).sum()
    }

    /// Marks an extent used (from a shard record). Fails if it overlaps another
    /// or lies outside its device: the records are then inconsistent.
    pub fn mark(&mut self, e: Extent) -> std::result::Result<(), String> {
        let size = *self
            .sizes
            .get(e.dev as usize)
            .ok_or_else(|| format!("extent on unknown device {}", e.dev))?;
        if e.off.checked_add(e.len).is_none_or(|end| end > size) {
            return Err(format!("extent {e:?} lies beyond device size {size}"));
        }
        let used = &mut self.used[e.dev as usize];
        let overlaps_prev = used
            .range(..=e.off)
            .next_back()
            .is_some_and(|(o, l)| o + l > e.off);
        let overlaps_next = used
            .range(e.off..)
            .next()
            .is_some_and(|(o, _)| *o < e.off + e.len);
        if overlaps_prev || overlaps_next {
            return Err(format!("extent {e:?} overlaps another"));
        }
        used.insert(e.off, e.len);
        Ok(())
    }

    /// Finds room for `len` bytes (rounded up to [`EXTENT_ALIGN`]) and marks it used.
    pub fn alloc(&mut self, len: u64) -> Option<Extent> {
        let len = len.div_ceil(EXTENT_ALIGN) * EXTENT_ALIGN;
        for dev in 0..self.sizes.len() {
            let mut cursor = 0u64;
            let mut found = None;
            for (&o, &l) in &self.used[dev] {
                if o - cursor >= len {
                    found = Some(cursor);
                    break;
                }
                cursor = (o + l).div_ceil(EXTENT_ALIGN) * EXTENT_ALIGN;
            }
            if found.is_none() && self.sizes[dev] >= cursor && self.sizes[dev] - cursor >= len {
                found = Some(cursor);
            }
            if let Some(off) = found {
                self.used[dev].insert(off, len);
                return Some(Extent {
                    dev: dev as u32,
                    off,
                    len,
                });
            }
        }
        None
    }

    pub fn free(&mut self, e: Extent) {
        if let Some(m) = self.used.get_mut(e.dev as usize) {
            m.remove(&e.off);
        }
    }
}

/// Everything the engine keeps about its storage, guarded by one lock.
pub struct Storage {
    pub scm_mount: PathBuf,
    pub scm_total: u64,
    pub devices: Vec<Device>,
    pub alloc: Allocator,
    pub shards: BTreeMap<String, ShardRec>,
}

fn pools_dir(scm: &Path) -> PathBuf {
    scm.join("pools")
}

pub fn pool_dir(scm: &Path, uuid: &str) -> PathBuf {
    pools_dir(scm).join(uuid)
}

pub fn vos_path(scm: &Path, uuid: &str, tgt: u32) -> PathBuf {
    pool_dir(scm, uuid).join(format!("vos-{tgt}"))
}

/// Size of an open file or block device.
fn dev_size(path: &Path) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(0))
}

impl Storage {
    /// Opens the storage under `scm_mount` with the bulk devices of `nvme_conf`.
    pub fn open(scm_mount: &Path, nvme_conf: Option<&Path>) -> Result<Self> {
        let meta = std::fs::metadata(scm_mount)
            .map_err(|e| Error::io(format!("scm_mount {}", scm_mount.display()), e))?;
        if !meta.is_dir() {
            return Err(DaosError::new(
                Der::INVAL,
                format!("scm_mount {} is not a directory", scm_mount.display()),
            )
            .into());
        }
        let st = nix::sys::statvfs::statvfs(scm_mount)
            .map_err(|e| Error::io(format!("statvfs {}", scm_mount.display()), e.into()))?;
        let scm_total = st.blocks() as u64 * st.fragment_size() as u64;

        let mut devices = Vec::new();
        if let Some(conf) = nvme_conf {
            let data = std::fs::read(conf)
                .map_err(|e| Error::io(format!("nvme config {}", conf.display()), e))?;
            let conf_msg = NvmeConf::decode(data.as_slice()).map_err(|e| {
                DaosError::new(
                    Der::INVAL,
                    format!("nvme config {} does not decode: {e}", conf.display()),
                )
            })?;
            for d in conf_msg.devices {
                let path = PathBuf::from(&d.path);
                let actual = dev_size(&path)
                    .map_err(|e| Error::io(format!("bdev {}", path.display()), e))?;
                if d.size != 0 && actual < d.size {
                    return Err(DaosError::new(
                        Der::INVAL,
                        format!(
                            "bdev {} is {actual} bytes, config says {}; reformat",
                            path.display(),
                            d.size
                        ),
                    )
                    .into());
                }
                let size = if d.size == 0 { actual } else { d.size };
                devices.push(Device {
                    class: d.class,
                    path,
                    size,
                });
            }
        }
        let mut s = Storage {
            scm_mount: scm_mount.to_path_buf(),
            scm_total,
            alloc: Allocator::new(devices.iter().map(|d| d.size).collect()),
            devices,
            shards: BTreeMap::new(),
        };
        s.load_shards()?;
        Ok(s)
    }

    fn load_shards(&mut self) -> Result<()> {
        let dir = pools_dir(&self.scm_mount);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            let p = ent.path();
            let rec_path = p.join("shard");
            if !rec_path.exists() {
                tracing::warn!(path = %p.display(), "removing pool directory of an interrupted create");
                std::fs::remove_dir_all(&p)
                    .map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
                continue;
            }
            let data = std::fs::read(&rec_path)
                .map_err(|e| Error::io(format!("reading {}", rec_path.display()), e))?;
            let rec: ShardRec = serde_json::from_slice(&data).map_err(|e| {
                DaosError::new(
                    Der::IO,
                    format!("shard record {} is corrupt: {e}", rec_path.display()),
                )
            })?;
            if rec.version != SHARD_VERSION {
                return Err(DaosError::new(
                    Der::PROTO,
                    format!(
                        "shard record {} has version {}",
                        rec_path.display(),
                        rec.version
                    ),
                )
                .into());
            }
            for t in &rec.targets {
                if let Some(e) = t.bdev {
                    self.alloc.mark(e).map_err(|m| {
                        DaosError::new(Der::IO, format!("shard record {}: {m}", rec_path.display()))
                    })?;
                }
            }
            self.shards.insert(rec.pool_uuid.clone(), rec);
        }
        Ok(())
    }

    pub fn scm_reserved(&self) -> u64 {
        self.shards.values().map(|s| s.scm_bytes).sum()
    }

    /// Makes the shard record of a fully created pool durable.
    pub fn commit_shard(&mut self, rec: ShardRec) -> Result<()> {
        let dir = pool_dir(&self.scm_mount, &rec.pool_uuid);
        let data = serde_json::to_vec_pretty(&rec)
            .map_err(|e| DaosError::new(Der::MISC, e.to_string()))?;
        proto::durable::write_atomic(&dir, "shard", &data)
            .map_err(|e| Error::io(format!("writing shard record in {}", dir.display()), e))?;
        self.shards.insert(rec.pool_uuid.clone(), rec);
        Ok(())
    }

    /// Removes the shard record (the point after which the pool is gone here) and
    /// frees its bulk extents, punching them out of the device files.
    pub fn drop_shard(&mut self, uuid: &str) -> Result<Option<ShardRec>> {
        let Some(rec) = self.shards.get(uuid).cloned() else {
            return Ok(None);
        };
        let dir = pool_dir(&self.scm_mount, uuid);
        let rec_path = dir.join("shard");
        std::fs::remove_file(&rec_path)
            .map_err(|e| Error::io(format!("removing {}", rec_path.display()), e))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        self.shards.remove(uuid);
        for t in &rec.targets {
            if let Some(e) = t.bdev {
                self.punch(e);
                self.alloc.free(e);
            }
        }
        Ok(Some(rec))
    }

    /// Returns an extent's blocks to the device file's filesystem.
    fn punch(&self, e: Extent) {
        let Some(d) = self.devices.get(e.dev as usize) else {
            return;
        };
        if d.class != "file" {
            return;
        }
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&d.path)
            .and_then(|f| {
                nix::fcntl::fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    e.off as i64,
                    e.len as i64,
                )
                .map_err(std::io::Error::from)
            });
        if let Err(err) = r {
            tracing::warn!(path = %d.path.display(), "punching freed extent {e:?}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_never_hands_out_a_block_twice() {
        let mut a = Allocator::new(vec![10 * EXTENT_ALIGN, 4 * EXTENT_ALIGN]);
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(a.alloc(2 * EXTENT_ALIGN - 5).unwrap());
        }
        assert!(a.alloc(EXTENT_ALIGN).is_none(), "14 MiB of 14 MiB used");
        for (i, x) in got.iter().enumerate() {
            for y in &got[i + 1..] {
                assert!(
                    x.dev != y.dev || x.off + x.len <= y.off || y.off + y.len <= x.off,
                    "{x:?} overlaps {y:?}"
                );
            }
        }
        a.free(got[1]);
        let again = a.alloc(EXTENT_ALIGN).unwrap();
        assert_eq!((again.dev, again.off), (got[1].dev, got[1].off));
        assert_eq!(a.reserved(), 13 * EXTENT_ALIGN);
    }

    proptest::proptest! {
        /// Against a model that tracks every byte: no byte is handed out twice,
        /// every extent lies inside its device, and the accounting matches.
        #[test]
        fn allocator_matches_byte_model(
            sizes in proptest::collection::vec(1u64..16, 1..4),
            ops in proptest::collection::vec((0u8..3, 1u64..6), 1..80),
        ) {
            let sizes: Vec<u64> = sizes.into_iter().map(|s| s * EXTENT_ALIGN).collect();
            let mut a = Allocator::new(sizes.clone());
            let mut owned: Vec<Extent> = Vec::new();
            for (op, n) in ops {
                if op < 2 {
                    let want = n * EXTENT_ALIGN - (n % 3);
                    let free: u64 = sizes.iter().sum::<u64>() - owned.iter().map(|e| e.len).sum::<u64>();
                    match a.alloc(want) {
                        Some(e) => {
                            proptest::prop_assert!(e.len >= want && e.off + e.len <= sizes[e.dev as usize]);
                            for o in &owned {
                                proptest::prop_assert!(o.dev != e.dev || o.off + o.len <= e.off || e.off + e.len <= o.off);
                            }
                            owned.push(e);
                        }
                        // First fit may fail from fragmentation, never with a whole empty device that fits.
                        None => proptest::prop_assert!(
                            !(0..sizes.len()).any(|d| owned.iter().all(|o| o.dev as usize != d) && sizes[d] >= want) || free < want
                        ),
                    }
                } else if !owned.is_empty() {
                    let e = owned.swap_remove((n as usize) % owned.len());
                    a.free(e);
                }
                proptest::prop_assert_eq!(a.reserved(), owned.iter().map(|e| e.len).sum::<u64>());
            }
        }
    }

    #[test]
    fn mark_rejects_overlap_and_overflow() {
        let mut a = Allocator::new(vec![8 * EXTENT_ALIGN]);
        a.mark(Extent {
            dev: 0,
            off: 0,
            len: 2 * EXTENT_ALIGN,
        })
        .unwrap();
        assert!(a
            .mark(Extent {
                dev: 0,
                off: EXTENT_ALIGN,
                len: EXTENT_ALIGN
            })
            .is_err());
        assert!(a
            .mark(Extent {
                dev: 0,
                off: 7 * EXTENT_ALIGN,
                len: 2 * EXTENT_ALIGN
            })
            .is_err());
        assert!(a
            .mark(Extent {
                dev: 3,
                off: 0,
                len: 1
            })
            .is_err());
        assert!(a
            .mark(Extent {
                dev: 0,
                off: u64::MAX,
                len: 2
            })
            .is_err());
    }
}
