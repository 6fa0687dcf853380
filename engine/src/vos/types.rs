//! The types of the VOS API: ids, keys, I/O descriptors, conditions, anchors.
//!
//! These are plain values: nothing here touches storage. Persistent encodings
//! of them live in `layout.rs`.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use proto::{DaosError, Der};

use crate::error::{Error, Result};

/// An object id within its container: `cont` is the container (its UUID as
/// a u128), `hi`/`lo` the 128-bit DAOS object id (class bits in `hi`).
/// Ordered by `(cont, hi, lo)`, so a container's objects are contiguous and
/// enumerate in numeric id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid {
    pub cont: u128,
    pub hi: u64,
    pub lo: u64,
}

impl Oid {
    pub fn new(cont: u128, hi: u64, lo: u64) -> Oid {
        Oid { cont, hi, lo }
    }

    /// The object id within the container as 16 big-endian bytes (`hi`
    /// first): byte order is id order. Object enumeration anchors hold it.
    pub fn obj_key(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.hi.to_be_bytes());
        b[8..].copy_from_slice(&self.lo.to_be_bytes());
        b
    }

    /// The inverse of [`Oid::obj_key`], in container `cont`.
    pub fn from_obj_key(cont: u128, b: [u8; 16]) -> Oid {
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&b[..8]);
        lo.copy_from_slice(&b[8..]);
        Oid {
            cont,
            hi: u64::from_be_bytes(hi),
            lo: u64::from_be_bytes(lo),
        }
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x} (cont {:032x})", self.hi, self.lo, self.cont)
    }
}

/// A range of array records: `nr` records starting at index `idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Recx {
    pub idx: u64,
    pub nr: u64,
}

impl Recx {
    pub fn new(idx: u64, nr: u64) -> Recx {
        Recx { idx, nr }
    }

    /// One past the last record, or `None` if it overflows.
    pub fn end(&self) -> Option<u64> {
        self.idx.checked_add(self.nr)
    }
}

/// A transaction id, chosen by the DTX coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DtxId(pub u128);

impl fmt::Display for DtxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What a participant knows of a DTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtxState {
    Prepared,
    Committed,
    Aborted,
    /// Never seen here, or decided so long ago that it was forgotten
    /// (see [`DTX_HISTORY`](super::DTX_HISTORY)).
    Unknown,
}

/// The value written to one akey by an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IodValue {
    /// A single value: replaces the whole value at the update's epoch.
    Single(Bytes),
    /// Array records: `data` is the concatenation of the records of every
    /// recx in order, `sum(nr) * rec_size` bytes.
    Array {
        rec_size: u32,
        recxs: Vec<Recx>,
        data: Bytes,
    },
    /// Punches these record ranges of an array at the update's epoch.
    ArrayPunch { recxs: Vec<Recx> },
}

/// One akey's part of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iod {
    pub akey: Vec<u8>,
    pub value: IodValue,
}

impl Iod {
    pub fn single(akey: impl Into<Vec<u8>>, data: impl Into<Bytes>) -> Iod {
        Iod {
            akey: akey.into(),
            value: IodValue::Single(data.into()),
        }
    }

    pub fn array(
        akey: impl Into<Vec<u8>>,
        rec_size: u32,
        recxs: Vec<Recx>,
        data: impl Into<Bytes>,
    ) -> Iod {
        Iod {
            akey: akey.into(),
            value: IodValue::Array {
                rec_size,
                recxs,
                data: data.into(),
            },
        }
    }

    pub fn array_punch(akey: impl Into<Vec<u8>>, recxs: Vec<Recx>) -> Iod {
        Iod {
            akey: akey.into(),
            value: IodValue::ArrayPunch { recxs },
        }
    }
}

/// One akey's part of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchReq {
    Single {
        akey: Vec<u8>,
    },
    /// Records of an array. An empty `recxs` asks only for the record size.
    Array {
        akey: Vec<u8>,
        recxs: Vec<Recx>,
    },
}

/// Where a read may take its bytes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The in-memory image, and bulk bytes the kernel's page cache holds: a
    /// read that would wait on the bulk device fails with
    /// [`crate::error::Error::NeedsDevice`] instead, so it may run where
    /// blocking is not allowed.
    Memory,
    /// The bulk device too.
    Device,
}

