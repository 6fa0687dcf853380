//! The raft log of one replica: one append-only file of checksummed records
//! (entries, vote, committed id, truncation, purge); see [`crate::layout`].
//!
//! A record is on disk (`fdatasync`ed) before openraft is told the write is done,
//! and only then shown to readers, so whatever a replica acknowledged survives
//! `kill -9`. Replay stops at the first torn or corrupt record, which can only be
//! a write that was never acknowledged, and cuts it off; a bad record with good
//! ones after it is corruption of acknowledged data and the replica refuses to
//! start. When dead records outnumber live ones the file is rewritten beside the
//! old one and renamed over it. One process at a time writes a directory: it holds
//! an exclusive `flock` on [`LOCK_FILE`] for as long as the log is open.

// openraft's StorageError is large, and its traits fix the return types.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use crate::layout::{self, LogKind, LOCK_FILE, LOG_FILE, LOG_HEADER_LEN};
use crate::types::RdbTypes;
use crate::Db;

type SErr = StorageError<u64>;

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum LogRec<D: Db> {
    Entry(Box<Entry<RdbTypes<D>>>),
    Vote(Vote<u64>),
    Committed(Option<LogId<u64>>),
    /// Removes entries at and after this index.
    Truncate(u64),
    /// Removes entries up to and including this id.
    Purge(LogId<u64>),
}

/// The log as raft sees it. Updated only after the records are durable.
pub(crate) struct Mem<D: Db> {
    pub(crate) entries: BTreeMap<u64, Entry<RdbTypes<D>>>,
    pub(crate) last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
}

impl<D: Db> Default for Mem<D> {
    fn default() -> Self {
        Mem {
            entries: BTreeMap::new(),
            last_purged: None,
            vote: None,
            committed: None,
        }
    }
}

impl<D: Db> Mem<D> {
    fn apply(&mut self, rec: LogRec<D>) {
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
    fn records(&self) -> Vec<LogRec<D>> {
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
pub(crate) struct LogFile {
    dir: PathBuf,
    file: File,
    records: usize,
    /// Released when the last clone of the store goes (raft's tasks hold clones).
    _lock: Flock<File>,
}

/// The raft log. Clones share one log.
pub(crate) struct LogStore<D: Db> {
    pub(crate) mem: Arc<Mutex<Mem<D>>>,
    pub(crate) file: Arc<Mutex<LogFile>>,
}

impl<D: Db> Clone for LogStore<D> {
    fn clone(&self) -> Self {
        LogStore {
            mem: self.mem.clone(),
            file: self.file.clone(),
        }
    }
}

fn io_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write_logs(&e).into()
}

fn lock_err() -> SErr {
    StorageIOError::write_logs(&std::io::Error::other("raft log lock poisoned")).into()
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("raft log lock poisoned")
}

/// Takes the directory's writer lock. A replica shut down a moment ago may still
/// be dropping its last handles, so a held lock is retried for a few seconds.
pub(crate) fn lock_dir(dir: &Path) -> std::io::Result<Flock<File>> {
    let path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    format!(
                        "{}: another replica holds this directory ({e})",
                        path.display()
                    ),
                ))
            }
        }
    }
}

impl LogFile {
    /// Appends records and makes them durable, then shows them to readers.
    pub(crate) fn write<D: Db>(
        &mut self,
        mem: &Mutex<Mem<D>>,
        recs: Vec<LogRec<D>>,
    ) -> std::io::Result<()> {
        self.file.write_all(&layout::encode_records(&recs)?)?;
        self.file.sync_data()?;
        self.records += recs.len();
        let live = {
            let mut m = mem.lock().map_err(|_| poisoned())?;
            for r in recs {
                m.apply(r);
            }
            m.entries.len()
        };
        if self.records > 2 * live + 256 {
            let recs = mem.lock().map_err(|_| poisoned())?.records();
            self.rewrite(&recs)?;
        }
        Ok(())
    }

    /// Replaces the file with exactly `recs`, atomically.
    fn rewrite<D: Db>(&mut self, recs: &[LogRec<D>]) -> std::io::Result<()> {
        let mut data = layout::log_header().to_vec();
        data.extend_from_slice(&layout::encode_records(recs)?);
        proto::durable::write_atomic(&self.dir, LOG_FILE, &data)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.records = recs.len();
        Ok(())
    }
}

