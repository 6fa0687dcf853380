//! dfs: a POSIX namespace over a container of type POSIX, laid out as DAOS's
//! libdfs: a superblock object (layout version, chunk size, object classes,
//! the root's inode record), directories as objects whose dkeys are entry
//! names holding inode records ([`layout::Inode`]), files as byte arrays split
//! into chunks, symlink targets inside the record.
//!
//! Extended attributes live in the inode's own object (dkey [`XATTR_DKEY`]),
//! so they follow it through renames and links.
//!
//! Hard links (which DAOS's dfs lacks): a file's record normally lives in its
//! one directory entry. The first `link` moves the authoritative record into
//! the file's own object (dkey [`INODE_DKEY`]) and turns every entry into a
//! stub flagged `shared`; link counts and attributes are then read there.
//!
//! A directory's modification and change times live in its own object (dkey
//! [`DIR_DKEY`]), and so does one marker per subdirectory (dkey
//! [`SUBDIRS_DKEY`]; the link count is 2 plus their number). Every change to
//! the entries writes them blindly inside the change's own transaction: no
//! read-modify-write of the record in the parent's entry, so concurrent
//! creates from any number of clients never lose a time or a count.
//!
//! Invariants: create, unlink, rename and link are each one libdaos
//! transaction (entries, parent times and subdirectory markers together),
//! so a crash or a race never leaves both names or neither; a name is at
//! most 255 bytes of anything but `/` and NUL. Errors are the errno a local
//! filesystem returns ([`Errno`]).
//!
//! An inode record (mode, owner, times, a linked file's count) is
//! read-modify-written under its inode's lock in this [`Dfs`]: changes
//! through one mount never lose each other's fields. Two clients changing one
//! record at the same moment are last-writer-wins: field by field for the
//! fields kept beside the record (below), by whole record for the rest.
//!
//! A change of a non-directory's permissions, owner or times, and nothing
//! else ([`Dfs::set_fields`]: `utimensat`, `chmod`, `chown`) is one blind
//! write of akeys beside the record (all of [`RECORD_AKEYS`] but the
//! first), no read. Every reader of a record takes those fields from them
//! where present ([`with_beside`]), and every write of a whole
//! authoritative record writes them too ([`record_iods`]): each field is
//! always the last written.
//!
//! A file's mtime and ctime are the epoch of the newest write or punch of
//! its bytes ([`libdaos::ArrayStat`]) where that is later than when its
//! mtime was last set ([`Inode::mtime_at`], DAOS's `obj_hlc`): no write
//! stores a time.
//!
//! Dependency rule: depends on `libdaos` (and through it `proto`, `placement`).

pub mod layout;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use layout::Inode;
use libdaos::{
    cond, Array, ArrayStat, Container, FetchIod, Iod, Object, ObjectClass, ObjectId, ObjectType,
    Tx, Value, EPOCH_LATEST,
};
use proto::Der;

/// An errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

/// The errno for a libdaos failure; retried failures that still failed are EIO.
pub fn errno_of(e: &libdaos::Error) -> Errno {
    Errno(match e.der() {
        Der::NONEXIST => libc::ENOENT,
        Der::EXIST => libc::EEXIST,
        Der::NOSPACE => libc::ENOSPC,
        Der::NO_PERM => libc::EACCES,
        Der::INVAL => libc::EINVAL,
        Der::NOTDIR => libc::ENOTDIR,
        Der::BUSY => libc::EBUSY,
        Der::NOSYS => libc::ENOSYS,
        Der::OVERFLOW => libc::EFBIG,
        Der::NOMEM => libc::ENOMEM,
        Der::CANCELED => libc::ECANCELED,
        _ => libc::EIO,
    })
}

impl From<libdaos::Error> for Errno {
    fn from(e: libdaos::Error) -> Errno {
        let n = errno_of(&e);
        if n.0 == libc::EIO {
            tracing::warn!("dfs: {e}");
        } else {
            tracing::debug!("dfs: {e}");
        }
        n
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

/// The akey of an entry's inode record (DAOS's name).
pub const INODE_AKEY: &[u8] = b"DFS_INODE";
/// A non-directory's times, beside its record (same dkey): each an i64 of
/// ns since the epoch, little-endian. Where present they override the
/// record's own. [`MTIME_AKEY`] holds a second i64 after the time: when it
/// was set ([`Inode::mtime_at`]); a file's mtime is the epoch of its newest
/// write where that is later (the time itself where absent).
pub const ATIME_AKEY: &[u8] = b"DFS_ATIME";
pub const MTIME_AKEY: &[u8] = b"DFS_MTIME";
pub const CTIME_AKEY: &[u8] = b"DFS_CTIME";
/// A non-directory's permission bits (the mode without its file type), owner
/// and group, beside its record: each a u32, little-endian. Where present
/// they override the record's own.
pub const PERM_AKEY: &[u8] = b"DFS_PERM";
pub const UID_AKEY: &[u8] = b"DFS_UID";
pub const GID_AKEY: &[u8] = b"DFS_GID";
/// What a reader of a record fetches: the record, then the akeys beside it
/// in the order [`with_beside`] takes them.
const RECORD_AKEYS: [&[u8]; 7] = [
    INODE_AKEY, ATIME_AKEY, MTIME_AKEY, CTIME_AKEY, PERM_AKEY, UID_AKEY, GID_AKEY,
];
/// The dkey holding a hard-linked file's authoritative record in its own object.
pub const INODE_DKEY: &[u8] = b"\0inode";
/// Extended attributes are akeys `x:NAME` under this dkey of the inode's own object.
pub const XATTR_DKEY: &[u8] = b"\0xattr";
const XATTR_PREFIX: &[u8] = b"x:";
/// A directory's own times: akeys [`DIR_MTIME_AKEY`] and [`DIR_CTIME_AKEY`], each an
/// i64 of ns since the epoch, little-endian. Absent (a directory nothing was
/// done in yet), the record's times stand.
pub const DIR_DKEY: &[u8] = b"\0dir";
const DIR_MTIME_AKEY: &[u8] = b"mtime";
const DIR_CTIME_AKEY: &[u8] = b"ctime";
/// One akey per subdirectory, its name, under this dkey of a directory's object.
pub const SUBDIRS_DKEY: &[u8] = b"\0subdirs";
const SB_DKEY: &[u8] = b"DFS_SB_METADATA";
const ROOT_DKEY: &[u8] = b"/";
/// The superblock and root objects sit at fixed ids (below what the
/// container service hands out).
const SB_LO: u64 = 0;
const ROOT_LO: u64 = 1;
pub const NAME_MAX: usize = 255;
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 64 << 10;

/// The kind of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub fn of_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }
}

/// What `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The inode number: the object id's low part, unique in the container.
    pub ino: u64,
    pub oid: ObjectId,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub blksize: u32,
}

