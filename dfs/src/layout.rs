//! The persistent records of the namespace: the inode record a directory
//! entry holds (DAOS's dfs entry: dkey = name, akey `DFS_INODE`), and the
//! superblock's values.
//!
//! Format version 1, every integer little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version (1) |
//! | 1 | 1 | flags: bit 0 = shared (the authoritative record is in the inode object: hard links) |
//! | 2 | 2 | reserved, 0 |
//! | 4 | 4 | mode (type and permission bits, as `st_mode`) |
//! | 8 | 4 | uid |
//! | 12 | 4 | gid |
//! | 16 | 8 | oid hi |
//! | 24 | 8 | oid lo |
//! | 32 | 8 | atime, ns since the epoch (signed) |
//! | 40 | 8 | mtime |
//! | 48 | 8 | ctime |
//! | 56 | 8 | chunk size (files) |
//! | 64 | 4 | nlink |
//! | 68 | 4 | rdev |
//! | 72 | 2 | symlink target length |
//! | 74 | n | symlink target bytes |
//!
//! Invariant: `decode(encode(r)) == r` for every `r` whose `mtime_at` is its
//! `mtime` (the one field kept outside the bytes), and `decode` of any bytes
//! returns a record or an error, never panics.

use std::fmt;

pub const VERSION: u8 = 1;
const FIXED: usize = 74;
const FLAG_SHARED: u8 = 1;

/// One inode record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inode {
    /// The authoritative record lives in the inode object (hard-linked).
    pub shared: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub oid_hi: u64,
    pub oid_lo: u64,
    pub atime: i64,
    pub mtime: i64,
    /// When `mtime` was last set, in ns of the container's hybrid clock
    /// (libdaos `Container::now`, past the epochs of the writes made before;
    /// DAOS's `obj_hlc`): a write to a file's bytes with a larger epoch is
    /// newer, and its epoch is the file's mtime. Not in the record's bytes
    /// but beside them (dfs's `DFS_MTIME` akey); `decode` takes `mtime`
    /// itself.
    pub mtime_at: i64,
    pub ctime: i64,
    pub chunk_size: u64,
    pub nlink: u32,
    pub rdev: u32,
    pub symlink: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inode record: {}", self.0)
    }
}

impl Inode {
    /// The byte ranges of an encoded record (offset, bytes) that say which
    /// object it is for and whether it is shared: what a client compares to
    /// know a name still holds the file it knew, whatever else changed.
    pub fn identity(oid_hi: u64, oid_lo: u64, shared: bool) -> [(u32, Vec<u8>); 2] {
        let mut oid = oid_hi.to_le_bytes().to_vec();
        oid.extend_from_slice(&oid_lo.to_le_bytes());
        [
            (0, vec![VERSION, if shared { FLAG_SHARED } else { 0 }]),
            (16, oid),
        ]
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + self.symlink.len());
        b.push(VERSION);
        b.push(if self.shared { FLAG_SHARED } else { 0 });
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.mode.to_le_bytes());
        b.extend_from_slice(&self.uid.to_le_bytes());
        b.extend_from_slice(&self.gid.to_le_bytes());
        b.extend_from_slice(&self.oid_hi.to_le_bytes());
        b.extend_from_slice(&self.oid_lo.to_le_bytes());
        b.extend_from_slice(&self.atime.to_le_bytes());
        b.extend_from_slice(&self.mtime.to_le_bytes());
        b.extend_from_slice(&self.ctime.to_le_bytes());
        b.extend_from_slice(&self.chunk_size.to_le_bytes());
        b.extend_from_slice(&self.nlink.to_le_bytes());
        b.extend_from_slice(&self.rdev.to_le_bytes());
        b.extend_from_slice(&(self.symlink.len() as u16).to_le_bytes());
        b.extend_from_slice(&self.symlink);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Inode, LayoutError> {
        let err = |m: &str| LayoutError(format!("{m} ({} bytes)", b.len()));
        if b.len() < FIXED {
            return Err(err("too short"));
        }
        if b[0] != VERSION {
            return Err(err(&format!("version {}", b[0])));
        }
        if b[1] & !FLAG_SHARED != 0 || b[2] != 0 || b[3] != 0 {
            return Err(err("unknown flags"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let len = u16::from_le_bytes([b[72], b[73]]) as usize;
        if b.len() != FIXED + len {
            return Err(err("symlink length does not match"));
        }
        Ok(Inode {
            shared: b[1] & FLAG_SHARED != 0,
            mode: u32_at(4),
            uid: u32_at(8),
            gid: u32_at(12),
            oid_hi: u64_at(16),
            oid_lo: u64_at(24),
            atime: u64_at(32) as i64,
            mtime: u64_at(40) as i64,
            mtime_at: u64_at(40) as i64,
            ctime: u64_at(48) as i64,
            chunk_size: u64_at(56),
            nlink: u32_at(64),
            rdev: u32_at(68),
            symlink: b[FIXED..].to_vec(),
        })
    }
}

/// The superblock's magic value (DAOS's `DFS_SB_MAGIC`).
pub const SB_MAGIC: u64 = 0xda05_df50_da05_df50;
/// The namespace layout version this crate writes and reads.
pub const SB_LAYOUT_VERSION: u64 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Inode {
        Inode {
            shared: true,
            mode: 0o100644,
            uid: 1000,
            gid: 100,
            oid_hi: 0x0100_0000_0000_0001,
            oid_lo: 1025,
            atime: 1,
            mtime: -2,
            mtime_at: -2,
            ctime: 3,
            chunk_size: 1 << 20,
            nlink: 2,
            rdev: 0,
            symlink: b"target".to_vec(),
        }
    }

    #[test]
    fn golden_bytes() {
        let b = sample().encode();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "01010000a4810000e80300006400000001000000000000010104000000000000",
                "0100000000000000feffffffffffffff03000000000000000000100000000000",
                "02000000000000000600746172676574"
            )
        );
        assert_eq!(Inode::decode(&b).unwrap(), sample());
    }

    #[test]
    fn identity_is_where_the_record_says() {
        for shared in [false, true] {
            let r = Inode { shared, ..sample() };
            let b = r.encode();
            for (at, bytes) in Inode::identity(r.oid_hi, r.oid_lo, shared) {
                let at = at as usize;
                assert_eq!(&b[at..at + bytes.len()], bytes.as_slice());
            }
            let other = Inode::identity(r.oid_hi, r.oid_lo + 1, shared);
            assert_ne!(&b[16..32], other[1].1.as_slice());
        }
    }

    #[test]
    fn rejects_damage() {
        let b = sample().encode();
        assert!(Inode::decode(&b[..b.len() - 1]).is_err());
        let mut v = b.clone();
        v[0] = 2;
        assert!(Inode::decode(&v).is_err());
        let mut v = b;
        v[1] = 0x80;
        assert!(Inode::decode(&v).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(mode: u32, uid: u32, ts: i64, lo: u64, link in proptest::collection::vec(any::<u8>(), 0..300)) {
            let i = Inode { mode, uid, atime: ts, oid_lo: lo, symlink: link, ..sample() };
            prop_assert_eq!(Inode::decode(&i.encode()).unwrap(), i);
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Inode::decode(&b);
        }
    }
}
