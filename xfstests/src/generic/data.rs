//! File data semantics: open files outliving their names, atomic rename under readers,
//! `O_APPEND` from several processes, truncation zero-fill, mmap coherence.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use nix::errno::Errno;

use super::{bytes, expect_errno, ok, open_rw, pass, run_worker, write_file, Ctx, Verdict};
use crate::sys;
use crate::worker::{RenameReaderStats, APPEND_RECORD};

super::test_list!(
    unlink_while_open_keeps_data,
    rename_over_open_file_keeps_old_data,
    hardlink_shares_inode_and_counts,
    o_excl_create_fails_on_existing_name,
    o_append_from_two_processes_never_overwrites,
    rename_is_atomic_under_concurrent_readers,
    truncate_down_then_up_reads_zeros,
    mmap_is_coherent_with_read_and_write,
    write_past_eof_leaves_zero_gap,
);

fn unlink_while_open_keeps_data(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    let data = bytes(7, 100_000);
    write_file(&p, &data)?;
    let mut f = ok(OpenOptions::new().read(true).write(true).open(&p), "open")?;
    ok(fs::remove_file(&p), "unlink")?;
    ensure!(!p.exists(), "name still resolves after unlink");
    let st = ok(f.metadata(), "fstat after unlink")?;
    ensure!(
        st.nlink() == 0,
        "nlink {} after unlink, expected 0",
        st.nlink()
    );
    let mut got = Vec::new();
    ok(f.read_to_end(&mut got), "read after unlink")?;
    ensure!(got == data, "data read after unlink differs");
    // Still writable, and the new bytes are readable through the same descriptor.
    ok(
        sys::pwrite_all(f.as_fd(), b"tail", 100_000),
        "write after unlink",
    )?;
    let mut buf = [0u8; 4];
    ok(sys::pread_full(f.as_fd(), &mut buf, 100_000), "read back")?;
    ensure!(
        &buf == b"tail",
        "bytes written after unlink read back as {buf:?}"
    );
    // A new file of the same name is a different, empty file.
    write_file(&p, b"new")?;
    ensure!(
        ok(fs::read(&p), "read new")? == b"new",
        "new file of the same name shows old data"
    );
    ensure!(
        ok(f.metadata(), "fstat")?.ino() != ok(fs::metadata(&p), "stat new")?.ino(),
        "new file reuses the open, unlinked file's inode number"
    );
    pass()
}

fn rename_over_open_file_keeps_old_data(c: &Ctx) -> Result<Verdict> {
    let (a, b) = (c.p("a"), c.p("b"));
    write_file(&a, b"old contents")?;
    write_file(&b, b"new contents")?;
    let mut old = ok(File::open(&a), "open a")?;
    ok(fs::rename(&b, &a), "rename b over a")?;
    ensure!(!b.exists(), "source name still exists after rename");
    let mut got = String::new();
    ok(old.read_to_string(&mut got), "read open old file")?;
    ensure!(
        got == "old contents",
        "open file replaced by rename reads {got:?}"
    );
    ensure!(
        ok(fs::read(&a), "read a")? == b"new contents",
        "a does not hold b's data"
    );
    ensure!(
        ok(old.metadata(), "fstat")?.nlink() == 0,
        "replaced file still has links"
    );
    pass()
}

