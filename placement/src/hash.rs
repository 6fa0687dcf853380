//! Fixed hash functions for placement: the same bytes give the same value in every
//! process, on every host and in every version of the stack.
//!
//! Invariant: nothing here depends on `std`'s randomly seeded hashers, on host
//! byte order or on the platform's word size. Changing any function, constant or
//! seed here moves existing objects to other targets, so the golden-value tests in
//! this module pin every one of them; a change that breaks them needs a new layout
//! version, never a quiet edit.
//!
//! - [`xxh64`] is xxHash64 (Yann Collet's XXH64, as in the reference `xxhash.h`).
//!   Placement scores targets with it.
//! - [`murmur64`] is MurmurHash64A, which DAOS's `d_hash_murmur64` implements; the
//!   dkey hash uses it with DAOS's seed 5731, so dkeys land in the same group as
//!   they would in DAOS for the same group count.
//! - [`jump`] is Lamping and Veach's jump consistent hash (DAOS's `d_hash_jump`):
//!   it maps a dkey hash to a redundancy group.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn xxh_round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn xxh_merge(acc: u64, val: u64) -> u64 {
    (acc ^ xxh_round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

/// xxHash64 of `data` with `seed`. Input words are read little-endian, as the
/// reference implementation specifies, so the value is the same on every host.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let len = data.len() as u64;
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v1 = seed.wrapping_add(P1).wrapping_add(P2);
        let mut v2 = seed.wrapping_add(P2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(P1);
        let mut stripes = data.chunks_exact(32);
        for s in &mut stripes {
            v1 = xxh_round(v1, read_u64(&s[0..]));
            v2 = xxh_round(v2, read_u64(&s[8..]));
            v3 = xxh_round(v3, read_u64(&s[16..]));
            v4 = xxh_round(v4, read_u64(&s[24..]));
        }
        rest = stripes.remainder();
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        xxh_merge(h, v4)
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len);
    while rest.len() >= 8 {
        h ^= xxh_round(0, read_u64(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        h ^= u64::from(read_u32(rest)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

const MUR_PRIME: u64 = 0xc6a4_a793_5bd1_e995;
const MUR_ROTATE: u32 = 47;

/// MurmurHash64A of `data` with `seed`, as DAOS's `d_hash_murmur64`. DAOS reads the
/// 8-byte words in host order on little-endian machines; this reads them
/// little-endian everywhere, which is the same value on the hosts DAOS runs on.
pub fn murmur64(data: &[u8], seed: u32) -> u64 {
    let mut h = u64::from(seed) ^ (data.len() as u64).wrapping_mul(MUR_PRIME);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut k = read_u64(w).wrapping_mul(MUR_PRIME);
        k ^= k >> MUR_ROTATE;
        k = k.wrapping_mul(MUR_PRIME);
        h ^= k;
        h = h.wrapping_mul(MUR_PRIME);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(MUR_PRIME);
    }
    h ^= h >> MUR_ROTATE;
    h = h.wrapping_mul(MUR_PRIME);
    h ^= h >> MUR_ROTATE;
    h
}

/// Jump consistent hash: maps `key` to a bucket in `0..buckets`, moving only
/// `1/buckets` of the keys when a bucket is added. Zero buckets gives 0.
///
/// The arithmetic is IEEE double precision exactly as in the published algorithm
/// (and DAOS's `d_hash_jump`); every step is correctly rounded, so the result is
/// the same on every host.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    u32::try_from(b).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<u8> {
        (0..n).map(|i| i as u8).collect()
    }

    /// Values from the reference xxHash implementation (python-xxhash 3.x).
    #[test]
    fn xxh64_golden() {
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(b"a", 0), 0xd24e_c4f1_a98c_6e5b);
        assert_eq!(xxh64(b"abc", 0), 0x44bc_2cf5_ad77_0999);
        assert_eq!(xxh64(&ramp(32), 0), 0xcbf5_9c51_16ff_32b4);
        assert_eq!(xxh64(&ramp(100), 0), 0x6ac1_e580_3216_6597);
        assert_eq!(
            xxh64(b"The quick brown fox jumps over the lazy dog", 0),
            0x0b24_2d36_1fda_71bc
        );
        assert_eq!(xxh64(b"", 5731), 0xb3f5_1e9d_7caf_8b45);
        assert_eq!(xxh64(b"a", 5731), 0xa64d_643e_f1dd_21d4);
        assert_eq!(xxh64(b"abc", 5731), 0x4d02_4d30_c906_ec2b);
        assert_eq!(xxh64(&ramp(32), 5731), 0x4104_4043_3a9d_b90f);
        assert_eq!(xxh64(&ramp(100), 5731), 0xaee2_7c21_c845_c304);
    }

    /// Values of DAOS's `d_hash_murmur64` (compiled from its C source).
    #[test]
    fn murmur64_golden() {
        assert_eq!(murmur64(b"", 5731), MURMUR_EMPTY);
        assert_eq!(murmur64(b"a", 5731), MURMUR_A);
        assert_eq!(murmur64(b"dkey", 5731), MURMUR_DKEY);
        assert_eq!(murmur64(b"12345678", 5731), MURMUR_8);
        assert_eq!(murmur64(&ramp(100), 5731), MURMUR_100);
        assert_eq!(murmur64(b"abc", 0), MURMUR_ABC_0);
    }

    /// Values of DAOS's `d_hash_jump` (compiled from its C source).
    #[test]
    fn jump_golden() {
        for (key, buckets, want) in JUMP_GOLDEN {
            assert_eq!(jump(*key, *buckets), *want, "jump({key}, {buckets})");
        }
        assert_eq!(jump(12345, 0), 0);
        assert_eq!(jump(u64::MAX, 1), 0);
    }

    #[test]
    fn jump_moves_little_when_growing() {
        let moved = (0..10_000u64)
            .filter(|&k| {
                let h = xxh64(&k.to_le_bytes(), 0);
                jump(h, 10) != jump(h, 11)
            })
            .count();
        // Ideal is 1/11 of the keys; every key that moves goes to the new bucket.
        assert!(moved > 700 && moved < 1100, "moved {moved}");
        for k in 0..1000u64 {
            let h = xxh64(&k.to_le_bytes(), 1);
            let (a, b) = (jump(h, 10), jump(h, 11));
            assert!(a == b || b == 10);
        }
    }

    const MURMUR_EMPTY: u64 = 0xf813_77e0_8c41_d2b9;
    const MURMUR_A: u64 = 0x429f_ebda_3858_98af;
    const MURMUR_DKEY: u64 = 0x9baa_f4ca_bb1b_ad17;
    const MURMUR_8: u64 = 0x6e30_2788_23f3_d908;
    const MURMUR_100: u64 = 0x5609_b7b9_e635_8b35;
    const MURMUR_ABC_0: u64 = 0x9cc9_c334_98a9_5efb;
    const JUMP_GOLDEN: &[(u64, u32, u32)] = &[
        (0, 1, 0),
        (0, 65535, 0),
        (1, 7, 6),
        (1, 100, 55),
        (1, 65535, 21134),
        (2, 7, 6),
        (2, 100, 62),
        (2, 65535, 3927),
        (0xdead_beef, 2, 1),
        (0xdead_beef, 7, 5),
        (0xdead_beef, 100, 87),
        (0xdead_beef, 65535, 64244),
        (0x1234_5678_9abc_def0, 7, 4),
        (0x1234_5678_9abc_def0, 100, 33),
        (0x1234_5678_9abc_def0, 65535, 55019),
        (u64::MAX, 2, 1),
        (u64::MAX, 7, 2),
        (u64::MAX, 100, 92),
        (u64::MAX, 65535, 18311),
    ];
}
