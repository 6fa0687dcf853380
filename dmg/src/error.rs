//! The one error type of dmg. Every failure a person sees goes through it, and
//! each maps to the DER code that `-j` reports as `status`.

use std::path::PathBuf;

use proto::{DaosError, Der};

/// What went wrong, named with the thing and the value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value dmg cannot use.
    #[error("{0}")]
    Usage(String),

    /// A daos_control.yml that cannot be read or is not valid.
    #[error("config {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    /// A certificate or key named by `transport_config` that cannot be used
    /// (the message names the key and the path).
    #[error(
        "{0} (set transport_config.allow_insecure: true or pass -i for an insecure connection)"
    )]
    Tls(#[source] proto::tls::TlsError),

    /// A request the servers refused or could not answer.
    #[error("{what}: {source}")]
    Daos {
        what: String,
        #[source]
        source: DaosError,
    },

    /// The async runtime could not be started.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// Wraps a DaosError with what was being done, e.g. `pool create failed`.
    pub(crate) fn daos(what: impl Into<String>, source: DaosError) -> Self {
        Error::Daos {
            what: what.into(),
            source,
        }
    }

    /// The DER code reported as the JSON `status`.
    pub fn der(&self) -> Der {
        match self {
            Error::Usage(_) | Error::Config { .. } | Error::Tls(_) => Der::INVAL,
            Error::Daos { source, .. } => source.der,
            Error::Runtime(_) => Der::MISC,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_what_failed_and_the_der() {
        let e = Error::daos(
            "pool create failed",
            DaosError::new(Der::EXIST, "pool \"tank\" exists"),
        );
        assert_eq!(
            e.to_string(),
            "pool create failed: pool \"tank\" exists: DER_EXIST(-1004): Entity already exists"
        );
        assert_eq!(e.der().code(), -1004);
        assert_eq!(Error::Usage("x".into()).der(), Der::INVAL);
    }
}
