//! The layout function: where an object's shards live, computed from the pool map
//! and the object id alone, identically on every client and engine.
//!
//! Invariant: [`layout`] is a pure function of the map's ranks, targets, fault
//! domains and states and of the oid (not of the map version, of rank or target
//! order in the map, or of anything in the process). Its hashes and seeds are
//! fixed ([`crate::hash`]) and a golden test pins its output.
//!
//! # Rules
//!
//! **Layout targets.** Every target whose effective state (see
//! [`crate::pool_map`]) is not `New` takes part in the *base* layout, whether it
//! serves or not. `New` targets are in no layout until they leave `New`. `Up`,
//! `Down` and `DownOut` targets hold their place in the base layout but never
//! receive a shard: their shards are remapped (below). `UpIn` and `Drain` targets
//! serve; a draining target keeps its shards until the control plane marks it
//! `DownOut`.
//!
//! **Group size and count.** A group has [`ObjectClass::group_size`] shards (1,
//! the replica count, or data + parity). `Groups::Max` gives
//! `layout targets / group size` groups (at least 1), so `SX` has one shard per
//! layout target and, with every target serving, covers each exactly once.
//! `Groups::Fixed(n)` gives `n` groups capped at that same number, so a class
//! asking for more groups than the pool holds gets as many as it holds. Shard `s`
//! of group `g` is shard index `g * group_size + s`. If the map has fewer layout
//! targets than the group size, [`layout`] fails with `DER_INVAL`, naming the
//! class and the counts.
//!
//! **Base layout.** Each layout target gets a score `xxh64(oid, rank, tgt)`.
//! Shards are chosen one at a time, group by group; each takes the target that is
//! best by, in order: (1) its fault domain is not yet used by the group, (2) its
//! rank is not yet used by the group, (3) fewest shards of this object already on
//! the target, (4) fewest on its fault domain, (5) fewest on its rank, (6) the
//! highest score. A target is never used twice in a group. So a group spans
//! distinct fault domains, else distinct ranks, else distinct targets, as far as
//! the map allows; shards of one object spread over targets, then domains and
//! ranks; and since the score is a hash of the oid, different objects start in
//! different places and every target receives about the same number of shards.
//! A fault domain is the rank's `fault_domain`; an empty one makes the rank its
//! own domain.
//!
//! **Remapping.** Shards whose base target does not serve are remapped, group by
//! group: first those on `DownOut` and `Up` targets (failures already rebuilt,
//! and reintegrations), then those on `Down` targets (the newest failures), by
//! shard index within each kind. Each takes the serving target, not already used
//! by the group's serving members or earlier replacements, that is best by:
//! (1) its rank is not used by those, (2) its fault domain is not used by the
//! group's other base targets or earlier replacements, (3) fewest base shards of
//! this object on it, (4) the highest score `xxh64(oid, shard, rank, tgt)`. When
//! no serving target is free, the shard stays on its base target and is listed
//! in [`Layout::unavailable`] (degraded: I/O uses the group's other shards).
//!
//! Consequences: shards on serving targets never move. Marking a rank `Down`
//! moves only the shards that were on it, provided no group already had another
//! remapped shard that depends on it (always so for the first failure, and for
//! failures handled one at a time, `Down` then rebuilt to `DownOut`, in groups
//! spanning distinct ranks); marking it `UpIn` again gives back exactly the
//! layout before, since the function only looks at states. When the map has at
//! least `group size` ranks with a serving target, every group's shards are on
//! distinct ranks.
//!
//! **Dkeys.** [`dkey_group`] picks a dkey's redundancy group as DAOS does: the
//! dkey's hash (MurmurHash64A with seed 5731, or the dkey's own little-endian
//! value for object types with uint64 dkeys) through jump consistent hashing
//! over the group count.
//!
//! Cost: `O(shards x targets)` per layout, e.g. about a million cheap steps for
//! `SX` over 1000 targets; callers cache a layout per (object, map version).

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::class::ObjectClass;
use crate::error::PlacementError;
use crate::hash::{jump, murmur64, xxh64};
use crate::oid::ObjectId;
use crate::pool_map::{CompState, PoolMap, TargetId};

