//! Unit tests of VOS semantics, space and durability.

use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use proto::Der;
use tempfile::TempDir;

use super::*;

pub(crate) const C1: u128 = 0xc1;
pub(crate) const O1: Oid = Oid {
    cont: C1,
    hi: 1,
    lo: 1,
};
pub(crate) const O2: Oid = Oid {
    cont: C1,
    hi: 1,
    lo: 2,
};

/// Where the bulk region starts in its file (not 0, to check we stay inside).
pub(crate) const BULK_OFF: u64 = 3 * 4096;

pub(crate) fn cfg(dir: &TempDir, scm: u64, bulk_len: Option<u64>) -> VosConfig {
    let bulk = bulk_len.map(|len| {
        let path = dir.path().join("bdev");
        if !path.exists() {
            let f = File::create(&path).unwrap();
            f.set_len(BULK_OFF + len + 3 * 4096).unwrap();
            // Sentinels outside the region.
            f.write_all_at(&[0xee; 4096], 0).unwrap();
            f.write_all_at(&[0xee; 4096], BULK_OFF + len).unwrap();
        }
        BulkRegion {
            path,
            offset: BULK_OFF,
            len,
        }
    });
    VosConfig {
        dir: dir.path().join("vos"),
        scm_bytes: scm,
        bulk,
        sync: false,
        data_thresh: DEFAULT_DATA_THRESH,
    }
}

pub(crate) fn open(dir: &TempDir, scm: u64, bulk_len: Option<u64>) -> Vos {
    Vos::open(cfg(dir, scm, bulk_len)).unwrap()
}

fn sentinels_intact(dir: &TempDir, len: u64) {
    let f = File::open(dir.path().join("bdev")).unwrap();
    let mut b = [0u8; 4096];
    f.read_exact_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|x| *x == 0xee));
    f.read_exact_at(&mut b, BULK_OFF + len).unwrap();
    assert!(b.iter().all(|x| *x == 0xee));
}

