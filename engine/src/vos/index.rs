//! The in-memory image of a VOS: objects → dkeys → akeys → versioned values,
//! punch records, snapshots, and the DTX tables.
//!
//! Invariants:
//! - the image changes only through [`Image::apply`] of a [`Mutation`], which
//!   is deterministic: replaying the logged mutations on the checkpointed
//!   image rebuilds exactly the image that was acknowledged;
//! - [`Image::bytes`] is exactly the length of the image's checkpoint
//!   encoding (`layout::encode_image`), kept incrementally by `apply`;
//! - punch lists are sorted and duplicate-free; array extents keep their
//!   insertion order, which breaks ties between extents of equal epoch (the
//!   later write wins), and aggregation never reorders them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::layout::{LIod, LOp, LVal, Mutation, Payload};
use super::types::{AggStats, DtxId, Oid, Punch, Recx};

// Encoded sizes (see layout.rs) of each piece of the image.
const IMAGE_FIXED: u64 = 8 + 4 + 4 + 4 + 8;
const SNAP_COST: u64 = 8;
const SNAP_CONT_COST: u64 = 16 + 4;
pub(crate) const HIST_COST: u64 = 16 + 1 + 8;
const PREP_BASE: u64 = 16 + 8;
const OBJ_COST: u64 = 32 + 4 + 4;
const DKEY_BASE: u64 = 4 + 4 + 4;
const AKEY_BASE: u64 = 4 + 4 + 1;
const SINGLE_HDR: u64 = 4;
const ARRAY_HDR: u64 = 8;
const PUNCH_COST: u64 = 8;
const SV_COST: u64 = 8;
const EXT_COST: u64 = 24;

/// How many decided DTXs are remembered for [`DtxState`](super::DtxState) answers.
pub const DTX_HISTORY: usize = 4096;

