//! Expected-failures files (`xfstests/expected/TARGET.txt`) and the comparison of a run with one.
//!
//! Format: one entry a line, `ID REASON`, where `ID` is a test id (`suite/name`) or a prefix
//! ending in `*` (`pjdfstest/chmod::*`), and `REASON` is the one-line explanation, which is
//! required. `#` starts a comment line; blank lines are ignored. A reason that starts with
//! `sometimes:` marks an intermittent failure: its passes are not reported as newly passing.
//!
//! Invariant: a failure is "expected" only when an entry matches its id; every entry has a
//! reason; an entry whose matched tests all ran and passed is reported as newly passing, so the
//! lists shrink as targets improve.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::report::{Outcome, TestResult};

/// One line of an expected-failures file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Test id, or a prefix ending in `*`.
    pub pattern: String,
    /// Why the test fails on this target.
    pub reason: String,
    /// Line number in the file, for messages.
    pub line: usize,
}

impl Entry {
    /// Whether this entry covers test `id`.
    pub fn matches(&self, id: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => self.pattern == id,
        }
    }

    /// Whether the entry is an intermittent failure (reason starts with `sometimes:`).
    pub fn intermittent(&self) -> bool {
        self.reason.starts_with("sometimes:")
    }

    /// The suite the entry belongs to (the part before the first `/`).
    pub fn suite(&self) -> &str {
        self.pattern.split('/').next().unwrap_or("")
    }
}

/// A parsed expected-failures file.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Entries in file order.
    pub entries: Vec<Entry>,
}

impl Expected {
    /// Parses the file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Expected> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, reason) = match line.split_once(char::is_whitespace) {
                Some((p, r)) => (p.trim(), r.trim()),
                None => (line, ""),
            };
            if reason.is_empty() {
                bail!(
                    "{source}:{}: entry {pattern:?} has no reason: write `ID one-line reason`",
                    i + 1
                );
            }
            if !pattern.contains('/') {
                bail!(
                    "{source}:{}: {pattern:?} is not a test id: ids are `suite/name`",
                    i + 1
                );
            }
            if let Some(prev) = entries.iter().find(|e| e.pattern == pattern) {
                bail!(
                    "{source}:{}: {pattern:?} is already listed on line {}",
                    i + 1,
                    prev.line
                );
            }
            entries.push(Entry {
                pattern: pattern.to_string(),
                reason: reason.to_string(),
                line: i + 1,
            });
        }
        Ok(Expected { entries })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Expected> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading expected-failures file {}", path.display()))?;
        Expected::parse(&text, &path.display().to_string())
    }

    /// The first entry covering `id`.
    pub fn find(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matches(id))
    }

    /// Compares a run's results with the list. `suites_run` names the suites that ran, so
    /// entries of suites not selected are not reported as stale.
    pub fn compare<'a>(
        &self,
        results: impl IntoIterator<Item = &'a TestResult>,
        suites_run: &[&str],
    ) -> Comparison {
        let results: Vec<&TestResult> = results.into_iter().collect();
        let mut cmp = Comparison::default();
        for r in &results {
            if let Outcome::Fail { message } = &r.outcome {
                match self.find(&r.id) {
                    Some(e) => cmp.expected_failures.push(ExpectedFailure {
                        id: r.id.clone(),
                        reason: e.reason.clone(),
                    }),
                    None => cmp.new_failures.push(NewFailure {
                        id: r.id.clone(),
                        message: message.clone(),
                    }),
                }
            }
        }
        for e in &self.entries {
            if !suites_run.contains(&e.suite()) {
                continue;
            }
            let ran: Vec<&&TestResult> = results
                .iter()
                .filter(|r| e.matches(&r.id) && !matches!(r.outcome, Outcome::Skip { .. }))
                .collect();
            if ran.is_empty() {
                cmp.not_run.push(e.pattern.clone());
            } else if !e.intermittent() && ran.iter().all(|r| r.outcome == Outcome::Pass) {
                cmp.newly_passing.push(ExpectedFailure {
                    id: e.pattern.clone(),
                    reason: e.reason.clone(),
                });
            }
        }
        // A pattern entry may shadow an exact one: report each id once.
        let mut seen = BTreeSet::new();
        cmp.expected_failures.retain(|f| seen.insert(f.id.clone()));
        cmp
    }
}

/// A failure no entry covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFailure {
    /// Test id.
    pub id: String,
    /// The test's failure message.
    pub message: String,
}

/// A failure the list covers, or a listed entry that passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedFailure {
    /// Test id (or the entry's pattern, for newly passing entries).
    pub id: String,
    /// The list's reason.
    pub reason: String,
}

/// The run measured against an expected-failures list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// Failures not in the list: these fail the run.
    pub new_failures: Vec<NewFailure>,
    /// Failures the list explains.
    pub expected_failures: Vec<ExpectedFailure>,
    /// Entries whose tests all ran and passed: remove them from the list.
    pub newly_passing: Vec<ExpectedFailure>,
    /// Entries of suites that ran whose tests did not run (skipped or absent).
    pub not_run: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn res(id: &str, outcome: Outcome) -> TestResult {
        let (suite, name) = id.split_once('/').unwrap();
        TestResult::new(suite, name, outcome, Duration::ZERO)
    }

    #[test]
    fn parses_entries_comments_and_patterns() {
        let e = Expected::parse(
            "# header\n\ngeneric/a  reason a\npjdfstest/chmod::*\tall chmod\n",
            "t",
        )
        .unwrap();
        assert_eq!(e.entries.len(), 2);
        assert_eq!(e.entries[0].reason, "reason a");
        assert_eq!(e.entries[1].line, 4);
        assert!(e.find("pjdfstest/chmod::x::y").is_some());
        assert!(e.find("pjdfstest/chown::x").is_none());
        assert!(e.find("generic/ab").is_none());
    }

    #[test]
    fn rejects_entries_without_reason_or_suite_or_twice() {
        assert!(Expected::parse("generic/a\n", "t").is_err());
        assert!(Expected::parse("nosuite reason\n", "t").is_err());
        assert!(Expected::parse("generic/a r\ngeneric/a r\n", "t").is_err());
    }

    #[test]
    fn compare_sorts_failures_and_finds_newly_passing() {
        let e = Expected::parse(
            "generic/known broken\ngeneric/fixed was broken\nfsx/absent gone\npjdfstest/x old\n\
             fsx/other sometimes: flaky here\n",
            "t",
        )
        .unwrap();
        let results = vec![
            res("generic/known", Outcome::fail("boom")),
            res("generic/fixed", Outcome::Pass),
            res("generic/new", Outcome::fail("bad")),
            res("generic/skip", Outcome::skip("no hook")),
            res("fsx/other", Outcome::Pass),
        ];
        let c = e.compare(&results, &["generic", "fsx"]);
        assert_eq!(c.new_failures.len(), 1);
        assert_eq!(c.new_failures[0].id, "generic/new");
        assert_eq!(c.expected_failures[0].id, "generic/known");
        // fsx/other passed, but its entry is intermittent: not newly passing.
        assert_eq!(c.newly_passing.len(), 1, "{:?}", c.newly_passing);
        assert_eq!(c.newly_passing[0].id, "generic/fixed");
        assert_eq!(c.not_run, vec!["fsx/absent".to_string()]);
    }
}
