//! Pool administration on the management service leader.
//!
//! Create: the pool is recorded as `Creating` (which claims its label), each
//! rank's engine reserves its shard, then the pool turns `Ready`. If any engine
//! fails, the shards already made are destroyed and the record removed, so a
//! failed create leaves nothing. Destroy: `Destroying`, engines free their shards,
//! the record goes. A pool left `Creating` or `Destroying` by a server crash keeps
//! its label reserved; `dmg pool destroy` finishes it off. Listings hide pools
//! still being created.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use proto::drpc::method;
use proto::mgmt::*;
use proto::srv::*;
use proto::units::format_bytes;
use proto::{DaosError, Der};

use crate::error::{inval, Result};
use crate::ms::state::{MemberState, MsCmd, PoolRec, PoolState};
use crate::props;
use crate::Server;

/// The smallest SCM share DAOS accepts per target.
const MIN_SCM_PER_TGT: u64 = 16 << 20;
/// The smallest NVMe share per target, when a pool has NVMe at all.
const MIN_NVME_PER_TGT: u64 = 16 << 20;
const ENGINE_CALL: Duration = Duration::from_secs(120);

impl Server {
    async fn rank_space(&self, rank: u32) -> Result<StorageQueryResp> {
        self.engine_call(
            rank,
            method::STORAGE_QUERY,
            &StorageQueryReq {},
            ENGINE_CALL,
        )
        .await
    }

