//! Durable storage of the management service's raft group.
//!
//! The log store is one append-only file of checksummed records (entries, vote,
//! committed id, truncation, purge). A record is on disk (`fdatasync`ed) before
//! openraft is told the write is done, so whatever the leader acknowledged survives
//! `kill -9`. Replay stops at the first torn or corrupt record, which can only be a
//! write that was never acknowledged, and cuts it off. When dead records outnumber
//! live ones the file is rewritten beside the old one and renamed over it.
//!
//! The state machine is kept in memory and made durable through snapshots: a
//! snapshot file holds the whole [`SystemDb`] and the log id it covers; on start the
//! snapshot is loaded and the committed log after it is applied again.

// openraft's StorageError is large, and its traits fix the return types.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::state::{MsResp, SystemDb};
use super::TypeConfig;

type NodeId = u64;
type SErr = StorageError<NodeId>;

#[derive(Serialize, Deserialize)]
enum LogRec {
    Entry(Box<Entry<TypeConfig>>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    /// Removes entries at and after this index.
    Truncate(u64),
    /// Removes entries up to and including this id.
    Purge(LogId<NodeId>),
}

const LOG_FILE: &str = "raft.log";
const SNAP_FILE: &str = "snapshot.json";

/// The log as raft sees it. Updated only after the records are durable.
#[derive(Default)]
struct Mem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

impl Mem {
    fn apply(&mut self, rec: LogRec) {
        match rec {
            LogRec::Entry(e) => {
                self.entries.insert(e.log_id.index, *e);
            }
            LogRec::Vote(v) => self.vote = Some(v),
            LogRec::Committed(c) => self.committed = c,
            LogRec::Truncate(i) => {
                self.entries.split_off(&i);
            }
            LogRec::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
        }
    }

    /// The fewest records that rebuild this state.
    fn records(&self) -> Vec<LogRec> {
        let mut recs = Vec::new();
        if let Some(v) = self.vote {
            recs.push(LogRec::Vote(v));
        }
        recs.push(LogRec::Committed(self.committed));
        if let Some(p) = self.last_purged {
            recs.push(LogRec::Purge(p));
        }
        recs.extend(
            self.entries
                .values()
                .cloned()
                .map(|e| LogRec::Entry(Box::new(e))),
        );
        recs
    }
}

/// The log file. Its lock serialises writers; readers never take it, so a slow
/// fsync delays the next write, not raft's reads.
struct LogFile {
    dir: PathBuf,
    file: File,
    records: usize,
}

/// The raft log. Clones share one log.
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<Mem>>,
    file: Arc<Mutex<LogFile>>,
}

fn io_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write_logs(&e).into()
}

fn lock_err() -> SErr {
    StorageIOError::write_logs(&std::io::Error::other("raft log lock poisoned")).into()
}

fn encode(recs: &[LogRec]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for rec in recs {
        let payload = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
    }
    Ok(buf)
}

