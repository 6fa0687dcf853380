//! The pool map: the ranks and targets that hold a pool, their states, and a
//! version that rises with every change.
//!
//! Invariant: a [`PoolMap`] made by [`PoolMap::new`] or [`PoolMap::from_proto`]
//! (and kept by [`PoolMap::set_rank_state`] / [`PoolMap::set_target_state`]) has
//! ranks unique and sorted ascending, each rank's targets indexed exactly
//! `0..n` in order, and only known states. [`PoolMap::validate`] checks it again
//! for a map whose public fields were edited by hand.
//!
//! A target's *effective* state combines its own state with its rank's: the worse
//! of the two by the order `UpIn < Drain < Up < Down < DownOut < New`. So a rank
//! marked `Down` takes all its targets out of service without touching their own
//! states, and marking it `UpIn` again restores exactly what was there.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use proto::pool as pb;

use crate::error::PlacementError;

/// An engine's rank in the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(pub u32);

/// A target's index within its rank (`0..targets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TgtIdx(pub u32);

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for TgtIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for Rank {
    fn from(v: u32) -> Self {
        Rank(v)
    }
}

impl From<u32> for TgtIdx {
    fn from(v: u32) -> Self {
        TgtIdx(v)
    }
}

/// One target of the pool: its rank and its index within the rank. Orders by
/// rank, then index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TargetId {
    pub rank: Rank,
    pub tgt: TgtIdx,
}

impl TargetId {
    pub const fn new(rank: u32, tgt: u32) -> Self {
        TargetId {
            rank: Rank(rank),
            tgt: TgtIdx(tgt),
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {} tgt {}", self.rank, self.tgt)
    }
}

/// A rank's or target's state, DAOS's `PO_COMP_ST_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompState {
    /// Being added or reintegrated: holds its place in the layout, but not
    /// serving yet (its data is still being rebuilt onto it).
    Up,
    /// In the pool and serving.
    UpIn,
    /// Failed; its data not yet rebuilt elsewhere.
    Down,
    /// Failed and rebuilt elsewhere.
    DownOut,
    /// Added to the map, not part of any layout yet.
    New,
    /// Being drained: still serving until the control plane marks it `DownOut`.
    Drain,
}

impl CompState {
    /// All states, in the proto's numbering order.
    pub const ALL: [CompState; 6] = [
        CompState::Up,
        CompState::UpIn,
        CompState::Down,
        CompState::DownOut,
        CompState::New,
        CompState::Drain,
    ];

    /// True for `UpIn` and `Drain`: the component holds and serves data. `Up` is
    /// not serving: its data is still being rebuilt onto it.
    pub fn is_serving(self) -> bool {
        matches!(self, CompState::UpIn | CompState::Drain)
    }

    /// True for every state but `New`: the component holds a place in object
    /// layouts (non-serving ones have their shards remapped).
    pub fn in_layout(self) -> bool {
        self != CompState::New
    }

    /// DAOS's name: `UP`, `UPIN`, `DOWN`, `DOWNOUT`, `NEW`, `DRAIN`.
    pub fn name(self) -> &'static str {
        match self {
            CompState::Up => "UP",
            CompState::UpIn => "UPIN",
            CompState::Down => "DOWN",
            CompState::DownOut => "DOWNOUT",
            CompState::New => "NEW",
            CompState::Drain => "DRAIN",
        }
    }

    fn severity(self) -> u8 {
        match self {
            CompState::UpIn => 0,
            CompState::Drain => 1,
            CompState::Up => 2,
            CompState::Down => 3,
            CompState::DownOut => 4,
            CompState::New => 5,
        }
    }

    /// The effective state of a target whose rank is in `rank` and which is itself
    /// in `tgt`: the worse of the two.
    pub fn combine(rank: CompState, tgt: CompState) -> CompState {
        if rank.severity() > tgt.severity() {
            rank
        } else {
            tgt
        }
    }

    /// Converts the proto's `i32` field; `what` names the rank or target for the
    /// error message.
    pub fn from_proto_i32(v: i32, what: &str) -> Result<CompState, PlacementError> {
        match pb::CompState::try_from(v) {
            Ok(s) => CompState::try_from(s)
                .map_err(|_| PlacementError::InvalidMap(format!("{what}: state {v} is unknown"))),
            Err(_) => Err(PlacementError::InvalidMap(format!(
                "{what}: state {v} is unknown"
            ))),
        }
    }
}

