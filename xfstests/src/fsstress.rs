//! Concurrent namespace stress, in the spirit of fsstress, and the checker that judges the tree
//! it leaves.
//!
//! Several worker processes run random create, mkdir, rename, link, symlink, unlink, rmdir,
//! write, chmod, utimens and xattr ops on a small shared namespace for a bounded time. Each
//! journals (to a local file, off the mount) every write, chmod and xattr change with the inode
//! it hit and the monotonic interval it ran in. Then the checker walks the tree.
//!
//! Invariants checked: every listed name resolves; no listing holds a name twice; each file's
//! link count equals the names it has in the tree (links never leave the tree); each directory's
//! `..` is its parent and its link count is 2 + subdirectories (when the target counts them);
//! directory sizes follow the model probed before the run (when the target's is linear in the
//! number of entries); each file's content, mode and `user.` xattr equal what one of its last
//! writers wrote: a value is acceptable when no other change to that inode began after it ended.
//! Assumes inode numbers are not reused within the run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::report::{Outcome, TestResult};
use crate::sys;

/// Bytes of every file body: fixed, so a body is either one whole record or damage.
pub const RECORD_LEN: usize = 4096;
const MAGIC: &[u8; 8] = b"FSSTRESS";
const XATTR: &str = "user.fsstress";
/// Mode of a fresh file, before any chmod.
const CREATE_MODE: u32 = 0o644;
const MODES: [u32; 4] = [0o600, 0o640, 0o644, 0o664];

/// The suite's options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Options {
    /// Worker processes.
    pub procs: usize,
    /// How long the workers run.
    pub seconds: u64,
}

/// Test names the suite reports, in order.
pub const CHECKS: [&str; 10] = [
    "workers",
    "names_resolve",
    "no_duplicate_entries",
    "link_counts",
    "dotdot",
    "dir_sizes",
    "last_writer_content",
    "last_writer_mode",
    "last_writer_xattr",
    "remove_tree",
];

/// A journaled change to one inode's attribute.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Change {
    ino: u64,
    attr: Attr,
    /// The value after the change: `wIDsSEQ` for content, octal mode, xattr value (None when
    /// removed).
    val: Option<String>,
    start: u64,
    end: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Attr {
    Content,
    Mode,
    Xattr,
}

/// What a worker reports on stdout when done.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Ops done, by name.
    pub ops: BTreeMap<String, u64>,
    /// Ops that failed with an errno no race explains (first few).
    pub unexpected: Vec<String>,
    /// How many there were.
    pub unexpected_count: u64,
    /// Whether the target refused `user.` xattrs (then xattr ops stop).
    pub xattr_unsupported: bool,
}

/// Expected failures of racing namespace ops: another worker got there first.
fn raced(e: &io::Error) -> bool {
    matches!(
        sys::errno_of(e),
        Some(
            Errno::ENOENT
                | Errno::EEXIST
                | Errno::ENOTEMPTY
                | Errno::ENOTDIR
                | Errno::EISDIR
                | Errno::EINVAL
                | Errno::ELOOP
                | Errno::ENODATA
        )
    )
}

/// The body worker `id` writes with sequence number `seq`.
fn record(id: u32, seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(RECORD_LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    let mut x = (u64::from(id) << 40) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
    while b.len() < RECORD_LEN {
        // xorshift: cheap bytes that differ between records
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.push((x >> 24) as u8);
    }
    b
}

/// Names the record a body holds (`wIDsSEQ`), or why it is not one whole record.
fn parse_record(body: &[u8]) -> std::result::Result<String, String> {
    if body.len() != RECORD_LEN {
        return Err(format!("size {} is not {RECORD_LEN}", body.len()));
    }
    if &body[..8] != MAGIC {
        return Err("no record header".into());
    }
    let id = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&body[12..20]);
    let seq = u64::from_le_bytes(s);
    if record(id, seq) != body {
        return Err(format!(
            "body of w{id}s{seq} is damaged (torn or mixed write)"
        ));
    }
    Ok(format!("w{id}s{seq}"))
}

struct Worker {
    root: PathBuf,
    id: u32,
    rng: StdRng,
    seq: u64,
    /// The last change this worker made to each (inode, attribute): its earlier changes there
    /// ended before this one began, so no final state can be theirs.
    journal: HashMap<(u64, Attr), Change>,
    stats: WorkerStats,
}

