//! The FUSE daemon over dfs. Filled by the dfs/dfuse issue.
//!
//! Dependency rule: depends on `dfs` only.
