//! The random file exerciser, in the spirit of fsx: one file, a long seeded sequence of writes,
//! reads, truncates, fallocate and punch-hole, mmap reads and writes, `copy_file_range` and
//! close/reopen, with every read checked against an in-memory model of the file.
//!
//! Invariant: after every op the model holds exactly the bytes POSIX says the file holds (holes
//! and extensions read as zeros), and the file's size equals the model's length; any read that
//! differs is reported with the seed, the op log and the first differing byte range. The same
//! seed and options replay the same sequence (the `xfstests fsx` subcommand).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::env::Hooks;
use crate::sys;

/// The kinds of operation the exerciser draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `pwrite` of patterned data, possibly past end of file.
    Write,
    /// `pread`, possibly past end of file.
    Read,
    /// `ftruncate` to a larger size.
    TruncateUp,
    /// `ftruncate` to a smaller size.
    TruncateDown,
    /// `fallocate(mode 0)`, which may extend the file.
    Fallocate,
    /// `fallocate(FALLOC_FL_KEEP_SIZE)`.
    FallocateKeepSize,
    /// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
    PunchHole,
    /// Read through a shared mapping.
    MmapRead,
    /// Write through a shared mapping, then `msync`.
    MmapWrite,
    /// `copy_file_range` between two non-overlapping ranges of the file.
    CopyRange,
    /// Close the file, reopen it, and compare the whole file.
    CloseReopen,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 11] = [
        OpKind::Write,
        OpKind::Read,
        OpKind::TruncateUp,
        OpKind::TruncateDown,
        OpKind::Fallocate,
        OpKind::FallocateKeepSize,
        OpKind::PunchHole,
        OpKind::MmapRead,
        OpKind::MmapWrite,
        OpKind::CopyRange,
        OpKind::CloseReopen,
    ];

    /// The kinds every run uses.
    pub const BASE: [OpKind; 5] = [
        OpKind::Write,
        OpKind::Read,
        OpKind::TruncateUp,
        OpKind::TruncateDown,
        OpKind::CloseReopen,
    ];

    /// Relative frequency: data ops dominate, as in fsx.
    fn weight(self) -> u32 {
        match self {
            OpKind::Write | OpKind::Read => 6,
            OpKind::MmapRead | OpKind::MmapWrite | OpKind::CopyRange => 3,
            OpKind::CloseReopen => 1,
            _ => 2,
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FsxConfig {
    /// Seed of the op sequence.
    pub seed: u64,
    /// Number of ops to run (fewer if the time budget runs out).
    pub ops: u64,
    /// Largest file size the sequence produces.
    pub max_size: u64,
    /// Largest single read/write/copy length.
    pub max_len: u64,
    /// Kinds to draw from.
    pub kinds: Vec<OpKind>,
    /// Kinds the target may lack: on `EOPNOTSUPP` they are dropped from the run (and noted)
    /// instead of failing it.
    pub optional: Vec<OpKind>,
    /// Drop the kernel caches every N ops (closing the file around it).
    pub drop_caches_every: Option<u64>,
    /// Remount the target every N ops (closing the file around it).
    pub remount_every: Option<u64>,
    /// Wall-time budget; the run stops cleanly when it is spent.
    pub budget: Duration,
}

/// A drawn operation. Offsets and lengths are bytes.
#[derive(Clone, Copy, Debug)]
enum Op {
    Write { off: u64, len: u64 },
    Read { off: u64, len: u64 },
    Truncate { size: u64 },
    Fallocate { off: u64, len: u64, keep: bool },
    PunchHole { off: u64, len: u64 },
    MmapRead { off: u64, len: u64 },
    MmapWrite { off: u64, len: u64 },
    CopyRange { src: u64, dst: u64, len: u64 },
    CloseReopen,
    Check,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Write { off, len } => write!(f, "write 0x{off:x} +0x{len:x}"),
            Op::Read { off, len } => write!(f, "read 0x{off:x} +0x{len:x}"),
            Op::Truncate { size } => write!(f, "truncate to 0x{size:x}"),
            Op::Fallocate { off, len, keep } => {
                let k = if keep { " keep_size" } else { "" };
                write!(f, "fallocate{k} 0x{off:x} +0x{len:x}")
            }
            Op::PunchHole { off, len } => write!(f, "punch_hole 0x{off:x} +0x{len:x}"),
            Op::MmapRead { off, len } => write!(f, "mmap_read 0x{off:x} +0x{len:x}"),
            Op::MmapWrite { off, len } => write!(f, "mmap_write 0x{off:x} +0x{len:x}"),
            Op::CopyRange { src, dst, len } => {
                write!(f, "copy_file_range 0x{src:x} -> 0x{dst:x} +0x{len:x}")
            }
            Op::CloseReopen => write!(f, "close/reopen"),
            Op::Check => write!(f, "full-file check"),
        }
    }
}

