//! Names and paths: length limits, symlink resolution and loops, deep trees, rename rules.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt};

use anyhow::{ensure, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{expect_errno, expect_errno_in, lstat, ok, pass, write_file, Ctx, Verdict};

super::test_list!(
    name_of_255_bytes_is_accepted,
    name_of_256_bytes_is_enametoolong,
    path_longer_than_path_max_is_enametoolong,
    symlink_loop_is_eloop,
    symlink_chain_resolves_and_readlink_is_exact,
    o_nofollow_on_symlink_is_eloop,
    deep_directory_tree_beyond_path_max,
    rename_replaces_and_refuses_per_posix,
    mkdir_rmdir_unlink_errors,
);

fn name_of_255_bytes_is_accepted(c: &Ctx) -> Result<Verdict> {
    let max = nix::sys::statvfs::statvfs(&c.dir)
        .map(|s| s.name_max())
        .unwrap_or(255);
    ensure!(max >= 255, "statvfs f_namemax is {max}, below 255");
    let name = |ch: char| ch.to_string().repeat(255);
    write_file(&c.p(&name('f')), b"x")?;
    ok(fs::create_dir(c.p(&name('d'))), "mkdir 255-byte name")?;
    ok(symlink(name('f'), c.p(&name('s'))), "symlink 255-byte name")?;
    ok(
        fs::rename(c.p(&name('f')), c.p(&name('g'))),
        "rename to 255-byte name",
    )?;
    ok(
        fs::hard_link(c.p(&name('g')), c.p(&name('h'))),
        "link to 255-byte name",
    )?;
    // The symlink's target was renamed away: it dangles, but is itself readable.
    expect_errno(
        fs::read(c.p(&name('s'))),
        Errno::ENOENT,
        "open through a dangling symlink",
    )?;
    let target = ok(fs::read_link(c.p(&name('s'))), "readlink 255-byte name")?;
    ensure!(
        target.as_os_str() == name('f').as_str(),
        "readlink of the 255-byte symlink differs"
    );
    let listed: Vec<String> = ok(fs::read_dir(&c.dir), "readdir")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for n in ['d', 's', 'g', 'h'] {
        ensure!(
            listed.contains(&name(n)),
            "255-byte name of {n} missing from readdir"
        );
    }
    pass()
}

fn name_of_256_bytes_is_enametoolong(c: &Ctx) -> Result<Verdict> {
    let long = c.p(&"n".repeat(256));
    let file = c.p("f");
    write_file(&file, b"x")?;
    let too = Errno::ENAMETOOLONG;
    expect_errno(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&long),
        too,
        "create",
    )?;
    expect_errno(fs::create_dir(&long), too, "mkdir")?;
    expect_errno(symlink("f", &long), too, "symlink")?;
    expect_errno(fs::rename(&file, &long), too, "rename to")?;
    expect_errno(fs::hard_link(&file, &long), too, "link to")?;
    expect_errno(fs::symlink_metadata(&long), too, "lstat")?;
    ensure!(file.exists(), "failed rename lost the source");
    pass()
}

fn path_longer_than_path_max_is_enametoolong(c: &Ctx) -> Result<Verdict> {
    // Components that exist do not matter: the length is checked before lookup.
    let mut p = c.dir.clone();
    while p.as_os_str().len() <= libc::PATH_MAX as usize {
        p.push("abcdefghij");
    }
    expect_errno(
        fs::symlink_metadata(&p),
        Errno::ENAMETOOLONG,
        "lstat of a path over PATH_MAX",
    )?;
    expect_errno(
        fs::create_dir_all(&p),
        Errno::ENAMETOOLONG,
        "mkdir -p of a path over PATH_MAX",
    )
    .or_else(|_| {
        // create_dir_all creates the parents one by one; the leaf must still fail.
        expect_errno(
            fs::create_dir(&p),
            Errno::ENAMETOOLONG,
            "mkdir of a path over PATH_MAX",
        )
    })?;
    pass()
}

fn symlink_loop_is_eloop(c: &Ctx) -> Result<Verdict> {
    ok(symlink("b", c.p("a")), "symlink a")?;
    ok(symlink("a", c.p("b")), "symlink b")?;
    ok(symlink("self", c.p("self")), "symlink self")?;
    expect_errno(fs::metadata(c.p("a")), Errno::ELOOP, "stat a->b->a")?;
    expect_errno(fs::File::open(c.p("self")), Errno::ELOOP, "open self->self")?;
    expect_errno(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(c.p("a")),
        Errno::ELOOP,
        "O_CREAT through a loop",
    )?;
    expect_errno(
        fs::metadata(c.p("a").join("x")),
        Errno::ELOOP,
        "loop in a middle component",
    )?;
    // The links themselves are ordinary names.
    ensure!(
        lstat(&c.p("a"))?.st_mode & libc::S_IFMT == libc::S_IFLNK,
        "lstat a is not a symlink"
    );
    ok(fs::remove_file(c.p("a")), "unlink a symlink of a loop")?;
    pass()
}

