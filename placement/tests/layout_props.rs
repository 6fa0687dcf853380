//! Property tests of the layout function against the rules in `placement::layout`,
//! over random pool maps (1-8 ranks, 1-8 targets each, random fault domains and
//! states) and random object ids; plus the evenness checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use placement::{
    layout, CompState, Groups, Layout, ObjectClass, ObjectId, ObjectType, PoolMap, Rank, RankEntry,
    TargetEntry, TargetId, TgtIdx,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn state_strategy() -> impl Strategy<Value = CompState> {
    prop_oneof![
        12 => Just(CompState::UpIn),
        1 => Just(CompState::Drain),
        1 => Just(CompState::New),
        1 => Just(CompState::Up),
        1 => Just(CompState::Down),
        1 => Just(CompState::DownOut),
    ]
}

prop_compose! {
    fn rank_strategy(nranks: u32)(
        ntgts in 1u32..=8,
        dom in 0..nranks,
        state in state_strategy(),
        tgt_states in prop::collection::vec(state_strategy(), 8),
    ) -> (u32, u32, CompState, Vec<CompState>) {
        (ntgts, dom, state, tgt_states)
    }
}

fn map_strategy() -> impl Strategy<Value = PoolMap> {
    (1u32..=8)
        .prop_flat_map(|n| prop::collection::vec(rank_strategy(n), n as usize))
        .prop_map(|ranks| {
            let ranks = ranks
                .into_iter()
                .enumerate()
                .map(|(r, (ntgts, dom, state, tgt_states))| RankEntry {
                    rank: Rank(r as u32 * 3 + 1),
                    uri: format!("tcp://127.0.0.{}:20000", r + 1),
                    fault_domain: format!("host{dom}"),
                    state,
                    targets: (0..ntgts)
                        .map(|i| TargetEntry {
                            idx: TgtIdx(i),
                            state: tgt_states[i as usize],
                        })
                        .collect(),
                })
                .collect();
            PoolMap::new(5, ranks).unwrap()
        })
}

fn class_strategy() -> impl Strategy<Value = ObjectClass> {
    let all: Vec<ObjectClass> = ObjectClass::all()
        .into_iter()
        .filter(|c| c.group_size() <= 10)
        .collect();
    prop::sample::select(all)
}

fn oid_strategy() -> impl Strategy<Value = ObjectId> {
    (
        any::<u32>(),
        any::<u64>(),
        prop::sample::select(ObjectType::ALL.to_vec()),
        class_strategy(),
    )
        .prop_map(|(hi, lo, t, c)| ObjectId::generate(hi, lo, t, &c))
}

/// The same map with every layout target serving: the base layout.
fn healthy(map: &PoolMap) -> PoolMap {
    let mut m = map.clone();
    for r in &mut m.ranks {
        if r.state.in_layout() {
            r.state = CompState::UpIn;
        }
        for t in &mut r.targets {
            if t.state.in_layout() {
                t.state = CompState::UpIn;
            }
        }
    }
    m
}

fn serving_ranks(map: &PoolMap) -> usize {
    map.targets()
        .filter(|(_, s)| s.is_serving())
        .map(|(t, _)| t.rank)
        .collect::<BTreeSet<_>>()
        .len()
}

