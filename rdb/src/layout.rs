//! On-disk formats of a replica's directory. Every integer is little-endian.
//!
//! `raft.log` (format version [`LOG_VERSION`]):
//! ```text
//! header:  "RDBLOG" | version u16
//! record:  len u32 | crc32(payload) u32 | payload (JSON of one log record)
//! ```
//! The file only grows by whole records appended and `fdatasync`ed; it is rewritten
//! only through [`proto::durable::write_atomic`], so the header is never torn. A file
//! without the header (written before versioning) starts with its first record,
//! whose payload is a JSON object: it is read as version 1 and rewritten with a header.
//!
//! `snapshot.json` (format version [`SNAP_VERSION`]):
//! ```text
//! "RDBSNP" | version u16 | crc32(payload) u32 | payload (JSON {meta, db})
//! ```
//! The same bytes travel to a replica that installs the snapshot, so the checksum
//! covers the transfer as well as the disk. A file that starts with `{` is the
//! pre-versioning plain JSON form, accepted on read. The name keeps its `.json`
//! suffix so that existing replica directories stay where they are.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) const LOG_FILE: &str = "raft.log";
pub(crate) const SNAP_FILE: &str = "snapshot.json";
/// Held (`flock`) by the one process that writes the log.
pub(crate) const LOCK_FILE: &str = "rdb.lock";

const LOG_MAGIC: &[u8; 6] = b"RDBLOG";
const SNAP_MAGIC: &[u8; 6] = b"RDBSNP";
pub(crate) const LOG_VERSION: u16 = 1;
pub(crate) const SNAP_VERSION: u16 = 1;
pub(crate) const LOG_HEADER_LEN: usize = 8;
const SNAP_HEADER_LEN: usize = 12;
const REC_HEADER_LEN: usize = 8;

/// The header that opens every current-format log file.
pub(crate) fn log_header() -> [u8; LOG_HEADER_LEN] {
    let mut h = [0u8; LOG_HEADER_LEN];
    h[..6].copy_from_slice(LOG_MAGIC);
    h[6..].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h
}

/// What the start of a log file says about its format.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogKind {
    /// Empty, or a prefix of the header: nothing was ever acknowledged from it.
    Empty,
    /// Current format; records start after the header.
    Current,
    /// Pre-versioning: records start at offset 0.
    Legacy,
}

/// Classifies a log file by its first bytes; an unknown header or a newer
/// version is an error, never read as records.
pub(crate) fn log_kind(data: &[u8]) -> Result<LogKind, String> {
    let header = log_header();
    if data.len() < LOG_HEADER_LEN && header.starts_with(data) {
        return Ok(LogKind::Empty);
    }
    if data.starts_with(LOG_MAGIC) {
        let v = data
            .get(6..8)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        if v != LOG_VERSION {
            return Err(format!(
                "log format version {v}, this build reads version {LOG_VERSION}"
            ));
        }
        return Ok(LogKind::Current);
    }
    // A legacy file's first record payload is a JSON object.
    if data.get(REC_HEADER_LEN) == Some(&b'{') {
        return Ok(LogKind::Legacy);
    }
    Err("not a replicated database log (unknown header)".into())
}

/// Frames records for appending to the log.
pub(crate) fn encode_records<R: Serialize>(recs: &[R]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for rec in recs {
        let payload = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        let len = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::other("log record larger than 4 GiB"))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
    }
    Ok(buf)
}

/// Parses the framed records of `data` from offset `start` on. Returns them and
/// the length of the valid prefix (offsets count from the start of `data`).
/// An incomplete or bad *last* record is a torn write that was never
/// acknowledged; a bad record with more after it is corruption of acknowledged
/// data, and raft must not start on it.
pub(crate) fn replay<R: DeserializeOwned>(
    data: &[u8],
    start: usize,
) -> Result<(Vec<R>, usize), String> {
    let mut recs = Vec::new();
    let mut off = start;
    while off < data.len() {
        let Some(hdr) = data.get(off..off + REC_HEADER_LEN) else {
            break;
        };
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let end = off + REC_HEADER_LEN + len;
        let Some(payload) = data.get(off + REC_HEADER_LEN..end) else {
            break;
        };
        let rec = (crc32fast::hash(payload) == crc)
            .then(|| serde_json::from_slice::<R>(payload).ok())
            .flatten();
        match rec {
            Some(r) => recs.push(r),
            None if end == data.len() => break,
            None => {
                return Err(format!(
                    "corrupt record at offset {off} with {} bytes after it",
                    data.len() - end
                ))
            }
        }
        off = end;
    }
    Ok((recs, off))
}