impl Attr {
    /// 512-byte blocks, as `st_blocks` counts them.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// An inode as found under a name: where its record lives and what it said.
#[derive(Debug, Clone)]
pub struct Obj {
    pub oid: ObjectId,
    /// The directory holding the entry it was found under.
    pub parent: ObjectId,
    pub name: Vec<u8>,
    pub inode: Inode,
}

impl Obj {
    pub fn kind(&self) -> Kind {
        Kind::of_mode(self.inode.mode).unwrap_or(Kind::File)
    }
}

/// What only some kinds of entry carry.
#[derive(Debug, Clone, Copy)]
pub enum Special<'a> {
    None,
    /// A device number (character and block devices).
    Rdev(u32),
    /// A symbolic link's target.
    Symlink(&'a [u8]),
}

/// What an unlink or rmdir did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The inode whose name went.
    pub oid: ObjectId,
    /// That was its last name: free it once nobody has it open.
    pub last: bool,
    /// The directory's new modification and change time.
    pub at: i64,
}

/// What `stat` shows that an inode record does not hold.
enum Outside {
    /// A file's size and newest write.
    File(ArrayStat),
    Dir {
        mtime: Option<i64>,
        ctime: Option<i64>,
        nlink: u32,
    },
    Nothing,
}

/// Changes `setattr` makes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
    pub ctime: Option<i64>,
}

/// `rename` flags (Linux's `RENAME_*`).
pub mod rename_flags {
    pub const NOREPLACE: u32 = 1;
    pub const EXCHANGE: u32 = 2;
}

/// `fallocate` modes this namespace supports.
pub mod falloc {
    pub const KEEP_SIZE: i32 = 1;
    pub const PUNCH_HOLE: i32 = 2;
}

/// Space of the pool, for `statfs`.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub total: u64,
    pub free: u64,
    pub files: u64,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Checks that `name` can name an entry: EINVAL if it is empty or holds `/`
/// or NUL, ENAMETOOLONG if it is longer than [`NAME_MAX`].
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Errno(libc::EINVAL));
    }
    if name.len() > NAME_MAX {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

fn single(akey: &[u8], v: Vec<u8>) -> Iod {
    Iod {
        akey: akey.to_vec(),
        value: Value::Single(Bytes::from(v)),
    }
}

/// A file of `size` bytes whose newest write is not known: its times are
/// the record's.
fn unwritten(size: u64) -> ArrayStat {
    ArrayStat { size, max_epoch: 0 }
}

/// The entry record of `o` to write under a new name: an entry holding the
/// record itself gets a new change time (a stub's shared record changes in
/// [`Dfs::touch_moved`]).
fn changed_record(o: &Obj, now: i64) -> Inode {
    let mut rec = o.inode.clone();
    if !rec.shared {
        rec.ctime = now;
    }
    rec
}

fn time_iod(akey: &[u8], t: i64) -> Iod {
    single(akey, t.to_le_bytes().to_vec())
}

/// The write of an mtime set at `at` (see [`MTIME_AKEY`]).
fn mtime_iod(t: i64, at: i64) -> Iod {
    let mut v = t.to_le_bytes().to_vec();
    v.extend_from_slice(&at.to_le_bytes());
    single(MTIME_AKEY, v)
}

fn u32_iod(akey: &[u8], v: u32) -> Iod {
    single(akey, v.to_le_bytes().to_vec())
}

fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    let a: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_le_bytes(a))
}

fn u32_at(b: &[u8]) -> Option<u32> {
    let a: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(a))
}

/// `r` with the fields written beside it: `side[i]` is the value of
/// `RECORD_AKEYS[i + 1]`, empty where absent.
fn with_beside(mut r: Inode, side: [&[u8]; 6]) -> Inode {
    let [a, m, c, perm, uid, gid] = side;
    r.atime = i64_at(a, 0).unwrap_or(r.atime);
    if let Some(t) = i64_at(m, 0) {
        r.mtime = t;
        r.mtime_at = i64_at(m, 8).unwrap_or(t);
    }
    r.ctime = i64_at(c, 0).unwrap_or(r.ctime);
    if let Some(p) = u32_at(perm) {
        r.mode = (r.mode & libc::S_IFMT) | (p & !libc::S_IFMT);
    }
    r.uid = u32_at(uid).unwrap_or(r.uid);
    r.gid = u32_at(gid).unwrap_or(r.gid);
    r
}

/// The write of `r` as an authoritative record: the record and every akey
/// beside it, so no older blind write of a field outlives it.
fn record_iods(r: &Inode) -> Vec<Iod> {
    vec![
        single(INODE_AKEY, r.encode()),
        time_iod(ATIME_AKEY, r.atime),
        mtime_iod(r.mtime, r.mtime_at),
        time_iod(CTIME_AKEY, r.ctime),
        u32_iod(PERM_AKEY, r.mode & !libc::S_IFMT),
        u32_iod(UID_AKEY, r.uid),
        u32_iod(GID_AKEY, r.gid),
    ]
}

/// A record from the values of [`RECORD_AKEYS`] (`None`: no record).
fn decode_record(v: &[Bytes]) -> Result<Option<Inode>> {
    let part = |i: usize| v.get(i).map(|b| b.as_ref()).unwrap_or_default();
    if part(0).is_empty() {
        return Ok(None);
    }
    let r = Inode::decode(part(0)).map_err(|e| {
        tracing::error!("{e}");
        Errno(libc::EIO)
    })?;
    Ok(Some(with_beside(
        r,
        [part(1), part(2), part(3), part(4), part(5), part(6)],
    )))
}

/// Adds to `tx` what a change to the entries of directory `dir` does to it:
/// new modification and change times.
fn touch_dir(tx: &mut Tx, dir: &Object, now: i64) {
    tx.update(
        dir,
        DIR_DKEY,
        vec![time_iod(DIR_MTIME_AKEY, now), time_iod(DIR_CTIME_AKEY, now)],
        cond::NONE,
    );
}

/// Adds to `tx` the marker of subdirectory `name` in `dir` (or its removal).
fn mark_subdir(tx: &mut Tx, dir: &Object, name: &[u8], present: bool) {
    if present {
        tx.update(dir, SUBDIRS_DKEY, vec![single(name, vec![1])], cond::NONE);
    } else {
        tx.punch_akeys(dir, SUBDIRS_DKEY, vec![name.to_vec()], cond::NONE);
    }
}

/// How many locks the inode records are striped over.
const RECORD_LOCKS: usize = 256;

/// A mounted namespace.
#[derive(Clone)]
pub struct Dfs {
    /// A record's read-modify-write (setattr, link, unlink of a linked file,
    /// rename) holds its inode's stripe, so two changes through this mount
    /// never lose each other's fields: the kernel does not serialise them all
    /// (it writes back times without the inode lock).
    record_locks: std::sync::Arc<Vec<tokio::sync::Mutex<()>>>,
    cont: Container,
    sb: Object,
    root_oid: ObjectId,
    dir_class: ObjectClass,
    file_class: ObjectClass,
    chunk_size: u64,
}

