//! Timestamps as POSIX assigns them: which of atime, mtime and ctime each operation marks for
//! update, on the file and on its directory. Each step is separated by a nap longer than the
//! target's timestamp granularity, so "updated" means "strictly later".

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{ensure, Result};
use nix::sys::stat::{utimensat, FileStat, UtimensatFlags};
use nix::sys::statvfs::FsFlags;
use nix::sys::time::TimeSpec;

use super::{lstat, ok, pass, write_file, Ctx, Verdict};

super::test_list!(
    timestamps_create_sets_file_and_parent,
    timestamps_write_updates_mtime_ctime_not_atime,
    timestamps_read_updates_atime_only,
    timestamps_truncate_updates_mtime_ctime,
    timestamps_chmod_chown_update_ctime_only,
    timestamps_link_unlink_update_ctime_and_parent,
    timestamps_rename_updates_both_parents,
    timestamps_mkdir_rmdir_symlink_update_parent,
    timestamps_utimensat_sets_exact_values,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Times {
    a: i128,
    m: i128,
    c: i128,
}

fn ns(sec: i64, nsec: i64) -> i128 {
    i128::from(sec) * 1_000_000_000 + i128::from(nsec)
}

fn times_of(st: &FileStat) -> Times {
    Times {
        a: ns(st.st_atime, st.st_atime_nsec),
        m: ns(st.st_mtime, st.st_mtime_nsec),
        c: ns(st.st_ctime, st.st_ctime_nsec),
    }
}

fn times(p: &Path) -> Result<Times> {
    Ok(times_of(&lstat(p)?))
}

/// Checks which of a/m/c moved forward (`true`) or stayed (`false`) between two samples.
fn changed(what: &str, before: Times, after: Times, a: bool, m: bool, c: bool) -> Result<()> {
    let check = |name: &str, b: i128, x: i128, want: bool| -> Result<()> {
        if want {
            ensure!(x > b, "{what}: {name} not updated ({b} -> {x})");
        } else {
            ensure!(
                x == b,
                "{what}: {name} changed ({b} -> {x}) though POSIX leaves it alone"
            );
        }
        Ok(())
    };
    check("atime", before.a, after.a, a)?;
    check("mtime", before.m, after.m, m)?;
    check("ctime", before.c, after.c, c)
}

fn timestamps_create_sets_file_and_parent(c: &Ctx) -> Result<Verdict> {
    let d0 = times(&c.dir)?;
    c.nap();
    write_file(&c.p("f"), b"")?;
    let f = times(&c.p("f"))?;
    let d1 = times(&c.dir)?;
    changed("create: parent", d0, d1, false, true, true)?;
    // All three are set by the creation (not necessarily to the same tick: a target may set
    // the owner in a second step, which moves ctime on).
    ensure!(
        f.a > d0.m && f.c >= f.m,
        "new file's times {f:?} are not all from its creation (after {})",
        d0.m
    );
    ensure!(
        f.m > d0.m,
        "new file's mtime {} is not after the nap ({})",
        f.m,
        d0.m
    );
    pass()
}

fn timestamps_write_updates_mtime_ctime_not_atime(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    let mut f = ok(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p),
        "create",
    )?;
    let t0 = times(&p)?;
    c.nap();
    ok(f.write_all(b"data"), "write")?;
    ok(f.sync_all(), "fsync")?;
    changed("write", t0, times(&p)?, false, true, true)?;
    pass()
}

fn timestamps_read_updates_atime_only(c: &Ctx) -> Result<Verdict> {
    let flags = nix::sys::statvfs::statvfs(&c.dir)
        .map(|s| s.flags())
        .unwrap_or(FsFlags::empty());
    if flags.contains(FsFlags::ST_NOATIME) {
        return Ok(Verdict::Skip("mounted noatime".into()));
    }
    let p = c.p("f");
    write_file(&p, b"data")?;
    // relatime (the Linux default) updates atime when it is not after mtime: make it so.
    let old = TimeSpec::new(1_000_000, 0);
    ok(
        utimensat(
            None,
            &p,
            &old,
            &TimeSpec::UTIME_OMIT,
            UtimensatFlags::FollowSymlink,
        )
        .map_err(Into::into),
        "set old atime",
    )?;
    let t0 = times(&p)?;
    c.nap();
    let mut buf = Vec::new();
    ok(ok(File::open(&p), "open")?.read_to_end(&mut buf), "read")?;
    changed("read", t0, times(&p)?, true, false, false)?;
    pass()
}

fn timestamps_truncate_updates_mtime_ctime(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, &[1u8; 10_000])?;
    let t0 = times(&p)?;
    c.nap();
    let f = ok(OpenOptions::new().write(true).open(&p), "open")?;
    ok(f.set_len(100), "ftruncate down")?;
    let t1 = times(&p)?;
    changed("truncate down", t0, t1, false, true, true)?;
    c.nap();
    ok(f.set_len(50_000), "ftruncate up")?;
    changed("truncate up", t1, times(&p)?, false, true, true)?;
    // O_TRUNC on a non-empty file, too.
    let t2 = times(&p)?;
    c.nap();
    ok(
        OpenOptions::new().write(true).truncate(true).open(&p),
        "open O_TRUNC",
    )?;
    changed("open(O_TRUNC)", t2, times(&p)?, false, true, true)?;
    pass()
}

