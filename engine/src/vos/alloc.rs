//! First-fit extent allocator over a target's bulk region, in 4 KiB blocks.
//!
//! Invariant: the free map holds disjoint, non-adjacent ranges (adjacent frees
//! coalesce), and a block is either in the free map or handed out, never
//! both. The allocator is not persistent: it is rebuilt on open from the bulk
//! references in the index (`mark_used`), so it can never disagree with what
//! a replay will see.

use std::collections::BTreeMap;

/// Allocation granularity of the bulk tier.
pub const BLOCK: u64 = 4096;

#[derive(Debug, Clone)]
pub struct ExtentAlloc {
    /// Free ranges: first block -> number of blocks.
    free: BTreeMap<u64, u64>,
    blocks: u64,
    used_blocks: u64,
}

impl ExtentAlloc {
    /// An allocator over `len` bytes (the tail short of a block is unused).
    pub fn new(len: u64) -> ExtentAlloc {
        let blocks = len / BLOCK;
        let mut free = BTreeMap::new();
        if blocks > 0 {
            free.insert(0, blocks);
        }
        ExtentAlloc {
            free,
            blocks,
            used_blocks: 0,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.blocks * BLOCK
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_blocks * BLOCK
    }

    /// Bytes rounded up to whole blocks.
    pub fn blocks_for(bytes: u64) -> u64 {
        bytes.div_ceil(BLOCK)
    }

    /// Hands out `bytes` (rounded up to blocks), returning the byte offset.
    pub fn alloc(&mut self, bytes: u64) -> Option<u64> {
        let n = Self::blocks_for(bytes).max(1);
        let (&start, &len) = self.free.iter().find(|(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        self.used_blocks += n;
        Some(start * BLOCK)
    }

    /// Returns `[off, off + bytes)` (rounded up to blocks). Fails without
    /// change if any of it is already free or outside the region.
    pub fn free(&mut self, off: u64, bytes: u64) -> Result<(), String> {
        let (start, n) = self.range(off, bytes)?;
        let end = start + n;
        if let Some((&s, &l)) = self.free.range(..end).next_back() {
            if s + l > start {
                return Err(format!(
                    "bulk extent at {off} of {bytes} bytes is already free"
                ));
            }
        }
        let mut new_start = start;
        let mut new_len = n;
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if s + l == start {
                self.free.remove(&s);
                new_start = s;
                new_len += l;
            }
        }
        if let Some(l) = self.free.remove(&end) {
            new_len += l;
        }
        self.free.insert(new_start, new_len);
        self.used_blocks -= n;
        Ok(())
    }

    /// Marks `[off, off + bytes)` used (rebuilding from the index). Fails
    /// without change if any of it is not free: two references to one block.
    pub fn mark_used(&mut self, off: u64, bytes: u64) -> Result<(), String> {
        let (start, n) = self.range(off, bytes)?;
        let end = start + n;
        let (&s, &l) = self
            .free
            .range(..=start)
            .next_back()
            .filter(|(&s, &l)| s + l >= end && s <= start)
            .ok_or_else(|| format!("bulk extent at {off} of {bytes} bytes is referenced twice"))?;
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if s + l > end {
            self.free.insert(end, s + l - end);
        }
        self.used_blocks += n;
        Ok(())
    }

    fn range(&self, off: u64, bytes: u64) -> Result<(u64, u64), String> {
        if !off.is_multiple_of(BLOCK) {
            return Err(format!("bulk extent offset {off} is not {BLOCK}-aligned"));
        }
        let start = off / BLOCK;
        let n = Self::blocks_for(bytes).max(1);
        if start.checked_add(n).is_none_or(|e| e > self.blocks) {
            return Err(format!(
                "bulk extent at {off} of {bytes} bytes lies beyond the region of {} bytes",
                self.total_bytes()
            ));
        }
        Ok((start, n))
    }

    /// The free ranges, for tests.
    #[cfg(test)]
    pub fn free_ranges(&self) -> Vec<(u64, u64)> {
        self.free.iter().map(|(&s, &l)| (s, l)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_fit_and_coalesce() {
        let mut a = ExtentAlloc::new(10 * BLOCK + 100);
        assert_eq!(a.total_bytes(), 10 * BLOCK);
        let x = a.alloc(1).unwrap();
        let y = a.alloc(BLOCK + 1).unwrap();
        let z = a.alloc(BLOCK).unwrap();
        assert_eq!((x, y, z), (0, BLOCK, 3 * BLOCK));
        assert_eq!(a.used_bytes(), 4 * BLOCK);
        a.free(y, BLOCK + 1).unwrap();
        assert!(a.free(y, 1).is_err(), "double free");
        assert_eq!(a.alloc(2 * BLOCK), Some(BLOCK));
        a.free(x, 1).unwrap();
        a.free(BLOCK, 2 * BLOCK).unwrap();
        a.free(z, BLOCK).unwrap();
        assert_eq!(a.free_ranges(), vec![(0, 10)]);
        assert_eq!(a.alloc(11 * BLOCK), None);
        assert!(a.free(20 * BLOCK, 1).is_err());
        assert!(a.free(5, 1).is_err());
    }

    #[test]
    fn mark_used_detects_overlap() {
        let mut a = ExtentAlloc::new(8 * BLOCK);
        a.mark_used(2 * BLOCK, 2 * BLOCK).unwrap();
        assert!(a.mark_used(3 * BLOCK, 1).is_err());
        a.mark_used(4 * BLOCK, 1).unwrap();
        assert_eq!(a.free_ranges(), vec![(0, 2), (5, 3)]);
        assert_eq!(a.alloc(3 * BLOCK), Some(5 * BLOCK));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u64),
        Free(usize),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn never_hands_out_a_block_twice(ops in proptest::collection::vec(
            prop_oneof![(1u64..5 * BLOCK).prop_map(Op::Alloc), any::<usize>().prop_map(Op::Free)], 1..200)) {
            let mut a = ExtentAlloc::new(64 * BLOCK);
            let mut owner: Vec<Option<usize>> = vec![None; 64];
            let mut live: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        if let Some(off) = a.alloc(n) {
                            let b0 = (off / BLOCK) as usize;
                            let nb = ExtentAlloc::blocks_for(n) as usize;
                            for o in owner.iter_mut().skip(b0).take(nb) {
                                prop_assert!(o.is_none(), "block handed out twice");
                                *o = Some(live.len());
                            }
                            live.push((off, n));
                        }
                    }
                    Op::Free(i) => {
                        if !live.is_empty() {
                            let (off, n) = live.swap_remove(i % live.len());
                            a.free(off, n).unwrap();
                            let b0 = (off / BLOCK) as usize;
                            for o in owner.iter_mut().skip(b0).take(ExtentAlloc::blocks_for(n) as usize) {
                                *o = None;
                            }
                        }
                    }
                }
                let used = owner.iter().filter(|o| o.is_some()).count() as u64;
                prop_assert_eq!(a.used_bytes(), used * BLOCK);
            }
            for (off, n) in live.drain(..) {
                a.free(off, n).unwrap();
            }
            prop_assert_eq!(a.free_ranges(), vec![(0, 64)]);
        }
    }
}
