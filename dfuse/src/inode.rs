//! The inode table: FUSE inode numbers (the dfs inode number, `oid.lo`; the
//! root is 1) to the dfs object they name, with the kernel's lookup count and
//! the number of open handles.
//!
//! Invariants: an entry exists while the kernel holds a lookup on it or a
//! handle is open; `forget` subtracts with `saturating_sub` and removes only
//! at zero lookups and zero opens; the root is never removed. An object
//! unlinked while open (an orphan) is freed at its last release, never
//! before; one unlinked while closed is freed at once. The index by
//! (parent, name) holds exactly the entries' current names (not the
//! root's, not orphans'): it is a guess of what a name holds, which the
//! engines check before acting on it.

use std::collections::HashMap;

use dfs::{Errno, Obj};
use libdaos::ObjectId;

/// The FUSE root inode.
pub const ROOT_INO: u64 = 1;

/// One inode the kernel knows.
#[derive(Debug, Clone)]
pub struct Entry {
    pub obj: Obj,
    pub lookups: u64,
    pub open: u32,
    /// No name reaches it any more; attributes come from the last record.
    pub orphan: bool,
    /// Free this object at the last release.
    pub free_on_close: bool,
    /// (mtime, size) when last opened, to keep the page cache if unchanged.
    pub cache_stamp: Option<(i64, u64)>,
    /// Bytes were written through this mount since the entry was made.
    pub written: bool,
}

/// What a forget did: whether the entry went, and an object to free (the
/// last reference to an unlinked file).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forgot {
    pub removed: bool,
    pub free: Option<ObjectId>,
}

/// The table; callers hold it behind a mutex, never across an `.await`.
#[derive(Debug)]
pub struct InodeTable {
    map: HashMap<u64, Entry>,
    /// Parent inode, then name, to the inode the name was last seen to hold.
    names: HashMap<u64, HashMap<Vec<u8>, u64>>,
}

/// The FUSE inode number of a dfs object.
pub fn ino_of(oid: ObjectId) -> u64 {
    oid.lo
}

impl InodeTable {
    pub fn new(root: Obj) -> InodeTable {
        let mut map = HashMap::new();
        map.insert(
            ROOT_INO,
            Entry {
                obj: root,
                lookups: 1,
                open: 0,
                orphan: false,
                free_on_close: false,
                cache_stamp: None,
                written: false,
            },
        );
        InodeTable {
            map,
            names: HashMap::new(),
        }
    }

