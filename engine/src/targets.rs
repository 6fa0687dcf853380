//! Targets: one OS thread each, owning the VOS of every pool shard it holds.
//!
//! Invariants: a target's state (its VOS instances) is touched only under
//! its lock, and no caller hears of a change before it is durable (as
//! [`Vos::flush`] defines it). Work arrives as jobs on a bounded channel (a
//! full channel makes senders wait: back-pressure, not an unbounded queue).
//! The thread takes the lock, runs every job it finds waiting, makes the
//! batch durable with one flush per VOS it changed (group commit), releases
//! the lock and only then answers the batch; a failed flush fails every
//! change of the batch.
//!
//! The hand-off to the thread may be skipped while the thread is idle (the
//! lock is free; callers only `try_lock`, never wait): [`Targets::read`]
//! answers from the in-memory image (and bulk bytes the page cache holds)
//! on the caller's (network) thread, and sees only flushed changes since the
//! thread holds the lock through each flush; [`Targets::write`] applies a
//! change that writes to memory only and flushes it there, when that flush
//! is a copy in memory. Anything that would wait on a device goes through
//! the channel.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use proto::{DaosError, Der};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::vos::{DtxId, Reach, Vos, VosConfig};

/// What a job leaves to do once the batch is durable: answer its caller,
/// with the batch's flush error if there was one.
type Done = Box<dyn FnOnce(Option<&DaosError>) + Send>;
type Job = Box<dyn FnOnce(&mut TgtState) -> Done + Send>;

/// How many jobs one batch takes before flushing.
const BATCH: usize = 256;
/// Jobs waiting per target before senders wait.
const QUEUE: usize = 1024;

/// What a target thread owns.
pub struct TgtState {
    pub tgt: u32,
    pools: BTreeMap<String, Vos>,
    dirty: BTreeSet<String>,
    /// Transactions this target (as coordinator) was asked about before it
    /// prepared them: it must never commit them (see `dtx`).
    pub refused: HashSet<DtxId>,
}

impl TgtState {
    fn missing(&self, pool: &str) -> Error {
        DaosError::new(
            Der::NONEXIST,
            format!("pool {pool} has no shard on target {}", self.tgt),
        )
        .into()
    }

    /// The pool's VOS, for reading.
    pub fn vos(&self, pool: &str) -> Result<&Vos> {
        self.pools.get(pool).ok_or_else(|| self.missing(pool))
    }

    /// The pool's VOS, for changing: it is flushed before the batch is answered.
    pub fn vos_mut(&mut self, pool: &str) -> Result<&mut Vos> {
        if !self.pools.contains_key(pool) {
            return Err(self.missing(pool));
        }
        self.dirty.insert(pool.to_string());
        let tgt = self.tgt;
        self.pools.get_mut(pool).ok_or_else(|| {
            DaosError::new(
                Der::NONEXIST,
                format!("pool {pool} has no shard on target {tgt}"),
            )
            .into()
        })
    }

    /// Runs a change on the pool's VOS. If it fails for lack of space, first
    /// reclaims every version older than `upto` that no reader can see,
    /// makes that durable (freed space is reusable only then), and tries once
    /// more: overwrites must not run a pool out of space while aggregation
    /// waits for its turn.
    pub fn change<T>(
        &mut self,
        pool: &str,
        upto: u64,
        mut f: impl FnMut(&mut Vos) -> Result<T>,
    ) -> Result<T> {
        let tgt = self.tgt;
        let v = self.vos_mut(pool)?;
        match f(v) {
            Err(e) if e.to_daos().der == Der::NOSPACE => {
                let s = v.aggregate(upto)?;
                if s.scm_freed + s.bulk_freed == 0 {
                    return Err(e);
                }
                v.flush()?;
                tracing::debug!(
                    pool,
                    tgt,
                    scm_freed = s.scm_freed,
                    bulk_freed = s.bulk_freed,
                    "reclaimed space for a write"
                );
                f(v)
            }
            r => r,
        }
    }

    /// Opens (creating if new) the pool's VOS on this target.
    pub fn open_vos(&mut self, pool: &str, cfg: VosConfig) -> Result<()> {
        if self.pools.contains_key(pool) {
            return Ok(());
        }
        let v = Vos::open(cfg)?;
        self.pools.insert(pool.to_string(), v);
        Ok(())
    }

