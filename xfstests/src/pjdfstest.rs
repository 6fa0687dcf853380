//! The pjdfstest suite (the Rust rewrite, from crates.io, version pinned): installed on first
//! use with `cargo install --locked`, configured for the target (features, the two users it
//! switches to, a secondary filesystem for the `EXDEV` tests) and its output parsed per test.
//!
//! Invariant: the binary run is exactly version `VERSION` (checked with `--version` before use,
//! reinstalled otherwise), so an expected-failures list always refers to one known suite.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::proc::{run_with_timeout, Finished};
use crate::report::{Outcome, TestResult};

/// The pinned pjdfstest version.
pub const VERSION: &str = "0.2.2";

/// How long building pjdfstest may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// The suite's options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Options {
    /// A pjdfstest binary to use instead of the managed install.
    pub binary: Option<PathBuf>,
    /// pjdfstest features the target supports (`pjdfstest -l` lists them).
    pub features: Vec<String>,
    /// Seconds pjdfstest sleeps where timestamps must differ.
    pub naptime: f64,
    /// Test name patterns passed to pjdfstest (empty: all).
    pub patterns: Vec<String>,
}

fn installed_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace().nth(1).map(str::to_string)
}

/// Returns the pjdfstest binary, installing the pinned version under `state/tools` if needed.
pub fn ensure_installed(state: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(b) = explicit {
        return match installed_version(b) {
            Some(v) if v == VERSION => Ok(b.to_path_buf()),
            Some(v) => bail!(
                "{} is pjdfstest {v}, the harness pins {VERSION}",
                b.display()
            ),
            None => bail!("{} does not run as pjdfstest", b.display()),
        };
    }
    let root = state.join("tools");
    let bin = root.join("bin").join("pjdfstest");
    if installed_version(&bin).as_deref() == Some(VERSION) {
        return Ok(bin);
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let jobs = std::env::var("CARGO_BUILD_JOBS").unwrap_or_else(|_| "2".into());
    eprintln!(
        "xfstests: installing pjdfstest {VERSION} into {} (once)",
        root.display()
    );
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "install",
        "--locked",
        "--force",
        "--version",
        VERSION,
        "pjdfstest",
        "-j",
        &jobs,
    ])
    .arg("--root")
    .arg(&root)
    // Outside the workspace, so its config and target dir are not involved.
    .current_dir(&root);
    let log = root.join("install.log");
    match run_with_timeout(&mut cmd, INSTALL_TIMEOUT)? {
        Finished::Exited {
            status,
            stdout,
            stderr,
        } => {
            let _ = fs::write(&log, format!("{stdout}\n{stderr}"));
            if !status.success() {
                let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "cargo install pjdfstest {VERSION} failed ({status}); it links libacl: on Debian \
                     `apt-get install -y libacl1-dev`. Log: {}\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        Finished::TimedOut { .. } => bail!("cargo install pjdfstest took over {INSTALL_TIMEOUT:?}"),
    }
    match installed_version(&bin) {
        Some(v) if v == VERSION => Ok(bin),
        other => bail!("after install, {} reports version {other:?}", bin.display()),
    }
}

/// Writes pjdfstest's TOML configuration for the target.
pub fn write_config(path: &Path, opts: &Options, env: &Env) -> Result<()> {
    let mut t = String::from("# Written by xfstests for this run.\n[features]\n");
    for f in &opts.features {
        t.push_str(&format!("{f} = {{}}\n"));
    }
    t.push_str(&format!(
        "\n[settings]\nnaptime = {}\nallow_remount = false\n",
        opts.naptime
    ));
    if let Some(u) = &env.other_user {
        let (nobody, nogroup) = crate::proc::nobody()?;
        let group = crate::proc::group_name(u.gid)?;
        t.push_str(&format!(
            "\n[dummy_auth]\nentries = [[\"{nobody}\", \"{nogroup}\"], [\"{}\", \"{group}\"]]\n",
            u.name
        ));
    }
    fs::write(path, t).with_context(|| format!("writing {}", path.display()))
}

/// Removes terminal colour escapes, in case the binary colours its output anyway.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses pjdfstest's per-test lines (`NAME   ok|skipped|FAILED`) and the tab-indented detail
/// lines after them (skip reasons, assertion messages).
pub fn parse_output(text: &str) -> Vec<(String, Outcome)> {
    let text = strip_ansi(text);
    let mut out: Vec<(String, Outcome)> = Vec::new();
    let mut detail: Vec<String> = Vec::new();
    let mut in_backtrace = false;
    let flush = |out: &mut Vec<(String, Outcome)>, detail: &mut Vec<String>| {
        if let Some((_, o)) = out.last_mut() {
            let d = detail.join(" / ");
            match o {
                Outcome::Fail { message } if !d.is_empty() => *message = d,
                Outcome::Skip { reason } if !d.is_empty() => *reason = d,
                _ => {}
            }
        }
        detail.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim_end();
        let status = [
            "ok",
            "skipped",
            "FAILED",
            "failed as expected",
            "PASSED UNEXPECTEDLY",
        ]
        .into_iter()
        .find(|s| trimmed.ends_with(s));
        let name = trimmed.split_whitespace().next().unwrap_or("");
        let is_test_line = !line.starts_with(char::is_whitespace)
            && status.is_some()
            && name.contains("::")
            && trimmed.len() > name.len();
        if is_test_line {
            flush(&mut out, &mut detail);
            in_backtrace = false;
            let outcome = match status {
                Some("ok") | Some("PASSED UNEXPECTEDLY") => Outcome::Pass,
                Some("skipped") => Outcome::skip("skipped by pjdfstest"),
                _ => Outcome::fail("failed"),
            };
            out.push((name.to_string(), outcome));
        } else if trimmed.starts_with("Backtrace:") {
            in_backtrace = true;
        } else if !in_backtrace
            && !trimmed.is_empty()
            && !trimmed.starts_with("Summary:")
            && detail.len() < 6
        {
            detail.push(trimmed.trim().to_string());
        }
    }
    flush(&mut out, &mut detail);
    out
}

/// Runs the suite: installs if needed, runs pjdfstest in `dir` with a deadline, one result per
/// pjdfstest test case.
pub fn run(env: &Env, opts: &Options, dir: &Path, budget: Duration) -> Vec<TestResult> {
    let started = Instant::now();
    let fail = |name: &str, msg: String| {
        vec![TestResult::new(
            "pjdfstest",
            name,
            Outcome::fail(msg),
            started.elapsed(),
        )]
    };
    let bin = match ensure_installed(&env.state, opts.binary.as_deref()) {
        Ok(b) => b,
        Err(e) => return fail("install", format!("{e:#}")),
    };
    let conf = env.state.join("pjdfstest.toml");
    if let Err(e) = write_config(&conf, opts, env) {
        return fail("configure", format!("{e:#}"));
    }
    // pjdfstest switches to its two users inside this directory: it must be searchable.
    let made = fs::create_dir_all(dir).and_then(|()| {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
    });
    if let Err(e) = made {
        return fail("configure", format!("creating {}: {e}", dir.display()));
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    // The EXDEV tests need a directory on another filesystem: the local state directory is one
    // whenever it is not on the mount under test.
    let secondary = env.state.join("pjdfstest-secondary");
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    if fs::create_dir_all(&secondary).is_ok() && dev(&secondary) != dev(dir) {
        cmd.arg("-s").arg(&secondary);
    }
    cmd.args(&opts.patterns)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0");
    let remaining = budget.saturating_sub(started.elapsed());
    let finished = match run_with_timeout(&mut cmd, remaining) {
        Ok(f) => f,
        Err(e) => return fail("run", format!("{e:#}")),
    };
    let (stdout, stderr, timed_out) = match finished {
        Finished::Exited { stdout, stderr, .. } => (stdout, stderr, false),
        Finished::TimedOut { stdout, stderr } => (stdout, stderr, true),
    };
    let _ = fs::write(
        env.state.join("pjdfstest.log"),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    );
    let mut results: Vec<TestResult> = parse_output(&stdout)
        .into_iter()
        .map(|(name, outcome)| TestResult::new("pjdfstest", &name, outcome, Duration::ZERO))
        .collect();
    if timed_out {
        results.push(TestResult::new(
            "pjdfstest",
            "time_budget",
            Outcome::fail(format!(
                "pjdfstest still running after the suite budget ({budget:?}); {} tests had finished",
                results.len()
            )),
            started.elapsed(),
        ));
    } else if results.is_empty() {
        results = fail(
            "run",
            format!(
                "pjdfstest printed no test results; stderr: {}",
                stderr.trim()
            ),
        );
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_details_and_skips_backtraces() {
        let out = "\
chmod::ok_case                                   ok
rename::exdev_target                             FAILED
\tassertion `left == right` failed
  left: Err(ENOENT)
 right: Err(EXDEV)
Backtrace:
   0: pjdfstest::main
link::link_count_max                             skipped
\tCannot get value for LINK_MAX
\x1b[32mopen::colored\x1b[0m                      \x1b[32mok\x1b[0m

Summary: 1 failed, 1 skipped, 2 passed, 0 expected failures, 4 total
";
        let r = parse_output(out);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0], ("chmod::ok_case".to_string(), Outcome::Pass));
        match &r[1].1 {
            Outcome::Fail { message } => {
                assert!(message.contains("Err(EXDEV)"), "{message}");
                assert!(!message.contains("pjdfstest::main"), "{message}");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(r[2].1, Outcome::skip("Cannot get value for LINK_MAX"));
        assert_eq!(r[3], ("open::colored".to_string(), Outcome::Pass));
    }
}
