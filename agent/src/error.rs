//! The agent's errors: what stops it from starting or serving.
//!
//! Per-request failures never become an [`Error`]: they travel back to the
//! client as a DER code in the response's `status` field.

use std::path::PathBuf;

/// Why the agent could not load its configuration, start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is missing, does not parse or has a bad value.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// A file or directory the agent needs could not be read, written or created.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The credential signing key exists but cannot be used.
    #[error("credential_key {}: {msg}", path.display())]
    Key { path: PathBuf, msg: String },

    /// TLS material for the management channel is missing or unusable (the
    /// message names the key and the path).
    #[error("{0} (set transport_config.allow_insecure: true to run without TLS)")]
    Tls(#[source] proto::tls::TlsError),

    /// Another agent already answers on the socket.
    #[error("another daos_agent is already listening on {}; stop it or set a different runtime_dir", path.display())]
    AlreadyRunning { path: PathBuf },

    /// The host name could not be read.
    #[error("cannot read this host's name: {0}")]
    Hostname(nix::Error),

    /// A blocking setup task panicked or was cancelled.
    #[error("agent setup task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
