//! Persistent formats of VOS: the write-ahead log and the checkpoint image.
//! Every integer is little-endian; every decoder takes arbitrary bytes and
//! returns an error, never panics.
//!
//! Log file (`vos.log`):
//! ```text
//! header (16 bytes): magic "VOSLOG\0\0" | format version u32 | crc32 of the previous 12 bytes u32
//! records, each one flushed batch:
//!   magic u32 (REC_MAGIC) | body length u32 | crc32 of (length bytes ++ body) u32 | body
//!   body: seq u64 | mutation count u32 | mutations
//! ```
//! Checkpoint file (`vos.ckpt`):
//! ```text
//! header (40 bytes): magic "VOSCKPT\0" | format version u32 | reserved u32 (0) | seq u64
//!                    | body length u64 | body crc32 u32 | crc32 of the previous 36 bytes u32
//! body: the image:
//!   boundary u64
//!   | snapshot container count u32, (cont u128, count u32, epoch u64*)*
//!   | dtx history count u32, (id u128, committed u8, epoch u64)*
//!   | prepared dtx count u32, (id u128, epoch u64, ops)*
//!   | object count u64, (oid, punches, dkey count u32,
//!       (key, punches, akey count u32, (key, punches, value)*)*)*
//!   punches: count u32, epoch u64* (strictly increasing)
//!   value: 1 single: count u32, (epoch u64, payload)*
//!        / 2 array: rec_size u32, count u32, (idx u64, nr u64, epoch u64, payload)*
//! ```
//! Mutations (tag u8 first):
//! ```text
//! 1 Op          epoch u64 | op
//! 2 DtxPrepare  id u128 | epoch u64 | ops (count u32, op*)
//! 3 DtxCommit   id u128
//! 4 DtxAbort    id u128
//! 5 Snapshots   cont u128 | count u32 | epoch u64*
//! 6 Aggregate   upto u64
//! 7 DestroyCont cont u128
//! op:      1 Update: oid (cont u128, hi u64, lo u64) | dkey | iod count u32 | iod*
//!          2 Punch:  oid | 0 object / 1 dkeys (count u32, key*) / 2 akeys (dkey, count u32, key*)
//! key:     len u32 | bytes
//! iod:     akey | 1 single: payload / 2 array: rec_size u32, count u32, (idx u64, nr u64, payload)*
//!               / 3 array punch: count u32, (idx u64, nr u64)*
//! payload: 0 none (extent punch, image only) / 1 inline: len u32, bytes / 2 bulk: offset u64, len u64
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use bytes::Bytes;

use super::index::{Akey, Dkey, Ext, Image, Obj, Val};
use super::types::{DtxId, Oid, Punch, Recx};

/// The format version of both the log and the checkpoint.
pub const FORMAT_VERSION: u32 = 1;
pub const LOG_MAGIC: [u8; 8] = *b"VOSLOG\0\0";
pub const LOG_HEADER_LEN: usize = 16;
/// Starts every log record ("VREC" read as LE bytes).
pub const REC_MAGIC: u32 = u32::from_le_bytes(*b"VREC");
pub const REC_HEADER_LEN: usize = 12;
pub const CKPT_MAGIC: [u8; 8] = *b"VOSCKPT\0";
pub const CKPT_HEADER_LEN: usize = 40;

/// Where a value's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Inline(Bytes),
    /// `len` bytes at byte offset `off` of the target's bulk region.
    Bulk {
        off: u64,
        len: u64,
    },
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::Bulk { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A resolved akey value: what the log records (bulk data already placed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LVal {
    Single(Payload),
    Array {
        rec_size: u32,
        exts: Vec<(Recx, Payload)>,
    },
    ArrayPunch(Vec<Recx>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LIod {
    pub akey: Vec<u8>,
    pub val: LVal,
}

/// A resolved operation (conditions already checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LOp {
    Update {
        oid: Oid,
        dkey: Vec<u8>,
        iods: Vec<LIod>,
    },
    Punch {
        oid: Oid,
        what: Punch,
    },
}

/// One logged change of the image. Applying the same mutations to the same
/// image gives the same image: replay relies on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Op {
        epoch: u64,
        op: LOp,
    },
    DtxPrepare {
        id: DtxId,
        epoch: u64,
        ops: Vec<LOp>,
    },
    DtxCommit {
        id: DtxId,
    },
    DtxAbort {
        id: DtxId,
    },
    SetSnapshots {
        cont: u128,
        epochs: Vec<u64>,
    },
    Aggregate {
        upto: u64,
    },
    DestroyCont {
        cont: u128,
    },
}

/// One flushed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub seq: u64,
    pub mutations: Vec<Mutation>,
}