    pub async fn pool_create(&self, req: PoolCreateReq) -> Result<PoolCreateResp> {
        let ms = self.ms()?;
        props::check_label(&req.label)?;
        let mut settings: Vec<(String, String)> = req
            .properties
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        settings.retain(|(n, _)| n != "label");
        let props = props::check_all(&settings, true)?;
        if ms.read(|db| db.find_pool(&req.label).is_some()).await? {
            return Err(DaosError::new(
                Der::EXIST,
                format!("pool label {:?} is already in use", req.label),
            ));
        }
        let (mut ranks, tgts): (Vec<u32>, BTreeMap<u32, u32>) = ms
            .read(|db| {
                let joined: Vec<_> = db
                    .members
                    .values()
                    .filter(|m| m.state == MemberState::Joined)
                    .collect();
                (
                    joined.iter().map(|m| m.rank).collect(),
                    joined.iter().map(|m| (m.rank, m.ntgts)).collect(),
                )
            })
            .await?;
        if !req.ranks.is_empty() {
            if let Some(r) = req.ranks.iter().find(|r| !ranks.contains(r)) {
                return Err(inval(format!(
                    "rank {r} is not a joined member of the system"
                )));
            }
            ranks = req.ranks.clone();
            ranks.sort_unstable();
            ranks.dedup();
        }
        if req.nranks > 0 {
            if req.nranks as usize > ranks.len() {
                return Err(inval(format!(
                    "--nranks {} exceeds the {} joined ranks",
                    req.nranks,
                    ranks.len()
                )));
            }
            ranks.truncate(req.nranks as usize);
        }
        if ranks.is_empty() {
            return Err(DaosError::new(
                Der::UNREACH,
                "no joined ranks to create a pool on: run `dmg system query`",
            ));
        }
        let n = ranks.len() as u64;

        // Per-rank sizes, and a space check against what each rank has free.
        let mut spaces = Vec::new();
        for r in &ranks {
            spaces.push((*r, self.rank_space(*r).await?));
        }
        let has_nvme = spaces
            .iter()
            .all(|(_, s)| s.nvme.as_ref().is_some_and(|t| t.total > 0));
        let (scm, nvme) = if req.total_bytes > 0 {
            if req.scm_bytes > 0 || req.nvme_bytes > 0 {
                return Err(inval(
                    "give either --size or --scm-size/--nvme-size, not both",
                ));
            }
            let ratio = match req.tier_ratio.as_slice() {
                [] => 0.06,
                [s, ..] if (0.0..=1.0).contains(s) => *s,
                [s, ..] if (0.0..=100.0).contains(s) => s / 100.0,
                _ => {
                    return Err(inval(
                        "--tier-ratio must be two percentages that add up to 100, e.g. 6,94",
                    ))
                }
            };
            if has_nvme {
                let scm = (req.total_bytes as f64 * ratio) as u64 / n;
                (scm, req.total_bytes / n - scm)
            } else {
                (req.total_bytes / n, 0)
            }
        } else {
            (req.scm_bytes, req.nvme_bytes)
        };
        if scm == 0 {
            return Err(inval("pool size is zero: give --size or --scm-size"));
        }
        for (r, s) in &spaces {
            let ntgt = u64::from(*tgts.get(r).unwrap_or(&1)).max(1);
            if scm / ntgt < MIN_SCM_PER_TGT {
                return Err(inval(format!(
                    "SCM size {} per rank is below the minimum of {} ({} per target × {ntgt} targets on rank {r})",
                    format_bytes(scm),
                    format_bytes(MIN_SCM_PER_TGT * ntgt),
                    format_bytes(MIN_SCM_PER_TGT)
                )));
            }
            if nvme > 0 && nvme / ntgt < MIN_NVME_PER_TGT {
                return Err(inval(format!(
                    "NVMe size {} per rank is below the minimum of {}",
                    format_bytes(nvme),
                    format_bytes(MIN_NVME_PER_TGT * ntgt)
                )));
            }
            let t = s.scm.clone().unwrap_or_default();
            let free = t.total.saturating_sub(t.reserved);
            if scm > free {
                return Err(DaosError::new(
                    Der::NOSPACE,
                    format!(
                        "pool {:?}: {} of SCM requested per rank, rank {r} has {} free",
                        req.label,
                        format_bytes(scm),
                        format_bytes(free)
                    ),
                ));
            }
            let t = s.nvme.clone().unwrap_or_default();
            let free = t.total.saturating_sub(t.reserved);
            if nvme > free {
                return Err(DaosError::new(
                    Der::NOSPACE,
                    format!(
                        "pool {:?}: {} of NVMe requested per rank, rank {r} has {} free",
                        req.label,
                        format_bytes(nvme),
                        format_bytes(free)
                    ),
                ));
            }
        }

        let nsvc = match req.num_svc_reps {
            // DAOS's default: up to 3 replicas, always an odd number.
            0 => (ranks.len().min(3) - 1) | 1,
            k => k as usize,
        };
        if nsvc > ranks.len() || nsvc % 2 == 0 {
            return Err(inval(format!(
                "--nsvc {nsvc}: use an odd number no larger than the {} storage ranks",
                ranks.len()
            )));
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        let rec = PoolRec {
            uuid: uuid.clone(),
            label: req.label.clone(),
            state: PoolState::Creating,
            svc_reps: ranks[..nsvc].to_vec(),
            ranks: ranks.clone(),
            tgts: ranks
                .iter()
                .map(|r| (*r, *tgts.get(r).unwrap_or(&1)))
                .collect(),
            scm_per_rank: scm,
            nvme_per_rank: nvme,
            props,
            owner: proto::names::principal(&req.user),
            group: proto::names::principal(&req.user_group),
            acl: if req.acl.is_empty() {
                vec!["A::OWNER@:rw".into(), "A:G:GROUP@:rw".into()]
            } else {
                req.acl.clone()
            },
            map_version: 1,
        };
        ms.write(MsCmd::PoolAdd(rec.clone())).await?;
        let _creating = CreatingGuard::new(self, &uuid);
        tracing::info!(pool = %uuid, label = %req.label, scm, nvme, ranks = ?ranks, "creating pool");

        let members = ms.read(|db| db.members.clone()).await?;
        let map = pool_map(&rec, &members);
        let shard = PoolCreateShardReq {
            pool_uuid: uuid.clone(),
            scm_bytes: scm,
            nvme_bytes: nvme,
            rank: 0,
            svc_ranks: rec.svc_reps.clone(),
            map: Some(map),
            label: rec.label.clone(),
            owner: rec.owner.clone(),
            group: rec.group.clone(),
            acl: rec.acl.clone(),
            props: rec
                .props
                .iter()
                .map(|(name, value)| proto::pool::Prop {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let results = join_all(ranks.iter().map(|r| {
            let mut shard = shard.clone();
            shard.rank = *r;
            async move {
                let resp: Result<PoolCreateShardResp> = self
                    .engine_call(*r, method::POOL_CREATE, &shard, ENGINE_CALL)
                    .await;
                (
                    *r,
                    resp.and_then(|x| {
                        DaosError::check(x.status, &x.info).map_err(|e| rank_err(*r, e))
                    }),
                )
            }
        }))
        .await;
        if let Some((_, Err(first))) = results.iter().find(|(_, r)| r.is_err()) {
            let first = first.clone();
            tracing::warn!(pool = %uuid, "create failed, rolling back: {first}");
            // Best effort: each failure is logged, and a rank that missed it cleans up on rejoin.
            let _ = self.destroy_shards(&rec, true).await;
            if let Err(e) = ms.write(MsCmd::PoolRemove { uuid: uuid.clone() }).await {
                tracing::error!(pool = %uuid, "removing record of failed create: {e}");
            }
            return Err(first);
        }
        ms.write(MsCmd::PoolSetState {
            uuid: uuid.clone(),
            state: PoolState::Ready,
        })
        .await?;
        tracing::info!(pool = %uuid, label = %req.label, "pool created");
        Ok(PoolCreateResp {
            uuid,
            svc_reps: rec.svc_reps.clone(),
            tgt_ranks: ranks,
            tier_bytes: vec![scm, nvme],
            leader: rec.svc_reps.first().copied().unwrap_or(0),
        })
    }

    /// Destroys the shards of `rec` on every rank; with `best_effort`, failures are
    /// logged (a rank that is down has its shard removed when it joins again).
    async fn destroy_shards(&self, rec: &PoolRec, best_effort: bool) -> Result<()> {
        let req = PoolDestroyShardReq {
            pool_uuid: rec.uuid.clone(),
        };
        let results = join_all(rec.ranks.iter().map(|r| {
            let req = req.clone();
            async move {
                let resp: Result<PoolDestroyShardResp> = self
                    .engine_call(*r, method::POOL_DESTROY, &req, ENGINE_CALL)
                    .await;
                match resp {
                    Ok(x) if x.status == Der::NONEXIST.code() => Ok(()),
                    Ok(x) => DaosError::check(x.status, &x.info).map_err(|e| rank_err(*r, e)),
                    Err(e) => Err(rank_err(*r, e)),
                }
            }
        }))
        .await;
        for r in results {
            if let Err(e) = r {
                if !best_effort {
                    return Err(e);
                }
                tracing::warn!(pool = %rec.uuid, "destroy shard: {e}");
            }
        }
        Ok(())
    }

    /// Where a pool's service runs, for clients connecting to it.
    pub async fn pool_find(&self, id: &str) -> Result<PoolFindResp> {
        let rec = self.find(id).await?;
        Ok(PoolFindResp {
            status: 0,
            uuid: rec.uuid,
            label: rec.label,
            svc_reps: rec.svc_reps,
        })
    }

    async fn find(&self, id: &str) -> Result<PoolRec> {
        let ms = self.ms()?;
        ms.read(|db| db.find_pool(id).cloned())
            .await?
            .ok_or_else(|| DaosError::new(Der::NONEXIST, format!("pool {id:?} does not exist")))
    }

    pub async fn pool_destroy(&self, req: PoolDestroyReq) -> Result<()> {
        let ms = self.ms()?;
        let rec = self.find(&req.id).await?;
        if self
            .creating
            .lock()
            .map(|c| c.contains(&rec.uuid))
            .unwrap_or(false)
        {
            return Err(DaosError::new(
                Der::BUSY,
                format!(
                    "pool {:?} is still being created; retry when that finishes",
                    rec.label
                ),
            ));
        }
        ms.write(MsCmd::PoolSetState {
            uuid: rec.uuid.clone(),
            state: PoolState::Destroying,
        })
        .await?;
        // A rank that is down keeps its shard until it joins again (orphan cleanup);
        // without --force that is an error and the pool stays, marked Destroying.
        if let Err(e) = self.destroy_shards(&rec, req.force).await {
            return Err(DaosError::new(
                e.der,
                format!("{}; pool {} kept (retry, or use --force)", e.msg, rec.label),
            ));
        }
        ms.write(MsCmd::PoolRemove {
            uuid: rec.uuid.clone(),
        })
        .await?;
        tracing::info!(pool = %rec.uuid, label = %rec.label, "pool destroyed");
        Ok(())
    }

    /// Pool info with space per tier gathered from the engines.
    async fn pool_info(&self, rec: &PoolRec) -> PoolInfo {
        let mut scm = Stats::default();
        let mut nvme = Stats::default();
        let mut err = String::new();
        let mut disabled = 0u32;
        let q = PoolQueryShardReq {
            pool_uuid: rec.uuid.clone(),
        };
        for r in &rec.ranks {
            let resp: Result<PoolQueryShardResp> = self
                .engine_call(*r, method::POOL_QUERY, &q, ENGINE_CALL)
                .await;
            match resp.and_then(|x| DaosError::check(x.status, "pool query").map(|_| x)) {
                Ok(x) => {
                    for t in x.shard.map(|s| s.targets).unwrap_or_default() {
                        scm.add(t.scm_total, t.scm_free);
                        nvme.add(t.nvme_total, t.nvme_free);
                    }
                }
                Err(e) => {
                    disabled += rec.tgts.get(r).copied().unwrap_or(0);
                    err = format!("rank {r}: {e}");
                }
            }
        }
        PoolInfo {
            uuid: rec.uuid.clone(),
            label: rec.label.clone(),
            state: if disabled > 0 && rec.state == PoolState::Ready {
                "Degraded".into()
            } else {
                rec.state.as_str().into()
            },
            svc_reps: rec.svc_reps.clone(),
            ranks: rec.ranks.clone(),
            total_targets: rec.tgts.values().sum(),
            disabled_targets: disabled,
            leader: rec.svc_reps.first().copied().unwrap_or(0),
            version: rec.map_version,
            tier_stats: vec![scm.usage("SCM"), nvme.usage("NVMe")],
            owner: rec.owner.clone(),
            owner_group: rec.group.clone(),
            total_engines: rec.ranks.len() as u64,
            query_error: err,
        }
    }

    pub async fn pool_list(&self) -> Result<PoolListResp> {
        let ms = self.ms()?;
        let (recs, data_version) = ms
            .read(|db| {
                (
                    db.pools
                        .values()
                        .filter(|p| p.state != PoolState::Creating)
                        .cloned()
                        .collect::<Vec<_>>(),
                    db.data_version,
                )
            })
            .await?;
        let mut pools = Vec::new();
        for r in &recs {
            pools.push(self.pool_info(r).await);
        }
        Ok(PoolListResp {
            pools,
            data_version,
        })
    }

    pub async fn pool_query(&self, id: &str) -> Result<PoolQueryResp> {
        let rec = self.find(id).await?;
        Ok(PoolQueryResp {
            info: Some(self.pool_info(&rec).await),
        })
    }

    pub async fn pool_get_prop(&self, req: PoolGetPropReq) -> Result<PoolGetPropResp> {
        let rec = self.find(&req.id).await?;
        for n in &req.names {
            if props::def(n).is_none() {
                return Err(inval(format!("unknown pool property {n:?}")));
            }
        }
        let properties = props::DEFS
            .iter()
            .filter(|d| req.names.is_empty() || req.names.iter().any(|n| n == d.name))
            .map(|d| PoolPropertyInfo {
                name: d.name.into(),
                description: d.desc.into(),
                value: props::display(d, &rec.props, &rec.label, &rec.svc_reps),
            })
            .collect();
        Ok(PoolGetPropResp { properties })
    }

    pub async fn pool_set_prop(&self, req: PoolSetPropReq) -> Result<()> {
        let ms = self.ms()?;
        let rec = self.find(&req.id).await?;
        if req.properties.is_empty() {
            return Err(inval("no properties given: use name:value"));
        }
        let settings: Vec<(String, String)> = req
            .properties
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        let props = props::check_all(&settings, false)?;
        ms.write(MsCmd::PoolSetProps {
            uuid: rec.uuid,
            props,
        })
        .await?;
        Ok(())
    }
}

/// Marks a pool as being created by this server for as long as it lives.
struct CreatingGuard<'a> {
    server: &'a Server,
    uuid: String,
}

impl<'a> CreatingGuard<'a> {
    fn new(server: &'a Server, uuid: &str) -> Self {
        if let Ok(mut c) = server.creating.lock() {
            c.insert(uuid.to_string());
        }
        CreatingGuard {
            server,
            uuid: uuid.to_string(),
        }
    }
}

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.server.creating.lock() {
            c.remove(&self.uuid);
        }
    }
}

fn rank_err(rank: u32, e: DaosError) -> DaosError {
    DaosError::new(e.der, format!("rank {rank}: {}", e.msg))
}

#[derive(Default)]
struct Stats {
    total: u64,
    free: u64,
    min: Option<u64>,
    max: u64,
    n: u64,
}

impl Stats {
    fn add(&mut self, total: u64, free: u64) {
        self.total += total;
        self.free += free;
        self.min = Some(self.min.map_or(free, |m| m.min(free)));
        self.max = self.max.max(free);
        self.n += 1;
    }