    /// What `name` in directory `parent` held when last seen through this
    /// table (a lookup, a create, a rename); it may have changed since.
    pub fn named(&self, parent: u64, name: &[u8]) -> Option<Obj> {
        let ino = self.names.get(&parent)?.get(name)?;
        self.map.get(ino).map(|e| e.obj.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, ino: u64) -> Option<&Entry> {
        self.map.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Entry> {
        self.map.get_mut(&ino)
    }

    /// The object of `ino`; ESTALE if the kernel names one it forgot.
    pub fn obj(&self, ino: u64) -> Result<Obj, Errno> {
        self.map
            .get(&ino)
            .map(|e| e.obj.clone())
            .ok_or(Errno(libc::ESTALE))
    }

    /// Records one more kernel lookup of `obj` (found under a name just now,
    /// so its parent and name are current) and returns its inode number.
    pub fn remember(&mut self, obj: Obj) -> u64 {
        let ino = ino_of(obj.oid);
        if ino != ROOT_INO {
            if let Some(e) = self.map.get(&ino) {
                unindex(&mut self.names, ino, &e.obj);
            }
            index(&mut self.names, ino, &obj);
        }
        match self.map.get_mut(&ino) {
            Some(e) => {
                e.lookups = e.lookups.saturating_add(1);
                if ino != ROOT_INO {
                    e.obj = obj;
                    e.orphan = false;
                }
            }
            None => {
                self.map.insert(
                    ino,
                    Entry {
                        obj,
                        lookups: 1,
                        open: 0,
                        orphan: false,
                        free_on_close: false,
                        cache_stamp: None,
                        written: false,
                    },
                );
            }
        }
        ino
    }

    /// Points a known inode at where it is now named (after a rename or a
    /// link), without counting a lookup.
    pub fn moved(&mut self, obj: Obj) {
        let ino = ino_of(obj.oid);
        if ino == ROOT_INO {
            return;
        }
        let Some(e) = self.map.get_mut(&ino) else {
            return;
        };
        unindex(&mut self.names, ino, &e.obj);
        index(&mut self.names, ino, &obj);
        e.obj = obj;
    }

    /// The kernel dropped `n` lookups. Returns true if the entry went away.
    pub fn forget(&mut self, ino: u64, n: u64) -> Forgot {
        if ino == ROOT_INO {
            return Forgot::default();
        }
        let Some(e) = self.map.get_mut(&ino) else {
            return Forgot::default();
        };
        e.lookups = e.lookups.saturating_sub(n);
        if e.lookups == 0 && e.open == 0 {
            let free = e.free_on_close.then_some(e.obj.oid);
            self.remove(ino);
            return Forgot {
                removed: true,
                free,
            };
        }
        Forgot::default()
    }

    /// One more open handle on `ino`.
    pub fn opened(&mut self, ino: u64) -> Result<(), Errno> {
        let e = self.map.get_mut(&ino).ok_or(Errno(libc::ESTALE))?;
        e.open = e.open.saturating_add(1);
        Ok(())
    }

    /// A handle on `ino` closed. Returns the object to free if that was the
    /// last reference (handle or kernel lookup) of an unlinked file.
    pub fn released(&mut self, ino: u64) -> Option<ObjectId> {
        let e = self.map.get_mut(&ino)?;
        e.open = e.open.saturating_sub(1);
        if e.open > 0 || e.lookups > 0 {
            return None;
        }
        let free = e.free_on_close.then_some(e.obj.oid);
        self.remove(ino);
        free
    }

    fn remove(&mut self, ino: u64) {
        if let Some(e) = self.map.remove(&ino) {
            unindex(&mut self.names, ino, &e.obj);
        }
    }

    /// dfs says no name reaches `oid` any more. Returns it if it may be
    /// freed now (no handle and no kernel lookup refers to it: an inode the
    /// kernel still holds may yet be opened, as on a local filesystem);
    /// otherwise it is freed at the last release or forget.
    pub fn unlinked(&mut self, oid: ObjectId) -> Option<ObjectId> {
        let ino = ino_of(oid);
        match self.map.get_mut(&ino) {
            Some(e) => {
                unindex(&mut self.names, ino, &e.obj);
                e.orphan = true;
                // The record's home is gone: attributes come from the copy we hold.
                e.obj.inode.shared = false;
                e.obj.inode.nlink = 0;
                if e.open > 0 || e.lookups > 0 {
                    e.free_on_close = true;
                    None
                } else {
                    Some(oid)
                }
            }
            None => Some(oid),
        }
    }
}

/// Points `o`'s name in the index at `ino`.
fn index(names: &mut HashMap<u64, HashMap<Vec<u8>, u64>>, ino: u64, o: &Obj) {
    names
        .entry(ino_of(o.parent))
        .or_default()
        .insert(o.name.clone(), ino);
}

/// Drops `o`'s name from the index if it still points at `ino`.
fn unindex(names: &mut HashMap<u64, HashMap<Vec<u8>, u64>>, ino: u64, o: &Obj) {
    let parent = ino_of(o.parent);
    if let Some(m) = names.get_mut(&parent) {
        if m.get(&o.name) == Some(&ino) {
            m.remove(&o.name);
            if m.is_empty() {
                names.remove(&parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs::layout::Inode;

    fn obj(lo: u64) -> Obj {
        Obj {
            oid: ObjectId::new(7, lo),
            parent: ObjectId::new(7, 1),
            name: format!("f{lo}").into_bytes(),
            inode: Inode {
                mode: libc::S_IFREG | 0o644,
                nlink: 1,
                ..Inode::default()
            },
        }
    }

    #[test]
    fn lookup_counts() {
        let mut t = InodeTable::new(obj(1));
        assert_eq!(t.remember(obj(10)), 10);
        assert_eq!(t.remember(obj(10)), 10);
        assert!(!t.forget(10, 1).removed);
        assert!(t.forget(10, 5).removed);
        assert!(t.obj(10).is_err());
        // The root stays whatever the kernel says.
        assert!(!t.forget(ROOT_INO, u64::MAX).removed);
        assert!(t.obj(ROOT_INO).is_ok());
        assert!(!t.forget(99, 1).removed);
    }

    #[test]
    fn open_keeps_entry_and_frees_orphan_at_last_close() {
        let mut t = InodeTable::new(obj(1));
        t.remember(obj(20));
        t.opened(20).unwrap();
        t.opened(20).unwrap();
        assert_eq!(t.unlinked(ObjectId::new(7, 20)), None);
        assert!(!t.forget(20, 1).removed);
        assert!(t.get(20).unwrap().orphan);
        assert_eq!(t.released(20), None);
        assert_eq!(t.released(20), Some(ObjectId::new(7, 20)));
        assert!(t.get(20).is_none());
        // Closed but still known to the kernel: freed at its forget.
        t.remember(obj(21));
        assert_eq!(t.unlinked(ObjectId::new(7, 21)), None);
        assert_eq!(
            t.forget(21, 1),
            Forgot {
                removed: true,
                free: Some(ObjectId::new(7, 21))
            }
        );
        // Unknown to the kernel and closed: free at once.
        assert_eq!(t.unlinked(ObjectId::new(7, 22)), Some(ObjectId::new(7, 22)));
    }

    #[test]
    fn moved_updates_name() {
        let mut t = InodeTable::new(obj(1));
        t.remember(obj(30));
        let mut o = obj(30);
        o.name = b"renamed".to_vec();
        t.moved(o);
        assert_eq!(t.obj(30).unwrap().name, b"renamed");
        assert_eq!(t.get(30).unwrap().lookups, 1);
        assert!(t.named(1, b"f30").is_none());
        assert_eq!(t.named(1, b"renamed").unwrap().oid, ObjectId::new(7, 30));
    }

    #[test]
    fn names_follow_the_entries() {
        let mut t = InodeTable::new(obj(1));
        let f = |n: &str| n.as_bytes().to_vec();
        t.remember(obj(40));
        assert_eq!(t.named(1, b"f40").unwrap().oid, ObjectId::new(7, 40));
        assert!(t.named(2, b"f40").is_none());
        // A second name of a linked file replaces the first.
        let mut other = obj(40);
        other.name = f("link");
        t.remember(other);
        assert!(t.named(1, b"f40").is_none());
        assert_eq!(t.named(1, b"link").unwrap().name, f("link"));
        // A name given to another file points at that one; forgetting the
        // first leaves it.
        let mut reuse = obj(41);
        reuse.name = f("link");
        t.remember(reuse);
        assert!(t.forget(40, 2).removed);
        assert_eq!(t.named(1, b"link").unwrap().oid, ObjectId::new(7, 41));
        // Unlinked, released, forgotten: no name.
        assert_eq!(t.unlinked(ObjectId::new(7, 41)), None);
        assert!(t.named(1, b"link").is_none());
        t.remember(obj(42));
        t.opened(42).unwrap();
        assert!(!t.forget(42, 1).removed);
        assert!(t.named(1, b"f42").is_some());
        assert_eq!(t.released(42), None);
        assert!(t.named(1, b"f42").is_none());
        assert!(t.names.is_empty());
        assert!(t.named(1, b"f1").is_none(), "the root has no name here");
    }
}
