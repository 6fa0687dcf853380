//! The hidden `xfstests worker ...` subcommands: the child processes of the suites (a test unit
//! run in isolation, fsstress workers, appenders, readers, single syscalls as another user).
//!
//! Invariant: a child reports only through its stdout (result lines or one JSON object) and its
//! exit status; it never touches anything outside the paths it is given.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::sys;

/// Prefix of a result line a unit child prints (followed by one JSON `TestResult`).
pub const RESULT_PREFIX: &str = "XFSTESTS-RESULT ";

/// Bytes of one `O_APPEND` record.
pub const APPEND_RECORD: usize = 64;

/// The `O_APPEND` record of writer `id` (0..=9), number `seq`.
pub fn append_record(id: u8, seq: u64) -> Vec<u8> {
    let mut r = format!("A{id}:{seq:010}:").into_bytes();
    r.resize(APPEND_RECORD - 1, b'a' + id);
    r.push(b'\n');
    r
}

/// Parses an `O_APPEND` record back to `(id, seq)`, `None` when damaged.
pub fn parse_append_record(r: &[u8]) -> Option<(u8, u64)> {
    if r.len() != APPEND_RECORD || r.first() != Some(&b'A') {
        return None;
    }
    let id = r.get(1)?.checked_sub(b'0').filter(|i| *i <= 9)?;
    let seq: u64 = std::str::from_utf8(r.get(3..13)?).ok()?.parse().ok()?;
    (append_record(id, seq) == r).then_some((id, seq))
}

/// Bytes of one version of the rename-atomicity test's file.
const VERSION_LEN: usize = 64 * 1024;

/// The body of version `v` of the rename test's file.
pub fn version_body(v: u64) -> Vec<u8> {
    let mut b = format!("VERSION{v:012}\n").into_bytes();
    b.resize(VERSION_LEN, (v % 251) as u8 + 1);
    b
}

fn check_version(b: &[u8]) -> std::result::Result<(), String> {
    let head = b
        .get(7..19)
        .ok_or_else(|| format!("only {} bytes", b.len()))?;
    let v: u64 = std::str::from_utf8(head)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no version header in {} bytes", b.len()))?;
    if version_body(v) != b {
        return Err(format!("version {v} read as {} damaged bytes", b.len()));
    }
    Ok(())
}

/// What a rename reader saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RenameReaderStats {
    /// Opens attempted.
    pub reads: u64,
    /// Opens that found no file (ENOENT): rename is not atomic.
    pub missing: u64,
    /// Reads of a file that was not one whole version.
    pub torn: u64,
    /// The first problem, described.
    pub first_problem: String,
}

/// Appends `count` records with `O_APPEND`, one `write` each.
pub fn appender_main(path: &Path, id: u8, count: u64) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for seq in 0..count {
        let r = append_record(id, seq);
        let n = f.write(&r).context("append")?;
        if n != r.len() {
            bail!("short append: {n} of {} bytes", r.len());
        }
    }
    Ok(())
}

/// Opens and reads `path` in a loop for `millis`, checking each read is one whole version.
pub fn rename_reader_main(path: &Path, millis: u64) -> Result<()> {
    let mut s = RenameReaderStats::default();
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut buf = Vec::with_capacity(VERSION_LEN);
    while Instant::now() < deadline {
        s.reads += 1;
        let problem = match fs::File::open(path) {
            Ok(mut f) => {
                buf.clear();
                match f.read_to_end(&mut buf) {
                    Ok(_) => check_version(&buf).err().inspect(|_| s.torn += 1),
                    Err(e) => {
                        s.torn += 1;
                        Some(format!("read: {}", sys::errno_name(&e)))
                    }
                }
            }
            Err(e) => {
                s.missing += 1;
                Some(format!("open: {}", sys::errno_name(&e)))
            }
        };
        if let Some(p) = problem {
            if s.first_problem.is_empty() {
                s.first_problem = p;
            }
        }
    }
    println!("{}", serde_json::to_string(&s)?);
    Ok(())
}

/// A single syscall a permission test runs as another user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TryOp {
    /// `open(O_RDONLY)` and read.
    OpenRead,
    /// `open(O_WRONLY)`.
    OpenWrite,
    /// `open(O_CREAT|O_EXCL)`.
    Create,
    /// `unlink`.
    Unlink,
    /// `mkdir`.
    Mkdir,
    /// `rmdir`.
    Rmdir,
    /// `opendir` and read.
    Readdir,
    /// `stat`.
    Stat,
    /// `chmod` to `--arg` (octal).
    Chmod,
    /// `chown` to `--arg` (`uid:gid`).
    Chown,
    /// `utimensat` with `UTIME_NOW`.
    UtimesNow,
    /// `utimensat` with explicit times.
    UtimesExplicit,
    /// `truncate` to 0.
    Truncate,
    /// `rename` to `--arg`.
    Rename,
    /// `setxattr user.t`.
    SetXattr,
}

/// Runs one syscall and prints `OK` or the errno name.
pub fn try_main(op: TryOp, path: &Path, arg: Option<&str>) -> Result<()> {
    let arg = || arg.context("this op needs --arg");
    let r: std::io::Result<()> = match op {
        TryOp::OpenRead => fs::File::open(path).and_then(|mut f| {
            let mut b = [0u8; 16];
            f.read(&mut b).map(|_| ())
        }),
        TryOp::OpenWrite => OpenOptions::new().write(true).open(path).map(|_| ()),
        TryOp::Create => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map(|_| ()),
        TryOp::Unlink => fs::remove_file(path),
        TryOp::Mkdir => fs::create_dir(path),
        TryOp::Rmdir => fs::remove_dir(path),
        TryOp::Readdir => fs::read_dir(path).and_then(|rd| {
            for e in rd {
                e?;
            }
            Ok(())
        }),
        TryOp::Stat => fs::metadata(path).map(|_| ()),
        TryOp::Chmod => {
            let mode = u32::from_str_radix(arg()?, 8).context("--arg: octal mode")?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        }
        TryOp::Chown => {
            let (u, g) = arg()?.split_once(':').context("--arg: uid:gid")?;
            std::os::unix::fs::chown(path, Some(u.parse()?), Some(g.parse()?))
        }
        TryOp::UtimesNow => {
            let now = nix::sys::time::TimeSpec::UTIME_NOW;
            nix::sys::stat::utimensat(
                None,
                path,
                &now,
                &now,
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )
            .map_err(std::io::Error::from)
        }
        TryOp::UtimesExplicit => {
            let t = nix::sys::time::TimeSpec::new(1_000_000, 0);
            nix::sys::stat::utimensat(
                None,
                path,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )
            .map_err(std::io::Error::from)
        }
        TryOp::Truncate => OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0)),
        TryOp::Rename => fs::rename(path, PathBuf::from(arg()?)),
        TryOp::SetXattr => sys::set_xattr(path, "user.t", b"v", 0),
    };
    println!("{}", sys::outcome_name(&r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_records_round_trip() {
        let r = append_record(1, 1234);
        assert_eq!(r.len(), APPEND_RECORD);
        assert_eq!(parse_append_record(&r), Some((1, 1234)));
        let mut bad = r.clone();
        bad[30] = b'x';
        assert_eq!(parse_append_record(&bad), None);
    }

    #[test]
    fn versions_check_whole_bodies() {
        assert!(check_version(&version_body(9)).is_ok());
        assert!(check_version(&version_body(9)[..100]).is_err());
        let mut mixed = version_body(9);
        mixed[40_000..].copy_from_slice(&version_body(10)[40_000..]);
        assert!(check_version(&mixed).is_err());
    }
}
