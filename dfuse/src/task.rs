//! Running a FUSE request's operation: first on the thread that read the
//! request, then on the runtime.
//!
//! Handing every request to a runtime worker costs a thread wake-up before
//! any work starts. Instead, [`start`] polls the operation once on the
//! calling thread (the FUSE session thread): an answer from memory is sent
//! right there, and an operation that sends an engine message writes it to
//! the socket from there too (see `cart`'s client). Only when something the
//! operation waits on wakes it (typically the engine's reply, read by a
//! runtime worker) is the rest handed to the runtime, as a task spawned
//! from the waking thread, so on a worker it lands in that worker's own
//! queue with nothing else to wake.
//!
//! Invariant: the operation is polled by one thread at a time and never
//! after it finished; a wake during a poll on the calling thread is not lost
//! (the operation is polled again, here or on the runtime).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

use tokio::runtime::Handle;

type Op = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

enum State {
    /// Being polled on the calling thread; `woken` if something woke it
    /// meanwhile.
    Polling { woken: bool },
    /// Pending after its polls on the calling thread, waiting for a wake.
    Parked(Op),
    /// Handed to the runtime (or finished): this waker has no more to do.
    Gone,
}

struct Lazy {
    state: Mutex<State>,
    rt: Handle,
}

impl Wake for Lazy {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *s, State::Gone) {
            State::Polling { .. } => *s = State::Polling { woken: true },
            State::Parked(op) => {
                drop(s);
                self.rt.spawn(op);
            }
            State::Gone => {}
        }
    }
}

/// Polls of an operation on the calling thread at most: a future woken
/// during its own poll is polled again right away (`FuturesUnordered`, which
/// libdaos uses for the shards of an I/O, wakes itself once after polling
/// each of its futures), but one that keeps waking itself goes to the
/// runtime rather than hold up the session thread.
const POLLS_HERE: usize = 4;

/// Runs `op` on this thread until it waits, then on `rt`.
pub fn start(rt: &Handle, op: impl Future<Output = ()> + Send + 'static) {
    // Timers, spawns and sockets inside the operation need the runtime.
    let _in_rt = rt.enter();
    let lazy = Arc::new(Lazy {
        state: Mutex::new(State::Polling { woken: false }),
        rt: rt.clone(),
    });
    let waker = Waker::from(lazy.clone());
    let mut op: Op = Box::pin(op);
    for poll in 1..=POLLS_HERE {
        let ready = op
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        let mut s = lazy.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *s {
            _ if ready => *s = State::Gone,
            State::Polling { woken: false } => *s = State::Parked(op),
            State::Polling { woken: true } if poll < POLLS_HERE => {
                *s = State::Polling { woken: false };
                continue;
            }
            _ => {
                *s = State::Gone;
                drop(s);
                rt.spawn(op);
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Poll;
    use std::thread;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn ready_operations_finish_on_the_calling_thread() {
        let rt = runtime();
        let here = thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        start(rt.handle(), async move {
            tx.send(thread::current().id()).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), here);
    }

    #[test]
    fn waiting_operations_finish_on_the_runtime_after_their_wake() {
        let rt = runtime();
        let here = thread::current().id();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        start(rt.handle(), async move {
            let first = thread::current().id();
            wait.await.unwrap();
            tx.send((first, thread::current().id())).unwrap();
        });
        // Still parked: nothing ran it past its wait.
        assert!(rx.try_recv().is_err());
        go.send(()).unwrap();
        let (first, then) = rx.recv().unwrap();
        assert_eq!(first, here);
        assert_ne!(then, here);
    }

    #[test]
    fn a_wake_during_a_poll_is_not_lost() {
        let rt = runtime();
        let (tx, rx) = std::sync::mpsc::channel();
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        // Wakes itself from inside each poll until its tenth: polled again
        // here, then on the runtime, never lost.
        let here = thread::current().id();
        start(
            rt.handle(),
            std::future::poll_fn(move |cx| {
                if p.fetch_add(1, Ordering::SeqCst) < 9 {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    tx.send(thread::current().id()).unwrap();
                    Poll::Ready(())
                }
            }),
        );
        let last = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(polls.load(Ordering::SeqCst), 10);
        assert_ne!(last, here);
    }

    #[test]
    fn an_operation_that_yields_once_finishes_on_the_calling_thread() {
        let rt = runtime();
        let here = thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut yielded = false;
        start(
            rt.handle(),
            std::future::poll_fn(move |cx| {
                if !yielded {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                tx.send(thread::current().id()).unwrap();
                Poll::Ready(())
            }),
        );
        assert_eq!(rx.try_recv().unwrap(), here);
    }

    #[test]
    fn many_operations_waiting_on_each_other_all_finish() {
        let rt = runtime();
        let lock = Arc::new(tokio::sync::Mutex::new(0u32));
        let done = Arc::new(AtomicUsize::new(0));
        let guard = rt.block_on(lock.clone().lock_owned());
        for _ in 0..100 {
            let (lock, done) = (lock.clone(), done.clone());
            start(rt.handle(), async move {
                *lock.lock().await += 1;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(guard);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 100 {
            assert!(std::time::Instant::now() < deadline, "operations stuck");
            thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(*rt.block_on(lock.lock()), 100);
    }
}