impl Dfs {
    /// Mounts the namespace of `cont`, creating its superblock and root on
    /// first use (the container must be of type POSIX).
    pub async fn mount(cont: Container) -> Result<Dfs> {
        let layout = cont.prop("layout_type").unwrap_or("unknown").to_string();
        let class_prop = |n: &str| {
            cont.prop(n)
                .filter(|c| *c != "UNKNOWN")
                .and_then(|c| ObjectClass::from_name(c).ok())
        };
        let default = class_prop("oclass");
        let dir_class = class_prop("dir_oclass")
            .or(default)
            .unwrap_or(ObjectClass::S1);
        let file_class = class_prop("file_oclass")
            .or(default)
            .unwrap_or(ObjectClass::SX);
        let chunk_size = cont
            .prop("chunk_size")
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|c| *c > 0)
            .unwrap_or(1 << 20);
        let sb_oid = ObjectId::generate(0, SB_LO, ObjectType::MultiHashed, &dir_class);
        let root_oid = ObjectId::generate(0, ROOT_LO, ObjectType::MultiHashed, &dir_class);
        let sb = cont.object(sb_oid)?;
        let mut dfs = Dfs {
            record_locks: std::sync::Arc::new(
                (0..RECORD_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            ),
            cont,
            sb,
            root_oid,
            dir_class,
            file_class,
            chunk_size,
        };
        match dfs.read_sb().await? {
            Some((cs, dir, file)) => {
                dfs.chunk_size = cs;
                dfs.dir_class = dir;
                dfs.file_class = file;
            }
            None => {
                if layout != "POSIX" {
                    tracing::warn!(layout, "container is not of type POSIX");
                    return Err(Errno(libc::EINVAL));
                }
                dfs.format().await?;
            }
        }
        Ok(dfs)
    }

    async fn read_sb(&self) -> Result<Option<(u64, ObjectClass, ObjectClass)>> {
        let keys = [
            "DFS_MAGIC",
            "DFS_LAYOUT_VERSION",
            "DFS_CHUNK_SIZE",
            "DFS_DIR_OBJ_CLASS",
            "DFS_FILE_OBJ_CLASS",
        ];
        let f = self
            .sb
            .fetch(
                SB_DKEY,
                &keys
                    .iter()
                    .map(|k| FetchIod::Single {
                        akey: k.as_bytes().to_vec(),
                    })
                    .collect::<Vec<_>>(),
                EPOCH_LATEST,
                cond::NONE,
            )
            .await?;
        if !f[0].found {
            return Ok(None);
        }
        let num = |i: usize| -> Result<u64> {
            let d = &f[i].data;
            let a: [u8; 8] = d.as_ref().try_into().map_err(|_| Errno(libc::EIO))?;
            Ok(u64::from_le_bytes(a))
        };
        if num(0)? != layout::SB_MAGIC {
            tracing::error!("dfs superblock has a bad magic number");
            return Err(Errno(libc::EIO));
        }
        let v = num(1)?;
        if v != layout::SB_LAYOUT_VERSION {
            tracing::error!(version = v, "dfs superblock has an unknown layout version");
            return Err(Errno(libc::EIO));
        }
        let class = |i: usize| -> Result<ObjectClass> {
            ObjectClass::from_id(num(i)? as u32).map_err(|_| Errno(libc::EIO))
        };
        Ok(Some((num(2)?, class(3)?, class(4)?)))
    }