impl Worker {
    fn journal(&mut self, c: Change) {
        self.journal.insert((c.ino, c.attr), c);
    }
}

impl Worker {
    /// A path of `depth` directories then a leaf (`dN` or `fN`), all from a small namespace so
    /// that workers collide often.
    fn path_at(&mut self, depth: usize, leaf_dir: bool) -> PathBuf {
        let mut p = self.root.clone();
        for _ in 0..depth {
            p.push(format!("d{}", self.rng.gen_range(0..4)));
        }
        if leaf_dir {
            p.push(format!("d{}", self.rng.gen_range(0..4)));
        } else {
            p.push(format!("f{}", self.rng.gen_range(0..8)));
        }
        p
    }

    fn path(&mut self, leaf_dir: bool) -> PathBuf {
        let depth = self.rng.gen_range(0..=2);
        self.path_at(depth, leaf_dir)
    }

    /// Two paths at the same depth. Renames keep depth, so a directory never sinks below the
    /// depth it was made at and the tree stays bounded (3 levels of 4 directories).
    fn path_pair(&mut self) -> (PathBuf, PathBuf) {
        let depth = self.rng.gen_range(0..=2);
        let (a, b) = (self.rng.gen_bool(0.3), self.rng.gen_bool(0.3));
        (self.path_at(depth, a), self.path_at(depth, b))
    }

    fn any_path(&mut self) -> PathBuf {
        let dir = self.rng.gen_bool(0.3);
        self.path(dir)
    }

    fn note(&mut self, op: &str, r: io::Result<()>) {
        *self.stats.ops.entry(op.to_string()).or_default() += 1;
        if let Err(e) = r {
            // link(2) of a directory is EPERM; directories get file names through renames.
            let dir_link = op == "link" && sys::errno_of(&e) == Some(Errno::EPERM);
            if !raced(&e) && !dir_link {
                self.stats.unexpected_count += 1;
                if self.stats.unexpected.len() < 10 {
                    self.stats
                        .unexpected
                        .push(format!("{op}: {}", sys::errno_name(&e)));
                }
            }
        }
    }

    fn write_body(&mut self, f: &File) -> io::Result<()> {
        let st = f.metadata()?;
        if !st.is_file() {
            return Ok(());
        }
        self.seq += 1;
        let body = record(self.id, self.seq);
        let start = sys::monotonic_ns();
        // One pwrite of the whole record: POSIX makes it atomic against other writes.
        let r = sys::pwrite_all(f.as_fd(), &body, 0);
        let end = sys::monotonic_ns();
        r?;
        self.journal(Change {
            ino: st.ino(),
            attr: Attr::Content,
            val: Some(format!("w{}s{}", self.id, self.seq)),
            start,
            end,
        });
        Ok(())
    }

