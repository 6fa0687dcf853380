//! Object classes: DAOS's predefined classes with explicit layout (`daos_obj_class.h`),
//! by name and by numeric id.
//!
//! Invariant: an [`ObjectClass`] value is always one of the classes DAOS names
//! (`S1`..`SX`, `RP_<n>G<g>`, `EC_<k>P<p>G<g>`); [`ObjectClass::from_name`] and
//! [`ObjectClass::from_id`] refuse anything else, so `name()` and `id()` always
//! round-trip. Ids follow DAOS: `OBJ_CLASS_DEF(redun, grp_nr) = redun << 24 |
//! grp_nr`, with DAOS's `enum daos_obj_redun` numbers and `grp_nr = 0xFFFF`
//! (`MAX_NUM_GROUPS`) for the `X` ("as many groups as the pool holds") classes.
//!
//! Not carried over from DAOS: the size-hint classes (`OC_TINY`, `OC_SMALL`,
//! `OC_RP_LARGE`, ... ids 50-103, which DAOS resolves to explicit classes
//! itself) and per-container registered classes.

use std::fmt;
use std::str::FromStr;

use crate::error::PlacementError;

/// `OC_REDUN_SHIFT`: the redundancy code's position in a class id.
pub const OC_REDUN_SHIFT: u32 = 24;
/// `MAX_NUM_GROUPS`: the group count DAOS encodes for `X` classes.
pub const MAX_NUM_GROUPS: u32 = (1 << 16) - 1;

/// How a redundancy group protects data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Redundancy {
    /// One shard per group, no protection (DAOS `OR_RP_1`, the `S` classes).
    None,
    /// `replicas`-way replication (`RP_<replicas>`), `replicas >= 2`.
    Rp { replicas: u32 },
    /// Reed-Solomon erasure code with `data` data cells and `parity` parity cells.
    Ec { data: u32, parity: u32 },
}

/// How many redundancy groups an object of the class has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Groups {
    /// Exactly this many (capped by what the pool can hold; see `layout`).
    Fixed(u32),
    /// As many as the pool's targets hold (the `X` classes).
    Max,
}

/// Group counts DAOS defines for `S`, `RP_2`..`RP_6` and every EC class.
const STD_GROUPS: [u32; 8] = [1, 2, 4, 6, 8, 12, 16, 32];
/// Replica counts with the full set of group counts.
const RP_WITH_GROUPS: [u32; 5] = [2, 3, 4, 5, 6];
/// Replica counts DAOS defines only with one group (what `OC_RP_XSF` maps to).
const RP_G1_ONLY: [u32; 7] = [12, 16, 24, 32, 48, 64, 128];
/// Replica counts of `OR_RP_2 = 8` .. `OR_RP_128 = 20`, in code order.
const RP_CODES: [u32; 13] = [2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 128];
/// EC layouts DAOS defines, `(data, parity)`, in `daos_obj_redun` order.
const EC_LAYOUTS: [(u32, u32); 8] = [
    (2, 1),
    (2, 2),
    (4, 1),
    (4, 2),
    (8, 1),
    (8, 2),
    (16, 1),
    (16, 2),
];

impl Redundancy {
    /// DAOS's `enum daos_obj_redun` number: `OR_RP_1 = 1`, `OR_RP_2 = 8` ..
    /// `OR_RP_128 = 20`, `OR_RS_2P1 = 32` .. `OR_RS_16P2 = 39`.
    pub fn code(self) -> Option<u32> {
        match self {
            Redundancy::None => Some(1),
            Redundancy::Rp { replicas } => RP_CODES
                .iter()
                .position(|&n| n == replicas)
                .map(|i| 8 + i as u32),
            Redundancy::Ec { data, parity } => EC_LAYOUTS
                .iter()
                .position(|&l| l == (data, parity))
                .map(|i| 32 + i as u32),
        }
    }

    /// The inverse of [`Redundancy::code`].
    pub fn from_code(code: u32) -> Option<Redundancy> {
        match code {
            1 => Some(Redundancy::None),
            8..=20 => RP_CODES
                .get((code - 8) as usize)
                .map(|&replicas| Redundancy::Rp { replicas }),
            32..=39 => EC_LAYOUTS
                .get((code - 32) as usize)
                .map(|&(data, parity)| Redundancy::Ec { data, parity }),
            _ => None,
        }
    }

