//! POSIX conformance and stress harness run against a live mount: pjdfstest (pinned, from
//! crates.io), an fsx-like random exerciser, an fsstress-like concurrent namespace stress with a
//! tree checker, and our own generic semantic tests. `xfstests run --mount DIR --target NAME`
//! prints `SUITE: N passed, M failed, K skipped` per suite, writes a JSON report and fails on
//! any failure not explained in `xfstests/expected/NAME.txt`. See docs/conformance.md.
//!
//! Dependency rule: depends on no crate of the workspace: it only sees a mounted directory, so
//! it can judge any filesystem. A target is a mount point plus, optionally, shell hooks to kill
//! and remount it; nothing else about the target is assumed.
//!
//! Invariant: every test reports exactly one `TestResult` under a stable id `suite/name`, the
//! key of the expected-failures files; ids never depend on the seed or the target.

pub mod cli;
pub mod env;
pub mod expected;
pub mod fsstress;
pub mod fsx;
pub mod generic;
pub mod pjdfstest;
pub mod proc;
pub mod report;
pub mod runner;
pub mod sys;
pub mod worker;

use std::time::Duration;

use anyhow::Result;

use cli::{Cli, Cmd, WorkerCmd};

/// Runs a parsed command line; returns the process exit status.
pub fn main_with(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Run(args) => runner::run(&args),
        Cmd::List => {
            runner::list();
            Ok(0)
        }
        Cmd::Fsx(a) => {
            let kinds = if a.kinds.is_empty() {
                fsx::OpKind::ALL.to_vec()
            } else {
                a.kinds.clone()
            };
            let cfg = fsx::FsxConfig {
                seed: a.seed,
                ops: a.ops,
                max_size: a.max_size,
                max_len: a.max_len,
                optional: if a.lenient { kinds.clone() } else { Vec::new() },
                kinds,
                drop_caches_every: None,
                remount_every: a.remount_every,
                budget: Duration::from_secs(24 * 3600),
            };
            let hooks = env::Hooks {
                remount: a.remount_cmd.clone(),
                ..Default::default()
            };
            let mount = a.mount.clone().unwrap_or_else(|| a.file.clone());
            let stats = fsx::replay(&a.file, &cfg, &hooks, &mount)?;
            println!(
                "fsx: seed {} passed {} ops, final size {} bytes{}",
                a.seed,
                stats.ops,
                stats.final_size,
                if stats.dropped.is_empty() {
                    String::new()
                } else {
                    format!(", dropped unsupported {:?}", stats.dropped)
                }
            );
            Ok(0)
        }
        Cmd::Worker(w) => {
            match w {
                WorkerCmd::Unit {
                    env_file,
                    suite,
                    name,
                    budget_ms,
                } => runner::unit_main(&env_file, suite, &name, Duration::from_millis(budget_ms))?,
                WorkerCmd::Fsstress {
                    root,
                    id,
                    seed,
                    millis,
                    journal,
                } => fsstress::worker_main(&root, id, seed, millis, &journal)?,
                WorkerCmd::Appender { path, id, count } => worker::appender_main(&path, id, count)?,
                WorkerCmd::RenameReader { path, millis } => {
                    worker::rename_reader_main(&path, millis)?
                }
                WorkerCmd::Try { op, path, arg } => worker::try_main(op, &path, arg.as_deref())?,
            }
            Ok(0)
        }
    }
}
