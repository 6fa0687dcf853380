//! Property test: VOS against a naive model that keeps every version forever
//! and computes visibility by scanning, through random sequences of updates,
//! punches, reads, listings, aggregation, flushes, crashes and reopens.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proto::Der;
use tempfile::TempDir;

use super::tests::open;
use super::*;

/// Snapshots of container 1 (objects 0 and 2) and container 2 (object 1).
const SNAPS: [(u128, &[u64]); 2] = [(1, &[6, 13]), (2, &[9])];
const SCM: u64 = 64 << 20;
const BULK: u64 = 4 << 20;

/// Akeys: "s0", "s1" single values; "a0" array of 1-byte records, "a1" of
/// 1024-byte records (extents of 4+ records go to the bulk tier).
fn akey_name(i: u8) -> Vec<u8> {
    match i % 4 {
        0 => b"s0".to_vec(),
        1 => b"s1".to_vec(),
        2 => b"a0".to_vec(),
        _ => b"a1".to_vec(),
    }
}

fn rec_size_of(akey: &[u8]) -> Option<u32> {
    match akey {
        b"a0" => Some(1),
        b"a1" => Some(1024),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Update {
        oid: u8,
        dkey: u8,
        akey: u8,
        epoch: u64,
        idx: u64,
        nr: u64,
        len: u16,
        fill: u8,
        cond: u8,
    },
    ExtPunch {
        oid: u8,
        dkey: u8,
        epoch: u64,
        idx: u64,
        nr: u64,
    },
    PunchObj {
        oid: u8,
        epoch: u64,
    },
    PunchDkey {
        oid: u8,
        dkey: u8,
        epoch: u64,
    },
    PunchAkey {
        oid: u8,
        dkey: u8,
        akey: u8,
        epoch: u64,
    },
    Read {
        oid: u8,
        dkey: u8,
        epoch: u64,
    },
    List {
        oid: u8,
        epoch: u64,
        page: usize,
    },
    Aggregate {
        upto: u64,
    },
    DestroyCont {
        cont: u128,
    },
    DtxPrepare {
        oid: u8,
        dkey: u8,
        akey: u8,
        epoch: u64,
        len: u16,
        fill: u8,
    },
    DtxResolve {
        pick: usize,
        commit: bool,
    },
    Flush,
    Crash,
    Reopen,
    Checkpoint,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let e = 1u64..24;
    prop_oneof![
        8 => (0u8..3, 0u8..4, 0u8..4, e.clone(), 0u64..40, 1u64..12, prop_oneof![0u16..20, 4090u16..4200], any::<u8>(), 0u8..8)
            .prop_map(|(oid, dkey, akey, epoch, idx, nr, len, fill, cond)| Op::Update { oid, dkey, akey, epoch, idx, nr, len, fill, cond }),
        2 => (0u8..3, 0u8..4, e.clone(), 0u64..40, 1u64..10).prop_map(|(oid, dkey, epoch, idx, nr)| Op::ExtPunch { oid, dkey, epoch, idx, nr }),
        1 => (0u8..3, e.clone()).prop_map(|(oid, epoch)| Op::PunchObj { oid, epoch }),
        1 => (0u8..3, 0u8..4, e.clone()).prop_map(|(oid, dkey, epoch)| Op::PunchDkey { oid, dkey, epoch }),
        1 => (0u8..3, 0u8..4, 0u8..4, e.clone()).prop_map(|(oid, dkey, akey, epoch)| Op::PunchAkey { oid, dkey, akey, epoch }),
        5 => (0u8..3, 0u8..4, 0u64..26).prop_map(|(oid, dkey, epoch)| Op::Read { oid, dkey, epoch }),
        3 => (0u8..3, 0u64..26, 1usize..4).prop_map(|(oid, epoch, page)| Op::List { oid, epoch, page }),
        1 => (1u64..24).prop_map(|upto| Op::Aggregate { upto }),
        1 => (1u128..3).prop_map(|cont| Op::DestroyCont { cont }),
        2 => (0u8..3, 0u8..4, 0u8..4, 1u64..24, prop_oneof![0u16..20, 4090u16..4200], any::<u8>())
            .prop_map(|(oid, dkey, akey, epoch, len, fill)| Op::DtxPrepare { oid, dkey, akey, epoch, len, fill }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, commit)| Op::DtxResolve { pick, commit }),
        2 => Just(Op::Flush),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
        1 => Just(Op::Checkpoint),
    ]
}