/// Seed of the base-layout score, `xxh64(hi, lo, rank, tgt)`: the bytes
/// `"pl.place"` read little-endian.
pub const PLACE_SEED: u64 = u64::from_le_bytes(*b"pl.place");
/// Seed of the remapping score, `xxh64(hi, lo, shard, rank, tgt)`: `"pl.remap"`.
pub const REMAP_SEED: u64 = u64::from_le_bytes(*b"pl.remap");
/// DAOS's seed for hashing dkeys (`obj_dkey2hash`).
pub const DKEY_HASH_SEED: u32 = 5731;

/// Where the shards of one object live under one pool map version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub oid: ObjectId,
    pub class: ObjectClass,
    /// The version of the pool map this layout was computed from.
    pub map_version: u32,
    /// `groups[g][s]`: the target of shard `s` of group `g` (shard index
    /// `g * group_size + s`). Every group has the same length.
    pub groups: Vec<Vec<TargetId>>,
    /// Shard indexes, ascending, whose target does not serve because no serving
    /// target was free for them; `groups` names their base target.
    pub unavailable: Vec<u32>,
}

impl Layout {
    /// Shards per group.
    pub fn group_size(&self) -> usize {
        self.groups.first().map_or(0, Vec::len)
    }

    /// Number of redundancy groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of shards (`group_count * group_size`).
    pub fn shard_count(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    /// The targets of group `g`.
    pub fn group(&self, g: usize) -> Option<&[TargetId]> {
        self.groups.get(g).map(Vec::as_slice)
    }

    /// The target of shard index `shard`.
    pub fn shard(&self, shard: u32) -> Option<TargetId> {
        let size = self.group_size();
        if size == 0 {
            return None;
        }
        let s = shard as usize;
        self.groups.get(s / size)?.get(s % size).copied()
    }

    /// Every shard index with its target, in shard order.
    pub fn shards(&self) -> impl Iterator<Item = (u32, TargetId)> + '_ {
        self.groups
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| (i as u32, *t))
    }

    /// False if the shard's target does not serve (see [`Layout::unavailable`]).
    pub fn is_available(&self, shard: u32) -> bool {
        self.unavailable.binary_search(&shard).is_err()
    }

    /// The available shard indexes this layout puts on `target`: what that
    /// target must hold. Several when the object has more shards than the map
    /// has targets to spread them over.
    pub fn shards_on(&self, target: TargetId) -> Vec<u32> {
        self.shards()
            .filter(|(s, t)| *t == target && self.is_available(*s))
            .map(|(s, _)| s)
            .collect()
    }

    /// The shard indexes whose target (or availability) differs in `other`:
    /// what rebuild must move between two map versions.
    pub fn changed_shards(&self, other: &Layout) -> Vec<u32> {
        let n = self.shard_count().max(other.shard_count()) as u32;
        (0..n)
            .filter(|&s| {
                self.shard(s) != other.shard(s) || self.is_available(s) != other.is_available(s)
            })
            .collect()
    }

    /// The redundancy group holding `dkey`; see [`dkey_group`].
    pub fn dkey_group(&self, dkey: &[u8]) -> usize {
        group_of_hash(obj_dkey_hash(self.oid, dkey), self.group_count())
    }
}

/// DAOS's dkey hash: MurmurHash64A of the dkey bytes with seed 5731.
pub fn dkey_hash(dkey: &[u8]) -> u64 {
    murmur64(dkey, DKEY_HASH_SEED)
}

/// The dkey hash for an object, as DAOS's `obj_dkey2hash`: for object types with
/// uint64 dkeys (arrays, `*_UINT64`) an 8-byte dkey is its own hash (read
/// little-endian); otherwise [`dkey_hash`].
pub fn obj_dkey_hash(oid: ObjectId, dkey: &[u8]) -> u64 {
    let uint = oid.otype().is_ok_and(|t| t.is_dkey_uint64());
    match <[u8; 8]>::try_from(dkey) {
        Ok(b) if uint => u64::from_le_bytes(b),
        _ => dkey_hash(dkey),
    }
}

/// The group, in `0..groups`, of a dkey hash: jump consistent hash (DAOS's
/// `d_hash_jump`). Zero groups gives 0.
pub fn group_of_hash(hash: u64, groups: usize) -> usize {
    jump(hash, u32::try_from(groups).unwrap_or(u32::MAX)) as usize
}

