//! Pool map, object classes, object ids and the layout function, shared by libdaos
//! and the engine so both compute the same placement (DAOS's `src/placement` and
//! `daos_obj_class.h`).
//!
//! The client computes where an object's shards live from the pool map, with no
//! lookup; the engine uses the same function to check requests and to find
//! replicas and rebuild targets. Everything here is deterministic across
//! processes, hosts and versions: fixed hashes ([`hash`]) and golden tests, no
//! randomly seeded `std` hashers.
//!
//! - [`pool_map`]: [`PoolMap`], ranks, targets, [`CompState`], to/from
//!   `proto::pool::PoolMap`.
//! - [`class`]: [`ObjectClass`] by DAOS name (`S1`, `SX`, `RP_3G1`, `EC_4P2GX`,
//!   case-insensitive) and DAOS numeric id.
//! - [`oid`]: [`ObjectId`] with DAOS's bit layout, [`ObjectType`].
//! - [`layout`](mod@layout): [`layout()`] and [`dkey_group`]; its module doc states
//!   the placement rules.
//!
//! Dependency rule: depends on `proto` only.

pub mod class;
pub mod error;
pub mod hash;
pub mod layout;
pub mod oid;
pub mod pool_map;

pub use class::{Groups, ObjectClass, Redundancy};
pub use error::PlacementError;
pub use layout::{dkey_group, dkey_hash, group_of_hash, layout, obj_dkey_hash, Layout};
pub use oid::{ObjectId, ObjectType};
pub use pool_map::{CompState, PoolMap, Rank, RankEntry, TargetEntry, TargetId, TgtIdx};
