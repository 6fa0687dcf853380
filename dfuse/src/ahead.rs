//! Statahead: directory entries fetched ahead of the kernel's lookups.
//!
//! A cold `stat` of a name costs two engine round trips in sequence (the
//! entry, then the file's size, which needs the object id the entry holds).
//! Tools that stat every name of a directory (`ls -l` without readdirplus,
//! `find`, `du`, `rm -rf`, backup tools) do it in listing order, one name at
//! a time. After [`START_AFTER`] lookups of existing names in one directory
//! went to the engines in a row, dfuse lists the directory a page at a time, asks for
//! the sizes of a page's files all at once, and keeps the entries here (the
//! attributes go to the attribute cache), at most [`WINDOW`] entries ahead
//! of the lookups, so a lookup that follows is answered from memory.
//!
//! It also knows which names are absent without asking: a directory made
//! through this mount held nothing else when it was made, so for the
//! negative dentry timeout after that, a name not created in it through
//! this mount is absent, and the kernel's lookup before each create (`tar`,
//! `mkdir -p`, `cp -r`) costs no round trip. That is the staleness the
//! kernel itself allows a cached negative lookup; the answer's timeout is
//! what is left of the window, so the kernel never holds it longer.
//!
//! It keeps whole listings too: a directory listed from its start to its
//! end is listed again from memory within the dentry timeout ([`Ahead::listed`],
//! [`Ahead::listing_of`]). `rm -rf` lists each directory twice (a look at
//! its first entries, then the whole of it before removing them), `find`
//! and `make` list the same directories over and over.
//!
//! Invariants: an entry lives here for the dentry timeout at most (the time
//! the kernel itself may trust a name); a name changed through this mount
//! is dropped, and so is that name in a page whose listing began before the
//! change ended (the names changed while a page is listed are recorded,
//! [`Ahead::forget`], and taken out when it is stored; a page during which
//! more than [`CHANGES_KEPT`] changed is not kept); at most one fetch runs
//! per directory, and it stops when the lookups stop coming; a name is
//! recorded as created in a fresh directory before the create is sent, so
//! no lookup racing it is answered "absent"; a listing is kept only if no
//! name changed through this mount while it was read, and dropped when a
//! name in its directory changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dfs::Obj;
use tokio::sync::Notify;

/// Lookups of one directory that went to the engines and found the name, in
/// a row (each within the dentry timeout of the one before), before its
/// entries are fetched ahead.
pub const START_AFTER: u32 = 4;
/// Entries fetched ahead of the directory's lookups at most.
pub const WINDOW: u64 = 512;
/// Directories whose lookups are counted at most; older ones are dropped.
const TRACKED: usize = 256;
/// Entries kept at most, over all directories.
const ENTRIES: u64 = 100_000;
/// Names changed in a directory while one page of it is listed, recorded
/// at most; past that the page is dropped.
pub const CHANGES_KEPT: usize = 4096;
/// Fresh directories tracked at most (enough for every directory made
/// within the window at ten thousand a second), and names recorded in each.
const FRESH_DIRS: usize = 16_384;
const FRESH_NAMES: usize = 100_000;

/// A directory made through this mount: until `until`, the names in
/// `names` are the only ones it may hold.
struct Fresh {
    until: Instant,
    names: HashSet<Vec<u8>>,
}

/// What is known of one directory's lookups.
struct Scan {
    /// Lookups that went to the engines in a row, the last at `last_miss`.
    misses: u32,
    last_miss: Instant,
    /// Lookups since the fetch started, and entries it fetched: the pace.
    lookups: u64,
    fetched: u64,
    /// Names changed through this mount since the page being listed began
    /// (see [`Ahead::fetched`]); `None` once more than [`CHANGES_KEPT`].
    changed: Option<HashSet<Vec<u8>>>,
    /// The running fetch, woken when the lookups catch up.
    fetch: Option<Arc<Notify>>,
}