/// What a finished run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FsxStats {
    /// Ops executed.
    pub ops: u64,
    /// Whether the time budget ended the run before `ops`.
    pub out_of_time: bool,
    /// Optional kinds dropped because the target returned `EOPNOTSUPP`.
    pub dropped: Vec<OpKind>,
    /// Final file size.
    pub final_size: u64,
}

/// A failed run: the first wrong read or failed syscall, with everything needed to replay it.
#[derive(Debug)]
pub struct FsxFailure {
    /// Seed of the run.
    pub seed: u64,
    /// Index of the failing op.
    pub op_index: u64,
    /// The failing op and what was wrong.
    pub what: String,
    /// The last ops before the failure, oldest first.
    pub log_tail: Vec<String>,
    /// Where the whole op log was written, if it could be.
    pub log_path: Option<PathBuf>,
    /// The `xfstests fsx` command line that replays the run.
    pub replay: String,
}

impl fmt::Display for FsxFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} op #{}: {}", self.seed, self.op_index, self.what)?;
        write!(f, "\n  replay: {}", self.replay)?;
        if let Some(p) = &self.log_path {
            write!(f, "\n  op log: {}", p.display())?;
        }
        write!(f, "\n  last ops:")?;
        for l in &self.log_tail {
            write!(f, "\n    {l}")?;
        }
        Ok(())
    }
}

/// How many ops of the log a failure message carries.
const LOG_TAIL: usize = 25;

/// The byte an op with index `n` writes at file offset `off`: never zero, so holes and
/// extensions (zeros) are told apart from data, and a stale byte names the op that wrote it.
fn pattern_byte(n: u64, off: u64) -> u8 {
    // 251 is prime, so neighbouring offsets of one op and one offset across ops both differ.
    ((n.wrapping_mul(31).wrapping_add(off)) % 251 + 1) as u8
}

fn pattern(n: u64, off: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(n, off + i)).collect()
}

/// The first range where `got` differs from `want`, described for a person.
fn describe_diff(file_off: u64, want: &[u8], got: &[u8]) -> Option<String> {
    if want == got {
        return None;
    }
    let n = want.len().min(got.len());
    let first = (0..n).find(|&i| want[i] != got[i]);
    let Some(first) = first else {
        if want.len() != got.len() {
            return Some(format!(
                "length differs: expected 0x{:x} bytes, got 0x{:x}",
                want.len(),
                got.len()
            ));
        }
        return None;
    };
    let end = (first..n).find(|&i| want[i] == got[i]).unwrap_or(n);
    let show = |b: &[u8]| {
        b.iter()
            .take(16)
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(format!(
        "first differing bytes 0x{:x}..0x{:x} (0x{:x} bytes): expected [{}], got [{}]",
        file_off + first as u64,
        file_off + end as u64,
        end - first,
        show(&want[first..end]),
        show(&got[first..end])
    ))
}

/// Runs the exerciser on `path` (created or truncated). `mount` is passed to the remount hook.
pub fn run(
    path: &Path,
    cfg: &FsxConfig,
    hooks: &Hooks,
    mount: &Path,
    log_dir: Option<&Path>,
) -> Result<FsxStats, FsxFailure> {
    let mut fsx = Fsx {
        path: path.to_path_buf(),
        file: None,
        model: Vec::new(),
        rng: StdRng::seed_from_u64(cfg.seed),
        kinds: cfg.kinds.clone(),
        cfg,
        log: Vec::new(),
        stats: FsxStats::default(),
    };
    let result = fsx.run_all(hooks, mount);
    match result {
        Ok(()) => {
            fsx.stats.final_size = fsx.model.len() as u64;
            Ok(fsx.stats)
        }
        Err(what) => {
            let log_path = log_dir.and_then(|d| {
                let p = d.join(format!("fsx-seed{}.log", cfg.seed));
                let mut text = format!(
                    "# fsx seed {} ops {} max_size {} kinds {:?}\n",
                    cfg.seed, cfg.ops, cfg.max_size, cfg.kinds
                );
                for l in &fsx.log {
                    text.push_str(l);
                    text.push('\n');
                }
                text.push_str(&format!("# FAILED: {what}\n"));
                std::fs::write(&p, text).ok().map(|_| p)
            });
            let tail_from = fsx.log.len().saturating_sub(LOG_TAIL);
            Err(FsxFailure {
                replay: replay_command(path, cfg),
                seed: cfg.seed,
                op_index: fsx.stats.ops,
                what,
                log_tail: fsx.log[tail_from..].to_vec(),
                log_path,
            })
        }
    }
}

/// The command line that replays `cfg` on `path` (drop-caches and remount steps not included).
fn replay_command(path: &Path, cfg: &FsxConfig) -> String {
    let kinds: Vec<String> = cfg
        .kinds
        .iter()
        .filter_map(|k| clap::ValueEnum::to_possible_value(k).map(|v| v.get_name().to_string()))
        .collect();
    format!(
        "xfstests fsx --file {} --seed {} --ops {} --max-size {} --max-len {} --kinds {}{}",
        path.display(),
        cfg.seed,
        cfg.ops,
        cfg.max_size,
        cfg.max_len,
        kinds.join(","),
        if cfg.optional.is_empty() {
            ""
        } else {
            " --lenient"
        }
    )
}

struct Fsx<'a> {
    path: PathBuf,
    file: Option<File>,
    model: Vec<u8>,
    rng: StdRng,
    kinds: Vec<OpKind>,
    cfg: &'a FsxConfig,
    log: Vec<String>,
    stats: FsxStats,
}