fn hardlink_shares_inode_and_counts(c: &Ctx) -> Result<Verdict> {
    let (a, b) = (c.p("a"), c.p("b"));
    write_file(&a, b"one")?;
    ok(fs::hard_link(&a, &b), "link")?;
    let (ma, mb) = (
        ok(fs::metadata(&a), "stat a")?,
        ok(fs::metadata(&b), "stat b")?,
    );
    ensure!(
        ma.ino() == mb.ino(),
        "links have inodes {} and {}",
        ma.ino(),
        mb.ino()
    );
    ensure!(
        ma.nlink() == 2 && mb.nlink() == 2,
        "nlink {} / {}, expected 2",
        ma.nlink(),
        mb.nlink()
    );
    write_file(&b, b"two!")?;
    ensure!(
        ok(fs::read(&a), "read a")? == b"two!",
        "write through one link not seen through the other"
    );
    ok(fs::remove_file(&a), "unlink a")?;
    let mb = ok(fs::metadata(&b), "stat b")?;
    ensure!(
        mb.nlink() == 1,
        "nlink {} after unlinking one of two links",
        mb.nlink()
    );
    expect_errno(
        fs::hard_link(c.p("missing"), c.p("x")),
        Errno::ENOENT,
        "link of a missing file",
    )?;
    ok(fs::create_dir(c.p("d")), "mkdir")?;
    expect_errno(
        fs::hard_link(c.p("d"), c.p("dl")),
        Errno::EPERM,
        "link of a directory",
    )?;
    expect_errno(
        fs::hard_link(&b, c.p("d")),
        Errno::EEXIST,
        "link onto an existing name",
    )?;
    pass()
}

fn o_excl_create_fails_on_existing_name(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    let excl = |p: &std::path::Path| OpenOptions::new().write(true).create_new(true).open(p);
    ok(excl(&p), "first O_EXCL create")?;
    expect_errno(excl(&p), Errno::EEXIST, "second O_EXCL create")?;
    // O_EXCL does not follow a symlink, even a dangling one.
    ok(std::os::unix::fs::symlink("nowhere", c.p("s")), "symlink")?;
    expect_errno(
        excl(&c.p("s")),
        Errno::EEXIST,
        "O_EXCL create on a dangling symlink",
    )?;
    ensure!(
        !c.p("nowhere").exists(),
        "O_EXCL followed the symlink and created its target"
    );
    pass()
}

fn o_append_from_two_processes_never_overwrites(c: &Ctx) -> Result<Verdict> {
    let p = c.p("log");
    write_file(&p, b"")?;
    let count = 2000u64;
    let mut kids = Vec::new();
    for id in 0..2u8 {
        let mut cmd = c.worker("appender");
        cmd.arg("--path").arg(&p).arg("--id").arg(id.to_string());
        cmd.arg("--count").arg(count.to_string());
        kids.push(std::thread::spawn(move || {
            run_worker(&mut cmd, Duration::from_secs(120))
        }));
    }
    for k in kids {
        match k.join() {
            Ok(r) => {
                r?;
            }
            Err(_) => bail!("appender thread panicked"),
        }
    }
    let data = ok(fs::read(&p), "read log")?;
    let want = 2 * count as usize * APPEND_RECORD;
    ensure!(
        data.len() == want,
        "file is {} bytes, expected {want}: appends overwrote each other",
        data.len()
    );
    let mut next = [0u64; 2];
    for (i, rec) in data.chunks(APPEND_RECORD).enumerate() {
        let (id, seq) = crate::worker::parse_append_record(rec).ok_or_else(|| {
            anyhow::anyhow!("record {i} at byte {} is damaged", i * APPEND_RECORD)
        })?;
        ensure!(
            seq == next[id as usize],
            "writer {id}: record {seq} where {} was due",
            next[id as usize]
        );
        next[id as usize] += 1;
    }
    pass()
}

fn rename_is_atomic_under_concurrent_readers(c: &Ctx) -> Result<Verdict> {
    let target = c.p("target");
    let tmp = c.p("tmp");
    fs::write(&target, crate::worker::version_body(0))?;
    let millis = 2000u64;
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut cmd = c.worker("rename-reader");
        cmd.arg("--path")
            .arg(&target)
            .arg("--millis")
            .arg(millis.to_string());
        readers.push(std::thread::spawn(move || {
            run_worker(&mut cmd, Duration::from_secs(60))
        }));
    }
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut v = 0u64;
    while Instant::now() < deadline {
        v += 1;
        ok(
            fs::write(&tmp, crate::worker::version_body(v)),
            "write temp",
        )?;
        ok(fs::rename(&tmp, &target), "rename temp over target")?;
    }
    let mut total = RenameReaderStats::default();
    for r in readers {
        let out = match r.join() {
            Ok(r) => r?,
            Err(_) => bail!("reader thread panicked"),
        };
        let s: RenameReaderStats = serde_json::from_str(out.trim())?;
        total.reads += s.reads;
        total.missing += s.missing;
        total.torn += s.torn;
        if total.first_problem.is_empty() {
            total.first_problem = s.first_problem;
        }
    }
    ensure!(
        total.missing == 0 && total.torn == 0,
        "{} of {} reads found the name missing, {} saw a partial file ({})",
        total.missing,
        total.reads,
        total.torn,
        total.first_problem
    );
    ensure!(total.reads > 0, "readers made no reads");
    Ok(Verdict::Pass(format!("{v} renames, {} reads", total.reads)))
}

