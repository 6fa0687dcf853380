//! Generic semantic tests, our own, each named by the behaviour it checks: what local
//! filesystems guarantee and network filesystems often break.
//!
//! Invariant: a test runs in its own child process (so a hang, a crash or a user switch stays
//! contained) inside its own fresh directory `Ctx::dir` on the mount, and judges only what POSIX
//! (or Linux, where POSIX is silent and every local filesystem agrees) promises; where a target
//! may legitimately differ, the test accepts every conforming answer.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::sys::stat::FileStat;

use crate::env::Env;
use crate::sys;

mod crash;
mod data;
mod dirs;
mod names;
mod perms;
mod space;
mod times;
mod xattr;

/// What a test concluded when it did not fail.
#[derive(Debug)]
pub enum Verdict {
    /// The behaviour held; the string holds notes (probed limits, counts), often empty.
    Pass(String),
    /// The test could not run here, and why.
    Skip(String),
}

/// A passing verdict with no notes.
pub fn pass() -> Result<Verdict> {
    Ok(Verdict::Pass(String::new()))
}

/// A test's view of the run.
pub struct Ctx<'a> {
    /// The run.
    pub env: &'a Env,
    /// This test's own empty directory on the mount (mode 0755).
    pub dir: PathBuf,
}

impl Ctx<'_> {
    /// A path in the test's directory.
    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Sleeps long enough for the target's timestamps to advance.
    pub fn nap(&self) {
        std::thread::sleep(self.env.naptime());
    }

    /// A command running this binary's hidden `worker` subcommand `sub`.
    pub fn worker(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.env.exe);
        c.arg("worker").arg(sub);
        c
    }
}

/// One generic test.
pub struct GenericTest {
    /// Name (the id is `generic/NAME`).
    pub name: &'static str,
    /// The test.
    pub run: fn(&Ctx) -> Result<Verdict>,
}

/// Every generic test, in run order.
pub fn all() -> Vec<GenericTest> {
    let mut v = Vec::new();
    v.extend(data::tests());
    v.extend(names::tests());
    v.extend(dirs::tests());
    v.extend(times::tests());
    v.extend(xattr::tests());
    v.extend(perms::tests());
    v.extend(space::tests());
    v.extend(crash::tests());
    v
}

/// Declares a list of tests from functions of the same name.
macro_rules! test_list {
    ($($f:ident),* $(,)?) => {
        pub(super) fn tests() -> Vec<super::GenericTest> {
            vec![$(super::GenericTest { name: stringify!($f), run: $f }),*]
        }
    };
}
pub(crate) use test_list;

/// Fails unless `r` is an error with errno `want`.
pub fn expect_errno<T>(r: io::Result<T>, want: Errno, what: &str) -> Result<()> {
    match r {
        Ok(_) => bail!("{what}: succeeded, expected {want:?}"),
        Err(e) if sys::errno_of(&e) == Some(want) => Ok(()),
        Err(e) => bail!("{what}: got {}, expected {want:?}", sys::errno_name(&e)),
    }
}

/// Fails unless `r` is an error with one of the errnos `want`.
pub fn expect_errno_in<T>(r: io::Result<T>, want: &[Errno], what: &str) -> Result<()> {
    match r {
        Ok(_) => bail!("{what}: succeeded, expected one of {want:?}"),
        Err(e) if sys::errno_of(&e).is_some_and(|x| want.contains(&x)) => Ok(()),
        Err(e) => bail!(
            "{what}: got {}, expected one of {want:?}",
            sys::errno_name(&e)
        ),
    }
}

/// Unwraps a syscall result, naming the step and the errno on failure.
pub fn ok<T>(r: io::Result<T>, what: &str) -> Result<T> {
    r.map_err(|e| anyhow!("{what}: {}", sys::errno_name(&e)))
}

/// `lstat` as a `FileStat` (times with nanoseconds).
pub fn lstat(p: &Path) -> Result<FileStat> {
    nix::sys::stat::lstat(p).map_err(|e| anyhow!("lstat {}: {e:?}", p.display()))
}

/// `stat` (follows symlinks).
pub fn stat(p: &Path) -> Result<FileStat> {
    nix::sys::stat::stat(p).map_err(|e| anyhow!("stat {}: {e:?}", p.display()))
}

/// Creates (or truncates) a file with `data`.
pub fn write_file(p: &Path, data: &[u8]) -> Result<()> {
    ok(fs::write(p, data), &format!("writing {}", p.display()))
}

/// Opens a file read-write, creating it with mode 0644.
pub fn open_rw(p: &Path) -> Result<File> {
    ok(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(p),
        &format!("opening {}", p.display()),
    )
}

/// Deterministic, recognisable bytes.
pub fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Runs a worker command to completion within `timeout`, returning its stdout; fails when it
/// exits non-zero or hangs.
pub fn run_worker(cmd: &mut Command, timeout: Duration) -> Result<String> {
    match crate::proc::run_with_timeout(cmd, timeout)? {
        crate::proc::Finished::Exited {
            status,
            stdout,
            stderr,
        } => {
            if !status.success() {
                bail!("worker {cmd:?} exited {status}: {}", stderr.trim());
            }
            Ok(stdout)
        }
        crate::proc::Finished::TimedOut { .. } => {
            bail!("worker {cmd:?} hung for {timeout:?} and was killed")
        }
    }
}

/// Runs one generic test by name in a fresh directory under `base` (in this process: the
/// runner calls this from a child). Failures and panics become `Err`.
pub fn run_named(env: &Env, name: &str, base: &Path) -> Result<Verdict> {
    let t = all()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| anyhow!("no generic test named {name:?}"))?;
    let dir = base.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    ok(
        fs::create_dir_all(&dir),
        &format!("mkdir {}", dir.display()),
    )?;
    // Searchable by the second user whatever the umask: the permission tests run as it.
    for d in [base, dir.as_path()] {
        ok(
            fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)),
            &format!("chmod 0755 {}", d.display()),
        )?;
    }
    let ctx = Ctx { env, dir };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.run)(&ctx))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            bail!("panicked: {msg}")
        }
    }
}