/// The entries fetched ahead and the directories being watched.
pub struct Ahead {
    ttl: Duration,
    entries: moka::sync::Cache<(u64, Vec<u8>), Obj>,
    scans: Mutex<HashMap<u64, Scan>>,
    /// The negative dentry timeout: how long a made directory stays fresh.
    neg_ttl: Duration,
    fresh: Mutex<HashMap<u64, Fresh>>,
    /// Whole listings by directory (the entries after `.` and `..`).
    listings: moka::sync::Cache<u64, Arc<Vec<Obj>>>,
    /// Names changed through this mount, in any directory, counted.
    changes: AtomicU64,
}

impl Ahead {
    /// Statahead keeping entries for `ttl` (the dentry timeout), made
    /// directories fresh for `neg_ttl` (the negative dentry timeout); each
    /// off when zero.
    pub fn new(ttl: Duration, neg_ttl: Duration) -> Ahead {
        Ahead {
            neg_ttl,
            fresh: Mutex::new(HashMap::new()),
            ttl,
            entries: moka::sync::Cache::builder()
                .max_capacity(if ttl.is_zero() { 0 } else { ENTRIES })
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            scans: Mutex::new(HashMap::new()),
            listings: moka::sync::Cache::builder()
                .max_capacity(if ttl.is_zero() { 0 } else { ENTRIES })
                .weigher(|_, l: &Arc<Vec<Obj>>| u32::try_from(l.len()).unwrap_or(u32::MAX).max(1))
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            changes: AtomicU64::new(0),
        }
    }

    /// The whole listing of `dir` if it was read within the dentry timeout
    /// and no name in it changed through this mount since.
    pub fn listing_of(&self, dir: u64) -> Option<Arc<Vec<Obj>>> {
        self.listings.get(&dir)
    }

    /// The count to hand to [`Ahead::listed`] for a listing about to begin.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// `dir` was listed whole, beginning when [`Ahead::changes`] said
    /// `since`: kept unless some name changed through this mount meanwhile.
    pub fn listed(&self, dir: u64, since: u64, entries: Vec<Obj>) {
        if self.ttl.is_zero() || self.changes() != since {
            return;
        }
        self.listings.insert(dir, Arc::new(entries));
        // A change that counted itself while this was stored has dropped it
        // already, or drops it after: either way nothing stale stays.
        if self.changes() != since {
            self.listings.invalidate(&dir);
        }
    }

    fn scans(&self) -> MutexGuard<'_, HashMap<u64, Scan>> {
        self.scans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry `name` of `dir` if it was fetched ahead. Every lookup of a
    /// watched directory moves its fetch along.
    pub fn get(&self, dir: u64, name: &[u8]) -> Option<Obj> {
        if self.ttl.is_zero() {
            return None;
        }
        let o = self.entries.get(&(dir, name.to_vec()));
        let mut scans = self.scans();
        if let Some(s) = scans.get_mut(&dir) {
            s.lookups += 1;
            if let Some(w) = &s.fetch {
                if s.fetched <= s.lookups + WINDOW / 2 {
                    w.notify_one();
                }
            }
        }
        o
    }