    /// Closes the pool's VOS (before its files are removed).
    pub fn close_vos(&mut self, pool: &str) {
        self.dirty.remove(pool);
        self.pools.remove(pool);
    }

    /// Whether flushing every VOS of this target would be a copy in memory.
    fn flush_is_cheap(&self) -> bool {
        self.pools.values().all(Vos::flush_is_cheap)
    }

    /// Every pool's VOS, for changing: all are flushed before the batch is answered.
    pub fn pools(&mut self) -> impl Iterator<Item = (&String, &mut Vos)> {
        self.dirty.extend(self.pools.keys().cloned());
        self.pools.iter_mut()
    }

    /// Flushes every VOS changed since the last flush; the first error.
    fn flush(&mut self) -> Option<DaosError> {
        let mut first = None;
        for p in std::mem::take(&mut self.dirty) {
            if let Some(v) = self.pools.get_mut(&p) {
                if let Err(e) = v.flush() {
                    tracing::error!(pool = %p, tgt = self.tgt, "flush failed: {e}");
                    first.get_or_insert(e.to_daos());
                }
            }
        }
        first
    }
}

/// One target as its callers see it.
struct Tgt {
    jobs: mpsc::Sender<Job>,
    state: Arc<Mutex<TgtState>>,
}

pub struct Targets {
    /// Indexed by target number.
    list: Vec<Tgt>,
    threads: Vec<JoinHandle<()>>,
}

fn gone(tgt: u32) -> Error {
    DaosError::new(Der::SHUTDOWN, format!("target {tgt} has stopped")).into()
}

/// A change's answer once its batch was flushed: a failed flush fails it.
fn flushed<T>(r: Result<T>, flush_err: Option<&DaosError>) -> Result<T> {
    match (r, flush_err) {
        (Ok(_), Some(e)) => Err(Error::Daos(e.clone())),
        (r, _) => r,
    }
}

/// Wraps `f` as a job whose answer goes to `tx` once the batch is durable.
fn job<T: Send + 'static>(
    f: impl FnOnce(&mut TgtState) -> Result<T> + Send + 'static,
    tx: oneshot::Sender<Result<T>>,
) -> Job {
    Box::new(move |st: &mut TgtState| {
        let r = f(st);
        Box::new(move |flush_err: Option<&DaosError>| {
            let _ = tx.send(flushed(r, flush_err));
        }) as Done
    })
}

impl Targets {
    /// Starts `n` target threads.
    pub fn start(n: u32) -> std::io::Result<Self> {
        let mut list = Vec::new();
        let mut threads = Vec::new();
        for tgt in 0..n {
            let (jobs, rx) = mpsc::channel(QUEUE);
            let state = Arc::new(Mutex::new(TgtState {
                tgt,
                pools: BTreeMap::new(),
                dirty: BTreeSet::new(),
                refused: HashSet::new(),
            }));
            let st = state.clone();
            let h = std::thread::Builder::new()
                .name(format!("tgt_{tgt}"))
                .spawn(move || target_main(tgt, rx, st))?;
            list.push(Tgt { jobs, state });
            threads.push(h);
        }
        Ok(Targets { list, threads })
    }

    pub fn len(&self) -> u32 {
        self.list.len() as u32
    }

    fn get(&self, tgt: u32) -> Result<&Tgt> {
        self.list.get(tgt as usize).ok_or_else(|| {
            DaosError::new(
                Der::INVAL,
                format!(
                    "target {tgt} does not exist (this engine has {})",
                    self.list.len()
                ),
            )
            .into()
        })
    }

