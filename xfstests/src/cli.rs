//! Command line: `run` (the harness), `list`, `fsx` (replay one seed) and the hidden `worker`
//! subcommands the harness starts as child processes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fsx::OpKind;
use crate::worker::TryOp;

/// POSIX conformance and stress harness run against a mounted directory.
#[derive(Debug, Parser)]
#[command(name = "xfstests", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Runs suites against a mounted directory and compares failures with the target's list.
    Run(Box<RunArgs>),
    /// Lists the tests of the built-in suites (pjdfstest's come from its binary).
    List,
    /// Runs one fsx sequence on a file: replays a seed printed by a failed run.
    Fsx(FsxArgs),
    /// Child processes of the harness (not for direct use).
    #[command(hide = true, subcommand)]
    Worker(WorkerCmd),
}

/// A suite of the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Suite {
    /// pjdfstest (crates.io, pinned), POSIX syscall conformance.
    Pjdfstest,
    /// Random single-file exerciser checked against a model.
    Fsx,
    /// Concurrent namespace stress and tree checker.
    Fsstress,
    /// Our semantic tests, named by behaviour.
    Generic,
}

impl Suite {
    /// Every suite, in run order.
    pub const ALL: [Suite; 4] = [
        Suite::Pjdfstest,
        Suite::Fsx,
        Suite::Fsstress,
        Suite::Generic,
    ];

    /// The suite's name in ids and summary lines.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Pjdfstest => "pjdfstest",
            Suite::Fsx => "fsx",
            Suite::Fsstress => "fsstress",
            Suite::Generic => "generic",
        }
    }

    /// Default wall-time budget in seconds.
    pub fn default_budget(self) -> u64 {
        match self {
            Suite::Pjdfstest => 180,
            Suite::Fsx => 60,
            Suite::Fsstress => 60,
            Suite::Generic => 180,
        }
    }
}

fn parse_budget(s: &str) -> Result<(Suite, u64), String> {
    let (suite, secs) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected SUITE=SECONDS, e.g. fsx=120"))?;
    let suite = Suite::from_str(suite, true).map_err(|e| format!("{suite:?}: {e}"))?;
    let secs = secs
        .parse()
        .map_err(|e| format!("{secs:?}: seconds: {e}"))?;
    Ok((suite, secs))
}

/// `xfstests run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The mounted directory to test (the harness works in a subdirectory it removes).
    #[arg(long)]
    pub mount: PathBuf,
    /// Suites to run (default: all), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub suite: Vec<Suite>,
    /// Target name: selects xfstests/expected/NAME.txt (tmpfs, bindfs, dfuse, ...).
    #[arg(long)]
    pub target: Option<String>,
    /// Expected-failures file to use instead of the target's.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Where to write the JSON report (default: STATE_DIR/report-TARGET.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Local directory for tools, logs and journals (default: target/xfstests beside the binary).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Shell command that remounts the target at the mount point (XFSTESTS_MOUNT is set).
    #[arg(long)]
    pub remount_cmd: Option<String>,
    /// Shell command that kills the target's daemon uncleanly (for the crash tests).
    #[arg(long)]
    pub kill_cmd: Option<String>,
    /// Allow dropping the machine's caches between fsx ops (root; affects the whole machine).
    #[arg(long)]
    pub drop_caches: bool,
    /// Time budget of a suite, SUITE=SECONDS (repeatable); defaults: pjdfstest=180 fsx=60
    /// fsstress=60 generic=180.
    #[arg(long, value_parser = parse_budget)]
    pub budget: Vec<(Suite, u64)>,
    /// Base seed of fsx and fsstress (default: from the clock; printed and in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Second user for permission tests, created with useradd if missing.
    #[arg(long, default_value = "tests")]
    pub user: String,
    /// Sleep between steps whose timestamps must differ, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub naptime_ms: u64,
    /// Only run tests whose id (suite/name) contains one of these (repeatable).
    #[arg(long)]
    pub filter: Vec<String>,
    /// fsx: ops per test.
    #[arg(long, default_value_t = 20_000)]
    pub fsx_ops: u64,
    /// fsx: largest file size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub fsx_max_size: u64,
    /// fsx: largest single I/O in bytes.
    #[arg(long, default_value_t = 64 << 10)]
    pub fsx_max_len: u64,
    /// fsx: ops between cache drops (all_ops_drop_caches).
    #[arg(long, default_value_t = 200)]
    pub fsx_drop_caches_every: u64,
    /// fsx: ops between remounts (all_ops_remount).
    #[arg(long, default_value_t = 1000)]
    pub fsx_remount_every: u64,
    /// fsstress: worker processes.
    #[arg(long, default_value_t = 4)]
    pub fsstress_procs: usize,
    /// fsstress: seconds the workers run (capped by the suite budget).
    #[arg(long, default_value_t = 10)]
    pub fsstress_seconds: u64,
    /// pjdfstest binary to use instead of installing the pinned version.
    #[arg(long)]
    pub pjdfstest: Option<PathBuf>,
    /// pjdfstest features the target supports.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "posix_fallocate,utimensat,utime_now,rename_ctime"
    )]
    pub pjdfstest_features: Vec<String>,
    /// pjdfstest naptime in seconds (above the target's timestamp granularity).
    #[arg(long, default_value_t = 0.01)]
    pub pjdfstest_naptime: f64,
    /// Also fail the run when a listed expected failure passes.
    #[arg(long)]
    pub strict: bool,
    /// Keep the run's directory on the mount.
    #[arg(long)]
    pub keep: bool,
    /// Print every test, not only failures.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `xfstests fsx`.
