//! The serving side: accepts connections, runs each request as its own task
//! and writes replies in completion order.
//!
//! Invariants:
//! - Memory is bounded: at most `max_conns` connections are served (further
//!   ones wait in the kernel's backlog), and each has at most
//!   `max_inflight_per_conn` requests between being read and their reply
//!   being written. At the limit the connection's socket is not read, so a
//!   fast client is slowed by TCP flow control instead of queueing here.
//!   Frames above `max_frame` are refused before anything is allocated.
//! - Whatever a peer sends ends at worst its own connection, with a `WARN`
//!   line naming the peer and the problem; every other connection is served
//!   on. Unknown opcodes are the handler's to answer.
//! - A handler runs to completion even when its caller's deadline passes or
//!   its connection goes away (handlers may change state); only the reply is
//!   dropped then.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use proto::{DaosError, Der};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::addr::{Addr, Scheme};
use crate::error::CartError;
use crate::frame::{Frame, FrameHeader, Kind};
use crate::transport::{self, Accept, Conn, FrameRead, FrameWrite, Tcp, TcpAcceptor, Transport};
use crate::{Reply, DEFAULT_MAX_FRAME, MAX_INFLIGHT_CAP};

/// A request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub opcode: u32,
    /// The caller's encoded header.
    pub header: Bytes,
    /// The raw bulk data, a view into the receive buffer.
    pub bulk: Bytes,
    /// When the caller stops waiting: work past it is wasted, and its reply
    /// is not sent.
    pub deadline: Instant,
    /// The caller's URI, for logs.
    pub peer: String,
    /// The caller's id of this request, for logs.
    pub rpc_id: u64,
}

/// Serves requests. Each request runs as its own task, so a handler may be
/// slow without holding others up; it must answer every opcode, unknown ones
/// with an error reply (e.g. `DER_NOSYS`).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Incoming) -> impl Future<Output = Reply> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send,
{
    fn handle(&self, req: Incoming) -> impl Future<Output = Reply> + Send {
        self(req)
    }
}

/// Limits of a server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// The largest frame accepted or sent, fixed header included.
    pub max_frame: u32,
    /// Requests of one connection between being read and their reply being
    /// written.
    pub max_inflight_per_conn: usize,
    /// Connections served at once.
    pub max_conns: usize,
    /// On shutdown, how long requests in flight may still finish and have
    /// their replies sent before connections are closed.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_frame: DEFAULT_MAX_FRAME,
            max_inflight_per_conn: 64,
            max_conns: 1024,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// A bound listening endpoint, ready for [`serve`].
pub struct Listener {
    local: Addr,
    kind: ListenerKind,
}

enum ListenerKind {
    Tcp(TcpAcceptor),
}

impl Listener {
    /// The address actually bound (with the real port when bound to port 0).
    pub fn local_addr(&self) -> &Addr {
        &self.local
    }
}

/// Listens on `addr`.
pub async fn bind(addr: &Addr) -> Result<Listener, CartError> {
    let (kind, local) = match addr.scheme() {
        Scheme::Tcp => {
            let (acc, local) = Tcp.bind(addr).await.map_err(|source| CartError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            (ListenerKind::Tcp(acc), local)
        }
        Scheme::Ofi(_) => return Err(transport::no_provider(addr)),
    };
    Ok(Listener { local, kind })
}

/// Serves connections on `listener` until `shutdown` is cancelled. Then it
/// stops accepting, lets requests in flight finish for
/// `limits.shutdown_grace`, closes every connection and returns. Handlers
/// still running after that finish on their own; their replies are dropped.
pub async fn serve<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let limits = Arc::new(ServerLimits {
        max_inflight_per_conn: limits.max_inflight_per_conn.clamp(1, MAX_INFLIGHT_CAP),
        max_conns: limits.max_conns.clamp(1, MAX_INFLIGHT_CAP),
        ..limits
    });
    let Listener { local, kind } = listener;
    match kind {
        ListenerKind::Tcp(acc) => serve_on(acc, &local, handler, limits, shutdown).await,
    }
}