pub(crate) fn payload_cost(p: Option<&Payload>) -> u64 {
    match p {
        None => 1,
        Some(Payload::Inline(b)) => 1 + 4 + b.len() as u64,
        Some(Payload::Bulk { .. }) => 1 + 16,
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Obj {
    pub punches: Vec<u64>,
    pub dkeys: BTreeMap<Vec<u8>, Dkey>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Dkey {
    pub punches: Vec<u64>,
    pub akeys: BTreeMap<Vec<u8>, Akey>,
}

#[derive(Debug, Clone)]
pub(crate) struct Akey {
    pub punches: Vec<u64>,
    pub val: Val,
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// Versions by epoch; a same-epoch update replaces.
    Single(BTreeMap<u64, Payload>),
    /// `rec_size` 0: not known yet (only extent punches so far).
    Array { rec_size: u32, exts: Vec<Ext> },
}

/// One array write or extent punch (`data` None).
#[derive(Debug, Clone)]
pub(crate) struct Ext {
    pub recx: Recx,
    pub epoch: u64,
    pub data: Option<Payload>,
}

/// What an akey holds, for type checks: set by its first write, free again
/// once aggregation has removed every version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Free,
    Single,
    /// Record size; 0 while only extent punches exist.
    Array(u32),
}

/// The kind an akey has after `v` is written to it, or why `v` cannot be.
pub(crate) fn next_kind(cur: Kind, v: &LValShape) -> Result<Kind, String> {
    match (cur, v) {
        (Kind::Free | Kind::Single, LValShape::Single) => Ok(Kind::Single),
        (Kind::Array(_), LValShape::Single) => Err("holds an array, not a single value".into()),
        (Kind::Free | Kind::Array(0), LValShape::Array(r)) => Ok(Kind::Array(*r)),
        (Kind::Array(x), LValShape::Array(r)) if x == *r => Ok(Kind::Array(*r)),
        (Kind::Array(x), LValShape::Array(r)) => Err(format!("has record size {x}, not {r}")),
        (Kind::Single, LValShape::Array(_) | LValShape::ArrayPunch) => {
            Err("holds a single value, not an array".into())
        }
        (Kind::Free, LValShape::ArrayPunch) => Ok(Kind::Array(0)),
        (Kind::Array(x), LValShape::ArrayPunch) => Ok(Kind::Array(x)),
    }
}

/// The type part of a value being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LValShape {
    Single,
    Array(u32),
    ArrayPunch,
}

impl LVal {
    pub(crate) fn shape(&self) -> LValShape {
        match self {
            LVal::Single(_) => LValShape::Single,
            LVal::Array { rec_size, .. } => LValShape::Array(*rec_size),
            LVal::ArrayPunch(_) => LValShape::ArrayPunch,
        }
    }
}

impl Akey {
    fn new(kind: Kind) -> Akey {
        Akey {
            punches: Vec::new(),
            val: match kind {
                Kind::Array(r) => Val::Array {
                    rec_size: r,
                    exts: Vec::new(),
                },
                _ => Val::Single(BTreeMap::new()),
            },
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match &self.val {
            Val::Single(m) if m.is_empty() => Kind::Free,
            Val::Single(_) => Kind::Single,
            Val::Array { exts, .. } if exts.is_empty() => Kind::Free,
            Val::Array { rec_size, .. } => Kind::Array(*rec_size),
        }
    }

    fn is_empty(&self) -> bool {
        self.punches.is_empty() && self.kind() == Kind::Free
    }

    pub(crate) fn epochs(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        match &self.val {
            Val::Single(m) => Box::new(m.keys().copied()),
            Val::Array { exts, .. } => Box::new(exts.iter().map(|x| x.epoch)),
        }
    }
}

fn akey_cost(len: usize, val: &Val) -> u64 {
    AKEY_BASE
        + len as u64
        + match val {
            Val::Single(_) => SINGLE_HDR,
            Val::Array { .. } => ARRAY_HDR,
        }
}

/// The newest punch at or below `e`.
pub(crate) fn punch_le(p: &[u64], e: u64) -> Option<u64> {
    let i = p.partition_point(|x| *x <= e);
    i.checked_sub(1).map(|i| p[i])
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.max(b)
}

/// True if a version of epoch `e` is hidden by a punch at `p`.
fn hidden(e: u64, p: Option<u64>) -> bool {
    p.is_some_and(|p| e <= p)
}

/// Adds `e` to a sorted punch list; returns false if it was there.
fn add_punch(p: &mut Vec<u64>, e: u64) -> bool {
    match p.binary_search(&e) {
        Ok(_) => false,
        Err(i) => {
            p.insert(i, e);
            true
        }
    }
}

/// The visible pieces of an array: start -> (end, index of the extent that
/// wrote it). Extent punches paint too (as holes, `data` None), so callers
/// reading data skip them.
pub(crate) type Painting = BTreeMap<u64, (u64, usize)>;

/// Paints the extents visible at epoch `e` under level punch `p`, oldest
/// first, so each record shows its newest write.
pub(crate) fn paint(exts: &[Ext], e: u64, p: Option<u64>) -> Painting {
    let mut order: Vec<usize> = (0..exts.len())
        .filter(|&i| exts[i].epoch <= e && !hidden(exts[i].epoch, p))
        .collect();
    order.sort_by_key(|&i| (exts[i].epoch, i));
    let mut map = Painting::new();
    for i in order {
        let s = exts[i].recx.idx;
        let end = s.saturating_add(exts[i].recx.nr);
        if let Some((&ks, &(ke, kid))) = map.range(..s).next_back() {
            if ke > s {
                map.insert(ks, (s, kid));
                if ke > end {
                    map.insert(end, (ke, kid));
                }
            }
        }
        let inside: Vec<u64> = map.range(s..end).map(|(k, _)| *k).collect();
        for k in inside {
            if let Some((ke, kid)) = map.remove(&k) {
                if ke > end {
                    map.insert(end, (ke, kid));
                }
            }
        }
        map.insert(s, (end, i));
    }
    map
}

/// True if any painted piece holds data.
fn painting_has_data(exts: &[Ext], m: &Painting) -> bool {
    m.values().any(|(_, i)| exts[*i].data.is_some())
}

/// A prepared DTX: its ops are logged and their space reserved, but they are
/// not in the index until commit.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub epoch: u64,
    pub ops: Vec<LOp>,
    /// Encoded size of this entry in the image.
    pub entry_bytes: u64,
    /// Index growth its commit may cause at most (plus its history entry).
    pub reserve: u64,
}

/// A prepared DTX's claim on an object: the whole object (punch) or one dkey.
#[derive(Debug, Clone)]
pub(crate) struct Lock {
    pub id: DtxId,
    pub epoch: u64,
    pub dkey: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub objs: BTreeMap<Oid, Obj>,
    /// Snapshot epochs by container (no empty lists).
    pub snapshots: BTreeMap<u128, Vec<u64>>,
    /// Decided DTXs, oldest first: (id, committed, epoch).
    pub history: VecDeque<(DtxId, bool, u64)>,
    pub hist_idx: HashMap<DtxId, (bool, u64)>,
    pub prepared: BTreeMap<DtxId, Prepared>,
    /// Derived from `prepared` (not encoded).
    pub locks: HashMap<Oid, Vec<Lock>>,
    /// The highest epoch aggregated up to: updates and punches below it are refused.
    pub boundary: u64,
    /// Encoded size of the image.
    pub bytes: u64,
    /// Sum of the prepared DTXs' reserves.
    pub reserved: u64,
}

impl Default for Image {
    fn default() -> Self {
        Image {
            objs: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            history: VecDeque::new(),
            hist_idx: HashMap::new(),
            prepared: BTreeMap::new(),
            locks: HashMap::new(),
            boundary: 0,
            bytes: IMAGE_FIXED,
            reserved: 0,
        }
    }
}

/// Upper bound of the index growth applying `op` can cause.
pub(crate) fn op_bound(op: &LOp) -> u64 {
    let akey_max = |k: &[u8]| AKEY_BASE + ARRAY_HDR + k.len() as u64 + PUNCH_COST;
    let dkey_max = |k: &[u8]| DKEY_BASE + k.len() as u64 + PUNCH_COST;
    let mut n = OBJ_COST + PUNCH_COST;
    match op {
        LOp::Update { dkey, iods, .. } => {
            n += dkey_max(dkey);
            for iod in iods {
                n += akey_max(&iod.akey);
                n += match &iod.val {
                    LVal::Single(p) => SV_COST + payload_cost(Some(p)),
                    LVal::Array { exts, .. } => exts
                        .iter()
                        .map(|(_, p)| EXT_COST + payload_cost(Some(p)))
                        .sum(),
                    LVal::ArrayPunch(r) => r.len() as u64 * (EXT_COST + payload_cost(None)),
                };
            }
        }
        LOp::Punch { what, .. } => match what {
            Punch::Object => {}
            Punch::Dkeys(d) => n += d.iter().map(|k| dkey_max(k)).sum::<u64>(),
            Punch::Akeys { dkey, akeys } => {
                n += dkey_max(dkey) + akeys.iter().map(|k| akey_max(k)).sum::<u64>();
            }
        },
    }
    n
}

/// A value being written, as far as its size goes: `None` for a payload
/// placed in the bulk tier, else its inline length.
pub(crate) enum BoundVal {
    Single(Option<u64>),
    Array(Vec<Option<u64>>),
    Punch(usize),
}

/// Upper bound of the index growth of an update, from sizes alone; equals
/// [`op_bound`] of the resolved op.
pub(crate) fn update_bound(dkey_len: usize, iods: impl Iterator<Item = (usize, BoundVal)>) -> u64 {
    let pc = |n: Option<u64>| n.map_or(1 + 16, |n| 1 + 4 + n);
    let mut n = OBJ_COST + PUNCH_COST + DKEY_BASE + dkey_len as u64 + PUNCH_COST;
    for (akey_len, v) in iods {
        n += AKEY_BASE + ARRAY_HDR + akey_len as u64 + PUNCH_COST;
        n += match v {
            BoundVal::Single(s) => SV_COST + pc(s),
            BoundVal::Array(v) => v.into_iter().map(|s| EXT_COST + pc(s)).sum(),
            BoundVal::Punch(k) => k as u64 * (EXT_COST + payload_cost(None)),
        };
    }
    n
}

pub(crate) fn ops_enc_len(ops: &[LOp]) -> u64 {
    let mut v = Vec::new();
    super::layout::encode_ops(&mut v, ops);
    v.len() as u64
}

/// The (object, dkey) claims of a list of ops.
fn op_claims(op: &LOp) -> Vec<(Oid, Option<Vec<u8>>)> {
    match op {
        LOp::Update { oid, dkey, .. } => vec![(*oid, Some(dkey.clone()))],
        LOp::Punch { oid, what } => match what {
            Punch::Object => vec![(*oid, None)],
            Punch::Dkeys(d) => d.iter().map(|k| (*oid, Some(k.clone()))).collect(),
            Punch::Akeys { dkey, .. } => vec![(*oid, Some(dkey.clone()))],
        },
    }
}

/// Calls `f` on every bulk payload an op references.
pub(crate) fn op_bulk(op: &LOp, f: &mut dyn FnMut(u64, u64)) {
    if let LOp::Update { iods, .. } = op {
        for iod in iods {
            let mut one = |p: &Payload| {
                if let Payload::Bulk { off, len } = p {
                    f(*off, *len)
                }
            };
            match &iod.val {
                LVal::Single(p) => one(p),
                LVal::Array { exts, .. } => exts.iter().for_each(|(_, p)| one(p)),
                LVal::ArrayPunch(_) => {}
            }
        }
    }
}

fn free_payload(p: &Payload, freed: &mut Vec<(u64, u64)>) {
    if let Payload::Bulk { off, len } = p {
        freed.push((*off, *len));
    }
}

impl Image {
    /// Builds an image from decoded parts, recomputing the derived fields.
    pub(crate) fn from_parts(
        boundary: u64,
        snapshots: BTreeMap<u128, Vec<u64>>,
        history: VecDeque<(DtxId, bool, u64)>,
        prepared: Vec<(DtxId, u64, Vec<LOp>)>,
        objs: BTreeMap<Oid, Obj>,
    ) -> Result<Image, String> {
        let mut img = Image {
            boundary,
            objs,
            ..Image::default()
        };
        img.bytes = img.recount_objs() + IMAGE_FIXED;
        for (cont, epochs) in snapshots {
            img.set_snapshots(cont, epochs);
        }
        for (id, committed, epoch) in history {
            if img.hist_idx.insert(id, (committed, epoch)).is_some() {
                return Err(format!("dtx {id} appears twice in the history"));
            }
            img.history.push_back((id, committed, epoch));
            img.bytes += HIST_COST;
        }
        for (id, epoch, ops) in prepared {
            img.prepare(id, epoch, ops)?;
        }
        Ok(img)
    }

    /// The encoded size of the objects, computed from scratch.
    pub(crate) fn recount_objs(&self) -> u64 {
        let mut n = 0;
        for o in self.objs.values() {
            n += OBJ_COST + PUNCH_COST * o.punches.len() as u64;
            for (dk, d) in &o.dkeys {
                n += DKEY_BASE + dk.len() as u64 + PUNCH_COST * d.punches.len() as u64;
                for (ak, a) in &d.akeys {
                    n += akey_cost(ak.len(), &a.val) + PUNCH_COST * a.punches.len() as u64;
                    n += match &a.val {
                        Val::Single(m) => m
                            .values()
                            .map(|p| SV_COST + payload_cost(Some(p)))
                            .sum::<u64>(),
                        Val::Array { exts, .. } => exts
                            .iter()
                            .map(|x| EXT_COST + payload_cost(x.data.as_ref()))
                            .sum(),
                    };
                }
            }
        }
        n
    }

    /// The full encoded size computed from scratch (tests compare it with `bytes`).
    #[cfg(test)]
    pub(crate) fn recount(&self) -> u64 {
        IMAGE_FIXED
            + self.recount_objs()
            + self
                .snapshots
                .values()
                .map(|v| SNAP_CONT_COST + SNAP_COST * v.len() as u64)
                .sum::<u64>()
            + HIST_COST * self.history.len() as u64
            + self.prepared.values().map(|p| p.entry_bytes).sum::<u64>()
    }

    /// Calls `f` on every bulk extent the image references (index and prepared DTXs).
    pub(crate) fn for_each_bulk(&self, f: &mut dyn FnMut(u64, u64)) {
        let mut one = |p: Option<&Payload>| {
            if let Some(Payload::Bulk { off, len }) = p {
                f(*off, *len)
            }
        };
        for o in self.objs.values() {
            for d in o.dkeys.values() {
                for a in d.akeys.values() {
                    match &a.val {
                        Val::Single(m) => m.values().for_each(|p| one(Some(p))),
                        Val::Array { exts, .. } => exts.iter().for_each(|x| one(x.data.as_ref())),
                    }
                }
            }
        }
        for p in self.prepared.values() {
            for op in &p.ops {
                op_bulk(op, &mut |o, l| one(Some(&Payload::Bulk { off: o, len: l })));
            }
        }
    }

    fn set_snapshots(&mut self, cont: u128, mut v: Vec<u64>) {
        v.sort_unstable();
        v.dedup();
        if let Some(old) = self.snapshots.remove(&cont) {
            self.bytes -= SNAP_CONT_COST + SNAP_COST * old.len() as u64;
        }
        if !v.is_empty() {
            self.bytes += SNAP_CONT_COST + SNAP_COST * v.len() as u64;
            self.snapshots.insert(cont, v);
        }
    }

    /// The objects of a container, in id order.
    pub(crate) fn cont_range(
        &self,
        cont: u128,
    ) -> std::collections::btree_map::Range<'_, Oid, Obj> {
        self.objs
            .range(Oid::new(cont, 0, 0)..=Oid::new(cont, u64::MAX, u64::MAX))
    }

    /// Removes a container: its objects, its snapshots, and the prepared DTXs
    /// that touch it (aborted).
    fn destroy_cont(&mut self, cont: u128, freed: &mut Vec<(u64, u64)>) -> Result<(), String> {
        let doomed: Vec<DtxId> = self
            .prepared
            .iter()
            .filter(|(_, p)| {
                p.ops.iter().any(|op| match op {
                    LOp::Update { oid, .. } | LOp::Punch { oid, .. } => oid.cont == cont,
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.apply(&Mutation::DtxAbort { id }, freed)?;
        }
        self.set_snapshots(cont, Vec::new());
        let oids: Vec<Oid> = self.cont_range(cont).map(|(o, _)| *o).collect();
        let mut gone = 0u64;
        for oid in oids {
            let Some(o) = self.objs.remove(&oid) else {
                continue;
            };
            let mut one = Image {
                objs: BTreeMap::from([(oid, o)]),
                ..Image::default()
            };
            one.for_each_bulk(&mut |off, len| freed.push((off, len)));
            gone += one.recount_objs();
            one.objs.clear();
        }
        self.bytes -= gone;
        Ok(())
    }

    /// Applies one mutation. Bulk extents no longer referenced are pushed on
    /// `freed`. An error means the mutation does not fit this image: at run
    /// time a bug (everything is checked first), on replay a corrupt log.
    pub(crate) fn apply(
        &mut self,
        m: &Mutation,
        freed: &mut Vec<(u64, u64)>,
    ) -> Result<Option<AggStats>, String> {
        match m {
            Mutation::Op { epoch, op } => self.apply_op(*epoch, op, freed)?,
            Mutation::DtxPrepare { id, epoch, ops } => self.prepare(*id, *epoch, ops.clone())?,
            Mutation::DtxCommit { id } => {
                let p = self.unprepare(*id)?;
                for op in &p.ops {
                    self.apply_op(p.epoch, op, freed)?;
                }
                self.remember(*id, true, p.epoch);
            }
            Mutation::DtxAbort { id } => {
                let p = self.unprepare(*id)?;
                for op in &p.ops {
                    op_bulk(op, &mut |o, l| freed.push((o, l)));
                }
                self.remember(*id, false, p.epoch);
            }
            Mutation::SetSnapshots { cont, epochs } => self.set_snapshots(*cont, epochs.clone()),
            Mutation::DestroyCont { cont } => self.destroy_cont(*cont, freed)?,
            Mutation::Aggregate { upto } => return Ok(Some(self.aggregate(*upto, freed))),
        }
        Ok(None)
    }

    fn prepare(&mut self, id: DtxId, epoch: u64, ops: Vec<LOp>) -> Result<(), String> {
        if self.prepared.contains_key(&id) || self.hist_idx.contains_key(&id) {
            return Err(format!("dtx {id} is already known"));
        }
        let entry_bytes = PREP_BASE + ops_enc_len(&ops);
        let reserve = ops.iter().map(op_bound).sum::<u64>() + HIST_COST;
        for op in &ops {
            for (oid, dkey) in op_claims(op) {
                self.locks
                    .entry(oid)
                    .or_default()
                    .push(Lock { id, epoch, dkey });
            }
        }
        self.bytes += entry_bytes;
        self.reserved += reserve;
        self.prepared.insert(
            id,
            Prepared {
                epoch,
                ops,
                entry_bytes,
                reserve,
            },
        );
        Ok(())
    }

    fn unprepare(&mut self, id: DtxId) -> Result<Prepared, String> {
        let p = self
            .prepared
            .remove(&id)
            .ok_or_else(|| format!("dtx {id} is not prepared"))?;
        self.bytes -= p.entry_bytes;
        self.reserved -= p.reserve;
        for op in &p.ops {
            for (oid, _) in op_claims(op) {
                if let Some(v) = self.locks.get_mut(&oid) {
                    v.retain(|l| l.id != id);
                    if v.is_empty() {
                        self.locks.remove(&oid);
                    }
                }
            }
        }
        Ok(p)
    }

    fn remember(&mut self, id: DtxId, committed: bool, epoch: u64) {
        if self.history.len() >= DTX_HISTORY {
            if let Some((old, _, _)) = self.history.pop_front() {
                self.hist_idx.remove(&old);
                self.bytes -= HIST_COST;
            }
        }
        self.history.push_back((id, committed, epoch));
        self.hist_idx.insert(id, (committed, epoch));
        self.bytes += HIST_COST;
    }

    fn obj_mut(&mut self, oid: Oid) -> &mut Obj {
        let bytes = &mut self.bytes;
        self.objs.entry(oid).or_insert_with(|| {
            *bytes += OBJ_COST;
            Obj::default()
        })
    }

    fn apply_op(
        &mut self,
        epoch: u64,
        op: &LOp,
        freed: &mut Vec<(u64, u64)>,
    ) -> Result<(), String> {
        let oid = match op {
            LOp::Update { oid, .. } | LOp::Punch { oid, .. } => *oid,
        };
        let delta = apply_to_obj(self.obj_mut(oid), epoch, op, freed)?;
        self.bytes = self.bytes.saturating_add_signed(delta);
        Ok(())
    }

    /// The effective level punch over an akey's parents at epoch `e`.
    fn parent_punch(o: &Obj, d: &Dkey, e: u64) -> Option<u64> {
        max_opt(punch_le(&o.punches, e), punch_le(&d.punches, e))
    }

    pub(crate) fn akey_visible_in(a: &Akey, e: u64, p: Option<u64>) -> bool {
        let p = max_opt(p, punch_le(&a.punches, e));
        match &a.val {
            Val::Single(m) => m
                .range(..=e)
                .next_back()
                .is_some_and(|(ve, _)| !hidden(*ve, p)),
            Val::Array { exts, .. } => {
                // Quick path: nothing newer than the punch at all.
                if !exts
                    .iter()
                    .any(|x| x.epoch <= e && !hidden(x.epoch, p) && x.data.is_some())
                {
                    return false;
                }
                painting_has_data(exts, &paint(exts, e, p))
            }
        }
    }

    pub(crate) fn dkey_visible_in(o: &Obj, d: &Dkey, e: u64) -> bool {
        let p = Self::parent_punch(o, d, e);
        d.akeys.values().any(|a| Self::akey_visible_in(a, e, p))
    }

    pub(crate) fn obj_visible_in(o: &Obj, e: u64) -> bool {
        o.dkeys.values().any(|d| Self::dkey_visible_in(o, d, e))
    }

    pub(crate) fn obj_visible(&self, oid: Oid, e: u64) -> bool {
        self.objs
            .get(&oid)
            .is_some_and(|o| Self::obj_visible_in(o, e))
    }

    /// The newest epoch at or below `e` at which anything of `oid` changed
    /// (a write or a punch), 0 if nothing did; with `akey`, only what was
    /// written or punched under that akey (in any dkey) counts, with the
    /// punches of the dkeys holding it and of the object.
    pub(crate) fn max_epoch(&self, oid: Oid, e: u64, akey: Option<&[u8]>) -> u64 {
        let Some(o) = self.objs.get(&oid) else {
            return 0;
        };
        let le = |p: &[u64]| punch_le(p, e).unwrap_or(0);
        let mut max = le(&o.punches);
        for d in o.dkeys.values() {
            let akeys: Box<dyn Iterator<Item = &Akey>> = match akey {
                Some(k) => Box::new(d.akeys.get(k).into_iter()),
                None => Box::new(d.akeys.values()),
            };
            let mut any = false;
            for a in akeys {
                any = true;
                let newest = a.epochs().filter(|x| *x <= e).max().unwrap_or(0);
                max = max.max(le(&a.punches)).max(newest);
            }
            if any || akey.is_none() {
                max = max.max(le(&d.punches));
            }
        }
        max
    }

    pub(crate) fn dkey_visible(&self, oid: Oid, dkey: &[u8], e: u64) -> bool {
        self.objs
            .get(&oid)
            .and_then(|o| o.dkeys.get(dkey).map(|d| Self::dkey_visible_in(o, d, e)))
            .unwrap_or(false)
    }

    /// The akey, its object and dkey, with the parents' punch at `e`.
    pub(crate) fn akey_at(
        &self,
        oid: Oid,
        dkey: &[u8],
        akey: &[u8],
        e: u64,
    ) -> Option<(&Akey, Option<u64>)> {
        let o = self.objs.get(&oid)?;
        let d = o.dkeys.get(dkey)?;
        let a = d.akeys.get(akey)?;
        Some((a, Self::parent_punch(o, d, e)))
    }

    pub(crate) fn akey_visible(&self, oid: Oid, dkey: &[u8], akey: &[u8], e: u64) -> bool {
        self.akey_at(oid, dkey, akey, e)
            .is_some_and(|(a, p)| Self::akey_visible_in(a, e, p))
    }

    pub(crate) fn akey_kind(&self, oid: Oid, dkey: &[u8], akey: &[u8]) -> Kind {
        self.objs
            .get(&oid)
            .and_then(|o| o.dkeys.get(dkey))
            .and_then(|d| d.akeys.get(akey))
            .map_or(Kind::Free, Akey::kind)
    }

    /// The prepared DTX whose claim covers an access to `oid` (and `dkey`,
    /// `None` meaning the whole object), counting only DTXs at or below
    /// `epoch` when given (reads) and every one otherwise (writes).
    pub(crate) fn lock_conflict(
        &self,
        oid: Oid,
        dkey: Option<&[u8]>,
        epoch: Option<u64>,
    ) -> Option<(DtxId, u64)> {
        self.locks.get(&oid)?.iter().find_map(|l| {
            let key_match = match (dkey, &l.dkey) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a == b.as_slice(),
            };
            let epoch_match = epoch.is_none_or(|e| l.epoch <= e);
            (key_match && epoch_match).then_some((l.id, l.epoch))
        })
    }

    /// Removes every version that no read at a snapshot below `upto`, or at
    /// any epoch from `upto` on, can see; then punches that hide nothing left,
    /// then keys with nothing left. Reads at `upto` and above, and at
    /// snapshots, answer the same before and after.
    fn aggregate(&mut self, upto: u64, freed: &mut Vec<(u64, u64)>) -> AggStats {
        let mut st = AggStats {
            upto,
            ..AggStats::default()
        };
        let before = self.bytes;
        let reads_of = |cont: u128| -> Vec<u64> {
            self.snapshots
                .get(&cont)
                .into_iter()
                .flatten()
                .copied()
                .filter(|s| *s < upto)
                .chain(std::iter::once(upto))
                .collect()
        };
        let reads_by_cont: HashMap<u128, Vec<u64>> = self
            .objs
            .keys()
            .map(|o| o.cont)
            .collect::<std::collections::BTreeSet<u128>>()
            .into_iter()
            .map(|c| (c, reads_of(c)))
            .collect();
        let mut delta: i64 = 0;
        let mut empty_objs = Vec::new();
        for (oid, o) in self.objs.iter_mut() {
            let reads: &[u64] = reads_by_cont.get(&oid.cont).map_or(&[], |v| v.as_slice());
            let opunch = o.punches.clone();
            let mut empty_dkeys = Vec::new();
            for (dk, d) in o.dkeys.iter_mut() {
                let mut empty_akeys = Vec::new();
                for (ak, a) in d.akeys.iter_mut() {
                    let lp = |e: u64| {
                        max_opt(
                            max_opt(punch_le(&opunch, e), punch_le(&d.punches, e)),
                            punch_le(&a.punches, e),
                        )
                    };
                    match &mut a.val {
                        Val::Single(m) => {
                            let mut keep: Vec<u64> = m.range(upto..).map(|(e, _)| *e).collect();
                            for &r in reads {
                                if let Some((ve, _)) = m.range(..=r).next_back() {
                                    if !hidden(*ve, lp(r)) {
                                        keep.push(*ve);
                                    }
                                }
                            }
                            let drop: Vec<u64> =
                                m.keys().copied().filter(|e| !keep.contains(e)).collect();
                            for e in drop {
                                if let Some(p) = m.remove(&e) {
                                    delta -= (SV_COST + payload_cost(Some(&p))) as i64;
                                    st.bulk_freed += bulk_len(&p);
                                    free_payload(&p, freed);
                                    st.versions_removed += 1;
                                }
                            }
                        }
                        Val::Array { exts, .. } => {
                            let mut keep: Vec<bool> =
                                exts.iter().map(|x| x.epoch >= upto).collect();
                            for &r in reads {
                                for (_, i) in paint(exts, r, lp(r)).values() {
                                    keep[*i] = true;
                                }
                            }
                            // An extent punch below `upto` with no older data
                            // left under it hides nothing.
                            for i in 0..exts.len() {
                                if keep[i] && exts[i].data.is_none() && exts[i].epoch < upto {
                                    let x = &exts[i];
                                    let covers = exts.iter().enumerate().any(|(j, y)| {
                                        keep[j]
                                            && y.data.is_some()
                                            && y.epoch <= x.epoch
                                            && overlaps(&y.recx, &x.recx)
                                    });
                                    keep[i] = covers;
                                }
                            }
                            let mut i = 0;
                            exts.retain(|x| {
                                let k = keep[i];
                                i += 1;
                                if !k {
                                    delta -= (EXT_COST + payload_cost(x.data.as_ref())) as i64;
                                    if let Some(p) = &x.data {
                                        st.bulk_freed += bulk_len(p);
                                        free_payload(p, freed);
                                    }
                                    st.versions_removed += 1;
                                }
                                k
                            });
                        }
                    }
                    let oldest = a.epochs().min();
                    let n = a.punches.len();
                    a.punches
                        .retain(|p| *p >= upto || oldest.is_some_and(|o| o <= *p));
                    let removed = (n - a.punches.len()) as u64;
                    st.punches_removed += removed;
                    delta -= (removed * PUNCH_COST) as i64;
                    if a.is_empty() {
                        empty_akeys.push(ak.clone());
                    }
                }
                for ak in empty_akeys {
                    if let Some(a) = d.akeys.remove(&ak) {
                        delta -= akey_cost(ak.len(), &a.val) as i64;
                        st.keys_removed += 1;
                    }
                }
                let oldest = d.akeys.values().filter_map(|a| a.epochs().min()).min();
                let n = d.punches.len();
                d.punches
                    .retain(|p| *p >= upto || oldest.is_some_and(|o| o <= *p));
                let removed = (n - d.punches.len()) as u64;
                st.punches_removed += removed;
                delta -= (removed * PUNCH_COST) as i64;
                if d.punches.is_empty() && d.akeys.is_empty() {
                    empty_dkeys.push(dk.clone());
                }
            }
            for dk in empty_dkeys {
                if o.dkeys.remove(&dk).is_some() {
                    delta -= (DKEY_BASE + dk.len() as u64) as i64;
                    st.keys_removed += 1;
                }
            }
            let oldest = o
                .dkeys
                .values()
                .flat_map(|d| d.akeys.values())
                .filter_map(|a| a.epochs().min())
                .min();
            let n = o.punches.len();
            o.punches
                .retain(|p| *p >= upto || oldest.is_some_and(|o| o <= *p));
            let removed = (n - o.punches.len()) as u64;
            st.punches_removed += removed;
            delta -= (removed * PUNCH_COST) as i64;
            if o.punches.is_empty() && o.dkeys.is_empty() {
                empty_objs.push(*oid);
            }
        }
        for oid in empty_objs {
            if self.objs.remove(&oid).is_some() {
                delta -= OBJ_COST as i64;
                st.keys_removed += 1;
            }
        }
        self.bytes = self.bytes.saturating_add_signed(delta);
        self.boundary = self.boundary.max(upto);
        st.scm_freed = before - self.bytes;
        st
    }
}

fn bulk_len(p: &Payload) -> u64 {
    match p {
        Payload::Bulk { len, .. } => *len,
        Payload::Inline(_) => 0,
    }
}

fn overlaps(a: &Recx, b: &Recx) -> bool {
    a.idx < b.idx.saturating_add(b.nr) && b.idx < a.idx.saturating_add(a.nr)
}

/// Applies an update or punch to one object; returns the change in encoded size.
fn apply_to_obj(
    obj: &mut Obj,
    epoch: u64,
    op: &LOp,
    freed: &mut Vec<(u64, u64)>,
) -> Result<i64, String> {
    let mut delta: i64 = 0;
    match op {
        LOp::Update { dkey, iods, .. } => {
            let d = dkey_entry(obj, dkey, &mut delta);
            for iod in iods {
                apply_iod(d, epoch, iod, freed, &mut delta)?;
            }
        }
        LOp::Punch { what, .. } => match what {
            Punch::Object => {
                if add_punch(&mut obj.punches, epoch) {
                    delta += PUNCH_COST as i64;
                }
            }
            Punch::Dkeys(ds) => {
                for dk in ds {
                    let d = dkey_entry(obj, dk, &mut delta);
                    if add_punch(&mut d.punches, epoch) {
                        delta += PUNCH_COST as i64;
                    }
                }
            }
            Punch::Akeys { dkey, akeys } => {
                let d = dkey_entry(obj, dkey, &mut delta);
                for ak in akeys {
                    let a = akey_entry(d, ak, Kind::Free, &mut delta);
                    if add_punch(&mut a.punches, epoch) {
                        delta += PUNCH_COST as i64;
                    }
                }
            }
        },
    }
    Ok(delta)
}

fn dkey_entry<'a>(obj: &'a mut Obj, dk: &[u8], delta: &mut i64) -> &'a mut Dkey {
    obj.dkeys.entry(dk.to_vec()).or_insert_with(|| {
        *delta += (DKEY_BASE + dk.len() as u64) as i64;
        Dkey::default()
    })
}

