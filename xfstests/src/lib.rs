//! POSIX conformance harness run against a live mount. Filled by the xfstests issue.
//!
//! Dependency rule: depends on no crate of the workspace: it only sees a mounted
//! directory, so it can judge any filesystem.
