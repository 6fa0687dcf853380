//! Engine errors. Anything that reaches a peer becomes a [`DaosError`] with a DER code.

use proto::{DaosError, Der};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Daos(#[from] DaosError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A read asked to stay in memory needs the bulk device (see
    /// [`crate::vos::Reach`]); its caller retries on the target's thread.
    #[error("the read needs the bulk device")]
    NeedsDevice,
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn to_daos(&self) -> DaosError {
        match self {
            Error::Daos(d) => d.clone(),
            Error::Io { what, source } if source.raw_os_error() == Some(libc::ENOSPC) => {
                DaosError::new(Der::NOSPACE, format!("{what}: {source}"))
            }
            Error::Io { what, source } => DaosError::new(Der::IO, format!("{what}: {source}")),
            Error::NeedsDevice => DaosError::new(Der::AGAIN, self.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