/// The redundancy group of `layout` that holds `dkey`.
pub fn dkey_group(layout: &Layout, dkey: &[u8]) -> usize {
    layout.dkey_group(dkey)
}

/// A layout target, with indexes of its rank and fault domain.
struct Cand {
    id: TargetId,
    rank: usize,
    dom: usize,
    serving: bool,
    /// `Down`: the newest failures, remapped after `DownOut`/`Up`.
    late: bool,
    score: u64,
}

fn place_score(oid: ObjectId, t: TargetId) -> u64 {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&oid.hi.to_le_bytes());
    b[8..16].copy_from_slice(&oid.lo.to_le_bytes());
    b[16..20].copy_from_slice(&t.rank.0.to_le_bytes());
    b[20..].copy_from_slice(&t.tgt.0.to_le_bytes());
    xxh64(&b, PLACE_SEED)
}

fn remap_score(oid: ObjectId, shard: u32, t: TargetId) -> u64 {
    let mut b = [0u8; 28];
    b[..8].copy_from_slice(&oid.hi.to_le_bytes());
    b[8..16].copy_from_slice(&oid.lo.to_le_bytes());
    b[16..20].copy_from_slice(&shard.to_le_bytes());
    b[20..24].copy_from_slice(&t.rank.0.to_le_bytes());
    b[24..].copy_from_slice(&t.tgt.0.to_le_bytes());
    xxh64(&b, REMAP_SEED)
}

/// The layout targets of `map`, sorted by id, with rank and domain indexes.
fn candidates(map: &PoolMap, oid: ObjectId) -> (Vec<Cand>, usize, usize) {
    let mut ranks: Vec<_> = map.ranks.iter().collect();
    ranks.sort_by_key(|r| r.rank);
    let mut domains: HashMap<&str, usize> = HashMap::new();
    let mut ndoms = 0usize;
    let mut cands = Vec::new();
    for (ri, r) in ranks.iter().enumerate() {
        let dom = if r.fault_domain.is_empty() {
            ndoms += 1;
            ndoms - 1
        } else {
            *domains.entry(r.fault_domain.as_str()).or_insert_with(|| {
                ndoms += 1;
                ndoms - 1
            })
        };
        for t in &r.targets {
            let state = CompState::combine(r.state, t.state);
            if !state.in_layout() {
                continue;
            }
            let id = TargetId {
                rank: r.rank,
                tgt: t.idx,
            };
            cands.push(Cand {
                id,
                rank: ri,
                dom,
                serving: state.is_serving(),
                late: state == CompState::Down,
                score: place_score(oid, id),
            });
        }
    }
    // Maps whose public fields were edited by hand may repeat a target; the
    // layout stays a function of the set of targets.
    cands.sort_by_key(|c| c.id);
    cands.dedup_by_key(|c| c.id);
    (cands, ranks.len(), ndoms)
}

/// Chooses the base target (index into `c`) of every shard; see the module doc.
fn base_layout(c: &[Cand], nranks: usize, ndoms: usize, ngroups: usize, size: usize) -> Vec<usize> {
    let mut t_use = vec![0u32; c.len()];
    let mut r_use = vec![0u32; nranks];
    let mut d_use = vec![0u32; ndoms];
    // Marks hold `group + 1` for the group that uses the target/rank/domain, so
    // they need no clearing between groups.
    let mut t_mark = vec![0usize; c.len()];
    let mut r_mark = vec![0usize; nranks];
    let mut d_mark = vec![0usize; ndoms];
    let mut out = Vec::with_capacity(ngroups * size);
    for g in 0..ngroups {
        let stamp = g + 1;
        for _ in 0..size {
            let best = c
                .iter()
                .enumerate()
                .filter(|(i, _)| t_mark[*i] != stamp)
                .min_by_key(|(i, x)| {
                    (
                        d_mark[x.dom] == stamp,
                        r_mark[x.rank] == stamp,
                        t_use[*i],
                        d_use[x.dom],
                        r_use[x.rank],
                        Reverse(x.score),
                        x.id,
                    )
                })
                .map(|(i, _)| i);
            // Unreachable: the caller checked there are at least `size` targets.
            let Some(i) = best else { break };
            let x = &c[i];
            t_mark[i] = stamp;
            r_mark[x.rank] = stamp;
            d_mark[x.dom] = stamp;
            t_use[i] += 1;
            r_use[x.rank] += 1;
            d_use[x.dom] += 1;
            out.push(i);
        }
    }
    out
}

