//! Permission checks for another user: each probe is one syscall run by a child process with
//! the second user's uid and gid (`xfstests worker try`), against files root set up.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};

use super::{ok, pass, run_worker, write_file, Ctx, Verdict};
use crate::env::OtherUser;

super::test_list!(
    perm_other_user_read_write_follow_mode_bits,
    perm_other_user_cannot_change_root_owned_dir,
    perm_search_permission_guards_lookup,
    perm_sticky_dir_protects_others_files,
    perm_only_owner_may_chmod_or_chown,
    perm_group_bits_apply_to_group_members,
    perm_utimes_now_needs_write_explicit_needs_owner,
    perm_truncate_and_user_xattr_need_write,
    perm_new_file_owner_and_setgid_dir_group,
);

/// Runs `op` on `path` as the other user; returns `"OK"` or the errno name.
fn try_as(c: &Ctx, u: &OtherUser, op: &str, path: &Path, arg: Option<&str>) -> Result<String> {
    let mut cmd = c.worker("try");
    cmd.arg("--op").arg(op).arg("--path").arg(path);
    if let Some(a) = arg {
        cmd.arg("--arg").arg(a);
    }
    std::os::unix::process::CommandExt::uid(&mut cmd, u.uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, u.gid);
    Ok(run_worker(&mut cmd, Duration::from_secs(30))?
        .trim()
        .to_string())
}

/// Checks a list of `(op, path, arg, expected outcome)` probes as the other user.
fn expect_all(c: &Ctx, u: &OtherUser, probes: &[(&str, &Path, Option<&str>, &str)]) -> Result<()> {
    let mut wrong = Vec::new();
    for (op, path, arg, want) in probes {
        let got = try_as(c, u, op, path, *arg)?;
        if got != *want {
            let name = path
                .strip_prefix(&c.dir)
                .unwrap_or(path)
                .display()
                .to_string();
            wrong.push(format!("{op} {name}: {got}, expected {want}"));
        }
    }
    ensure!(wrong.is_empty(), "as user {}: {}", u.name, wrong.join("; "));
    Ok(())
}

fn other<'a>(c: &Ctx<'a>) -> std::result::Result<&'a OtherUser, Verdict> {
    c.env
        .other_user
        .as_ref()
        .ok_or_else(|| Verdict::Skip("needs root to run probes as a second user".into()))
}

fn mode(p: &Path, m: u32) -> Result<()> {
    ok(
        fs::set_permissions(p, fs::Permissions::from_mode(m)),
        &format!("chmod {m:o}"),
    )
}

macro_rules! other_or_skip {
    ($c:expr) => {
        match other($c) {
            Ok(u) => u,
            Err(v) => return Ok(v),
        }
    };
}

fn perm_other_user_read_write_follow_mode_bits(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let (secret, public, open) = (c.p("secret"), c.p("public"), c.p("open"));
    for (p, m) in [(&secret, 0o600), (&public, 0o644), (&open, 0o666)] {
        write_file(p, b"data")?;
        mode(p, m)?;
    }
    expect_all(
        c,
        u,
        &[
            ("open-read", &secret, None, "EACCES"),
            ("open-write", &secret, None, "EACCES"),
            ("open-read", &public, None, "OK"),
            ("open-write", &public, None, "EACCES"),
            ("open-write", &open, None, "OK"),
        ],
    )?;
    pass()
}

fn perm_other_user_cannot_change_root_owned_dir(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let d = c.p("d");
    ok(fs::create_dir(&d), "mkdir")?;
    mode(&d, 0o755)?;
    write_file(&d.join("f"), b"")?;
    ok(fs::create_dir(d.join("sub")), "mkdir sub")?;
    let to = d.join("g").display().to_string();
    expect_all(
        c,
        u,
        &[
            ("create", &d.join("new"), None, "EACCES"),
            ("mkdir", &d.join("newdir"), None, "EACCES"),
            ("unlink", &d.join("f"), None, "EACCES"),
            ("rmdir", &d.join("sub"), None, "EACCES"),
            ("rename", &d.join("f"), Some(&to), "EACCES"),
            ("readdir", &d, None, "OK"),
        ],
    )?;
    mode(&d, 0o777)?;
    expect_all(
        c,
        u,
        &[
            ("create", &d.join("new"), None, "OK"),
            ("unlink", &d.join("f"), None, "OK"),
        ],
    )?;
    pass()
}

fn perm_search_permission_guards_lookup(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let d = c.p("d");
    ok(fs::create_dir(&d), "mkdir")?;
    write_file(&d.join("f"), b"x")?;
    let f = d.join("f");
    mode(&d, 0o700)?;
    expect_all(
        c,
        u,
        &[
            ("stat", &f, None, "EACCES"),
            ("readdir", &d, None, "EACCES"),
        ],
    )?;
    mode(&d, 0o711)?;
    expect_all(
        c,
        u,
        &[
            ("stat", &f, None, "OK"),
            ("open-read", &f, None, "OK"),
            ("readdir", &d, None, "EACCES"),
        ],
    )?;
    mode(&d, 0o744)?;
    expect_all(
        c,
        u,
        &[("stat", &f, None, "EACCES"), ("readdir", &d, None, "OK")],
    )?;
    pass()
}

