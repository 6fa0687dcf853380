//! Object ids: 128 bits, DAOS's encoding.
//!
//! Invariant: the low 96 bits (`lo` and the low 32 bits of `hi`) belong to the
//! user and are never changed; the top 32 bits of `hi` are DAOS's, laid out as
//! DAOS 2.x `daos_obj.h` does:
//!
//! ```text
//! hi: | type (8) | redun (8) | grp_nr (16) | user (32) |    lo: | user (64) |
//!      63    56   55     48   47        32   31       0
//! ```
//!
//! `type` is a [`ObjectType`] (`enum daos_otype_t`), `redun` the class's
//! `enum daos_obj_redun` code and `grp_nr` its group count, so
//! `(redun << 24) | grp_nr` is the class id, as `daos_obj_id2class` computes it.
//!
//! One departure from DAOS: `daos_obj_generate_oid` resolves an `X` class against
//! the pool when the id is generated, storing the actual group count. Here the
//! id keeps `grp_nr = 0xFFFF` (the class's own id) and the layout function
//! resolves it against the pool map, so ids can be generated without a map and
//! always name their class.

use std::fmt;
use std::str::FromStr;

use crate::class::ObjectClass;
use crate::error::PlacementError;

/// Bits of `hi` reserved for DAOS.
pub const OID_FMT_INTR_BITS: u32 = 32;
/// Bits of the object type.
pub const OID_FMT_TYPE_BITS: u32 = 8;
/// Bits of the redundancy code.
pub const OID_FMT_CLASS_BITS: u32 = 8;
/// Bits of the group count.
pub const OID_FMT_META_BITS: u32 = 16;
/// Position of the object type in `hi`.
pub const OID_FMT_TYPE_SHIFT: u32 = 64 - OID_FMT_TYPE_BITS;
/// Position of the redundancy code in `hi`.
pub const OID_FMT_CLASS_SHIFT: u32 = OID_FMT_TYPE_SHIFT - OID_FMT_CLASS_BITS;
/// Position of the group count in `hi`.
pub const OID_FMT_META_SHIFT: u32 = OID_FMT_CLASS_SHIFT - OID_FMT_META_BITS;

/// DAOS's object types (`enum daos_otype_t`), with DAOS's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectType {
    /// Multi-level KV with hashed dkeys and akeys (the default).
    MultiHashed = 0,
    /// Object id table created on snapshot.
    Oit = 1,
    /// KV with uint64 dkeys.
    DkeyUint64 = 2,
    /// KV with uint64 akeys.
    AkeyUint64 = 3,
    /// Multi-level KV with uint64 dkeys and akeys.
    MultiUint64 = 4,
    /// KV with lexical dkeys.
    DkeyLexical = 5,
    /// KV with lexical akeys.
    AkeyLexical = 6,
    /// Multi-level KV with lexical dkeys and akeys.
    MultiLexical = 7,
    /// Flat KV (no akey) with hashed dkeys.
    KvHashed = 8,
    /// Flat KV with uint64 dkeys.
    KvUint64 = 9,
    /// Flat KV with lexical dkeys.
    KvLexical = 10,
    /// Array with its attributes stored in the object.
    Array = 11,
    /// Array with attributes provided by the user.
    ArrayAttr = 12,
    /// Byte array with no metadata (dfs files).
    ArrayByte = 13,
    /// Second version of the object id table.
    OitV2 = 14,
}

impl ObjectType {
    /// All types, by number.
    pub const ALL: [ObjectType; 15] = [
        ObjectType::MultiHashed,
        ObjectType::Oit,
        ObjectType::DkeyUint64,
        ObjectType::AkeyUint64,
        ObjectType::MultiUint64,
        ObjectType::DkeyLexical,
        ObjectType::AkeyLexical,
        ObjectType::MultiLexical,
        ObjectType::KvHashed,
        ObjectType::KvUint64,
        ObjectType::KvLexical,
        ObjectType::Array,
        ObjectType::ArrayAttr,
        ObjectType::ArrayByte,
        ObjectType::OitV2,
    ];

    /// DAOS's number.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type with DAOS's number `v`.
    pub fn from_code(v: u8) -> Option<ObjectType> {
        ObjectType::ALL.get(usize::from(v)).copied()
    }