/// Replaces non-serving base targets; returns the final targets and the shards
/// left unavailable. See the module doc.
fn remap(
    c: &[Cand],
    base: &[usize],
    nranks: usize,
    size: usize,
    oid: ObjectId,
) -> (Vec<usize>, Vec<u32>) {
    let mut fin = base.to_vec();
    let mut unavailable = Vec::new();
    let mut base_use = vec![0u32; c.len()];
    for &i in base {
        base_use[i] += 1;
    }
    let mut t_mark = vec![0usize; c.len()];
    let mut r_mark = vec![0usize; nranks];
    for (g, members) in base.chunks(size).enumerate() {
        if members.iter().all(|&i| c[i].serving) {
            continue;
        }
        let stamp = g + 1;
        for &i in members.iter().filter(|&&i| c[i].serving) {
            t_mark[i] = stamp;
            r_mark[c[i].rank] = stamp;
        }
        let mut failed: Vec<usize> = (0..members.len())
            .filter(|&s| !c[members[s]].serving)
            .collect();
        failed.sort_by_key(|&s| (c[members[s]].late, s));
        let mut repl_doms: Vec<usize> = Vec::new();
        for s in failed {
            let shard = (g * size + s) as u32;
            // Domains of the group's other base targets, whatever their state, so
            // that this choice does not change when another member fails.
            let dom_used = |d: usize| {
                members
                    .iter()
                    .enumerate()
                    .any(|(k, &m)| k != s && c[m].dom == d)
                    || repl_doms.contains(&d)
            };
            let best = c
                .iter()
                .enumerate()
                .filter(|(i, x)| x.serving && t_mark[*i] != stamp)
                .min_by_key(|(i, x)| {
                    (
                        r_mark[x.rank] == stamp,
                        dom_used(x.dom),
                        base_use[*i],
                        Reverse(remap_score(oid, shard, x.id)),
                        x.id,
                    )
                })
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    fin[g * size + s] = i;
                    t_mark[i] = stamp;
                    r_mark[c[i].rank] = stamp;
                    repl_doms.push(c[i].dom);
                }
                None => unavailable.push(shard),
            }
        }
    }
    unavailable.sort_unstable();
    (fin, unavailable)
}