/// A decoded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The last log sequence number the image covers.
    pub seq: u64,
    pub(crate) image: Image,
}

/// A decode failure: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub offset: usize,
    pub msg: String,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.msg)
    }
}

impl std::error::Error for LayoutError {}

type DResult<T> = std::result::Result<T, LayoutError>;

// ---------------------------------------------------------------- encoding

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u128(out: &mut Vec<u8>, v: u128) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_key(out: &mut Vec<u8>, k: &[u8]) {
    put_u32(out, k.len() as u32);
    out.extend_from_slice(k);
}
fn put_oid(out: &mut Vec<u8>, o: Oid) {
    put_u128(out, o.cont);
    put_u64(out, o.hi);
    put_u64(out, o.lo);
}
fn put_epochs(out: &mut Vec<u8>, v: &[u64]) {
    put_u32(out, v.len() as u32);
    for e in v {
        put_u64(out, *e);
    }
}

fn put_payload(out: &mut Vec<u8>, p: Option<&Payload>) {
    match p {
        None => put_u8(out, 0),
        Some(Payload::Inline(b)) => {
            put_u8(out, 1);
            put_key(out, b);
        }
        Some(Payload::Bulk { off, len }) => {
            put_u8(out, 2);
            put_u64(out, *off);
            put_u64(out, *len);
        }
    }
}

fn put_op(out: &mut Vec<u8>, op: &LOp) {
    match op {
        LOp::Update { oid, dkey, iods } => {
            put_u8(out, 1);
            put_oid(out, *oid);
            put_key(out, dkey);
            put_u32(out, iods.len() as u32);
            for iod in iods {
                put_key(out, &iod.akey);
                match &iod.val {
                    LVal::Single(p) => {
                        put_u8(out, 1);
                        put_payload(out, Some(p));
                    }
                    LVal::Array { rec_size, exts } => {
                        put_u8(out, 2);
                        put_u32(out, *rec_size);
                        put_u32(out, exts.len() as u32);
                        for (r, p) in exts {
                            put_u64(out, r.idx);
                            put_u64(out, r.nr);
                            put_payload(out, Some(p));
                        }
                    }
                    LVal::ArrayPunch(recxs) => {
                        put_u8(out, 3);
                        put_u32(out, recxs.len() as u32);
                        for r in recxs {
                            put_u64(out, r.idx);
                            put_u64(out, r.nr);
                        }
                    }
                }
            }
        }
        LOp::Punch { oid, what } => {
            put_u8(out, 2);
            put_oid(out, *oid);
            match what {
                Punch::Object => put_u8(out, 0),
                Punch::Dkeys(d) => {
                    put_u8(out, 1);
                    put_u32(out, d.len() as u32);
                    for k in d {
                        put_key(out, k);
                    }
                }
                Punch::Akeys { dkey, akeys } => {
                    put_u8(out, 2);
                    put_key(out, dkey);
                    put_u32(out, akeys.len() as u32);
                    for k in akeys {
                        put_key(out, k);
                    }
                }
            }
        }
    }
}

/// Encodes a list of ops: count u32, then each op.
pub fn encode_ops(out: &mut Vec<u8>, ops: &[LOp]) {
    put_u32(out, ops.len() as u32);
    for op in ops {
        put_op(out, op);
    }
}

/// Appends one mutation's encoding.
pub fn encode_mutation(out: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Op { epoch, op } => {
            put_u8(out, 1);
            put_u64(out, *epoch);
            put_op(out, op);
        }
        Mutation::DtxPrepare { id, epoch, ops } => {
            put_u8(out, 2);
            put_u128(out, id.0);
            put_u64(out, *epoch);
            encode_ops(out, ops);
        }
        Mutation::DtxCommit { id } => {
            put_u8(out, 3);
            put_u128(out, id.0);
        }
        Mutation::DtxAbort { id } => {
            put_u8(out, 4);
            put_u128(out, id.0);
        }
        Mutation::SetSnapshots { cont, epochs } => {
            put_u8(out, 5);
            put_u128(out, *cont);
            put_epochs(out, epochs);
        }
        Mutation::Aggregate { upto } => {
            put_u8(out, 6);
            put_u64(out, *upto);
        }
        Mutation::DestroyCont { cont } => {
            put_u8(out, 7);
            put_u128(out, *cont);
        }
    }
}