/// A failure description; the op index comes from the stats.
type Fail = String;

fn sys_fail(op: &Op, e: &io::Error) -> Fail {
    format!("{op}: {} ({e})", sys::errno_name(e))
}

impl Fsx<'_> {
    fn run_all(&mut self, hooks: &Hooks, mount: &Path) -> Result<(), Fail> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&self.path)
            .map_err(|e| format!("creating {}: {}", self.path.display(), sys::errno_name(&e)))?;
        self.file = Some(file);
        let start = Instant::now();
        while self.stats.ops < self.cfg.ops {
            if start.elapsed() >= self.cfg.budget {
                self.stats.out_of_time = true;
                break;
            }
            let n = self.stats.ops;
            if n > 0
                && self
                    .cfg
                    .drop_caches_every
                    .is_some_and(|k| k > 0 && n.is_multiple_of(k))
            {
                self.log.push(format!("#{n} drop caches"));
                self.file = None;
                hooks
                    .drop_caches()
                    .map_err(|e| format!("drop caches: {e:#}"))?;
                self.reopen(&Op::CloseReopen)?;
            }
            if n > 0
                && self
                    .cfg
                    .remount_every
                    .is_some_and(|k| k > 0 && n.is_multiple_of(k))
            {
                self.log.push(format!("#{n} remount"));
                self.file = None;
                hooks
                    .remount(mount)
                    .map_err(|e| format!("remount: {e:#}"))?;
                self.reopen(&Op::CloseReopen)?;
            }
            let op = self.draw();
            self.log
                .push(format!("#{n} {op} (size 0x{:x})", self.model.len()));
            self.apply(op)?;
            self.check_size(&op)?;
            if n % 128 == 127 {
                self.check_all(&Op::Check)?;
            }
            self.stats.ops += 1;
        }
        self.check_all(&Op::Check)
    }

    fn file(&self) -> Result<&File, Fail> {
        self.file
            .as_ref()
            .ok_or_else(|| "internal: file is closed".to_string())
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    fn draw(&mut self) -> Op {
        loop {
            let total: u32 = self.kinds.iter().map(|k| k.weight()).sum();
            let mut pick = self.rng.gen_range(0..total.max(1));
            let mut kind = OpKind::Read;
            for k in &self.kinds {
                if pick < k.weight() {
                    kind = *k;
                    break;
                }
                pick -= k.weight();
            }
            if let Some(op) = self.draw_kind(kind) {
                return op;
            }
        }
    }

    /// An op of `kind` valid for the current size, `None` when there is none (e.g. mmap of an
    /// empty file); the caller draws again.
    fn draw_kind(&mut self, kind: OpKind) -> Option<Op> {
        let size = self.size();
        let max = self.cfg.max_size.max(1);
        let max_len = self.cfg.max_len.max(1);
        let rng = &mut self.rng;
        // Half the offsets fall inside the file, where overwrites and holes interact.
        let any_off = |rng: &mut StdRng| {
            if size > 0 && rng.gen_bool(0.5) {
                rng.gen_range(0..size)
            } else {
                rng.gen_range(0..max)
            }
        };
        Some(match kind {
            OpKind::Write => {
                let off = any_off(rng);
                let len = rng.gen_range(1..=max_len).min(max - off).max(1);
                Op::Write { off, len }
            }
            OpKind::Read => {
                let off = any_off(rng);
                Op::Read {
                    off,
                    len: rng.gen_range(1..=max_len),
                }
            }
            OpKind::TruncateUp => {
                if size >= max {
                    return None;
                }
                Op::Truncate {
                    size: rng.gen_range(size + 1..=max),
                }
            }
            OpKind::TruncateDown => {
                if size == 0 {
                    return None;
                }
                Op::Truncate {
                    size: rng.gen_range(0..size),
                }
            }
            OpKind::Fallocate | OpKind::FallocateKeepSize => {
                let off = any_off(rng);
                let len = rng.gen_range(1..=max_len).min(max - off).max(1);
                Op::Fallocate {
                    off,
                    len,
                    keep: kind == OpKind::FallocateKeepSize,
                }
            }
            OpKind::PunchHole => {
                if size == 0 {
                    return None;
                }
                let off = rng.gen_range(0..size);
                Op::PunchHole {
                    off,
                    len: rng.gen_range(1..=max_len),
                }
            }
            OpKind::MmapRead | OpKind::MmapWrite => {
                if size == 0 {
                    return None;
                }
                let off = rng.gen_range(0..size);
                let len = rng.gen_range(1..=max_len.min(size - off));
                if kind == OpKind::MmapRead {
                    Op::MmapRead { off, len }
                } else {
                    Op::MmapWrite { off, len }
                }
            }
            OpKind::CopyRange => {
                if size == 0 {
                    return None;
                }
                let src = rng.gen_range(0..size);
                let len = rng.gen_range(1..=max_len.min(size - src));
                if len >= max {
                    return None;
                }
                // Ranges of one file must not overlap (the kernel answers EINVAL).
                for _ in 0..8 {
                    let dst = rng.gen_range(0..=max - len);
                    if dst + len <= src || src + len <= dst {
                        return Some(Op::CopyRange { src, dst, len });
                    }
                }
                return None;
            }
            OpKind::CloseReopen => Op::CloseReopen,
        })
    }

    fn model_write(&mut self, off: u64, data: &[u8]) {
        let (off, end) = (off as usize, off as usize + data.len());
        if self.model.len() < end {
            self.model.resize(end, 0);
        }
        self.model[off..end].copy_from_slice(data);
    }

    fn expected(&self, off: u64, len: u64) -> &[u8] {
        let size = self.size();
        let start = off.min(size) as usize;
        let end = (off + len).min(size) as usize;
        &self.model[start..end]
    }

    /// Drops `kind` from the run when it is optional and the target lacks it.
    fn unsupported(&mut self, op: &Op, kind: OpKind, e: &io::Error) -> Result<(), Fail> {
        let lacks = matches!(
            sys::errno_of(e),
            Some(Errno::EOPNOTSUPP) | Some(Errno::ENOSYS) | Some(Errno::EXDEV)
        );
        if lacks && self.cfg.optional.contains(&kind) {
            self.kinds.retain(|k| *k != kind);
            self.stats.dropped.push(kind);
            self.log.push(format!(
                "   {kind:?} unsupported ({}): dropped",
                sys::errno_name(e)
            ));
            Ok(())
        } else {
            Err(sys_fail(op, e))
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), Fail> {
        let n = self.stats.ops;
        match op {
            Op::Write { off, len } => {
                let data = pattern(n, off, len);
                sys::pwrite_all(self.file()?.as_fd(), &data, off).map_err(|e| sys_fail(&op, &e))?;
                self.model_write(off, &data);
            }
            Op::Read { off, len } => {
                let mut buf = vec![0u8; len as usize];
                let got = sys::pread_full(self.file()?.as_fd(), &mut buf, off)
                    .map_err(|e| sys_fail(&op, &e))?;
                buf.truncate(got);
                if let Some(d) = describe_diff(off, self.expected(off, len), &buf) {
                    return Err(format!("{op}: {d}"));
                }
            }
            Op::Truncate { size } => {
                self.file()?.set_len(size).map_err(|e| sys_fail(&op, &e))?;
                self.model.resize(size as usize, 0);
            }
            Op::Fallocate { off, len, keep } => {
                let (mode, kind) = if keep {
                    (libc::FALLOC_FL_KEEP_SIZE, OpKind::FallocateKeepSize)
                } else {
                    (0, OpKind::Fallocate)
                };
                match sys::fallocate(self.file()?.as_fd(), mode, off, len) {
                    Ok(()) => {
                        if !keep && off + len > self.size() {
                            self.model.resize((off + len) as usize, 0);
                        }
                    }
                    Err(e) => self.unsupported(&op, kind, &e)?,
                }
            }
            Op::PunchHole { off, len } => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                match sys::fallocate(self.file()?.as_fd(), mode, off, len) {
                    Ok(()) => {
                        let end = (off + len).min(self.size());
                        self.model[off as usize..end as usize].fill(0);
                    }
                    Err(e) => self.unsupported(&op, OpKind::PunchHole, &e)?,
                }
            }
            Op::MmapRead { off, len } => {
                let map = match sys::Mmap::map(self.file()?.as_fd(), off, len as usize, false) {
                    Ok(m) => m,
                    Err(e) => return self.unsupported(&op, OpKind::MmapRead, &e),
                };
                if let Some(d) = describe_diff(off, self.expected(off, len), map.as_slice()) {
                    return Err(format!("{op}: {d}"));
                }
            }
            Op::MmapWrite { off, len } => {
                let mut map = match sys::Mmap::map(self.file()?.as_fd(), off, len as usize, true) {
                    Ok(m) => m,
                    Err(e) => return self.unsupported(&op, OpKind::MmapWrite, &e),
                };
                let data = pattern(n, off, len);
                map.as_mut_slice().copy_from_slice(&data);
                map.sync().map_err(|e| sys_fail(&op, &e))?;
                drop(map);
                self.model_write(off, &data);
            }
            Op::CopyRange { src, dst, len } => {
                let mut done = 0;
                while done < len {
                    let f = self.file()?.as_fd();
                    match sys::copy_file_range(f, src + done, f, dst + done, (len - done) as usize)
                    {
                        Ok(0) => {
                            return Err(format!(
                            "{op}: returned 0 after 0x{done:x} bytes, before the end of the source"
                        ))
                        }
                        Ok(k) => done += k as u64,
                        Err(e) if done == 0 => return self.unsupported(&op, OpKind::CopyRange, &e),
                        Err(e) => return Err(sys_fail(&op, &e)),
                    }
                }
                let data = self.model[src as usize..(src + len) as usize].to_vec();
                self.model_write(dst, &data);
            }
            Op::CloseReopen => {
                self.file = None;
                self.reopen(&op)?;
            }
            Op::Check => self.check_all(&op)?,
        }
        Ok(())
    }

    fn reopen(&mut self, op: &Op) -> Result<(), Fail> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| sys_fail(op, &e))?;
        self.file = Some(f);
        self.check_size(op)?;
        self.check_all(op)
    }

    fn check_size(&self, op: &Op) -> Result<(), Fail> {
        let got = self.file()?.metadata().map_err(|e| sys_fail(op, &e))?.len();
        if got != self.size() {
            return Err(format!(
                "{op}: file size is 0x{got:x}, expected 0x{:x}",
                self.size()
            ));
        }
        Ok(())
    }

    fn check_all(&self, op: &Op) -> Result<(), Fail> {
        let size = self.size();
        let mut buf = vec![0u8; size as usize + 1];
        let got =
            sys::pread_full(self.file()?.as_fd(), &mut buf, 0).map_err(|e| sys_fail(op, &e))?;
        buf.truncate(got);
        match describe_diff(0, &self.model, &buf) {
            Some(d) => Err(format!("{op} (whole file): {d}")),
            None => Ok(()),
        }
    }
}