    /// Runs `f` on target `tgt`'s thread; the answer comes once any change it
    /// made is durable.
    pub async fn run<T: Send + 'static>(
        &self,
        tgt: u32,
        f: impl FnOnce(&mut TgtState) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.get(tgt)?
            .jobs
            .send(job(f, tx))
            .await
            .map_err(|_| gone(tgt))?;
        rx.await.map_err(|_| gone(tgt))?
    }

    /// Runs the read `f` on target `tgt`: here and now from memory if the
    /// target's thread is idle, else (or if `f` needs the bulk device) on
    /// that thread. `f` must not change anything.
    pub async fn read<T: Send + 'static>(
        &self,
        tgt: u32,
        f: impl Fn(&TgtState, Reach) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let t = self.get(tgt)?;
        if let Some(r) = read_here(&t.state, &f) {
            return r;
        }
        self.run(tgt, move |st| f(st, Reach::Device)).await
    }

    /// Runs the change `f` to `pool` on target `tgt` and makes it durable:
    /// here and now if the target's thread is idle, the change writes to
    /// memory only (its values, `value_bytes` in all, stay in SCM or are a
    /// small write to the page cache: [`Vos::writes_to_memory`]) and the
    /// flush is a copy in memory ([`Vos::flush_is_cheap`]); else on that
    /// thread, in its next batch.
    pub async fn write<T: Send + 'static>(
        &self,
        tgt: u32,
        pool: &str,
        value_bytes: u64,
        f: impl FnOnce(&mut TgtState) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let t = self.get(tgt)?;
        let f = match write_here(&t.state, pool, value_bytes, f) {
            Ok(r) => return r,
            Err(f) => f,
        };
        self.run(tgt, f).await
    }

    /// Runs `f(tgt)` on every target at once; the answers in target order.
    /// Blocks: call it from a blocking thread.
    pub fn run_all_blocking<T: Send + 'static>(
        &self,
        f: impl Fn(u32) -> Box<dyn FnOnce(&mut TgtState) -> Result<T> + Send>,
    ) -> Vec<Result<T>> {
        let mut waits = Vec::new();
        for tgt in 0..self.len() {
            let (tx, rx) = oneshot::channel();
            let sent = self
                .get(tgt)
                .map(|t| t.jobs.blocking_send(job(f(tgt), tx)).is_ok())
                .unwrap_or(false);
            waits.push((tgt, sent.then_some(rx)));
        }
        waits
            .into_iter()
            .map(|(tgt, rx)| match rx {
                Some(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(gone(tgt))),
                None => Err(gone(tgt)),
            })
            .collect()
    }

    /// Closes the channels and joins the threads.
    pub fn stop(self) {
        drop(self.list);
        for h in self.threads {
            let _ = h.join();
        }
    }
}

/// `f` from memory under the target's state if nobody holds it; `None` when
/// the read must go to the target's thread.
fn read_here<T>(
    state: &Mutex<TgtState>,
    f: &impl Fn(&TgtState, Reach) -> Result<T>,
) -> Option<Result<T>> {
    let st = state.try_lock().ok()?;
    match f(&st, Reach::Memory) {
        Err(Error::NeedsDevice) => None,
        r => Some(r),
    }
}

/// `f` and its flush under the target's state, if nobody holds it and the
/// flush costs no device wait; `f` back when it must go to the thread.
fn write_here<T, F: FnOnce(&mut TgtState) -> Result<T>>(
    state: &Mutex<TgtState>,
    pool: &str,
    value_bytes: u64,
    f: F,
) -> std::result::Result<Result<T>, F> {
    let Ok(mut st) = state.try_lock() else {
        return Err(f);
    };
    let in_memory = st.vos(pool).is_ok_and(|v| v.writes_to_memory(value_bytes));
    if !in_memory || !st.flush_is_cheap() {
        return Err(f);
    }
    let r = f(&mut st);
    let err = st.flush();
    Ok(flushed(r, err.as_ref()))
}

