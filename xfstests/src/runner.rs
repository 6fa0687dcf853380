//! The harness: runs the selected suites against a mount within their time budgets, prints a
//! summary line per suite, compares failures with the target's expected-failures list, writes
//! the JSON report, and decides the exit status.
//!
//! Invariant: every test of ours runs in a child process with a deadline (`worker unit`), so a
//! hung or crashing target costs at most one unit's budget and is reported as that unit's
//! failure; the run's scratch directory is removed at the end unless `--keep`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::cli::{RunArgs, Suite};
use crate::env::{Env, Hooks};
use crate::expected::{Comparison, Expected};
use crate::proc::{run_with_timeout, Finished};
use crate::report::{Outcome, RunReport, SuiteReport, TestResult};
use crate::worker::RESULT_PREFIX;
use crate::{fsstress, fsx, generic, pjdfstest};

/// Longest a single generic test may run.
const GENERIC_TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Slack given to a unit past its own budget before it counts as hung.
const UNIT_GRACE: Duration = Duration::from_secs(30);
/// Longest the final removal of the run's directory may block (a hung target must not hang
/// the harness).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes `dir` on a helper thread, giving up (with a warning) after `timeout`: a thread stuck
/// in a syscall on a dead mount is abandoned and dies with the process.
fn remove_with_deadline(dir: &Path, timeout: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(fs::remove_dir_all(&d));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("xfstests: could not remove {}: {e}", dir.display()),
        Err(_) => eprintln!(
            "xfstests: removing {} did not finish within {timeout:?}: the target may be hung",
            dir.display()
        ),
    }
}

/// The directory holding the expected-failures files of the targets.
pub fn expected_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("expected")
}

fn default_state_dir(exe: &Path) -> PathBuf {
    // target/debug/xfstests -> target/xfstests
    exe.parent()
        .and_then(Path::parent)
        .map(|t| t.join("xfstests"))
        .unwrap_or_else(|| std::env::temp_dir().join("xfstests"))
}

fn fs_type_name(p: &Path) -> String {
    match nix::sys::statfs::statfs(p) {
        Ok(s) => {
            let magic = s.filesystem_type().0 as u64;
            let name = match magic {
                0x0102_1994 => "tmpfs",
                0x6573_5546 => "fuse",
                0xEF53 => "ext2/3/4",
                0x794C_7630 => "overlayfs",
                0x5846_5342 => "xfs",
                0x9123_683E => "btrfs",
                0x6969 => "nfs",
                _ => "unknown",
            };
            format!("{name} (0x{magic:x})")
        }
        Err(e) => format!("statfs failed: {e:?}"),
    }
}