fn symlink_chain_resolves_and_readlink_is_exact(c: &Ctx) -> Result<Verdict> {
    write_file(&c.p("target"), b"end of chain")?;
    let mut prev = "target".to_string();
    for i in 0..20 {
        let name = format!("l{i}");
        ok(symlink(&prev, c.p(&name)), "symlink")?;
        prev = name;
    }
    ensure!(
        ok(fs::read(c.p(&prev)), "read through 20 links")? == b"end of chain",
        "chain resolves to other data"
    );
    ok(fs::create_dir(c.p("d")), "mkdir")?;
    let odd = "../d/./x y/\u{e9}/".to_string() + &"z".repeat(200);
    ok(symlink(&odd, c.p("d/odd")), "symlink with an odd target")?;
    let back = ok(fs::read_link(c.p("d/odd")), "readlink")?;
    ensure!(
        back.as_os_str() == odd.as_str(),
        "readlink gave {back:?}, stored {odd:?}"
    );
    let st = lstat(&c.p("d/odd"))?;
    ensure!(
        st.st_size as usize == odd.len(),
        "symlink st_size {} for a {}-byte target",
        st.st_size,
        odd.len()
    );
    pass()
}

fn o_nofollow_on_symlink_is_eloop(c: &Ctx) -> Result<Verdict> {
    write_file(&c.p("f"), b"x")?;
    ok(symlink("f", c.p("s")), "symlink")?;
    expect_errno(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(c.p("s")),
        Errno::ELOOP,
        "open(O_NOFOLLOW) of a symlink",
    )?;
    ok(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(c.p("f")),
        "O_NOFOLLOW on a file",
    )?;
    pass()
}

/// Depth and name length: 300 levels of 30 bytes is ~9.3 KB of path, over PATH_MAX (4096).
const DEPTH: usize = 300;