    /// DAOS's name, e.g. `DAOS_OT_ARRAY_BYTE`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::MultiHashed => "DAOS_OT_MULTI_HASHED",
            ObjectType::Oit => "DAOS_OT_OIT",
            ObjectType::DkeyUint64 => "DAOS_OT_DKEY_UINT64",
            ObjectType::AkeyUint64 => "DAOS_OT_AKEY_UINT64",
            ObjectType::MultiUint64 => "DAOS_OT_MULTI_UINT64",
            ObjectType::DkeyLexical => "DAOS_OT_DKEY_LEXICAL",
            ObjectType::AkeyLexical => "DAOS_OT_AKEY_LEXICAL",
            ObjectType::MultiLexical => "DAOS_OT_MULTI_LEXICAL",
            ObjectType::KvHashed => "DAOS_OT_KV_HASHED",
            ObjectType::KvUint64 => "DAOS_OT_KV_UINT64",
            ObjectType::KvLexical => "DAOS_OT_KV_LEXICAL",
            ObjectType::Array => "DAOS_OT_ARRAY",
            ObjectType::ArrayAttr => "DAOS_OT_ARRAY_ATTR",
            ObjectType::ArrayByte => "DAOS_OT_ARRAY_BYTE",
            ObjectType::OitV2 => "DAOS_OT_OIT_V2",
        }
    }

    /// Dkeys are 8-byte integers, used as their own hash (`daos_is_dkey_uint64`).
    pub fn is_dkey_uint64(self) -> bool {
        matches!(
            self,
            ObjectType::MultiUint64
                | ObjectType::DkeyUint64
                | ObjectType::KvUint64
                | ObjectType::Array
                | ObjectType::ArrayAttr
                | ObjectType::ArrayByte
        )
    }

    /// Akeys are 8-byte integers (`daos_is_akey_uint64`).
    pub fn is_akey_uint64(self) -> bool {
        matches!(self, ObjectType::MultiUint64 | ObjectType::AkeyUint64)
    }

    /// Dkeys sort lexically (`daos_is_dkey_lexical`).
    pub fn is_dkey_lexical(self) -> bool {
        matches!(
            self,
            ObjectType::DkeyLexical | ObjectType::MultiLexical | ObjectType::KvLexical
        )
    }

    /// Akeys sort lexically (`daos_is_akey_lexical`).
    pub fn is_akey_lexical(self) -> bool {
        matches!(self, ObjectType::AkeyLexical | ObjectType::MultiLexical)
    }

    /// An array type (`daos_is_array_type`).
    pub fn is_array(self) -> bool {
        matches!(
            self,
            ObjectType::Array | ObjectType::ArrayAttr | ObjectType::ArrayByte
        )
    }

    /// A flat KV type (`daos_is_kv_type`).
    pub fn is_kv(self) -> bool {
        matches!(
            self,
            ObjectType::KvHashed | ObjectType::KvUint64 | ObjectType::KvLexical
        )
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 128-bit object id. Orders by `hi`, then `lo`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Default)]
pub struct ObjectId {
    pub hi: u64,
    pub lo: u64,
}

impl ObjectId {
    /// The nil id (`DAOS_OBJ_NIL`).
    pub const NIL: ObjectId = ObjectId { hi: 0, lo: 0 };

    pub const fn new(hi: u64, lo: u64) -> Self {
        ObjectId { hi, lo }
    }

    /// DAOS's `daos_obj_generate_oid` for an explicit class: keeps the user's 96
    /// bits (`user_hi` and `lo`) and encodes type, redundancy and group count in
    /// the top 32 bits of `hi`. See the module doc for `X` classes.
    pub fn generate(user_hi: u32, lo: u64, otype: ObjectType, class: &ObjectClass) -> ObjectId {
        let redun = u64::from(class.id() >> crate::class::OC_REDUN_SHIFT);
        let hi = (u64::from(otype.code()) << OID_FMT_TYPE_SHIFT)
            | (redun << OID_FMT_CLASS_SHIFT)
            | (u64::from(class.grp_nr()) << OID_FMT_META_SHIFT)
            | u64::from(user_hi);
        ObjectId { hi, lo }
    }

    /// The user's part of `hi`.
    pub fn user_hi(&self) -> u32 {
        (self.hi & 0xFFFF_FFFF) as u32
    }

    /// The class id as `daos_obj_id2class` computes it: `(redun << 24) | grp_nr`.
    pub fn class_id(&self) -> u32 {
        let redun = ((self.hi >> OID_FMT_CLASS_SHIFT) & 0xFF) as u32;
        let grp_nr = ((self.hi >> OID_FMT_META_SHIFT) & 0xFFFF) as u32;
        (redun << crate::class::OC_REDUN_SHIFT) | grp_nr
    }

    /// The object class encoded in the id.
    pub fn class(&self) -> Result<ObjectClass, PlacementError> {
        ObjectClass::from_id(self.class_id()).map_err(|e| PlacementError::InvalidOid {
            oid: self.to_string(),
            reason: e.to_string(),
        })
    }

    /// The object type encoded in the id.
    pub fn otype(&self) -> Result<ObjectType, PlacementError> {
        let code = (self.hi >> OID_FMT_TYPE_SHIFT) as u8;
        ObjectType::from_code(code).ok_or_else(|| PlacementError::InvalidOid {
            oid: self.to_string(),
            reason: format!("object type {code} is unknown (DAOS defines 0..=14)"),
        })
    }

    pub fn is_nil(&self) -> bool {
        self.hi == 0 && self.lo == 0
    }

    /// 16 bytes as DAOS's `daos_obj_id_t { lo, hi }` lies in memory on a
    /// little-endian host: `lo` then `hi`, each little-endian.
    pub fn to_le_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.lo.to_le_bytes());
        b[8..].copy_from_slice(&self.hi.to_le_bytes());
        b
    }

    /// The inverse of [`ObjectId::to_le_bytes`].
    pub fn from_le_bytes(b: [u8; 16]) -> ObjectId {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        ObjectId {
            hi: u64::from_le_bytes(hi),
            lo: u64::from_le_bytes(lo),
        }
    }
}