fn oid_of(i: u8) -> Oid {
    Oid {
        cont: u128::from(i % 2) + 1,
        hi: 7,
        lo: u64::from(i),
    }
}

fn dkey_of(i: u8) -> Vec<u8> {
    u64::from(i).to_be_bytes().to_vec()
}

// ------------------------------------------------------------------ model

/// (epoch, seq, idx, nr, data or None for a punch)
type MExt = (u64, u64, u64, u64, Option<Vec<u8>>);

#[derive(Debug, Clone, Default)]
struct MAkey {
    punches: Vec<u64>,
    /// (epoch, seq, value)
    singles: Vec<(u64, u64, Vec<u8>)>,
    exts: Vec<MExt>,
}

#[derive(Debug, Clone, Default)]
struct MDkey {
    punches: Vec<u64>,
    akeys: BTreeMap<Vec<u8>, MAkey>,
}

#[derive(Debug, Clone, Default)]
struct MObj {
    punches: Vec<u64>,
    dkeys: BTreeMap<Vec<u8>, MDkey>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    objs: BTreeMap<Oid, MObj>,
    boundary: u64,
    seq: u64,
    /// Prepared DTXs: (id, epoch, oid, dkey, the update).
    prepared: Vec<(DtxId, u64, Oid, Vec<u8>, Iod)>,
    /// Decided DTXs: id -> committed.
    decided: BTreeMap<DtxId, bool>,
    next_dtx: u128,
}

fn pmax(p: &[u64], e: u64) -> Option<u64> {
    p.iter().copied().filter(|x| *x <= e).max()
}

impl Model {
    /// Is (oid, dkey) (or any dkey of oid, for `None`) claimed by a prepared
    /// DTX (at or below `read`, for reads)?
    fn locked(&self, oid: Oid, dkey: Option<&[u8]>, read: Option<u64>) -> bool {
        self.prepared.iter().any(|(_, e, o, d, _)| {
            *o == oid && dkey.is_none_or(|k| k == d.as_slice()) && read.is_none_or(|r| *e <= r)
        })
    }

    fn apply_update(&mut self, oid: Oid, dk: &[u8], epoch: u64, iod: &Iod) {
        self.seq += 1;
        let seq = self.seq;
        let a = self.ak(oid, dk, &iod.akey);
        match &iod.value {
            IodValue::Single(b) => a.singles.push((epoch, seq, b.to_vec())),
            IodValue::Array { data, recxs, .. } => {
                a.exts
                    .push((epoch, seq, recxs[0].idx, recxs[0].nr, Some(data.to_vec())))
            }
            IodValue::ArrayPunch { .. } => unreachable!(),
        }
    }

    fn level_punch(&self, oid: Oid, dkey: &[u8], akey: &[u8], e: u64) -> Option<u64> {
        let o = self.objs.get(&oid)?;
        let mut p = pmax(&o.punches, e);
        if let Some(d) = o.dkeys.get(dkey) {
            p = p.max(pmax(&d.punches, e));
            if let Some(a) = d.akeys.get(akey) {
                p = p.max(pmax(&a.punches, e));
            }
        }
        p
    }

    fn akey(&self, oid: Oid, dkey: &[u8], akey: &[u8]) -> Option<&MAkey> {
        self.objs.get(&oid)?.dkeys.get(dkey)?.akeys.get(akey)
    }

    fn single(&self, oid: Oid, dkey: &[u8], akey: &[u8], e: u64) -> Option<Vec<u8>> {
        let a = self.akey(oid, dkey, akey)?;
        let p = self.level_punch(oid, dkey, akey, e);
        a.singles
            .iter()
            .filter(|(ve, _, _)| *ve <= e && p.is_none_or(|p| *ve > p))
            .max_by_key(|(ve, s, _)| (*ve, *s))
            .map(|(_, _, v)| v.clone())
    }

