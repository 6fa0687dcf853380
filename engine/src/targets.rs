//! Targets: one OS thread each, owning its share of every pool on this engine.
//!
//! A target's files are touched only by its own thread; the async side sends a
//! request on the target's bounded channel and awaits the reply on a oneshot, so
//! no storage work runs on the tokio runtime.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

pub enum TgtReq {
    /// Creates the target's VOS file for a pool, preallocated to `scm_bytes`.
    CreateVos {
        path: PathBuf,
        scm_bytes: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Removes the target's VOS file.
    DestroyVos {
        path: PathBuf,
        reply: oneshot::Sender<Result<()>>,
    },
}

pub struct Targets {
    /// The request channel of each target, indexed by target number.
    pub list: Vec<mpsc::Sender<TgtReq>>,
    threads: Vec<JoinHandle<()>>,
}

impl Targets {
    /// Starts `n` target threads.
    pub fn start(n: u32) -> std::io::Result<Self> {
        let mut list = Vec::new();
        let mut threads = Vec::new();
        for tgt in 0..n {
            let (tx, rx) = mpsc::channel(64);
            let h = std::thread::Builder::new()
                .name(format!("tgt_{tgt}"))
                .spawn(move || target_main(tgt, rx))?;
            list.push(tx);
            threads.push(h);
        }
        Ok(Targets { list, threads })
    }

    /// Sends a request to target `tgt` and waits for its reply.
    pub async fn call<T>(
        &self,
        tgt: u32,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> TgtReq,
    ) -> Result<T> {
        let gone = || {
            Error::io(
                format!("target {tgt}"),
                std::io::Error::other("target thread has stopped"),
            )
        };
        let t = self.list.get(tgt as usize).ok_or_else(gone)?;
        let (reply, rx) = oneshot::channel();
        t.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Closes the channels and joins the threads.
    pub fn stop(self) {
        drop(self.list);
        for h in self.threads {
            let _ = h.join();
        }
    }
}

fn target_main(tgt: u32, mut rx: mpsc::Receiver<TgtReq>) {
    let span = tracing::info_span!("tgt", tgt);
    let _g = span.enter();
    while let Some(req) = rx.blocking_recv() {
        match req {
            TgtReq::CreateVos {
                path,
                scm_bytes,
                reply,
            } => {
                let _ = reply.send(create_vos(&path, scm_bytes));
            }
            TgtReq::DestroyVos { path, reply } => {
                let r = match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
                };
                let _ = reply.send(r);
            }
        }
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