    /// Shards per redundancy group: 1, the replica count, or data + parity.
    pub fn group_size(self) -> u32 {
        match self {
            Redundancy::None => 1,
            Redundancy::Rp { replicas } => replicas,
            Redundancy::Ec { data, parity } => data + parity,
        }
    }
}

/// A DAOS object class. See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectClass {
    redundancy: Redundancy,
    groups: Groups,
}

fn defined(redundancy: Redundancy, groups: Groups) -> bool {
    let std_groups = match groups {
        Groups::Max => true,
        Groups::Fixed(n) => STD_GROUPS.contains(&n),
    };
    match redundancy {
        Redundancy::None => std_groups,
        Redundancy::Rp { replicas } if RP_WITH_GROUPS.contains(&replicas) => std_groups,
        Redundancy::Rp { replicas } if RP_G1_ONLY.contains(&replicas) => groups == Groups::Fixed(1),
        Redundancy::Rp { .. } => false,
        Redundancy::Ec { data, parity } => EC_LAYOUTS.contains(&(data, parity)) && std_groups,
    }
}

impl ObjectClass {
    /// The class with this redundancy and group count, if DAOS defines it.
    pub fn new(redundancy: Redundancy, groups: Groups) -> Result<ObjectClass, PlacementError> {
        let oc = ObjectClass { redundancy, groups };
        if defined(redundancy, groups) {
            Ok(oc)
        } else {
            Err(PlacementError::UnknownClass {
                name: oc.name(),
                examples: EXAMPLES.to_string(),
            })
        }
    }

    /// `S1`: one shard.
    pub const S1: ObjectClass = ObjectClass {
        redundancy: Redundancy::None,
        groups: Groups::Fixed(1),
    };
    /// `SX`: one shard on every target.
    pub const SX: ObjectClass = ObjectClass {
        redundancy: Redundancy::None,
        groups: Groups::Max,
    };
    /// `RP_2G1`: two replicas, one group.
    pub const RP_2G1: ObjectClass = ObjectClass {
        redundancy: Redundancy::Rp { replicas: 2 },
        groups: Groups::Fixed(1),
    };
    /// `RP_3G1`: three replicas, one group.
    pub const RP_3G1: ObjectClass = ObjectClass {
        redundancy: Redundancy::Rp { replicas: 3 },
        groups: Groups::Fixed(1),
    };

    /// Every class DAOS defines with explicit layout, `S` first, then `RP`, then `EC`.
    pub fn all() -> Vec<ObjectClass> {
        let groups: Vec<Groups> = STD_GROUPS
            .iter()
            .map(|&n| Groups::Fixed(n))
            .chain([Groups::Max])
            .collect();
        let mut out = Vec::new();
        let mut push_all = |redundancy: Redundancy| {
            for &g in &groups {
                out.push(ObjectClass {
                    redundancy,
                    groups: g,
                });
            }
        };
        push_all(Redundancy::None);
        for replicas in RP_WITH_GROUPS {
            push_all(Redundancy::Rp { replicas });
        }
        for (data, parity) in EC_LAYOUTS {
            push_all(Redundancy::Ec { data, parity });
        }
        for replicas in RP_G1_ONLY {
            out.push(ObjectClass {
                redundancy: Redundancy::Rp { replicas },
                groups: Groups::Fixed(1),
            });
        }
        out
    }

    /// Looks a class up by DAOS's name, case-insensitively (`sx`, `rp_3g1`); an
    /// `OC_` prefix is accepted too.
    pub fn from_name(name: &str) -> Result<ObjectClass, PlacementError> {
        let up = name.trim().to_ascii_uppercase();
        let key = up.strip_prefix("OC_").unwrap_or(&up);
        ObjectClass::all()
            .into_iter()
            .find(|c| c.name() == key)
            .ok_or_else(|| PlacementError::UnknownClass {
                name: name.to_string(),
                examples: EXAMPLES.to_string(),
            })
    }