    /// Per record: the winning write's (epoch, data byte slice) or None.
    fn record(&self, oid: Oid, dkey: &[u8], akey: &[u8], e: u64, r: u64) -> Option<(u64, Vec<u8>)> {
        let a = self.akey(oid, dkey, akey)?;
        let p = self.level_punch(oid, dkey, akey, e);
        let rs = rec_size_of(akey).unwrap_or(1) as usize;
        let (ve, _, idx, _, data) = a
            .exts
            .iter()
            .filter(|(ve, _, idx, nr, _)| {
                *ve <= e && p.is_none_or(|p| *ve > p) && *idx <= r && r < idx + nr
            })
            .max_by_key(|(ve, s, ..)| (*ve, *s))?;
        let d = data.as_ref()?;
        let off = (r - idx) as usize * rs;
        Some((*ve, d[off..off + rs].to_vec()))
    }

    fn akey_visible(&self, oid: Oid, dkey: &[u8], akey: &[u8], e: u64) -> bool {
        if rec_size_of(akey).is_some() {
            (0..64).any(|r| self.record(oid, dkey, akey, e, r).is_some())
        } else {
            self.single(oid, dkey, akey, e).is_some()
        }
    }

    fn dkey_visible(&self, oid: Oid, dkey: &[u8], e: u64) -> bool {
        self.objs
            .get(&oid)
            .and_then(|o| o.dkeys.get(dkey))
            .is_some_and(|d| d.akeys.keys().any(|a| self.akey_visible(oid, dkey, a, e)))
    }

    fn dkeys(&self, oid: Oid, e: u64) -> Vec<Vec<u8>> {
        self.objs.get(&oid).map_or(Vec::new(), |o| {
            o.dkeys
                .keys()
                .filter(|d| self.dkey_visible(oid, d, e))
                .cloned()
                .collect()
        })
    }

    fn akeys(&self, oid: Oid, dkey: &[u8], e: u64) -> Vec<Vec<u8>> {
        self.objs
            .get(&oid)
            .and_then(|o| o.dkeys.get(dkey))
            .map_or(Vec::new(), |d| {
                d.akeys
                    .keys()
                    .filter(|a| self.akey_visible(oid, dkey, a, e))
                    .cloned()
                    .collect()
            })
    }

    fn objects(&self, cont: u128, e: u64) -> Vec<Oid> {
        self.objs
            .keys()
            .filter(|o| o.cont == cont && !self.dkeys(**o, e).is_empty())
            .copied()
            .collect()
    }

    fn recxs(&self, oid: Oid, dkey: &[u8], akey: &[u8], e: u64) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        for r in 0..64 {
            if let Some((ve, _)) = self.record(oid, dkey, akey, e, r) {
                if let Some(l) = out.last_mut() {
                    if l.0 + l.1 == r && l.2 == ve {
                        l.1 += 1;
                        continue;
                    }
                }
                out.push((r, 1, ve));
            }
        }
        out
    }

    fn obj(&mut self, oid: Oid) -> &mut MObj {
        self.objs.entry(oid).or_default()
    }

    fn ak(&mut self, oid: Oid, dkey: &[u8], akey: &[u8]) -> &mut MAkey {
        self.obj(oid)
            .dkeys
            .entry(dkey.to_vec())
            .or_default()
            .akeys
            .entry(akey.to_vec())
            .or_default()
    }
}

// ------------------------------------------------------------------ driver

struct Harness {
    dir: TempDir,
    vos: Vos,
    model: Model,
    durable: Model,
}

impl Harness {
    fn comparable(&self, cont: u128, e: u64) -> bool {
        e >= self.model.boundary || SNAPS.iter().any(|(c, s)| *c == cont && s.contains(&e))
    }

