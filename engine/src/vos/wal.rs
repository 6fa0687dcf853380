//! The files under a VOS directory: the write-ahead log and the checkpoint.
//!
//! Invariant: `vos.ckpt` is always a complete, checksummed image (it is only
//! ever replaced by rename of a synced temp file), and `vos.log` holds the
//! batches flushed after it, in sequence order. A record with a sequence
//! number at or below the checkpoint's is one the checkpoint already covers
//! (a crash between the rename and the log reset), and is skipped.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::index::Image;
use super::layout::{self, Checkpoint, LogRecord, CKPT_HEADER_LEN, LOG_HEADER_LEN, REC_MAGIC};
use crate::error::{Error, Result};

pub const LOG_FILE: &str = "vos.log";
pub const CKPT_FILE: &str = "vos.ckpt";
pub const CKPT_TMP: &str = "vos.ckpt.tmp";

pub(crate) fn corrupt(path: &Path, offset: usize, msg: impl std::fmt::Display) -> Error {
    Error::io(
        format!("VOS file {} at offset {offset}", path.display()),
        std::io::Error::new(ErrorKind::InvalidData, msg.to_string()),
    )
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Reads and verifies the checkpoint, if there is one.
pub(crate) fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    layout::decode_checkpoint(&buf)
        .map(Some)
        .map_err(|e| corrupt(path, e.offset, e.msg))
}

/// Writes `img` as the new checkpoint covering log records up to `seq`:
/// temp file, sync, rename, sync of the directory.
pub(crate) fn write_checkpoint(dir: &Path, img: &Image, seq: u64, sync: bool) -> Result<u64> {
    let tmp = dir.join(CKPT_TMP);
    let what = || format!("writing checkpoint {}", tmp.display());
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(|e| Error::io(what(), e))?;
    f.write_all(&[0u8; CKPT_HEADER_LEN])
        .map_err(|e| Error::io(what(), e))?;
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
        layout::encode_image(img, &mut |b: &[u8]| {
            crc.update(b);
            len += b.len() as u64;
            w.write_all(b)
        })
        .and_then(|()| w.flush())
        .map_err(|e| Error::io(what(), e))?;
    }
    let hdr = layout::encode_ckpt_header(seq, len, crc.finalize());
    f.write_all_at(&hdr, 0).map_err(|e| Error::io(what(), e))?;
    if sync {
        f.sync_all().map_err(|e| Error::io(what(), e))?;
    }
    drop(f);
    let dst = dir.join(CKPT_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", tmp.display(), dst.display()),
            e,
        )
    })?;
    if sync {
        fsync_dir(dir)?;
    }
    Ok(len + CKPT_HEADER_LEN as u64)
}

/// The log file, open for appending at `len`.
pub(crate) struct Log {
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// What replay found.
pub(crate) struct Replayed {
    pub log: Log,
    /// Records past the checkpoint, in order, with their file offsets.
    pub records: Vec<(usize, LogRecord)>,
    /// Bytes of torn tail cut off.
    pub truncated: u64,
}

/// Opens (or creates) the log, verifies every record, and cuts a torn tail.
///
/// A bad record (short, bad magic or checksum) is a torn tail if no valid
/// record follows it: the batch was being written when the process died and
/// was never acknowledged. If a valid record does follow, the log was
/// corrupted in the middle, and opening fails naming the file and offset.
pub(crate) fn open_log(dir: &Path, ckpt_seq: u64, sync: bool) -> Result<Replayed> {
    let path = dir.join(LOG_FILE);
    let what = || format!("opening log {}", path.display());
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(what(), e))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| Error::io(what(), e))?;
    if buf.len() < LOG_HEADER_LEN {
        // New, or its creation was interrupted before any record was written.
        let hdr = layout::encode_log_header();
        file.set_len(0).map_err(|e| Error::io(what(), e))?;
        file.write_all_at(&hdr, 0)
            .map_err(|e| Error::io(what(), e))?;
        if sync {
            file.sync_all().map_err(|e| Error::io(what(), e))?;
            fsync_dir(dir)?;
        }
        return Ok(Replayed {
            log: Log {
                path,
                file,
                len: LOG_HEADER_LEN as u64,
            },
            records: Vec::new(),
            truncated: 0,
        });
    }
    layout::decode_log_header(&buf[..LOG_HEADER_LEN])
        .map_err(|e| corrupt(&path, e.offset, e.msg))?;
    let mut off = LOG_HEADER_LEN;
    let mut last = ckpt_seq;
    let mut records = Vec::new();
    while off < buf.len() {
        match layout::decode_log_record(&buf[off..], off) {
            Ok((rec, n)) => {
                if rec.seq > ckpt_seq {
                    if rec.seq != last + 1 {
                        return Err(corrupt(
                            &path,
                            off,
                            format!("record sequence {} follows {last}", rec.seq),
                        ));
                    }
                    last = rec.seq;
                    records.push((off, rec));
                }
                off += n;
            }
            Err(e) => {
                if let Some(next) = find_valid_record(&buf, off + 1) {
                    return Err(corrupt(
                        &path,
                        e.offset,
                        format!(
                            "{}; a valid record follows at offset {next}: the log is corrupt",
                            e.msg
                        ),
                    ));
                }
                break;
            }
        }
    }
    let truncated = (buf.len() - off) as u64;
    if truncated > 0 {
        tracing::warn!(
            log = %path.display(),
            offset = off,
            bytes = truncated,
            "discarding the torn tail of the VOS log (an unacknowledged batch)"
        );
        file.set_len(off as u64).map_err(|e| Error::io(what(), e))?;
        if sync {
            file.sync_all().map_err(|e| Error::io(what(), e))?;
        }
    }
    Ok(Replayed {
        log: Log {
            path,
            file,
            len: off as u64,
        },
        records,
        truncated,
    })
}

/// The offset of the first valid record at or after `from`, if any.
fn find_valid_record(buf: &[u8], from: usize) -> Option<usize> {
    let magic = REC_MAGIC.to_le_bytes();
    let mut i = from;
    while i + 4 <= buf.len() {
        if buf[i..i + 4] == magic && layout::decode_log_record(&buf[i..], i).is_ok() {
            return Some(i);
        }
        i += 1;
    }
    None
}