    fn create(&mut self) -> io::Result<()> {
        let p = self.path(false);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CREATE_MODE)
            .open(p)?;
        self.write_body(&f)
    }

    fn write(&mut self) -> io::Result<()> {
        let p = self.path(false);
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)?;
        self.write_body(&f)
    }

    /// Opens a regular file for an attribute change; `None` for anything else.
    fn open_file(&mut self) -> io::Result<Option<(File, u64)>> {
        let p = self.path(false);
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)?;
        let st = f.metadata()?;
        if !st.is_file() {
            return Ok(None);
        }
        Ok(Some((f, st.ino())))
    }

    fn chmod(&mut self) -> io::Result<()> {
        let Some((f, ino)) = self.open_file()? else {
            return Ok(());
        };
        let mode = MODES[self.rng.gen_range(0..MODES.len())];
        let start = sys::monotonic_ns();
        let r = f.set_permissions(fs::Permissions::from_mode(mode));
        let end = sys::monotonic_ns();
        r?;
        self.journal(Change {
            ino,
            attr: Attr::Mode,
            val: Some(format!("{mode:o}")),
            start,
            end,
        });
        Ok(())
    }

    fn xattr(&mut self) -> io::Result<()> {
        if self.stats.xattr_unsupported {
            return Ok(());
        }
        let Some((f, ino)) = self.open_file()? else {
            return Ok(());
        };
        let remove = self.rng.gen_bool(0.3);
        self.seq += 1;
        let val = format!("w{}s{}", self.id, self.seq);
        let start = sys::monotonic_ns();
        let r = if remove {
            sys::fremove_xattr(f.as_fd(), XATTR)
        } else {
            sys::fset_xattr(f.as_fd(), XATTR, val.as_bytes(), 0)
        };
        let end = sys::monotonic_ns();
        match r {
            // Removing an absent attribute still observed "absent" at that moment.
            Err(e) if remove && sys::errno_of(&e) == Some(Errno::ENODATA) => {}
            Err(e) if sys::errno_of(&e) == Some(Errno::EOPNOTSUPP) => {
                self.stats.xattr_unsupported = true;
                return Ok(());
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        self.journal(Change {
            ino,
            attr: Attr::Xattr,
            val: if remove { None } else { Some(val) },
            start,
            end,
        });
        Ok(())
    }

    fn utimens(&mut self) -> io::Result<()> {
        let p = self.any_path();
        let t = nix::sys::time::TimeSpec::new(self.rng.gen_range(0..2_000_000_000), 0);
        nix::sys::stat::utimensat(
            None,
            &p,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from)
    }

    fn step(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=17 => {
                let r = self.create();
                self.note("create", r)
            }
            18..=29 => {
                let r = self.write();
                self.note("write", r)
            }
            30..=39 => {
                let p = self.path(true);
                self.note("mkdir", fs::create_dir(p))
            }
            40..=53 => {
                let (a, b) = self.path_pair();
                self.note("rename", fs::rename(a, b))
            }
            54..=61 => {
                let (a, b) = (self.path(false), self.path(false));
                self.note("link", fs::hard_link(a, b))
            }
            62..=64 => {
                let p = self.path(false);
                self.note("symlink", std::os::unix::fs::symlink("f0", p))
            }
            65..=76 => {
                let p = self.path(false);
                self.note("unlink", fs::remove_file(p))
            }
            77..=83 => {
                let p = self.path(true);
                self.note("rmdir", fs::remove_dir(p))
            }
            84..=89 => {
                let r = self.chmod();
                self.note("chmod", r)
            }
            90..=92 => {
                let r = self.utimens();
                self.note("utimens", r)
            }
            _ => {
                let r = self.xattr();
                self.note("xattr", r)
            }
        }
    }
}

/// A worker's main: runs ops in `root` until `millis` pass, writes its journal, prints stats.
pub fn worker_main(root: &Path, id: u32, seed: u64, millis: u64, journal: &Path) -> Result<()> {
    let mut w = Worker {
        root: root.to_path_buf(),
        id,
        rng: StdRng::seed_from_u64(seed),
        seq: 0,
        journal: HashMap::new(),
        stats: WorkerStats::default(),
    };
    let deadline = Instant::now() + Duration::from_millis(millis);
    while Instant::now() < deadline {
        w.step();
    }
    let mut out = io::BufWriter::new(
        File::create(journal).with_context(|| format!("creating {}", journal.display()))?,
    );
    for c in w.journal.values() {
        serde_json::to_writer(&mut out, c)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    println!("{}", serde_json::to_string(&w.stats)?);
    Ok(())
}

/// How directory sizes relate to entry counts on the target, probed on a scratch directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirSizeModel {
    /// `st_size = base + per_entry * entries` (tmpfs: 40 + 20 n).
    Linear { base: i64, per_entry: i64 },
    /// Not a linear function of entries (block-based directories): not checked.
    Other { sizes: [i64; 3] },
}

fn probe_dir_sizes(dir: &Path) -> Result<DirSizeModel> {
    fs::create_dir(dir)?;
    let size = |d: &Path| -> Result<i64> { Ok(fs::metadata(d)?.size() as i64) };
    let s0 = size(dir)?;
    File::create(dir.join("a"))?;
    let s1 = size(dir)?;
    File::create(dir.join("b"))?;
    let s2 = size(dir)?;
    fs::remove_dir_all(dir)?;
    Ok(if s1 - s0 > 0 && s1 - s0 == s2 - s1 {
        DirSizeModel::Linear {
            base: s0,
            per_entry: s1 - s0,
        }
    } else {
        DirSizeModel::Other {
            sizes: [s0, s1, s2],
        }
    })
}

