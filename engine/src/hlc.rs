//! The engine's hybrid logical clock: epochs for updates.
//!
//! Invariant: every epoch handed out is larger than every epoch handed out or
//! observed before by this engine, and close to wall-clock nanoseconds, so
//! epochs from different engines order writes the way time does (up to clock
//! skew) and a later write on one engine never gets a smaller epoch than an
//! earlier one it has seen.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Hlc {
    /// A fresh epoch, larger than any before.
    pub fn now(&self) -> u64 {
        let wall = wall_ns();
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Takes note of an epoch chosen elsewhere, so later epochs are larger.
    pub fn observe(&self, epoch: u64) {
        self.last.fetch_max(epoch, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_after_observed() {
        let h = Hlc::default();
        let a = h.now();
        let b = h.now();
        assert!(b > a);
        h.observe(u64::MAX / 2);
        assert!(h.now() > u64::MAX / 2);
    }
}