fn perm_sticky_dir_protects_others_files(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let d = c.p("tmp");
    ok(fs::create_dir(&d), "mkdir")?;
    mode(&d, 0o1777)?;
    write_file(&d.join("roots"), b"")?;
    mode(&d.join("roots"), 0o666)?;
    let to = d.join("moved").display().to_string();
    expect_all(
        c,
        u,
        &[
            ("unlink", &d.join("roots"), None, "EPERM"),
            ("rename", &d.join("roots"), Some(&to), "EPERM"),
            ("create", &d.join("mine"), None, "OK"),
            ("unlink", &d.join("mine"), None, "OK"),
        ],
    )?;
    pass()
}

fn perm_only_owner_may_chmod_or_chown(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let (roots, theirs) = (c.p("roots"), c.p("theirs"));
    write_file(&roots, b"")?;
    mode(&roots, 0o666)?;
    write_file(&theirs, b"")?;
    ok(
        chown(&theirs, Some(u.uid), Some(u.gid)),
        "chown to the other user",
    )?;
    let to_them = format!("{}:{}", u.uid, u.gid);
    let to_root = format!("0:{}", u.gid);
    expect_all(
        c,
        u,
        &[
            ("chmod", &roots, Some("777"), "EPERM"),
            ("chown", &roots, Some(&to_them), "EPERM"),
            ("chmod", &theirs, Some("600"), "OK"),
            ("chown", &theirs, Some(&to_them), "OK"),
            ("chown", &theirs, Some(&to_root), "EPERM"),
        ],
    )?;
    let m = ok(fs::metadata(&theirs), "stat")?;
    ensure!(
        m.mode() & 0o7777 == 0o600,
        "owner's chmod gave mode {:o}",
        m.mode() & 0o7777
    );
    pass()
}

fn perm_group_bits_apply_to_group_members(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let (grp, nogrp) = (c.p("grp"), c.p("nogrp"));
    write_file(&grp, b"x")?;
    write_file(&nogrp, b"x")?;
    ok(
        chown(&grp, Some(0), Some(u.gid)),
        "chgrp to the other user's group",
    )?;
    mode(&grp, 0o640)?;
    mode(&nogrp, 0o604)?;
    expect_all(
        c,
        u,
        &[
            ("open-read", &grp, None, "OK"),
            ("open-write", &grp, None, "EACCES"),
            ("open-read", &nogrp, None, "OK"),
        ],
    )?;
    // Group bits deny even when other bits allow: the most specific class decides.
    mode(&grp, 0o604)?;
    expect_all(c, u, &[("open-read", &grp, None, "EACCES")])?;
    pass()
}

fn perm_utimes_now_needs_write_explicit_needs_owner(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let (rw, ro) = (c.p("rw"), c.p("ro"));
    write_file(&rw, b"")?;
    write_file(&ro, b"")?;
    mode(&rw, 0o666)?;
    mode(&ro, 0o644)?;
    expect_all(
        c,
        u,
        &[
            ("utimes-now", &rw, None, "OK"),
            ("utimes-explicit", &rw, None, "EPERM"),
            ("utimes-now", &ro, None, "EACCES"),
        ],
    )?;
    pass()
}

fn perm_truncate_and_user_xattr_need_write(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let (ro, rw) = (c.p("ro"), c.p("rw"));
    write_file(&ro, b"data")?;
    write_file(&rw, b"data")?;
    mode(&ro, 0o644)?;
    mode(&rw, 0o666)?;
    expect_all(
        c,
        u,
        &[
            ("truncate", &ro, None, "EACCES"),
            ("set-xattr", &ro, None, "EACCES"),
            ("truncate", &rw, None, "OK"),
        ],
    )?;
    ensure!(
        ok(fs::read(&ro), "read")? == b"data",
        "denied truncate changed the file"
    );
    pass()
}

fn perm_new_file_owner_and_setgid_dir_group(c: &Ctx) -> Result<Verdict> {
    let u = other_or_skip!(c);
    let (open, sgid) = (c.p("open"), c.p("sgid"));
    ok(fs::create_dir(&open), "mkdir")?;
    mode(&open, 0o777)?;
    ok(fs::create_dir(&sgid), "mkdir")?;
    // Group 0 (root's) is one the other user is not in: inheriting it shows setgid worked.
    ok(chown(&sgid, Some(0), Some(0)), "chown")?;
    mode(&sgid, 0o2777)?;
    expect_all(
        c,
        u,
        &[
            ("create", &open.join("f"), None, "OK"),
            ("create", &sgid.join("f"), None, "OK"),
            ("mkdir", &sgid.join("d"), None, "OK"),
        ],
    )?;
    let f = ok(fs::metadata(open.join("f")), "stat")?;
    ensure!(
        f.uid() == u.uid && f.gid() == u.gid,
        "new file owned by {}:{}, creator is {}:{}",
        f.uid(),
        f.gid(),
        u.uid,
        u.gid
    );
    let g = ok(fs::metadata(sgid.join("f")), "stat")?;
    ensure!(
        g.uid() == u.uid && g.gid() == 0,
        "file in a setgid dir owned by {}:{}, expected {}:0",
        g.uid(),
        g.gid(),
        u.uid
    );
    let d = ok(fs::metadata(sgid.join("d")), "stat")?;
    ensure!(
        d.gid() == 0 && d.mode() & 0o2000 != 0,
        "dir in a setgid dir: gid {}, mode {:o}; expected gid 0 and setgid",
        d.gid(),
        d.mode() & 0o7777
    );
    pass()
}