    /// Writes the superblock and the root directory, once: a second mount
    /// racing this one finds them (`DKEY_INSERT` lets only one win).
    async fn format(&self) -> Result<()> {
        let now = self.now();
        let root = Inode {
            mode: libc::S_IFDIR | 0o755,
            oid_hi: self.root_oid.hi,
            oid_lo: self.root_oid.lo,
            atime: now,
            mtime: now,
            mtime_at: now,
            ctime: now,
            nlink: 2,
            ..Inode::default()
        };
        let le = |v: u64| v.to_le_bytes().to_vec();
        let iods = vec![
            single(b"DFS_MAGIC", le(layout::SB_MAGIC)),
            single(b"DFS_LAYOUT_VERSION", le(layout::SB_LAYOUT_VERSION)),
            single(b"DFS_CHUNK_SIZE", le(self.chunk_size)),
            single(b"DFS_DIR_OBJ_CLASS", le(u64::from(self.dir_class.id()))),
            single(b"DFS_FILE_OBJ_CLASS", le(u64::from(self.file_class.id()))),
        ];
        let mut tx = self.cont.tx();
        tx.update(&self.sb, SB_DKEY, iods, cond::DKEY_INSERT);
        tx.update(
            &self.sb,
            ROOT_DKEY,
            vec![single(INODE_AKEY, root.encode())],
            cond::NONE,
        );
        match tx.commit().await {
            Ok(_) => Ok(()),
            Err(e) if e.der() == Der::EXIST => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn container(&self) -> &Container {
        &self.cont
    }

    /// Now, in ns since the epoch, by the container's hybrid clock
    /// ([`Container::now`]): later than the epoch of every write this
    /// mount has made, which is what the times it sets are compared with.
    pub fn now(&self) -> i64 {
        i64::try_from(self.cont.now()).unwrap_or(i64::MAX)
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The root directory.
    pub async fn root(&self) -> Result<Obj> {
        let inode = self
            .fetch_inode(&self.sb, ROOT_DKEY)
            .await?
            .ok_or(Errno(libc::EIO))?;
        Ok(Obj {
            oid: self.root_oid,
            parent: self.sb.oid(),
            name: ROOT_DKEY.to_vec(),
            inode,
        })
    }

    fn object(&self, oid: ObjectId) -> Result<Object> {
        Ok(self.cont.object(oid)?)
    }

    fn array(&self, o: &Obj) -> Result<Array> {
        self.array_of(o.oid, o.inode.chunk_size)
    }

    /// The array of file `oid` whose record gives `chunk_size` (0: the
    /// container's).
    fn array_of(&self, oid: ObjectId, chunk_size: u64) -> Result<Array> {
        let cs = if chunk_size == 0 {
            self.chunk_size
        } else {
            chunk_size
        };
        Ok(self.cont.array(oid, cs)?)
    }

    /// The record under `dkey` of `obj`, the fields beside it merged in.
    async fn fetch_inode(&self, obj: &Object, dkey: &[u8]) -> Result<Option<Inode>> {
        let iods = RECORD_AKEYS.map(|a| FetchIod::Single { akey: a.to_vec() });
        let f = obj.fetch(dkey, &iods, EPOCH_LATEST, cond::NONE).await?;
        let v: Vec<Bytes> = f
            .into_iter()
            .map(|x| if x.found { x.data } else { Bytes::new() })
            .collect();
        decode_record(&v)
    }

    /// Where the extended attributes of `o` live: its own object, so they
    /// follow the inode through renames and links and go when it is freed.
    fn xattr_loc(&self, o: &Obj) -> Result<(Object, Vec<u8>)> {
        Ok((self.object(o.oid)?, XATTR_DKEY.to_vec()))
    }

    /// Takes the record locks of `oids` (in stripe order: no deadlock).
    async fn lock_records(&self, oids: &[ObjectId]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = oids
            .iter()
            .map(|o| (o.lo % RECORD_LOCKS as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len());
        for i in stripes {
            held.push(self.record_locks[i].lock().await);
        }
        held
    }

    /// The current record of `o`; `shared` tells where it lives. A copy of
    /// `o` read before a link made the file shared (a listing, a lookup that
    /// raced the link) finds a stub in its entry and follows it into the
    /// file's object, so a stale copy never writes a record in the wrong place.
    async fn record(&self, o: &Obj) -> Result<Inode> {
        if !o.inode.shared {
            let r = self
                .fetch_inode(&self.object(o.parent)?, &o.name)
                .await?
                .ok_or(Errno(libc::ENOENT))?;
            if ObjectId::new(r.oid_hi, r.oid_lo) != o.oid {
                // The name has been given to another file since.
                return Err(Errno(libc::ENOENT));
            }
            if !r.shared {
                return Ok(r);
            }
        }
        let mut r = self
            .fetch_inode(&self.object(o.oid)?, INODE_DKEY)
            .await?
            .ok_or(Errno(libc::ENOENT))?;
        // The authoritative record keeps the flag off; callers see it on.
        r.shared = true;
        Ok(r)
    }

    /// Looks `name` up in directory `dir`.
    pub async fn lookup(&self, dir: &Obj, name: &[u8]) -> Result<Obj> {
        check_name(name)?;
        if dir.kind() != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let d = self.object(dir.oid)?;
        let inode = self
            .fetch_inode(&d, name)
            .await?
            .ok_or(Errno(libc::ENOENT))?;
        Ok(Obj {
            oid: ObjectId::new(inode.oid_hi, inode.oid_lo),
            parent: dir.oid,
            name: name.to_vec(),
            inode,
        })
    }

    /// The attributes of `o`, read now.
    pub async fn getattr(&self, o: &Obj) -> Result<Attr> {
        // The record and what lives outside it are fetched at once: a kind
        // never changes, and a stub carries the file's chunk size.
        let (r, x) = futures::future::join(
            self.record(o),
            self.outside(o.oid, o.kind(), o.inode.chunk_size),
        )
        .await;
        self.attr_from(o.oid, &r?, x?)
    }

    async fn attr_of(&self, oid: ObjectId, r: &Inode) -> Result<Attr> {
        let kind = Kind::of_mode(r.mode).ok_or(Errno(libc::EIO))?;
        let x = self.outside(oid, kind, r.chunk_size).await?;
        self.attr_from(oid, r, x)
    }

    /// What `stat` shows that the record does not hold: a file's size, a
    /// directory's own times and link count.
    async fn outside(&self, oid: ObjectId, kind: Kind, chunk_size: u64) -> Result<Outside> {
        Ok(match kind {
            Kind::File => Outside::File(self.array_of(oid, chunk_size)?.stat().await?),
            Kind::Dir => {
                let (m, c, subdirs) = self.dir_state(oid).await?;
                Outside::Dir {
                    mtime: m,
                    ctime: c,
                    nlink: u32::try_from(subdirs.saturating_add(2)).unwrap_or(u32::MAX),
                }
            }
            _ => Outside::Nothing,
        })
    }

    fn attr_from(&self, oid: ObjectId, r: &Inode, x: Outside) -> Result<Attr> {
        let kind = Kind::of_mode(r.mode).ok_or(Errno(libc::EIO))?;
        let (mut mtime, mut ctime, mut nlink) = (r.mtime, r.ctime, r.nlink.max(1));
        let size = match (kind, x) {
            (Kind::File, Outside::File(st)) => {
                // Epochs are ns of the engines' clocks: a write after the
                // mtime was set is the newer modification.
                let written = i64::try_from(st.max_epoch).unwrap_or(i64::MAX);
                if written > r.mtime_at {
                    mtime = written;
                }
                ctime = ctime.max(written);
                st.size
            }
            (
                Kind::Dir,
                Outside::Dir {
                    mtime: m,
                    ctime: c,
                    nlink: n,
                },
            ) => {
                mtime = m.unwrap_or(mtime);
                ctime = c.unwrap_or(ctime);
                nlink = n;
                4096
            }
            (Kind::Symlink, _) => r.symlink.len() as u64,
            _ => 0,
        };
        Ok(Attr {
            ino: oid.lo,
            oid,
            kind,
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            size,
            nlink,
            rdev: r.rdev,
            atime: r.atime,
            mtime,
            ctime,
            blksize: self.chunk_size.min(u64::from(u32::MAX)) as u32,
        })
    }

    /// A directory's own times (where any were written) and how many
    /// subdirectories it has.
    async fn dir_state(&self, oid: ObjectId) -> Result<(Option<i64>, Option<i64>, u64)> {
        let o = self.object(oid)?;
        let iods = [DIR_MTIME_AKEY, DIR_CTIME_AKEY].map(|a| FetchIod::Single { akey: a.to_vec() });
        let (times, subdirs) = futures::future::join(
            o.fetch(DIR_DKEY, &iods, EPOCH_LATEST, cond::NONE),
            o.count_akeys(SUBDIRS_DKEY),
        )
        .await;
        let times = times?;
        let time = |i: usize| {
            times
                .get(i)
                .filter(|f| f.found)
                .and_then(|f| <[u8; 8]>::try_from(f.data.as_ref()).ok())
                .map(i64::from_le_bytes)
        };
        Ok((time(0), time(1), subdirs?))
    }

    /// The attributes a directory entry names, without asking the file (for
    /// readdirplus): the size of a file needs one more call.
    pub async fn entry_attr(&self, o: &Obj) -> Result<Attr> {
        if o.inode.shared {
            return self.getattr(o).await;
        }
        self.attr_of(o.oid, &o.inode).await
    }

    /// [`Dfs::entry_attr`] of several entries (a directory page), in order:
    /// the sizes and newest writes of their files asked all at once, one
    /// message per engine.
    pub async fn entry_attrs(&self, objs: &[&Obj]) -> Vec<Result<Attr>> {
        let plain_file = |o: &Obj| !o.inode.shared && o.kind() == Kind::File;
        let stats = async {
            let arrays = objs
                .iter()
                .filter(|o| plain_file(o))
                .map(|o| self.array(o))
                .collect::<Result<Vec<Array>>>()?;
            Ok::<_, Errno>(Array::stats(&arrays).await?)
        };
        // Directories, links and shared records, each its own read, at once.
        let others = futures::future::join_all(
            objs.iter()
                .filter(|o| !plain_file(o))
                .map(|o| self.entry_attr(o)),
        );
        let (stats, others) = futures::join!(stats, others);
        let mut stats = stats.map(Vec::into_iter);
        let mut others = others.into_iter();
        objs.iter()
            .map(|o| {
                if plain_file(o) {
                    match &mut stats {
                        Ok(s) => match s.next() {
                            Some(st) => self.attr_from(o.oid, &o.inode, Outside::File(st)),
                            None => Err(Errno(libc::EIO)),
                        },
                        Err(e) => Err(*e),
                    }
                } else {
                    others.next().unwrap_or(Err(Errno(libc::EIO)))
                }
            })
            .collect()
    }

    /// Writes `r`, as [`Dfs::record`] returned it, back where it came from.
    async fn write_record(&self, o: &Obj, r: &Inode) -> Result<()> {
        let (obj, dkey) = if r.shared {
            (self.object(o.oid)?, INODE_DKEY.to_vec())
        } else {
            (self.object(o.parent)?, o.name.clone())
        };
        // The authoritative record itself is never a stub.
        let mut r = r.clone();
        r.shared = false;
        obj.update(&dkey, &record_iods(&r), cond::DKEY_UPDATE)
            .await
            .map_err(|e| {
                if e.der() == Der::NONEXIST {
                    Errno(libc::ENOENT)
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// Sets the permission bits, owner, group or times of a non-directory
    /// without reading its record: one blind write beside it (see the module
    /// docs). The change time is `s.ctime`, else now; it is returned, and an
    /// mtime in `s` counts as set then ([`Inode::mtime_at`]). EISDIR
    /// for a directory, EINVAL for a size change (which needs the object),
    /// ENOENT if the entry is gone.
    pub async fn set_fields(&self, o: &Obj, s: &SetAttr) -> Result<i64> {
        if o.kind() == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        if s.size.is_some() {
            return Err(Errno(libc::EINVAL));
        }
        let ctime = s.ctime.unwrap_or_else(|| self.now());
        let _held = self.lock_records(&[o.oid]).await;
        let (obj, dkey) = if o.inode.shared {
            (self.object(o.oid)?, INODE_DKEY.to_vec())
        } else {
            (self.object(o.parent)?, o.name.clone())
        };
        let mut iods = vec![time_iod(CTIME_AKEY, ctime)];
        iods.extend(s.atime.map(|t| time_iod(ATIME_AKEY, t)));
        // The mtime was set when the change happened: its ctime.
        iods.extend(s.mtime.map(|t| mtime_iod(t, ctime)));
        iods.extend(s.mode.map(|m| u32_iod(PERM_AKEY, m & !libc::S_IFMT)));
        iods.extend(s.uid.map(|u| u32_iod(UID_AKEY, u)));
        iods.extend(s.gid.map(|g| u32_iod(GID_AKEY, g)));
        obj.update(&dkey, &iods, cond::DKEY_UPDATE)
            .await
            .map_err(|e| {
                if e.der() == Der::NONEXIST {
                    Errno(libc::ENOENT)
                } else {
                    e.into()
                }
            })?;
        Ok(ctime)
    }

    /// Changes mode, owner, size or times. `known_size` is a regular file's
    /// size as the caller knows it (a cache it keeps current); `None` asks
    /// the engines.
    pub async fn setattr(&self, o: &Obj, s: &SetAttr, known_size: Option<u64>) -> Result<Attr> {
        let _held = self.lock_records(&[o.oid]).await;
        let kind = o.kind();
        let (r, x) = match (s.size, known_size) {
            (Some(size), _) => {
                match kind {
                    Kind::File => self.array(o)?.set_size(size).await?,
                    Kind::Dir => return Err(Errno(libc::EISDIR)),
                    _ => return Err(Errno(libc::EINVAL)),
                }
                (self.record(o).await, Ok(Outside::File(unwritten(size))))
            }
            // A file's size costs a message per target: the caller's will do.
            (None, Some(size)) if kind == Kind::File => {
                (self.record(o).await, Ok(Outside::File(unwritten(size))))
            }
            (None, _) => {
                futures::future::join(
                    self.record(o),
                    self.outside(o.oid, kind, o.inode.chunk_size),
                )
                .await
            }
        };
        let (mut r, mut x) = (r?, x?);
        let now = self.now();
        if s.size.is_some() {
            r.mtime = now;
            r.mtime_at = now;
            r.ctime = now;
        }
        if let Some(m) = s.mode {
            r.mode = (r.mode & libc::S_IFMT) | (m & !libc::S_IFMT);
            r.ctime = now;
        }
        if let Some(u) = s.uid {
            r.uid = u;
            r.ctime = now;
        }
        if let Some(g) = s.gid {
            r.gid = g;
            r.ctime = now;
        }
        if let Some(t) = s.atime {
            r.atime = t;
            r.ctime = now;
        }
        if let Some(t) = s.mtime {
            r.mtime = t;
            r.mtime_at = now;
            r.ctime = now;
        }
        if let Some(t) = s.ctime {
            r.ctime = t;
        }
        if let Outside::Dir { mtime, ctime, .. } = &mut x {
            // A directory's times are read from its own object.
            let mut iods = vec![time_iod(DIR_CTIME_AKEY, r.ctime)];
            *ctime = Some(r.ctime);
            if s.mtime.is_some() {
                iods.push(time_iod(DIR_MTIME_AKEY, r.mtime));
                *mtime = Some(r.mtime);
            }
            let d = self.object(o.oid)?;
            let (a, b) = futures::future::join(
                self.write_record(o, &r),
                d.update(DIR_DKEY, &iods, cond::NONE),
            )
            .await;
            a?;
            b?;
        } else {
            self.write_record(o, &r).await?;
        }
        self.attr_from(o.oid, &r, x)
    }

    /// Creates an entry of the type `mode` names: a regular file, a
    /// directory (`S_IFDIR`), a FIFO, a socket, a device (with
    /// [`Special::Rdev`]) or a symbolic link (`S_IFLNK` with
    /// [`Special::Symlink`]). Fails with EEXIST if the name exists.
    pub async fn create(
        &self,
        dir: &Obj,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        special: Special<'_>,
    ) -> Result<Obj> {
        let (rdev, symlink) = match special {
            Special::None => (0, None),
            Special::Rdev(r) => (r, None),
            Special::Symlink(t) => (0, Some(t)),
        };
        if (mode & libc::S_IFMT == libc::S_IFLNK) != symlink.is_some() {
            return Err(Errno(libc::EINVAL));
        }
        check_name(name)?;
        if dir.kind() != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let kind = Kind::of_mode(mode).ok_or(Errno(libc::EINVAL))?;
        if let Some(t) = symlink {
            if t.is_empty() || t.len() > libc::PATH_MAX as usize {
                return Err(Errno(libc::ENAMETOOLONG));
            }
        }
        let class = if kind == Kind::Dir {
            &self.dir_class
        } else {
            &self.file_class
        };
        let otype = match kind {
            Kind::File => ObjectType::ArrayByte,
            _ => ObjectType::MultiHashed,
        };
        let oid = self.cont.alloc_oid(otype, class).await?;
        let now = self.now();
        let inode = Inode {
            shared: false,
            mode,
            uid,
            gid,
            oid_hi: oid.hi,
            oid_lo: oid.lo,
            atime: now,
            mtime: now,
            mtime_at: now,
            ctime: now,
            chunk_size: if kind == Kind::File {
                self.chunk_size
            } else {
                0
            },
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            rdev,
            symlink: symlink.map(<[u8]>::to_vec).unwrap_or_default(),
        };
        let d = self.object(dir.oid)?;
        let mut tx = self.cont.tx();
        tx.update(
            &d,
            name,
            vec![single(INODE_AKEY, inode.encode())],
            cond::DKEY_INSERT,
        );
        touch_dir(&mut tx, &d, now);
        if kind == Kind::Dir {
            mark_subdir(&mut tx, &d, name, true);
        }
        tx.commit().await?;
        Ok(Obj {
            oid,
            parent: dir.oid,
            name: name.to_vec(),
            inode,
        })
    }

    pub async fn readlink(&self, o: &Obj) -> Result<Vec<u8>> {
        if o.kind() != Kind::Symlink {
            return Err(Errno(libc::EINVAL));
        }
        Ok(o.inode.symlink.clone())
    }

    /// Reads up to `len` bytes at `off` (short at the end of the file).
    pub async fn read(&self, o: &Obj, off: u64, len: u64) -> Result<Bytes> {
        if o.kind() == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        Ok(self.array(o)?.read_to_size(off, len).await?)
    }

    /// Writes `data` at `off`.
    pub async fn write(&self, o: &Obj, off: u64, data: Bytes) -> Result<()> {
        if o.kind() == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        off.checked_add(data.len() as u64)
            .ok_or(Errno(libc::EFBIG))?;
        Ok(self.array(o)?.write(off, data).await?)
    }

    /// Sets a file's size without touching its record: for a file that has
    /// no name any more (unlinked while open), whose record is gone.
    pub async fn set_size(&self, o: &Obj, size: u64) -> Result<()> {
        if o.kind() != Kind::File {
            return Err(Errno(libc::EINVAL));
        }
        Ok(self.array(o)?.set_size(size).await?)
    }

    /// The file's size.
    pub async fn size(&self, o: &Obj) -> Result<u64> {
        Ok(self.array(o)?.size().await?)
    }

    /// `fallocate`: mode 0 (and KEEP_SIZE) reserves nothing but extends the
    /// size as asked; PUNCH_HOLE|KEEP_SIZE frees the range, which reads as
    /// zeros, keeping the size.
    pub async fn fallocate(&self, o: &Obj, mode: i32, off: u64, len: u64) -> Result<()> {
        if o.kind() != Kind::File {
            return Err(Errno(libc::ENODEV));
        }
        let end = off.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        let a = self.array(o)?;
        match mode {
            0 => {
                if end > a.size().await? {
                    a.set_size(end).await?;
                }
                Ok(())
            }
            falloc::KEEP_SIZE => Ok(()),
            m if m == falloc::PUNCH_HOLE | falloc::KEEP_SIZE => {
                let size = a.size().await?;
                let stop = end.min(size);
                if off < stop {
                    a.punch(off, stop - off).await?;
                    if a.size().await? < size {
                        // The punch took the file's last bytes: keep its size.
                        a.set_size(size).await?;
                    }
                }
                Ok(())
            }
            _ => Err(Errno(libc::EOPNOTSUPP)),
        }
    }

    /// One page of a directory's entries after `anchor`; the next anchor, or
    /// `None` at the end. Entries added or removed between pages do not
    /// disturb the others (the anchor is a key, not a position).
    pub async fn readdir(
        &self,
        dir: &Obj,
        anchor: Option<(usize, Vec<u8>)>,
        max: u32,
    ) -> Result<(Vec<Obj>, Option<(usize, Vec<u8>)>)> {
        if dir.kind() != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let d = self.object(dir.oid)?;
        let (page, next) = d
            .list_dkeys_page_with(anchor, max.max(1), &RECORD_AKEYS)
            .await?;
        let mut out = Vec::with_capacity(page.len());
        for (name, values) in page {
            // dkeys starting with NUL are the directory's own (times,
            // markers, xattrs), not entries; an entry without a record is
            // one being removed.
            if name.first() == Some(&0) {
                continue;
            }
            let Some(inode) = decode_record(&values)? else {
                continue;
            };
            out.push(Obj {
                oid: ObjectId::new(inode.oid_hi, inode.oid_lo),
                parent: dir.oid,
                name,
                inode,
            });
        }
        Ok((out, next))
    }

    async fn is_empty_dir(&self, oid: ObjectId) -> Result<bool> {
        let o = self.object(oid)?;
        let mut anchor = None;
        loop {
            let (names, next) = o.list_dkeys_page(anchor, 8).await?;
            if names.iter().any(|n| n.first() != Some(&0)) {
                return Ok(false);
            }
            match next {
                Some(a) => anchor = Some(a),
                None => return Ok(true),
            }
        }
    }

    /// Removes a non-directory entry. Returns the file's object, whether
    /// that was its last name (then the caller frees the object once nobody
    /// has the file open) and the directory's new times.
    ///
    /// `guess` is what the caller last knew under the name (a lookup's
    /// answer). If it is a file with one name, the entry is removed in one
    /// round trip, on the engine's check that the entry still holds that
    /// object with one name; if the check fails (or there is no guess) the
    /// entry is read first. Either way what is removed and returned is what
    /// the name held at the removal: a stale guess never frees the wrong object.
    pub async fn unlink(&self, dir: &Obj, name: &[u8], guess: Option<&Obj>) -> Result<Removed> {
        if let Some(g) = guess {
            if g.parent == dir.oid && g.name == name && g.kind() != Kind::Dir && !g.inode.shared {
                let _held = self.lock_records(&[g.oid]).await;
                if let Some(r) = self.remove_entry(dir, g).await? {
                    return Ok(r);
                }
            }
        }
        let o = self.lookup(dir, name).await?;
        if o.kind() == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        let _held = self.lock_records(&[o.oid]).await;
        let d = self.object(dir.oid)?;
        let now = self.now();
        let mut tx = self.cont.tx();
        tx.punch_dkey(&d, name, cond::DKEY_PUNCH);
        touch_dir(&mut tx, &d, now);
        let last = self.drop_name(&mut tx, &o, now).await?;
        tx.commit().await?;
        Ok(Removed {
            oid: o.oid,
            last,
            at: now,
        })
    }

    /// Removes an empty directory; returns what [`Dfs::unlink`] does, and
    /// the caller frees the directory's object ([`Dfs::free`]). `guess` as
    /// for [`Dfs::unlink`]: a directory the name still holds saves reading
    /// the entry first.
    pub async fn rmdir(&self, dir: &Obj, name: &[u8], guess: Option<&Obj>) -> Result<Removed> {
        let mut full = None;
        if let Some(g) = guess {
            if g.parent == dir.oid && g.name == name && g.kind() == Kind::Dir {
                if !self.is_empty_dir(g.oid).await? {
                    full = Some(g.oid);
                } else if let Some(r) = self.remove_entry(dir, g).await? {
                    return Ok(r);
                }
            }
        }
        let o = self.lookup(dir, name).await?;
        if o.kind() != Kind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        if full == Some(o.oid) || !self.is_empty_dir(o.oid).await? {
            return Err(Errno(libc::ENOTEMPTY));
        }
        let d = self.object(dir.oid)?;
        let now = self.now();
        let mut tx = self.cont.tx();
        tx.punch_dkey(&d, name, cond::DKEY_PUNCH);
        touch_dir(&mut tx, &d, now);
        mark_subdir(&mut tx, &d, name, false);
        tx.commit().await?;
        Ok(Removed {
            oid: o.oid,
            last: true,
            at: now,
        })
    }

    /// Removes the entry of `o` (a file with one name, or an empty
    /// directory) from `dir` in one transaction, if the entry still holds
    /// `o`; `None` if it holds something else now (the caller reads it).
    async fn remove_entry(&self, dir: &Obj, o: &Obj) -> Result<Option<Removed>> {
        let d = self.object(dir.oid)?;
        let now = self.now();
        let mut tx = self.cont.tx();
        tx.punch_dkey(&d, &o.name, cond::DKEY_PUNCH);
        for (at, bytes) in Inode::identity(o.oid.hi, o.oid.lo, false) {
            tx.expect(INODE_AKEY, at, &bytes);
        }
        touch_dir(&mut tx, &d, now);
        if o.kind() == Kind::Dir {
            mark_subdir(&mut tx, &d, &o.name, false);
        }
        match tx.commit().await {
            Ok(_) => Ok(Some(Removed {
                oid: o.oid,
                last: true,
                at: now,
            })),
            Err(e) if e.der() == Der::MISMATCH => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Frees an object nobody names or has open any more.
    pub async fn free(&self, oid: ObjectId) -> Result<()> {
        Ok(self.object(oid)?.punch().await?)
    }

    /// Renames `sname` in `sdir` to `dname` in `ddir`, atomically. Returns the
    /// object of a replaced inode and whether that was its last name (then the
    /// caller frees it once nobody has it open), as [`Dfs::unlink`] does.
    pub async fn rename(
        &self,
        sdir: &Obj,
        sname: &[u8],
        ddir: &Obj,
        dname: &[u8],
        flags: u32,
    ) -> Result<Option<(ObjectId, bool)>> {
        check_name(dname)?;
        if flags & !(rename_flags::NOREPLACE | rename_flags::EXCHANGE) != 0
            || flags == rename_flags::NOREPLACE | rename_flags::EXCHANGE
        {
            return Err(Errno(libc::EINVAL));
        }
        // Both names looked up again under their inodes' locks, until they
        // name what was locked: the records written below are then current.
        let (_held, src, dst) = loop {
            let (src, dst) = self.rename_names(sdir, sname, ddir, dname).await?;
            let mut oids = vec![src.oid];
            oids.extend(dst.as_ref().map(|d| d.oid));
            let held = self.lock_records(&oids).await;
            let (s2, d2) = self.rename_names(sdir, sname, ddir, dname).await?;
            if s2.oid == src.oid && d2.as_ref().map(|d| d.oid) == dst.as_ref().map(|d| d.oid) {
                break (held, s2, d2);
            }
        };
        let sd = self.object(sdir.oid)?;
        let dd = self.object(ddir.oid)?;
        if sdir.oid == ddir.oid && sname == dname {
            return Ok(None);
        }
        let now = self.now();
        let exchange = flags & rename_flags::EXCHANGE != 0;
        let mut tx = self.cont.tx();
        let mut victim = None;
        if exchange {
            let dst = dst.as_ref().ok_or(Errno(libc::ENOENT))?;
            if dst.oid == src.oid {
                // Two names of one file: nothing changes.
                return Ok(None);
            }
            tx.update(
                &sd,
                sname,
                record_iods(&changed_record(dst, now)),
                cond::DKEY_UPDATE,
            );
            tx.update(
                &dd,
                dname,
                record_iods(&changed_record(&src, now)),
                cond::DKEY_UPDATE,
            );
        } else {
            match &dst {
                Some(_) if flags & rename_flags::NOREPLACE != 0 => return Err(Errno(libc::EEXIST)),
                Some(d) if d.oid == src.oid => {
                    // Two links to one file: POSIX says do nothing.
                    return Ok(None);
                }
                Some(d) => match (src.kind() == Kind::Dir, d.kind() == Kind::Dir) {
                    (true, false) => return Err(Errno(libc::ENOTDIR)),
                    (false, true) => return Err(Errno(libc::EISDIR)),
                    (true, true) => {
                        if !self.is_empty_dir(d.oid).await? {
                            return Err(Errno(libc::ENOTEMPTY));
                        }
                        victim = Some((d.oid, true));
                    }
                    (false, false) => {
                        victim = Some((d.oid, self.drop_name(&mut tx, d, now).await?));
                    }
                },
                None => {}
            }
            tx.punch_dkey(&sd, sname, cond::DKEY_PUNCH);
            let c = if dst.is_some() {
                cond::NONE
            } else {
                cond::DKEY_INSERT
            };
            let rec = changed_record(&src, now);
            tx.update(&dd, dname, record_iods(&rec), c);
        }
        // What the renamed inodes' change times need outside their entries.
        self.touch_moved(&mut tx, &src, now).await?;
        if exchange {
            if let Some(d) = &dst {
                self.touch_moved(&mut tx, d, now).await?;
            }
        }
        // Subdirectory markers follow the directories between the names.
        let src_dir = src.kind() == Kind::Dir;
        let dst_dir = dst.as_ref().is_some_and(|d| d.kind() == Kind::Dir);
        let s_after = exchange && dst_dir;
        if src_dir != s_after {
            mark_subdir(&mut tx, &sd, sname, s_after);
        }
        if dst_dir != src_dir {
            mark_subdir(&mut tx, &dd, dname, src_dir);
        }
        touch_dir(&mut tx, &sd, now);
        if ddir.oid != sdir.oid {
            touch_dir(&mut tx, &dd, now);
        }
        tx.commit().await?;
        Ok(victim)
    }

    async fn rename_names(
        &self,
        sdir: &Obj,
        sname: &[u8],
        ddir: &Obj,
        dname: &[u8],
    ) -> Result<(Obj, Option<Obj>)> {
        let (src, dst) =
            futures::future::join(self.lookup(sdir, sname), self.lookup(ddir, dname)).await;
        let dst = match dst {
            Ok(d) => Some(d),
            Err(Errno(libc::ENOENT)) => None,
            Err(e) => return Err(e),
        };
        Ok((src?, dst))
    }

    /// Adds to `tx` the new change time of a renamed inode whose record is
    /// not (only) in its entry: a directory's own times, a hard-linked file's
    /// shared record.
    async fn touch_moved(&self, tx: &mut Tx, o: &Obj, now: i64) -> Result<()> {
        if o.kind() == Kind::Dir {
            tx.update(
                &self.object(o.oid)?,
                DIR_DKEY,
                vec![time_iod(DIR_CTIME_AKEY, now)],
                cond::NONE,
            );
        } else if o.inode.shared {
            let mut r = self.record(o).await?;
            r.ctime = now;
            self.put_shared(tx, o.oid, &r, cond::DKEY_UPDATE)?;
        }
        Ok(())
    }

    /// Adds to `tx` the write of `r` as file `oid`'s shared record.
    fn put_shared(&self, tx: &mut Tx, oid: ObjectId, r: &Inode, c: u32) -> Result<()> {
        // The authoritative record itself is never a stub.
        let rec = Inode {
            shared: false,
            ..r.clone()
        };
        tx.update(&self.object(oid)?, INODE_DKEY, record_iods(&rec), c);
        Ok(())
    }

    /// Adds to `tx` what removing one name of the non-directory `o` does to
    /// its record (the caller holds its lock); whether that was its last name.
    async fn drop_name(&self, tx: &mut Tx, o: &Obj, now: i64) -> Result<bool> {
        if !o.inode.shared {
            return Ok(true);
        }
        let mut r = self.record(o).await?;
        r.nlink = r.nlink.saturating_sub(1);
        r.ctime = now;
        if r.nlink == 0 {
            tx.punch_dkey(&self.object(o.oid)?, INODE_DKEY, cond::NONE);
        } else {
            self.put_shared(tx, o.oid, &r, cond::DKEY_UPDATE)?;
        }
        Ok(r.nlink == 0)
    }

    /// A new name `name` in `dir` for the file `o` (a hard link).
    pub async fn link(&self, o: &Obj, dir: &Obj, name: &[u8]) -> Result<Obj> {
        check_name(name)?;
        if o.kind() == Kind::Dir {
            return Err(Errno(libc::EPERM));
        }
        let _held = self.lock_records(&[o.oid]).await;
        let dd = self.object(dir.oid)?;
        let mut r = self.record(o).await?;
        r.nlink += 1;
        let now = self.now();
        r.ctime = now;
        let stub = Inode {
            shared: true,
            ..r.clone()
        };
        let mut tx = self.cont.tx();
        if r.shared {
            self.put_shared(&mut tx, o.oid, &r, cond::DKEY_UPDATE)?;
        } else {
            // First link: the record moves into the file's object; the old
            // entry becomes a stub like the new one.
            self.put_shared(&mut tx, o.oid, &r, cond::NONE)?;
            tx.update(
                &self.object(o.parent)?,
                &o.name,
                vec![single(INODE_AKEY, stub.encode())],
                cond::DKEY_UPDATE,
            );
        }
        tx.update(
            &dd,
            name,
            vec![single(INODE_AKEY, stub.encode())],
            cond::DKEY_INSERT,
        );
        touch_dir(&mut tx, &dd, now);
        tx.commit().await?;
        Ok(Obj {
            oid: o.oid,
            parent: dir.oid,
            name: name.to_vec(),
            inode: stub,
        })
    }

    fn xattr_akey(name: &[u8]) -> Result<Vec<u8>> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Errno(libc::ERANGE));
        }
        let ok = [&b"user."[..], b"security.", b"trusted.", b"system."]
            .iter()
            .any(|p| name.starts_with(p));
        if !ok {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let mut k = XATTR_PREFIX.to_vec();
        k.extend_from_slice(name);
        Ok(k)
    }

    /// `setxattr`; `flags` as Linux's XATTR_CREATE (1) / XATTR_REPLACE (2).
    pub async fn setxattr(&self, o: &Obj, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        let akey = Self::xattr_akey(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno(libc::E2BIG));
        }
        let (obj, dkey) = self.xattr_loc(o)?;
        let c = match flags {
            0 => cond::NONE,
            1 => cond::AKEY_INSERT,
            2 => cond::AKEY_UPDATE,
            _ => return Err(Errno(libc::EINVAL)),
        };
        match obj.update(&dkey, &[single(&akey, value.to_vec())], c).await {
            Ok(_) => Ok(()),
            Err(e) if e.der() == Der::EXIST => Err(Errno(libc::EEXIST)),
            Err(e) if e.der() == Der::NONEXIST => Err(Errno(libc::ENODATA)),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn getxattr(&self, o: &Obj, name: &[u8]) -> Result<Vec<u8>> {
        let akey = Self::xattr_akey(name)?;
        let (obj, dkey) = self.xattr_loc(o)?;
        let f = obj
            .fetch(
                &dkey,
                &[FetchIod::Single { akey }],
                EPOCH_LATEST,
                cond::NONE,
            )
            .await?;
        match f.into_iter().next() {
            Some(x) if x.found => Ok(x.data.to_vec()),
            _ => Err(Errno(libc::ENODATA)),
        }
    }

    pub async fn listxattr(&self, o: &Obj) -> Result<Vec<Vec<u8>>> {
        let (obj, dkey) = self.xattr_loc(o)?;
        Ok(obj
            .list_akeys(&dkey)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(XATTR_PREFIX).map(<[u8]>::to_vec))
            .collect())
    }

    pub async fn removexattr(&self, o: &Obj, name: &[u8]) -> Result<()> {
        let akey = Self::xattr_akey(name)?;
        let (obj, dkey) = self.xattr_loc(o)?;
        match obj.punch_akeys(&dkey, &[akey], cond::AKEY_PUNCH).await {
            Ok(()) => Ok(()),
            Err(e) if e.der() == Der::NONEXIST => Err(Errno(libc::ENODATA)),
            Err(e) => Err(e.into()),
        }
    }

    /// The pool's space.
    pub async fn statfs(&self) -> Result<StatFs> {
        let q = self.cont.pool().query().await?;
        Ok(StatFs {
            total: q.scm.total + q.nvme.total,
            free: q.scm.free + q.nvme.free,
            files: q.scm.free / 256,
        })
    }
}