    /// DAOS's name, uppercase: `S1`, `SX`, `RP_2G1`, `RP_3GX`, `EC_4P2G8`.
    pub fn name(&self) -> String {
        let g = match self.groups {
            Groups::Fixed(n) => n.to_string(),
            Groups::Max => "X".to_string(),
        };
        match self.redundancy {
            Redundancy::None => format!("S{g}"),
            Redundancy::Rp { replicas } => format!("RP_{replicas}G{g}"),
            Redundancy::Ec { data, parity } => format!("EC_{data}P{parity}G{g}"),
        }
    }

    /// DAOS's numeric class id, `OBJ_CLASS_DEF(redun, grp_nr)`; e.g. `OC_SX` is
    /// `0x0100ffff` and `OC_RP_2G1` is `0x08000001`.
    pub fn id(&self) -> u32 {
        // Every constructed class has a code (module invariant); 0 is OC_UNKNOWN.
        let redun = self.redundancy.code().unwrap_or(0);
        (redun << OC_REDUN_SHIFT) | self.grp_nr()
    }

    /// The inverse of [`ObjectClass::id`].
    pub fn from_id(id: u32) -> Result<ObjectClass, PlacementError> {
        let redun = id >> OC_REDUN_SHIFT;
        let grp_nr = id & ((1 << OC_REDUN_SHIFT) - 1);
        let unknown = || PlacementError::UnknownClassId {
            id,
            redun,
            groups: grp_nr,
        };
        let redundancy = Redundancy::from_code(redun).ok_or_else(unknown)?;
        let groups = if grp_nr == MAX_NUM_GROUPS {
            Groups::Max
        } else {
            Groups::Fixed(grp_nr)
        };
        if defined(redundancy, groups) {
            Ok(ObjectClass { redundancy, groups })
        } else {
            Err(unknown())
        }
    }

    /// The group count as DAOS encodes it: the fixed count, or `MAX_NUM_GROUPS`.
    pub fn grp_nr(&self) -> u32 {
        match self.groups {
            Groups::Fixed(n) => n,
            Groups::Max => MAX_NUM_GROUPS,
        }
    }

    pub fn redundancy(&self) -> Redundancy {
        self.redundancy
    }

    pub fn groups(&self) -> Groups {
        self.groups
    }

    /// Shards per redundancy group: 1 for `S`, the replica count for `RP`, data +
    /// parity for `EC`. Same as [`ObjectClass::group_size`].
    pub fn replicas(&self) -> u32 {
        self.redundancy.group_size()
    }

    /// Shards per redundancy group.
    pub fn group_size(&self) -> u32 {
        self.redundancy.group_size()
    }

    /// How many shards of a group can be lost without losing data (DAOS's
    /// redundancy factor): replicas - 1, the parity count, or 0.
    pub fn rf(&self) -> u32 {
        match self.redundancy {
            Redundancy::None => 0,
            Redundancy::Rp { replicas } => replicas - 1,
            Redundancy::Ec { parity, .. } => parity,
        }
    }
}

const EXAMPLES: &str =
    "S1, S2, S4, S8, SX, RP_2G1, RP_2GX, RP_3G1, RP_3GX, EC_2P1G1, EC_4P2G1, EC_8P2GX";

impl fmt::Display for ObjectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for ObjectClass {
    type Err = PlacementError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectClass::from_name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIRED: &[&str] = &[
        "S1", "S2", "S4", "S8", "S16", "S32", "SX", "RP_2G1", "RP_2G2", "RP_2G4", "RP_2G8",
        "RP_2GX", "RP_3G1", "RP_3G2", "RP_3GX", "RP_4G1", "EC_2P1G1", "EC_2P1GX", "EC_4P1G1",
        "EC_4P2G1", "EC_4P2GX", "EC_8P2G1", "EC_8P2GX",
    ];