/// Computes the layout of `oid` under `map`. See the module doc for the rules.
///
/// Fails with `DER_INVAL` if the oid does not encode a known class, or if the
/// map has fewer layout targets than the class's group size.
pub fn layout(map: &PoolMap, oid: ObjectId) -> Result<Layout, PlacementError> {
    let class = oid.class()?;
    let size = class.group_size() as usize;
    let (cands, nranks, ndoms) = candidates(map, oid);
    let t = cands.len();
    if t < size || size == 0 {
        let serving = cands.iter().filter(|c| c.serving).count();
        let mut ranks: Vec<_> = cands.iter().map(|c| c.rank).collect();
        ranks.dedup();
        return Err(PlacementError::NotEnoughTargets {
            class: class.name(),
            needed: class.group_size(),
            version: map.version,
            targets: t,
            serving,
            ranks: ranks.len(),
        });
    }
    let fit = (t / size).max(1);
    let ngroups = match class.groups() {
        crate::class::Groups::Fixed(n) => (n as usize).clamp(1, fit),
        crate::class::Groups::Max => fit,
    };
    let base = base_layout(&cands, nranks, ndoms, ngroups, size);
    let (fin, unavailable) = remap(&cands, &base, nranks, size, oid);
    let groups = fin
        .chunks(size)
        .map(|g| g.iter().map(|&i| cands[i].id).collect())
        .collect();
    Ok(Layout {
        oid,
        class,
        map_version: map.version,
        groups,
        unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oid::ObjectType;
    use crate::pool_map::{Rank, RankEntry};

    fn map(ranks: u32, tgts: u32) -> PoolMap {
        PoolMap::new(
            1,
            (0..ranks)
                .map(|r| {
                    RankEntry::new(
                        Rank(r),
                        format!("tcp://127.0.0.{}:20000", r + 1),
                        format!("host{r}"),
                        tgts,
                        CompState::UpIn,
                    )
                })
                .collect(),
        )
        .unwrap()
    }

    fn oid(class: &str, lo: u64) -> ObjectId {
        ObjectId::generate(
            0,
            lo,
            ObjectType::MultiHashed,
            &ObjectClass::from_name(class).unwrap(),
        )
    }

    #[test]
    fn seeds_are_fixed() {
        assert_eq!(PLACE_SEED, 0x6563_616c_702e_6c70);
        assert_eq!(REMAP_SEED, 0x7061_6d65_722e_6c70);
    }

    /// Pins the layout function: if this changes, objects written by an older
    /// version would be looked for in the wrong place.
    #[test]
    fn golden_layouts() {
        let mut m = map(3, 4);
        let pairs = |l: &Layout| -> Vec<Vec<(u32, u32)>> {
            l.groups
                .iter()
                .map(|g| g.iter().map(|t| (t.rank.0, t.tgt.0)).collect())
                .collect()
        };
        let check = |m: &PoolMap, c: &str, lo: u64, want: &[&[(u32, u32)]]| {
            assert_eq!(pairs(&layout(m, oid(c, lo)).unwrap()), want, "{c} lo {lo}");
        };
        check(&m, "S1", 1, &[&[(2, 0)]]);
        check(
            &m,
            "RP_3G2",
            7,
            &[&[(1, 2), (0, 3), (2, 3)], &[(1, 0), (2, 2), (0, 2)]],
        );
        check(
            &m,
            "EC_2P1GX",
            42,
            &[
                &[(0, 1), (2, 0), (1, 2)],
                &[(2, 1), (0, 0), (1, 1)],
                &[(0, 2), (2, 3), (1, 3)],
                &[(0, 3), (2, 2), (1, 0)],
            ],
        );
        check(
            &m,
            "S4",
            1000,
            &[&[(2, 1)], &[(0, 2)], &[(1, 1)], &[(0, 0)]],
        );

        m.set_rank_state(Rank(1), CompState::Down).unwrap();
        check(&m, "S1", 1, &[&[(2, 0)]]);
        check(
            &m,
            "RP_3G2",
            7,
            &[&[(0, 1), (0, 3), (2, 3)], &[(0, 1), (2, 2), (0, 2)]],
        );
        check(
            &m,
            "EC_2P1GX",
            42,
            &[
                &[(0, 1), (2, 0), (0, 2)],
                &[(2, 1), (0, 0), (2, 3)],
                &[(0, 2), (2, 3), (0, 1)],
                &[(0, 3), (2, 2), (2, 0)],
            ],
        );
        check(
            &m,
            "S4",
            1000,
            &[&[(2, 1)], &[(0, 2)], &[(2, 2)], &[(0, 0)]],
        );
    }

    #[test]
    fn too_few_targets_is_inval_naming_class_and_counts() {
        let m = map(2, 1);
        let e = layout(&m, oid("RP_3G1", 1)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("RP_3G1"), "{msg}");
        assert!(msg.contains("needs 3 targets"), "{msg}");
        assert!(msg.contains("has 2 targets"), "{msg}");
        assert!(msg.contains("on 2 ranks"), "{msg}");
        assert_eq!(e.to_daos().der, proto::Der::INVAL);
        // Two targets per rank: distinct targets, not distinct ranks.
        let l = layout(&map(2, 2), oid("RP_3G1", 1)).unwrap();
        let g = &l.groups[0];
        assert_eq!(g.len(), 3);
        assert!(g[0] != g[1] && g[1] != g[2] && g[0] != g[2]);
    }

    #[test]
    fn group_counts() {
        let m = map(2, 4);
        let n = |c: &str| layout(&m, oid(c, 3)).unwrap().group_count();
        assert_eq!(n("S1"), 1);
        assert_eq!(n("S4"), 4);
        assert_eq!(n("S16"), 8); // capped at what 8 targets hold
        assert_eq!(n("SX"), 8);
        assert_eq!(n("RP_2GX"), 4);
        assert_eq!(n("RP_3GX"), 2);
        assert_eq!(n("EC_4P2GX"), 1);
        assert_eq!(n("RP_2G8"), 4);
        // New targets are not part of any layout.
        let mut m2 = m.clone();
        m2.set_rank_state(Rank(1), CompState::New).unwrap();
        assert_eq!(layout(&m2, oid("SX", 3)).unwrap().group_count(), 4);
    }

    #[test]
    fn replicas_on_distinct_ranks_and_spread() {
        let m = map(4, 2);
        for lo in 0..200 {
            let l = layout(&m, oid("RP_2G4", lo)).unwrap();
            let mut all: Vec<TargetId> = l.groups.iter().flatten().copied().collect();
            for g in &l.groups {
                assert_ne!(g[0].rank, g[1].rank);
            }
            // 8 shards over 8 targets: every target once.
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 8);
        }
    }

    #[test]
    fn fault_domains_beat_ranks() {
        // Ranks 0,1 on host a; 2,3 on host b; 4 on host c.
        let doms = ["a", "a", "b", "b", "c"];
        let m = PoolMap::new(
            1,
            doms.iter()
                .enumerate()
                .map(|(r, d)| RankEntry::new(Rank(r as u32), "", *d, 2, CompState::UpIn))
                .collect(),
        )
        .unwrap();
        let dom = |t: TargetId| doms[t.rank.0 as usize];
        for lo in 0..200 {
            let l = layout(&m, oid("RP_3G1", lo)).unwrap();
            let g = &l.groups[0];
            assert!(dom(g[0]) != dom(g[1]) && dom(g[1]) != dom(g[2]) && dom(g[0]) != dom(g[2]));
        }
    }

    #[test]
    fn down_rank_remaps_and_degrades() {
        let mut m = map(3, 1);
        let before = layout(&m, oid("RP_3G1", 9)).unwrap();
        m.set_rank_state(Rank(1), CompState::Down).unwrap();
        let after = layout(&m, oid("RP_3G1", 9)).unwrap();
        // No spare target: the shard stays named but unavailable.
        assert_eq!(after.groups, before.groups);
        let lost = before.shards_on(TargetId::new(1, 0));
        assert_eq!(after.unavailable, lost);
        assert!(!after.is_available(lost[0]));
        assert!(after.shards_on(TargetId::new(1, 0)).is_empty());
        assert_eq!(before.changed_shards(&after), lost);
        assert_eq!(after.map_version, 2);

        let mut m = map(4, 1);
        let before = layout(&m, oid("RP_3G1", 9)).unwrap();
        let victim = before.groups[0][1].rank;
        m.set_rank_state(victim, CompState::Down).unwrap();
        let after = layout(&m, oid("RP_3G1", 9)).unwrap();
        assert!(after.unavailable.is_empty());
        assert_eq!(after.groups[0][0], before.groups[0][0]);
        assert_eq!(after.groups[0][2], before.groups[0][2]);
        assert_ne!(after.groups[0][1].rank, victim);
        m.set_rank_state(victim, CompState::UpIn).unwrap();
        assert_eq!(layout(&m, oid("RP_3G1", 9)).unwrap().groups, before.groups);
    }

    #[test]
    fn bad_oid_is_inval() {
        let e = layout(&map(1, 1), ObjectId::new(0, 1)).unwrap_err();
        assert_eq!(e.to_daos().der, proto::Der::INVAL);
    }

    #[test]
    fn dkeys_pick_groups_like_daos() {
        let m = map(2, 4);
        let l = layout(&m, oid("SX", 5)).unwrap();
        assert_eq!(dkey_hash(b"dkey"), 0x9baa_f4ca_bb1b_ad17);
        assert_eq!(
            dkey_group(&l, b"dkey"),
            jump(0x9baa_f4ca_bb1b_ad17, 8) as usize
        );
        let mut counts = [0usize; 8];
        for i in 0..8000u32 {
            counts[dkey_group(&l, format!("file{i}").as_bytes())] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");

        // Arrays: an 8-byte dkey is its own hash.
        let arr = ObjectId::generate(0, 5, ObjectType::ArrayByte, &ObjectClass::SX);
        let la = layout(&m, arr).unwrap();
        assert_eq!(obj_dkey_hash(arr, &7u64.to_le_bytes()), 7);
        assert_eq!(la.dkey_group(&7u64.to_le_bytes()), jump(7, 8) as usize);
        assert_eq!(obj_dkey_hash(arr, b"abc"), dkey_hash(b"abc"));
        assert_eq!(group_of_hash(123, 0), 0);
    }
}