/// The invariants every layout keeps, whatever the map.
fn check_invariants(map: &PoolMap, l: &Layout) -> Result<(), TestCaseError> {
    let size = l.class.group_size() as usize;
    let layout_targets = map.targets().filter(|(_, s)| s.in_layout()).count();
    let serving = map.serving_count();
    prop_assert!(l.group_count() >= 1);
    prop_assert!(l.group_count() * size <= layout_targets.max(size));
    if l.class.groups() == Groups::Max {
        prop_assert_eq!(l.group_count(), (layout_targets / size).max(1));
    }
    for (g, grp) in l.groups.iter().enumerate() {
        prop_assert_eq!(grp.len(), size);
        let distinct: BTreeSet<_> = grp.iter().collect();
        prop_assert_eq!(
            distinct.len(),
            size,
            "group {} repeats a target: {:?}",
            g,
            grp
        );
        if serving_ranks(map) >= size {
            let ranks: BTreeSet<_> = grp.iter().map(|t| t.rank).collect();
            prop_assert_eq!(ranks.len(), size, "group {} repeats a rank: {:?}", g, grp);
        }
    }
    for (s, t) in l.shards() {
        let st = map.target_state(t);
        prop_assert!(st.is_some_and(CompState::in_layout), "shard {} on {}", s, t);
        let serving_here = st.is_some_and(CompState::is_serving);
        prop_assert_eq!(
            l.is_available(s),
            serving_here,
            "shard {} on {} {:?}",
            s,
            t,
            st
        );
    }
    if serving >= size {
        prop_assert!(l.unavailable.is_empty(), "unavailable {:?}", l.unavailable);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn layout_rules_hold(map in map_strategy(), oid in oid_strategy(), pick in any::<prop::sample::Index>()) {
        let class = oid.class().unwrap();
        let size = class.group_size() as usize;
        let layout_targets = map.targets().filter(|(_, s)| s.in_layout()).count();
        let l = match layout(&map, oid) {
            Ok(l) => l,
            Err(e) => {
                prop_assert!(layout_targets < size, "unexpected error {}", e);
                prop_assert_eq!(e.to_daos().der, proto::Der::INVAL);
                prop_assert!(e.to_string().contains(&class.name()));
                return Ok(());
            }
        };
        prop_assert!(layout_targets >= size);

        // Deterministic, and independent of the version and of rank order.
        prop_assert_eq!(&layout(&map, oid).unwrap(), &l);
        let mut p = map.to_proto();
        p.ranks.reverse();
        p.version += 9;
        let shuffled = PoolMap::from_proto(&p).unwrap();
        prop_assert_eq!(&layout(&shuffled, oid).unwrap().groups, &l.groups);

        check_invariants(&map, &l)?;

        // SX: one shard per layout target; with all serving, each exactly once.
        if class == ObjectClass::SX {
            let mut count: BTreeMap<TargetId, usize> = BTreeMap::new();
            for (_, t) in l.shards() {
                *count.entry(t).or_default() += 1;
            }
            for (t, s) in map.targets() {
                if s.is_serving() {
                    prop_assert!(count.get(&t).copied().unwrap_or(0) >= 1, "{} has no shard", t);
                }
            }
            if map.serving_count() == layout_targets {
                prop_assert_eq!(l.shard_count(), layout_targets);
                prop_assert!(count.values().all(|&c| c == 1));
            }
        }

        // Serving base members never move.
        let base = layout(&healthy(&map), oid).unwrap();
        for (s, t) in base.shards() {
            if map.target_state(t).is_some_and(CompState::is_serving) {
                prop_assert_eq!(l.shard(s), Some(t));
            }
        }

        // Mark one serving rank Down.
        let candidates: Vec<Rank> = map
            .ranks
            .iter()
            .filter(|r| r.state.is_serving())
            .map(|r| r.rank)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let victim = candidates[pick.index(candidates.len())];
        let old_state = map.rank(victim).unwrap().state;
        let mut down = map.clone();
        prop_assert!(down.set_rank_state(victim, CompState::Down).unwrap());
        let l2 = layout(&down, oid).unwrap();
        check_invariants(&down, &l2)?;
        prop_assert_eq!(l2.group_count(), l.group_count());

        let had_down = map.targets().any(|(_, s)| s == CompState::Down);
        let one_remap_per_group = l.groups.iter().enumerate().all(|(g, grp)| {
            grp.iter()
                .enumerate()
                .filter(|(s, t)| base.groups[g][*s] != **t || !l.is_available((g * size + s) as u32))
                .count()
                <= 1
        });
        // Groups span distinct ranks, so the victim holds at most one base shard
        // of each group.
        let distinct_ranks = serving_ranks(&down) >= size;
        for (s, t) in l.shards() {
            let was_base = base.shard(s) == Some(t) && l.is_available(s);
            if t.rank == victim {
                prop_assert!(l2.shard(s).is_some_and(|n| n.rank != victim) || !l2.is_available(s));
            } else if was_base || (!had_down && one_remap_per_group && distinct_ranks) {
                prop_assert_eq!(l2.shard(s), Some(t), "shard {} moved off {}", s, t);
                prop_assert_eq!(l2.is_available(s), l.is_available(s));
            }
        }

        // Bringing it back restores the layout exactly.
        let mut back = down.clone();
        prop_assert!(back.set_rank_state(victim, old_state).unwrap());
        prop_assert_eq!(&layout(&back, oid).unwrap().groups, &l.groups);
        prop_assert_eq!(&layout(&back, oid).unwrap().unavailable, &l.unavailable);
    }

    /// From a healthy map, marking any rank Down moves exactly its shards.
    #[test]
    fn first_failure_moves_only_its_shards(map in map_strategy(), oid in oid_strategy(), pick in any::<prop::sample::Index>()) {
        let map = healthy(&map);
        let Ok(l) = layout(&map, oid) else { return Ok(()) };
        let ranks: Vec<Rank> = map.ranks.iter().filter(|r| r.state.in_layout()).map(|r| r.rank).collect();
        let victim = ranks[pick.index(ranks.len())];
        let mut down = map.clone();
        down.set_rank_state(victim, CompState::Down).unwrap();
        let l2 = layout(&down, oid).unwrap();
        check_invariants(&down, &l2)?;
        let moved = l.changed_shards(&l2);
        let on_victim: Vec<u32> = l.shards().filter(|(_, t)| t.rank == victim).map(|(s, _)| s).collect();
        prop_assert_eq!(moved, on_victim);
        down.set_rank_state(victim, CompState::UpIn).unwrap();
        prop_assert_eq!(layout(&down, oid).unwrap().groups, l.groups);
    }

    #[test]
    fn proto_round_trip(map in map_strategy()) {
        let p = map.to_proto();
        prop_assert_eq!(&PoolMap::from_proto(&p).unwrap(), &map);
        prop_assert_eq!(PoolMap::from_proto(&p).unwrap().to_proto(), p);
    }
}

fn uniform_map(ranks: u32, tgts: u32) -> PoolMap {
    PoolMap::new(
        1,
        (0..ranks)
            .map(|r| RankEntry::new(Rank(r), "", format!("host{r}"), tgts, CompState::UpIn))
            .collect(),
    )
    .unwrap()
}

fn shard_counts(
    map: &PoolMap,
    class: &ObjectClass,
    n: usize,
    seed: u64,
) -> BTreeMap<TargetId, usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut count: BTreeMap<TargetId, usize> = map.targets().map(|(t, _)| (t, 0)).collect();
    for _ in 0..n {
        let oid = ObjectId::generate(rng.gen(), rng.gen(), ObjectType::MultiHashed, class);
        for (_, t) in layout(map, oid).unwrap().shards() {
            *count.entry(t).or_default() += 1;
        }
    }
    count
}

