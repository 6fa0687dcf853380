//! VOS crash tests: what survives a crash is exactly what was flushed; a torn
//! log tail is cut; corruption in the middle of the log or in the checkpoint
//! is an error naming the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::path::Path;

use engine::vos::{Anchor, BulkRegion, Cond, FetchOut, FetchReq, Iod, Oid, Reach, Vos, VosConfig};
use tempfile::TempDir;

const OID: Oid = Oid {
    cont: 0x5eed,
    hi: 3,
    lo: 4,
};
const BULK_LEN: u64 = 1 << 20;

fn cfg(root: &Path, vos_dir: &str) -> VosConfig {
    let bdev = root.join("bdev");
    if !bdev.exists() {
        File::create(&bdev).unwrap().set_len(BULK_LEN).unwrap();
    }
    VosConfig {
        dir: root.join(vos_dir),
        scm_bytes: 3 << 20,
        bulk: Some(BulkRegion {
            path: bdev,
            offset: 0,
            len: BULK_LEN,
        }),
        sync: true,
        data_thresh: engine::vos::DEFAULT_DATA_THRESH,
    }
}

/// Batch `i` writes dkey `i` with a small and a bulk value.
fn write_batch(v: &mut Vos, i: u64) {
    v.update(
        OID,
        i + 1,
        &i.to_be_bytes(),
        &[
            Iod::single("small", vec![i as u8; 10]),
            Iod::single("big", vec![i as u8; 5000]),
        ],
        Cond::NONE,
    )
    .unwrap();
    v.update(
        OID,
        i + 1,
        b"counter",
        &[Iod::single("n", i.to_le_bytes().to_vec())],
        Cond::NONE,
    )
    .unwrap();
}

