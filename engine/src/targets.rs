//! Targets: one OS thread each, owning its share of every pool on this engine.
//!
//! A target's files are touched only by its own thread. Control operations run
//! on a blocking thread (never on the tokio runtime): they send an operation on
//! each target's bounded channel first, then collect the replies, so the targets
//! work in parallel.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Work a target does on its own files.
pub enum TgtOp {
    /// Creates the target's VOS file for a pool, preallocated to `scm_bytes`.
    CreateVos { path: PathBuf, scm_bytes: u64 },
    /// Removes the target's VOS file.
    DestroyVos { path: PathBuf },
}

type TgtReq = (TgtOp, SyncSender<Result<()>>);

pub struct Targets {
    /// The request channel of each target, indexed by target number.
    list: Vec<SyncSender<TgtReq>>,
    threads: Vec<JoinHandle<()>>,
}

impl Targets {
    /// Starts `n` target threads.
    pub fn start(n: u32) -> std::io::Result<Self> {
        let mut list = Vec::new();
        let mut threads = Vec::new();
        for tgt in 0..n {
            let (tx, rx) = mpsc::sync_channel(64);
            let h = std::thread::Builder::new()
                .name(format!("tgt_{tgt}"))
                .spawn(move || target_main(tgt, rx))?;
            list.push(tx);
            threads.push(h);
        }
        Ok(Targets { list, threads })
    }

    pub fn len(&self) -> u32 {
        self.list.len() as u32
    }

    /// Sends each operation to its target, then waits for every reply, in order.
    /// Blocks: call it from a blocking thread.
    pub fn run_all(&self, ops: Vec<(u32, TgtOp)>) -> Vec<Result<()>> {
        let gone = |tgt: u32| {
            Error::io(
                format!("target {tgt}"),
                std::io::Error::other("target thread has stopped"),
            )
        };
        let mut waits: Vec<(u32, Option<Receiver<Result<()>>>)> = Vec::new();
        for (tgt, op) in ops {
            let (reply, rx) = mpsc::sync_channel(1);
            let sent = self
                .list
                .get(tgt as usize)
                .is_some_and(|t| t.send((op, reply)).is_ok());
            waits.push((tgt, sent.then_some(rx)));
        }
        waits
            .into_iter()
            .map(|(tgt, rx)| match rx {
                Some(rx) => rx.recv().unwrap_or_else(|_| Err(gone(tgt))),
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

fn target_main(tgt: u32, rx: Receiver<TgtReq>) {
    let span = tracing::info_span!("tgt", tgt);
    let _g = span.enter();
    while let Ok((op, reply)) = rx.recv() {
        let r = match op {
            TgtOp::CreateVos { path, scm_bytes } => create_vos(&path, scm_bytes),
            TgtOp::DestroyVos { path } => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
            },
        };
        let _ = reply.send(r);
    }
}

/// Creates the file and reserves its blocks, so the space is really set aside.
fn create_vos(path: &std::path::Path, size: u64) -> Result<()> {
    let what = || format!("creating VOS file {} of {size} bytes", path.display());
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(what(), e))?;
    if size > 0 {
        nix::fcntl::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, size as i64)
            .map_err(|e| Error::io(what(), e.into()))?;
    }
    f.sync_all().map_err(|e| Error::io(what(), e))
}