impl fmt::Display for CompState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CompState {
    type Err = PlacementError;

    /// Accepts DAOS's names in any case, with or without `_` or a `COMP_` prefix
    /// (`upin`, `UP_IN`, `COMP_DOWNOUT`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up: String = s
            .trim()
            .to_ascii_uppercase()
            .chars()
            .filter(|c| *c != '_')
            .collect();
        let up = up.strip_prefix("COMP").unwrap_or(&up);
        CompState::ALL
            .into_iter()
            .find(|st| st.name() == up)
            .ok_or_else(|| PlacementError::UnknownState(s.to_string()))
    }
}

impl From<CompState> for pb::CompState {
    fn from(s: CompState) -> Self {
        match s {
            CompState::Up => pb::CompState::CompUp,
            CompState::UpIn => pb::CompState::CompUpin,
            CompState::Down => pb::CompState::CompDown,
            CompState::DownOut => pb::CompState::CompDownout,
            CompState::New => pb::CompState::CompNew,
            CompState::Drain => pb::CompState::CompDrain,
        }
    }
}

impl TryFrom<pb::CompState> for CompState {
    type Error = PlacementError;

    fn try_from(s: pb::CompState) -> Result<Self, Self::Error> {
        Ok(match s {
            pb::CompState::CompUp => CompState::Up,
            pb::CompState::CompUpin => CompState::UpIn,
            pb::CompState::CompDown => CompState::Down,
            pb::CompState::CompDownout => CompState::DownOut,
            pb::CompState::CompNew => CompState::New,
            pb::CompState::CompDrain => CompState::Drain,
            pb::CompState::CompUnknown => {
                return Err(PlacementError::InvalidMap(
                    "state COMP_UNKNOWN is not a valid state".to_string(),
                ))
            }
        })
    }
}

/// One target of a rank: its index and its own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetEntry {
    pub idx: TgtIdx,
    pub state: CompState,
}

/// One rank of the pool map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankEntry {
    pub rank: Rank,
    /// Data-plane URI, e.g. `tcp://127.0.0.1:20000`.
    pub uri: String,
    /// The failure domain (the host). Empty means the rank is its own domain.
    pub fault_domain: String,
    pub state: CompState,
    /// Indexed `0..n`: `targets[i].idx == TgtIdx(i)`.
    pub targets: Vec<TargetEntry>,
}

impl RankEntry {
    /// A rank with `nr_targets` targets, the rank and every target in `state`.
    pub fn new(
        rank: Rank,
        uri: impl Into<String>,
        fault_domain: impl Into<String>,
        nr_targets: u32,
        state: CompState,
    ) -> Self {
        RankEntry {
            rank,
            uri: uri.into(),
            fault_domain: fault_domain.into(),
            state,
            targets: (0..nr_targets)
                .map(|i| TargetEntry {
                    idx: TgtIdx(i),
                    state,
                })
                .collect(),
        }
    }
}

/// The pool map. See the module doc for its invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolMap {
    pub version: u32,
    /// Sorted by rank, ranks unique.
    pub ranks: Vec<RankEntry>,
}

impl PoolMap {
    /// Builds a map: sorts ranks by rank id and each rank's targets by index, then
    /// validates (unique ranks, dense target indexes).
    pub fn new(version: u32, mut ranks: Vec<RankEntry>) -> Result<PoolMap, PlacementError> {
        ranks.sort_by_key(|r| r.rank);
        for r in &mut ranks {
            r.targets.sort_by_key(|t| t.idx);
        }
        let map = PoolMap { version, ranks };
        map.validate()?;
        Ok(map)
    }