    #[test]
    fn required_names_round_trip_in_any_case() {
        for n in REQUIRED {
            let c = ObjectClass::from_name(n).unwrap();
            assert_eq!(c.name(), *n);
            assert_eq!(ObjectClass::from_name(&n.to_lowercase()).unwrap(), c);
            assert_eq!(ObjectClass::from_id(c.id()).unwrap(), c);
            assert_eq!(n.parse::<ObjectClass>().unwrap().to_string(), *n);
        }
        assert_eq!(ObjectClass::from_name("sx").unwrap(), ObjectClass::SX);
        assert_eq!(
            ObjectClass::from_name("OC_RP_2G1").unwrap(),
            ObjectClass::RP_2G1
        );
        assert_eq!(
            ObjectClass::from_name(" Rp_3g1 ").unwrap(),
            ObjectClass::RP_3G1
        );
    }

    #[test]
    fn every_class_round_trips_and_is_unique() {
        let all = ObjectClass::all();
        assert_eq!(all.len(), 9 + 5 * 9 + 8 * 9 + 7);
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for c in &all {
            assert!(names.insert(c.name()), "{c}");
            assert!(ids.insert(c.id()), "{c}");
            assert_eq!(ObjectClass::from_name(&c.name()).unwrap(), *c);
            assert_eq!(
                ObjectClass::from_name(&c.name().to_lowercase()).unwrap(),
                *c
            );
            assert_eq!(ObjectClass::from_id(c.id()).unwrap(), *c);
            assert_eq!(ObjectClass::new(c.redundancy(), c.groups()).unwrap(), *c);
        }
    }

    /// Ids from DAOS's `daos_obj_class.h`.
    #[test]
    fn daos_ids() {
        let id = |n: &str| ObjectClass::from_name(n).unwrap().id();
        assert_eq!(id("S1"), 0x0100_0001);
        assert_eq!(id("S32"), 0x0100_0020);
        assert_eq!(id("SX"), 0x0100_ffff);
        assert_eq!(id("RP_2G1"), 0x0800_0001);
        assert_eq!(id("RP_2GX"), 0x0800_ffff);
        assert_eq!(id("RP_3G2"), 0x0900_0002);
        assert_eq!(id("RP_4G1"), 0x0a00_0001);
        assert_eq!(id("RP_6G32"), 0x0c00_0020);
        assert_eq!(id("RP_12G1"), 0x0e00_0001);
        assert_eq!(id("RP_128G1"), 0x1400_0001);
        assert_eq!(id("EC_2P1G1"), 0x2000_0001);
        assert_eq!(id("EC_2P2G4"), 0x2100_0004);
        assert_eq!(id("EC_4P1G1"), 0x2200_0001);
        assert_eq!(id("EC_4P2GX"), 0x2300_ffff);
        assert_eq!(id("EC_8P2G1"), 0x2500_0001);
        assert_eq!(id("EC_16P2GX"), 0x2700_ffff);
    }

    #[test]
    fn shape() {
        let c = ObjectClass::from_name("EC_8P2GX").unwrap();
        assert_eq!(c.replicas(), 10);
        assert_eq!(c.rf(), 2);
        assert_eq!(c.groups(), Groups::Max);
        assert_eq!(c.redundancy(), Redundancy::Ec { data: 8, parity: 2 });
        let r = ObjectClass::from_name("RP_3G2").unwrap();
        assert_eq!((r.replicas(), r.rf(), r.groups()), (3, 2, Groups::Fixed(2)));
        assert_eq!((ObjectClass::S1.replicas(), ObjectClass::S1.rf()), (1, 0));
    }

    #[test]
    fn bad_names_and_ids_error() {
        for bad in [
            "", "S3", "SY", "RP_1G1", "RP_8G1", "RP_12G2", "EC_3P1G1", "EC_2P1G3", "S01", "foo",
        ] {
            let e = ObjectClass::from_name(bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("\"{bad}\" does not exist")), "{msg}");
            assert!(msg.contains("RP_2G1") && msg.contains("EC_4P2G1"), "{msg}");
            assert_eq!(e.to_daos().der, proto::Der::INVAL);
        }
        for bad in [
            0,
            0x0100_0003,
            0x0d00_0001,
            0x0200_0001,
            0x2800_0001,
            0x0e00_0002,
        ] {
            let e = ObjectClass::from_id(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:#x}")), "{e}");
        }
        assert!(ObjectClass::new(Redundancy::Rp { replicas: 7 }, Groups::Fixed(1)).is_err());
    }
}