/// Runs the whole suite in `dir` (a fresh directory on the mount) and returns one result per
/// name of `CHECKS`. `journals` is a local directory for the workers' journals.
pub fn run_suite(
    exe: &Path,
    dir: &Path,
    journals: &Path,
    opts: &Options,
    seed: u64,
) -> Result<Vec<TestResult>> {
    let started = Instant::now();
    let mut results = Vec::new();
    let mut push = |name: &str, outcome: Outcome, notes: String| {
        results
            .push(TestResult::new("fsstress", name, outcome, started.elapsed()).with_notes(notes));
    };
    let model = probe_dir_sizes(&dir.join("probe"))?;
    let root = dir.join("tree");
    fs::create_dir(&root)?;
    fs::create_dir_all(journals)?;

    // Workers
    let millis = opts.seconds * 1000;
    let mut children = Vec::new();
    for id in 0..opts.procs {
        let journal = journals.join(format!("fsstress-{id}.jsonl"));
        let _ = fs::remove_file(&journal);
        let child = Command::new(exe)
            .args(["worker", "fsstress"])
            .arg("--root")
            .arg(&root)
            .arg("--id")
            .arg(id.to_string())
            .arg("--seed")
            .arg(seed.wrapping_add(id as u64).to_string())
            .arg("--millis")
            .arg(millis.to_string())
            .arg("--journal")
            .arg(&journal)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting an fsstress worker")?;
        children.push((id, child, journal));
    }
    // A worker stuck in a syscall past this is a hang of the target.
    let deadline = Instant::now() + Duration::from_millis(millis) + Duration::from_secs(30);
    let mut problems = Vec::new();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut journal = Vec::new();
    let mut xattr_unsupported = false;
    for (id, mut child, jpath) in children {
        let status = crate::proc::wait_until(&mut child, deadline)?;
        let mut out = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = io::Read::read_to_string(&mut s, &mut out);
        }
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = io::Read::read_to_string(&mut s, &mut err);
        }
        match status {
            None => problems.push(format!("worker {id} hung (killed after the deadline)")),
            Some(s) if !s.success() => {
                problems.push(format!("worker {id} exited {s}: {}", err.trim()))
            }
            Some(_) => {
                let stats: WorkerStats = serde_json::from_str(out.trim())
                    .with_context(|| format!("worker {id} printed {out:?}"))?;
                for (k, v) in stats.ops {
                    *totals.entry(k).or_default() += v;
                }
                xattr_unsupported |= stats.xattr_unsupported;
                if stats.unexpected_count > 0 {
                    problems.push(format!(
                        "worker {id}: {} ops failed with an errno no race explains: {}",
                        stats.unexpected_count,
                        stats.unexpected.join(", ")
                    ));
                }
                let f = File::open(&jpath)
                    .with_context(|| format!("opening journal {}", jpath.display()))?;
                for line in BufReader::new(f).lines() {
                    journal.push(serde_json::from_str::<Change>(&line?)?);
                }
            }
        }
    }
    let total: u64 = totals.values().sum();
    let ops_note = format!(
        "{} procs, {} s, {total} ops {:?}",
        opts.procs, opts.seconds, totals
    );
    if problems.is_empty() {
        push("workers", Outcome::Pass, ops_note);
    } else {
        push("workers", Outcome::fail(problems.join("; ")), ops_note);
    }

    let walk = walk(&root)?;
    check_tree(&walk, model, &mut push);
    check_last_writers(&walk, &journal, xattr_unsupported, &mut push);

    match fs::remove_dir_all(&root) {
        Ok(()) => push("remove_tree", Outcome::Pass, String::new()),
        Err(e) => push(
            "remove_tree",
            Outcome::fail(format!("removing the tree: {}", sys::errno_name(&e))),
            String::new(),
        ),
    }
    Ok(results)
}

/// One entry seen by the walk.
#[derive(Debug)]
struct Seen {
    path: PathBuf,
    meta: Option<fs::Metadata>,
    err: Option<String>,
}

/// One directory seen by the walk.
#[derive(Debug)]
struct DirSeen {
    path: PathBuf,
    meta: fs::Metadata,
    names: Vec<String>,
    parent_ino: u64,
    dotdot_ino: Option<u64>,
}

#[derive(Debug, Default)]
struct Walk {
    entries: Vec<Seen>,
    dirs: Vec<DirSeen>,
    errors: Vec<String>,
}