fn truncate_down_then_up_reads_zeros(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    let f = open_rw(&p)?;
    ok(sys::pwrite_all(f.as_fd(), &bytes(3, 200_000), 0), "write")?;
    ok(f.set_len(1000), "truncate down")?;
    ok(f.set_len(200_000), "truncate up")?;
    let mut buf = vec![0u8; 200_000];
    let n = ok(sys::pread_full(f.as_fd(), &mut buf, 0), "read")?;
    ensure!(n == 200_000, "read {n} bytes of 200000");
    ensure!(buf[..1000] == bytes(3, 1000)[..], "kept bytes changed");
    if let Some(i) = buf[1000..].iter().position(|b| *b != 0) {
        bail!(
            "old data reappeared at byte {} after truncate down and up",
            1000 + i
        );
    }
    // Same through a fresh open, which may go to the server rather than a cache.
    drop(f);
    let again = ok(fs::read(&p), "reread")?;
    ensure!(
        again == buf,
        "reopened file differs from what the first descriptor read"
    );
    pass()
}

fn mmap_is_coherent_with_read_and_write(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    let f = open_rw(&p)?;
    let len = 64 * 1024;
    ok(sys::pwrite_all(f.as_fd(), &bytes(1, len), 0), "write")?;
    let mut map = ok(sys::Mmap::map(f.as_fd(), 0, len, true), "mmap")?;
    ensure!(
        map.as_slice() == &bytes(1, len)[..],
        "mapping does not show written data"
    );
    // write() after mapping shows through the mapping (one page cache).
    ok(
        sys::pwrite_all(f.as_fd(), b"WRITE", 100),
        "pwrite into mapped range",
    )?;
    ensure!(
        &map.as_slice()[100..105] == b"WRITE",
        "pwrite not visible through the mapping"
    );
    // Stores through the mapping show to read() at once, and after msync to a fresh open.
    map.as_mut_slice()[5000..5004].copy_from_slice(b"MMAP");
    let mut buf = [0u8; 4];
    ok(sys::pread_full(f.as_fd(), &mut buf, 5000), "pread")?;
    ensure!(
        &buf == b"MMAP",
        "store through the mapping not visible to read: {buf:?}"
    );
    ok(map.sync(), "msync")?;
    drop(map);
    drop(f);
    let data = ok(fs::read(&p), "reread")?;
    ensure!(
        &data[5000..5004] == b"MMAP" && &data[100..105] == b"WRITE",
        "reopened file lost mapped or written bytes"
    );
    pass()
}

fn write_past_eof_leaves_zero_gap(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    let mut f = open_rw(&p)?;
    ok(f.write_all(b"head"), "write")?;
    ok(f.seek(SeekFrom::Start(1 << 20)), "seek")?;
    ok(f.write_all(b"tail"), "write past eof")?;
    drop(f);
    let data = ok(fs::read(&p), "read")?;
    ensure!(
        data.len() == (1 << 20) + 4,
        "size {} after writing past EOF",
        data.len()
    );
    ensure!(
        &data[..4] == b"head" && &data[1 << 20..] == b"tail",
        "data moved"
    );
    if let Some(i) = data[4..1 << 20].iter().position(|b| *b != 0) {
        bail!("gap byte {} is {:#x}, not zero", 4 + i, data[4 + i]);
    }
    pass()
}