fn der_of(r: Result<impl std::fmt::Debug>) -> Der {
    match r {
        Err(e) => e.to_daos().der,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn single(v: &Vos, oid: Oid, e: u64, dkey: &[u8], akey: &[u8]) -> Option<Bytes> {
    match v
        .fetch(
            oid,
            e,
            dkey,
            &[FetchReq::Single {
                akey: akey.to_vec(),
            }],
            Cond::NONE,
            Reach::Device,
        )
        .unwrap()
        .remove(0)
    {
        FetchOut::Single(b) => b,
        o => panic!("unexpected {o:?}"),
    }
}

fn array(v: &Vos, oid: Oid, e: u64, dkey: &[u8], akey: &[u8], recxs: &[Recx]) -> (u32, Vec<u8>) {
    match v
        .fetch(
            oid,
            e,
            dkey,
            &[FetchReq::Array {
                akey: akey.to_vec(),
                recxs: recxs.to_vec(),
            }],
            Cond::NONE,
            Reach::Device,
        )
        .unwrap()
        .remove(0)
    {
        FetchOut::Array { rec_size, data, .. } => (rec_size, data.to_vec()),
        o => panic!("unexpected {o:?}"),
    }
}

fn put(v: &mut Vos, oid: Oid, e: u64, dkey: &[u8], akey: &[u8], val: &[u8]) {
    v.update(oid, e, dkey, &[Iod::single(akey, val.to_vec())], Cond::NONE)
        .unwrap();
}

fn put_arr(v: &mut Vos, oid: Oid, e: u64, dkey: &[u8], akey: &[u8], idx: u64, data: &[u8]) {
    v.update(
        oid,
        e,
        dkey,
        &[Iod::array(
            akey,
            1,
            vec![Recx::new(idx, data.len() as u64)],
            data.to_vec(),
        )],
        Cond::NONE,
    )
    .unwrap();
}

fn all_dkeys(v: &Vos, oid: Oid, e: u64) -> Vec<Vec<u8>> {
    v.list_dkeys(oid, e, &Anchor::start(), 1000).unwrap().0
}

fn check_accounting(v: &Vos) {
    assert_eq!(v.img.bytes, v.img.recount(), "image accounting drifted");
    let mut body = Vec::new();
    layout::encode_image::<()>(&v.img, &mut |b| {
        body.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(body.len() as u64, v.img.bytes, "accounting != encoded size");
}

#[test]
fn single_value_epochs() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    put(&mut v, O1, 5, b"d", b"a", b"five");
    put(&mut v, O1, 10, b"d", b"a", b"ten");
    assert_eq!(single(&v, O1, 4, b"d", b"a"), None);
    assert_eq!(single(&v, O1, 5, b"d", b"a").unwrap(), "five");
    assert_eq!(single(&v, O1, 9, b"d", b"a").unwrap(), "five");
    assert_eq!(single(&v, O1, 10, b"d", b"a").unwrap(), "ten");
    assert_eq!(single(&v, O1, u64::MAX, b"d", b"a").unwrap(), "ten");
    // Same epoch: the later update replaces.
    put(&mut v, O1, 10, b"d", b"a", b"TEN");
    assert_eq!(single(&v, O1, 10, b"d", b"a").unwrap(), "TEN");
    // An empty value is a value.
    put(&mut v, O1, 11, b"d", b"a", b"");
    assert_eq!(single(&v, O1, 11, b"d", b"a").unwrap(), "");
    assert_eq!(single(&v, O1, 11, b"d", b"nope"), None);
    assert_eq!(single(&v, O2, 11, b"d", b"a"), None);
    check_accounting(&v);
}

#[test]
fn punches_hide_older_versions_only() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    put(&mut v, O1, 1, b"d1", b"a", b"x1");
    put(&mut v, O1, 1, b"d1", b"b", b"y1");
    put(&mut v, O1, 1, b"d2", b"a", b"z1");
    // akey punch
    v.punch(
        O1,
        2,
        Punch::Akeys {
            dkey: b"d1".to_vec(),
            akeys: vec![b"a".to_vec()],
        },
        Cond::NONE,
    )
    .unwrap();
    assert_eq!(single(&v, O1, 1, b"d1", b"a").unwrap(), "x1");
    assert_eq!(single(&v, O1, 2, b"d1", b"a"), None);
    assert_eq!(single(&v, O1, 2, b"d1", b"b").unwrap(), "y1");
    // dkey punch
    v.punch(O1, 3, Punch::Dkeys(vec![b"d1".to_vec()]), Cond::NONE)
        .unwrap();
    assert_eq!(single(&v, O1, 3, b"d1", b"b"), None);
    assert_eq!(all_dkeys(&v, O1, 3), vec![b"d2".to_vec()]);
    assert_eq!(all_dkeys(&v, O1, 2), vec![b"d1".to_vec(), b"d2".to_vec()]);
    // object punch
    v.punch(O1, 4, Punch::Object, Cond::NONE).unwrap();
    assert!(all_dkeys(&v, O1, 4).is_empty());
    assert_eq!(
        v.list_objects(C1, 4, &Anchor::start(), 10).unwrap().0,
        Vec::<Oid>::new()
    );
    assert_eq!(
        v.list_objects(C1, 3, &Anchor::start(), 10).unwrap().0,
        vec![O1]
    );
    // An update below a punch stays hidden; one above it shows.
    put(&mut v, O1, 3, b"d2", b"a", b"late");
    assert_eq!(single(&v, O1, 4, b"d2", b"a"), None);
    assert_eq!(single(&v, O1, 3, b"d2", b"a").unwrap(), "late");
    put(&mut v, O1, 5, b"d1", b"a", b"x5");
    assert_eq!(single(&v, O1, 5, b"d1", b"a").unwrap(), "x5");
    assert_eq!(single(&v, O1, 5, b"d1", b"b"), None);
    assert_eq!(all_dkeys(&v, O1, 5), vec![b"d1".to_vec()]);
    // Punching what does not exist records the punch: later writes below it hide.
    v.punch(O2, 10, Punch::Dkeys(vec![b"q".to_vec()]), Cond::NONE)
        .unwrap();
    put(&mut v, O2, 9, b"q", b"a", b"hidden");
    assert_eq!(single(&v, O2, 10, b"q", b"a"), None);
    assert_eq!(single(&v, O2, 9, b"q", b"a").unwrap(), "hidden");
    check_accounting(&v);
}

#[test]
fn array_extents_overlap_split_and_punch() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    let all = [Recx::new(0, 12)];
    assert_eq!(array(&v, O1, 9, b"d", b"a", &all), (0, vec![]));
    put_arr(&mut v, O1, 1, b"d", b"a", 0, b"aaaaaaaaaa");
    put_arr(&mut v, O1, 2, b"d", b"a", 3, b"bb");
    put_arr(&mut v, O1, 3, b"d", b"a", 8, b"cccc");
    assert_eq!(array(&v, O1, 3, b"d", b"a", &all).1, b"aaabbaaacccc");
    assert_eq!(array(&v, O1, 2, b"d", b"a", &all).1, b"aaabbaaaaa\0\0");
    assert_eq!(array(&v, O1, 1, b"d", b"a", &all).1, b"aaaaaaaaaa\0\0");
    // Punch in the middle.
    v.update(
        O1,
        4,
        b"d",
        &[Iod::array_punch("a", vec![Recx::new(2, 3)])],
        Cond::NONE,
    )
    .unwrap();
    assert_eq!(array(&v, O1, 4, b"d", b"a", &all).1, b"aa\0\0\0aaacccc");
    assert_eq!(array(&v, O1, 3, b"d", b"a", &all).1, b"aaabbaaacccc");
    // Several recxs in one fetch, holes as zeros.
    let (rs, data) = array(
        &v,
        O1,
        4,
        b"d",
        b"a",
        &[Recx::new(1, 2), Recx::new(11, 3), Recx::new(100, 1)],
    );
    assert_eq!((rs, data.as_slice()), (1, &b"a\0c\0\0\0"[..]));
    // Nothing visible in the range: rec_size 0.
    assert_eq!(
        array(&v, O1, 4, b"d", b"a", &[Recx::new(2, 3)]),
        (0, vec![])
    );
    // Size query: empty recxs.
    assert_eq!(array(&v, O1, 4, b"d", b"a", &[]), (1, vec![]));
    // Re-write after the punch.
    put_arr(&mut v, O1, 5, b"d", b"a", 2, b"Z");
    assert_eq!(array(&v, O1, 5, b"d", b"a", &all).1, b"aaZ\0\0aaacccc");
    // Visible ranges with their epochs.
    let (r, a) = v
        .list_recxs(O1, 5, b"d", b"a", &Anchor::start(), 100)
        .unwrap();
    assert!(a.eof);
    let got: Vec<(u64, u64, u64)> = r.iter().map(|e| (e.recx.idx, e.recx.nr, e.epoch)).collect();
    assert_eq!(got, vec![(0, 2, 1), (2, 1, 5), (5, 3, 1), (8, 4, 3)]);
    // Record size and type mismatches.
    let bad = v.update(
        O1,
        6,
        b"d",
        &[Iod::array("a", 2, vec![Recx::new(0, 1)], vec![1, 2])],
        Cond::NONE,
    );
    assert_eq!(der_of(bad), Der::INVAL);
    assert_eq!(
        der_of(v.update(O1, 6, b"d", &[Iod::single("a", "x")], Cond::NONE)),
        Der::INVAL
    );
    assert_eq!(
        der_of(v.fetch(
            O1,
            6,
            b"d",
            &[FetchReq::Single {
                akey: b"a".to_vec()
            }],
            Cond::NONE,
            Reach::Device
        )),
        Der::INVAL
    );
    // Bad arguments.
    let bad = v.update(
        O1,
        6,
        b"d",
        &[Iod::array("b", 1, vec![Recx::new(0, 2)], vec![1])],
        Cond::NONE,
    );
    assert_eq!(der_of(bad), Der::INVAL);
    let bad = v.update(
        O1,
        6,
        b"d",
        &[Iod::array("b", 1, vec![Recx::new(u64::MAX, 2)], vec![1, 2])],
        Cond::NONE,
    );
    assert_eq!(der_of(bad), Der::INVAL);
    assert_eq!(
        der_of(v.update(O1, 6, b"", &[Iod::single("a", "x")], Cond::NONE)),
        Der::INVAL
    );
    assert_eq!(der_of(v.update(O1, 6, b"d", &[], Cond::NONE)), Der::INVAL);
    check_accounting(&v);
}

#[test]
fn enumeration_is_ordered_and_resumable() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    for i in [5u64, 1, 9, 3, 7] {
        put(&mut v, O1, 1, &i.to_be_bytes(), b"a", b"v");
        put(
            &mut v,
            Oid {
                cont: C1,
                hi: 0,
                lo: i,
            },
            1,
            b"d",
            b"a",
            b"v",
        );
    }
    // Objects, two at a time.
    let mut a = Anchor::start();
    let mut got = Vec::new();
    loop {
        let (v2, next) = v.list_objects(C1, 1, &a, 2).unwrap();
        got.extend(v2);
        if next.eof {
            break;
        }
        a = Anchor::from_bytes(&next.to_bytes()).unwrap();
    }
    let want: Vec<Oid> = [1u64, 3, 5, 7, 9]
        .iter()
        .map(|&lo| Oid {
            cont: C1,
            hi: 0,
            lo,
        })
        .chain([O1])
        .collect();
    assert_eq!(got, want);
    // dkeys: page, then insert and remove around the anchor, then resume.
    let (page, a) = v.list_dkeys(O1, 10, &Anchor::start(), 2).unwrap();
    assert_eq!(
        page,
        vec![1u64.to_be_bytes().to_vec(), 3u64.to_be_bytes().to_vec()]
    );
    put(&mut v, O1, 2, &2u64.to_be_bytes(), b"a", b"v"); // before the anchor: not listed
    put(&mut v, O1, 2, &4u64.to_be_bytes(), b"a", b"v"); // after: listed
    v.punch(
        O1,
        2,
        Punch::Dkeys(vec![3u64.to_be_bytes().to_vec()]),
        Cond::NONE,
    )
    .unwrap(); // the anchor key itself goes
    v.punch(
        O1,
        2,
        Punch::Dkeys(vec![5u64.to_be_bytes().to_vec()]),
        Cond::NONE,
    )
    .unwrap();
    let (rest, a) = v.list_dkeys(O1, 10, &a, 100).unwrap();
    assert!(a.eof);
    let want: Vec<Vec<u8>> = [4u64, 7, 9]
        .iter()
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    assert_eq!(rest, want);
    // At the older epoch the punched ones are still there.
    assert_eq!(all_dkeys(&v, O1, 1).len(), 5);
    // akeys
    v.update(
        O2,
        1,
        b"d",
        &[
            Iod::single("c", "1"),
            Iod::single("a", "1"),
            Iod::single("b", "1"),
        ],
        Cond::NONE,
    )
    .unwrap();
    let (p1, a) = v.list_akeys(O2, 1, b"d", &Anchor::start(), 2).unwrap();
    assert_eq!(p1, vec![b"a".to_vec(), b"b".to_vec()]);
    let (p2, a) = v.list_akeys(O2, 1, b"d", &a, 2).unwrap();
    assert_eq!(p2, vec![b"c".to_vec()]);
    assert!(a.eof);
    assert_eq!(v.list_akeys(O2, 1, b"d", &a, 2).unwrap().0.len(), 0);
    assert_eq!(
        der_of(v.list_akeys(O2, 1, b"d", &Anchor::start(), 0)),
        Der::INVAL
    );
    assert_eq!(der_of(Anchor::from_bytes(&[9])), Der::INVAL);
    assert_eq!(der_of(Anchor::from_bytes(&[2, 5, 0, 0, 0, 1])), Der::INVAL);
    // recxs, one at a time, resuming from the end of the last one.
    for i in 0..4u64 {
        put_arr(&mut v, O2, 1 + i, b"d", b"arr", i * 10, b"xxxxx");
    }
    let mut a = Anchor::start();
    let mut got = Vec::new();
    loop {
        let (r, next) = v.list_recxs(O2, 9, b"d", b"arr", &a, 1).unwrap();
        got.extend(r.iter().map(|e| (e.recx.idx, e.recx.nr)));
        if next.eof {
            break;
        }
        a = next;
        if got.len() == 2 {
            // A write overlapping the anchor: only its part after the anchor is listed.
            put_arr(&mut v, O2, 8, b"d", b"arr", 12, b"yyyyyyyyyyyy");
        }
    }
    assert_eq!(got, vec![(0, 5), (10, 5), (15, 9), (24, 1), (30, 5)]);
}