fn walk(root: &Path) -> Result<Walk> {
    let mut w = Walk::default();
    let root_meta = fs::symlink_metadata(root)?;
    let parent_ino = fs::metadata(root.join(".."))?.ino();
    let mut stack = vec![(root.to_path_buf(), root_meta, parent_ino)];
    while let Some((dir, meta, parent_ino)) = stack.pop() {
        let mut names = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name().to_string_lossy().into_owned()),
                        Err(e) => w.errors.push(format!(
                            "{}: readdir: {}",
                            dir.display(),
                            sys::errno_name(&e)
                        )),
                    }
                }
            }
            Err(e) => {
                w.errors.push(format!(
                    "{}: opendir: {}",
                    dir.display(),
                    sys::errno_name(&e)
                ));
            }
        }
        let dotdot_ino = fs::metadata(dir.join("..")).ok().map(|m| m.ino());
        let mut seen_here = HashSet::new();
        for n in &names {
            if !seen_here.insert(n.clone()) {
                continue;
            }
            let p = dir.join(n);
            match fs::symlink_metadata(&p) {
                Ok(m) => {
                    if m.is_dir() {
                        stack.push((p.clone(), m.clone(), meta.ino()));
                    }
                    w.entries.push(Seen {
                        path: p,
                        meta: Some(m),
                        err: None,
                    });
                }
                Err(e) => w.entries.push(Seen {
                    path: p,
                    meta: None,
                    err: Some(sys::errno_name(&e)),
                }),
            }
        }
        w.dirs.push(DirSeen {
            path: dir,
            meta,
            names,
            parent_ino,
            dotdot_ino,
        });
    }
    Ok(w)
}

fn verdict(problems: Vec<String>) -> Outcome {
    if problems.is_empty() {
        Outcome::Pass
    } else {
        let n = problems.len();
        let mut shown: Vec<String> = problems.into_iter().take(8).collect();
        if n > shown.len() {
            shown.push(format!("... {} more", n - shown.len()));
        }
        Outcome::fail(shown.join("; "))
    }
}

