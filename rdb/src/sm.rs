//! The state machine wrapper: the database `D` in memory, made durable through
//! snapshots.
//!
//! A snapshot file ([`SNAP_FILE`], see [`crate::layout`]) holds the whole `D` and
//! the log id and membership it covers; it is replaced atomically, and only then
//! offered to raft (which may purge the log it covers). On start the snapshot is
//! loaded and openraft applies the committed log after it again, so `D` after a
//! restart is what it was when the replica stopped. A snapshot received from the
//! leader is checked (checksum, decode) and made durable before it replaces `D`.

// openraft's StorageError is large, and its traits fix the return types.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::layout::{self, SNAP_FILE};
use crate::types::RdbTypes;
use crate::Db;

type SErr = StorageError<u64>;

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct StoredSnapshot<D: Db> {
    meta: SnapshotMeta<u64, BasicNode>,
    db: D,
}

struct SmInner<D: Db> {
    db: D,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snap_seq: u64,
}

/// The state machine. Clones share one state; readers use [`StateMachine::read`].
pub(crate) struct StateMachine<D: Db> {
    dir: PathBuf,
    inner: Arc<RwLock<SmInner<D>>>,
}

impl<D: Db> Clone for StateMachine<D> {
    fn clone(&self) -> Self {
        StateMachine {
            dir: self.dir.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<D: Db> StateMachine<D> {
    /// Loads the last snapshot from `dir`, if any. Blocks.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        let mut inner = SmInner {
            db: D::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot: None,
            snap_seq: 0,
        };
        let p = dir.join(SNAP_FILE);
        match std::fs::read(&p) {
            Ok(data) => {
                let s: StoredSnapshot<D> = layout::decode_snapshot(&data).map_err(|e| {
                    std::io::Error::other(format!(
                        "{}: {e}; restore it from another replica or a backup",
                        p.display()
                    ))
                })?;
                inner.db = s.db;
                inner.last_applied = s.meta.last_log_id;
                inner.last_membership = s.meta.last_membership.clone();
                inner.snapshot = Some((s.meta, data));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            inner: Arc::new(RwLock::new(inner)),
        })
    }

    /// Runs `f` on the current state.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&D) -> T) -> T {
        match self.inner.read() {
            Ok(g) => f(&g.db),
            Err(p) => f(&p.into_inner().db),
        }
    }

    fn write_guard(&self) -> Result<std::sync::RwLockWriteGuard<'_, SmInner<D>>, SErr> {
        self.inner.write().map_err(|_| {
            StorageIOError::write_state_machine(&std::io::Error::other(
                "state machine lock poisoned",
            ))
            .into()
        })
    }

    /// Encodes and durably writes a snapshot; returns its bytes.
    async fn persist(&self, meta: SnapshotMeta<u64, BasicNode>, db: D) -> Result<Vec<u8>, SErr> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let stored = StoredSnapshot { meta, db };
            let data = layout::encode_snapshot(&stored).map_err(std::io::Error::other)?;
            proto::durable::write_atomic(&dir, SNAP_FILE, &data)?;
            Ok::<_, std::io::Error>(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl<D: Db> RaftSnapshotBuilder<RdbTypes<D>> for StateMachine<D> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<RdbTypes<D>>, SErr> {
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

impl<D: Db> RaftStateMachine<RdbTypes<D>> for StateMachine<D> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), SErr> {
        let g = self.write_guard()?;
        Ok((g.last_applied, g.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<D::Resp>, SErr>
    where
        I: IntoIterator<Item = Entry<RdbTypes<D>>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut g = self.write_guard()?;
        let mut out = Vec::new();
        for e in entries {
            g.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(D::Resp::default()),
                EntryPayload::Normal(cmd) => out.push(g.db.apply(cmd)),
                EntryPayload::Membership(m) => {
                    g.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(D::Resp::default());
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
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let stored: StoredSnapshot<D> = layout::decode_snapshot(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e))
        })?;
        let saved = self.persist(meta.clone(), stored.db.clone()).await?;
        let mut g = self.write_guard()?;
        g.db = stored.db;
        g.last_applied = meta.last_log_id;
        g.last_membership = meta.last_membership.clone();
        g.snapshot = Some((meta.clone(), saved));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RdbTypes<D>>>, SErr> {
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
    use crate::testdb::TestDb;
    use openraft::{CommittedLeaderId, Membership};
    use std::collections::{BTreeMap, BTreeSet};

    fn entry(i: u64, payload: EntryPayload<RdbTypes<TestDb>>) -> Entry<RdbTypes<TestDb>> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
            payload,
        }
    }

    #[tokio::test]
    async fn snapshot_round_trips_through_disk_and_install() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::<TestDb>::open(dir.path()).unwrap();
        let nodes = BTreeMap::from([(0u64, BasicNode::new("a"))]);
        let m = Membership::new(vec![BTreeSet::from([0u64])], nodes);
        let r = sm
            .apply(vec![
                entry(1, EntryPayload::Membership(m)),
                entry(2, EntryPayload::Normal("x".into())),
                entry(3, EntryPayload::Blank),
                entry(4, EntryPayload::Normal("y".into())),
            ])
            .await
            .unwrap();
        assert_eq!(r, vec![0, 1, 0, 2]);
        let snap = sm.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(4));

        // Reopened from disk: the same state, membership and applied id.
        let mut again = StateMachine::<TestDb>::open(dir.path()).unwrap();
        assert_eq!(again.read(|d| d.cmds.clone()), vec!["x", "y"]);
        let (applied, mem) = again.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(4));
        assert_eq!(mem.log_id().map(|l| l.index), Some(1));

        // Installed on another replica from the bytes the leader sends.
        let dir2 = tempfile::tempdir().unwrap();
        let mut other = StateMachine::<TestDb>::open(dir2.path()).unwrap();
        let bytes = snap.snapshot.into_inner();
        other
            .install_snapshot(&snap.meta, Box::new(Cursor::new(bytes.clone())))
            .await
            .unwrap();
        assert_eq!(other.read(|d| d.cmds.len()), 2);
        let reopened = StateMachine::<TestDb>::open(dir2.path()).unwrap();
        assert_eq!(reopened.read(|d| d.cmds.len()), 2);

        // A damaged transfer is refused and changes nothing.
        let mut bad = bytes;
        let n = bad.len() - 3;
        bad[n] ^= 0x01;
        let dir3 = tempfile::tempdir().unwrap();
        let mut third = StateMachine::<TestDb>::open(dir3.path()).unwrap();
        assert!(third
            .install_snapshot(&snap.meta, Box::new(Cursor::new(bad)))
            .await
            .is_err());
        assert_eq!(third.read(|d| d.cmds.len()), 0);
        assert!(!dir3.path().join(SNAP_FILE).exists());
    }

    #[test]
    fn corrupt_snapshot_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAP_FILE), b"RDBSNP\x01\x00\0\0\0\0{}").unwrap();
        let e = StateMachine::<TestDb>::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
