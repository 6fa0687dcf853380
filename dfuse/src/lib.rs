//! The FUSE daemon over dfs: `dfuse MOUNTPOINT POOL CONT` mounts a POSIX
//! container. [`opts`] turns the command line into [`opts::Settings`],
//! [`daemon::run`] connects, mounts and serves, [`fs`] answers the kernel's
//! requests with dfs calls, [`inode`] keeps the kernel's inode numbers,
//! [`task`] runs each request, [`ahead`] fetches directory entries ahead of
//! lookups.
//!
//! Invariants: every request that waits is served on a tokio task (requests
//! never wait for one another); the mount is reported live only after the kernel's
//! handshake; a signal or `fusermount3 -u` ends the daemon with the
//! filesystem unmounted.
//!
//! Dependency rule: depends on `dfs` (and `libdaos` to connect).

pub mod ahead;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod inode;
pub mod opts;
pub mod task;

pub use daemon::{check_mountpoint, connect, run};
pub use error::Error;
pub use fs::{Core, DfuseFs};
pub use opts::{resolve, Caching, Cli, Settings};