fn check_tree(w: &Walk, model: DirSizeModel, push: &mut impl FnMut(&str, Outcome, String)) {
    // names_resolve
    let mut p: Vec<String> = w.errors.clone();
    for e in &w.entries {
        if let Some(err) = &e.err {
            p.push(format!(
                "{}: listed but lstat gives {err}",
                e.path.display()
            ));
        }
    }
    let files = w.entries.iter().filter(|e| e.meta.is_some()).count();
    push(
        "names_resolve",
        verdict(p),
        format!("{files} names, {} directories", w.dirs.len()),
    );

    // no_duplicate_entries
    let mut p = Vec::new();
    for d in &w.dirs {
        let mut seen = HashSet::new();
        for n in &d.names {
            if n == "." || n == ".." {
                p.push(format!("{}: readdir returned {n:?}", d.path.display()));
            } else if !seen.insert(n) {
                p.push(format!("{}: {n:?} listed twice", d.path.display()));
            }
        }
    }
    push("no_duplicate_entries", verdict(p), String::new());

    // link_counts
    let mut names_of: HashMap<u64, Vec<&Path>> = HashMap::new();
    let mut nlink_of: HashMap<u64, u64> = HashMap::new();
    for e in &w.entries {
        if let Some(m) = &e.meta {
            if !m.is_dir() {
                names_of.entry(m.ino()).or_default().push(&e.path);
                nlink_of.insert(m.ino(), m.nlink());
            }
        }
    }
    let mut p = Vec::new();
    for (ino, names) in &names_of {
        let nlink = nlink_of.get(ino).copied().unwrap_or(0);
        if nlink != names.len() as u64 {
            p.push(format!(
                "inode {ino} has nlink {nlink} but {} names ({})",
                names.len(),
                names
                    .iter()
                    .map(|n| n.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    // Directories: 2 + subdirectories, unless the target does not count them (nlink 1).
    let mut subdirs_of: HashMap<&Path, u64> = HashMap::new();
    for d in &w.dirs {
        if let Some(parent) = d.path.parent() {
            *subdirs_of.entry(parent).or_default() += 1;
        }
    }
    for d in &w.dirs {
        let subdirs = subdirs_of.get(d.path.as_path()).copied().unwrap_or(0);
        let nlink = d.meta.nlink();
        if nlink != 1 && nlink != 2 + subdirs {
            p.push(format!(
                "{}: directory nlink {nlink}, expected {} (2 + {subdirs} subdirectories)",
                d.path.display(),
                2 + subdirs
            ));
        }
    }
    push(
        "link_counts",
        verdict(p),
        format!("{} non-directory inodes", names_of.len()),
    );

    // dotdot
    let mut p = Vec::new();
    for d in &w.dirs {
        match d.dotdot_ino {
            Some(ino) if ino == d.parent_ino => {}
            Some(ino) => p.push(format!(
                "{}/.. is inode {ino}, parent is {}",
                d.path.display(),
                d.parent_ino
            )),
            None => p.push(format!("{}/.. does not resolve", d.path.display())),
        }
    }
    push("dotdot", verdict(p), String::new());

    // dir_sizes
    match model {
        DirSizeModel::Linear { base, per_entry } => {
            let mut p = Vec::new();
            for d in &w.dirs {
                let want = base + per_entry * d.names.len() as i64;
                let got = d.meta.size() as i64;
                if got != want {
                    p.push(format!(
                        "{}: size {got} with {} entries, expected {want}",
                        d.path.display(),
                        d.names.len()
                    ));
                }
            }
            push(
                "dir_sizes",
                verdict(p),
                format!("size = {base} + {per_entry} x entries"),
            );
        }
        DirSizeModel::Other { sizes } => push(
            "dir_sizes",
            Outcome::skip(format!(
                "directory size is not linear in entries here (0, 1, 2 entries: {sizes:?})"
            )),
            String::new(),
        ),
    }
}

/// Values a final state may have: those of changes no other change to the inode began after.
fn acceptable<'a>(changes: &[&'a Change]) -> Vec<Option<&'a str>> {
    let last_start = changes.iter().map(|c| c.start).max().unwrap_or(0);
    changes
        .iter()
        .filter(|c| c.end >= last_start)
        .map(|c| c.val.as_deref())
        .collect()
}

fn check_last_writers(
    w: &Walk,
    journal: &[Change],
    xattr_unsupported: bool,
    push: &mut impl FnMut(&str, Outcome, String),
) {
    let mut by: HashMap<(u64, Attr), Vec<&Change>> = HashMap::new();
    for c in journal {
        by.entry((c.ino, c.attr)).or_default().push(c);
    }
    let mut files: BTreeMap<u64, &Path> = BTreeMap::new();
    for e in &w.entries {
        if let Some(m) = &e.meta {
            if m.is_file() {
                files.entry(m.ino()).or_insert(&e.path);
            }
        }
    }
    let none: Vec<&Change> = Vec::new();
    let (mut pc, mut pm, mut px) = (Vec::new(), Vec::new(), Vec::new());
    for (&ino, &path) in &files {
        // content
        let changes = by.get(&(ino, Attr::Content)).unwrap_or(&none);
        let ok = acceptable(changes);
        match fs::read(path) {
            Ok(body) => match parse_record(&body) {
                Ok(name) => {
                    if !ok.contains(&Some(name.as_str())) {
                        pc.push(format!(
                            "{}: holds {name}, last writers wrote {:?}",
                            path.display(),
                            ok
                        ));
                    }
                }
                Err(why) => pc.push(format!("{}: {why}", path.display())),
            },
            Err(e) => pc.push(format!("{}: read: {}", path.display(), sys::errno_name(&e))),
        }
        // mode
        if let Ok(m) = fs::symlink_metadata(path) {
            let mode = format!("{:o}", m.mode() & 0o7777);
            let changes = by.get(&(ino, Attr::Mode)).unwrap_or(&none);
            let initial = format!("{CREATE_MODE:o}");
            let ok = if changes.is_empty() {
                vec![Some(initial.as_str())]
            } else {
                acceptable(changes)
            };
            if !ok.contains(&Some(mode.as_str())) {
                pm.push(format!(
                    "{}: mode {mode}, last chmods set {:?}",
                    path.display(),
                    ok
                ));
            }
        }
        // xattr
        if !xattr_unsupported {
            let got = match sys::get_xattr(path, XATTR) {
                Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                Err(e) if sys::errno_of(&e) == Some(Errno::ENODATA) => None,
                Err(e) => {
                    px.push(format!(
                        "{}: getxattr: {}",
                        path.display(),
                        sys::errno_name(&e)
                    ));
                    continue;
                }
            };
            let changes = by.get(&(ino, Attr::Xattr)).unwrap_or(&none);
            let ok = if changes.is_empty() {
                vec![None]
            } else {
                acceptable(changes)
            };
            if !ok.contains(&got.as_deref()) {
                px.push(format!(
                    "{}: xattr {got:?}, last writers set {:?}",
                    path.display(),
                    ok
                ));
            }
        }
    }
    let n = files.len();
    push("last_writer_content", verdict(pc), format!("{n} files"));
    push("last_writer_mode", verdict(pm), format!("{n} files"));
    if xattr_unsupported {
        push(
            "last_writer_xattr",
            Outcome::fail("the target refused user. xattrs (EOPNOTSUPP)"),
            String::new(),
        );
    } else {
        push("last_writer_xattr", verdict(px), format!("{n} files"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_seen() {
        let r = record(3, 77);
        assert_eq!(parse_record(&r).unwrap(), "w3s77");
        let mut torn = r.clone();
        torn[2000..].copy_from_slice(&record(1, 5)[2000..]);
        assert!(parse_record(&torn).is_err());
        assert!(parse_record(&r[..100]).is_err());
    }

    #[test]
    fn last_writer_rule_accepts_only_unsuperseded_values() {
        let c = |val: &str, start, end| Change {
            ino: 1,
            attr: Attr::Content,
            val: Some(val.into()),
            start,
            end,
        };
        let (a, b, x) = (c("a", 0, 10), c("b", 5, 20), c("c", 30, 40));
        // a and b overlap: either may win.
        assert_eq!(acceptable(&[&a, &b]), vec![Some("a"), Some("b")]);
        // c started after both ended: only c.
        assert_eq!(acceptable(&[&a, &b, &x]), vec![Some("c")]);
    }

    #[test]
    fn last_writer_checks_catch_stale_content_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("f0"), record(0, 1)).unwrap();
        fs::set_permissions(root.join("f0"), fs::Permissions::from_mode(0o644)).unwrap();
        let ino = fs::metadata(root.join("f0")).unwrap().ino();
        let ch = |attr, val: &str, start, end| Change {
            ino,
            attr,
            val: Some(val.to_string()),
            start,
            end,
        };
        let w = walk(&root).unwrap();
        // The file holds w0s1 and mode 644, but later writers wrote w1s9 and chmod 600.
        let journal = vec![
            ch(Attr::Content, "w0s1", 0, 10),
            ch(Attr::Content, "w1s9", 20, 30),
            ch(Attr::Mode, "600", 40, 50),
        ];
        let mut failed = Vec::new();
        check_last_writers(&w, &journal, true, &mut |n, o, _| {
            if o.is_fail() {
                failed.push(n.to_string())
            }
        });
        failed.sort();
        assert_eq!(
            failed,
            vec![
                "last_writer_content",
                "last_writer_mode",
                "last_writer_xattr"
            ]
        );
        // With the file's real history, only the xattr check (unsupported here) fails.
        let journal = vec![ch(Attr::Content, "w0s1", 0, 10)];
        let mut failed = Vec::new();
        check_last_writers(&w, &journal, false, &mut |n, o, _| {
            if o.is_fail() {
                failed.push(n.to_string())
            }
        });
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn checker_passes_a_quiet_tree_and_catches_a_bad_link_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("d0/d1")).unwrap();
        fs::write(root.join("f0"), record(0, 1)).unwrap();
        fs::hard_link(root.join("f0"), root.join("d0/f1")).unwrap();
        let w = walk(&root).unwrap();
        let mut out = Vec::new();
        check_tree(&w, DirSizeModel::Other { sizes: [0; 3] }, &mut |n, o, _| {
            out.push((n.to_string(), o))
        });
        for (n, o) in &out {
            assert!(!o.is_fail(), "{n}: {o}");
        }
        // Hide one name from the walk: the link count no longer matches.
        let mut w = walk(&root).unwrap();
        w.entries.retain(|e| !e.path.ends_with("d0/f1"));
        let mut failed = Vec::new();
        check_tree(&w, DirSizeModel::Other { sizes: [0; 3] }, &mut |n, o, _| {
            if o.is_fail() {
                failed.push(n.to_string())
            }
        });
        assert_eq!(failed, vec!["link_counts".to_string()]);
    }
}
