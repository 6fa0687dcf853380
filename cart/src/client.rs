//! The calling side: one [`Client`] per peer address, many calls in flight on
//! its one connection, and a [`Clients`] cache for callers that talk to many
//! ranks.
//!
//! Invariants:
//! - At most `max_inflight` calls of a client hold a slot at once; the rest
//!   wait (bounded memory, not an unbounded queue).
//! - Every call that registered on a connection gets exactly one answer: its
//!   reply, or the error that ended the connection, or its own timeout. A
//!   connection that ends marks itself broken under the same lock calls
//!   register under, so no call can register on it afterwards and wait
//!   forever.
//! - A broken connection is replaced lazily, by the next call; calls are
//!   never retried here, because not every operation is idempotent.
//! - Frames reach the socket whole and in the order their calls queued
//!   them: a call writes its frame itself only when nothing is queued before
//!   it, under the queue's lock; otherwise the writer task writes the queue.
//! - A call's deadline is kept by the connection's reader task, which sweeps
//!   the waiting calls every [`SWEEP`] while any wait, not by a timer per
//!   call: arming a timer from outside the runtime wakes its worker, and a
//!   call made from a thread of its own (dfuse's FUSE thread) should cost no
//!   wake-up until its reply arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::{timeout, timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::addr::{Addr, Scheme};
use crate::error::CartError;
use crate::frame::{Frame, FrameHeader, Kind, HEADER_LEN};
use crate::transport::{self, would_block, FrameRead, FrameWrite, ReadError, Tcp, Transport, Wire};
use crate::{Reply, Request, DEFAULT_MAX_FRAME, MAX_INFLIGHT_CAP};

/// Limits of a client.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Calls in flight at once; further calls wait for a slot.
    pub max_inflight: usize,
    /// How long a connection attempt may take (also bounded by the call's
    /// own deadline).
    pub connect_timeout: Duration,
    /// The largest frame sent or accepted, fixed header included.
    pub max_frame: u32,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            max_inflight: 256,
            connect_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A client of one peer address. Cheap to clone: clones share the
/// connection, the slots and the request ids.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: Addr,
    uri: String,
    opts: ClientOpts,
    slots: Semaphore,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    closed: CancellationToken,
}

/// How often a connection's reader task looks for calls past their deadline
/// (so a timeout fires up to this late).
const SWEEP: Duration = Duration::from_millis(50);
/// Sweeps finding no call before the reader task stops sweeping; the next
/// call then wakes it.
const IDLE_SWEEPS: u32 = 40;
/// Frames one write takes from the queue at most.
const WRITE_BATCH: usize = 64;

/// One connection: where its frames go and the calls waiting on its reader
/// task. Dropping it stops the reader and writer tasks.
struct Conn {
    out: Arc<dyn SendFrame>,
    calls: Arc<Calls>,
    stop: CancellationToken,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Conn {
    fn is_live(&self) -> bool {
        !self.stop.is_cancelled() && !self.calls.is_broken()
    }
}

/// Why a connection ended; every call still waiting gets an error made
/// from it.
#[derive(Clone)]
enum End {
    /// The peer closed, a read or write failed, or the client dropped it.
    Unreach(String),
    /// The peer sent something that is not a valid reply.
    Proto(String),
    /// The client was closed.
    Closed,
}

type Answer = Result<Reply, CartError>;

/// Takes a lock; nothing panics while these locks are held, so a poisoned
/// one is recovered.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Calls {
    uri: String,
    peer: String,
    map: Mutex<CallMap>,
    /// Wakes the reader task to sweep again after it stopped.
    sweep_again: Notify,
}

/// A call waiting for its reply.
struct Waiting {
    tx: oneshot::Sender<Answer>,
    deadline: Instant,
    opcode: u32,
    timeout: Duration,
}

