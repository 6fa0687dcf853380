//! Sizes and space: sparse files and `SEEK_DATA`/`SEEK_HOLE`, offsets beyond 4 GiB, `statfs`.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use anyhow::{ensure, Result};
use nix::errno::Errno;

use super::{bytes, expect_errno, ok, open_rw, pass, Ctx, Verdict};
use crate::sys;

super::test_list!(
    sparse_file_reads_zeros_in_holes,
    seek_data_and_seek_hole_find_the_data,
    sparse_file_allocates_less_than_its_size,
    size_beyond_4gib_round_trips,
    statfs_fields_are_consistent,
    statfs_free_space_tracks_writes,
);

const MIB: u64 = 1 << 20;

fn sparse(c: &Ctx) -> Result<File> {
    let f = open_rw(&c.p("sparse"))?;
    ok(sys::pwrite_all(f.as_fd(), &bytes(1, 4096), 0), "write at 0")?;
    ok(
        sys::pwrite_all(f.as_fd(), &bytes(2, 4096), 8 * MIB),
        "write at 8 MiB",
    )?;
    ok(f.set_len(16 * MIB), "extend to 16 MiB")?;
    Ok(f)
}

fn sparse_file_reads_zeros_in_holes(c: &Ctx) -> Result<Verdict> {
    let f = sparse(c)?;
    let mut want = vec![0u8; 16 * MIB as usize];
    want[..4096].copy_from_slice(&bytes(1, 4096));
    want[8 * MIB as usize..8 * MIB as usize + 4096].copy_from_slice(&bytes(2, 4096));
    let mut got = vec![0xffu8; want.len() + 1];
    let n = ok(sys::pread_full(f.as_fd(), &mut got, 0), "read")?;
    got.truncate(n);
    ensure!(
        n == want.len(),
        "read {n} bytes of a {} byte file",
        want.len()
    );
    if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
        anyhow::bail!("byte {i} reads {:#x}, expected {:#x}", got[i], want[i]);
    }
    pass()
}

fn seek_data_and_seek_hole_find_the_data(c: &Ctx) -> Result<Verdict> {
    let f = sparse(c)?;
    let size = 16 * MIB;
    let fd = f.as_fd();
    let data = |off: u64| sys::lseek(fd, off as i64, libc::SEEK_DATA);
    let hole = |off: u64| sys::lseek(fd, off as i64, libc::SEEK_HOLE);
    ensure!(
        ok(data(0), "SEEK_DATA 0")? == 0,
        "SEEK_DATA from 0 skips the first data"
    );
    // A filesystem that does not track holes reports data everywhere and the hole at EOF.
    let h = ok(hole(0), "SEEK_HOLE 0")?;
    ensure!(
        h >= 4096 && (h <= 8 * MIB || h == size),
        "SEEK_HOLE from 0 is {h}: inside the data, or past the next data"
    );
    let d = ok(data(4096 * 2), "SEEK_DATA 8 KiB")?;
    ensure!(
        d <= 8 * MIB,
        "SEEK_DATA from 8 KiB is {d}, past the data at 8 MiB"
    );
    let d = ok(data(MIB), "SEEK_DATA 1 MiB")?;
    ensure!(
        d <= 8 * MIB,
        "SEEK_DATA from 1 MiB is {d}, past the data at 8 MiB"
    );
    let h = ok(hole(8 * MIB), "SEEK_HOLE 8 MiB")?;
    ensure!(
        h >= 8 * MIB + 4096 && h <= size,
        "SEEK_HOLE from the data at 8 MiB is {h}"
    );
    ensure!(
        ok(hole(size - 1), "SEEK_HOLE at size-1")? <= size,
        "SEEK_HOLE at the last byte went past EOF"
    );
    expect_errno(data(size), Errno::ENXIO, "SEEK_DATA at EOF")?;
    expect_errno(hole(size + 10), Errno::ENXIO, "SEEK_HOLE past EOF")?;
    let tracks = ok(hole(0), "SEEK_HOLE")? < size;
    Ok(Verdict::Pass(if tracks {
        "holes reported".into()
    } else {
        "no holes reported (allowed)".into()
    }))
}

fn sparse_file_allocates_less_than_its_size(c: &Ctx) -> Result<Verdict> {
    let f = sparse(c)?;
    ok(f.sync_all(), "fsync")?;
    let m = ok(f.metadata(), "fstat")?;
    let allocated = m.blocks() * 512;
    ensure!(
        allocated < 4 * MIB,
        "16 MiB file with 8 KiB of data allocates {allocated} bytes (st_blocks {})",
        m.blocks()
    );
    ensure!(m.blocks() > 0, "file with data reports st_blocks 0");
    Ok(Verdict::Pass(format!("{allocated} bytes allocated")))
}