#[test]
fn query_max_finds_largest_visible() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    assert_eq!(v.query_max(O1, 10, None, None).unwrap(), None);
    for (i, e) in [(1u64, 1u64), (2, 2), (3, 3)] {
        put_arr(&mut v, O1, e, &i.to_be_bytes(), b"arr", i * 100, b"xyz");
    }
    put(&mut v, O1, 4, &9u64.to_be_bytes(), b"other", b"v");
    let q = v.query_max(O1, 10, None, None).unwrap().unwrap();
    assert_eq!(q.dkey, 9u64.to_be_bytes().to_vec());
    let q = v.query_max(O1, 10, None, Some(b"arr")).unwrap().unwrap();
    assert_eq!(
        q,
        QueryMax {
            dkey: 3u64.to_be_bytes().to_vec(),
            recx_end: Some(303)
        }
    );
    let q = v.query_max(O1, 2, None, Some(b"arr")).unwrap().unwrap();
    assert_eq!(q.dkey, 2u64.to_be_bytes().to_vec());
    // Punch the top records: the end moves down; punch the dkey: the next one.
    v.update(
        O1,
        5,
        &3u64.to_be_bytes(),
        &[Iod::array_punch("arr", vec![Recx::new(301, 2)])],
        Cond::NONE,
    )
    .unwrap();
    let q = v.query_max(O1, 5, None, Some(b"arr")).unwrap().unwrap();
    assert_eq!(q.recx_end, Some(301));
    v.punch(
        O1,
        6,
        Punch::Dkeys(vec![3u64.to_be_bytes().to_vec()]),
        Cond::NONE,
    )
    .unwrap();
    let q = v.query_max(O1, 6, None, Some(b"arr")).unwrap().unwrap();
    assert_eq!(
        (q.dkey, q.recx_end),
        (2u64.to_be_bytes().to_vec(), Some(203))
    );
    let q = v
        .query_max(O1, 6, Some(&1u64.to_be_bytes()), Some(b"arr"))
        .unwrap()
        .unwrap();
    assert_eq!(q.recx_end, Some(103));
    assert_eq!(
        v.query_max(O1, 6, Some(&3u64.to_be_bytes()), None).unwrap(),
        None
    );
    let q = v.query_max(O1, 6, None, Some(b"other")).unwrap().unwrap();
    assert_eq!((q.dkey, q.recx_end), (9u64.to_be_bytes().to_vec(), None));
}