fn matches_filter(filters: &[String], id: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

/// Runs the harness; returns the process exit status (0: no unexpected failure).
pub fn run(args: &RunArgs) -> Result<i32> {
    let run_start = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mount =
        fs::canonicalize(&args.mount).with_context(|| format!("mount {}", args.mount.display()))?;
    if !mount.is_dir() {
        bail!("{} is not a directory", mount.display());
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    let state = match &args.state_dir {
        Some(s) => s.clone(),
        None => default_state_dir(&exe),
    };
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;

    let expected_path = match (&args.expected, &args.target) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(t)) => Some(expected_dir().join(format!("{t}.txt"))),
        (None, None) => None,
    };
    let expected = match &expected_path {
        Some(p) => {
            if !p.exists() {
                bail!(
                    "no expected-failures file {} for this target: create it (a header comment is enough)",
                    p.display()
                );
            }
            Some(Expected::load(p)?)
        }
        None => None,
    };

    let other_user = match crate::proc::ensure_user(&args.user) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("xfstests: no second user ({e:#}): permission tests will be skipped");
            None
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let work = mount.join(format!("xfstests.{}", std::process::id()));
    fs::create_dir(&work).with_context(|| format!("creating {}", work.display()))?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;

    let env = Env {
        mount: mount.clone(),
        work: work.clone(),
        state: state.clone(),
        exe,
        hooks: Hooks {
            remount: args.remount_cmd.clone(),
            kill: args.kill_cmd.clone(),
            drop_caches: args.drop_caches,
        },
        other_user,
        naptime_ms: args.naptime_ms,
        seed,
        verbose: args.verbose,
        fsx: fsx::SuiteOptions {
            ops: args.fsx_ops,
            max_size: args.fsx_max_size,
            max_len: args.fsx_max_len,
            drop_caches_every: args.fsx_drop_caches_every,
            remount_every: args.fsx_remount_every,
        },
        fsstress: fsstress::Options {
            procs: args.fsstress_procs,
            seconds: args.fsstress_seconds,
        },
    };
    let env_file = state.join(format!("env-{}.json", std::process::id()));
    fs::write(&env_file, serde_json::to_vec_pretty(&env)?)?;

    let fs_type = fs_type_name(&mount);
    println!(
        "xfstests: mount {} ({fs_type}), target {}, seed {seed}",
        mount.display(),
        args.target.as_deref().unwrap_or("-")
    );
    let mut budgets: BTreeMap<Suite, u64> = Suite::ALL
        .iter()
        .map(|s| (*s, s.default_budget()))
        .collect();
    for (s, secs) in &args.budget {
        budgets.insert(*s, *secs);
    }
    let mut selected: Vec<Suite> = if args.suite.is_empty() {
        Suite::ALL.to_vec()
    } else {
        args.suite.clone()
    };
    selected.sort();
    selected.dedup();

    let mut suites = Vec::new();
    for suite in &selected {
        let budget = Duration::from_secs(budgets.get(suite).copied().unwrap_or(60));
        let t0 = Instant::now();
        let results = match suite {
            Suite::Pjdfstest => run_pjdfstest(&env, args, budget),
            Suite::Fsx => run_fsx(&env, &env_file, &args.filter, budget),
            Suite::Fsstress => run_fsstress(&env, &env_file, &args.filter, budget),
            Suite::Generic => run_generic(&env, &env_file, &args.filter, budget),
        };
        let report = SuiteReport::new(suite.name(), results, t0.elapsed());
        print_suite(&report, expected.as_ref(), args.verbose);
        suites.push(report);
    }

    let names: Vec<&str> = selected.iter().map(|s| s.name()).collect();
    let comparison = match &expected {
        Some(e) => e.compare(suites.iter().flat_map(|s| s.tests.iter()), &names),
        None => Expected::default().compare(suites.iter().flat_map(|s| s.tests.iter()), &names),
    };
    print_comparison(&comparison, expected_path.as_deref());

    if args.keep {
        println!("xfstests: kept {}", work.display());
    } else {
        remove_with_deadline(&work, CLEANUP_TIMEOUT);
    }
    let _ = fs::remove_file(&env_file);

    let report = RunReport {
        target: args.target.clone().unwrap_or_default(),
        mount: mount.display().to_string(),
        fs_type,
        seed,
        started_unix,
        duration_s: run_start.elapsed().as_secs_f64(),
        expected_file: expected_path.map(|p| p.display().to_string()),
        suites,
        comparison: comparison.clone(),
    };
    let report_path = match &args.report {
        Some(p) => p.clone(),
        None => state.join(format!(
            "report-{}.json",
            args.target.as_deref().unwrap_or("mount")
        )),
    };
    fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("xfstests: report {}", report_path.display());

    let failed = !comparison.new_failures.is_empty()
        || (args.strict && !comparison.newly_passing.is_empty());
    println!(
        "xfstests: {} in {:.1} s ({} unexpected failures, {} expected, {} newly passing)",
        if failed { "FAILED" } else { "PASSED" },
        run_start.elapsed().as_secs_f64(),
        comparison.new_failures.len(),
        comparison.expected_failures.len(),
        comparison.newly_passing.len()
    );
    let _ = std::io::stdout().flush();
    Ok(if failed { 1 } else { 0 })
}

fn print_suite(r: &SuiteReport, expected: Option<&Expected>, verbose: bool) {
    for t in &r.tests {
        let why = expected
            .and_then(|e| e.find(&t.id))
            .map(|e| e.reason.as_str());
        match (&t.outcome, why) {
            (Outcome::Fail { message }, Some(reason)) => {
                println!("  {} FAILED (expected: {reason})", t.id);
                if verbose {
                    println!("      {}", message.replace('\n', "\n      "));
                }
            }
            (Outcome::Fail { message }, None) => {
                println!("  {} FAILED", t.id);
                println!("      {}", message.replace('\n', "\n      "));
            }
            (Outcome::Skip { reason }, _) if verbose => println!("  {} skipped: {reason}", t.id),
            (Outcome::Pass, _) if verbose => {
                if t.notes.is_empty() {
                    println!("  {} ok ({} ms)", t.id, t.duration_ms)
                } else {
                    println!("  {} ok ({} ms; {})", t.id, t.duration_ms, t.notes)
                }
            }
            _ => {}
        }
    }
    println!("{}", r.summary_line());
    let _ = std::io::stdout().flush();
}