    /// Checks the invariant: ranks unique and ascending, every rank's targets
    /// indexed exactly `0..n` in order. The error names the rank and target.
    pub fn validate(&self) -> Result<(), PlacementError> {
        let mut prev: Option<Rank> = None;
        for r in &self.ranks {
            if let Some(p) = prev {
                if p == r.rank {
                    return Err(PlacementError::InvalidMap(format!(
                        "rank {} appears more than once",
                        r.rank
                    )));
                }
                if p > r.rank {
                    return Err(PlacementError::InvalidMap(format!(
                        "ranks out of order: rank {} after rank {p}",
                        r.rank
                    )));
                }
            }
            prev = Some(r.rank);
            let mut seen = HashSet::new();
            for t in &r.targets {
                if !seen.insert(t.idx) {
                    return Err(PlacementError::InvalidMap(format!(
                        "rank {}: target {} appears more than once",
                        r.rank, t.idx
                    )));
                }
            }
            for (i, t) in r.targets.iter().enumerate() {
                if t.idx.0 as usize != i {
                    let found: Vec<String> = r.targets.iter().map(|t| t.idx.to_string()).collect();
                    return Err(PlacementError::InvalidMap(format!(
                        "rank {}: target indexes must be 0..{} in order without gaps, found [{}]",
                        r.rank,
                        r.targets.len(),
                        found.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Decodes and validates the wire form. Ranks and targets may come in any
    /// order; duplicates, gaps in target indexes and unknown states are errors
    /// naming the rank or target.
    pub fn from_proto(m: &pb::PoolMap) -> Result<PoolMap, PlacementError> {
        let mut ranks = Vec::with_capacity(m.ranks.len());
        for r in &m.ranks {
            let state = CompState::from_proto_i32(r.state, &format!("rank {}", r.rank))?;
            let mut targets = Vec::with_capacity(r.targets.len());
            for t in &r.targets {
                let what = format!("rank {} target {}", r.rank, t.idx);
                targets.push(TargetEntry {
                    idx: TgtIdx(t.idx),
                    state: CompState::from_proto_i32(t.state, &what)?,
                });
            }
            ranks.push(RankEntry {
                rank: Rank(r.rank),
                uri: r.uri.clone(),
                fault_domain: r.fault_domain.clone(),
                state,
                targets,
            });
        }
        PoolMap::new(m.version, ranks)
    }

    /// The wire form, ranks and targets in order.
    pub fn to_proto(&self) -> pb::PoolMap {
        pb::PoolMap {
            version: self.version,
            ranks: self
                .ranks
                .iter()
                .map(|r| pb::PoolMapRank {
                    rank: r.rank.0,
                    uri: r.uri.clone(),
                    fault_domain: r.fault_domain.clone(),
                    state: pb::CompState::from(r.state) as i32,
                    targets: r
                        .targets
                        .iter()
                        .map(|t| pb::PoolMapTarget {
                            idx: t.idx.0,
                            state: pb::CompState::from(t.state) as i32,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Every target with its effective state (see the module doc), in
    /// `(rank, tgt)` order.
    pub fn targets(&self) -> impl Iterator<Item = (TargetId, CompState)> + '_ {
        self.ranks.iter().flat_map(|r| {
            r.targets.iter().map(move |t| {
                (
                    TargetId {
                        rank: r.rank,
                        tgt: t.idx,
                    },
                    CompState::combine(r.state, t.state),
                )
            })
        })
    }

    /// The entry of `rank`.
    pub fn rank(&self, rank: Rank) -> Option<&RankEntry> {
        self.ranks
            .binary_search_by_key(&rank, |r| r.rank)
            .ok()
            .and_then(|i| self.ranks.get(i))
    }

    fn rank_mut(&mut self, rank: Rank) -> Option<&mut RankEntry> {
        let i = self.ranks.binary_search_by_key(&rank, |r| r.rank).ok()?;
        self.ranks.get_mut(i)
    }

    /// The data-plane URI of `rank`.
    pub fn uri(&self, rank: Rank) -> Option<&str> {
        self.rank(rank).map(|r| r.uri.as_str())
    }

    /// The effective state of target `t`.
    pub fn target_state(&self, t: TargetId) -> Option<CompState> {
        let r = self.rank(t.rank)?;
        let e = r.targets.get(t.tgt.0 as usize)?;
        Some(CompState::combine(r.state, e.state))
    }

    /// Number of targets in the map, whatever their state.
    pub fn target_count(&self) -> usize {
        self.ranks.iter().map(|r| r.targets.len()).sum()
    }

    /// Number of targets whose effective state is serving.
    pub fn serving_count(&self) -> usize {
        self.targets().filter(|(_, s)| s.is_serving()).count()
    }

    fn bump(&mut self) -> Result<(), PlacementError> {
        self.version = self.version.checked_add(1).ok_or_else(|| {
            PlacementError::InvalidMap(format!("version {} cannot rise further", self.version))
        })?;
        Ok(())
    }

    /// Sets the state of `rank` itself (its targets keep their own states; their
    /// effective state follows the rank's, see the module doc). Raises the version
    /// and returns true if the state changed; returns false and leaves the map
    /// alone if it was already `state`.
    pub fn set_rank_state(&mut self, rank: Rank, state: CompState) -> Result<bool, PlacementError> {
        let r = self
            .rank_mut(rank)
            .ok_or(PlacementError::UnknownRank(rank))?;
        if r.state == state {
            return Ok(false);
        }
        r.state = state;
        self.bump()?;
        Ok(true)
    }

    /// Sets the state of one target. Raises the version and returns true if the
    /// state changed.
    pub fn set_target_state(
        &mut self,
        t: TargetId,
        state: CompState,
    ) -> Result<bool, PlacementError> {
        let e = self
            .rank_mut(t.rank)
            .and_then(|r| r.targets.get_mut(t.tgt.0 as usize))
            .ok_or(PlacementError::UnknownTarget(t))?;
        if e.state == state {
            return Ok(false);
        }
        e.state = state;
        self.bump()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PoolMap {
        PoolMap::new(
            7,
            vec![
                RankEntry::new(
                    Rank(1),
                    "tcp://127.0.0.2:20000",
                    "host2",
                    2,
                    CompState::UpIn,
                ),
                RankEntry::new(
                    Rank(0),
                    "tcp://127.0.0.1:20000",
                    "host1",
                    3,
                    CompState::UpIn,
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn new_sorts_and_iterates_in_order() {
        let m = sample();
        let ids: Vec<TargetId> = m.targets().map(|(t, _)| t).collect();
        assert_eq!(
            ids,
            vec![
                TargetId::new(0, 0),
                TargetId::new(0, 1),
                TargetId::new(0, 2),
                TargetId::new(1, 0),
                TargetId::new(1, 1)
            ]
        );
        assert_eq!(m.uri(Rank(1)), Some("tcp://127.0.0.2:20000"));
        assert_eq!(m.uri(Rank(5)), None);
        assert_eq!(m.target_count(), 5);
        assert_eq!(m.serving_count(), 5);
    }

    #[test]
    fn proto_round_trip() {
        let mut m = sample();
        m.set_target_state(TargetId::new(0, 1), CompState::Down)
            .unwrap();
        m.set_rank_state(Rank(1), CompState::Drain).unwrap();
        let p = m.to_proto();
        assert_eq!(p.version, 9);
        assert_eq!(p.ranks[0].targets[1].state, pb::CompState::CompDown as i32);
        let back = PoolMap::from_proto(&p).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_proto(), p);
    }

    #[test]
    fn every_state_round_trips() {
        for s in CompState::ALL {
            let p = pb::CompState::from(s);
            assert_eq!(CompState::try_from(p).unwrap(), s);
            assert_eq!(CompState::from_proto_i32(p as i32, "x").unwrap(), s);
            assert_eq!(s.name().parse::<CompState>().unwrap(), s);
        }
        assert_eq!("up_in".parse::<CompState>().unwrap(), CompState::UpIn);
        assert_eq!(
            "COMP_DOWNOUT".parse::<CompState>().unwrap(),
            CompState::DownOut
        );
        let e = "sideways".parse::<CompState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "state \"sideways\" is unknown; valid states: UP, UPIN, DOWN, DOWNOUT, NEW, DRAIN"
        );
    }

    #[test]
    fn from_proto_rejects_bad_maps_naming_the_culprit() {
        let good = sample().to_proto();

        let mut dup = good.clone();
        dup.ranks.push(dup.ranks[0].clone());
        let e = PoolMap::from_proto(&dup).unwrap_err().to_string();
        assert!(e.contains("rank 0 appears more than once"), "{e}");

        let mut dup_tgt = good.clone();
        dup_tgt.ranks[1].targets[1].idx = 0;
        let e = PoolMap::from_proto(&dup_tgt).unwrap_err().to_string();
        assert!(e.contains("rank 1: target 0 appears more than once"), "{e}");

        let mut gap = good.clone();
        gap.ranks[0].targets[2].idx = 5;
        let e = PoolMap::from_proto(&gap).unwrap_err().to_string();
        assert!(e.contains("rank 0: target indexes must be 0..3"), "{e}");
        assert!(e.contains("[0, 1, 5]"), "{e}");

        let mut bad_state = good.clone();
        bad_state.ranks[1].targets[0].state = 42;
        let e = PoolMap::from_proto(&bad_state).unwrap_err().to_string();
        assert!(e.contains("rank 1 target 0: state 42 is unknown"), "{e}");

        let mut unknown = good.clone();
        unknown.ranks[0].state = pb::CompState::CompUnknown as i32;
        let e = PoolMap::from_proto(&unknown).unwrap_err().to_string();
        assert!(e.contains("rank 0: state 0 is unknown"), "{e}");

        // Out-of-order input is accepted and sorted.
        let mut shuffled = good.clone();
        shuffled.ranks.reverse();
        shuffled.ranks[0].targets.reverse();
        assert_eq!(PoolMap::from_proto(&shuffled).unwrap().to_proto(), good);
    }

    #[test]
    fn effective_state_combines_rank_and_target() {
        let mut m = sample();
        assert!(m.set_rank_state(Rank(0), CompState::Down).unwrap());
        assert!(!m.set_rank_state(Rank(0), CompState::Down).unwrap());
        assert_eq!(m.version, 8);
        assert_eq!(m.target_state(TargetId::new(0, 2)), Some(CompState::Down));
        assert_eq!(m.serving_count(), 2);
        m.set_target_state(TargetId::new(0, 2), CompState::DownOut)
            .unwrap();
        assert_eq!(
            m.target_state(TargetId::new(0, 2)),
            Some(CompState::DownOut)
        );
        m.set_rank_state(Rank(0), CompState::UpIn).unwrap();
        assert_eq!(m.target_state(TargetId::new(0, 1)), Some(CompState::UpIn));
        assert_eq!(
            m.target_state(TargetId::new(0, 2)),
            Some(CompState::DownOut)
        );
        assert_eq!(m.version, 10);

        assert_eq!(
            m.set_rank_state(Rank(9), CompState::Down),
            Err(PlacementError::UnknownRank(Rank(9)))
        );
        let e = m
            .set_target_state(TargetId::new(1, 2), CompState::Down)
            .unwrap_err();
        assert_eq!(e.to_string(), "rank 1 tgt 2 is not in the pool map");
        assert_eq!(e.to_daos().der, proto::Der::NONEXIST);
    }

    #[test]
    fn validate_catches_hand_edits() {
        let mut m = sample();
        m.ranks.swap(0, 1);
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("rank 0 after rank 1"), "{e}");
    }
}