async fn serve_on<A: Accept, H: Handler>(
    mut acc: A,
    local: &Addr,
    handler: Arc<H>,
    limits: Arc<ServerLimits>,
    shutdown: CancellationToken,
) {
    info!(addr = %local, "CaRT server listening");
    let conns = Arc::new(Semaphore::new(limits.max_conns));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = acc.accept(limits.max_frame) => r,
        };
        match accepted {
            Ok(conn) => {
                debug!(peer = %conn.peer, "accepted");
                tracker.spawn(serve_conn(
                    conn,
                    handler.clone(),
                    limits.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: pause rather than
                // spin, and keep the connections we have.
                warn!(addr = %local, error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    // New connections are refused from here on.
    drop(acc);
    tracker.close();
    tracker.wait().await;
    info!(addr = %local, "CaRT server stopped");
}

/// A reply on its way to the writer, with the slot its request held.
type Outgoing = (Frame, OwnedSemaphorePermit);

/// Why a connection stopped reading.
enum Stop {
    /// The peer closed its side: replies still in flight go out.
    Eof,
    /// The server is shutting down: replies get the grace period.
    Shutdown,
    /// The peer misbehaved or a write failed: closed at once.
    Now,
}

async fn serve_conn<R: FrameRead, W: FrameWrite, H: Handler>(
    conn: Conn<R, W>,
    handler: Arc<H>,
    limits: Arc<ServerLimits>,
    shutdown: CancellationToken,
    _conn_slot: OwnedSemaphorePermit,
) {
    let Conn {
        mut reader,
        writer,
        peer,
    } = conn;
    let peer: Arc<str> = peer.into();
    let max = limits.max_inflight_per_conn;
    let slots = Arc::new(Semaphore::new(max));
    let close = CancellationToken::new();
    let (tx, rx) = mpsc::channel::<Outgoing>(max);
    let writer = tokio::spawn(write_replies(writer, rx, close.clone(), peer.clone()));

    let why = loop {
        // Take the slot before reading: at the limit the socket is not read.
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Stop::Shutdown,
            _ = close.cancelled() => break Stop::Now,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break Stop::Now,
            },
        };
        let r = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Stop::Shutdown,
            _ = close.cancelled() => break Stop::Now,
            r = reader.read_frame() => r,
        };
        match r {
            Ok(Some(f)) if f.head.kind == Kind::Request => {
                tokio::spawn(run_request(
                    f,
                    handler.clone(),
                    peer.clone(),
                    limits.max_frame,
                    slot,
                    tx.clone(),
                ));
            }
            Ok(Some(f)) => {
                warn!(%peer, opcode = f.head.opcode, "dropping connection: reply frame where a request was expected");
                break Stop::Now;
            }
            Ok(None) => break Stop::Eof,
            Err(e) => {
                warn!(%peer, error = %e, "dropping connection");
                break Stop::Now;
            }
        }
    };
    drop(reader);
    drop(tx);

    let grace = limits.shutdown_grace;
    match why {
        Stop::Now => close.cancel(),
        Stop::Eof | Stop::Shutdown => {
            let all_written = async {
                // Every slot is back once every reply is written or dropped.
                drop(slots.acquire_many(max as u32).await);
            };
            let grace_over = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                _ = all_written => {}
                _ = grace_over => {
                    debug!(%peer, "shutdown grace over, closing with requests in flight");
                }
                _ = close.cancelled() => {}
            }
            close.cancel();
        }
    }
    if let Err(e) = writer.await {
        error!(%peer, error = %e, "reply writer task failed");
    }
    debug!(%peer, "connection closed");
}

async fn run_request<H: Handler>(
    f: Frame,
    handler: Arc<H>,
    peer: Arc<str>,
    max_frame: u32,
    slot: OwnedSemaphorePermit,
    tx: mpsc::Sender<Outgoing>,
) {
    let opcode = f.head.opcode;
    let rpc_id = f.head.rpc_id;
    let deadline = Instant::now() + Duration::from_millis(u64::from(f.head.timeout_ms));
    let req = Incoming {
        opcode,
        header: f.header,
        bulk: f.bulk,
        deadline,
        peer: peer.to_string(),
        rpc_id,
    };
    let reply = match AssertUnwindSafe(handler.handle(req)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            error!(%peer, opcode, rpc_id, "handler panicked");
            Reply::err(&DaosError::new(
                Der::MISC,
                format!("opcode {opcode:#x}: the server's handler failed"),
            ))
        }
    };
    if Instant::now() > deadline {
        // The caller's own deadline (earlier than ours) has passed: it is
        // no longer waiting, so spare the wire.
        debug!(%peer, opcode, rpc_id, "reply after the deadline dropped");
        return;
    }
    let frame = match reply_frame(opcode, rpc_id, reply, max_frame) {
        Ok(f) => f,
        Err(msg) => {
            error!(%peer, opcode, rpc_id, "{msg}");
            let e = DaosError::new(Der::OVERFLOW, msg);
            match reply_frame(opcode, rpc_id, Reply::err(&e), max_frame) {
                Ok(f) => f,
                Err(_) => return,
            }
        }
    };
    // Fails only when the connection is gone; the reply has nowhere to go.
    drop(tx.send((frame, slot)).await);
}

fn reply_frame(opcode: u32, rpc_id: u64, reply: Reply, max_frame: u32) -> Result<Frame, String> {
    let len = (reply.header.len() + reply.bulk.len()) as u64;
    let f = Frame::new(
        FrameHeader::reply(opcode, rpc_id, reply.status, 0, 0),
        reply.header,
        reply.bulk,
    )
    .map_err(|e| format!("reply of {len} bytes: {e}"))?;
    if f.head.frame_len() > u64::from(max_frame) {
        return Err(format!(
            "reply of {} bytes exceeds max_frame of {max_frame} bytes",
            f.head.frame_len()
        ));
    }
    Ok(f)
}

async fn write_replies<W: FrameWrite>(
    mut writer: W,
    mut rx: mpsc::Receiver<Outgoing>,
    close: CancellationToken,
    peer: Arc<str>,
) {
    loop {
        let (frame, _slot) = tokio::select! {
            biased;
            _ = close.cancelled() => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let r = tokio::select! {
            biased;
            _ = close.cancelled() => break,
            r = writer.write_frame(&frame) => r,
        };
        if let Err(e) = r {
            // Usually the client went away; nothing for a person to do.
            debug!(%peer, error = %e, "write failed, closing connection");
            close.cancel();
            break;
        }
    }
    drop(writer.shutdown().await);
}
