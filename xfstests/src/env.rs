//! What every suite needs to know about the run: the mount, the scratch and state directories,
//! the hooks of the target, and the second user for permission tests.
//!
//! Invariant: everything the harness creates on the mount lives under `work` (one directory per
//! run, removed at the end); everything it keeps (installed tools, logs, journals) lives under
//! `state`, which is never on the mount under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::proc::{run_with_timeout, Finished};

/// The run's shared facts, serialisable so child processes get the same view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Env {
    /// The mounted directory under test.
    pub mount: PathBuf,
    /// This run's scratch directory on the mount.
    pub work: PathBuf,
    /// Local directory for tools, logs and journals (not on the mount).
    pub state: PathBuf,
    /// This binary, for child processes.
    pub exe: PathBuf,
    /// Target hooks.
    pub hooks: Hooks,
    /// Second user for permission tests; `None` when not running as root.
    pub other_user: Option<OtherUser>,
    /// Sleep between steps whose timestamps must differ (above the target's granularity).
    pub naptime_ms: u64,
    /// Base seed for the randomized suites.
    pub seed: u64,
    /// Print every test, not only failures.
    pub verbose: bool,
    /// fsx suite options.
    pub fsx: crate::fsx::SuiteOptions,
    /// fsstress suite options.
    pub fsstress: crate::fsstress::Options,
}

impl Env {
    /// The nap between timestamp-changing steps.
    pub fn naptime(&self) -> Duration {
        Duration::from_millis(self.naptime_ms)
    }
}

/// A user other than the one running the harness, with its primary group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtherUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Commands that act on the target from outside: the only way a suite can crash, remount or
/// drop the caches of a filesystem it otherwise sees as a directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Hooks {
    /// Shell command that (re)mounts the target at the mount point; run after `kill`, and by
    /// the remount-between-ops features. It must leave the mount usable when it exits 0.
    pub remount: Option<String>,
    /// Shell command that kills the target's daemon without a clean unmount (e.g. `kill -9`).
    pub kill: Option<String>,
    /// Whether `echo 3 > /proc/sys/vm/drop_caches` may be used between ops (root only; it
    /// drops every cache of the machine, so it is opt-in).
    pub drop_caches: bool,
}

/// How long a hook may take before it counts as failed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

impl Hooks {
    /// Runs the remount hook, failing when there is none.
    pub fn remount(&self, mount: &Path) -> Result<()> {
        match &self.remount {
            Some(cmd) => run_hook("remount", cmd, mount),
            None => bail!("no remount hook: pass --remount-cmd"),
        }
    }

    /// Runs the kill hook, failing when there is none.
    pub fn kill(&self, mount: &Path) -> Result<()> {
        match &self.kill {
            Some(cmd) => run_hook("kill", cmd, mount),
            None => bail!("no kill hook: pass --kill-cmd"),
        }
    }

    /// Drops the kernel's page, dentry and inode caches.
    pub fn drop_caches(&self) -> Result<()> {
        // Dirty pages are not dropped, only clean ones: write them first.
        nix::unistd::sync();
        std::fs::write("/proc/sys/vm/drop_caches", b"3\n")
            .context("writing /proc/sys/vm/drop_caches (needs root)")
    }
}

/// Runs a hook through `sh -c`, with `XFSTESTS_MOUNT` set to the mount point.
fn run_hook(what: &str, cmd: &str, mount: &Path) -> Result<()> {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).env("XFSTESTS_MOUNT", mount);
    match run_with_timeout(&mut c, HOOK_TIMEOUT)? {
        Finished::Exited {
            status,
            stdout,
            stderr,
        } => {
            if status.success() {
                Ok(())
            } else {
                bail!(
                    "{what} hook `{cmd}` failed ({status}): {}{}",
                    stdout.trim(),
                    stderr.trim()
                )
            }
        }
        Finished::TimedOut { .. } => {
            bail!("{what} hook `{cmd}` did not finish within {HOOK_TIMEOUT:?}")
        }
    }
}