/// One named fsx test of the suite.
#[derive(Clone, Debug)]
pub struct FsxTest {
    /// Test name (the id is `fsx/NAME`).
    pub name: &'static str,
    /// Kinds drawn, beyond `OpKind::BASE`.
    pub extra: &'static [OpKind],
    /// Whether extra kinds the target lacks are dropped (true) or fail the test (false).
    pub lenient: bool,
    /// What the test needs from the target: drop caches or remount between ops.
    pub between_ops: BetweenOps,
}

/// Cache-defeating step run between ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetweenOps {
    /// Nothing.
    None,
    /// Drop the kernel caches.
    DropCaches,
    /// Remount the target.
    Remount,
}

/// The suite's tests.
pub fn tests() -> Vec<FsxTest> {
    use OpKind::*;
    let all = &[
        Fallocate,
        FallocateKeepSize,
        PunchHole,
        MmapRead,
        MmapWrite,
        CopyRange,
    ];
    vec![
        FsxTest {
            name: "write_read_truncate",
            extra: &[],
            lenient: false,
            between_ops: BetweenOps::None,
        },
        FsxTest {
            name: "fallocate",
            extra: &[Fallocate, FallocateKeepSize],
            lenient: false,
            between_ops: BetweenOps::None,
        },
        FsxTest {
            name: "punch_hole",
            extra: &[PunchHole],
            lenient: false,
            between_ops: BetweenOps::None,
        },
        FsxTest {
            name: "mmap",
            extra: &[MmapRead, MmapWrite],
            lenient: false,
            between_ops: BetweenOps::None,
        },
        FsxTest {
            name: "copy_file_range",
            extra: &[CopyRange],
            lenient: false,
            between_ops: BetweenOps::None,
        },
        FsxTest {
            name: "all_ops",
            extra: all,
            lenient: true,
            between_ops: BetweenOps::None,
        },
        FsxTest {
            name: "all_ops_drop_caches",
            extra: all,
            lenient: true,
            between_ops: BetweenOps::DropCaches,
        },
        FsxTest {
            name: "all_ops_remount",
            extra: all,
            lenient: true,
            between_ops: BetweenOps::Remount,
        },
    ]
}

