//! Pool map, object classes and the layout function, shared by libdaos and the
//! engine so both compute the same placement. Filled by the data-plane issue.
//!
//! Dependency rule: depends on `proto` only.