/// The answer to one [`FetchReq`], in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOut {
    /// The newest visible single value, or `None` if there is none.
    Single(Option<Bytes>),
    /// `rec_size` is 0 when no requested record is visible (DAOS's iod_size
    /// 0), and `data` is then empty. Otherwise `data` holds `sum(nr) *
    /// rec_size` bytes, with zeros for records never written or punched.
    /// For an empty `recxs`, `rec_size` tells whether the array has any
    /// visible record at all. `hi` is one past the highest requested record
    /// that holds data (0 if none; DAOS's `iom_recx_hi` + 1): a reader that
    /// sees data up to the end of its range knows the array reaches it
    /// without asking for the size.
    Array { rec_size: u32, data: Bytes, hi: u64 },
}

/// What a punch removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Punch {
    Object,
    Dkeys(Vec<Vec<u8>>),
    Akeys { dkey: Vec<u8>, akeys: Vec<Vec<u8>> },
}

/// DAOS's conditional flags (`DAOS_COND_*`, same bit values).
///
/// - `DKEY_INSERT`/`AKEY_INSERT`: the update fails with `DER_EXIST` if the dkey
///   (any of the iods' akeys) is visible at the op's epoch;
/// - `DKEY_UPDATE`/`AKEY_UPDATE`: the update fails with `DER_NONEXIST` if the
///   dkey (any of the akeys) is not visible;
/// - `DKEY_FETCH`/`AKEY_FETCH`: the fetch fails with `DER_NONEXIST` likewise;
/// - `DKEY_PUNCH`/`AKEY_PUNCH`: the punch fails with `DER_NONEXIST` if any key
///   it names is not visible; for an object punch either flag requires the
///   object to have something visible.
///
/// An op that fails its condition changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Cond(pub u32);

impl Cond {
    pub const NONE: Cond = Cond(0);
    pub const DKEY_INSERT: Cond = Cond(1 << 0);
    pub const DKEY_UPDATE: Cond = Cond(1 << 1);
    pub const DKEY_FETCH: Cond = Cond(1 << 2);
    pub const DKEY_PUNCH: Cond = Cond(1 << 3);
    pub const AKEY_INSERT: Cond = Cond(1 << 4);
    pub const AKEY_UPDATE: Cond = Cond(1 << 5);
    pub const AKEY_FETCH: Cond = Cond(1 << 6);
    pub const AKEY_PUNCH: Cond = Cond(1 << 7);
    /// Every defined bit.
    pub const MASK: u32 = 0xff;

    /// True if every bit of `other` is set here.
    pub fn has(self, other: Cond) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Cond {
    type Output = Cond;
    fn bitor(self, rhs: Cond) -> Cond {
        Cond(self.0 | rhs.0)
    }
}

/// A condition on a value an op's client read before: the single value
/// under `akey` of the op's dkey holds `value` at byte `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub akey: Vec<u8>,
    pub offset: u32,
    pub value: Vec<u8>,
}

/// One operation of a distributed transaction: the same shapes as the
/// direct calls, all at the DTX's epoch, plus what it expects to find (a
/// punch of one dkey, or of akeys under one, for a punch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtxOp {
    Update {
        oid: Oid,
        dkey: Vec<u8>,
        iods: Vec<Iod>,
        cond: Cond,
        expect: Vec<Expect>,
    },
    Punch {
        oid: Oid,
        what: Punch,
        cond: Cond,
        expect: Vec<Expect>,
    },
}

/// A resumable enumeration position: the last key returned (not an index,
/// so inserts and removals between calls are harmless) and whether the
/// enumeration is finished.
///
/// Keys are: [`Oid::obj_key`] for objects, the key
/// bytes for dkeys and akeys, and the end record index (big-endian u64) of
/// the last returned range for recxs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Anchor {
    /// `None`: start from the beginning.
    pub after: Option<Vec<u8>>,
    pub eof: bool,
}

impl Anchor {
    /// The anchor that starts an enumeration.
    pub fn start() -> Anchor {
        Anchor::default()
    }

    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Serializes: `flags u8` (bit 0 eof, bit 1 key present), then `len u32`
    /// LE and the key bytes when present.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let flags = u8::from(self.eof) | if self.after.is_some() { 2 } else { 0 };
        out.push(flags);
        if let Some(k) = &self.after {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
        out
    }

