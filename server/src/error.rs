//! Server errors. Every failure a client sees is a [`DaosError`] (DER code and
//! message); this module only adds constructors used throughout the crate.

use proto::{DaosError, Der};

pub type Result<T> = std::result::Result<T, DaosError>;

pub fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DaosError {
    DaosError::new(Der::IO, format!("{what}: {e}"))
}

pub fn inval(msg: impl Into<String>) -> DaosError {
    DaosError::new(Der::INVAL, msg)
}
