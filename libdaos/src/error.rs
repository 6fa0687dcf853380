//! libdaos's errors. Every failure maps to a DER code ([`Error::der`]), so
//! callers (dfs, dfuse, the `daos` CLI) can branch on it or turn it into an
//! errno in one place.

use std::path::PathBuf;

use proto::drpc::DrpcError;
use proto::{DaosError, Der};

/// What a libdaos call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent's socket could not be connected to.
    #[error("daos_agent not reachable at {}: {source}; is daos_agent running? (set DAOS_AGENT_DRPC_DIR if its runtime_dir is not the default)", path.display())]
    AgentUnreachable { path: PathBuf, source: DrpcError },

    /// The agent was reached but the call failed at the dRPC level (it closed the
    /// connection, timed out, or does not know the method).
    #[error("daos_agent at {}: {source}", path.display())]
    Agent { path: PathBuf, source: DrpcError },

    /// The operation failed with a DAOS error code.
    #[error(transparent)]
    Daos(#[from] DaosError),
}

impl Error {
    /// The DER code that best describes the failure.
    pub fn der(&self) -> Der {
        match self {
            Error::AgentUnreachable { .. } => Der::UNREACH,
            Error::Agent { source, .. } => match source {
                DrpcError::Timeout(_) => Der::TIMEDOUT,
                DrpcError::Status(_) => Der::AGENT_INCOMPAT,
                DrpcError::Decode(_) | DrpcError::TooLarge(_) | DrpcError::Sequence { .. } => {
                    Der::PROTO
                }
                _ => Der::UNREACH,
            },
            Error::Daos(e) => e.der,
        }
    }
}