impl<D: Db> LogStore<D> {
    /// Opens (or creates) the log in `dir`, replaying what is there. Blocks.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        proto::durable::create_dir_all_durable(dir)?;
        let lock = lock_dir(dir)?;
        let path = dir.join(LOG_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let corrupt = |e: String| {
            std::io::Error::other(format!(
                "{}: {e}; restore it from another replica or a backup",
                path.display()
            ))
        };
        let kind = layout::log_kind(&data).map_err(corrupt)?;
        let start = match kind {
            LogKind::Empty => data.len(),
            LogKind::Current => LOG_HEADER_LEN,
            LogKind::Legacy => 0,
        };
        let (recs, valid) = layout::replay::<LogRec<D>>(&data, start).map_err(corrupt)?;
        if valid < data.len() && kind != LogKind::Empty {
            tracing::warn!(path = %path.display(), "raft log: dropping {} bytes of torn tail at offset {valid}", data.len() - valid);
        }
        let mut mem = Mem::default();
        let mut records = recs.len();
        for r in recs {
            mem.apply(r);
        }
        let mut file = LogFile {
            dir: dir.to_path_buf(),
            // Replaced below once the file is known to be whole.
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            records,
            _lock: lock,
        };
        if kind != LogKind::Current {
            if kind == LogKind::Legacy {
                tracing::info!(path = %path.display(), "raft log: rewriting in format version {}", layout::LOG_VERSION);
            }
            let recs = mem.records();
            file.rewrite(&recs)?;
            records = recs.len();
        } else if valid < data.len() {
            file.file.set_len(valid as u64)?;
            file.file.sync_all()?;
        }
        file.records = records;
        Ok(LogStore {
            mem: Arc::new(Mutex::new(mem)),
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn mem(&self) -> Result<std::sync::MutexGuard<'_, Mem<D>>, SErr> {
        self.mem.lock().map_err(|_| lock_err())
    }

    async fn write(&self, recs: Vec<LogRec<D>>) -> Result<(), std::io::Error> {
        let (file, mem) = (self.file.clone(), self.mem.clone());
        tokio::task::spawn_blocking(move || file.lock().map_err(|_| poisoned())?.write(&mem, recs))
            .await
            .map_err(std::io::Error::other)?
    }
}

impl<D: Db> RaftLogReader<RdbTypes<D>> for LogStore<D> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<RdbTypes<D>>>, SErr> {
        Ok(self
            .mem()?
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl<D: Db> RaftLogStorage<RdbTypes<D>> for LogStore<D> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<RdbTypes<D>>, SErr> {
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

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        self.write(vec![LogRec::Vote(*vote)])
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        Ok(self.mem()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        self.write(vec![LogRec::Committed(committed)])
            .await
            .map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        Ok(self.mem()?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<RdbTypes<D>>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<RdbTypes<D>>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let recs: Vec<LogRec<D>> = entries
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

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        self.write(vec![LogRec::Truncate(log_id.index)])
            .await
            .map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        self.write(vec![LogRec::Purge(log_id)])
            .await
            .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::TestDb;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(i: u64) -> Entry<RdbTypes<TestDb>> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Normal(format!("cmd{i}")),
        }
    }

    fn write(s: &LogStore<TestDb>, rec: LogRec<TestDb>) {
        s.file.lock().unwrap().write(&s.mem, vec![rec]).unwrap();
    }

    #[test]
    fn replay_survives_torn_tail_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::<TestDb>::open(dir.path()).unwrap();
            for i in 1..=600 {
                write(&s, LogRec::Entry(Box::new(entry(i))));
            }
            write(&s, LogRec::Purge(entry(500).log_id));
            write(&s, LogRec::Truncate(590));
        }
        // A torn record at the end, as a crash in the middle of a write leaves it.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let len_torn = std::fs::metadata(&path).unwrap().len();
        let s = LogStore::<TestDb>::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len_torn - 7);
        let g = s.mem.lock().unwrap();
        assert_eq!(g.entries.keys().next(), Some(&501));
        assert_eq!(g.entries.keys().next_back(), Some(&589));
        assert_eq!(g.last_purged.map(|l| l.index), Some(500));
        assert!(matches!(&g.entries[&501].payload, EntryPayload::Normal(c) if c == "cmd501"));
    }

    #[test]
    fn corruption_before_acknowledged_records_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::<TestDb>::open(dir.path()).unwrap();
            for i in 1..=3 {
                write(&s, LogRec::Entry(Box::new(entry(i))));
            }
        }
        let path = dir.path().join(LOG_FILE);
        let mut data = std::fs::read(&path).unwrap();
        data[LOG_HEADER_LEN + 12] ^= 0xff; // inside the first record's payload
        std::fs::write(&path, &data).unwrap();
        let e = LogStore::<TestDb>::open(dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("corrupt record at offset {LOG_HEADER_LEN}")),
            "{e}"
        );
    }

    #[test]
    fn acknowledged_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(3, 1);
        let committed = Some(entry(2).log_id);
        {
            let s = LogStore::<TestDb>::open(dir.path()).unwrap();
            write(&s, LogRec::Vote(vote));
            for i in 1..=3 {
                write(&s, LogRec::Entry(Box::new(entry(i))));
            }
            write(&s, LogRec::Committed(committed));
        }
        let s = LogStore::<TestDb>::open(dir.path()).unwrap();
        let g = s.mem.lock().unwrap();
        assert_eq!(g.vote, Some(vote));
        assert_eq!(g.committed, committed);
        assert_eq!(g.entries.len(), 3);
    }

    #[test]
    fn legacy_headerless_log_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<LogRec<TestDb>> =
            (1..=3).map(|i| LogRec::Entry(Box::new(entry(i)))).collect();
        let path = dir.path().join(LOG_FILE);
        std::fs::write(&path, layout::encode_records(&recs).unwrap()).unwrap();
        {
            let s = LogStore::<TestDb>::open(dir.path()).unwrap();
            assert_eq!(s.mem.lock().unwrap().entries.len(), 3);
        }
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(&layout::log_header()));
        let s = LogStore::<TestDb>::open(dir.path()).unwrap();
        assert_eq!(s.mem.lock().unwrap().entries.len(), 3);
    }

    #[test]
    fn a_torn_header_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), b"RDB").unwrap();
        let s = LogStore::<TestDb>::open(dir.path()).unwrap();
        write(&s, LogRec::Entry(Box::new(entry(1))));
        drop(s);
        let s = LogStore::<TestDb>::open(dir.path()).unwrap();
        assert_eq!(s.mem.lock().unwrap().entries.len(), 1);
    }

    #[test]
    fn one_writer_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::<TestDb>::open(dir.path()).unwrap();
        let t = Instant::now();
        let e = LogStore::<TestDb>::open(dir.path()).err().unwrap();
        assert!(t.elapsed() >= Duration::from_secs(4));
        assert!(e.to_string().contains("another replica"), "{e}");
        drop(s);
        LogStore::<TestDb>::open(dir.path()).unwrap();
    }
}