#[test]
fn conditional_ops() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    let ins = Cond::DKEY_INSERT;
    v.update(O1, 5, b"d", &[Iod::single("a", "1")], ins)
        .unwrap();
    assert_eq!(
        der_of(v.update(O1, 6, b"d", &[Iod::single("b", "1")], ins)),
        Der::EXIST
    );
    // Not visible at an older epoch: the insert succeeds there.
    v.update(O1, 4, b"d", &[Iod::single("b", "0")], ins)
        .unwrap();
    assert_eq!(
        der_of(v.update(O1, 6, b"e", &[Iod::single("a", "1")], Cond::DKEY_UPDATE)),
        Der::NONEXIST
    );
    v.update(O1, 6, b"d", &[Iod::single("a", "2")], Cond::DKEY_UPDATE)
        .unwrap();
    // akey conditions apply to every iod: all or nothing.
    let r = v.update(
        O1,
        7,
        b"d",
        &[Iod::single("new", "x"), Iod::single("a", "3")],
        Cond::AKEY_INSERT,
    );
    assert_eq!(der_of(r), Der::EXIST);
    assert_eq!(single(&v, O1, 7, b"d", b"new"), None);
    assert_eq!(single(&v, O1, 7, b"d", b"a").unwrap(), "2");
    let r = v.update(
        O1,
        7,
        b"d",
        &[Iod::single("a", "3"), Iod::single("new", "x")],
        Cond::AKEY_UPDATE,
    );
    assert_eq!(der_of(r), Der::NONEXIST);
    assert_eq!(single(&v, O1, 7, b"d", b"a").unwrap(), "2");
    v.update(O1, 7, b"d", &[Iod::single("new", "x")], Cond::AKEY_INSERT)
        .unwrap();
    v.update(O1, 8, b"d", &[Iod::single("new", "y")], Cond::AKEY_UPDATE)
        .unwrap();
    assert_eq!(
        der_of(v.update(
            O1,
            8,
            b"d",
            &[Iod::single("a", "y")],
            Cond::DKEY_INSERT | Cond::DKEY_UPDATE
        )),
        Der::INVAL
    );
    // Fetch conditions.
    let req = [FetchReq::Single {
        akey: b"zz".to_vec(),
    }];
    assert_eq!(
        der_of(v.fetch(O1, 8, b"nope", &req, Cond::DKEY_FETCH, Reach::Device)),
        Der::NONEXIST
    );
    assert_eq!(
        der_of(v.fetch(O1, 8, b"d", &req, Cond::AKEY_FETCH, Reach::Device)),
        Der::NONEXIST
    );
    assert_eq!(
        v.fetch(O1, 8, b"d", &req, Cond::DKEY_FETCH, Reach::Device)
            .unwrap(),
        vec![FetchOut::Single(None)]
    );
    // Punch conditions.
    assert_eq!(
        der_of(v.punch(O2, 9, Punch::Object, Cond::DKEY_PUNCH)),
        Der::NONEXIST
    );
    assert_eq!(
        der_of(v.punch(
            O1,
            9,
            Punch::Dkeys(vec![b"d".to_vec(), b"x".to_vec()]),
            Cond::DKEY_PUNCH
        )),
        Der::NONEXIST
    );
    assert_eq!(single(&v, O1, 9, b"d", b"a").unwrap(), "2");
    assert_eq!(
        der_of(v.punch(
            O1,
            9,
            Punch::Akeys {
                dkey: b"d".to_vec(),
                akeys: vec![b"zz".to_vec()]
            },
            Cond::AKEY_PUNCH
        )),
        Der::NONEXIST
    );
    v.punch(
        O1,
        9,
        Punch::Akeys {
            dkey: b"d".to_vec(),
            akeys: vec![b"a".to_vec()],
        },
        Cond::AKEY_PUNCH,
    )
    .unwrap();
    assert_eq!(
        der_of(v.punch(
            O1,
            10,
            Punch::Akeys {
                dkey: b"d".to_vec(),
                akeys: vec![b"a".to_vec()]
            },
            Cond::AKEY_PUNCH
        )),
        Der::NONEXIST
    );
    v.punch(O1, 10, Punch::Dkeys(vec![b"d".to_vec()]), Cond::DKEY_PUNCH)
        .unwrap();
    assert_eq!(
        der_of(v.punch(O1, 11, Punch::Object, Cond::DKEY_PUNCH)),
        Der::NONEXIST
    );
    check_accounting(&v);
}

#[test]
fn aggregation_keeps_snapshot_and_recent_reads() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 22, Some(1 << 20));
    let big = |c: u8| vec![c; 5000];
    v.set_snapshots(C1, vec![3]).unwrap();
    for e in 1..=6u64 {
        put(&mut v, O1, e, b"d", b"s", &big(b'0' + e as u8));
        put_arr(&mut v, O1, e, b"d", b"arr", e, b"ab");
    }
    put(&mut v, O1, 2, b"gone", b"s", b"x");
    v.punch(O1, 4, Punch::Dkeys(vec![b"gone".to_vec()]), Cond::NONE)
        .unwrap();
    put(&mut v, O2, 1, b"d", b"s", b"x");
    v.punch(O2, 2, Punch::Object, Cond::NONE).unwrap();
    v.flush().unwrap();
    let reads = [3u64, 5, 6, 100];
    let snap = |v: &Vos| -> Vec<String> {
        let mut out = Vec::new();
        for &e in &reads {
            out.push(format!(
                "{e}: {:?} {:?} {:?} {:?} {:?}",
                single(v, O1, e, b"d", b"s").map(|b| b[0]),
                array(v, O1, e, b"d", b"arr", &[Recx::new(0, 10)]),
                all_dkeys(v, O1, e),
                v.list_objects(C1, e, &Anchor::start(), 10).unwrap().0,
                v.list_recxs(O1, e, b"d", b"arr", &Anchor::start(), 100)
                    .unwrap()
                    .0,
            ));
        }
        out
    };
    let before = snap(&v);
    let space0 = v.space();
    let st = v.aggregate(5).unwrap();
    assert_eq!(st.upto, 5);
    // Single versions 1, 2, 4 go (3 is the snapshot's, 5 and 6 are >= upto).
    assert!(st.versions_removed >= 3, "{st:?}");
    assert!(st.keys_removed >= 2, "{st:?}"); // "gone" and O2
    assert_eq!(st.bulk_freed, 3 * 5000);
    assert_eq!(snap(&v), before);
    let space1 = v.space();
    assert!(space1.scm_used < space0.scm_used);
    // Bulk space is freed only once the free is durable.
    assert_eq!(space1.bulk_used, space0.bulk_used);
    v.flush().unwrap();
    assert_eq!(v.space().bulk_used, space0.bulk_used - 3 * 8192);
    check_accounting(&v);
    // Writes below the aggregated epoch are refused.
    assert_eq!(
        der_of(v.update(O1, 4, b"d", &[Iod::single("s", "x")], Cond::NONE)),
        Der::AGAIN
    );
    v.update(O1, 5, b"d", &[Iod::single("t", "x")], Cond::NONE)
        .unwrap();
    // Same after replay.
    v.flush().unwrap();
    drop(v);
    let v = open(&d, 1 << 22, Some(1 << 20));
    assert_eq!(snap(&v), before);
    assert_eq!(v.stats().agg_boundary, 5);
    check_accounting(&v);
    // Dropping the snapshot lets the next aggregation take its versions.
    let mut v = v;
    v.set_snapshots(C1, vec![]).unwrap();
    let st = v.aggregate(6).unwrap();
    assert!(st.versions_removed >= 2, "{st:?}");
    assert_eq!(single(&v, O1, 6, b"d", b"s").unwrap()[0], b'6');
    check_accounting(&v);
    sentinels_intact(&d, 1 << 20);
}