#[derive(Debug, Args)]
pub struct FsxArgs {
    /// File to exercise (created or truncated).
    #[arg(long)]
    pub file: PathBuf,
    /// Seed to replay.
    #[arg(long)]
    pub seed: u64,
    /// Number of ops.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Largest file size.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_size: u64,
    /// Largest single I/O.
    #[arg(long, default_value_t = 64 << 10)]
    pub max_len: u64,
    /// Op kinds (default: all), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<OpKind>,
    /// Drop kinds the target lacks instead of failing.
    #[arg(long)]
    pub lenient: bool,
    /// Remount command run every --remount-every ops.
    #[arg(long)]
    pub remount_cmd: Option<String>,
    /// Ops between remounts.
    #[arg(long)]
    pub remount_every: Option<u64>,
    /// Mount point passed to the remount command.
    #[arg(long)]
    pub mount: Option<PathBuf>,
}

/// Hidden child-process subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    /// Runs one unit (a test, or a whole suite for fsstress) and prints result lines.
    Unit {
        /// The run's environment, as JSON written by the runner.
        #[arg(long)]
        env_file: PathBuf,
        /// Suite of the unit.
        #[arg(long)]
        suite: Suite,
        /// Test name within the suite.
        #[arg(long)]
        name: String,
        /// Time the unit may use, in milliseconds.
        #[arg(long)]
        budget_ms: u64,
    },
    /// An fsstress worker.
    Fsstress {
        /// Tree to work in.
        #[arg(long)]
        root: PathBuf,
        /// Worker id.
        #[arg(long)]
        id: u32,
        /// Seed.
        #[arg(long)]
        seed: u64,
        /// Run time.
        #[arg(long)]
        millis: u64,
        /// Journal file (local).
        #[arg(long)]
        journal: PathBuf,
    },
    /// Appends records with O_APPEND.
    Appender {
        /// File.
        #[arg(long)]
        path: PathBuf,
        /// Writer id (0..=9).
        #[arg(long)]
        id: u8,
        /// Records.
        #[arg(long)]
        count: u64,
    },
    /// Reads a file that is being replaced by rename, checking each read.
    RenameReader {
        /// File.
        #[arg(long)]
        path: PathBuf,
        /// Run time.
        #[arg(long)]
        millis: u64,
    },
    /// Runs one syscall and prints OK or the errno name.
    Try {
        /// The syscall.
        #[arg(long)]
        op: TryOp,
        /// Path it acts on.
        #[arg(long)]
        path: PathBuf,
        /// Extra argument (mode, uid:gid, rename target).
        #[arg(long)]
        arg: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn budgets_parse() {
        assert_eq!(parse_budget("fsx=30").unwrap(), (Suite::Fsx, 30));
        assert!(parse_budget("fsx").is_err());
        assert!(parse_budget("nope=3").is_err());
    }
}
