//! libdaos: the DAOS client library: attach to a system through the local
//! agent, connect to pools, open containers, and do object I/O (dkey/akey
//! values, key-value and byte-array objects, transactions) placed on the
//! pool's targets by the same layout function the engines use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), libdaos::Error> {
//! use libdaos::{Daos, PoolFlags};
//! let daos = Daos::connect().await?;
//! let pool = daos.pool_connect("tank", PoolFlags::ReadWrite).await?;
//! let cont = pool.open_container("c1", true).await?;
//! let class = libdaos::ObjectClass::from_name("RP_2G1").map_err(|e| libdaos::Error::Daos(e.to_daos()))?;
//! let oid = cont.alloc_oid(libdaos::ObjectType::KvHashed, &class).await?;
//! let kv = cont.kv(oid)?;
//! kv.put(b"key", bytes::Bytes::from_static(b"value")).await?;
//! # Ok(()) }
//! ```
//!
//! Dependency rule: uses `proto`, `cart` and `placement` only; `dfs` and `dfuse`
//! build on it, never the other way round.

pub mod agent;
pub mod cli;
mod client;
mod cont;
pub mod error;
mod obj;
mod pool;
mod tx;

pub use client::{Daos, DaosOpts, DEFAULT_SYS};
pub use cont::Container;
pub use error::Error;
pub use obj::{
    cond, Array, ArrayStat, FetchIod, Fetched, Iod, Kv, Object, Recx, Value, EPOCH_LATEST,
};
pub use placement::{ObjectClass, ObjectId, ObjectType};
pub use pool::{Pool, PoolFlags, PoolInfo};
pub use proto::pool::{ContInfo, Snapshot, TierSpace};
pub use tx::Tx;