#[test]
fn dtx_expectations_compare_before_changing() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 22, Some(1 << 20));
    put(&mut v, O1, 1, b"d", b"a", b"hello world");
    let punch = |n: u128, akey: &str, offset: u32, value: &str| {
        (
            DtxId(n),
            vec![DtxOp::Punch {
                oid: O1,
                what: Punch::Dkeys(vec![b"d".to_vec()]),
                cond: Cond::DKEY_PUNCH,
                expect: vec![Expect {
                    akey: akey.as_bytes().to_vec(),
                    offset,
                    value: value.as_bytes().to_vec(),
                }],
            }],
        )
    };
    // Other bytes, bytes past the value's end, an absent akey: nothing changes.
    for (n, akey, offset, value) in [
        (1, "a", 6, "xorld"),
        (2, "a", 8, "rld!"),
        (3, "a", u32::MAX, "x"),
        (4, "b", 0, ""),
    ] {
        let (id, ops) = punch(n, akey, offset, value);
        assert_eq!(der_of(v.dtx_prepare(id, 5, ops)), Der::MISMATCH, "{n}");
        assert_eq!(v.dtx_state(id), DtxState::Unknown);
    }
    assert!(v.dtx_prepared().is_empty());
    // Only a punch of one dkey (or of akeys under one) may expect.
    let mut whole = punch(5, "a", 0, "hello").1;
    if let DtxOp::Punch { what, .. } = &mut whole[0] {
        *what = Punch::Object;
    }
    assert_eq!(der_of(v.dtx_prepare(DtxId(5), 5, whole)), Der::INVAL);
    // An update's expectations are checked the same way: a compare-and-swap.
    let swap = |n: u128, old: &str, new: &'static str| {
        (
            DtxId(n),
            vec![DtxOp::Update {
                oid: O1,
                dkey: b"d".to_vec(),
                iods: vec![Iod::single("a", new)],
                cond: Cond::NONE,
                expect: vec![Expect {
                    akey: b"a".to_vec(),
                    offset: 0,
                    value: old.as_bytes().to_vec(),
                }],
            }],
        )
    };
    let (id, ops) = swap(6, "world", "x");
    assert_eq!(der_of(v.dtx_prepare(id, 3, ops)), Der::MISMATCH);
    let (id, ops) = swap(7, "hello", "hello there world");
    v.dtx_prepare(id, 3, ops).unwrap();
    v.dtx_commit(id).unwrap();
    let (id, ops) = punch(8, "a", 7, "here");
    v.dtx_prepare(id, 5, ops).unwrap();
    v.dtx_commit(id).unwrap();
    assert_eq!(single(&v, O1, 5, b"d", b"a"), None);
    assert_eq!(single(&v, O1, 4, b"d", b"a").unwrap(), "hello there world");
    assert_eq!(single(&v, O1, 2, b"d", b"a").unwrap(), "hello world");
    check_accounting(&v);
}