/// DAOS's `DF_OID`: `hi.lo` in decimal.
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.hi, self.lo)
    }
}

impl FromStr for ObjectId {
    type Err = PlacementError;

    /// Parses `hi.lo` in decimal, as printed by `Display` and by DAOS.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| PlacementError::InvalidOid {
            oid: format!("\"{s}\""),
            reason: reason.to_string(),
        };
        let (hi, lo) = s
            .trim()
            .split_once('.')
            .ok_or_else(|| bad("expected <hi>.<lo> in decimal"))?;
        let num = |part: &str, what: &str| -> Result<u64, PlacementError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{what} \"{part}\" is not a decimal number")));
            }
            part.parse::<u64>()
                .map_err(|_| bad(&format!("{what} \"{part}\" does not fit in 64 bits")))
        };
        Ok(ObjectId {
            hi: num(hi, "hi")?,
            lo: num(lo, "lo")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(n: &str) -> ObjectClass {
        ObjectClass::from_name(n).unwrap()
    }

    /// Bit layouts computed by hand from DAOS's `daos_obj_set_oid`.
    #[test]
    fn encode_golden() {
        let oid = ObjectId::generate(0, 1, ObjectType::MultiHashed, &class("S1"));
        assert_eq!(oid.hi, 0x0001_0001_0000_0000);
        assert_eq!(oid.lo, 1);

        let oid = ObjectId::generate(0x1234_5678, 42, ObjectType::ArrayByte, &class("SX"));
        assert_eq!(oid.hi, 0x0d01_ffff_1234_5678);
        assert_eq!(oid.to_string(), format!("{}.42", 0x0d01_ffff_1234_5678u64));

        let oid = ObjectId::generate(7, u64::MAX, ObjectType::KvHashed, &class("RP_2G1"));
        assert_eq!(oid.hi, 0x0808_0001_0000_0007);

        let oid = ObjectId::generate(0, 5, ObjectType::Array, &class("RP_3GX"));
        assert_eq!(oid.hi, 0x0b09_ffff_0000_0000);

        let oid = ObjectId::generate(0xffff_ffff, 9, ObjectType::DkeyUint64, &class("EC_4P2G8"));
        assert_eq!(oid.hi, 0x0223_0008_ffff_ffff);

        let oid = ObjectId::generate(1, 2, ObjectType::MultiLexical, &class("EC_2P1GX"));
        assert_eq!(oid.hi, 0x0720_ffff_0000_0001);
        assert_eq!(oid.to_string(), "513691828201979905.2");
    }

    #[test]
    fn decode_every_class_and_type() {
        for c in ObjectClass::all() {
            for t in ObjectType::ALL {
                let oid = ObjectId::generate(0xdead_beef, 0x0123_4567_89ab_cdef, t, &c);
                assert_eq!(oid.class().unwrap(), c);
                assert_eq!(oid.class_id(), c.id());
                assert_eq!(oid.otype().unwrap(), t);
                assert_eq!(oid.user_hi(), 0xdead_beef);
                assert_eq!(oid.lo, 0x0123_4567_89ab_cdef);
                assert_eq!(ObjectId::from_le_bytes(oid.to_le_bytes()), oid);
                assert_eq!(oid.to_string().parse::<ObjectId>().unwrap(), oid);
            }
        }
    }

    #[test]
    fn bad_ids_error() {
        let e = ObjectId::new(0xff01_0001_0000_0000, 1).otype().unwrap_err();
        assert!(e.to_string().contains("object type 255 is unknown"), "{e}");
        let e = ObjectId::new(0x0001_0003_0000_0000, 1).class().unwrap_err();
        assert!(e.to_string().contains("0x1000003"), "{e}");
        assert!(ObjectId::NIL.class().is_err());
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "-1.2",
            "a.b",
            "18446744073709551616.0",
            "0x1.2",
        ] {
            let e = bad.parse::<ObjectId>().unwrap_err();
            assert!(e.to_string().contains(&format!("\"{bad}\"")), "{e}");
        }
        assert_eq!(" 1.2 ".parse::<ObjectId>().unwrap(), ObjectId::new(1, 2));
    }

    #[test]
    fn type_predicates_follow_daos() {
        assert!(ObjectType::ArrayByte.is_dkey_uint64());
        assert!(ObjectType::ArrayByte.is_array());
        assert!(!ObjectType::KvHashed.is_dkey_uint64());
        assert!(ObjectType::KvLexical.is_dkey_lexical() && ObjectType::KvLexical.is_kv());
        assert!(ObjectType::MultiUint64.is_akey_uint64());
        for t in ObjectType::ALL {
            assert_eq!(ObjectType::from_code(t.code()), Some(t));
        }
        assert_eq!(ObjectType::from_code(15), None);
    }
}
