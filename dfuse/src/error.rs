//! Why dfuse could not start. Operations on a live mount fail with a
//! `dfs::Errno` instead (the errno the kernel passes on).

use std::path::PathBuf;

/// A startup failure; the message is the one line dfuse prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The command line, `-o` options or caching attributes are wrong.
    #[error("{0}")]
    Usage(String),
    /// The mount point is missing, not a directory or not empty.
    #[error("mount point {}: {reason}", path.display())]
    MountPoint { path: PathBuf, reason: String },
    /// The agent, pool or container could not be reached, or the namespace
    /// could not be mounted.
    #[error("{0}")]
    Connect(String),
    /// The kernel mount or the FUSE session failed.
    #[error("{0}")]
    Fuse(String),
}

pub type Result<T> = std::result::Result<T, Error>;