#[test]
fn dtx_prepare_commit_abort() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 22, Some(1 << 20));
    put(&mut v, O1, 1, b"d", b"a", b"old");
    let id = DtxId(7);
    let ops = vec![
        DtxOp::Update {
            oid: O1,
            dkey: b"d".to_vec(),
            iods: vec![Iod::single("a", "new"), Iod::single("big", vec![9u8; 8000])],
            cond: Cond::NONE,
            expect: vec![],
        },
        DtxOp::Punch {
            oid: O2,
            what: Punch::Object,
            cond: Cond::NONE,
            expect: vec![],
        },
    ];
    v.dtx_prepare(id, 5, ops.clone()).unwrap();
    assert_eq!(v.dtx_state(id), DtxState::Prepared);
    assert_eq!(v.dtx_prepared(), vec![(id, 5)]);
    assert_eq!(der_of(v.dtx_prepare(id, 5, ops.clone())), Der::EXIST);
    // Invisible below its epoch; in progress at or above it.
    assert_eq!(single(&v, O1, 4, b"d", b"a").unwrap(), "old");
    let req = [FetchReq::Single {
        akey: b"a".to_vec(),
    }];
    assert_eq!(
        der_of(v.fetch(O1, 5, b"d", &req, Cond::NONE, Reach::Device)),
        Der::INPROGRESS
    );
    assert_eq!(
        der_of(v.list_dkeys(O1, 5, &Anchor::start(), 9)),
        Der::INPROGRESS
    );
    assert_eq!(
        der_of(v.list_dkeys(O2, 9, &Anchor::start(), 9)),
        Der::INPROGRESS
    );
    // Other dkeys are free.
    put(&mut v, O1, 6, b"other", b"a", b"x");
    assert_eq!(
        der_of(v.update(O1, 6, b"d", &[Iod::single("a", "x")], Cond::NONE)),
        Der::INPROGRESS
    );
    assert_eq!(
        der_of(v.update(O1, 2, b"d", &[Iod::single("zz", "x")], Cond::NONE)),
        Der::INPROGRESS
    );
    assert_eq!(
        der_of(v.punch(O1, 6, Punch::Object, Cond::NONE)),
        Der::INPROGRESS
    );
    assert_eq!(
        der_of(v.punch(O2, 6, Punch::Dkeys(vec![b"x".to_vec()]), Cond::NONE)),
        Der::INPROGRESS
    );
    // Aggregation stops at the prepared epoch.
    assert_eq!(v.aggregate(100).unwrap().upto, 5);
    // Prepared survives a restart.
    v.flush().unwrap();
    drop(v);
    let mut v = open(&d, 1 << 22, Some(1 << 20));
    assert_eq!(v.dtx_prepared(), vec![(id, 5)]);
    assert_eq!(
        der_of(v.fetch(O1, 5, b"d", &req, Cond::NONE, Reach::Device)),
        Der::INPROGRESS
    );
    let bulk_prepared = v.space().bulk_used;
    assert_eq!(bulk_prepared, 8192);
    v.dtx_commit(id).unwrap();
    v.dtx_commit(id).unwrap();
    assert_eq!(v.dtx_state(id), DtxState::Committed);
    assert_eq!(der_of(v.dtx_abort(id)), Der::ALREADY);
    assert_eq!(single(&v, O1, 5, b"d", b"a").unwrap(), "new");
    assert_eq!(single(&v, O1, 5, b"d", b"big").unwrap().len(), 8000);
    assert_eq!(single(&v, O1, 4, b"d", b"a").unwrap(), "old");
    v.update(O1, 7, b"d", &[Iod::single("a", "x")], Cond::NONE)
        .unwrap();
    // Abort: space comes back after the flush.
    let id2 = DtxId(8);
    v.dtx_prepare(
        id2,
        9,
        vec![DtxOp::Update {
            oid: O1,
            dkey: b"e".to_vec(),
            iods: vec![Iod::single("big", vec![1u8; 9000])],
            cond: Cond::DKEY_INSERT,
            expect: vec![],
        }],
    )
    .unwrap();
    assert_eq!(v.space().bulk_used, 8192 + 12288);
    let scm = v.space().scm_used;
    v.dtx_abort(id2).unwrap();
    v.dtx_abort(id2).unwrap();
    assert!(v.space().scm_used < scm);
    assert_eq!(v.dtx_state(id2), DtxState::Aborted);
    assert_eq!(der_of(v.dtx_commit(id2)), Der::NONEXIST);
    assert_eq!(der_of(v.dtx_commit(DtxId(99))), Der::NONEXIST);
    assert_eq!(v.dtx_state(DtxId(99)), DtxState::Unknown);
    assert_eq!(single(&v, O1, 9, b"e", b"big"), None);
    v.flush().unwrap();
    assert_eq!(v.space().bulk_used, 8192);
    // A prepare whose condition fails changes nothing.
    let r = v.dtx_prepare(
        DtxId(10),
        10,
        vec![
            DtxOp::Update {
                oid: O2,
                dkey: b"n".to_vec(),
                iods: vec![Iod::single("a", "x")],
                cond: Cond::NONE,
                expect: vec![],
            },
            DtxOp::Update {
                oid: O1,
                dkey: b"d".to_vec(),
                iods: vec![Iod::single("a", "x")],
                cond: Cond::DKEY_INSERT,
                expect: vec![],
            },
        ],
    );
    assert_eq!(der_of(r), Der::EXIST);
    assert_eq!(v.dtx_state(DtxId(10)), DtxState::Unknown);
    assert!(v.dtx_prepared().is_empty());
    check_accounting(&v);
    drop(v);
    let v = open(&d, 1 << 22, Some(1 << 20));
    assert_eq!(v.dtx_state(id), DtxState::Committed);
    assert_eq!(v.dtx_state(id2), DtxState::Aborted);
    assert_eq!(single(&v, O1, 5, b"d", b"big").unwrap().len(), 8000);
    check_accounting(&v);
}

#[test]
fn nospace_changes_nothing() {
    let d = TempDir::new().unwrap();
    let scm = 3 * 8192;
    let mut v = open(&d, scm, None);
    let mut n = 0u64;
    let err = loop {
        match v.update(
            O1,
            1,
            &n.to_be_bytes(),
            &[Iod::single("a", vec![n as u8; 100])],
            Cond::NONE,
        ) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 1000);
    };
    assert_eq!(err.to_daos().der, Der::NOSPACE);
    assert!(n > 10);
    let used = v.space().scm_used;
    assert!(used <= v.space().scm_total);
    assert_eq!(single(&v, O1, 1, &n.to_be_bytes(), b"a"), None);
    for i in 0..n {
        assert_eq!(
            single(&v, O1, 1, &i.to_be_bytes(), b"a").unwrap(),
            vec![i as u8; 100]
        );
    }
    v.flush().unwrap();
    drop(v);
    let mut v = open(&d, scm, None);
    assert_eq!(v.space().scm_used, used);
    for i in 0..n {
        assert_eq!(
            single(&v, O1, 1, &i.to_be_bytes(), b"a").unwrap(),
            vec![i as u8; 100]
        );
    }
    // Punch + aggregation frees room again.
    v.punch(O1, 2, Punch::Object, Cond::NONE).unwrap();
    v.aggregate(3).unwrap();
    v.update(O1, 3, b"x", &[Iod::single("a", vec![1u8; 100])], Cond::NONE)
        .unwrap();
    check_accounting(&v);

    // Bulk exhaustion: the whole update fails, the SCM part too.
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, Some(4 * 4096));
    put(&mut v, O1, 1, b"d", b"a", &[1u8; 8192]);
    let r = v.update(
        O1,
        2,
        b"d",
        &[
            Iod::single("small", "x"),
            Iod::single("b", vec![2u8; 8192]),
            Iod::single("c", vec![3u8; 4096]),
        ],
        Cond::NONE,
    );
    assert_eq!(der_of(r), Der::NOSPACE);
    assert_eq!(single(&v, O1, 2, b"d", b"small"), None);
    assert_eq!(v.space().bulk_used, 8192);
    assert_eq!(single(&v, O1, 2, b"d", b"a").unwrap(), vec![1u8; 8192]);
    sentinels_intact(&d, 4 * 4096);
}