    /// Parses [`Anchor::to_bytes`]; anything else is `DER_INVAL`.
    pub fn from_bytes(b: &[u8]) -> Result<Anchor> {
        let bad = |why: &str| -> Error {
            DaosError::new(
                Der::INVAL,
                format!("enumeration anchor of {} bytes: {why}", b.len()),
            )
            .into()
        };
        let (&flags, rest) = b.split_first().ok_or_else(|| bad("empty"))?;
        if flags & !3 != 0 {
            return Err(bad("unknown flags"));
        }
        let eof = flags & 1 != 0;
        if flags & 2 == 0 {
            if !rest.is_empty() {
                return Err(bad("trailing bytes"));
            }
            return Ok(Anchor { after: None, eof });
        }
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("short key length"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let key = rest
            .get(4..)
            .filter(|k| k.len() == len)
            .ok_or_else(|| bad("key length mismatch"))?;
        Ok(Anchor {
            after: Some(key.to_vec()),
            eof,
        })
    }
}

/// One visible run of an array, as listed by [`Vos::list_recxs`](super::Vos::list_recxs):
/// the newest visible write of every record of `recx` has epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecxEntry {
    pub recx: Recx,
    pub epoch: u64,
    pub rec_size: u32,
}

/// The answer of [`Vos::query_max`](super::Vos::query_max).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMax {
    /// The dkey found (the largest visible one, or the one asked for).
    pub dkey: Vec<u8>,
    /// For an array akey: one past its largest visible record index under
    /// `dkey`. `None` when no akey was asked for, or it holds a single value.
    pub recx_end: Option<u64>,
}

/// Where a target's bulk data lives: `[offset, offset + len)` of a device
/// file shared with other targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRegion {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

/// How to open a [`Vos`](super::Vos).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VosConfig {
    /// The VOS's own directory (created if missing); VOS owns every file in it.
    pub dir: PathBuf,
    /// Hard budget for everything VOS keeps under `dir`.
    pub scm_bytes: u64,
    /// The bulk region, or `None` to keep every value in the SCM tier.
    pub bulk: Option<BulkRegion>,
    /// Values (and array extents) of at least this many bytes go to the
    /// bulk region (DAOS's pool property `data_thresh`); smaller ones stay
    /// in the SCM tier. Only where new values go: what is stored stays put.
    /// At least 1 (an empty value has nothing to put in the bulk tier).
    pub data_thresh: u64,
    /// fdatasync on flush and checkpoint (true in production).
    pub sync: bool,
}

/// Space use. `scm_total` is the part of `scm_bytes` the in-memory image may
/// use (one third: the rest is for the log and the checkpoint being
/// rewritten); `scm_used` is the image's size plus reservations of prepared
/// DTXs. Bulk figures are in bytes, allocated in 4 KiB blocks; `bulk_used`
/// includes space freed but not yet reusable (until the next flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VosSpace {
    pub scm_total: u64,
    pub scm_used: u64,
    pub bulk_total: u64,
    pub bulk_used: u64,
}

/// What an aggregation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggStats {
    /// The epoch actually aggregated up to: the one asked for, lowered to the
    /// oldest prepared DTX's epoch.
    pub upto: u64,
    /// Single-value versions and array extents removed.
    pub versions_removed: u64,
    /// Object, dkey and akey punch records removed.
    pub punches_removed: u64,
    /// Objects, dkeys and akeys removed because nothing was left in them.
    pub keys_removed: u64,
    /// SCM image bytes freed.
    pub scm_freed: u64,
    /// Bulk bytes freed (reusable after the next flush).
    pub bulk_freed: u64,
}

pub(crate) fn inval(msg: impl Into<String>) -> Error {
    DaosError::new(Der::INVAL, msg).into()
}

pub(crate) fn der(d: Der, msg: impl Into<String>) -> Error {
    DaosError::new(d, msg).into()
}

/// Keys in messages: printable ASCII as text, anything else as hex.
pub(crate) fn show_key(k: &[u8]) -> String {
    if !k.is_empty() && k.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{:?}", String::from_utf8_lossy(k))
    } else {
        let hex: String = k.iter().map(|c| format!("{c:02x}")).collect();
        format!("0x{hex}")
    }
}
