//! The filesystem: FUSE requests as dfs calls.
//!
//! [`Core`] holds the logic, each operation an `async fn` returning
//! `Result<T, Errno>` (testable without a mount). [`DfuseFs`] is the
//! `fuser::Filesystem`: it copies each request's arguments and starts the
//! operation on the session thread, which hands it to the tokio runtime at
//! its first wait ([`crate::task`]); the operation replies when done, so a
//! slow request never holds up the others.
//!
//! Invariants: the inode table and handle maps are behind `std` mutexes held
//! only between awaits; the daemon's attribute cache (moka, for the
//! attribute timeout) never outlives a change made through this mount: every
//! operation that changes an inode drops or replaces its entry; data is
//! durable in the engines when a write returns; field changes deferred on an
//! open file ([`Core::defer_fields`]) are stored before any close or fsync
//! through the mount returns and before any lookup, listing or name change
//! reads the engines; an object unlinked while open is freed at its last
//! release (see [`crate::inode`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dfs::{layout::Inode, Attr, Dfs, Errno, Kind, Obj, SetAttr, Special};
use fuser::{
    AccessFlags, BsdFileFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use libdaos::ObjectId;

use crate::ahead::Ahead;
use crate::inode::{ino_of, InodeTable, ROOT_INO};
use crate::opts::Caching;

/// The largest write the kernel sends in one request.
pub const MAX_WRITE: u32 = 1 << 20;
/// Directory entries fetched from dfs per page.
const DIR_PAGE: u32 = 128;
/// The statfs block size.
const BSIZE: u64 = 4096;
/// Inodes whose attributes the daemon keeps at most.
const ATTR_CACHE_ENTRIES: u64 = 100_000;

/// One directory entry as readdir serves it.
#[derive(Debug, Clone)]
pub struct DirEnt {
    pub ino: u64,
    pub kind: Kind,
    pub name: Vec<u8>,
    /// The object (`None` for `.` and `..`), for readdirplus.
    pub obj: Option<Obj>,
}

/// An open directory: the entries handed out so far, in order, and the dfs
/// anchor after the last. Offset `k` is the entry at position `k - 1`, so an
/// offset stays valid while entries are added or removed.
#[derive(Debug, Default)]
struct DirStream {
    entries: Vec<DirEnt>,
    anchor: Option<(usize, Vec<u8>)>,
    done: bool,
    /// [`Ahead::changes`] when the listing began at its first entry: the
    /// whole of it may be kept for the next open (see [`crate::ahead`]).
    since: Option<u64>,
}

fn dir_ent(o: Obj) -> DirEnt {
    DirEnt {
        ino: ino_of(o.oid),
        kind: o.kind(),
        name: o.name.clone(),
        obj: Some(o),
    }
}

#[derive(Debug)]
enum Handle {
    File {
        ino: u64,
        /// Append at the current size (the kernel does it with write-back).
        append: bool,
    },
    Dir {
        ino: u64,
        stream: Arc<tokio::sync::Mutex<DirStream>>,
    },
}

/// Who a new inode belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The filesystem's state and operations.
pub struct Core {
    dfs: Dfs,
    inodes: Mutex<InodeTable>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    pub caching: Caching,
    /// Attributes by inode, for the attribute timeout (empty when caching is off).
    attrs: moka::sync::Cache<u64, Attr>,
    /// Inodes known to have no `security.capability`, for the attribute
    /// timeout: the kernel asks for it before every write(2) to know whether
    /// to drop it, and the answer is nearly always "none".
    no_caps: moka::sync::Cache<u64, ()>,
    /// Serializes appends done here (without write-back) so two do not land
    /// at the same size.
    append_lock: tokio::sync::Mutex<()>,
    /// Permits of the background frees (see [`Core::free_later`]).
    frees: Arc<tokio::sync::Semaphore>,
    /// Directory entries fetched ahead of the kernel's lookups.
    ahead: Ahead,
    /// Directories whose listing the kernel keeps in its page cache, from
    /// the open that had it start one, for the dentry timeout (see
    /// [`Core::opendir`]).
    kernel_listings: moka::sync::Cache<u64, ()>,
    /// Field changes (times, permissions, owner) of open files not stored
    /// yet, merged per inode (see [`Core::defer_fields`]).
    deferred: Mutex<HashMap<u64, (Obj, SetAttr)>>,
    /// Held while deferred changes are stored: whoever stores them next
    /// waits for those in flight.
    storing: tokio::sync::Mutex<()>,
}

/// Background frees at once; more unlinks wait for one to finish.
const FREES_IN_FLIGHT: usize = 64;

/// A daemon-side cache whose entries live for the attribute timeout (none
/// when caching is off).
fn attr_timed_cache<K, V>(caching: &Caching) -> moka::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(if caching.attr.is_zero() {
            0
        } else {
            ATTR_CACHE_ENTRIES
        })
        .time_to_live(caching.attr.max(Duration::from_millis(1)))
        .build()
}

/// The xattr the kernel asks for before every write(2).
const CAPS_XATTR: &[u8] = b"security.capability";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere does not make the table wrong: keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn attr_of_new(o: &Obj, blksize: u32) -> Attr {
    let kind = o.kind();
    Attr {
        ino: ino_of(o.oid),
        oid: o.oid,
        kind,
        mode: o.inode.mode,
        uid: o.inode.uid,
        gid: o.inode.gid,
        size: match kind {
            Kind::Symlink => o.inode.symlink.len() as u64,
            Kind::Dir => 4096,
            _ => 0,
        },
        nlink: o.inode.nlink.max(1),
        rdev: o.inode.rdev,
        atime: o.inode.atime,
        mtime: o.inode.mtime,
        ctime: o.inode.ctime,
        blksize,
    }
}

/// A SETATTR of a file's mtime and ctime and nothing else, naming an open
/// file: the kernel's write-back cache sending the times it gave cached
/// writes, as it writes them back or at close. `utimensat` on such a mount
/// sends mtime and ctime too but never names a file; `ftruncate` names one
/// with a size.
fn is_times_write_back(s: &SetAttr, fh: Option<u64>) -> bool {
    fh.is_some()
        && s.mtime.is_some()
        && s.ctime.is_some()
        && s.size.is_none()
        && s.atime.is_none()
        && s.mode.is_none()
        && s.uid.is_none()
        && s.gid.is_none()
}

/// Held attributes `a` after [`Dfs::set_fields`] of `s` at `ctime`.
fn held_fields(a: &mut Attr, s: &SetAttr, ctime: i64) {
    if let Some(m) = s.mode {
        a.mode = (a.mode & libc::S_IFMT) | (m & !libc::S_IFMT);
    }
    a.uid = s.uid.unwrap_or(a.uid);
    a.gid = s.gid.unwrap_or(a.gid);
    a.atime = s.atime.unwrap_or(a.atime);
    a.mtime = s.mtime.unwrap_or(a.mtime);
    a.ctime = ctime;
}

fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

/// The FUSE view of dfs attributes.
pub fn fuse_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks(),
        atime: time_of(a.atime),
        mtime: time_of(a.mtime),
        ctime: time_of(a.ctime),
        crtime: time_of(a.ctime),
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

impl Core {
    pub async fn new(dfs: Dfs, caching: Caching) -> Result<Core, Errno> {
        let root = dfs.root().await?;
        if ino_of(root.oid) != ROOT_INO {
            tracing::error!(oid = ?root.oid, "dfs root does not have inode number 1");
            return Err(Errno(libc::EIO));
        }
        // Entries fetched ahead are trusted for the dentry timeout, their
        // attributes for the attribute timeout: both must be on.
        let ahead = Ahead::new(
            if caching.attr.is_zero() {
                Duration::ZERO
            } else {
                caching.dentry
            },
            caching.ndentry,
        );
        Ok(Core {
            dfs,
            inodes: Mutex::new(InodeTable::new(root)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            attrs: attr_timed_cache(&caching),
            no_caps: attr_timed_cache(&caching),
            kernel_listings: moka::sync::Cache::builder()
                .max_capacity(if caching.dentry.is_zero() {
                    0
                } else {
                    ATTR_CACHE_ENTRIES
                })
                .time_to_live(caching.dentry.max(Duration::from_millis(1)))
                .build(),
            caching,
            append_lock: tokio::sync::Mutex::new(()),
            frees: Arc::new(tokio::sync::Semaphore::new(FREES_IN_FLIGHT)),
            ahead,
            deferred: Mutex::new(HashMap::new()),
            storing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn dfs(&self) -> &Dfs {
        &self.dfs
    }

    fn obj(&self, ino: u64) -> Result<Obj, Errno> {
        lock(&self.inodes).obj(ino)
    }

    fn dir(&self, ino: u64) -> Result<Obj, Errno> {
        let o = self.obj(ino)?;
        if o.kind() != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        Ok(o)
    }

    fn blksize(&self) -> u32 {
        self.dfs.chunk_size().min(u64::from(u32::MAX)) as u32
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    /// Frees `oid` now, or at the last release if it is open.
    async fn gone(&self, oid: ObjectId) {
        let free = lock(&self.inodes).unlinked(oid);
        if let Some(oid) = free {
            self.free_later(oid).await;
        }
    }

    /// Frees an object nobody names or holds any more, in the background:
    /// the name is already gone durably, so the reply need not wait for the
    /// punch (a crash in between leaves an unreachable object, as DAOS's
    /// dfs_remove can). At most [`FREES_IN_FLIGHT`] at once; [`Core::settle`]
    /// waits for them all.
    pub async fn free_later(&self, oid: ObjectId) {
        let Ok(permit) = self.frees.clone().acquire_owned().await else {
            return;
        };
        let dfs = self.dfs.clone();
        tokio::spawn(async move {
            match dfs.free(oid).await {
                Ok(()) => tracing::debug!(ino = ino_of(oid), "object freed"),
                Err(e) => tracing::warn!(?oid, "freeing an unlinked object: {e}"),
            }
            drop(permit);
        });
    }

    /// Stores the deferred field changes and waits for the background
    /// frees (before the daemon exits).
    pub async fn settle(&self) {
        self.store_deferred().await;
        let _all = self.frees.acquire_many(FREES_IN_FLIGHT as u32).await;
    }

    /// The mode and group of a new entry in `parent`: in a set-group-ID
    /// directory it takes the directory's group, and a new directory keeps
    /// the set-group-ID bit (as local filesystems do). The parent's mode and
    /// group come from the table (refreshed by every lookup and by setattr
    /// through this mount), not from the engines: a create costs no stat.
    fn inherit(&self, parent: u64, mode: u32, gid: u32) -> Result<(u32, u32), Errno> {
        let p = self.obj(parent)?.inode;
        if p.mode & libc::S_ISGID == 0 {
            return Ok((mode, gid));
        }
        let mode = if mode & libc::S_IFMT == libc::S_IFDIR {
            mode | libc::S_ISGID
        } else {
            mode
        };
        Ok((mode, p.gid))
    }

    fn cached(&self, a: &Attr) {
        if !self.caching.attr.is_zero() {
            self.attrs.insert(a.ino, a.clone());
        }
    }

    fn changed(&self, ino: u64) {
        self.attrs.invalidate(&ino);
    }

    /// An entry of directory `dir` was created or removed at `t` (the time
    /// dfs gave the directory), changing its link count by `links`: its
    /// cached attributes follow, so the kernel's next stat of the directory
    /// (it asks after every such change) needs no engine.
    fn dir_changed(&self, dir: u64, t: i64, links: i32) {
        self.attrs.entry(dir).and_compute_with(|e| match e {
            Some(e) => {
                let mut a = e.into_value();
                a.mtime = t;
                a.ctime = t;
                a.nlink = a.nlink.saturating_add_signed(links);
                moka::ops::compute::Op::Put(a)
            }
            None => moka::ops::compute::Op::Nop,
        });
    }

    /// A write through this mount ended at `end`: the cached size and times
    /// follow (the kernel's stat and the time write-back at close need no
    /// engine; the write's epoch is the time the engines show).
    fn grown(&self, ino: u64, end: u64) {
        if let Some(e) = lock(&self.inodes).get_mut(ino) {
            e.written = true;
        }
        let now = self.dfs.now();
        self.attrs.entry(ino).and_compute_with(|e| match e {
            Some(e) => {
                let mut a = e.into_value();
                a.size = a.size.max(end);
                a.mtime = a.mtime.max(now);
                a.ctime = a.ctime.max(now);
                moka::ops::compute::Op::Put(a)
            }
            None => moka::ops::compute::Op::Nop,
        });
    }

    /// `o` was just created in directory `parent` (with the parent's new
    /// times as its own). A new inode has no extended attributes yet.
    fn created(&self, parent: u64, o: &Obj) {
        let links = if o.kind() == Kind::Dir { 1 } else { 0 };
        self.dir_changed(parent, o.inode.ctime, links);
        self.no_caps_known(ino_of(o.oid));
    }

    /// The last name of `ino` went at `t`: its cached attributes (if any)
    /// become an unlinked inode's, so the kernel's stat and ctime update
    /// that follow every unlink need no engine.
    fn orphaned(&self, ino: u64, t: i64) {
        self.attrs.entry(ino).and_compute_with(|e| match e {
            Some(e) => {
                let mut a = e.into_value();
                a.ctime = t;
                a.nlink = 0;
                moka::ops::compute::Op::Put(a)
            }
            None => moka::ops::compute::Op::Nop,
        });
    }

    fn no_caps_known(&self, ino: u64) {
        if !self.caching.attr.is_zero() {
            self.no_caps.insert(ino, ());
        }
    }

    /// What `stat` shows of `o` once no name reaches it: its last record,
    /// no links.
    async fn unlinked_attr(&self, mut o: Obj) -> Result<Attr, Errno> {
        o.inode.shared = false;
        let mut a = self.dfs.entry_attr(&o).await?;
        a.nlink = 0;
        Ok(a)
    }

    /// The number of inodes the table holds (the root included).
    pub fn inode_count(&self) -> usize {
        lock(&self.inodes).len()
    }

    /// How much longer `name` is known absent from directory `parent` (see
    /// [`crate::ahead`]): the lookup's answer, with no engine call.
    pub fn absent_for(&self, parent: u64, name: &[u8]) -> Option<Duration> {
        // A name no entry can have is refused by dfs, not absent.
        dfs::check_name(name).ok()?;
        self.ahead.absent_for(parent, name)
    }

    pub async fn lookup(self: &Arc<Self>, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let dir = self.dir(parent)?;
        self.store_deferred().await;
        let o = match self.ahead.get(parent, name) {
            Some(o) => o,
            None => {
                let o = self.dfs.lookup(&dir, name).await?;
                // Only names that exist count: a create's negative lookups
                // would have a growing directory listed over and over.
                if let Some(wake) = self.ahead.missed(parent) {
                    tokio::spawn(self.clone().fetch_ahead(parent, dir, wake));
                }
                o
            }
        };
        let a = self.entry_attr(&o).await?;
        lock(&self.inodes).remember(o);
        Ok(a)
    }

    /// Lists directory `ino` ahead of the kernel's lookups, a page at a
    /// time, fetching each page's attributes at once (see [`crate::ahead`]).
    async fn fetch_ahead(self: Arc<Self>, ino: u64, dir: Obj, wake: Arc<tokio::sync::Notify>) {
        let mut anchor = None;
        while self.ahead.pace(ino, &wake).await {
            self.store_deferred().await;
            self.ahead.listing(ino);
            let (page, next) = match self.dfs.readdir(&dir, anchor.take(), DIR_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(ino, "statahead stopped: {e:?}");
                    break;
                }
            };
            // A failure leaves the lookup to ask again.
            self.entry_attrs(&page.iter().collect::<Vec<_>>()).await;
            self.ahead.fetched(ino, page);
            match next {
                Some(a) => anchor = Some(a),
                None => break,
            }
        }
        self.ahead.done(ino);
    }

    /// The attributes of a directory entry: cached ones within the attribute
    /// timeout (not cached again, which would restart it), else read and
    /// cached.
    async fn entry_attr(&self, o: &Obj) -> Result<Attr, Errno> {
        self.entry_attrs(&[o])
            .await
            .pop()
            .unwrap_or(Err(Errno(libc::EIO)))
    }

    /// [`Core::entry_attr`] of several entries, in order; those not cached
    /// are read together (one size query per engine for all their files).
    async fn entry_attrs(&self, objs: &[&Obj]) -> Vec<Result<Attr, Errno>> {
        let cached: Vec<Option<Attr>> = objs
            .iter()
            .map(|o| self.attrs.get(&ino_of(o.oid)))
            .collect();
        let missing: Vec<&Obj> = objs
            .iter()
            .zip(&cached)
            .filter(|(_, a)| a.is_none())
            .map(|(o, _)| *o)
            .collect();
        let mut read = self.dfs.entry_attrs(&missing).await.into_iter();
        cached
            .into_iter()
            .map(|c| match c {
                Some(a) => Ok(a),
                None => {
                    let a = read.next().unwrap_or(Err(Errno(libc::EIO)));
                    if let Ok(a) = &a {
                        self.cached(a);
                    }
                    a
                }
            })
            .collect()
    }

    /// The kernel dropped `n` lookups of `ino`; frees an unlinked file it
    /// was the last reference to.
    pub async fn forget(&self, ino: u64, n: u64) {
        let free = lock(&self.inodes).forget(ino, n).free;
        if let Some(oid) = free {
            self.free_later(oid).await;
        }
    }

    /// `getattr` when the answer is in memory (cached attributes, or an
    /// unknown inode): no engine call, so it can be answered in place.
    pub fn getattr_now(&self, ino: u64) -> Option<Result<Attr, Errno>> {
        if lock(&self.inodes).get(ino).is_none() {
            return Some(Err(Errno(libc::ESTALE)));
        }
        self.attrs.get(&ino).map(Ok)
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        let (o, orphan) = {
            let t = lock(&self.inodes);
            let e = t.get(ino).ok_or(Errno(libc::ESTALE))?;
            (e.obj.clone(), e.orphan)
        };
        if let Some(a) = self.attrs.get(&ino) {
            return Ok(a);
        }
        self.store_deferred().await;
        if orphan {
            let a = self.unlinked_attr(o).await?;
            self.cached(&a);
            return Ok(a);
        }
        match self.dfs.getattr(&o).await {
            Ok(a) => {
                self.cached(&a);
                Ok(a)
            }
            // No name reaches it any more: a rename or unlink (here, in the
            // moment before it is marked, or on another client) took its
            // last name while the kernel still holds it. It is an unlinked
            // inode, as a local filesystem would show it.
            Err(Errno(libc::ENOENT)) => self.unlinked_attr(o).await,
            Err(e) => Err(e),
        }
    }

    /// Changes what `s` names. `fh` is the open file the kernel names, which
    /// it does only for a truncate and for the write-back of the times its
    /// cache gave a file's writes ([`is_times_write_back`]).
    pub async fn setattr(
        self: &Arc<Self>,
        ino: u64,
        s: &SetAttr,
        fh: Option<u64>,
    ) -> Result<Attr, Errno> {
        if is_times_write_back(s, fh) {
            if let Some(a) = self.written_times(ino, s) {
                return Ok(a);
            }
        }
        let (o, orphan) = {
            let t = lock(&self.inodes);
            let e = t.get(ino).ok_or(Errno(libc::ESTALE))?;
            (e.obj.clone(), e.orphan)
        };
        if !orphan {
            // The record a fetched-ahead entry holds would be stale.
            self.ahead.forget(ino_of(o.parent), &o.name);
        }
        if !orphan && s.size.is_none() && o.kind() != Kind::Dir {
            // The change happens now by the container's clock, not the
            // kernel's coarser one: dfs takes the change time as when an
            // mtime was set, to order it against the epochs of writes.
            let s = &SetAttr {
                ctime: Some(self.dfs.now()),
                ..s.clone()
            };
            if let Some(a) = self.defer_fields(ino, &o, s) {
                return Ok(a);
            }
            self.store_deferred().await;
            return self.set_fields(ino, &o, s).await;
        }
        self.store_deferred().await;
        if !orphan {
            let known_size = self.attrs.get(&ino).map(|a| a.size);
            self.changed(ino);
            let a = self.dfs.setattr(&o, s, known_size).await?;
            self.cached(&a);
            // What `inherit` reads of a directory.
            if let Some(e) = lock(&self.inodes).get_mut(ino) {
                e.obj.inode.mode = a.mode;
                e.obj.inode.gid = a.gid;
            }
            return Ok(a);
        }
        // No entry holds an orphan's record: change the size on the object
        // and the rest in the copy we hold.
        if let Some(size) = s.size {
            self.dfs.set_size(&o, size).await?;
        }
        let now = self.dfs.now();
        let o = {
            let mut t = lock(&self.inodes);
            let e = t.get_mut(ino).ok_or(Errno(libc::ESTALE))?;
            let r: &mut Inode = &mut e.obj.inode;
            if let Some(m) = s.mode {
                r.mode = (r.mode & libc::S_IFMT) | (m & !libc::S_IFMT);
            }
            if let Some(u) = s.uid {
                r.uid = u;
            }
            if let Some(g) = s.gid {
                r.gid = g;
            }
            if let Some(a) = s.atime {
                r.atime = a;
            }
            if let Some(m) = s.mtime {
                r.mtime = m;
                r.mtime_at = now;
            }
            r.ctime = s.ctime.unwrap_or(now);
            e.obj.clone()
        };
        // No name reaches it, so only open handles can change its size: the
        // cached attributes hold unless this call changed the size.
        let a = match self.attrs.get(&ino).filter(|_| s.size.is_none()) {
            Some(mut a) => {
                let r = &o.inode;
                (a.mode, a.uid, a.gid) = (r.mode, r.uid, r.gid);
                (a.atime, a.mtime, a.ctime) = (r.atime, r.mtime, r.ctime);
                a
            }
            None => self.unlinked_attr(o).await?,
        };
        self.cached(&a);
        Ok(a)
    }

    /// The kernel's write-back of the times of writes it cached, answered
    /// without the engines, as long as the file was written through this
    /// mount: each write's epoch already is its modification time (dfs shows
    /// a file's mtime as its newest write's epoch where that is later than
    /// the mtime last set). `None` where the attributes are not held.
    fn written_times(&self, ino: u64, s: &SetAttr) -> Option<Attr> {
        let written = lock(&self.inodes).get(ino).is_some_and(|e| e.written);
        if !written {
            return None;
        }
        let mut a = self.attrs.get(&ino)?;
        let ctime = s.ctime.unwrap_or(a.ctime);
        held_fields(&mut a, s, ctime);
        self.cached(&a);
        Some(a)
    }

    /// A change of the fields [`Core::set_fields`] writes, to a file open
    /// through this mount whose attributes are held, kept here instead of
    /// stored: `tar`, `cp -p` and `rsync` set times, owner and mode one call
    /// at a time between writing a file and closing it, and all of them go
    /// in one write. They are stored ([`Core::store_deferred`]) when any
    /// file is flushed (closed) or synced, before anything here reads or
    /// changes a name or record from the engines, and at the latest after
    /// the attribute timeout, which is how long other mounts may show
    /// attributes they hold anyway. `None`: not deferred.
    fn defer_fields(self: &Arc<Self>, ino: u64, o: &Obj, s: &SetAttr) -> Option<Attr> {
        if lock(&self.inodes).get(ino).is_none_or(|e| e.open == 0) {
            return None;
        }
        let mut a = self.attrs.get(&ino)?;
        let ctime = s.ctime.unwrap_or_else(|| self.dfs.now());
        let first = {
            let mut d = lock(&self.deferred);
            let first = d.is_empty();
            let (_, set) = d
                .entry(ino)
                .or_insert_with(|| (o.clone(), SetAttr::default()));
            set.mode = s.mode.or(set.mode);
            set.uid = s.uid.or(set.uid);
            set.gid = s.gid.or(set.gid);
            set.atime = s.atime.or(set.atime);
            set.mtime = s.mtime.or(set.mtime);
            set.ctime = Some(ctime);
            first
        };
        if first {
            let core = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(core.caching.attr).await;
                core.store_deferred().await;
            });
        }
        held_fields(&mut a, s, ctime);
        self.cached(&a);
        Some(a)
    }

    /// Stores every deferred field change ([`Core::defer_fields`]): when it
    /// returns, all deferred before the call are stored or failed. A failure
    /// (another client removed the file) is logged, the file's attributes
    /// are read again, and it is returned with the inode, for its close or
    /// fsync to report.
    pub async fn store_deferred(&self) -> Vec<(u64, Errno)> {
        let _one = self.storing.lock().await;
        let all: Vec<(u64, (Obj, SetAttr))> = lock(&self.deferred).drain().collect();
        if all.is_empty() {
            return Vec::new();
        }
        let stored = futures::future::join_all(all.iter().map(|(ino, (o, s))| async move {
            let r = self.dfs.set_fields(o, s).await;
            // Whatever a listing fetched ahead meanwhile is stale.
            self.ahead.forget(ino_of(o.parent), &o.name);
            r.err().map(|e| {
                tracing::warn!(ino, "storing deferred attribute changes: {e}");
                self.changed(*ino);
                (*ino, e)
            })
        }))
        .await;
        stored.into_iter().flatten().collect()
    }

    /// A change of a file's permissions, owner or times but not its size
    /// (`utimensat`, `chmod`, `chown`): one blind write, and the attributes
    /// this mount holds follow it without asking the engines again.
    async fn set_fields(&self, ino: u64, o: &Obj, s: &SetAttr) -> Result<Attr, Errno> {
        let held = self.attrs.get(&ino);
        self.changed(ino);
        let ctime = self.dfs.set_fields(o, s).await?;
        let a = match held {
            Some(mut a) => {
                held_fields(&mut a, s, ctime);
                a
            }
            None => self.dfs.getattr(o).await?,
        };
        self.cached(&a);
        Ok(a)
    }

    /// mknod, mkdir, symlink: a new entry and one lookup on it.
    pub async fn make(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        owner: Owner,
        special: Special<'_>,
    ) -> Result<Attr, Errno> {
        let dir = self.dir(parent)?;
        let (mode, gid) = self.inherit(parent, mode, owner.gid)?;
        self.ahead.naming(parent, name);
        let o = self
            .dfs
            .create(&dir, name, mode, owner.uid, gid, special)
            .await?;
        self.ahead.forget(parent, name);
        if o.kind() == Kind::Dir {
            self.ahead.made_dir(ino_of(o.oid));
        }
        self.created(parent, &o);
        let a = attr_of_new(&o, self.blksize());
        lock(&self.inodes).remember(o);
        self.cached(&a);
        Ok(a)
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let o = self.obj(ino)?;
        self.dfs.readlink(&o).await
    }

    pub async fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), Errno> {
        let dir = self.dir(parent)?;
        self.store_deferred().await;
        // The kernel looked the name up before (or listed it): the engine
        // checks that it still holds that file and removes it in one go.
        let guess = lock(&self.inodes).named(parent, name);
        let dfs::Removed { oid, last, at } = self.dfs.unlink(&dir, name, guess.as_ref()).await?;
        self.ahead.forget(parent, name);
        self.dir_changed(parent, at, 0);
        if last {
            self.orphaned(ino_of(oid), at);
            self.gone(oid).await;
        } else {
            // Other names of a hard-linked file see its link count drop.
            self.changed(ino_of(oid));
        }
        Ok(())
    }

    pub async fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), Errno> {
        let dir = self.dir(parent)?;
        self.store_deferred().await;
        let guess = lock(&self.inodes).named(parent, name);
        let gone = self.dfs.rmdir(&dir, name, guess.as_ref()).await?;
        self.ahead.forget(parent, name);
        self.changed(ino_of(gone.oid));
        self.dir_changed(parent, gone.at, -1);
        if let Some(e) = lock(&self.inodes).get_mut(ino_of(gone.oid)) {
            e.orphan = true;
        }
        self.free_later(gone.oid).await;
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        let sdir = self.dir(parent)?;
        let ddir = self.dir(newparent)?;
        self.store_deferred().await;
        self.ahead.naming(newparent, newname);
        if flags & dfs::rename_flags::EXCHANGE != 0 {
            self.ahead.naming(parent, name);
        }
        let victim = self.dfs.rename(&sdir, name, &ddir, newname, flags).await?;
        self.ahead.forget(parent, name);
        self.ahead.forget(newparent, newname);
        self.changed(parent);
        self.changed(newparent);
        if let Some((oid, last)) = victim {
            // A replaced name of a hard-linked file: the others see its link
            // count drop.
            self.changed(ino_of(oid));
            if last {
                self.gone(oid).await;
            }
        }
        // Keep the table's (parent, name) current: a non-shared record lives
        // in the entry.
        let moved = self.dfs.lookup(&ddir, newname).await?;
        self.changed(ino_of(moved.oid));
        lock(&self.inodes).moved(moved);
        if flags & dfs::rename_flags::EXCHANGE != 0 {
            let back = self.dfs.lookup(&sdir, name).await?;
            self.changed(ino_of(back.oid));
            lock(&self.inodes).moved(back);
        }
        Ok(())
    }