#[test]
fn memory_reads_take_bulk_values_from_the_page_cache_only() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, Some(16 * 4096));
    put(&mut v, O1, 1, b"d", b"small", b"inline");
    put(&mut v, O1, 1, b"d", b"big", &[7u8; 4096]);
    v.flush().unwrap();
    let get = |akey: &[u8], reach| {
        v.fetch(
            O1,
            1,
            b"d",
            &[FetchReq::Single {
                akey: akey.to_vec(),
            }],
            Cond::NONE,
            reach,
        )
    };
    assert_eq!(
        get(b"small", Reach::Memory).unwrap(),
        vec![FetchOut::Single(Some(Bytes::from_static(b"inline")))]
    );
    assert_eq!(
        get(b"none", Reach::Memory).unwrap(),
        vec![FetchOut::Single(None)]
    );
    let big = vec![FetchOut::Single(Some(Bytes::from(vec![7u8; 4096])))];
    // Out of the page cache (written back, so the pages are clean and go;
    // a tmpfs keeps them), a memory read must not wait on the device.
    let f = &v.bulk.as_ref().unwrap().file;
    f.sync_data().unwrap();
    nix::fcntl::posix_fadvise(
        std::os::fd::AsRawFd::as_raw_fd(f),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
    let on_tmpfs =
        nix::sys::statfs::fstatfs(f).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC;
    match get(b"big", Reach::Memory) {
        Err(Error::NeedsDevice) => {}
        Ok(a) if on_tmpfs => assert_eq!(a, big),
        r => panic!(
            "uncached bulk value read from memory: {:?}",
            r.map(|_| "Ok")
        ),
    }
    assert_eq!(get(b"big", Reach::Device).unwrap(), big);
    // The device read left it cached: now memory serves it.
    assert_eq!(get(b"big", Reach::Memory).unwrap(), big);
}

#[test]
fn bulk_device_is_synced_per_flush_unless_the_log_is_in_memory() {
    // /dev/shm is a tmpfs on Linux; the temporary directory usually is not.
    // Whichever kind each turns out to be, its rule is checked.
    for base in [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let Ok(d) = TempDir::new_in(&base) else {
            continue;
        };
        let len = 16 * 4096;
        let mut c = cfg(&d, 1 << 20, Some(len));
        c.sync = true;
        let in_memory = in_memory(d.path());
        let mut v = Vos::open(c.clone()).unwrap();
        for e in 1..=3u8 {
            put(&mut v, O1, u64::from(e), b"d", b"big", &[e; 4096]);
            v.flush().unwrap();
        }
        let per_flush = if in_memory { 0 } else { 3 };
        assert_eq!(v.stats().bulk_syncs, per_flush, "{}", base.display());
        // A checkpoint syncs what the flushes left in the page cache.
        v.checkpoint().unwrap();
        assert_eq!(v.stats().bulk_syncs, if in_memory { 1 } else { 3 });
        assert!(v.flush_is_cheap() == in_memory);
        drop(v);
        let v = Vos::open(c).unwrap();
        assert_eq!(single(&v, O1, 3, b"d", b"big").unwrap(), vec![3u8; 4096]);
        assert_eq!(single(&v, O1, 2, b"d", b"big").unwrap(), vec![2u8; 4096]);
    }
}

#[test]
fn bulk_values_survive_reopen_and_space_is_reused() {
    let d = TempDir::new().unwrap();
    let len = 64 * 4096;
    let mut v = open(&d, 1 << 20, Some(len));
    let data: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
    v.update(
        O1,
        1,
        b"d",
        &[Iod::array(
            "arr",
            4,
            vec![Recx::new(10, 5000)],
            data.clone(),
        )],
        Cond::NONE,
    )
    .unwrap();
    put(&mut v, O1, 1, b"d", b"s", &data[..4096]);
    assert_eq!(v.space().bulk_used, 5 * 4096 + 4096);
    v.flush().unwrap();
    drop(v);
    let mut v = open(&d, 1 << 20, Some(len));
    assert_eq!(v.space().bulk_used, 6 * 4096);
    let (rs, got) = array(&v, O1, 1, b"d", b"arr", &[Recx::new(12, 3)]);
    assert_eq!((rs, got.as_slice()), (4, &data[8..20]));
    assert_eq!(single(&v, O1, 1, b"d", b"s").unwrap(), &data[..4096]);
    // Overwrite at the same epoch frees the old bulk value once flushed.
    put(&mut v, O1, 1, b"d", b"s", &data[100..4196]);
    assert_eq!(v.space().bulk_used, 7 * 4096);
    v.flush().unwrap();
    assert_eq!(v.space().bulk_used, 6 * 4096);
    assert_eq!(single(&v, O1, 1, b"d", b"s").unwrap(), &data[100..4196]);
    sentinels_intact(&d, len);
    // A VOS whose image points into a bulk region cannot open without one.
    drop(v);
    let mut c = cfg(&d, 1 << 20, None);
    c.bulk = None;
    assert_eq!(der_of(Vos::open(c)), Der::INVAL);
}

#[test]
fn unflushed_mutations_are_lost_on_crash() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, Some(1 << 20));
    put(&mut v, O1, 1, b"d", b"a", b"durable");
    put(&mut v, O1, 1, b"d", b"big", &[5u8; 5000]);
    v.flush().unwrap();
    put(&mut v, O1, 2, b"d", b"a", b"lost");
    put(&mut v, O1, 2, b"d", b"big2", &[6u8; 5000]);
    v.punch(O1, 3, Punch::Object, Cond::NONE).unwrap();
    drop(v);
    let mut v = open(&d, 1 << 20, Some(1 << 20));
    assert_eq!(single(&v, O1, 9, b"d", b"a").unwrap(), "durable");
    assert_eq!(single(&v, O1, 9, b"d", b"big2"), None);
    assert_eq!(v.space().bulk_used, 8192);
    // The space the lost write had is free again.
    put(&mut v, O1, 4, b"d", b"big3", &[7u8; 5000]);
    assert_eq!(v.space().bulk_used, 16384);
    assert_eq!(single(&v, O1, 9, b"d", b"big").unwrap(), vec![5u8; 5000]);
}

