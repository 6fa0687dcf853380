//! libdaos's errors. Every failure maps to a DER code ([`Error::der`]), so
//! callers (dfs, dfuse, the `daos` CLI) can branch on it or turn it into an
//! errno in one place.

use std::path::PathBuf;

use proto::{DaosError, Der};

/// What a libdaos call can fail with.
///
/// dRPC failures are turned into a [`DaosError`] by `proto`'s mapping
/// (`From<DrpcError> for DaosError`), so libdaos and the servers agree on their
/// DER codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent's socket could not be connected to, or the agent went away
    /// during a call.
    #[error("daos_agent not reachable at {}: {source}; is daos_agent running? (set DAOS_AGENT_DRPC_DIR if its runtime_dir is not the default)", path.display())]
    AgentUnreachable { path: PathBuf, source: DaosError },

    /// The agent was reached but the call failed at the dRPC level (it timed
    /// out, answered out of sequence, or does not know the method).
    #[error("daos_agent at {}: {source}", path.display())]
    Agent { path: PathBuf, source: DaosError },

    /// The operation failed with a DAOS error code.
    #[error(transparent)]
    Daos(#[from] DaosError),
}

impl Error {
    /// The DER code that best describes the failure.
    pub fn der(&self) -> Der {
        match self {
            Error::AgentUnreachable { source, .. } | Error::Agent { source, .. } => source.der,
            Error::Daos(e) => e.der,
        }
    }
}
