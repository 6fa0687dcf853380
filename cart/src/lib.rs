//! The data-plane RPC transport (CaRT) between libdaos and daos_engine, and
//! between engines. It is filled by the data-plane issue; until then engines
//! report a TCP URI that this crate will serve.
//!
//! Dependency rule: depends on `proto` only.