    fn usage(&self, media: &str) -> TierUsage {
        TierUsage {
            total: self.total,
            free: self.free,
            min: self.min.unwrap_or(0),
            max: self.max,
            mean: self.free.checked_div(self.n).unwrap_or(0),
            media_type: media.into(),
        }
    }
}

/// The first pool map of a pool: its ranks with their data-plane addresses,
/// every target in the pool.
fn pool_map(
    rec: &PoolRec,
    members: &std::collections::BTreeMap<u32, crate::ms::state::Member>,
) -> proto::pool::PoolMap {
    use proto::pool::{CompState, PoolMapRank, PoolMapTarget};
    proto::pool::PoolMap {
        version: rec.map_version,
        ranks: rec
            .ranks
            .iter()
            .map(|r| {
                let m = members.get(r);
                PoolMapRank {
                    rank: *r,
                    uri: m.map(|m| m.fabric_uri.clone()).unwrap_or_default(),
                    fault_domain: m
                        .map(|m| {
                            if m.fault_domain.is_empty() {
                                m.addr.clone()
                            } else {
                                m.fault_domain.clone()
                            }
                        })
                        .unwrap_or_default(),
                    state: CompState::CompUpin as i32,
                    targets: (0..*rec.tgts.get(r).unwrap_or(&1))
                        .map(|idx| PoolMapTarget {
                            idx,
                            state: CompState::CompUpin as i32,
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}