fn print_comparison(c: &Comparison, file: Option<&Path>) {
    let name = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "no expected-failures file".into());
    if !c.expected_failures.is_empty() {
        println!(
            "xfstests: {} expected failures ({name})",
            c.expected_failures.len()
        );
    }
    for f in &c.new_failures {
        println!("xfstests: NEW FAILURE {} (not in {name})", f.id);
    }
    for f in &c.newly_passing {
        println!(
            "xfstests: NEWLY PASSING {} (listed in {name}: {}): remove it from the list",
            f.id, f.reason
        );
    }
    for p in &c.not_run {
        println!("xfstests: note: listed {p} did not run");
    }
}

/// Runs one unit in a child (`worker unit`) and returns its results; `ids` are the results it
/// must report, each turned into a failure if the child dies or hangs before reporting it.
fn run_unit(
    env: &Env,
    env_file: &Path,
    suite: Suite,
    name: &str,
    budget: Duration,
    timeout: Duration,
    ids: &[String],
) -> Vec<TestResult> {
    let t0 = Instant::now();
    let mut cmd = Command::new(&env.exe);
    cmd.args(["worker", "unit", "--suite", suite.name(), "--name", name])
        .arg("--env-file")
        .arg(env_file)
        .arg("--budget-ms")
        .arg(budget.as_millis().to_string());
    let (stdout, problem) = match run_with_timeout(&mut cmd, timeout) {
        Ok(Finished::Exited {
            status,
            stdout,
            stderr,
        }) => {
            let p = (!status.success())
                .then(|| format!("test process exited {status}: {}", tail(&stderr)));
            (stdout, p)
        }
        Ok(Finished::TimedOut { stdout, stderr }) => (
            stdout,
            Some(format!(
                "hung: killed after {timeout:?} (target not answering?) {}",
                tail(&stderr)
            )),
        ),
        Err(e) => (String::new(), Some(format!("{e:#}"))),
    };
    let mut results: Vec<TestResult> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(RESULT_PREFIX))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    if env.verbose {
        for l in stdout.lines().filter(|l| !l.starts_with(RESULT_PREFIX)) {
            println!("    | {l}");
        }
    }
    for id in ids {
        if !results.iter().any(|r| &r.id == id) {
            let msg = problem
                .clone()
                .unwrap_or_else(|| "the test process reported no result".into());
            let (s, n) = id.split_once('/').unwrap_or((suite.name(), id));
            results.push(TestResult::new(s, n, Outcome::fail(msg), t0.elapsed()));
        }
    }
    results
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn budget_spent(suite: Suite, name: &str, budget: Duration) -> TestResult {
    TestResult::new(
        suite.name(),
        name,
        Outcome::skip(format!(
            "suite time budget ({}s) spent before this test (raise --budget {}=SECONDS)",
            budget.as_secs(),
            suite.name()
        )),
        Duration::ZERO,
    )
}

fn run_pjdfstest(env: &Env, args: &RunArgs, budget: Duration) -> Vec<TestResult> {
    let mut patterns: Vec<String> = args
        .filter
        .iter()
        .filter_map(|f| f.strip_prefix("pjdfstest/").map(str::to_string))
        .collect();
    if !args.filter.is_empty() && patterns.is_empty() {
        if args.filter.iter().any(|f| f == "pjdfstest") {
            patterns.clear();
        } else {
            return Vec::new();
        }
    }
    let opts = pjdfstest::Options {
        binary: args.pjdfstest.clone(),
        features: args.pjdfstest_features.clone(),
        naptime: args.pjdfstest_naptime,
        patterns,
    };
    pjdfstest::run(env, &opts, &env.work.join("pjdfstest"), budget)
}

fn run_generic(env: &Env, env_file: &Path, filter: &[String], budget: Duration) -> Vec<TestResult> {
    let t0 = Instant::now();
    let mut results = Vec::new();
    for t in generic::all() {
        let id = format!("generic/{}", t.name);
        if !matches_filter(filter, &id) {
            continue;
        }
        let remaining = budget.saturating_sub(t0.elapsed());
        if remaining < Duration::from_secs(1) {
            results.push(budget_spent(Suite::Generic, t.name, budget));
            continue;
        }
        let timeout = remaining.min(GENERIC_TEST_TIMEOUT);
        results.extend(run_unit(
            env,
            env_file,
            Suite::Generic,
            t.name,
            timeout,
            timeout,
            &[id],
        ));
    }
    results
}

fn run_fsx(env: &Env, env_file: &Path, filter: &[String], budget: Duration) -> Vec<TestResult> {
    let t0 = Instant::now();
    let tests: Vec<fsx::FsxTest> = fsx::tests()
        .into_iter()
        .filter(|t| matches_filter(filter, &format!("fsx/{}", t.name)))
        .collect();
    let mut results = Vec::new();
    let n = tests.len() as u32;
    for (k, t) in tests.iter().enumerate() {
        let remaining = budget.saturating_sub(t0.elapsed());
        if remaining < Duration::from_secs(1) {
            results.push(budget_spent(Suite::Fsx, t.name, budget));
            continue;
        }
        // An even share of what is left, so a slow target still reaches every test.
        let slice = remaining / (n - k as u32).max(1);
        let id = format!("fsx/{}", t.name);
        results.extend(run_unit(
            env,
            env_file,
            Suite::Fsx,
            t.name,
            slice,
            slice + UNIT_GRACE,
            &[id],
        ));
    }
    results
}