/// Parses the log file. Returns the records and the length of the valid prefix.
/// An incomplete or bad *last* record is a torn write that was never
/// acknowledged; a bad record with more after it is corruption of acknowledged
/// data, and raft must not start on it.
fn replay(data: &[u8]) -> Result<(Vec<LogRec>, usize), String> {
    let mut recs = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let Some(hdr) = data.get(off..off + 8) else {
            break;
        };
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let end = off + 8 + len;
        let Some(payload) = data.get(off + 8..end) else {
            break;
        };
        let rec = (crc32fast::hash(payload) == crc)
            .then(|| serde_json::from_slice::<LogRec>(payload).ok())
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

impl LogFile {
    /// Appends records and makes them durable, then shows them to readers.
    fn write(&mut self, mem: &Mutex<Mem>, recs: Vec<LogRec>) -> std::io::Result<()> {
        self.file.write_all(&encode(&recs)?)?;
        self.file.sync_data()?;
        self.records += recs.len();
        let live = {
            let mut m = mem
                .lock()
                .map_err(|_| std::io::Error::other("raft log lock poisoned"))?;
            for r in recs {
                m.apply(r);
            }
            m.entries.len()
        };
        if self.records > 2 * live + 256 {
            let recs = mem
                .lock()
                .map_err(|_| std::io::Error::other("raft log lock poisoned"))?
                .records();
            proto::durable::write_atomic(&self.dir, LOG_FILE, &encode(&recs)?)?;
            self.file = OpenOptions::new()
                .append(true)
                .open(self.dir.join(LOG_FILE))?;
            self.records = recs.len();
        }
        Ok(())
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying what is there. Blocks.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        proto::durable::create_dir_all_durable(dir)?;
        let path = dir.join(LOG_FILE);
        let mut data = Vec::new();
        let existed = path.exists();
        if existed {
            File::open(&path)?.read_to_end(&mut data)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if !existed {
            proto::durable::fsync_dir(dir)?;
        }
        let (recs, valid) = replay(&data).map_err(|e| {
            std::io::Error::other(format!(
                "{}: {e}; restore it from another replica or a backup",
                path.display()
            ))
        })?;
        if valid < data.len() {
            tracing::warn!(path = %path.display(), "raft log: dropping {} bytes of torn tail at offset {valid}", data.len() - valid);
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        let records = recs.len();
        let mut mem = Mem::default();
        for r in recs {
            mem.apply(r);
        }
        Ok(LogStore {
            mem: Arc::new(Mutex::new(mem)),
            file: Arc::new(Mutex::new(LogFile {
                dir: dir.to_path_buf(),
                file,
                records,
            })),
        })
    }

    fn mem(&self) -> Result<std::sync::MutexGuard<'_, Mem>, SErr> {
        self.mem.lock().map_err(|_| lock_err())
    }

    async fn write(&self, recs: Vec<LogRec>) -> Result<(), std::io::Error> {
        let (file, mem) = (self.file.clone(), self.mem.clone());
        tokio::task::spawn_blocking(move || {
            file.lock()
                .map_err(|_| std::io::Error::other("raft log lock poisoned"))?
                .write(&mem, recs)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        Ok(self
            .mem()?
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let g = self.mem()?;
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.last_purged);
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        self.write(vec![LogRec::Vote(*vote)])
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(self.mem()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        self.write(vec![LogRec::Committed(committed)])
            .await
            .map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.mem()?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let recs: Vec<LogRec> = entries
            .into_iter()
            .map(|e| LogRec::Entry(Box::new(e)))
            .collect();
        match self.write(recs).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!("raft log append failed: {e}");
                let msg = e.to_string();
                callback.log_io_completed(Err(e));
                Err(io_err(std::io::Error::other(msg)))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.write(vec![LogRec::Truncate(log_id.index)])
            .await
            .map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.write(vec![LogRec::Purge(log_id)])
            .await
            .map_err(io_err)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    db: SystemDb,
}

pub(crate) struct SmInner {
    pub(crate) db: SystemDb,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snap_seq: u64,
}

/// The state machine. Clones share one state; readers use [`StateMachine::read`].
#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    inner: Arc<RwLock<SmInner>>,
}

impl StateMachine {
    /// Loads the last snapshot from `dir`, if any.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let mut inner = SmInner {
            db: SystemDb::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot: None,
            snap_seq: 0,
        };
        let p = dir.join(SNAP_FILE);
        if p.exists() {
            let data = std::fs::read(&p)?;
            let s: StoredSnapshot = serde_json::from_slice(&data).map_err(|e| {
                std::io::Error::other(format!("{}: corrupt snapshot: {e}", p.display()))
            })?;
            inner.db = s.db;
            inner.last_applied = s.meta.last_log_id;
            inner.last_membership = s.meta.last_membership.clone();
            inner.snapshot = Some((s.meta, data));
        }
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            inner: Arc::new(RwLock::new(inner)),
        })
    }

    /// Runs `f` on the current state.
    pub fn read<T>(&self, f: impl FnOnce(&SystemDb) -> T) -> T {
        match self.inner.read() {
            Ok(g) => f(&g.db),
            Err(p) => f(&p.into_inner().db),
        }
    }

    fn write_guard(&self) -> Result<std::sync::RwLockWriteGuard<'_, SmInner>, SErr> {
        self.inner.write().map_err(|_| {
            StorageIOError::write_state_machine(&std::io::Error::other(
                "state machine lock poisoned",
            ))
            .into()
        })
    }

    async fn persist(
        &self,
        meta: SnapshotMeta<NodeId, BasicNode>,
        db: SystemDb,
    ) -> Result<Vec<u8>, SErr> {
        let dir = self.dir.clone();
        let stored = StoredSnapshot { meta, db };
        let data =
            serde_json::to_vec(&stored).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let d2 = data.clone();
        tokio::task::spawn_blocking(move || proto::durable::write_atomic(&dir, SNAP_FILE, &d2))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(data)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (meta, db) = {
            let mut g = self.write_guard()?;
            g.snap_seq += 1;
            let id = match g.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, g.snap_seq),
                None => format!("none-{}", g.snap_seq),
            };
            let meta = SnapshotMeta {
                last_log_id: g.last_applied,
                last_membership: g.last_membership.clone(),
                snapshot_id: id,
            };
            (meta, g.db.clone())
        };
        let data = self.persist(meta.clone(), db).await?;
        self.write_guard()?.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SErr> {
        let g = self.write_guard()?;
        Ok((g.last_applied, g.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MsResp>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut g = self.write_guard()?;
        let mut out = Vec::new();
        for e in entries {
            g.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(MsResp::Ok),
                EntryPayload::Normal(cmd) => out.push(g.db.apply(cmd)),
                EntryPayload::Membership(m) => {
                    g.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(MsResp::Ok);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let stored: StoredSnapshot = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let saved = self.persist(meta.clone(), stored.db.clone()).await?;
        let mut g = self.write_guard()?;
        g.db = stored.db;
        g.last_applied = meta.last_log_id;
        g.last_membership = meta.last_membership.clone();
        g.snapshot = Some((meta.clone(), saved));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let g = self.write_guard()?;
        Ok(g.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(i: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn replay_survives_torn_tail_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(dir.path()).unwrap();
            let mut f = s.file.lock().unwrap();
            for i in 1..=600 {
                f.write(&s.mem, vec![LogRec::Entry(Box::new(entry(i)))])
                    .unwrap();
            }
            f.write(&s.mem, vec![LogRec::Purge(entry(500).log_id)])
                .unwrap();
            f.write(&s.mem, vec![LogRec::Truncate(590)]).unwrap();
        }
        // A torn record at the end, as a crash in the middle of a write leaves it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let s = LogStore::open(dir.path()).unwrap();
        let g = s.mem.lock().unwrap();
        assert_eq!(g.entries.keys().next(), Some(&501));
        assert_eq!(g.entries.keys().next_back(), Some(&589));
        assert_eq!(g.last_purged.map(|l| l.index), Some(500));
    }

    #[test]
    fn corruption_before_acknowledged_records_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(dir.path()).unwrap();
            let mut f = s.file.lock().unwrap();
            for i in 1..=3 {
                f.write(&s.mem, vec![LogRec::Entry(Box::new(entry(i)))])
                    .unwrap();
            }
        }
        let path = dir.path().join(LOG_FILE);
        let mut data = std::fs::read(&path).unwrap();
        data[12] ^= 0xff; // inside the first record's payload
        std::fs::write(&path, &data).unwrap();
        let e = LogStore::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("corrupt record at offset 0"), "{e}");
    }
}
