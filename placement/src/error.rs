//! Errors of the placement crate. Each message names the thing and the value, and
//! [`PlacementError::to_daos`] gives the DER code it carries over the wire.

use proto::{DaosError, Der};

use crate::pool_map::{Rank, TargetId};

/// What went wrong in pool map handling, object class lookup or placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// A class name DAOS does not define.
    #[error("object class \"{name}\" does not exist; valid classes include {examples}")]
    UnknownClass { name: String, examples: String },

    /// A numeric class id (`OBJ_CLASS_DEF(redun, grp_nr)`) that names no class.
    #[error("object class id {id:#x} is not a known class (redundancy {redun}, {groups} groups)")]
    UnknownClassId { id: u32, redun: u32, groups: u32 },

    /// An object id whose DAOS bits do not decode, or text that is not an oid.
    #[error("object id {oid}: {reason}")]
    InvalidOid { oid: String, reason: String },

    /// A pool map that breaks an invariant (duplicate rank, sparse targets,
    /// unknown state, ...). The message names the rank or target.
    #[error("invalid pool map: {0}")]
    InvalidMap(String),

    /// A state name that is not one of DAOS's.
    #[error("state \"{0}\" is unknown; valid states: UP, UPIN, DOWN, DOWNOUT, NEW, DRAIN")]
    UnknownState(String),

    /// A rank the pool map does not hold.
    #[error("rank {0} is not in the pool map")]
    UnknownRank(Rank),

    /// A target the pool map does not hold.
    #[error("{0} is not in the pool map")]
    UnknownTarget(TargetId),

    /// The class needs more targets in one redundancy group than the map has.
    #[error(
        "object class {class} needs {needed} targets per redundancy group, the pool map \
         (version {version}) has {targets} targets in the layout ({serving} serving) on {ranks} ranks"
    )]
    NotEnoughTargets {
        class: String,
        needed: u32,
        version: u32,
        targets: usize,
        serving: usize,
        ranks: usize,
    },
}

impl PlacementError {
    /// The DER code this error crosses the wire with: `DER_NONEXIST` for a rank or
    /// target the map lacks, `DER_INVAL` for everything else (bad names, ids,
    /// maps, and classes the pool is too small for, as DAOS answers them).
    pub fn der(&self) -> Der {
        match self {
            PlacementError::UnknownRank(_) | PlacementError::UnknownTarget(_) => Der::NONEXIST,
            _ => Der::INVAL,
        }
    }

    /// Converts to the error that crosses a process boundary.
    pub fn to_daos(&self) -> DaosError {
        DaosError::new(self.der(), self.to_string())
    }
}

impl From<PlacementError> for DaosError {
    fn from(e: PlacementError) -> Self {
        e.to_daos()
    }
}