fn run_fsstress(
    env: &Env,
    env_file: &Path,
    filter: &[String],
    budget: Duration,
) -> Vec<TestResult> {
    let ids: Vec<String> = fsstress::CHECKS
        .iter()
        .map(|c| format!("fsstress/{c}"))
        .collect();
    if !ids.iter().any(|id| matches_filter(filter, id)) {
        return Vec::new();
    }
    run_unit(
        env,
        env_file,
        Suite::Fsstress,
        "all",
        budget,
        budget + UNIT_GRACE,
        &ids,
    )
}

/// The `worker unit` child: runs one unit and prints its results as result lines.
pub fn unit_main(env_file: &Path, suite: Suite, name: &str, budget: Duration) -> Result<()> {
    let env: Env = serde_json::from_slice(
        &fs::read(env_file).with_context(|| format!("reading {}", env_file.display()))?,
    )?;
    let t0 = Instant::now();
    let results = match suite {
        Suite::Generic => {
            let base = env.work.join("generic");
            let r = generic::run_named(&env, name, &base);
            let (outcome, notes) = match r {
                Ok(generic::Verdict::Pass(n)) => (Outcome::Pass, n),
                Ok(generic::Verdict::Skip(why)) => (Outcome::skip(why), String::new()),
                Err(e) => (Outcome::fail(format!("{e:#}")), String::new()),
            };
            // Leave the mount tidy for the next test; failures here do not judge the test.
            let _ = fs::remove_dir_all(base.join(name));
            vec![TestResult::new("generic", name, outcome, t0.elapsed()).with_notes(notes)]
        }
        Suite::Fsx => {
            let tests = fsx::tests();
            let (idx, t) = tests
                .iter()
                .enumerate()
                .find(|(_, t)| t.name == name)
                .with_context(|| format!("no fsx test {name:?}"))?;
            let seed = fsx::test_seed(env.seed, idx);
            // Keep a tenth of the slice for the final whole-file check and cleanup.
            let ops_budget = budget.mul_f64(0.9);
            let outcome = match fsx::config_for(t, seed, &env.fsx, &env.hooks, ops_budget) {
                Err(why) => (Outcome::skip(why), String::new()),
                Ok(cfg) => {
                    let dir = env.work.join("fsx").join(name);
                    fs::create_dir_all(&dir)?;
                    let r = fsx::run_test(&dir, &cfg, &env.hooks, &env.mount, &env.state);
                    let _ = fs::remove_dir_all(&dir);
                    match r {
                        Ok(notes) => (Outcome::Pass, notes),
                        Err(msg) => {
                            println!("fsx/{name} FAILED: {msg}");
                            (Outcome::fail(msg), String::new())
                        }
                    }
                }
            };
            vec![TestResult::new("fsx", name, outcome.0, t0.elapsed()).with_notes(outcome.1)]
        }
        Suite::Fsstress => {
            let mut opts = env.fsstress.clone();
            // Workers get at most half the budget: the checker and cleanup need the rest.
            opts.seconds = opts.seconds.min((budget.as_secs() / 2).max(1));
            let dir = env.work.join("fsstress");
            fs::create_dir_all(&dir)?;
            let journals = env.state.join(format!("fsstress-{}", std::process::id()));
            let r = fsstress::run_suite(&env.exe, &dir, &journals, &opts, env.seed);
            let _ = fs::remove_dir_all(&journals);
            let _ = fs::remove_dir_all(&dir);
            r?
        }
        Suite::Pjdfstest => bail!("pjdfstest runs from the runner, not as a unit"),
    };
    let mut out = std::io::stdout().lock();
    for r in results {
        writeln!(out, "{RESULT_PREFIX}{}", serde_json::to_string(&r)?)?;
    }
    Ok(())
}

/// Prints the test ids of the built-in suites.
pub fn list() {
    for t in fsx::tests() {
        println!("fsx/{}", t.name);
    }
    for c in fsstress::CHECKS {
        println!("fsstress/{c}");
    }
    for t in generic::all() {
        println!("generic/{}", t.name);
    }
    println!(
        "pjdfstest/* (pjdfstest {}: its test cases)",
        pjdfstest::VERSION
    );
}