fn assert_even(count: &BTreeMap<TargetId, usize>, tolerance: f64) {
    let total: usize = count.values().sum();
    let mean = total as f64 / count.len() as f64;
    for (t, &c) in count {
        let dev = (c as f64 - mean).abs() / mean;
        assert!(
            dev <= tolerance,
            "{t}: {c} shards, mean {mean:.0}: {count:?}"
        );
    }
}

#[test]
fn s1_spreads_evenly_over_targets() {
    let count = shard_counts(&uniform_map(2, 4), &ObjectClass::S1, 10_000, 1);
    assert_eq!(count.len(), 8);
    assert_even(&count, 0.20);
}

#[test]
fn replicated_and_ec_spread_evenly() {
    let m = uniform_map(4, 4);
    for (name, seed) in [("RP_2G1", 2), ("RP_3G2", 3), ("EC_2P1G1", 4), ("S2", 5)] {
        let class = ObjectClass::from_name(name).unwrap();
        assert_even(&shard_counts(&m, &class, 5_000, seed), 0.20);
    }
}

#[test]
fn remapped_shards_spread_over_survivors() {
    let mut m = uniform_map(4, 4);
    m.set_rank_state(Rank(0), CompState::Down).unwrap();
    let healthy = uniform_map(4, 4);
    let class = ObjectClass::RP_2G1;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut count: BTreeMap<TargetId, usize> = BTreeMap::new();
    for _ in 0..8_000 {
        let oid = ObjectId::generate(rng.gen(), rng.gen(), ObjectType::KvHashed, &class);
        let before = layout(&healthy, oid).unwrap();
        let after = layout(&m, oid).unwrap();
        for s in before.changed_shards(&after) {
            let t = after.shard(s).unwrap();
            assert_ne!(t.rank, Rank(0));
            *count.entry(t).or_default() += 1;
        }
    }
    assert_eq!(count.len(), 12, "{count:?}");
    assert_even(&count, 0.30);
}