    pub async fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr, Errno> {
        let o = self.obj(ino)?;
        let dir = self.dir(newparent)?;
        self.store_deferred().await;
        self.ahead.naming(newparent, newname);
        let n = self.dfs.link(&o, &dir, newname).await?;
        // The first name's record became a stub for the shared one.
        self.ahead.forget(ino_of(o.parent), &o.name);
        self.ahead.forget(newparent, newname);
        self.changed(newparent);
        let a = self.dfs.getattr(&n).await?;
        lock(&self.inodes).remember(n);
        self.cached(&a);
        Ok(a)
    }

    /// Opens `ino`; returns the handle and whether the page cache may be kept.
    pub async fn open(self: &Arc<Self>, ino: u64, flags: i32) -> Result<(u64, bool), Errno> {
        let o = self.obj(ino)?;
        match o.kind() {
            Kind::Dir => return Err(Errno(libc::EISDIR)),
            Kind::File => {}
            _ => return Err(Errno(libc::ENXIO)),
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let mut keep = false;
        if flags & libc::O_TRUNC != 0 && writable {
            self.setattr(
                ino,
                &SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
                None,
            )
            .await?;
        } else if self.caching.data {
            let a = self.getattr(ino).await?;
            let stamp = (a.mtime, a.size);
            let mut t = lock(&self.inodes);
            if let Some(e) = t.get_mut(ino) {
                keep = e.cache_stamp == Some(stamp);
                e.cache_stamp = Some(stamp);
            }
        }
        lock(&self.inodes).opened(ino)?;
        let append = flags & libc::O_APPEND != 0 && !self.caching.wb;
        Ok((self.new_fh(Handle::File { ino, append }), keep))
    }

    /// Creates and opens `name`; an existing file is opened unless O_EXCL.
    pub async fn create(
        self: &Arc<Self>,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        owner: Owner,
    ) -> Result<(Attr, u64), Errno> {
        let dir = self.dir(parent)?;
        let mode = if mode & libc::S_IFMT == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno(libc::EINVAL));
        }
        let (mode, gid) = self.inherit(parent, mode, owner.gid)?;
        self.ahead.naming(parent, name);
        let (a, made) = match self
            .dfs
            .create(&dir, name, mode, owner.uid, gid, Special::None)
            .await
        {
            Ok(o) => {
                self.ahead.forget(parent, name);
                self.created(parent, &o);
                let a = attr_of_new(&o, self.blksize());
                lock(&self.inodes).remember(o);
                self.cached(&a);
                (a, true)
            }
            Err(Errno(libc::EEXIST)) if flags & libc::O_EXCL == 0 => {
                (self.lookup(parent, name).await?, false)
            }
            Err(e) => return Err(e),
        };
        // A file made just now is empty: O_TRUNC has nothing to do.
        let open_flags = if made {
            flags & !(libc::O_CREAT | libc::O_TRUNC)
        } else {
            flags & !libc::O_CREAT
        };
        let (fh, _) = self.open(a.ino, open_flags).await?;
        let a = if open_flags & libc::O_TRUNC != 0 {
            self.getattr(a.ino).await?
        } else {
            a
        };
        Ok((a, fh))
    }

    pub async fn read(&self, ino: u64, off: u64, len: u32) -> Result<Bytes, Errno> {
        let o = self.obj(ino)?;
        self.dfs.read(&o, off, u64::from(len)).await
    }

    pub async fn write(&self, ino: u64, fh: u64, off: u64, data: Bytes) -> Result<u32, Errno> {
        let o = self.obj(ino)?;
        let append = matches!(
            lock(&self.handles).get(&fh),
            Some(Handle::File { append: true, .. })
        );
        let n = u32::try_from(data.len()).map_err(|_| Errno(libc::EINVAL))?;
        let written = if append {
            let _g = self.append_lock.lock().await;
            let size = self.dfs.size(&o).await;
            match size {
                Ok(size) => self.dfs.write(&o, size, data).await.map(|()| size),
                Err(e) => Err(e),
            }
        } else {
            self.dfs.write(&o, off, data).await.map(|()| off)
        };
        match written {
            Ok(at) => self.grown(ino, at.saturating_add(u64::from(n))),
            Err(e) => {
                self.changed(ino);
                return Err(e);
            }
        }
        Ok(n)
    }

    /// Drops the handle `fh`; the object to free if it was the last
    /// reference to an unlinked file (see [`Core::free_later`]).
    pub fn release(&self, fh: u64) -> Result<Option<ObjectId>, Errno> {
        let h = lock(&self.handles).remove(&fh);
        let ino = match h {
            Some(Handle::File { ino, .. }) | Some(Handle::Dir { ino, .. }) => ino,
            None => return Err(Errno(libc::EBADF)),
        };
        Ok(lock(&self.inodes).released(ino))
    }

    /// Opens directory `ino`; with the dentry timeout set, the kernel keeps
    /// the listing it reads through the handle in its page cache
    /// (`FOPEN_CACHE_DIR`, as DAOS's dfuse does), and a later open within the
    /// timeout of the one that started it lists from there
    /// (`FOPEN_KEEP_CACHE`): `rm -rf` and `find` open every directory twice
    /// or more, and each listing would be an engine round trip per page.
    /// The kernel drops its copy by itself when the directory changes
    /// through this mount; a change made elsewhere shows from the first open
    /// after the timeout, as a name's does.
    pub fn opendir(&self, ino: u64) -> Result<(u64, FopenFlags), Errno> {
        self.dir(ino)?;
        lock(&self.inodes).opened(ino)?;
        let fh = self.new_fh(Handle::Dir {
            ino,
            stream: Arc::default(),
        });
        let flags = if self.caching.dentry.is_zero() {
            FopenFlags::empty()
        } else if self.kernel_listings.contains_key(&ino) {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            self.kernel_listings.insert(ino, ());
            FopenFlags::FOPEN_CACHE_DIR
        };
        Ok((fh, flags))
    }

    /// The entries from `offset` on (at most `want`), each with the offset
    /// of the entry after it; `.` and `..` first.
    pub async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        want: usize,
    ) -> Result<Vec<(u64, DirEnt)>, Errno> {
        let stream = match lock(&self.handles).get(&fh) {
            Some(Handle::Dir { stream, .. }) => stream.clone(),
            _ => return Err(Errno(libc::EBADF)),
        };
        let dir = self.dir(ino)?;
        self.store_deferred().await;
        let mut s = stream.lock().await;
        if offset == 0 {
            // rewinddir: see the directory as it is now.
            *s = DirStream::default();
            let parent = if ino == ROOT_INO {
                ROOT_INO
            } else {
                ino_of(dir.parent)
            };
            s.entries.push(DirEnt {
                ino,
                kind: Kind::Dir,
                name: b".".to_vec(),
                obj: None,
            });
            s.entries.push(DirEnt {
                ino: parent,
                kind: Kind::Dir,
                name: b"..".to_vec(),
                obj: None,
            });
            match self.ahead.listing_of(ino) {
                Some(whole) => {
                    s.entries.extend(whole.iter().cloned().map(dir_ent));
                    s.done = true;
                }
                None => s.since = Some(self.ahead.changes()),
            }
        }
        let start = usize::try_from(offset).map_err(|_| Errno(libc::EINVAL))?;
        while s.entries.len() < start.saturating_add(want) && !s.done {
            let (page, next) = self.dfs.readdir(&dir, s.anchor.clone(), DIR_PAGE).await?;
            s.entries.extend(page.into_iter().map(dir_ent));
            match next {
                Some(a) => s.anchor = Some(a),
                None => {
                    s.done = true;
                    if let Some(since) = s.since {
                        let whole = s.entries.iter().filter_map(|e| e.obj.clone()).collect();
                        self.ahead.listed(ino, since, whole);
                    }
                }
            }
        }
        Ok(s.entries
            .iter()
            .enumerate()
            .skip(start)
            .take(want)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }

    /// Like [`Core::readdir`], each entry with its attributes (the
    /// directory's own for `.` and `..`).
    pub async fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        want: usize,
    ) -> Result<Vec<(u64, DirEnt, Attr)>, Errno> {
        let ents = self.readdir(ino, fh, offset, want).await?;
        // Only `.` and `..` (the first page) carry the directory's own.
        let dir_attr = if ents.iter().any(|(_, e)| e.obj.is_none()) {
            Some(self.getattr(ino).await?)
        } else {
            None
        };
        // Within the attribute timeout an entry's attributes come from the
        // cache: tools list a directory several times over (`rm -rf` opens
        // each one twice), and a file's size costs a message per target.
        let objs: Vec<&Obj> = ents.iter().filter_map(|(_, e)| e.obj.as_ref()).collect();
        let mut read = self.entry_attrs(&objs).await.into_iter();
        let attrs: Vec<Result<Attr, Errno>> = ents
            .iter()
            .map(|(_, e)| match e.obj {
                Some(_) => read.next().unwrap_or(Err(Errno(libc::EIO))),
                None => dir_attr.clone().ok_or(Errno(libc::EIO)),
            })
            .collect();
        let mut out = Vec::with_capacity(ents.len());
        for ((next, e), a) in ents.into_iter().zip(attrs) {
            match a {
                Ok(a) => out.push((next, e, a)),
                // Removed since the listing: leave it out.
                Err(Errno(libc::ENOENT)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// Counts one kernel lookup of `o` (a readdirplus entry the kernel took).
    pub fn remember(&self, o: Obj) {
        lock(&self.inodes).remember(o);
    }

    pub async fn statfs(&self) -> Result<dfs::StatFs, Errno> {
        self.dfs.statfs().await
    }

    pub async fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        let o = self.obj(ino)?;
        let r = self.dfs.setxattr(&o, name, value, flags).await;
        if name == CAPS_XATTR {
            // After the change: a lookup that raced it may have just said "absent".
            self.no_caps.invalidate(&ino);
        }
        r
    }

    /// `getxattr` when the answer is known without asking: the capability
    /// attribute of a file known to have none.
    pub fn getxattr_now(&self, ino: u64, name: &[u8]) -> Option<Result<Vec<u8>, Errno>> {
        (name == CAPS_XATTR && self.no_caps.contains_key(&ino)).then_some(Err(Errno(libc::ENODATA)))
    }

    pub async fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, Errno> {
        if let Some(r) = self.getxattr_now(ino, name) {
            return r;
        }
        let caps = name == CAPS_XATTR;
        let o = self.obj(ino)?;
        let r = self.dfs.getxattr(&o, name).await;
        if caps && r == Err(Errno(libc::ENODATA)) {
            self.no_caps_known(ino);
        }
        r
    }

    /// The names, each followed by a NUL, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let o = self.obj(ino)?;
        let mut out = Vec::new();
        for n in self.dfs.listxattr(&o).await? {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<(), Errno> {
        let o = self.obj(ino)?;
        self.dfs.removexattr(&o, name).await
    }

    pub async fn fallocate(&self, ino: u64, mode: i32, off: u64, len: u64) -> Result<(), Errno> {
        let o = self.obj(ino)?;
        self.changed(ino);
        self.dfs.fallocate(&o, mode, off, len).await
    }
}

/// The `fuser::Filesystem` over a [`Core`].
pub struct DfuseFs {
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    multi_user: bool,
    owner: Owner,
}

fn err(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

fn name_bytes(n: &OsStr) -> Vec<u8> {
    n.as_bytes().to_vec()
}

impl DfuseFs {
    pub fn new(core: Arc<Core>, rt: tokio::runtime::Handle, multi_user: bool) -> DfuseFs {
        DfuseFs {
            core,
            rt,
            multi_user,
            owner: Owner {
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            },
        }
    }

    fn owner(&self, req: &Request) -> Owner {
        if self.multi_user {
            Owner {
                uid: req.uid(),
                gid: req.gid(),
            }
        } else {
            self.owner
        }
    }

    /// Runs one request: on the session thread until it first waits, then
    /// as its own task on the runtime (see [`crate::task`]), so requests
    /// never wait for each other.
    fn spawn<F>(&self, f: impl FnOnce(Arc<Core>) -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        crate::task::start(&self.rt, f(self.core.clone()));
    }

    /// Runs a read or write as its own task on the runtime from the start.
    /// Measured (4 interleaved rounds, `fio` 4 KiB direct I/O on one file):
    /// started on the session thread instead, one job's reads ran 6% and
    /// its writes 12% slower (the request's buffers and state then move
    /// between the two vCPUs), four jobs' reads 7% faster; the one-job case
    /// is the common one.
    fn spawn_data<F>(&self, f: impl FnOnce(Arc<Core>) -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f(self.core.clone()));
    }

    /// Replies to a flush or fsync of `ino` once the deferred field changes
    /// are stored: in place when there are none.
    fn store_then(&self, ino: u64, reply: ReplyEmpty) {
        self.spawn(move |c| async move {
            let failed = c.store_deferred().await;
            match failed.into_iter().find(|(i, _)| *i == ino) {
                Some((_, e)) => reply.error(err(e)),
                None => reply.ok(),
            }
        });
    }

    /// Drops a file or directory handle in place; an object it was the last
    /// hold on is freed in the background.
    fn release_handle(&self, fh: u64, reply: ReplyEmpty) {
        match self.core.release(fh) {
            Ok(None) => reply.ok(),
            Ok(Some(oid)) => self.spawn(move |c| async move {
                c.free_later(oid).await;
                reply.ok();
            }),
            Err(e) => reply.error(err(e)),
        }
    }

    fn ttls(&self) -> Ttls {
        Ttls {
            attr: self.core.caching.attr,
            entry: self.core.caching.dentry,
            dir_entry: self.core.caching.dentry_dir,
        }
    }
}

/// How long the kernel may keep what a reply tells it.
#[derive(Debug, Clone, Copy)]
struct Ttls {
    attr: Duration,
    entry: Duration,
    /// The entry timeout of a name that is a directory
    /// (`dfuse-dentry-dir-time`): path walks go through directories.
    dir_entry: Duration,
}

impl Ttls {
    fn entry_of(&self, kind: Kind) -> Duration {
        if kind == Kind::Dir {
            self.dir_entry
        } else {
            self.entry
        }
    }
}

/// How a handle does its I/O: direct (no page cache) when caching is off or
/// the opener asked for `O_DIRECT`, and then writes to one file from several
/// threads run in parallel (the kernel still serialises appends and writes
/// that grow the file), which buffered writes cannot.
fn direct_flags(always: bool, open_flags: i32) -> FopenFlags {
    if always || open_flags & libc::O_DIRECT != 0 {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    } else {
        FopenFlags::empty()
    }
}

/// A negative entry (inode 0) the kernel caches for `ttl`.
fn reply_absent(reply: ReplyEntry, ttl: Duration) {
    let mut a = fuse_attr(&Attr {
        ino: 0,
        oid: ObjectId::NIL,
        kind: Kind::File,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: 0,
        rdev: 0,
        atime: 0,
        mtime: 0,
        ctime: 0,
        blksize: 0,
    });
    a.ino = INodeNo(0);
    reply.entry_with_ttls(&ttl, &ttl, &a, Generation(0));
}

fn reply_entry(reply: ReplyEntry, r: Result<Attr, Errno>, t: Ttls) {
    match r {
        Ok(a) => reply.entry_with_ttls(&t.attr, &t.entry_of(a.kind), &fuse_attr(&a), Generation(0)),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<Vec<u8>, Errno>, size: u32) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(err(e)),
    }
}

/// `t` in ns; "now" by the container's clock, as every time dfs sets.
fn time_ns(t: TimeOrNow, now: i64) -> i64 {
    match t {
        TimeOrNow::Now => now,
        TimeOrNow::SpecificTime(t) => ns_of(t),
    }
}

impl Filesystem for DfuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        let _ = config.set_max_readahead(MAX_WRITE);
        let mut want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        if self.core.caching.wb {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if self.core.caching.attr > Duration::ZERO {
            want |= InitFlags::FUSE_CACHE_SYMLINKS;
        }
        let have = config.capabilities();
        if let Err(missing) = config.add_capabilities(want & have) {
            tracing::warn!(?missing, "kernel lacks FUSE capabilities");
        }
        if self.core.caching.wb && !have.contains(InitFlags::FUSE_WRITEBACK_CACHE) {
            tracing::warn!("kernel has no write-back cache for FUSE");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name_bytes(name);
        if let Some(ttl) = self.core.absent_for(parent.0, &name) {
            return reply_absent(reply, ttl);
        }
        let ttls = self.ttls();
        let neg_ttl = self.core.caching.ndentry;
        self.spawn(move |c| async move {
            match c.lookup(parent.0, &name).await {
                Err(Errno(libc::ENOENT)) if neg_ttl > Duration::ZERO => {
                    reply_absent(reply, neg_ttl)
                }
                r => reply_entry(reply, r, ttls),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.spawn(move |c| async move { c.forget(ino.0, nlookup).await });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.core.caching.attr;
        let answer = move |reply: ReplyAttr, r: Result<Attr, Errno>| match r {
            Ok(a) => reply.attr(&ttl, &fuse_attr(&a)),
            Err(e) => reply.error(err(e)),
        };
        match self.core.getattr_now(ino.0) {
            Some(r) => answer(reply, r),
            None => self.spawn(move |c| async move { answer(reply, c.getattr(ino.0).await) }),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let now = self.core.dfs().now();
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(|t| time_ns(t, now)),
            mtime: mtime.map(|t| time_ns(t, now)),
            ctime: ctime.map(ns_of),
        };
        let ttl = self.core.caching.attr;
        self.spawn(move |c| async move {
            match c.setattr(ino.0, &s, fh.map(|f| f.0)).await {
                Ok(a) => reply.attr(&ttl, &fuse_attr(&a)),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(move |c| async move {
            match c.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name_bytes(name);
        let owner = self.owner(req);
        let ttls = self.ttls();
        self.spawn(move |c| async move {
            let special = match mode & libc::S_IFMT {
                libc::S_IFCHR | libc::S_IFBLK => Special::Rdev(rdev),
                _ => Special::None,
            };
            let mode = if mode & libc::S_IFMT == 0 {
                mode | libc::S_IFREG
            } else {
                mode
            };
            let r = c.make(parent.0, &name, mode, owner, special).await;
            reply_entry(reply, r, ttls);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name_bytes(name);
        let owner = self.owner(req);
        let ttls = self.ttls();
        self.spawn(move |c| async move {
            let mode = libc::S_IFDIR | (mode & 0o7777);
            let r = c.make(parent.0, &name, mode, owner, Special::None).await;
            reply_entry(reply, r, ttls);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn(move |c| async move { reply_empty(reply, c.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn(move |c| async move { reply_empty(reply, c.rmdir(parent.0, &name).await) });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_bytes(link_name);
        let target = target.as_os_str().as_bytes().to_vec();
        let owner = self.owner(req);
        let ttls = self.ttls();
        self.spawn(move |c| async move {
            let r = c
                .make(
                    parent.0,
                    &name,
                    libc::S_IFLNK | 0o777,
                    owner,
                    Special::Symlink(&target),
                )
                .await;
            reply_entry(reply, r, ttls);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let name = name_bytes(name);
        let newname = name_bytes(newname);
        self.spawn(move |c| async move {
            let r = c
                .rename(parent.0, &name, newparent.0, &newname, flags.bits())
                .await;
            reply_empty(reply, r);
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = name_bytes(newname);
        let ttls = self.ttls();
        self.spawn(move |c| async move {
            let r = c.link(ino.0, newparent.0, &newname).await;
            reply_entry(reply, r, ttls);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(move |c| async move {
            match c.open(ino.0, flags.0).await {
                Ok((fh, keep)) => {
                    let mut f = direct_flags(c.caching.direct_io, flags.0);
                    if f.is_empty() && keep {
                        f |= FopenFlags::FOPEN_KEEP_CACHE;
                    }
                    reply.opened(FileHandle(fh), f);
                }
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn_data(move |c| async move {
            match c.read(ino.0, offset, size).await {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = Bytes::copy_from_slice(data);
        self.spawn_data(move |c| async move {
            match c.write(ino.0, fh.0, offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes are stored when they return; deferred field changes now.
        self.store_then(ino.0, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_handle(fh.0, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every write is durable in the engines when it returns (the kernel
        // flushes its dirty pages before calling this); deferred field
        // changes are stored now.
        self.store_then(ino.0, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn(move |c| async move {
            // A reply buffer holds a few hundred entries at most; ask for a
            // page and stop where the buffer is full.
            match c.readdir(ino.0, fh.0, offset, DIR_PAGE as usize).await {
                Ok(ents) => {
                    for (next, e) in ents {
                        let name = OsStr::from_bytes(&e.name);
                        if reply.add(INodeNo(e.ino), next, file_type(e.kind), name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttls = self.ttls();
        self.spawn(move |c| async move {
            // Entries with attributes are bigger: a smaller page.
            match c.readdirplus(ino.0, fh.0, offset, 64).await {
                Ok(ents) => {
                    for (next, e, a) in ents {
                        let name = OsStr::from_bytes(&e.name);
                        // One TTL per entry: the shorter keeps both promises.
                        let ttl = ttls.attr.min(ttls.entry_of(e.kind));
                        if reply.add(
                            INodeNo(e.ino),
                            next,
                            name,
                            &ttl,
                            &fuse_attr(&a),
                            Generation(0),
                        ) {
                            break;
                        }
                        // The kernel counts a lookup for every real entry it took.
                        if let Some(o) = e.obj {
                            c.remember(o);
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.release_handle(fh.0, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// No ioctl applies to a dfuse file: ENOTTY, as a local filesystem
    /// answers (`isatty` asks with TCGETS on every stdio open).
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(fuser::Errno::from_i32(libc::ENOTTY));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(move |c| async move {
            match c.statfs().await {
                Ok(s) => reply.statfs(
                    s.total / BSIZE,
                    s.free / BSIZE,
                    s.free / BSIZE,
                    s.files,
                    s.files,
                    BSIZE as u32,
                    dfs::NAME_MAX as u32,
                    BSIZE as u32,
                ),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name_bytes(name);
        let value = value.to_vec();
        self.spawn(move |c| async move {
            reply_empty(reply, c.setxattr(ino.0, &name, &value, flags).await)
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name_bytes(name);
        if let Some(r) = self.core.getxattr_now(ino.0, &name) {
            return reply_xattr(reply, r, size);
        }
        self.spawn(
            move |c| async move { reply_xattr(reply, c.getxattr(ino.0, &name).await, size) },
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(move |c| async move { reply_xattr(reply, c.listxattr(ino.0).await, size) });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn(move |c| async move { reply_empty(reply, c.removexattr(ino.0, &name).await) });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks mode bits (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name_bytes(name);
        let owner = self.owner(req);
        let at = self.ttls().attr;
        self.spawn(move |c| async move {
            match c.create(parent.0, &name, mode, flags, owner).await {
                Ok((a, fh)) => {
                    let f = direct_flags(c.caching.direct_io, flags);
                    reply.created(&at, &fuse_attr(&a), Generation(0), FileHandle(fh), f);
                }
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn(move |c| async move {
            reply_empty(reply, c.fallocate(ino.0, mode, offset, length).await)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -5_000_000_001] {
            assert_eq!(ns_of(time_of(ns)), ns);
        }
    }

    #[test]
    fn only_the_kernels_times_write_back_is_recognised() {
        let times = SetAttr {
            mtime: Some(5),
            ctime: Some(6),
            ..SetAttr::default()
        };
        assert!(is_times_write_back(&times, Some(1)));
        // utimensat names no file; a truncate or any other field is a change.
        assert!(!is_times_write_back(&times, None));
        for other in [
            SetAttr {
                size: Some(0),
                ..times.clone()
            },
            SetAttr {
                atime: Some(1),
                ..times.clone()
            },
            SetAttr {
                mode: Some(0o600),
                ..times.clone()
            },
            SetAttr {
                uid: Some(1),
                ..times.clone()
            },
            SetAttr {
                ctime: None,
                ..times.clone()
            },
        ] {
            assert!(!is_times_write_back(&other, Some(1)), "{other:?}");
        }
    }
}