#[test]
fn checkpoint_when_log_is_full() {
    let d = TempDir::new().unwrap();
    let scm = 3 * 64 * 1024;
    let mut v = open(&d, scm, None);
    for i in 0..500u64 {
        // Overwrites: the image stays small while the log grows.
        put(&mut v, O1, i + 1, b"d", b"a", &[i as u8; 200]);
        v.flush().unwrap();
        if i % 50 == 0 {
            v.aggregate(i + 1).unwrap();
        }
        assert!(v.stats().log_bytes <= scm / 3);
    }
    assert!(v.stats().checkpoints > 0);
    drop(v);
    let v = open(&d, scm, None);
    assert_eq!(single(&v, O1, 500, b"d", b"a").unwrap(), vec![243u8; 200]);
    let total: u64 = std::fs::read_dir(d.path().join("vos"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= scm, "{total} bytes on disk > {scm}");
    check_accounting(&v);
}

#[test]
fn failed_write_latches() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    put(&mut v, O1, 1, b"d", b"a", b"x");
    // Swap the log for a read-only handle: the append fails.
    v.log.file = File::open(d.path().join("vos").join(wal::LOG_FILE)).unwrap();
    assert!(v.flush().is_err());
    let r = v.update(O1, 2, b"d", &[Iod::single("a", "y")], Cond::NONE);
    assert_eq!(der_of(r), Der::IO);
    assert_eq!(der_of(v.flush()), Der::IO);
    assert_eq!(der_of(v.dtx_commit(DtxId(1))), Der::IO);
    // Reads still work.
    assert_eq!(single(&v, O1, 1, b"d", b"a").unwrap(), "x");
    drop(v);
    let v = open(&d, 1 << 20, None);
    assert_eq!(single(&v, O1, 1, b"d", b"a"), None);
}

#[test]
fn containers_are_separate() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 22, Some(1 << 20));
    let a = Oid::new(1, 0, 5);
    let b = Oid::new(2, 0, 5);
    put(&mut v, a, 1, b"d", b"s", b"in a");
    put(&mut v, b, 1, b"d", b"s", &[7u8; 5000]);
    put(&mut v, b, 2, b"d", b"s", b"b2");
    let objs = |v: &Vos, c: u128| v.list_objects(c, 9, &Anchor::start(), 10).unwrap().0;
    assert_eq!(objs(&v, 1), vec![a]);
    assert_eq!(objs(&v, 2), vec![b]);
    assert!(objs(&v, 3).is_empty());
    // Snapshots are per container.
    v.set_snapshots(2, vec![1]).unwrap();
    v.set_snapshots(1, vec![]).unwrap();
    assert_eq!(v.snapshots(2), &[1]);
    assert!(v.snapshots(1).is_empty());
    v.aggregate(5).unwrap();
    assert_eq!(single(&v, b, 1, b"d", b"s").unwrap(), vec![7u8; 5000]);
    assert_eq!(single(&v, b, 5, b"d", b"s").unwrap(), "b2");
    // Destroy aborts the container's prepared DTXs and frees its space.
    let c = Oid::new(2, 0, 6);
    v.dtx_prepare(
        DtxId(1),
        6,
        vec![DtxOp::Update {
            oid: c,
            dkey: b"d".to_vec(),
            iods: vec![Iod::single("s", vec![1u8; 6000])],
            cond: Cond::NONE,
            expect: vec![],
        }],
    )
    .unwrap();
    assert_eq!(v.space().bulk_used, 2 * 8192);
    v.destroy_cont(2).unwrap();
    v.destroy_cont(2).unwrap();
    assert_eq!(v.dtx_state(DtxId(1)), DtxState::Aborted);
    assert!(objs(&v, 2).is_empty());
    assert!(v.snapshots(2).is_empty());
    assert_eq!(single(&v, b, 1, b"d", b"s"), None);
    v.flush().unwrap();
    assert_eq!(v.space().bulk_used, 0);
    assert_eq!(single(&v, a, 9, b"d", b"s").unwrap(), "in a");
    check_accounting(&v);
    drop(v);
    let v = open(&d, 1 << 22, Some(1 << 20));
    assert!(objs(&v, 2).is_empty());
    assert_eq!(objs(&v, 1), vec![a]);
    assert_eq!(v.dtx_state(DtxId(1)), DtxState::Aborted);
    check_accounting(&v);
}

#[test]
fn max_epoch_is_the_newest_change_at_or_below() {
    let d = TempDir::new().unwrap();
    let mut v = open(&d, 1 << 20, None);
    assert_eq!(v.query_max_and_epoch(O1, 10, None).unwrap().1, 0);
    put_arr(&mut v, O1, 2, &1u64.to_be_bytes(), b"arr", 0, b"xyz");
    put_arr(&mut v, O1, 5, &2u64.to_be_bytes(), b"arr", 100, b"xyz");
    put(&mut v, O1, 7, &9u64.to_be_bytes(), b"other", b"v");
    assert_eq!(v.query_max_and_epoch(O1, 10, None).unwrap().1, 7);
    assert_eq!(v.query_max_and_epoch(O1, 10, Some(b"arr")).unwrap().1, 5);
    assert_eq!(v.query_max_and_epoch(O1, 4, Some(b"arr")).unwrap().1, 2);
    assert_eq!(v.query_max_and_epoch(O1, 1, Some(b"arr")).unwrap().1, 0);
    // A punch of records, or of a dkey holding the akey, is a change too; a
    // punch of a dkey without it is not.
    v.update(
        O1,
        8,
        &1u64.to_be_bytes(),
        &[Iod::array_punch("arr", vec![Recx::new(0, 1)])],
        Cond::NONE,
    )
    .unwrap();
    assert_eq!(v.query_max_and_epoch(O1, 10, Some(b"arr")).unwrap().1, 8);
    v.punch(
        O1,
        9,
        Punch::Dkeys(vec![9u64.to_be_bytes().to_vec()]),
        Cond::NONE,
    )
    .unwrap();
    assert_eq!(v.query_max_and_epoch(O1, 10, Some(b"arr")).unwrap().1, 8);
    assert_eq!(v.query_max_and_epoch(O1, 10, None).unwrap().1, 9);
    v.punch(
        O1,
        10,
        Punch::Dkeys(vec![2u64.to_be_bytes().to_vec()]),
        Cond::NONE,
    )
    .unwrap();
    assert_eq!(v.query_max_and_epoch(O1, 10, Some(b"arr")).unwrap().1, 10);
}
