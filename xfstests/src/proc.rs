//! Child processes with a deadline, and the second user they may run as.
//!
//! Invariant: a child that outlives its deadline is killed by its own pid (never by name) and
//! reaped before the call returns, so the harness leaves no process of its own behind.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::unistd::{Group, Uid, User};

use crate::env::OtherUser;

/// How a child process ended.
#[derive(Debug)]
pub enum Finished {
    /// It exited (or was killed by a signal) on its own.
    Exited {
        /// Exit status.
        status: ExitStatus,
        /// Everything it wrote to stdout.
        stdout: String,
        /// Everything it wrote to stderr.
        stderr: String,
    },
    /// It was still running at the deadline and was killed.
    TimedOut {
        /// Output it wrote before it was killed.
        stdout: String,
        /// Errors it wrote before it was killed.
        stderr: String,
    },
}

/// Runs `cmd` with piped output, killing it if it runs longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = wait_until(&mut child, deadline)?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(match status {
        Some(status) => Finished::Exited {
            status,
            stdout,
            stderr,
        },
        None => Finished::TimedOut { stdout, stderr },
    })
}

/// Waits for `child` until `deadline`; kills and reaps it then. `None` means it was killed.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Kill by the pid we hold; an already-exited child makes this a harmless error.
            let _ = child.kill();
            child.wait().context("reaping a killed child")?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn drain<R: Read + Send + 'static>(src: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = src {
            let _ = s.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Looks up `name`, creating it (with a group of the same name) with `useradd` when it is
/// missing and the harness runs as root. Returns `Ok(None)` when not root: tests that switch
/// users need root.
pub fn ensure_user(name: &str) -> Result<Option<OtherUser>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    if User::from_name(name)?.is_none() {
        let status = Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .context("running useradd (package passwd)")?;
        if !status.success() {
            bail!("useradd {name} failed: {status}");
        }
    }
    match User::from_name(name)? {
        Some(u) if u.uid.is_root() => bail!("user {name:?} is root: pick another --user"),
        Some(u) => Ok(Some(OtherUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        None => bail!("user {name:?} still missing after useradd"),
    }
}

/// The `nobody` user and the name of its primary group (`nogroup` on Debian).
pub fn nobody() -> Result<(String, String)> {
    let u = User::from_name("nobody")?.context("no user named nobody")?;
    let g = Group::from_gid(u.gid)?
        .with_context(|| format!("no group with gid {} (nobody's)", u.gid))?;
    Ok((u.name, g.name))
}

/// The name of a group id.
pub fn group_name(gid: u32) -> Result<String> {
    let g = Group::from_gid(nix::unistd::Gid::from_raw(gid))?
        .with_context(|| format!("no group with gid {gid}"))?;
    Ok(g.name)
}