    /// Checks the refusals that come before anything else: an epoch below
    /// the aggregated one, then a dkey claimed by a prepared DTX. True if
    /// the op went past them.
    fn check_pre<T: std::fmt::Debug>(
        &self,
        e: u64,
        oid: Oid,
        dkey: Option<&[u8]>,
        r: &Result<T>,
    ) -> bool {
        let der = r.as_ref().map_err(|e| e.to_daos().der).err();
        if e < self.model.boundary {
            assert_eq!(der, Some(Der::AGAIN));
            return false;
        }
        if self.model.locked(oid, dkey, None) {
            assert_eq!(der, Some(Der::INPROGRESS), "{r:?}");
            return false;
        }
        true
    }

    fn step(&mut self, op: &Op) {
        match op.clone() {
            Op::Update {
                oid,
                dkey,
                akey,
                epoch,
                idx,
                nr,
                len,
                fill,
                cond,
            } => {
                let (oid, dk, ak) = (oid_of(oid), dkey_of(dkey), akey_name(akey));
                let cond = [
                    Cond::NONE,
                    Cond::NONE,
                    Cond::NONE,
                    Cond::NONE,
                    Cond::DKEY_INSERT,
                    Cond::DKEY_UPDATE,
                    Cond::AKEY_INSERT,
                    Cond::AKEY_UPDATE,
                ][cond as usize];
                let iod = match rec_size_of(&ak) {
                    None => Iod::single(ak.clone(), vec![fill; len as usize]),
                    Some(rs) => {
                        let n = (nr as usize) * rs as usize;
                        let data: Vec<u8> = (0..n).map(|i| fill.wrapping_add(i as u8)).collect();
                        Iod::array(ak.clone(), rs, vec![Recx::new(idx, nr)], data)
                    }
                };
                let r = self
                    .vos
                    .update(oid, epoch, &dk, std::slice::from_ref(&iod), cond);
                if !self.check_pre(epoch, oid, Some(&dk), &r) {
                    return;
                }
                let m = &mut self.model;
                let expect = if cond == Cond::DKEY_INSERT && m.dkey_visible(oid, &dk, epoch) {
                    Some(Der::EXIST)
                } else if cond == Cond::DKEY_UPDATE && !m.dkey_visible(oid, &dk, epoch) {
                    Some(Der::NONEXIST)
                } else if cond == Cond::AKEY_INSERT && m.akey_visible(oid, &dk, &ak, epoch) {
                    Some(Der::EXIST)
                } else if cond == Cond::AKEY_UPDATE && !m.akey_visible(oid, &dk, &ak, epoch) {
                    Some(Der::NONEXIST)
                } else {
                    None
                };
                assert_eq!(
                    r.as_ref().map_err(|e| e.to_daos().der).err(),
                    expect,
                    "{r:?}"
                );
                if expect.is_none() {
                    m.apply_update(oid, &dk, epoch, &iod);
                }
            }
            Op::ExtPunch {
                oid,
                dkey,
                epoch,
                idx,
                nr,
            } => {
                let (oid, dk) = (oid_of(oid), dkey_of(dkey));
                let r = self.vos.update(
                    oid,
                    epoch,
                    &dk,
                    &[Iod::array_punch("a0", vec![Recx::new(idx, nr)])],
                    Cond::NONE,
                );
                if self.check_pre(epoch, oid, Some(&dk), &r) {
                    r.unwrap();
                    let m = &mut self.model;
                    m.seq += 1;
                    let seq = m.seq;
                    m.ak(oid, &dk, b"a0").exts.push((epoch, seq, idx, nr, None));
                }
            }
            Op::PunchObj { oid, epoch } => {
                let r = self
                    .vos
                    .punch(oid_of(oid), epoch, Punch::Object, Cond::NONE);
                if self.check_pre(epoch, oid_of(oid), None, &r) {
                    r.unwrap();
                    self.model.obj(oid_of(oid)).punches.push(epoch);
                }
            }
            Op::PunchDkey { oid, dkey, epoch } => {
                let r = self.vos.punch(
                    oid_of(oid),
                    epoch,
                    Punch::Dkeys(vec![dkey_of(dkey)]),
                    Cond::NONE,
                );
                if self.check_pre(epoch, oid_of(oid), Some(&dkey_of(dkey)), &r) {
                    r.unwrap();
                    self.model
                        .obj(oid_of(oid))
                        .dkeys
                        .entry(dkey_of(dkey))
                        .or_default()
                        .punches
                        .push(epoch);
                }
            }
            Op::PunchAkey {
                oid,
                dkey,
                akey,
                epoch,
            } => {
                let what = Punch::Akeys {
                    dkey: dkey_of(dkey),
                    akeys: vec![akey_name(akey)],
                };
                let r = self.vos.punch(oid_of(oid), epoch, what, Cond::NONE);
                if self.check_pre(epoch, oid_of(oid), Some(&dkey_of(dkey)), &r) {
                    r.unwrap();
                    self.model
                        .ak(oid_of(oid), &dkey_of(dkey), &akey_name(akey))
                        .punches
                        .push(epoch);
                }
            }
            Op::Read { oid, dkey, epoch } => {
                if !self.comparable(oid_of(oid).cont, epoch) {
                    return;
                }
                let m = &self.model;
                let (oid, dk) = (oid_of(oid), dkey_of(dkey));
                let reqs: Vec<FetchReq> = (0..4u8)
                    .map(|i| {
                        let ak = akey_name(i);
                        match rec_size_of(&ak) {
                            None => FetchReq::Single { akey: ak },
                            Some(_) => FetchReq::Array {
                                akey: ak,
                                recxs: vec![Recx::new(0, 30), Recx::new(30, 34)],
                            },
                        }
                    })
                    .collect();
                let r = self
                    .vos
                    .fetch(oid, epoch, &dk, &reqs, Cond::NONE, Reach::Device);
                // From memory alone: the same answer, or "needs the device".
                match (
                    self.vos
                        .fetch(oid, epoch, &dk, &reqs, Cond::NONE, Reach::Memory),
                    &r,
                ) {
                    (Err(Error::NeedsDevice), _) => {}
                    (Ok(a), Ok(b)) => assert_eq!(&a, b, "memory fetch {oid} {dk:?} @{epoch}"),
                    (Err(a), Err(b)) => assert_eq!(a.to_daos().der, b.to_daos().der),
                    (a, b) => panic!("memory fetch {a:?} vs device fetch {b:?}"),
                }
                if m.locked(oid, Some(&dk), Some(epoch)) {
                    assert_eq!(r.map_err(|e| e.to_daos().der).err(), Some(Der::INPROGRESS));
                    return;
                }
                let got = r.unwrap();
                for (i, out) in got.into_iter().enumerate() {
                    let ak = akey_name(i as u8);
                    match (rec_size_of(&ak), out) {
                        (None, FetchOut::Single(b)) => {
                            assert_eq!(
                                b.map(|b| b.to_vec()),
                                m.single(oid, &dk, &ak, epoch),
                                "{oid} {dk:?} {ak:?} @{epoch}"
                            )
                        }
                        (Some(rs), FetchOut::Array { rec_size, data, hi }) => {
                            let recs: Vec<Option<Vec<u8>>> = (0..64)
                                .map(|r| m.record(oid, &dk, &ak, epoch, r).map(|x| x.1))
                                .collect();
                            let want_hi = recs
                                .iter()
                                .rposition(Option::is_some)
                                .map_or(0, |r| r as u64 + 1);
                            assert_eq!(hi, want_hi, "{oid} {dk:?} {ak:?} @{epoch}");
                            if recs.iter().all(|r| r.is_none()) {
                                assert_eq!(rec_size, 0, "{oid} {dk:?} {ak:?} @{epoch}");
                                assert!(data.is_empty());
                            } else {
                                assert_eq!(rec_size, rs);
                                let want: Vec<u8> = recs
                                    .into_iter()
                                    .flat_map(|r| r.unwrap_or_else(|| vec![0; rs as usize]))
                                    .collect();
                                assert_eq!(data.to_vec(), want, "{oid} {dk:?} {ak:?} @{epoch}");
                            }
                        }
                        (_, o) => panic!("unexpected {o:?}"),
                    }
                }
            }
            Op::List { oid, epoch, page } => {
                if !self.comparable(oid_of(oid).cont, epoch) {
                    return;
                }
                let m = &self.model;
                let oid = oid_of(oid);
                let mut a = Anchor::start();
                let mut objs = Vec::new();
                loop {
                    let (v, next) = self.vos.list_objects(oid.cont, epoch, &a, page).unwrap();
                    assert!(v.len() <= page);
                    objs.extend(v);
                    if next.eof {
                        break;
                    }
                    a = next;
                }
                assert_eq!(objs, m.objects(oid.cont, epoch), "objects @{epoch}");
                if m.locked(oid, None, Some(epoch)) {
                    let r = self.vos.list_dkeys(oid, epoch, &Anchor::start(), page);
                    assert_eq!(r.map_err(|e| e.to_daos().der).err(), Some(Der::INPROGRESS));
                    return;
                }
                let mut a = Anchor::start();
                let mut dkeys = Vec::new();
                loop {
                    let (v, next) = self.vos.list_dkeys(oid, epoch, &a, page).unwrap();
                    dkeys.extend(v);
                    if next.eof {
                        break;
                    }
                    a = next;
                }
                assert_eq!(dkeys, m.dkeys(oid, epoch), "dkeys of {oid} @{epoch}");
                for dk in (0..4).map(dkey_of) {
                    let (akeys, a) = self
                        .vos
                        .list_akeys(oid, epoch, &dk, &Anchor::start(), 10)
                        .unwrap();
                    assert!(a.eof);
                    assert_eq!(akeys, m.akeys(oid, &dk, epoch));
                    for ak in [b"a0".to_vec(), b"a1".to_vec()] {
                        let mut a = Anchor::start();
                        let mut got = Vec::new();
                        loop {
                            let (v, next) =
                                self.vos.list_recxs(oid, epoch, &dk, &ak, &a, page).unwrap();
                            got.extend(v.iter().map(|e| (e.recx.idx, e.recx.nr, e.epoch)));
                            if next.eof {
                                break;
                            }
                            a = next;
                        }
                        assert_eq!(
                            got,
                            m.recxs(oid, &dk, &ak, epoch),
                            "recxs {oid} {dk:?} {ak:?} @{epoch}"
                        );
                        let q = self.vos.query_max(oid, epoch, None, Some(&ak)).unwrap();
                        let want = m
                            .dkeys(oid, epoch)
                            .into_iter()
                            .rev()
                            .find(|d| m.akey_visible(oid, d, &ak, epoch))
                            .map(|d| {
                                let end = m.recxs(oid, &d, &ak, epoch).last().map(|l| l.0 + l.1);
                                QueryMax {
                                    dkey: d,
                                    recx_end: end,
                                }
                            });
                        assert_eq!(q, want);
                    }
                }
                let q = self.vos.query_max(oid, epoch, None, None).unwrap();
                assert_eq!(q.map(|q| q.dkey), m.dkeys(oid, epoch).pop());
            }
            Op::Aggregate { upto } => {
                let st = self.vos.aggregate(upto).unwrap();
                let upto = self.model.prepared.iter().map(|p| p.1).fold(upto, u64::min);
                assert_eq!(st.upto, upto);
                self.model.boundary = self.model.boundary.max(upto);
            }
            Op::DtxPrepare {
                oid,
                dkey,
                akey,
                epoch,
                len,
                fill,
            } => {
                let (oid, dk) = (oid_of(oid), dkey_of(dkey));
                let ak = akey_name(akey);
                let iod = match rec_size_of(&ak) {
                    None => Iod::single(ak, vec![fill; len as usize]),
                    Some(rs) => Iod::array(
                        ak,
                        rs,
                        vec![Recx::new(u64::from(fill % 40), 5)],
                        vec![fill; 5 * rs as usize],
                    ),
                };
                self.model.next_dtx += 1;
                let id = DtxId(self.model.next_dtx);
                let ops = vec![DtxOp::Update {
                    oid,
                    dkey: dk.clone(),
                    iods: vec![iod.clone()],
                    cond: Cond::NONE,
                    expect: vec![],
                }];
                let r = self.vos.dtx_prepare(id, epoch, ops);
                if self.check_pre(epoch, oid, Some(&dk), &r) {
                    r.unwrap();
                    self.model.prepared.push((id, epoch, oid, dk, iod));
                }
            }
            Op::DtxResolve { pick, commit } => {
                let m = &mut self.model;
                if m.prepared.is_empty() {
                    return;
                }
                let (id, epoch, oid, dk, iod) = m.prepared.remove(pick % m.prepared.len());
                if commit {
                    self.vos.dtx_commit(id).unwrap();
                    m.apply_update(oid, &dk, epoch, &iod);
                } else {
                    self.vos.dtx_abort(id).unwrap();
                }
                m.decided.insert(id, commit);
            }
            Op::DestroyCont { cont } => {
                self.vos.destroy_cont(cont).unwrap();
                let m = &mut self.model;
                m.objs.retain(|o, _| o.cont != cont);
                for p in m.prepared.iter().filter(|p| p.2.cont == cont) {
                    m.decided.insert(p.0, false);
                }
                m.prepared.retain(|p| p.2.cont != cont);
                // Its snapshots go too: put them back, as the test keeps them fixed.
                let snaps = SNAPS
                    .iter()
                    .find(|(c, _)| *c == cont)
                    .map(|(_, s)| s.to_vec());
                self.vos
                    .set_snapshots(cont, snaps.unwrap_or_default())
                    .unwrap();
            }
            Op::Flush => {
                self.vos.flush().unwrap();
                self.durable = self.model.clone();
            }
            Op::Checkpoint => {
                self.vos.checkpoint().unwrap();
                self.durable = self.model.clone();
            }
            Op::Crash => {
                self.reopen();
                self.model = self.durable.clone();
            }
            Op::Reopen => {
                self.vos.flush().unwrap();
                self.durable = self.model.clone();
                self.reopen();
            }
        }
        self.check_invariants();
    }