fn deep_directory_tree_beyond_path_max(c: &Ctx) -> Result<Verdict> {
    let name = |i: usize| format!("level-{i:04}-abcdefghijklmnopqrs");
    let mode = Mode::from_bits_truncate(0o755);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let root = ok(fs::File::open(&c.dir), "open test dir")?;
    let mut inos = vec![ok(root.metadata(), "fstat")?.ino()];
    fds.push(OwnedFd::from(root));
    for i in 0..DEPTH {
        let parent = fds.last().map(|f| f.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
        mkdirat(Some(parent), name(i).as_str(), mode)
            .map_err(|e| anyhow::anyhow!("mkdirat level {i}: {e:?}"))?;
        let fd = openat(
            Some(parent),
            name(i).as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| anyhow::anyhow!("openat level {i}: {e:?}"))?;
        let fd = crate::sys::owned_fd(fd);
        let st = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(|e| anyhow::anyhow!("fstat level {i}: {e:?}"))?;
        inos.push(st.st_ino);
        fds.push(fd);
    }
    // A file at the bottom, then walk back checking every `..`.
    let leaf = fds.last().map(|f| f.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    let f = openat(
        Some(leaf),
        "leaf",
        OFlag::O_CREAT | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| anyhow::anyhow!("create leaf: {e:?}"))?;
    drop(crate::sys::owned_fd(f));
    for i in (1..fds.len()).rev() {
        let up = fstatat(Some(fds[i].as_raw_fd()), "..", nix::fcntl::AtFlags::empty())
            .map_err(|e| anyhow::anyhow!("fstatat .. at level {i}: {e:?}"))?;
        ensure!(
            up.st_ino == inos[i - 1],
            "level {i}: .. is inode {}, parent is {}",
            up.st_ino,
            inos[i - 1]
        );
    }
    // The absolute path of the leaf is too long for path-based calls.
    let mut abs = c.dir.clone();
    for i in 0..DEPTH {
        abs.push(name(i));
    }
    abs.push("leaf");
    expect_errno(
        fs::symlink_metadata(&abs),
        Errno::ENAMETOOLONG,
        "lstat of the deep leaf by absolute path",
    )?;
    // Remove bottom-up.
    unlinkat(Some(leaf), "leaf", UnlinkatFlags::NoRemoveDir)
        .map_err(|e| anyhow::anyhow!("unlink leaf: {e:?}"))?;
    for i in (0..DEPTH).rev() {
        fds.pop();
        let parent = fds.last().map(|f| f.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
        unlinkat(Some(parent), name(i).as_str(), UnlinkatFlags::RemoveDir)
            .map_err(|e| anyhow::anyhow!("rmdir level {i}: {e:?}"))?;
    }
    ensure!(
        ok(fs::read_dir(&c.dir), "readdir")?.next().is_none(),
        "test dir not empty after removal"
    );
    Ok(Verdict::Pass(format!(
        "depth {DEPTH}, path {} bytes",
        abs.as_os_str().len()
    )))
}

fn rename_replaces_and_refuses_per_posix(c: &Ctx) -> Result<Verdict> {
    let p = |n: &str| c.p(n);
    write_file(&p("f1"), b"1")?;
    write_file(&p("f2"), b"2")?;
    for d in ["d1", "d2", "full", "full/sub"] {
        ok(fs::create_dir(p(d)), "mkdir")?;
    }
    // file over file: replaced.
    ok(fs::rename(p("f1"), p("f2")), "rename file over file")?;
    ensure!(
        ok(fs::read(p("f2")), "read")? == b"1" && !p("f1").exists(),
        "file over file did not replace"
    );
    // dir over empty dir: replaced.
    write_file(&p("d1/x"), b"x")?;
    ok(fs::rename(p("d1"), p("d2")), "rename dir over empty dir")?;
    ensure!(
        p("d2/x").exists() && !p("d1").exists(),
        "dir over empty dir did not replace"
    );
    expect_errno_in(
        fs::rename(p("d2"), p("full")),
        &[Errno::ENOTEMPTY, Errno::EEXIST],
        "dir over non-empty dir",
    )?;
    expect_errno(
        fs::rename(p("d2"), p("f2")),
        Errno::ENOTDIR,
        "dir over file",
    )?;
    expect_errno(fs::rename(p("f2"), p("d2")), Errno::EISDIR, "file over dir")?;
    expect_errno(
        fs::rename(p("full"), p("full/sub/inside")),
        Errno::EINVAL,
        "dir into its own subdir",
    )?;
    expect_errno(
        fs::rename(p("missing"), p("x")),
        Errno::ENOENT,
        "missing source",
    )?;
    // Renaming a name onto a hard link of the same inode does nothing (POSIX).
    ok(fs::hard_link(p("f2"), p("f2link")), "link")?;
    ok(
        fs::rename(p("f2"), p("f2link")),
        "rename onto own hard link",
    )?;
    ensure!(
        p("f2").exists() && p("f2link").exists(),
        "rename onto own hard link removed a name"
    );
    // Moving a directory updates its `..`.
    ok(fs::rename(p("d2"), p("full/sub/d2")), "move dir down")?;
    let up = ok(fs::metadata(p("full/sub/d2/..")), "stat ..")?.ino();
    ensure!(
        up == ok(fs::metadata(p("full/sub")), "stat sub")?.ino(),
        "moved dir's .. not updated"
    );
    let nl = ok(fs::metadata(p("full/sub")), "stat sub")?.nlink();
    ensure!(
        nl == 1 || nl == 3,
        "new parent nlink {nl}, expected 3 (or 1 if not counted)"
    );
    pass()
}

fn mkdir_rmdir_unlink_errors(c: &Ctx) -> Result<Verdict> {
    let p = |n: &str| c.p(n);
    ok(fs::create_dir(p("d")), "mkdir")?;
    write_file(&p("d/f"), b"")?;
    write_file(&p("f"), b"")?;
    expect_errno(fs::create_dir(p("d")), Errno::EEXIST, "mkdir existing dir")?;
    expect_errno(fs::create_dir(p("f")), Errno::EEXIST, "mkdir over a file")?;
    expect_errno_in(
        fs::remove_dir(p("d")),
        &[Errno::ENOTEMPTY, Errno::EEXIST],
        "rmdir non-empty",
    )?;
    expect_errno(fs::remove_dir(p("f")), Errno::ENOTDIR, "rmdir a file")?;
    expect_errno(fs::remove_file(p("d")), Errno::EISDIR, "unlink a directory")?;
    expect_errno(
        fs::create_dir(p("f/x")),
        Errno::ENOTDIR,
        "mkdir under a file",
    )?;
    expect_errno(
        fs::create_dir(p("nope/x")),
        Errno::ENOENT,
        "mkdir under a missing dir",
    )?;
    expect_errno(fs::remove_dir(p("d/.")), Errno::EINVAL, "rmdir of .")?;
    let st = lstat(&p("d"))?;
    ensure!(
        st.st_nlink == 2 || st.st_nlink == 1,
        "fresh dir with no subdirs has nlink {}",
        st.st_nlink
    );
    ok(fs::create_dir(p("d/sub")), "mkdir sub")?;
    let st2 = lstat(&p("d"))?;
    ensure!(
        st2.st_nlink == 1 || st2.st_nlink == st.st_nlink + 1,
        "mkdir did not add a link to the parent ({} -> {})",
        st.st_nlink,
        st2.st_nlink
    );
    pass()
}