fn target_main(tgt: u32, mut rx: mpsc::Receiver<Job>, state: Arc<Mutex<TgtState>>) {
    let span = tracing::info_span!("tgt", tgt);
    let _g = span.enter();
    let mut done: Vec<Done> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        // A job that panics ends this thread, so a poisoned lock is never
        // met here; readers treat one as a busy target.
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        done.push(first(&mut st));
        while done.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => done.push(j(&mut st)),
                Err(_) => break,
            }
        }
        let err = st.flush();
        drop(st);
        for d in done.drain(..) {
            d(err.as_ref());
        }
    }
    // Closing: make sure nothing changed is left unflushed.
    state.lock().unwrap_or_else(PoisonError::into_inner).flush();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::vos::{Cond, FetchOut, FetchReq, Iod, Oid};

    fn get(targets: &Targets) -> impl std::future::Future<Output = Result<Vec<FetchOut>>> + '_ {
        targets.read(0, |ts, reach| {
            let req = [FetchReq::Single {
                akey: b"a".to_vec(),
            }];
            ts.vos("p")?
                .fetch(Oid::new(1, 0, 1), u64::MAX, b"d", &req, Cond::NONE, reach)
        })
    }

    /// A read never sees a change before the batch that made it is flushed,
    /// and is answered at once while the target is idle.
    #[tokio::test]
    async fn reads_see_only_flushed_changes() {
        let dir = tempfile::TempDir::new().unwrap();
        let targets = Targets::start(1).unwrap();
        let cfg = crate::vos::tests::cfg(&dir, 1 << 20, None);
        targets
            .run(0, move |ts| ts.open_vos("p", cfg))
            .await
            .unwrap();
        assert_eq!(get(&targets).await.unwrap(), vec![FetchOut::Single(None)]);

        // A batch that writes, then holds the target until released.
        let (release, wait) = std_mpsc::channel::<()>();
        let (started, is_started) = oneshot::channel();
        let write = targets.run(0, move |ts| {
            ts.change("p", 1, |v| {
                v.update(
                    Oid::new(1, 0, 1),
                    1,
                    b"d",
                    &[Iod::single("a", "x")],
                    Cond::NONE,
                )
            })?;
            let _ = started.send(());
            let _ = wait.recv();
            Ok(())
        });
        let write = async {
            write.await.unwrap();
        };
        let released = AtomicBool::new(false);
        let read = async {
            is_started.await.unwrap();
            let r = get(&targets).await.unwrap();
            assert!(released.load(Ordering::SeqCst), "read answered mid-batch");
            assert_eq!(r, vec![FetchOut::Single(Some(Bytes::from_static(b"x")))]);
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            released.store(true, Ordering::SeqCst);
            release.send(()).unwrap();
        };
        tokio::join!(write, read, release);
        targets.stop();
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    /// Where a change runs: in place only to an idle target whose log is on
    /// a tmpfs, for a change whose values stay in SCM (under the pool's
    /// `data_thresh`) or are a small bulk write; it is durable when answered.
    #[tokio::test]
    async fn small_changes_run_in_place_only_when_the_flush_is_a_copy() {
        for (base, in_memory) in [("/dev/shm", true), ("/var/tmp", false)] {
            let Ok(dir) = tempfile::TempDir::new_in(base) else {
                eprintln!("skipping {base}: cannot make a directory there");
                continue;
            };
            if in_memory && !crate::vos::in_memory(dir.path()) {
                eprintln!("skipping {base}: not a tmpfs here");
                continue;
            }
            let targets = Targets::start(1).unwrap();
            for thresh in [4096u64, 8192] {
                let mut cfg = crate::vos::tests::cfg(&dir, 1 << 20, Some(64 * 4096));
                cfg.dir = dir.path().join(format!("vos{thresh}"));
                cfg.data_thresh = thresh;
                let pool = format!("p{thresh}");
                let p = pool.clone();
                targets
                    .run(0, move |ts| ts.open_vos(&p, cfg))
                    .await
                    .unwrap();
                let big = crate::vos::SMALL_BULK as usize + 4096;
                for size in [10usize, 4096, big] {
                    let p = pool.clone();
                    let ran_on = targets
                        .write(0, &pool, size as u64, move |ts| {
                            ts.change(&p, 1, |v| {
                                v.update(
                                    Oid::new(1, 0, size as u64),
                                    1,
                                    b"d",
                                    &[Iod::single("a", vec![b'x'; size])],
                                    Cond::NONE,
                                )
                            })?;
                            Ok(thread_name())
                        })
                        .await
                        .unwrap();
                    let here = ran_on == thread_name();
                    let what = format!("{base}, data_thresh {thresh}, {size} bytes");
                    assert_eq!(here, in_memory && size < big, "{what}");
                    assert_eq!(ran_on == "tgt_0", !here, "{what}");
                    let p = pool.clone();
                    let pending = targets
                        .run(0, move |ts| Ok(ts.vos(&p)?.stats().pending_bytes))
                        .await
                        .unwrap();
                    assert_eq!(pending, 0, "{what}: answered before its flush");
                    let p = pool.clone();
                    let bulk_used = targets
                        .run(0, move |ts| Ok(ts.vos(&p)?.space().bulk_used))
                        .await
                        .unwrap();
                    assert_eq!(
                        bulk_used > 0,
                        size as u64 >= thresh,
                        "{what}: placed by data_thresh"
                    );
                }
            }
            targets.stop();
        }
    }
}