fn timestamps_chmod_chown_update_ctime_only(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"x")?;
    let t0 = times(&p)?;
    c.nap();
    ok(
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)),
        "chmod",
    )?;
    let t1 = times(&p)?;
    changed("chmod", t0, t1, false, false, true)?;
    c.nap();
    let st = lstat(&p)?;
    ok(
        std::os::unix::fs::chown(&p, Some(st.st_uid), Some(st.st_gid)),
        "chown to same owner",
    )?;
    changed("chown", t1, times(&p)?, false, false, true)?;
    pass()
}

fn timestamps_link_unlink_update_ctime_and_parent(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"x")?;
    let (f0, d0) = (times(&p)?, times(&c.dir)?);
    c.nap();
    ok(fs::hard_link(&p, c.p("g")), "link")?;
    let (f1, d1) = (times(&p)?, times(&c.dir)?);
    changed("link: file", f0, f1, false, false, true)?;
    changed("link: parent", d0, d1, false, true, true)?;
    c.nap();
    ok(fs::remove_file(c.p("g")), "unlink")?;
    changed("unlink: remaining link", f1, times(&p)?, false, false, true)?;
    changed("unlink: parent", d1, times(&c.dir)?, false, true, true)?;
    pass()
}

fn timestamps_rename_updates_both_parents(c: &Ctx) -> Result<Verdict> {
    ok(fs::create_dir(c.p("a")), "mkdir")?;
    ok(fs::create_dir(c.p("b")), "mkdir")?;
    write_file(&c.p("a/f"), b"x")?;
    let (a0, b0) = (times(&c.p("a"))?, times(&c.p("b"))?);
    c.nap();
    ok(fs::rename(c.p("a/f"), c.p("b/f")), "rename across dirs")?;
    changed(
        "rename: source dir",
        a0,
        times(&c.p("a"))?,
        false,
        true,
        true,
    )?;
    changed(
        "rename: target dir",
        b0,
        times(&c.p("b"))?,
        false,
        true,
        true,
    )?;
    pass()
}

fn timestamps_mkdir_rmdir_symlink_update_parent(c: &Ctx) -> Result<Verdict> {
    let d0 = times(&c.dir)?;
    c.nap();
    ok(fs::create_dir(c.p("sub")), "mkdir")?;
    let d1 = times(&c.dir)?;
    changed("mkdir: parent", d0, d1, false, true, true)?;
    let s = times(&c.p("sub"))?;
    ensure!(
        s.a > d0.m && s.m > d0.m && s.c >= s.m,
        "new directory's times {s:?} are not all from its creation (after {})",
        d0.m
    );
    c.nap();
    ok(symlink("sub", c.p("link")), "symlink")?;
    let d2 = times(&c.dir)?;
    changed("symlink: parent", d1, d2, false, true, true)?;
    c.nap();
    ok(fs::remove_dir(c.p("sub")), "rmdir")?;
    changed("rmdir: parent", d2, times(&c.dir)?, false, true, true)?;
    pass()
}

fn timestamps_utimensat_sets_exact_values(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"x")?;
    let a = TimeSpec::new(1_234_567_890, 123_456_789);
    let m = TimeSpec::new(987_654_321, 987_654_321);
    let t0 = times(&p)?;
    c.nap();
    ok(
        utimensat(None, &p, &a, &m, UtimensatFlags::FollowSymlink).map_err(Into::into),
        "utimensat",
    )?;
    let t1 = times(&p)?;
    ensure!(
        t1.a == ns(1_234_567_890, 123_456_789),
        "atime set to {} reads {}",
        ns(1_234_567_890, 123_456_789),
        t1.a
    );
    ensure!(
        t1.m == ns(987_654_321, 987_654_321),
        "mtime set to {} reads {}",
        ns(987_654_321, 987_654_321),
        t1.m
    );
    ensure!(t1.c > t0.c, "utimensat did not update ctime");
    // UTIME_OMIT leaves a time alone; UTIME_NOW sets it to now.
    c.nap();
    ok(
        utimensat(
            None,
            &p,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::FollowSymlink,
        )
        .map_err(Into::into),
        "utimensat omit/now",
    )?;
    let t2 = times(&p)?;
    ensure!(t2.a == t1.a, "UTIME_OMIT changed atime");
    ensure!(t2.m > t0.m, "UTIME_NOW did not set mtime to now");
    // Times before the epoch and far after 2038 round-trip.
    let old = TimeSpec::new(-1_000_000, 0);
    let far = TimeSpec::new(4_102_444_800, 0); // 2100-01-01
    ok(
        utimensat(None, &p, &old, &far, UtimensatFlags::FollowSymlink).map_err(Into::into),
        "utimensat pre-epoch / 2100",
    )?;
    let t3 = times(&p)?;
    ensure!(t3.a == ns(-1_000_000, 0), "pre-epoch atime reads {}", t3.a);
    ensure!(
        t3.m == ns(4_102_444_800, 0),
        "year-2100 mtime reads {}",
        t3.m
    );
    pass()
}