/// Options shared by the suite's tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteOptions {
    /// Ops per test.
    pub ops: u64,
    /// Largest file size.
    pub max_size: u64,
    /// Largest single I/O.
    pub max_len: u64,
    /// Ops between two cache drops (`all_ops_drop_caches`).
    pub drop_caches_every: u64,
    /// Ops between two remounts (`all_ops_remount`).
    pub remount_every: u64,
}

/// The seed of the suite's `index`-th test for a run seed: distinct tests, one knob.
pub fn test_seed(run_seed: u64, index: usize) -> u64 {
    run_seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Builds the config of one test; `Err` is the reason it cannot run on this target.
pub fn config_for(
    t: &FsxTest,
    seed: u64,
    opts: &SuiteOptions,
    hooks: &Hooks,
    budget: Duration,
) -> std::result::Result<FsxConfig, String> {
    let mut kinds = OpKind::BASE.to_vec();
    kinds.extend_from_slice(t.extra);
    let (mut drop_caches_every, mut remount_every) = (None, None);
    match t.between_ops {
        BetweenOps::None => {}
        BetweenOps::DropCaches => {
            if !hooks.drop_caches {
                return Err("dropping caches is opt-in: pass --drop-caches".into());
            }
            if !nix::unistd::Uid::effective().is_root() {
                return Err("dropping caches needs root".into());
            }
            drop_caches_every = Some(opts.drop_caches_every);
        }
        BetweenOps::Remount => {
            if hooks.remount.is_none() {
                return Err("target has no remount hook (pass --remount-cmd)".into());
            }
            remount_every = Some(opts.remount_every);
        }
    }
    Ok(FsxConfig {
        seed,
        ops: opts.ops,
        max_size: opts.max_size,
        max_len: opts.max_len,
        optional: if t.lenient {
            t.extra.to_vec()
        } else {
            Vec::new()
        },
        kinds,
        drop_caches_every,
        remount_every,
        budget,
    })
}

/// Runs one test in `dir`; `Ok` carries notes for the report.
pub fn run_test(
    dir: &Path,
    cfg: &FsxConfig,
    hooks: &Hooks,
    mount: &Path,
    log_dir: &Path,
) -> Result<String, String> {
    let path = dir.join("fsx.data");
    match run(&path, cfg, hooks, mount, Some(log_dir)) {
        Ok(stats) => {
            let _ = std::fs::remove_file(&path);
            let mut notes = format!(
                "seed {} ops {} final size 0x{:x}",
                cfg.seed, stats.ops, stats.final_size
            );
            if stats.out_of_time {
                notes.push_str(" (stopped by the time budget)");
            }
            if !stats.dropped.is_empty() {
                notes.push_str(&format!("; unsupported, dropped: {:?}", stats.dropped));
            }
            Ok(notes)
        }
        Err(f) => Err(f.to_string()),
    }
}

/// Replays a seed outside the suite (the `xfstests fsx` subcommand).
pub fn replay(path: &Path, cfg: &FsxConfig, hooks: &Hooks, mount: &Path) -> Result<FsxStats> {
    let log_dir = path.parent().map(Path::to_path_buf);
    run(path, cfg, hooks, mount, log_dir.as_deref())
        .map_err(|f| anyhow::anyhow!("{f}"))
        .context("fsx replay failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, kinds: &[OpKind]) -> FsxConfig {
        FsxConfig {
            seed,
            ops: 3000,
            max_size: 256 * 1024,
            max_len: 32 * 1024,
            kinds: kinds.to_vec(),
            optional: Vec::new(),
            drop_caches_every: None,
            remount_every: None,
            budget: Duration::from_secs(60),
        }
    }

    #[test]
    fn every_op_kind_agrees_with_the_model_on_a_local_fs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(7, &OpKind::ALL);
        // The test's own filesystem may lack hole punching; the model is what is under test.
        c.optional = vec![
            OpKind::PunchHole,
            OpKind::Fallocate,
            OpKind::FallocateKeepSize,
        ];
        let stats = run(
            &dir.path().join("f"),
            &c,
            &Hooks::default(),
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(stats.ops, 3000);
    }

    #[test]
    fn a_seed_replays_the_same_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(42, &OpKind::BASE);
        let a = run(
            &dir.path().join("a"),
            &c,
            &Hooks::default(),
            dir.path(),
            None,
        )
        .unwrap();
        let b = run(
            &dir.path().join("b"),
            &c,
            &Hooks::default(),
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(a.final_size, b.final_size);
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            std::fs::read(dir.path().join("b")).unwrap()
        );
    }

    #[test]
    fn bytes_changed_behind_its_back_are_caught_with_seed_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut c = cfg(11, &OpKind::BASE);
        c.remount_every = Some(50);
        // The "remount" hook corrupts the file instead: the reopen after it must notice.
        let hooks = Hooks {
            remount: Some(format!(
                "printf '\\001\\002\\003' | dd of={} bs=1 seek=0 conv=notrunc 2>/dev/null",
                p.display()
            )),
            ..Hooks::default()
        };
        let err = run(&p, &c, &hooks, dir.path(), Some(dir.path())).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.op_index, 50, "{text}");
        assert!(text.contains("seed 11"), "{text}");
        assert!(
            text.contains("first differing bytes 0x0..") || text.contains("file size is"),
            "{text}"
        );
        assert!(err.log_path.as_ref().is_some_and(|p| p.exists()), "{text}");
        assert!(!err.log_tail.is_empty());
    }

    #[test]
    fn a_corrupted_file_is_reported_with_the_differing_range() {
        let want = vec![1u8; 64];
        let mut got = want.clone();
        got[10..13].fill(0);
        let d = describe_diff(0x1000, &want, &got).unwrap();
        assert!(d.contains("0x100a..0x100d"), "{d}");
        assert!(describe_diff(0, &want, &want).is_none());
        assert!(describe_diff(0, &want, &want[..10])
            .unwrap()
            .contains("length"));
    }

    #[test]
    fn a_failure_carries_a_replay_command() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let c = cfg(5, &[OpKind::Write, OpKind::TruncateDown, OpKind::MmapRead]);
        let cmd = replay_command(&p, &c);
        assert!(cmd.contains("--seed 5"), "{cmd}");
        assert!(
            cmd.contains("--kinds write,truncate-down,mmap-read"),
            "{cmd}"
        );
        let parsed = <crate::cli::Cli as clap::Parser>::try_parse_from(
            std::iter::once("xfstests").chain(cmd.split_whitespace().skip(1)),
        );
        assert!(parsed.is_ok(), "{cmd}: {parsed:?}");
    }

    #[test]
    fn pattern_bytes_are_never_zero() {
        assert!((0..10_000u64).all(|i| pattern_byte(i, i * 7) != 0));
    }
}