fn akey_entry<'a>(d: &'a mut Dkey, ak: &[u8], kind: Kind, delta: &mut i64) -> &'a mut Akey {
    d.akeys.entry(ak.to_vec()).or_insert_with(|| {
        let a = Akey::new(kind);
        *delta += akey_cost(ak.len(), &a.val) as i64;
        a
    })
}

fn apply_iod(
    d: &mut Dkey,
    epoch: u64,
    iod: &LIod,
    freed: &mut Vec<(u64, u64)>,
    delta: &mut i64,
) -> Result<(), String> {
    let a = akey_entry(d, &iod.akey, Kind::Free, delta);
    let nk = next_kind(a.kind(), &iod.val.shape())?;
    // Switch the value's shape when the akey is free and the write needs the other one.
    match (nk, &mut a.val) {
        (Kind::Single, Val::Array { .. }) => {
            *delta -= (ARRAY_HDR - SINGLE_HDR) as i64;
            a.val = Val::Single(BTreeMap::new());
        }
        (Kind::Array(r), Val::Single(_)) => {
            *delta += (ARRAY_HDR - SINGLE_HDR) as i64;
            a.val = Val::Array {
                rec_size: r,
                exts: Vec::new(),
            };
        }
        (Kind::Array(r), Val::Array { rec_size, .. }) => *rec_size = r,
        _ => {}
    }
    match (&iod.val, &mut a.val) {
        (LVal::Single(p), Val::Single(m)) => {
            *delta += (SV_COST + payload_cost(Some(p))) as i64;
            if let Some(old) = m.insert(epoch, p.clone()) {
                *delta -= (SV_COST + payload_cost(Some(&old))) as i64;
                free_payload(&old, freed);
            }
        }
        (LVal::Array { exts: new, .. }, Val::Array { exts, .. }) => {
            for (recx, p) in new {
                *delta += (EXT_COST + payload_cost(Some(p))) as i64;
                exts.push(Ext {
                    recx: *recx,
                    epoch,
                    data: Some(p.clone()),
                });
            }
        }
        (LVal::ArrayPunch(recxs), Val::Array { exts, .. }) => {
            for recx in recxs {
                *delta += (EXT_COST + payload_cost(None)) as i64;
                exts.push(Ext {
                    recx: *recx,
                    epoch,
                    data: None,
                });
            }
        }
        _ => return Err("value shape mismatch".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(idx: u64, nr: u64, epoch: u64, data: bool) -> Ext {
        Ext {
            recx: Recx::new(idx, nr),
            epoch,
            data: data.then(|| Payload::Inline(bytes::Bytes::from(vec![0u8; nr as usize]))),
        }
    }

    #[test]
    fn paint_splits_and_orders() {
        let exts = vec![
            ext(0, 10, 1, true),
            ext(3, 2, 2, false),
            ext(8, 4, 1, true),
            ext(0, 1, 3, true),
        ];
        let m = paint(&exts, 10, None);
        let segs: Vec<(u64, u64, usize)> = m.iter().map(|(s, (e, i))| (*s, *e, *i)).collect();
        assert_eq!(
            segs,
            vec![(0, 1, 3), (1, 3, 0), (3, 5, 1), (5, 8, 0), (8, 12, 2)]
        );
        let m = paint(&exts, 1, None);
        let segs: Vec<(u64, u64, usize)> = m.iter().map(|(s, (e, i))| (*s, *e, *i)).collect();
        assert_eq!(segs, vec![(0, 8, 0), (8, 12, 2)]);
        assert!(paint(&exts, 2, Some(1)).values().all(|(_, i)| *i == 1));
    }

    #[test]
    fn punch_le_finds_newest_at_or_below() {
        let p = vec![2, 5, 9];
        assert_eq!(punch_le(&p, 1), None);
        assert_eq!(punch_le(&p, 5), Some(5));
        assert_eq!(punch_le(&p, 8), Some(5));
        assert_eq!(punch_le(&p, 100), Some(9));
    }
}