struct CallMap {
    waiting: HashMap<u64, Waiting>,
    broken: Option<End>,
    /// Whether the reader task sweeps for deadlines (or has been told to).
    sweeping: bool,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, CallMap> {
        lock(&self.map)
    }

    fn error(&self, end: &End) -> CartError {
        match end {
            End::Unreach(reason) => CartError::Unreach {
                addr: self.uri.clone(),
                reason: reason.clone(),
            },
            End::Proto(reason) => CartError::Proto {
                peer: self.peer.clone(),
                reason: reason.clone(),
            },
            End::Closed => CartError::Canceled {
                addr: self.uri.clone(),
            },
        }
    }

    fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn register(&self, id: u64, w: Waiting) -> Result<(), CartError> {
        let mut m = self.lock();
        if let Some(end) = &m.broken {
            return Err(self.error(end));
        }
        m.waiting.insert(id, w);
        let wake = !m.sweeping;
        m.sweeping = true;
        drop(m);
        if wake {
            self.sweep_again.notify_one();
        }
        Ok(())
    }

    /// Fails the calls past their deadline; whether any call still waits.
    fn sweep(&self, now: Instant) -> bool {
        let (expired, left): (Vec<Waiting>, bool) = {
            let mut m = self.lock();
            let ids: Vec<u64> = m
                .waiting
                .iter()
                .filter(|(_, w)| w.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired = ids.iter().filter_map(|id| m.waiting.remove(id)).collect();
            (expired, !m.waiting.is_empty())
        };
        for w in expired {
            drop(w.tx.send(Err(CartError::Timedout {
                addr: self.uri.clone(),
                opcode: w.opcode,
                timeout: w.timeout,
            })));
        }
        left
    }

    /// Stops sweeping unless a call registered meanwhile.
    fn stop_sweeping(&self) -> bool {
        let mut m = self.lock();
        if m.waiting.is_empty() {
            m.sweeping = false;
        }
        !m.sweeping
    }

    fn unregister(&self, id: u64) {
        self.lock().waiting.remove(&id);
    }

    fn answer(&self, id: u64, reply: Reply) {
        let tx = self.lock().waiting.remove(&id);
        match tx {
            // The caller may have given up in between; nothing to tell.
            Some(w) => drop(w.tx.send(Ok(reply))),
            None => debug!(peer = %self.peer, rpc_id = id, "reply to a call that gave up"),
        }
    }

    /// Ends the connection for its calls: the first reason wins.
    fn break_with(&self, end: End) {
        let waiting = {
            let mut m = self.lock();
            if m.broken.is_some() {
                return;
            }
            m.broken = Some(end.clone());
            std::mem::take(&mut m.waiting)
        };
        match &end {
            End::Unreach(reason) if !waiting.is_empty() => {
                warn!(peer = %self.peer, calls = waiting.len(), %reason, "connection lost with calls in flight")
            }
            End::Unreach(reason) => info!(peer = %self.peer, %reason, "connection closed"),
            End::Proto(reason) => {
                warn!(peer = %self.peer, %reason, "dropping connection: protocol error")
            }
            End::Closed => debug!(peer = %self.peer, "connection closed by its client"),
        }
        for (_, w) in waiting {
            drop(w.tx.send(Err(self.error(&end))));
        }
    }
}

/// Where a connection's frames go (a trait so [`Conn`] need not name the
/// transport).
trait SendFrame: Send + Sync {
    /// Sends `f` or queues it for the writer task; the reason the
    /// connection failed otherwise.
    fn send(&self, f: Wire) -> Result<(), String>;
}

/// A connection's sending side: the socket and the frames waiting for it.
struct Out<W> {
    w: W,
    q: Mutex<OutQueue>,
    /// Wakes the writer task when the queue gets its first frame.
    kick: Notify,
}

#[derive(Default)]
struct OutQueue {
    frames: VecDeque<Wire>,
    /// Bytes of the first frame already written.
    sent: usize,
    /// A write failed; nothing more is sent.
    failed: bool,
}

impl OutQueue {
    /// Drops the `n` bytes just written from the front.
    fn advance(&mut self, mut n: usize) {
        while let Some(f) = self.frames.front() {
            let left = f.len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            self.frames.pop_front();
        }
    }
}

impl<W: FrameWrite> SendFrame for Out<W> {
    fn send(&self, f: Wire) -> Result<(), String> {
        let mut q = lock(&self.q);
        if q.failed {
            return Err("connection closed before the request was sent".into());
        }
        if !q.frames.is_empty() {
            // The writer task is on it and will find this one.
            q.frames.push_back(f);
            return Ok(());
        }
        let mut parts = Vec::with_capacity(3);
        f.slices(0, &mut parts);
        match self.w.try_write(&parts) {
            Ok(n) if n == f.len() => return Ok(()),
            Ok(n) => q.sent = n,
            Err(e) if would_block(&e) => q.sent = 0,
            Err(e) => {
                q.failed = true;
                return Err(format!("write: {e}"));
            }
        }
        q.frames.push_back(f);
        drop(q);
        self.kick.notify_one();
        Ok(())
    }
}

/// Removes a call's entry when the call ends in any way, its future dropped
/// included, so abandoned calls do not pile up.
struct Registered<'a> {
    calls: &'a Calls,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.calls.unregister(self.id);
    }
}

