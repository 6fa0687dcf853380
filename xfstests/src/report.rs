//! Test outcomes, per-suite tallies and the JSON run report.
//!
//! Invariant: a suite's counts are always derived from its list of results (never kept apart),
//! so the summary line, the JSON report and the expected-failures comparison cannot disagree.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::expected::Comparison;

/// What one test did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// The behaviour held.
    Pass,
    /// The behaviour did not hold; the message says what was seen.
    Fail {
        /// What went wrong, with the values seen.
        message: String,
    },
    /// The test could not run here; the reason says what is missing.
    Skip {
        /// Why the test did not run (a missing hook, feature, privilege or time).
        reason: String,
    },
}

impl Outcome {
    /// A failure with a message.
    pub fn fail(message: impl Into<String>) -> Outcome {
        Outcome::Fail {
            message: message.into(),
        }
    }

    /// A skip with a reason.
    pub fn skip(reason: impl Into<String>) -> Outcome {
        Outcome::Skip {
            reason: reason.into(),
        }
    }

    /// Whether this is a failure.
    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => write!(f, "ok"),
            Outcome::Fail { message } => write!(f, "FAILED: {message}"),
            Outcome::Skip { reason } => write!(f, "skipped: {reason}"),
        }
    }
}

/// One test's result. `id` is `suite/name`, the key used by expected-failures files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    /// `suite/name`, e.g. `generic/unlink_while_open`.
    pub id: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time the test took.
    pub duration_ms: u64,
    /// Extra facts worth keeping (op counts, probed limits), empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

impl TestResult {
    /// A result for `suite/name`.
    pub fn new(suite: &str, name: &str, outcome: Outcome, took: Duration) -> TestResult {
        TestResult {
            id: format!("{suite}/{name}"),
            outcome,
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            notes: String::new(),
        }
    }

    /// Adds notes to the result.
    pub fn with_notes(mut self, notes: impl Into<String>) -> TestResult {
        self.notes = notes.into();
        self
    }
}

/// One suite's results and tallies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Suite name (`pjdfstest`, `fsx`, `fsstress`, `generic`).
    pub suite: String,
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed, expected or not.
    pub failed: usize,
    /// Tests that did not run.
    pub skipped: usize,
    /// Wall time of the suite.
    pub duration_s: f64,
    /// Every test's result, in run order.
    pub tests: Vec<TestResult>,
}

impl SuiteReport {
    /// Tallies a suite's results.
    pub fn new(suite: &str, tests: Vec<TestResult>, took: Duration) -> SuiteReport {
        let count = |f: fn(&Outcome) -> bool| tests.iter().filter(|t| f(&t.outcome)).count();
        SuiteReport {
            suite: suite.to_string(),
            passed: count(|o| matches!(o, Outcome::Pass)),
            failed: count(|o| matches!(o, Outcome::Fail { .. })),
            skipped: count(|o| matches!(o, Outcome::Skip { .. })),
            duration_s: took.as_secs_f64(),
            tests,
        }
    }

    /// The line CI greps for: `SUITE: N passed, M failed, K skipped`.
    pub fn summary_line(&self) -> String {
        format!(
            "{}: {} passed, {} failed, {} skipped",
            self.suite, self.passed, self.failed, self.skipped
        )
    }
}

/// The whole run, as written to the JSON report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// Target name (selects the expected-failures file), empty when none was given.
    pub target: String,
    /// The mounted directory under test.
    pub mount: String,
    /// The mount's filesystem type, from statfs.
    pub fs_type: String,
    /// Base seed of the randomized suites (replays fsx and fsstress).
    pub seed: u64,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Wall time of the whole run.
    pub duration_s: f64,
    /// The expected-failures file compared against, if any.
    pub expected_file: Option<String>,
    /// Per-suite results.
    pub suites: Vec<SuiteReport>,
    /// Failures against the expected list.
    pub comparison: Comparison,
}
