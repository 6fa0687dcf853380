//! Durability across a crash of the target: what `fsync` acknowledged is there after the
//! target's daemon is killed and the filesystem remounted. Needs the target's kill and remount
//! hooks; targets without them (tmpfs: a crash loses everything by design) skip these tests.

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use anyhow::{ensure, Result};

use super::{bytes, ok, pass, Ctx, Verdict};

super::test_list!(
    fsync_then_crash_keeps_data,
    fsync_dir_then_crash_keeps_new_name,
);

fn hooks_or_skip(c: &Ctx) -> Option<Verdict> {
    let h = &c.env.hooks;
    if h.kill.is_none() || h.remount.is_none() {
        return Some(Verdict::Skip(
            "target has no kill/remount hook (pass --kill-cmd and --remount-cmd)".into(),
        ));
    }
    None
}

/// Kills the target and remounts it.
fn crash(c: &Ctx) -> Result<()> {
    c.env.hooks.kill(&c.env.mount)?;
    c.env.hooks.remount(&c.env.mount)
}

fn fsync_then_crash_keeps_data(c: &Ctx) -> Result<Verdict> {
    if let Some(v) = hooks_or_skip(c) {
        return Ok(v);
    }
    let p = c.p("durable");
    let data = bytes(5, 3 << 20);
    {
        let mut f = ok(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p),
            "create",
        )?;
        ok(f.write_all(&data), "write")?;
        ok(f.sync_all(), "fsync")?;
        // Also the directory entry, so the test checks data durability, not the name's.
        ok(ok(File::open(&c.dir), "open dir")?.sync_all(), "fsync dir")?;
    }
    crash(c)?;
    let got = ok(fs::read(&p), "read after crash and remount")?;
    ensure!(
        got.len() == data.len(),
        "after the crash the file has {} bytes, {} were fsynced",
        got.len(),
        data.len()
    );
    ensure!(
        got == data,
        "after the crash the file's bytes differ from what was fsynced"
    );
    pass()
}

fn fsync_dir_then_crash_keeps_new_name(c: &Ctx) -> Result<Verdict> {
    if let Some(v) = hooks_or_skip(c) {
        return Ok(v);
    }
    ok(fs::create_dir(c.p("d")), "mkdir")?;
    ok(fs::write(c.p("d/a"), b"a"), "create a")?;
    ok(fs::rename(c.p("d/a"), c.p("d/b")), "rename a to b")?;
    {
        let f = ok(File::open(c.p("d/b")), "open")?;
        ok(f.sync_all(), "fsync file")?;
        ok(
            ok(File::open(c.p("d")), "open dir")?.sync_all(),
            "fsync dir",
        )?;
        ok(
            ok(File::open(&c.dir), "open parent")?.sync_all(),
            "fsync parent",
        )?;
    }
    crash(c)?;
    ensure!(
        c.p("d/b").exists(),
        "renamed name missing after fsync of its directory and a crash"
    );
    ensure!(!c.p("d/a").exists(), "old name back after a crash");
    ensure!(
        ok(fs::read(c.p("d/b")), "read")? == b"a",
        "renamed file's data lost"
    );
    pass()
}