fn size_beyond_4gib_round_trips(c: &Ctx) -> Result<Verdict> {
    let p = c.p("big");
    let f = open_rw(&p)?;
    let off = 5 * 1024 * MIB + 123; // 5 GiB + 123: past 32-bit offsets, unaligned
    ok(
        sys::pwrite_all(f.as_fd(), b"beyond 4GiB", off),
        "pwrite at 5 GiB",
    )?;
    let size = off + 11;
    ensure!(
        ok(f.metadata(), "fstat")?.len() == size,
        "size after writing at 5 GiB"
    );
    drop(f);
    ensure!(
        ok(fs::metadata(&p), "stat")?.len() == size,
        "size through stat after reopen"
    );
    let f = ok(File::open(&p), "reopen")?;
    let mut buf = [0u8; 11];
    ok(sys::pread_full(f.as_fd(), &mut buf, off), "pread at 5 GiB")?;
    ensure!(&buf == b"beyond 4GiB", "bytes at 5 GiB read {buf:?}");
    let mut hole = [0xffu8; 16];
    ok(
        sys::pread_full(f.as_fd(), &mut hole, 4 * 1024 * MIB - 8),
        "read across 4 GiB",
    )?;
    ensure!(hole == [0u8; 16], "hole across 4 GiB reads {hole:?}");
    ensure!(
        ok(sys::lseek(f.as_fd(), 0, libc::SEEK_END), "SEEK_END")? == size,
        "SEEK_END disagrees with size"
    );
    let f = ok(
        fs::OpenOptions::new().read(true).write(true).open(&p),
        "open",
    )?;
    ok(f.set_len(4 * 1024 * MIB + 1), "truncate to 4 GiB + 1")?;
    ensure!(
        ok(fs::metadata(&p), "stat")?.len() == 4 * 1024 * MIB + 1,
        "size after truncate to 4 GiB + 1"
    );
    ok(f.set_len(6 * 1024 * MIB), "truncate up to 6 GiB")?;
    let mut tail = [0xffu8; 11];
    ok(
        sys::pread_full(f.as_fd(), &mut tail, off),
        "read old offset",
    )?;
    ensure!(
        tail == [0u8; 11],
        "data past a truncate point reappeared after extending"
    );
    pass()
}

fn statfs_fields_are_consistent(c: &Ctx) -> Result<Verdict> {
    let s = ok(
        nix::sys::statvfs::statvfs(&c.dir).map_err(Into::into),
        "statvfs",
    )?;
    ensure!(
        s.block_size() > 0 && s.fragment_size() > 0,
        "f_bsize {} f_frsize {}",
        s.block_size(),
        s.fragment_size()
    );
    ensure!(
        s.blocks() >= s.blocks_free(),
        "f_bfree {} > f_blocks {}",
        s.blocks_free(),
        s.blocks()
    );
    ensure!(
        s.blocks_free() >= s.blocks_available(),
        "f_bavail {} > f_bfree {}",
        s.blocks_available(),
        s.blocks_free()
    );
    ensure!(s.blocks() > 0, "f_blocks is 0");
    ensure!(
        s.files() >= s.files_free(),
        "f_ffree {} > f_files {}",
        s.files_free(),
        s.files()
    );
    ensure!(
        s.files_free() >= s.files_available(),
        "f_favail {} > f_ffree {}",
        s.files_available(),
        s.files_free()
    );
    ensure!(s.name_max() >= 255, "f_namemax {}", s.name_max());
    Ok(Verdict::Pass(format!(
        "{} blocks of {} bytes, {} free; {} inodes, {} free",
        s.blocks(),
        s.fragment_size(),
        s.blocks_free(),
        s.files(),
        s.files_free()
    )))
}

fn statfs_free_space_tracks_writes(c: &Ctx) -> Result<Verdict> {
    let free = |c: &Ctx| -> Result<u64> {
        let s = ok(
            nix::sys::statvfs::statvfs(&c.dir).map_err(Into::into),
            "statvfs",
        )?;
        Ok(s.blocks_free() * s.fragment_size())
    };
    let len = 32 * MIB;
    let before = free(c)?;
    if before < 4 * len {
        return Ok(Verdict::Skip(format!("only {before} bytes free")));
    }
    let p = c.p("space");
    let f = open_rw(&p)?;
    let chunk = bytes(9, MIB as usize);
    for i in 0..len / MIB {
        ok(sys::pwrite_all(f.as_fd(), &chunk, i * MIB), "write")?;
    }
    ok(f.sync_all(), "fsync")?;
    drop(f);
    let during = free(c)?;
    ok(fs::remove_file(&p), "unlink")?;
    nix::unistd::sync();
    let after = free(c)?;
    // Other users of the filesystem move the numbers a little: ask for half the effect.
    ensure!(
        before.saturating_sub(during) >= len / 2,
        "writing {len} bytes lowered free space by {} ({before} -> {during})",
        before.saturating_sub(during)
    );
    ensure!(
        after.saturating_sub(during) >= len / 2,
        "unlinking {len} bytes raised free space by {} ({during} -> {after})",
        after.saturating_sub(during)
    );
    pass()
}