    /// A lookup of `dir` went to the engines and found the name: a fetch to
    /// start, if this makes [`START_AFTER`] in a row and none runs, with
    /// what its [`Ahead::pace`] waits on.
    pub fn missed(&self, dir: u64) -> Option<Arc<Notify>> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = Instant::now();
        let mut scans = self.scans();
        if scans.len() >= TRACKED && !scans.contains_key(&dir) {
            let ttl = self.ttl;
            scans.retain(|_, s| s.fetch.is_some() || now.duration_since(s.last_miss) < ttl);
            if scans.len() >= TRACKED {
                return None;
            }
        }
        let s = scans.entry(dir).or_insert(Scan {
            misses: 0,
            last_miss: now,
            lookups: 0,
            fetched: 0,
            changed: Some(HashSet::new()),
            fetch: None,
        });
        if now.duration_since(s.last_miss) > self.ttl {
            s.misses = 0;
        }
        s.misses += 1;
        s.last_miss = now;
        if s.fetch.is_some() || s.misses < START_AFTER {
            return None;
        }
        let wake = Arc::new(Notify::new());
        s.fetch = Some(wake.clone());
        s.lookups = 0;
        s.fetched = 0;
        Some(wake)
    }

    /// A page of `dir` is about to be listed: the names changed from now
    /// on are recorded until it is stored.
    pub fn listing(&self, dir: u64) {
        if let Some(s) = self.scans().get_mut(&dir) {
            s.changed = Some(HashSet::new());
        }
    }

    /// Stores a page of `dir` whose listing began at the last
    /// [`Ahead::listing`], without the names changed since (the page may
    /// hold them as they were, or not at all).
    pub fn fetched(&self, dir: u64, page: Vec<Obj>) {
        let mut scans = self.scans();
        let Some(s) = scans.get_mut(&dir) else {
            return;
        };
        s.fetched += page.len() as u64;
        let Some(changed) = s.changed.take() else {
            return;
        };
        for o in page {
            if !changed.contains(&o.name) {
                self.entries.insert((dir, o.name.clone()), o);
            }
        }
    }

    /// Waits until the lookups of `dir` are within [`WINDOW`] of the fetch;
    /// false when they stopped coming (for the dentry timeout), and the
    /// fetch should end.
    pub async fn pace(&self, dir: u64, wake: &Notify) -> bool {
        loop {
            let (lookups, ahead) = match self.scans().get(&dir) {
                Some(s) => (s.lookups, s.fetched.saturating_sub(s.lookups)),
                None => return false,
            };
            if ahead < WINDOW {
                return true;
            }
            if tokio::time::timeout(self.ttl, wake.notified())
                .await
                .is_err()
            {
                let moved = self.scans().get(&dir).is_some_and(|s| s.lookups != lookups);
                if !moved {
                    return false;
                }
            }
        }
    }

    /// The fetch of `dir` ended; lookups are counted afresh.
    pub fn done(&self, dir: u64) {
        if let Some(s) = self.scans().get_mut(&dir) {
            s.fetch = None;
            s.misses = 0;
        }
    }

    /// `name` in `dir` was created, removed or renamed through this mount.
    pub fn forget(&self, dir: u64, name: &[u8]) {
        if self.ttl.is_zero() {
            return;
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.listings.invalidate(&dir);
        if let Some(s) = self.scans().get_mut(&dir) {
            if s.fetch.is_some() {
                if let Some(c) = &mut s.changed {
                    if c.len() < CHANGES_KEPT {
                        c.insert(name.to_vec());
                    } else {
                        s.changed = None;
                    }
                }
            }
        }
        self.entries.invalidate(&(dir, name.to_vec()));
    }

    fn fresh(&self) -> MutexGuard<'_, HashMap<u64, Fresh>> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Directory `dir` was just made through this mount, empty.
    pub fn made_dir(&self, dir: u64) {
        if self.neg_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut fresh = self.fresh();
        if fresh.len() >= FRESH_DIRS {
            fresh.retain(|_, f| f.until > now);
            if fresh.len() >= FRESH_DIRS {
                return;
            }
        }
        fresh.insert(
            dir,
            Fresh {
                until: now + self.neg_ttl,
                names: HashSet::new(),
            },
        );
    }

    /// How much longer `name` is known absent from `dir`, if it is.
    pub fn absent_for(&self, dir: u64, name: &[u8]) -> Option<Duration> {
        if self.neg_ttl.is_zero() {
            return None;
        }
        let now = Instant::now();
        let mut fresh = self.fresh();
        let f = fresh.get(&dir)?;
        if f.until <= now {
            fresh.remove(&dir);
            return None;
        }
        (!f.names.contains(name)).then(|| f.until - now)
    }

    /// `name` is about to be created in `dir` (or renamed or linked there)
    /// through this mount: it may exist from now on.
    pub fn naming(&self, dir: u64, name: &[u8]) {
        if self.neg_ttl.is_zero() {
            return;
        }
        let mut fresh = self.fresh();
        let Some(f) = fresh.get_mut(&dir) else {
            return;
        };
        if f.names.len() >= FRESH_NAMES {
            fresh.remove(&dir);
        } else {
            f.names.insert(name.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use dfs::layout::Inode;
    use libdaos::ObjectId;

    fn obj(name: &str) -> Obj {
        Obj {
            oid: ObjectId::NIL,
            parent: ObjectId::NIL,
            name: name.as_bytes().to_vec(),
            inode: Inode::default(),
        }
    }

    #[test]
    fn a_fetch_starts_after_enough_lookups_that_found_the_name() {
        let a = Ahead::new(Duration::from_secs(5), Duration::from_secs(5));
        for _ in 1..START_AFTER {
            assert!(a.missed(7).is_none());
        }
        assert!(a.missed(7).is_some());
        // One at a time per directory.
        assert!(a.missed(7).is_none());
        a.done(7);
        assert!(a.missed(7).is_none());
    }

    #[test]
    fn a_page_keeps_only_the_names_not_changed_while_it_was_listed() {
        let a = Ahead::new(Duration::from_secs(5), Duration::ZERO);
        for _ in 0..START_AFTER {
            a.missed(7);
        }
        a.forget(7, b"before");
        a.listing(7);
        a.forget(7, b"gone");
        a.fetched(7, vec![obj("before"), obj("gone"), obj("kept")]);
        assert!(a.get(7, b"gone").is_none());
        assert_eq!(a.get(7, b"kept").unwrap().name, b"kept");
        assert_eq!(a.get(7, b"before").unwrap().name, b"before");
        a.forget(7, b"kept");
        assert!(a.get(7, b"kept").is_none());
        // Too many changes to remember: the page is dropped whole.
        a.listing(7);
        for i in 0..=CHANGES_KEPT {
            a.forget(7, format!("c{i}").as_bytes());
        }
        a.fetched(7, vec![obj("other")]);
        assert!(a.get(7, b"other").is_none());
        a.listing(7);
        a.fetched(7, vec![obj("other")]);
        assert!(a.get(7, b"other").is_some());
    }

    #[test]
    fn a_whole_listing_is_kept_until_a_name_in_it_changes() {
        let a = Ahead::new(Duration::from_secs(5), Duration::ZERO);
        let since = a.changes();
        a.listed(7, since, vec![obj("x"), obj("y")]);
        assert_eq!(a.listing_of(7).unwrap().len(), 2);
        // A change in another directory leaves it; one in it drops it.
        a.forget(8, b"z");
        assert!(a.listing_of(7).is_some());
        a.forget(7, b"x");
        assert!(a.listing_of(7).is_none());
        // A listing during which any name changed is not kept.
        let since = a.changes();
        a.forget(9, b"w");
        a.listed(7, since, vec![obj("y")]);
        assert!(a.listing_of(7).is_none());
    }

    #[test]
    fn nothing_is_kept_with_caching_off() {
        let a = Ahead::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..2 * START_AFTER {
            assert!(a.missed(7).is_none());
        }
        a.made_dir(8);
        assert!(a.absent_for(8, b"x").is_none());
        a.listed(7, a.changes(), vec![obj("x")]);
        assert!(a.listing_of(7).is_none());
    }

    #[test]
    fn a_made_directory_holds_only_the_names_made_in_it_until_the_window_ends() {
        let a = Ahead::new(Duration::ZERO, Duration::from_millis(300));
        assert!(a.absent_for(8, b"x").is_none(), "not made here");
        a.made_dir(8);
        let left = a.absent_for(8, b"x").unwrap();
        assert!(left <= Duration::from_millis(300));
        a.naming(8, b"x");
        assert!(a.absent_for(8, b"x").is_none());
        assert!(a.absent_for(8, b"y").is_some());
        std::thread::sleep(Duration::from_millis(350));
        assert!(a.absent_for(8, b"y").is_none());
    }

    #[tokio::test]
    async fn the_fetch_waits_for_the_lookups_and_stops_when_they_stop() {
        let a = Ahead::new(Duration::from_millis(200), Duration::ZERO);
        for _ in 1..START_AFTER {
            a.missed(7);
        }
        let f = a.missed(7).unwrap();
        assert!(a.pace(7, &f).await);
        let page: Vec<Obj> = (0..WINDOW).map(|i| obj(&format!("f{i}"))).collect();
        a.listing(7);
        a.fetched(7, page);
        // A window ahead and no lookups: it gives up after the timeout.
        let t = Instant::now();
        assert!(!a.pace(7, &f).await);
        assert!(t.elapsed() >= Duration::from_millis(200));
        // Lookups catching up let it go on.
        for i in 0..WINDOW / 2 + 1 {
            a.get(7, format!("f{i}").as_bytes());
        }
        assert!(a.pace(7, &f).await);
    }
}
