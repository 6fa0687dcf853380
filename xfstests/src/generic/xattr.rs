//! Extended attributes in the `user.` namespace: round trips, create/replace flags, the Linux
//! limits (255-byte names, 64 KiB values) and the `ERANGE` size-query contract.

use std::fs;

use anyhow::{ensure, Result};
use nix::errno::Errno;

use super::{bytes, expect_errno, expect_errno_in, ok, pass, write_file, Ctx, Verdict};
use crate::sys;

super::test_list!(
    xattr_set_get_list_remove,
    xattr_create_and_replace_flags,
    xattr_name_of_256_bytes_is_erange,
    xattr_value_over_64k_is_e2big,
    xattr_large_value_round_trips,
    xattr_small_buffer_is_erange,
    xattr_on_directory_and_survives_rename,
);

fn xattr_set_get_list_remove(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"")?;
    ok(sys::set_xattr(&p, "user.one", b"1", 0), "setxattr user.one")?;
    ok(
        sys::set_xattr(&p, "user.two", b"", 0),
        "setxattr empty value",
    )?;
    ensure!(
        ok(sys::get_xattr(&p, "user.one"), "getxattr")? == b"1",
        "user.one reads back wrong"
    );
    ensure!(
        ok(sys::get_xattr(&p, "user.two"), "getxattr")?.is_empty(),
        "empty value reads back non-empty"
    );
    let names = ok(sys::list_xattr(&p), "listxattr")?;
    for n in ["user.one", "user.two"] {
        ensure!(
            names.iter().any(|x| x == n),
            "{n} missing from listxattr {names:?}"
        );
    }
    ok(sys::remove_xattr(&p, "user.one"), "removexattr")?;
    expect_errno(
        sys::get_xattr(&p, "user.one"),
        Errno::ENODATA,
        "getxattr after remove",
    )?;
    expect_errno(
        sys::remove_xattr(&p, "user.one"),
        Errno::ENODATA,
        "removexattr of a missing name",
    )?;
    expect_errno_in(
        sys::set_xattr(&p, "bogus.ns", b"x", 0),
        &[Errno::EOPNOTSUPP, Errno::EPERM],
        "unknown namespace",
    )?;
    pass()
}

fn xattr_create_and_replace_flags(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"")?;
    expect_errno(
        sys::set_xattr(&p, "user.a", b"1", libc::XATTR_REPLACE),
        Errno::ENODATA,
        "XATTR_REPLACE of a missing name",
    )?;
    ok(
        sys::set_xattr(&p, "user.a", b"1", libc::XATTR_CREATE),
        "XATTR_CREATE",
    )?;
    expect_errno(
        sys::set_xattr(&p, "user.a", b"2", libc::XATTR_CREATE),
        Errno::EEXIST,
        "XATTR_CREATE of an existing name",
    )?;
    ok(
        sys::set_xattr(&p, "user.a", b"3", libc::XATTR_REPLACE),
        "XATTR_REPLACE",
    )?;
    ensure!(
        ok(sys::get_xattr(&p, "user.a"), "getxattr")? == b"3",
        "XATTR_REPLACE did not replace"
    );
    pass()
}

fn xattr_name_of_256_bytes_is_erange(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"")?;
    let max = format!("user.{}", "n".repeat(250));
    ok(
        sys::set_xattr(&p, &max, b"v", 0),
        "setxattr with a 255-byte name",
    )?;
    ensure!(
        ok(sys::get_xattr(&p, &max), "getxattr 255-byte name")? == b"v",
        "255-byte name reads back wrong"
    );
    let over = format!("user.{}", "n".repeat(251));
    expect_errno(
        sys::set_xattr(&p, &over, b"v", 0),
        Errno::ERANGE,
        "setxattr with a 256-byte name",
    )?;
    expect_errno(
        sys::get_xattr(&p, &over),
        Errno::ERANGE,
        "getxattr with a 256-byte name",
    )?;
    pass()
}

fn xattr_value_over_64k_is_e2big(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"")?;
    expect_errno(
        sys::set_xattr(&p, "user.big", &vec![7u8; 65_537], 0),
        Errno::E2BIG,
        "setxattr of 65537 bytes",
    )?;
    pass()
}

fn xattr_large_value_round_trips(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"")?;
    // Linux local filesystems accept at least a block (ext4: 4 KiB less headers); tmpfs and
    // most network filesystems take the full 64 KiB. Find the largest power of two accepted.
    let mut best = 0usize;
    for size in [1024usize, 2048, 3800, 8192, 16384, 32768, 65536] {
        let v = bytes(size as u8, size);
        match sys::set_xattr(&p, "user.large", &v, 0) {
            Ok(()) => {
                let back = ok(sys::get_xattr(&p, "user.large"), "getxattr large")?;
                ensure!(
                    back == v,
                    "{size}-byte value reads back differently ({} bytes)",
                    back.len()
                );
                best = size;
            }
            Err(e)
                if matches!(
                    sys::errno_of(&e),
                    Some(Errno::E2BIG | Errno::ENOSPC | Errno::ERANGE)
                ) =>
            {
                break
            }
            Err(e) => anyhow::bail!("setxattr of {size} bytes: {}", sys::errno_name(&e)),
        }
    }
    ensure!(
        best >= 3800,
        "largest value accepted is {best} bytes, below a 4 KiB block"
    );
    Ok(Verdict::Pass(format!("largest value {best} bytes")))
}

fn xattr_small_buffer_is_erange(c: &Ctx) -> Result<Verdict> {
    let p = c.p("f");
    write_file(&p, b"")?;
    ok(sys::set_xattr(&p, "user.v", b"0123456789", 0), "setxattr")?;
    let mut none = [];
    let size = ok(sys::get_xattr_into(&p, "user.v", &mut none), "size query")?;
    ensure!(size == 10, "size query returned {size}, value is 10 bytes");
    let mut small = [0u8; 4];
    expect_errno(
        sys::get_xattr_into(&p, "user.v", &mut small),
        Errno::ERANGE,
        "getxattr into a 4-byte buffer",
    )?;
    pass()
}

fn xattr_on_directory_and_survives_rename(c: &Ctx) -> Result<Verdict> {
    let d = c.p("d");
    ok(fs::create_dir(&d), "mkdir")?;
    ok(
        sys::set_xattr(&d, "user.dir", b"yes", 0),
        "setxattr on a directory",
    )?;
    write_file(&c.p("f"), b"")?;
    ok(sys::set_xattr(&c.p("f"), "user.f", b"kept", 0), "setxattr")?;
    ok(fs::rename(c.p("f"), d.join("g")), "rename")?;
    ok(fs::rename(&d, c.p("e")), "rename dir")?;
    ensure!(
        ok(sys::get_xattr(&c.p("e"), "user.dir"), "getxattr dir")? == b"yes",
        "dir xattr lost on rename"
    );
    ensure!(
        ok(sys::get_xattr(&c.p("e/g"), "user.f"), "getxattr file")? == b"kept",
        "file xattr lost on rename"
    );
    ok(fs::hard_link(c.p("e/g"), c.p("h")), "link")?;
    ensure!(
        ok(sys::get_xattr(&c.p("h"), "user.f"), "getxattr via link")? == b"kept",
        "xattr not shared by hard links"
    );
    pass()
}