/// The CRC-32 (IEEE) used by every checksum in these formats.
pub fn crc32(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

/// The 16-byte log file header.
pub fn encode_log_header() -> [u8; LOG_HEADER_LEN] {
    let mut h = [0u8; LOG_HEADER_LEN];
    h[..8].copy_from_slice(&LOG_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Frames a batch (`count` mutations already encoded in `muts`) as a log record.
pub fn encode_record(seq: u64, count: u32, muts: &[u8]) -> Vec<u8> {
    let body_len = 12 + muts.len();
    let mut out = Vec::with_capacity(REC_HEADER_LEN + body_len);
    put_u32(&mut out, REC_MAGIC);
    put_u32(&mut out, body_len as u32);
    put_u32(&mut out, 0);
    put_u64(&mut out, seq);
    put_u32(&mut out, count);
    out.extend_from_slice(muts);
    let mut h = crc32fast::Hasher::new();
    h.update(&(body_len as u32).to_le_bytes());
    h.update(&out[REC_HEADER_LEN..]);
    let crc = h.finalize();
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The checkpoint header for a body of `body_len` bytes with crc `body_crc`.
pub fn encode_ckpt_header(seq: u64, body_len: u64, body_crc: u32) -> [u8; CKPT_HEADER_LEN] {
    let mut h = [0u8; CKPT_HEADER_LEN];
    h[..8].copy_from_slice(&CKPT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&body_len.to_le_bytes());
    h[32..36].copy_from_slice(&body_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
    h
}

fn put_akey(out: &mut Vec<u8>, k: &[u8], a: &Akey) {
    put_key(out, k);
    put_epochs(out, &a.punches);
    match &a.val {
        Val::Single(m) => {
            put_u8(out, 1);
            put_u32(out, m.len() as u32);
            for (e, p) in m {
                put_u64(out, *e);
                put_payload(out, Some(p));
            }
        }
        Val::Array { rec_size, exts } => {
            put_u8(out, 2);
            put_u32(out, *rec_size);
            put_u32(out, exts.len() as u32);
            for x in exts {
                put_u64(out, x.recx.idx);
                put_u64(out, x.recx.nr);
                put_u64(out, x.epoch);
                put_payload(out, x.data.as_ref());
            }
        }
    }
}

/// Streams the image body to `sink` in pieces of bounded size. The body's
/// length equals [`Image::bytes`] (the space accounting is exact).
pub(crate) fn encode_image<E>(
    img: &Image,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    const CHUNK: usize = 1 << 20;
    let mut out = Vec::with_capacity(CHUNK);
    put_u64(&mut out, img.boundary);
    put_u32(&mut out, img.snapshots.len() as u32);
    for (cont, epochs) in &img.snapshots {
        put_u128(&mut out, *cont);
        put_epochs(&mut out, epochs);
    }
    put_u32(&mut out, img.history.len() as u32);
    for (id, committed, epoch) in &img.history {
        put_u128(&mut out, id.0);
        put_u8(&mut out, u8::from(*committed));
        put_u64(&mut out, *epoch);
    }
    put_u32(&mut out, img.prepared.len() as u32);
    for (id, p) in &img.prepared {
        put_u128(&mut out, id.0);
        put_u64(&mut out, p.epoch);
        encode_ops(&mut out, &p.ops);
    }
    put_u64(&mut out, img.objs.len() as u64);
    for (oid, o) in &img.objs {
        put_oid(&mut out, *oid);
        put_epochs(&mut out, &o.punches);
        put_u32(&mut out, o.dkeys.len() as u32);
        for (dk, d) in &o.dkeys {
            put_key(&mut out, dk);
            put_epochs(&mut out, &d.punches);
            put_u32(&mut out, d.akeys.len() as u32);
            for (ak, a) in &d.akeys {
                put_akey(&mut out, ak, a);
                if out.len() >= CHUNK {
                    sink(&out)?;
                    out.clear();
                }
            }
        }
    }
    sink(&out)
}

// ---------------------------------------------------------------- decoding

/// A bounds-checked reader over untrusted bytes.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
    /// Added to positions in errors (where `b` starts in its file).
    base: usize,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(b: &'a [u8], base: usize) -> Self {
        Rd { b, pos: 0, base }
    }

    fn err(&self, msg: impl Into<String>) -> LayoutError {
        LayoutError {
            offset: self.base + self.pos,
            msg: msg.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> DResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.err(format!("{what}: need {n} bytes, {} left", self.remaining())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> DResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> DResult<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    fn u32(&mut self, what: &str) -> DResult<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> DResult<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn u128(&mut self, what: &str) -> DResult<u128> {
        Ok(u128::from_le_bytes(self.arr(what)?))
    }
    fn oid(&mut self) -> DResult<Oid> {
        Ok(Oid {
            cont: self.u128("oid.cont")?,
            hi: self.u64("oid.hi")?,
            lo: self.u64("oid.lo")?,
        })
    }
    fn key(&mut self, what: &str) -> DResult<Vec<u8>> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    /// A count of items each at least `min` bytes long: bounded by what is left,
    /// so a corrupt count cannot make us allocate without limit.
    fn count(&mut self, what: &str, min: usize) -> DResult<usize> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min) > self.remaining() {
            return Err(self.err(format!(
                "{what} {n} exceeds the remaining {} bytes",
                self.remaining()
            )));
        }
        Ok(n)
    }
    fn epochs(&mut self, what: &str) -> DResult<Vec<u64>> {
        let n = self.count(what, 8)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let e = self.u64(what)?;
            if v.last().is_some_and(|l| *l >= e) {
                return Err(self.err(format!("{what}: epochs not strictly increasing")));
            }
            v.push(e);
        }
        Ok(v)
    }
    fn recx(&mut self) -> DResult<Recx> {
        let r = Recx {
            idx: self.u64("recx.idx")?,
            nr: self.u64("recx.nr")?,
        };
        if r.nr == 0 || r.end().is_none() {
            return Err(self.err(format!("invalid recx {r:?}")));
        }
        Ok(r)
    }
    fn payload(&mut self, allow_none: bool) -> DResult<Option<Payload>> {
        match self.u8("payload tag")? {
            0 if allow_none => Ok(None),
            1 => {
                let n = self.u32("inline length")? as usize;
                Ok(Some(Payload::Inline(Bytes::copy_from_slice(
                    self.take(n, "inline value")?,
                ))))
            }
            2 => {
                let off = self.u64("bulk offset")?;
                let len = self.u64("bulk length")?;
                if off.checked_add(len).is_none() {
                    return Err(self.err(format!("bulk extent {off}+{len} overflows")));
                }
                Ok(Some(Payload::Bulk { off, len }))
            }
            t => Err(self.err(format!("unknown payload tag {t}"))),
        }
    }
    fn some_payload(&mut self) -> DResult<Payload> {
        self.payload(false)?
            .ok_or_else(|| self.err("missing payload"))
    }

    fn op(&mut self) -> DResult<LOp> {
        match self.u8("op tag")? {
            1 => {
                let oid = self.oid()?;
                let dkey = self.key("dkey")?;
                let n = self.count("iod count", 5)?;
                let mut iods = Vec::with_capacity(n);
                for _ in 0..n {
                    let akey = self.key("akey")?;
                    let val = match self.u8("iod tag")? {
                        1 => LVal::Single(self.some_payload()?),
                        2 => {
                            let rec_size = self.u32("rec_size")?;
                            if rec_size == 0 {
                                return Err(self.err("array rec_size 0"));
                            }
                            let m = self.count("extent count", 17)?;
                            let mut exts = Vec::with_capacity(m);
                            for _ in 0..m {
                                let r = self.recx()?;
                                let p = self.some_payload()?;
                                if r.nr.checked_mul(u64::from(rec_size)) != Some(p.len()) {
                                    return Err(self.err(format!(
                                        "extent {r:?} of rec_size {rec_size} holds {} bytes",
                                        p.len()
                                    )));
                                }
                                exts.push((r, p));
                            }
                            LVal::Array { rec_size, exts }
                        }
                        3 => {
                            let m = self.count("punch extent count", 16)?;
                            let mut v = Vec::with_capacity(m);
                            for _ in 0..m {
                                v.push(self.recx()?);
                            }
                            LVal::ArrayPunch(v)
                        }
                        t => return Err(self.err(format!("unknown iod tag {t}"))),
                    };
                    iods.push(LIod { akey, val });
                }
                Ok(LOp::Update { oid, dkey, iods })
            }
            2 => {
                let oid = self.oid()?;
                let what = match self.u8("punch tag")? {
                    0 => Punch::Object,
                    1 => {
                        let n = self.count("dkey count", 4)?;
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            v.push(self.key("dkey")?);
                        }
                        Punch::Dkeys(v)
                    }
                    2 => {
                        let dkey = self.key("dkey")?;
                        let n = self.count("akey count", 4)?;
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            v.push(self.key("akey")?);
                        }
                        Punch::Akeys { dkey, akeys: v }
                    }
                    t => return Err(self.err(format!("unknown punch tag {t}"))),
                };
                Ok(LOp::Punch { oid, what })
            }
            t => Err(self.err(format!("unknown op tag {t}"))),
        }
    }

    fn ops(&mut self) -> DResult<Vec<LOp>> {
        let n = self.count("op count", 17)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.op()?);
        }
        Ok(v)
    }

    fn mutation(&mut self) -> DResult<Mutation> {
        Ok(match self.u8("mutation tag")? {
            1 => Mutation::Op {
                epoch: self.u64("epoch")?,
                op: self.op()?,
            },
            2 => Mutation::DtxPrepare {
                id: DtxId(self.u128("dtx id")?),
                epoch: self.u64("epoch")?,
                ops: self.ops()?,
            },
            3 => Mutation::DtxCommit {
                id: DtxId(self.u128("dtx id")?),
            },
            4 => Mutation::DtxAbort {
                id: DtxId(self.u128("dtx id")?),
            },
            5 => Mutation::SetSnapshots {
                cont: self.u128("container")?,
                epochs: self.epochs("snapshots")?,
            },
            6 => Mutation::Aggregate {
                upto: self.u64("upto")?,
            },
            7 => Mutation::DestroyCont {
                cont: self.u128("container")?,
            },
            t => return Err(self.err(format!("unknown mutation tag {t}"))),
        })
    }

    fn done(&self) -> DResult<()> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// Checks the 16-byte log header.
pub fn decode_log_header(b: &[u8]) -> DResult<()> {
    let mut r = Rd::new(b, 0);
    let magic: [u8; 8] = r.arr("log magic")?;
    if magic != LOG_MAGIC {
        return Err(LayoutError {
            offset: 0,
            msg: "not a VOS log (bad magic)".into(),
        });
    }
    let version = r.u32("format version")?;
    let crc = r.u32("header crc")?;
    if crc != crc32fast::hash(&b[..12]) {
        return Err(LayoutError {
            offset: 12,
            msg: "log header checksum mismatch".into(),
        });
    }
    if version != FORMAT_VERSION {
        return Err(LayoutError {
            offset: 8,
            msg: format!("log format version {version}, this build reads {FORMAT_VERSION}"),
        });
    }
    Ok(())
}

/// Decodes one log record at the start of `b` (`base` is its file offset,
/// for messages). Returns the record and its encoded length.
pub fn decode_log_record(b: &[u8], base: usize) -> DResult<(LogRecord, usize)> {
    let mut r = Rd::new(b, base);
    let magic = r.u32("record magic")?;
    if magic != REC_MAGIC {
        return Err(r.err(format!("bad record magic {magic:#x}")));
    }
    let len = r.u32("record length")? as usize;
    let crc = r.u32("record crc")?;
    if len < 12 {
        return Err(r.err(format!("record length {len} is too short")));
    }
    let body = r.take(len, "record body")?;
    let mut h = crc32fast::Hasher::new();
    h.update(&(len as u32).to_le_bytes());
    h.update(body);
    if h.finalize() != crc {
        return Err(LayoutError {
            offset: base,
            msg: "record checksum mismatch".into(),
        });
    }
    let mut br = Rd::new(body, base + REC_HEADER_LEN);
    let seq = br.u64("seq")?;
    let n = br.count("mutation count", 9)?;
    let mut mutations = Vec::with_capacity(n);
    for _ in 0..n {
        mutations.push(br.mutation()?);
    }
    br.done()?;
    Ok((LogRecord { seq, mutations }, REC_HEADER_LEN + len))
}

fn decode_akey(r: &mut Rd<'_>) -> DResult<Akey> {
    let punches = r.epochs("akey punches")?;
    let val = match r.u8("value tag")? {
        1 => {
            let n = r.count("version count", 9)?;
            let mut m = BTreeMap::new();
            for _ in 0..n {
                let e = r.u64("epoch")?;
                let p = r.some_payload()?;
                if m.last_key_value().is_some_and(|(l, _)| *l >= e) {
                    return Err(r.err("single-value epochs not strictly increasing"));
                }
                m.insert(e, p);
            }
            Val::Single(m)
        }
        2 => {
            let rec_size = r.u32("rec_size")?;
            let n = r.count("extent count", 25)?;
            let mut exts = Vec::with_capacity(n);
            for _ in 0..n {
                let recx = r.recx()?;
                let epoch = r.u64("epoch")?;
                let data = r.payload(true)?;
                if let Some(p) = &data {
                    if rec_size == 0 || recx.nr.checked_mul(u64::from(rec_size)) != Some(p.len()) {
                        return Err(r.err(format!(
                            "extent {recx:?} of rec_size {rec_size} holds {} bytes",
                            p.len()
                        )));
                    }
                }
                exts.push(Ext { recx, epoch, data });
            }
            Val::Array { rec_size, exts }
        }
        t => return Err(r.err(format!("unknown value tag {t}"))),
    };
    Ok(Akey { punches, val })
}

fn keyed<V>(r: &Rd<'_>, m: &mut BTreeMap<Vec<u8>, V>, k: Vec<u8>, v: V) -> DResult<()> {
    if m.last_key_value().is_some_and(|(l, _)| *l >= k) {
        return Err(r.err("keys not strictly increasing"));
    }
    m.insert(k, v);
    Ok(())
}

/// Decodes an image body (no header).
pub(crate) fn decode_image(b: &[u8], base: usize) -> DResult<Image> {
    let mut r = Rd::new(b, base);
    let boundary = r.u64("aggregation boundary")?;
    let ns = r.count("snapshot container count", 20)?;
    let mut snapshots = BTreeMap::new();
    for _ in 0..ns {
        let cont = r.u128("container")?;
        let epochs = r.epochs("snapshots")?;
        if snapshots.last_key_value().is_some_and(|(l, _)| *l >= cont) || epochs.is_empty() {
            return Err(r.err("snapshot containers not strictly increasing, or empty"));
        }
        snapshots.insert(cont, epochs);
    }
    let nh = r.count("dtx history count", 25)?;
    let mut history = VecDeque::with_capacity(nh);
    for _ in 0..nh {
        let id = DtxId(r.u128("dtx id")?);
        let committed = match r.u8("dtx state")? {
            0 => false,
            1 => true,
            t => return Err(r.err(format!("unknown dtx state {t}"))),
        };
        history.push_back((id, committed, r.u64("epoch")?));
    }
    let np = r.count("prepared dtx count", 28)?;
    let mut prepared = Vec::with_capacity(np);
    for _ in 0..np {
        let id = DtxId(r.u128("dtx id")?);
        let epoch = r.u64("epoch")?;
        prepared.push((id, epoch, r.ops()?));
    }
    let no = r.u64("object count")?;
    if no.saturating_mul(40) > r.remaining() as u64 {
        return Err(r.err(format!("object count {no} exceeds the remaining bytes")));
    }
    let mut objs = BTreeMap::new();
    for _ in 0..no {
        let oid = r.oid()?;
        let punches = r.epochs("object punches")?;
        let nd = r.count("dkey count", 12)?;
        let mut dkeys = BTreeMap::new();
        for _ in 0..nd {
            let dk = r.key("dkey")?;
            let dpunches = r.epochs("dkey punches")?;
            let na = r.count("akey count", 13)?;
            let mut akeys = BTreeMap::new();
            for _ in 0..na {
                let ak = r.key("akey")?;
                let a = decode_akey(&mut r)?;
                keyed(&r, &mut akeys, ak, a)?;
            }
            keyed(
                &r,
                &mut dkeys,
                dk,
                Dkey {
                    punches: dpunches,
                    akeys,
                },
            )?;
        }
        if objs.last_key_value().is_some_and(|(l, _)| *l >= oid) {
            return Err(r.err("objects not strictly increasing"));
        }
        objs.insert(oid, Obj { punches, dkeys });
    }
    r.done()?;
    Image::from_parts(boundary, snapshots, history, prepared, objs)
        .map_err(|msg| LayoutError { offset: base, msg })
}

/// Decodes a whole checkpoint file: header, checksum, image.
pub fn decode_checkpoint(b: &[u8]) -> DResult<Checkpoint> {
    let mut r = Rd::new(b, 0);
    let magic: [u8; 8] = r.arr("checkpoint magic")?;
    if magic != CKPT_MAGIC {
        return Err(LayoutError {
            offset: 0,
            msg: "not a VOS checkpoint (bad magic)".into(),
        });
    }
    let version = r.u32("format version")?;
    let _reserved = r.u32("reserved")?;
    let seq = r.u64("seq")?;
    let body_len = r.u64("body length")?;
    let body_crc = r.u32("body crc")?;
    let hcrc = r.u32("header crc")?;
    if hcrc != crc32fast::hash(&b[..36]) {
        return Err(LayoutError {
            offset: 36,
            msg: "checkpoint header checksum mismatch".into(),
        });
    }
    if version != FORMAT_VERSION {
        return Err(LayoutError {
            offset: 8,
            msg: format!("checkpoint format version {version}, this build reads {FORMAT_VERSION}"),
        });
    }
    let body = &b[CKPT_HEADER_LEN..];
    if body.len() as u64 != body_len {
        return Err(LayoutError {
            offset: CKPT_HEADER_LEN,
            msg: format!(
                "checkpoint body is {} bytes, header says {body_len}",
                body.len()
            ),
        });
    }
    if crc32fast::hash(body) != body_crc {
        return Err(LayoutError {
            offset: CKPT_HEADER_LEN,
            msg: "checkpoint body checksum mismatch".into(),
        });
    }
    let image = decode_image(body, CKPT_HEADER_LEN)?;
    Ok(Checkpoint { seq, image })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_record() -> Vec<u8> {
        let oid = Oid {
            cont: 0x0a0b,
            hi: 1,
            lo: 2,
        };
        let muts = vec![
            Mutation::Op {
                epoch: 7,
                op: LOp::Update {
                    oid,
                    dkey: b"d".to_vec(),
                    iods: vec![
                        LIod {
                            akey: b"a".to_vec(),
                            val: LVal::Single(Payload::Inline(Bytes::from_static(b"xy"))),
                        },
                        LIod {
                            akey: b"b".to_vec(),
                            val: LVal::Array {
                                rec_size: 1,
                                exts: vec![(
                                    Recx::new(3, 4096),
                                    Payload::Bulk {
                                        off: 8192,
                                        len: 4096,
                                    },
                                )],
                            },
                        },
                        LIod {
                            akey: b"c".to_vec(),
                            val: LVal::ArrayPunch(vec![Recx::new(0, 2)]),
                        },
                    ],
                },
            },
            Mutation::Op {
                epoch: 8,
                op: LOp::Punch {
                    oid,
                    what: Punch::Akeys {
                        dkey: b"d".to_vec(),
                        akeys: vec![b"a".to_vec()],
                    },
                },
            },
            Mutation::DtxPrepare {
                id: DtxId(0x0102),
                epoch: 9,
                ops: vec![LOp::Punch {
                    oid,
                    what: Punch::Object,
                }],
            },
            Mutation::DtxCommit { id: DtxId(0x0102) },
            Mutation::DtxAbort { id: DtxId(3) },
            Mutation::SetSnapshots {
                cont: 0x0a0b,
                epochs: vec![4, 5],
            },
            Mutation::DestroyCont { cont: 0x0c },
            Mutation::Aggregate { upto: 6 },
        ];
        let mut body = Vec::new();
        for m in &muts {
            encode_mutation(&mut body, m);
        }
        let rec = encode_record(42, muts.len() as u32, &body);
        let (back, n) = decode_log_record(&rec, 0).unwrap();
        assert_eq!(n, rec.len());
        assert_eq!(
            back,
            LogRecord {
                seq: 42,
                mutations: muts
            }
        );
        rec
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|c| format!("{c:02x}")).collect()
    }

    /// Golden bytes of format version 1: a change here is a format change.
    #[test]
    fn golden_log_record_v1() {
        let rec = sample_record();
        let oid = concat!(
            "0b0a0000000000000000000000000000", // cont 0x0a0b
            "0100000000000000",                 // hi 1
            "0200000000000000",                 // lo 2
        );
        let expect = [
            "56524543",
            "6e010000",
            "f07bf9c0", // magic "VREC", body length 366, crc
            "2a00000000000000",
            "08000000", // seq 42, 8 mutations
            // Op epoch 7, Update, dkey "d", 3 iods
            "01",
            "0700000000000000",
            "01",
            oid,
            "0100000064",
            "03000000",
            "0100000061",
            "01",
            "01",
            "020000007879", // akey "a": single inline "xy"
            "0100000062",
            "02",
            "01000000",
            "01000000", // akey "b": array rec_size 1, 1 extent
            "0300000000000000",
            "0010000000000000", // recx [3, +4096)
            "02",
            "0020000000000000",
            "0010000000000000", // bulk at 8192, 4096 bytes
            "0100000063",
            "03",
            "01000000",
            "0000000000000000",
            "0200000000000000", // akey "c": punch [0,2)
            // Op epoch 8, punch akeys of dkey "d": ["a"]
            "01",
            "0800000000000000",
            "02",
            oid,
            "02",
            "0100000064",
            "01000000",
            "0100000061",
            // DtxPrepare id 0x102, epoch 9, 1 op: punch object
            "02",
            "02010000000000000000000000000000",
            "0900000000000000",
            "01000000",
            "02",
            oid,
            "00",
            "03",
            "02010000000000000000000000000000", // DtxCommit
            "04",
            "03000000000000000000000000000000", // DtxAbort
            // snapshots of cont 0x0a0b: [4, 5]
            "05",
            "0b0a0000000000000000000000000000",
            "02000000",
            "0400000000000000",
            "0500000000000000",
            "07",
            "0c000000000000000000000000000000", // DestroyCont 0x0c
            "06",
            "0600000000000000", // aggregate upto 6
        ]
        .concat();
        assert_eq!(hex(&rec), expect);
        assert_eq!(
            hex(&encode_log_header()),
            "564f534c4f4700000100000021e50b4e"
        );
        decode_log_header(&encode_log_header()).unwrap();
    }

    #[test]
    fn record_corruption_is_detected() {
        let rec = sample_record();
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_log_record(&bad, 0).is_err(),
                "flip at {i} not detected"
            );
        }
        for n in 0..rec.len() {
            assert!(decode_log_record(&rec[..n], 0).is_err());
        }
    }

    /// Decodes `muts` (with `count`) as a checksummed record; what decodes
    /// must re-encode to the same bytes.
    fn decode_canonical(count: u32, muts: &[u8]) {
        let rec = encode_record(1, count, muts);
        if let Ok((back, n)) = decode_log_record(&rec, 0) {
            assert_eq!(n, rec.len());
            let mut again = Vec::new();
            for m in &back.mutations {
                encode_mutation(&mut again, m);
            }
            assert_eq!(again.as_slice(), muts);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The decoders never panic: on random bytes, and on a valid record
        /// or image body with random damage behind a valid checksum.
        #[test]
        fn decoders_never_panic(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let _ = decode_log_header(&junk);
            let _ = decode_log_record(&junk, 0);
            let _ = decode_checkpoint(&junk);
            let _ = decode_image(&junk, 0);
            let rec = sample_record();
            let mut body = rec[REC_HEADER_LEN + 12..].to_vec();
            for (at, x) in &flips {
                let i = at % body.len();
                body[i] ^= x;
            }
            body.truncate(cut % (body.len() + 1));
            decode_canonical(7, &body);
            decode_canonical(1, &junk);
            let mut img = Vec::new();
            encode_image::<()>(&sample_image(), &mut |b| {
                img.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            for (at, x) in &flips {
                let i = at % img.len();
                img[i] ^= x;
            }
            img.truncate(cut % (img.len() + 1));
            let _ = decode_image(&img, 0);
        }
    }

    fn sample_image() -> Image {
        let (_, rec) = {
            let r = sample_record();
            decode_log_record(&r, 0).map(|(rec, n)| (n, rec)).unwrap()
        };
        let mut img = Image::default();
        let mut freed = Vec::new();
        for m in &rec.mutations {
            // The sample aborts a DTX it never prepared: that one fails alone.
            let _ = img.apply(m, &mut freed);
        }
        let prep = Mutation::DtxPrepare {
            id: DtxId(9),
            epoch: 20,
            ops: vec![LOp::Update {
                oid: Oid {
                    cont: 1,
                    hi: 5,
                    lo: 5,
                },
                dkey: b"p".to_vec(),
                iods: vec![LIod {
                    akey: b"q".to_vec(),
                    val: LVal::Single(Payload::Bulk { off: 0, len: 5000 }),
                }],
            }],
        };
        img.apply(&prep, &mut freed).unwrap();
        assert_eq!(img.bytes, img.recount());
        img
    }

    #[test]
    fn sample_image_round_trip() {
        let img = sample_image();
        let mut body = Vec::new();
        encode_image::<()>(&img, &mut |b| {
            body.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(body.len() as u64, img.bytes);
        let back = decode_image(&body, 0).unwrap();
        assert_eq!(back.bytes, img.bytes);
        let mut again = Vec::new();
        encode_image::<()>(&back, &mut |b| {
            again.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(again, body);
    }

    #[test]
    fn empty_image_round_trip() {
        let img = Image::default();
        let mut body = Vec::new();
        encode_image::<()>(&img, &mut |b| {
            body.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(body.len() as u64, img.bytes);
        let hdr = encode_ckpt_header(5, body.len() as u64, crc32fast::hash(&body));
        let mut file = hdr.to_vec();
        file.extend_from_slice(&body);
        let ck = decode_checkpoint(&file).unwrap();
        assert_eq!(ck.seq, 5);
        assert_eq!(ck.image.bytes, img.bytes);
        assert_eq!(
            hex(&file[..CKPT_HEADER_LEN]),
            format!(
                "564f53434b50540001000000000000000500000000000000{}{}{}",
                hex(&(body.len() as u64).to_le_bytes()),
                hex(&crc32fast::hash(&body).to_le_bytes()),
                hex(&crc32fast::hash(&file[..36]).to_le_bytes())
            )
        );
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 1;
            assert!(decode_checkpoint(&bad).is_err());
        }
    }
}
