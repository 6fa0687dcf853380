//! Answers from requests sent to every host: which hosts answered, which
//! failed, and DAOS's `Errors:` table for the failures. A command that asked
//! every host fails (non-zero exit) when any host failed, after printing what
//! the others said.

use proto::{DaosError, Der};
use serde_json::{json, Value};

use crate::control::HostResult;
use crate::error::Error;
use crate::hostlist;
use crate::table::{group_rows, Table};

/// Per-host answers split into successes and failures, hosts named for print.
#[derive(Debug)]
pub struct HostAnswers<R> {
    pub ok: Vec<(String, R)>,
    pub errors: Vec<(String, DaosError)>,
}

impl<R> HostAnswers<R> {
    pub fn new(results: Vec<HostResult<R>>) -> Self {
        let addrs: Vec<String> = results.iter().map(|r| r.addr.clone()).collect();
        let names = hostlist::display_names(&addrs);
        let mut answers = HostAnswers {
            ok: Vec::new(),
            errors: Vec::new(),
        };
        for (name, r) in names.into_iter().zip(results) {
            match r.result {
                Ok(v) => answers.ok.push((name, v)),
                Err(e) => answers.errors.push((name, e)),
            }
        }
        answers
    }

    /// `Errors:` and a table of hosts and what went wrong, or nothing.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return String::new();
        }
        let rows = self
            .errors
            .iter()
            .map(|(host, e)| (host.clone(), vec![e.to_string()]))
            .collect();
        let mut t = Table::new(&["Hosts", "Error"]);
        for (hosts, mut cells) in group_rows(rows) {
            cells.insert(0, hosts);
            t.row(cells);
        }
        format!("Errors:\n{}", t.render_indented("  "))
    }

    /// The failures as JSON: `[{"host", "error", "status"}]`.
    pub fn errors_json(&self) -> Value {
        Value::Array(
            self.errors
                .iter()
                .map(|(host, e)| json!({"host": host, "error": e.to_string(), "status": e.der.code()}))
                .collect(),
        )
    }

    /// The failure to report when some hosts failed: the first failure's DER
    /// code, and how many of how many hosts failed.
    pub fn failure(&self, what: &str) -> Option<Error> {
        let (_, first) = self.errors.first()?;
        let total = self.ok.len() + self.errors.len();
        let n = self.errors.len();
        let msg = format!(
            "{n} of {total} {} failed (first: {})",
            if total == 1 { "host" } else { "hosts" },
            first.msg
        );
        Some(Error::daos(what, DaosError::new(first.der, msg)))
    }
}

/// A failure counted over engines or ranks rather than hosts.
pub fn count_failure(what: &str, n: usize, noun: &str) -> Option<Error> {
    (n > 0).then(|| {
        let plural = if n == 1 { "" } else { "s" };
        Error::daos(
            what,
            DaosError::new(Der::MISC, format!("{n} {noun}{plural} failed")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> HostAnswers<u32> {
        HostAnswers::new(vec![
            HostResult {
                addr: "a:10001".into(),
                result: Ok(1),
            },
            HostResult {
                addr: "b:10001".into(),
                result: Err(DaosError::new(Der::UNREACH, "b:10001: refused")),
            },
        ])
    }

    #[test]
    fn splits_and_reports() {
        let a = answers();
        assert_eq!(a.ok, vec![("a".to_string(), 1)]);
        let text = a.errors_text();
        assert!(text.starts_with("Errors:\n  Hosts Error\n"), "{text}");
        assert!(
            text.contains("  b     b:10001: refused: DER_UNREACH"),
            "{text}"
        );
        assert_eq!(a.errors_json()[0]["status"], -1006);
        let f = a.failure("storage scan failed").unwrap();
        assert_eq!(f.der(), Der::UNREACH);
        assert!(f.to_string().contains("1 of 2 hosts failed"), "{f}");
    }

    #[test]
    fn counts() {
        assert!(count_failure("x", 0, "rank").is_none());
        let e = count_failure("system stop failed", 2, "rank").unwrap();
        assert!(e
            .to_string()
            .starts_with("system stop failed: 2 ranks failed"));
    }
}
