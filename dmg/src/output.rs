//! What a command hands back and how it reaches the person or the script.
//!
//! A command produces both renderings of its answer, the text table and the
//! JSON object, and optionally a failure that still comes with a partial answer
//! (some hosts failed). `-j` selects DAOS's envelope
//! `{"response": ..., "error": ..., "status": ...}`; without it, text goes to
//! stdout and a failure to stderr as one `ERROR: dmg: ...` line.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

/// A command's answer in both renderings, and a failure if part of it failed.
#[derive(Debug)]
pub struct Outcome {
    pub text: String,
    pub json: Value,
    pub failure: Option<Error>,
}

impl Outcome {
    pub fn ok(text: String, json: Value) -> Self {
        Outcome {
            text,
            json,
            failure: None,
        }
    }

    pub fn with_failure(mut self, failure: Option<Error>) -> Self {
        self.failure = failure;
        self
    }
}

/// DAOS's JSON envelope; `status` is 0 or a negative DER code.
#[derive(Debug, Serialize)]
pub struct Envelope {
    pub response: Value,
    pub error: Option<String>,
    pub status: i32,
}

impl Envelope {
    pub fn new(result: &Result<Outcome, Error>) -> Self {
        match result {
            Ok(o) => Envelope {
                response: o.json.clone(),
                error: o.failure.as_ref().map(ToString::to_string),
                status: o.failure.as_ref().map_or(0, |f| f.der().code()),
            },
            Err(e) => Envelope {
                response: Value::Null,
                error: Some(e.to_string()),
                status: e.der().code(),
            },
        }
    }

    pub fn render(&self) -> String {
        // Serialising a tree of serde_json values cannot fail; keep a valid
        // document even so.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            let msg = Value::String(e.to_string());
            format!(r#"{{"response": null, "error": {msg}, "status": -1025}}"#)
        })
    }
}

/// The ERROR line printed on stderr without `-j`, always a single line.
pub fn error_line(e: &Error) -> String {
    format!("ERROR: dmg: {e}").replace(['\r', '\n'], " ")
}

/// Writes to stdout. A reader that went away (`dmg ... | head`) is not an
/// error worth reporting: the output has nowhere to go.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints a result and returns whether it succeeded.
pub fn emit(result: Result<Outcome, Error>, json: bool) -> bool {
    if json {
        let env = Envelope::new(&result);
        print_stdout(&format!("{}\n", env.render()));
        return env.status == 0;
    }
    let failure = match result {
        Ok(o) => {
            print_stdout(&o.text);
            o.failure
        }
        Err(e) => Some(e),
    };
    match failure {
        Some(f) => {
            eprintln!("{}", error_line(&f));
            false
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{DaosError, Der};
    use serde_json::json;

    #[test]
    fn envelopes() {
        let ok = Envelope::new(&Ok(Outcome::ok(String::new(), json!({"a": 1}))));
        let v: Value = serde_json::from_str(&ok.render()).unwrap();
        assert_eq!(v, json!({"response": {"a": 1}, "error": null, "status": 0}));

        let err = Error::daos(
            "system query failed",
            DaosError::new(Der::UNREACH, "unable to reach any of [h:1]"),
        );
        let v: Value = serde_json::from_str(&Envelope::new(&Err(err)).render()).unwrap();
        assert_eq!(v["response"], Value::Null);
        assert_eq!(v["status"], -1006);
        assert!(v["error"].as_str().unwrap().contains("DER_UNREACH"));

        let partial = Outcome::ok(String::new(), json!({"hosts": []})).with_failure(Some(
            Error::daos("storage scan failed", DaosError::new(Der::MISC, "1 host")),
        ));
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(partial)).render()).unwrap();
        assert_eq!(v["response"], json!({"hosts": []}));
        assert_eq!(v["status"], -1025);
    }

    #[test]
    fn error_line_is_one_line() {
        let e = Error::Usage("pool create: bad".into());
        assert_eq!(error_line(&e), "ERROR: dmg: pool create: bad");
    }
}