    /// Drops the open VOS (without flushing: like a crash) and opens the files again.
    fn reopen(&mut self) {
        self.vos = open(&self.dir, SCM, Some(BULK));
    }

    fn check_invariants(&self) {
        let v = &self.vos;
        let want: Vec<(DtxId, u64)> = {
            let mut p: Vec<(DtxId, u64)> = self.model.prepared.iter().map(|p| (p.0, p.1)).collect();
            p.sort();
            p
        };
        assert_eq!(v.dtx_prepared(), want);
        for (id, committed) in &self.model.decided {
            let s = if *committed {
                DtxState::Committed
            } else {
                DtxState::Aborted
            };
            assert_eq!(v.dtx_state(*id), s);
        }
        assert_eq!(v.img.bytes, v.img.recount(), "image accounting drifted");
        let mut refs = 0u64;
        v.img
            .for_each_bulk(&mut |_, len| refs += len.div_ceil(4096) * 4096);
        let pending: u64 = v
            .pending_free
            .iter()
            .map(|(_, l)| l.div_ceil(4096) * 4096)
            .sum();
        assert_eq!(v.space().bulk_used, refs + pending, "bulk accounting");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn vos_matches_model(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        let dir = TempDir::new().unwrap();
        let mut vos = open(&dir, SCM, Some(BULK));
        for (cont, snaps) in SNAPS {
            vos.set_snapshots(cont, snaps.to_vec()).unwrap();
        }
        vos.flush().unwrap();
        let mut h = Harness { dir, vos, model: Model::default(), durable: Model::default() };
        for op in &ops {
            h.step(op);
        }
        // Finally: everything readable at the end matches after a clean reopen.
        h.step(&Op::Reopen);
        for oid in 0..3 {
            h.step(&Op::List { oid, epoch: 30, page: 2 });
            for dkey in 0..4 {
                h.step(&Op::Read { oid, dkey, epoch: 30 });
            }
        }
    }
}