impl Client {
    /// A client of `addr`. Nothing is dialed until the first call.
    pub fn new(addr: Addr, opts: ClientOpts) -> Client {
        let opts = ClientOpts {
            max_inflight: opts.max_inflight.clamp(1, MAX_INFLIGHT_CAP),
            ..opts
        };
        Client {
            inner: Arc::new(Inner {
                uri: addr.to_string(),
                addr,
                slots: Semaphore::new(opts.max_inflight),
                opts,
                conn: tokio::sync::Mutex::new(None),
                next_id: AtomicU64::new(1),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &Addr {
        &self.inner.addr
    }

    /// Sends `req` and waits for its reply, connecting first if there is no
    /// live connection. `req.timeout` bounds the whole call: waiting for a
    /// slot, connecting and the reply; the server is told the time left.
    ///
    /// A reply with a non-zero status is `Ok`: see [`Reply::into_result`].
    /// Errors: [`CartError::Timedout`] (the request may still run),
    /// [`CartError::Unreach`] (no connection, or it broke while the call was
    /// in flight: the request may or may not have run),
    /// [`CartError::Proto`], [`CartError::TooBig`], [`CartError::Canceled`]
    /// (after [`Client::close`]), [`CartError::NoProvider`].
    pub async fn call(&self, req: Request) -> Result<Reply, CartError> {
        let inner = &*self.inner;
        let Request {
            opcode,
            header,
            bulk,
            timeout: limit,
        } = req;
        let now = Instant::now();
        // A timeout too large to add is as good as none: wait a year.
        let deadline = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        let timed_out = || CartError::Timedout {
            addr: inner.uri.clone(),
            opcode,
            timeout: limit,
        };
        let len = (HEADER_LEN + header.len()) as u64 + bulk.len() as u64;
        if len > u64::from(inner.opts.max_frame) {
            return Err(CartError::TooBig {
                addr: inner.uri.clone(),
                len,
                max: inner.opts.max_frame,
            });
        }
        let canceled = || CartError::Canceled {
            addr: inner.uri.clone(),
        };
        if inner.closed.is_cancelled() {
            return Err(canceled());
        }
        let _slot = match timeout_at(deadline, inner.slots.acquire()).await {
            Err(_) => return Err(timed_out()),
            // The semaphore is closed only by close().
            Ok(Err(_)) => return Err(canceled()),
            Ok(Ok(slot)) => slot,
        };
        let conn = timeout_at(deadline, self.connection())
            .await
            .map_err(|_| timed_out())??;

        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.calls.register(
            id,
            Waiting {
                tx,
                deadline,
                opcode,
                timeout: limit,
            },
        )?;
        let _registered = Registered {
            calls: &conn.calls,
            id,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        // Round up so the server never sees 0 (expired) for time that is left.
        let timeout_ms = u32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let frame = Frame::new(
            FrameHeader::request(opcode, id, timeout_ms, 0, 0),
            header,
            bulk,
        )
        .map_err(|_| CartError::TooBig {
            addr: inner.uri.clone(),
            len,
            max: inner.opts.max_frame,
        })?;
        // The queue holds at most max_inflight frames: each call owns a slot.
        // Frame::new made the lengths match; Wire::new checks them anyway.
        let wire = Wire::new(frame).map_err(|e| CartError::Proto {
            peer: inner.uri.clone(),
            reason: e.to_string(),
        })?;
        if let Err(reason) = conn.out.send(wire) {
            // Every call on the connection, this one too, gets the error.
            conn.calls.break_with(End::Unreach(reason));
            conn.stop.cancel();
        }
        // The reader task answers: the reply, the connection's end, or the
        // deadline (its sweep).
        rx.await.unwrap_or_else(|_| {
            Err(CartError::Unreach {
                addr: inner.uri.clone(),
                reason: "connection dropped".into(),
            })
        })
    }

    /// Closes the client for good: calls in flight and later calls fail
    /// with [`CartError::Canceled`]. Other clones see the same.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        self.inner.slots.close();
        if let Some(conn) = self.inner.conn.lock().await.take() {
            conn.calls.break_with(End::Closed);
        }
    }

    /// The live connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, CartError> {
        let inner = &*self.inner;
        // Held across the dial so concurrent calls share one attempt.
        let mut slot = inner.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.is_live() {
                return Ok(c.clone());
            }
        }
        if inner.closed.is_cancelled() {
            return Err(CartError::Canceled {
                addr: inner.uri.clone(),
            });
        }
        let conn = match inner.addr.scheme() {
            Scheme::Tcp => self.dial(&Tcp).await?,
            Scheme::Ofi(_) => return Err(transport::no_provider(&inner.addr)),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn dial<T: Transport>(&self, t: &T) -> Result<Arc<Conn>, CartError> {
        let inner = &*self.inner;
        let unreach = |reason: String| CartError::Unreach {
            addr: inner.uri.clone(),
            reason,
        };
        let c = timeout(
            inner.opts.connect_timeout,
            t.connect(&inner.addr, inner.opts.max_frame),
        )
        .await
        .map_err(|_| {
            unreach(format!(
                "connect timed out after {:?}",
                inner.opts.connect_timeout
            ))
        })?
        .map_err(|e| unreach(format!("connect: {e}")))?;
        debug!(addr = %inner.uri, peer = %c.peer, "connected");
        let calls = Arc::new(Calls {
            uri: inner.uri.clone(),
            peer: c.peer,
            map: Mutex::new(CallMap {
                waiting: HashMap::new(),
                broken: None,
                sweeping: false,
            }),
            sweep_again: Notify::new(),
        });
        let stop = inner.closed.child_token();
        let out = Arc::new(Out {
            w: c.writer,
            q: Mutex::new(OutQueue::default()),
            kick: Notify::new(),
        });
        tokio::spawn(read_replies(
            c.reader,
            calls.clone(),
            stop.clone(),
            inner.closed.clone(),
        ));
        tokio::spawn(write_requests(out.clone(), calls.clone(), stop.clone()));
        Ok(Arc::new(Conn { out, calls, stop }))
    }
}

async fn read_replies<R: FrameRead>(
    mut reader: R,
    calls: Arc<Calls>,
    stop: CancellationToken,
    closed: CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Mirrors `CallMap::sweeping`, which only `register` sets and only this
    // task clears.
    let mut sweeping = false;
    let mut idle = 0;
    let end = loop {
        let r = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                break if closed.is_cancelled() {
                    End::Closed
                } else {
                    End::Unreach("connection dropped".into())
                };
            }
            r = reader.read_frame() => r,
            _ = tick.tick(), if sweeping => {
                if calls.sweep(Instant::now()) {
                    idle = 0;
                } else {
                    idle += 1;
                    if idle >= IDLE_SWEEPS && calls.stop_sweeping() {
                        sweeping = false;
                    }
                }
                continue;
            }
            _ = calls.sweep_again.notified(), if !sweeping => {
                sweeping = true;
                idle = 0;
                tick.reset();
                continue;
            }
        };
        match r {
            Ok(Some(f)) if f.head.kind == Kind::Reply => calls.answer(
                f.head.rpc_id,
                Reply {
                    status: f.head.status,
                    header: f.header,
                    bulk: f.bulk,
                },
            ),
            Ok(Some(f)) => {
                break End::Proto(format!(
                    "request frame (opcode {:#x}) where a reply was expected",
                    f.head.opcode
                ))
            }
            Ok(None) => break End::Unreach("connection closed by peer".into()),
            Err(ReadError::Io(e)) => break End::Unreach(format!("read: {e}")),
            Err(ReadError::Frame(e)) => break End::Proto(e.to_string()),
        }
    };
    calls.break_with(end);
    stop.cancel();
}

/// Writes what calls queued (a call writes its frame itself when the queue
/// is empty and the socket takes it whole), several frames per write.
async fn write_requests<W: FrameWrite>(
    out: Arc<Out<W>>,
    calls: Arc<Calls>,
    stop: CancellationToken,
) {
    'run: loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = out.kick.notified() => {}
        }
        loop {
            let r = {
                let mut q = lock(&out.q);
                if q.frames.is_empty() {
                    break;
                }
                let mut parts = Vec::new();
                let mut skip = q.sent;
                for f in q.frames.iter().take(WRITE_BATCH) {
                    f.slices(skip, &mut parts);
                    skip = 0;
                }
                match out.w.try_write(&parts) {
                    Ok(n) => {
                        drop(parts);
                        q.advance(n);
                        continue;
                    }
                    Err(e) if would_block(&e) => Ok(()),
                    Err(e) => {
                        q.failed = true;
                        Err(e)
                    }
                }
            };
            let r = match r {
                Ok(()) => tokio::select! {
                    biased;
                    _ = stop.cancelled() => break 'run,
                    r = out.w.writable() => r,
                },
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                lock(&out.q).failed = true;
                calls.break_with(End::Unreach(format!("write: {e}")));
                break 'run;
            }
        }
    }
    lock(&out.q).failed = true;
    // The socket's write side shuts (the peer learns no more requests
    // follow) when the last holder of `out` drops it.
    stop.cancel();
}

/// Clients of many peers, one per address, created on first use.
#[derive(Clone)]
pub struct Clients {
    opts: ClientOpts,
    map: Arc<Mutex<HashMap<String, Client>>>,
}

impl Clients {
    /// An empty cache whose clients get `opts`.
    pub fn new(opts: ClientOpts) -> Clients {
        Clients {
            opts,
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The client of `uri`, created if needed. URIs that spell the same
    /// address differently share a client.
    pub fn get(&self, uri: &str) -> Result<Client, CartError> {
        Ok(self.get_addr(&Addr::parse(uri)?))
    }

    /// The client of `addr`, created if needed.
    pub fn get_addr(&self, addr: &Addr) -> Client {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(addr.to_string())
            .or_insert_with(|| Client::new(addr.clone(), self.opts.clone()))
            .clone()
    }

    /// Forgets the client of `uri` (a rank that left the system); it closes
    /// its connection once its last clone is dropped.
    pub fn remove(&self, uri: &str) -> Option<Client> {
        let key = Addr::parse(uri).ok()?.to_string();
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
    }

    /// The number of cached clients.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no client is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