/// Encodes a snapshot file (and the snapshot sent to other replicas).
pub(crate) fn encode_snapshot<S: Serialize>(snap: &S) -> Result<Vec<u8>, serde_json::Error> {
    let payload = serde_json::to_vec(snap)?;
    let mut buf = Vec::with_capacity(SNAP_HEADER_LEN + payload.len());
    buf.extend_from_slice(SNAP_MAGIC);
    buf.extend_from_slice(&SNAP_VERSION.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(buf)
}

/// Decodes a snapshot, checking its version and checksum.
pub(crate) fn decode_snapshot<S: DeserializeOwned>(data: &[u8]) -> Result<S, String> {
    if data.first() == Some(&b'{') {
        return serde_json::from_slice(data).map_err(|e| format!("corrupt snapshot: {e}"));
    }
    let Some(hdr) = data.get(..SNAP_HEADER_LEN) else {
        return Err(format!("snapshot too short ({} bytes)", data.len()));
    };
    if !hdr.starts_with(SNAP_MAGIC) {
        return Err("not a replicated database snapshot (unknown header)".into());
    }
    let v = u16::from_le_bytes([hdr[6], hdr[7]]);
    if v != SNAP_VERSION {
        return Err(format!(
            "snapshot format version {v}, this build reads version {SNAP_VERSION}"
        ));
    }
    let crc = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
    let payload = &data[SNAP_HEADER_LEN..];
    if crc32fast::hash(payload) != crc {
        return Err("snapshot checksum mismatch".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("corrupt snapshot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes: a change here is a format change and needs a new version.
    #[test]
    fn log_golden_bytes() {
        assert_eq!(&log_header(), b"RDBLOG\x01\x00");
        let rec = encode_records(&["ab".to_string()]).unwrap();
        let payload = b"\"ab\"";
        let mut want = Vec::new();
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        want.extend_from_slice(payload);
        assert_eq!(rec, want);
        assert_eq!(
            rec,
            [4, 0, 0, 0, 0x7f, 0x51, 0xc1, 0xe0, b'"', b'a', b'b', b'"'],
            "crc32 of \"ab\" with quotes"
        );
        let (r, n) = replay::<String>(&rec, 0).unwrap();
        assert_eq!((r, n), (vec!["ab".to_string()], rec.len()));
    }

    #[test]
    fn snapshot_golden_bytes() {
        let s = encode_snapshot(&vec![1u32]).unwrap();
        let mut want = b"RDBSNP\x01\x00".to_vec();
        want.extend_from_slice(&crc32fast::hash(b"[1]").to_le_bytes());
        want.extend_from_slice(b"[1]");
        assert_eq!(s, want);
        assert_eq!(decode_snapshot::<Vec<u32>>(&s).unwrap(), vec![1]);
        // Legacy plain JSON is still read.
        assert_eq!(
            decode_snapshot::<std::collections::BTreeMap<String, u32>>(b"{\"a\":1}").unwrap()["a"],
            1
        );
    }

    #[test]
    fn snapshot_damage_is_detected() {
        let mut s = encode_snapshot(&vec![1u32, 2, 3]).unwrap();
        let last = s.len() - 2;
        s[last] ^= 0x01; // "3" becomes "2": still valid JSON, wrong checksum
        let e = decode_snapshot::<Vec<u32>>(&s).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        let e = decode_snapshot::<Vec<u32>>(&s[..5]).unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let mut v = encode_snapshot(&vec![1u32]).unwrap();
        v[6] = 9;
        let e = decode_snapshot::<Vec<u32>>(&v).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
    }

    #[test]
    fn log_kinds() {
        assert_eq!(log_kind(b""), Ok(LogKind::Empty));
        assert_eq!(log_kind(b"RDBL"), Ok(LogKind::Empty));
        assert_eq!(log_kind(&log_header()), Ok(LogKind::Current));
        let legacy = encode_records(&[serde_json::json!({"Vote": 1})]).unwrap();
        assert_eq!(log_kind(&legacy), Ok(LogKind::Legacy));
        assert!(log_kind(b"RDBLOG\x02\x00")
            .unwrap_err()
            .contains("version 2"));
        assert!(log_kind(b"garbage garbage").is_err());
    }
}