/// Checks that exactly batches `0..n` are visible, with their full contents.
fn check_prefix(v: &Vos, n: u64) {
    let (dkeys, a) = v
        .list_dkeys(OID, u64::MAX, &Anchor::start(), 10_000)
        .unwrap();
    assert!(a.eof);
    let want: Vec<Vec<u8>> = (0..n)
        .map(|i| i.to_be_bytes().to_vec())
        .chain((n > 0).then(|| b"counter".to_vec()))
        .collect();
    let mut want = want;
    want.sort();
    assert_eq!(dkeys, want, "expected the first {n} batches");
    for i in 0..n {
        let out = v
            .fetch(
                OID,
                u64::MAX,
                &i.to_be_bytes(),
                &[
                    FetchReq::Single {
                        akey: b"small".to_vec(),
                    },
                    FetchReq::Single {
                        akey: b"big".to_vec(),
                    },
                ],
                Cond::NONE,
                Reach::Device,
            )
            .unwrap();
        assert_eq!(out[0], FetchOut::Single(Some(vec![i as u8; 10].into())));
        assert_eq!(out[1], FetchOut::Single(Some(vec![i as u8; 5000].into())));
    }
    if n > 0 {
        let out = v
            .fetch(
                OID,
                u64::MAX,
                b"counter",
                &[FetchReq::Single {
                    akey: b"n".to_vec(),
                }],
                Cond::NONE,
                Reach::Device,
            )
            .unwrap();
        assert_eq!(
            out[0],
            FetchOut::Single(Some((n - 1).to_le_bytes().to_vec().into()))
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn exactly_the_flushed_mutations_survive() {
    let d = TempDir::new().unwrap();
    let mut v = Vos::open(cfg(d.path(), "vos")).unwrap();
    for i in 0..5 {
        write_batch(&mut v, i);
        v.flush().unwrap();
    }
    write_batch(&mut v, 5);
    write_batch(&mut v, 6);
    drop(v); // a crash: no flush
    let mut v = Vos::open(cfg(d.path(), "vos")).unwrap();
    check_prefix(&v, 5);
    assert_eq!(v.space().bulk_used, 5 * 8192);
    // Writing goes on from there.
    write_batch(&mut v, 5);
    v.flush().unwrap();
    drop(v);
    check_prefix(&Vos::open(cfg(d.path(), "vos")).unwrap(), 6);
}

#[test]
fn torn_log_tail_gives_a_prefix_of_batches() {
    let d = TempDir::new().unwrap();
    let mut v = Vos::open(cfg(d.path(), "vos")).unwrap();
    let mut ends = vec![v.stats().log_bytes];
    for i in 0..4 {
        write_batch(&mut v, i);
        v.flush().unwrap();
        ends.push(v.stats().log_bytes);
    }
    drop(v);
    let log = d.path().join("vos").join("vos.log");
    let full = fs::read(&log).unwrap();
    assert_eq!(full.len() as u64, ends[4]);
    // Every offset of the last batch, and a stride through the earlier ones.
    let last_start = ends[3] as usize;
    let cuts: Vec<usize> = (last_start..=full.len())
        .chain((0..last_start).step_by(7))
        .collect();
    for cut in cuts {
        let name = format!("cut{cut}");
        let dir = d.path().join(&name);
        copy_dir(&d.path().join("vos"), &dir);
        fs::write(dir.join("vos.log"), &full[..cut]).unwrap();
        let mut v = Vos::open(cfg(d.path(), &name)).unwrap();
        let n = ends
            .iter()
            .filter(|e| **e as usize <= cut)
            .count()
            .saturating_sub(1) as u64;
        check_prefix(&v, n);
        // The torn part is gone from the file, and new batches append cleanly.
        let kept = ends[n as usize].max(16);
        assert_eq!(
            fs::metadata(dir.join("vos.log")).unwrap().len(),
            kept,
            "cut at {cut}"
        );
        write_batch(&mut v, n);
        v.flush().unwrap();
        drop(v);
        check_prefix(&Vos::open(cfg(d.path(), &name)).unwrap(), n + 1);
        fs::remove_dir_all(&dir).unwrap();
    }
    // A tail of zeros (a file extended but never written) is torn too.
    let mut z = full.clone();
    z.extend_from_slice(&[0u8; 4096]);
    fs::write(&log, &z).unwrap();
    check_prefix(&Vos::open(cfg(d.path(), "vos")).unwrap(), 4);
}

#[test]
fn corruption_in_the_middle_is_an_error_naming_the_file() {
    let d = TempDir::new().unwrap();
    let mut v = Vos::open(cfg(d.path(), "vos")).unwrap();
    let mut ends = vec![v.stats().log_bytes];
    for i in 0..4 {
        write_batch(&mut v, i);
        v.flush().unwrap();
        ends.push(v.stats().log_bytes);
    }
    drop(v);
    let log = d.path().join("vos").join("vos.log");
    let full = fs::read(&log).unwrap();
    // Flip a byte in the second record (header, body start, body middle).
    for at in [
        ends[1] as usize,
        ends[1] as usize + 5,
        ends[1] as usize + 13,
        (ends[1] + ends[2]) as usize / 2,
    ] {
        let mut bad = full.clone();
        bad[at] ^= 0x10;
        fs::write(&log, &bad).unwrap();
        let err = Vos::open(cfg(d.path(), "vos")).unwrap_err().to_string();
        assert!(err.contains("vos.log"), "{err}");
        assert!(err.contains("corrupt"), "{err}");
        // Nothing was cut: the file is as it was.
        assert_eq!(fs::read(&log).unwrap(), bad);
    }
    // A bad header is an error too.
    let mut bad = full.clone();
    bad[2] ^= 1;
    fs::write(&log, &bad).unwrap();
    let err = Vos::open(cfg(d.path(), "vos")).unwrap_err().to_string();
    assert!(err.contains("vos.log"), "{err}");
    fs::write(&log, &full).unwrap();
    check_prefix(&Vos::open(cfg(d.path(), "vos")).unwrap(), 4);
}

#[test]
fn checkpoint_then_log_then_reopen() {
    let d = TempDir::new().unwrap();
    let mut v = Vos::open(cfg(d.path(), "vos")).unwrap();
    for i in 0..3 {
        write_batch(&mut v, i);
        v.flush().unwrap();
    }
    let old_log = fs::read(d.path().join("vos").join("vos.log")).unwrap();
    write_batch(&mut v, 3);
    v.checkpoint().unwrap();
    assert_eq!(v.stats().log_bytes, 16);
    for i in 4..6 {
        write_batch(&mut v, i);
        v.flush().unwrap();
    }
    write_batch(&mut v, 6); // unflushed
    drop(v);
    check_prefix(&Vos::open(cfg(d.path(), "vos")).unwrap(), 6);

    // A crash after the checkpoint's rename but before the log reset leaves
    // the old records in the log: they are skipped.
    let d2 = d.path().join("vos2");
    copy_dir(&d.path().join("vos"), &d2);
    fs::write(d2.join("vos.log"), &old_log).unwrap();
    let mut v = Vos::open(cfg(d.path(), "vos2")).unwrap();
    check_prefix(&v, 4);
    write_batch(&mut v, 4);
    v.flush().unwrap();
    drop(v);
    check_prefix(&Vos::open(cfg(d.path(), "vos2")).unwrap(), 5);

    // A leftover temp checkpoint (crash while writing one) is ignored.
    fs::write(d.path().join("vos").join("vos.ckpt.tmp"), b"partial").unwrap();
    check_prefix(&Vos::open(cfg(d.path(), "vos")).unwrap(), 6);

    // A corrupt checkpoint is an error naming it.
    let ck = d.path().join("vos").join("vos.ckpt");
    let mut bad = fs::read(&ck).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    fs::write(&ck, &bad).unwrap();
    let err = Vos::open(cfg(d.path(), "vos")).unwrap_err().to_string();
    assert!(err.contains("vos.ckpt"), "{err}");
}
