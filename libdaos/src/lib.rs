//! libdaos: the DAOS client library.
//!
//! Dependency rule: uses `proto`, `cart` and `placement` only; `dfs` and `dfuse`
//! build on it, never the other way round.

pub mod agent;
pub mod error;

pub use error::Error;
