//! POSIX namespace over a container of type POSIX, laid out as DAOS's libdfs.
//! Filled by the dfs/dfuse issue.
//!
//! Dependency rule: depends on `libdaos` (and through it `proto`, `cart`).
