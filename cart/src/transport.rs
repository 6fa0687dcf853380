//! The transport boundary: what the client and server need from a network
//! to carry frames, and the TCP provider that ships built in.
//!
//! Invariant: a provider hands the RPC layer whole, checked [`Frame`]s and
//! writes them without re-encoding their payloads; request ids, deadlines,
//! limits and reconnection live above this boundary, so a provider only moves
//! frames. A libfabric provider (feature `ofi`) would implement [`Transport`]
//! with message sends for the header and RMA for the bulk, and be matched on
//! [`Scheme::Ofi`] in `Client`'s connect and in `bind`; none exists yet, so
//! those URIs fail with [`CartError::NoProvider`].
//!
//! Peers on one node skip the TCP stack: a server bound to `tcp://H:P` also
//! listens on the Linux abstract Unix socket `cart:H:P` (per network
//! namespace, like the TCP port; gone with the process, nothing to clean
//! up), and a client dialing `tcp://H:P` tries that socket first and falls
//! back to TCP when nobody listens there. Frames are the same on both.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::linux::net::SocketAddrExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tracing::debug;

use crate::addr::{Addr, Scheme};
use crate::error::CartError;
use crate::frame::{self, Decoded, Frame, FrameError, HEADER_LEN};

/// Why a frame could not be read: the connection failed, or the peer sent
/// bytes that are not a valid frame. Either way the connection is done.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
}

/// The receiving side of a connection.
pub trait FrameRead: Send + 'static {
    /// Reads the next frame, refusing one larger than the `max_frame` the
    /// connection was opened with before allocating for it. `Ok(None)` is a
    /// clean end of stream between frames; an end inside a frame is an
    /// error. Cancel-safe: dropping the future loses no bytes.
    fn read_frame(&mut self) -> impl Future<Output = Result<Option<Frame>, ReadError>> + Send;
}

/// The sending side of a connection.
pub trait FrameWrite: Send + Sync + 'static {
    /// Writes one frame. Not cancel-safe: a dropped write may leave part of a
    /// frame on the wire, so the connection must be abandoned.
    fn write_frame(&mut self, frame: &Frame) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let w = Wire::new(frame.clone())?;
            let mut sent = 0;
            while sent < w.len() {
                let r = {
                    let mut parts = Vec::with_capacity(3);
                    w.slices(sent, &mut parts);
                    self.try_write(&parts)
                };
                match r {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => sent += n,
                    Err(e) if would_block(&e) => self.writable().await?,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    /// Writes what the connection takes now of `bufs`, in order, without
    /// waiting: the bytes written, or `WouldBlock` when it takes none. Lets
    /// a caller hand a frame to the socket from any thread, with no task
    /// to wake; the caller keeps frames whole and in order.
    fn try_write(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Waits until the connection may take more bytes (it may still take
    /// none: [`FrameWrite::try_write`] then says `WouldBlock` again).
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Tells the peer no more frames follow.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A frame as it goes on the wire: its fixed header encoded, its payloads
/// shared with the caller's buffers (never joined or copied).
pub(crate) struct Wire {
    head: [u8; HEADER_LEN],
    header: Bytes,
    bulk: Bytes,
}

impl Wire {
    /// Fails if the fixed header's lengths do not match the payloads.
    pub(crate) fn new(f: Frame) -> io::Result<Wire> {
        if f.head.header_len as usize != f.header.len() || f.head.bulk_len as usize != f.bulk.len()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame lengths do not match its payloads",
            ));
        }
        Ok(Wire {
            head: f.head.encode(),
            header: f.header,
            bulk: f.bulk,
        })
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        HEADER_LEN + self.header.len() + self.bulk.len()
    }

    /// Appends its parts after its first `skip` bytes, for a vectored write.
    pub(crate) fn slices<'a>(&'a self, mut skip: usize, out: &mut Vec<IoSlice<'a>>) {
        for part in [&self.head[..], &self.header[..], &self.bulk[..]] {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
    }
}

/// Whether a non-blocking write should wait for the socket and try again.
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// An open connection, split so one task reads while another writes.
pub struct Conn<R, W> {
    pub reader: R,
    pub writer: W,
    /// The peer's URI, for logs.
    pub peer: String,
}

/// A listening endpoint.
pub trait Accept: Send + 'static {
    type Reader: FrameRead;
    type Writer: FrameWrite;

    /// Waits for the next connection. Cancel-safe.
    fn accept(
        &mut self,
        max_frame: u32,
    ) -> impl Future<Output = io::Result<Conn<Self::Reader, Self::Writer>>> + Send;
}

/// A network provider: dials and listens for the URIs of one scheme.
pub trait Transport: Send + Sync + 'static {
    type Reader: FrameRead;
    type Writer: FrameWrite;
    type Acceptor: Accept<Reader = Self::Reader, Writer = Self::Writer>;

    /// Opens a connection to `addr`. Frames read from it are limited to
    /// `max_frame` bytes.
    fn connect(
        &self,
        addr: &Addr,
        max_frame: u32,
    ) -> impl Future<Output = io::Result<Conn<Self::Reader, Self::Writer>>> + Send;

    /// Listens on `addr`; returns the acceptor and the address actually
    /// bound (port 0 picks a free port).
    fn bind(&self, addr: &Addr) -> impl Future<Output = io::Result<(Self::Acceptor, Addr)>> + Send;
}

/// The error for a URI whose provider this build lacks.
pub(crate) fn no_provider(addr: &Addr) -> CartError {
    let reason = match addr.scheme() {
        Scheme::Tcp => "no provider for this scheme",
        Scheme::Ofi(_) if cfg!(feature = "ofi") => {
            "feature `ofi` is on, but no libfabric provider is implemented; use tcp://"
        }
        Scheme::Ofi(_) => "the libfabric (ofi) provider is not built in; use tcp://",
    };
    CartError::NoProvider {
        uri: addr.to_string(),
        reason,
    }
}

/// TCP over tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

/// Reads small frames in batches of at least this many bytes.
const READ_CHUNK: usize = 64 << 10;

/// The receiving half of a TCP connection (or of the Unix socket standing
/// in for it). Frames are read into one `BytesMut` and split off it, so
/// payloads are never copied.
pub struct TcpReader {
    rd: ReadHalf,
    buf: BytesMut,
    max_frame: u32,
}

/// The sending half of a TCP connection (or of its Unix socket).
pub struct TcpWriter {
    wr: WriteHalf,
}

/// A TCP listener, and the abstract Unix socket named after it when that
/// could be bound.
pub struct TcpAcceptor {
    listener: TcpListener,
    local: Option<UnixListener>,
}

/// Connections accepted on local sockets, for their peer names.
static LOCAL_CONNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The abstract Unix socket a server bound to `host:port` also listens on.
fn local_name(host: &str, port: u16) -> io::Result<std::os::unix::net::SocketAddr> {
    std::os::unix::net::SocketAddr::from_abstract_name(format!("cart:{host}:{port}"))
}

fn tcp_conn(stream: TcpStream, max_frame: u32) -> io::Result<Conn<TcpReader, TcpWriter>> {
    // Requests and replies are written whole; Nagle would only hold a small
    // frame back waiting for the peer's delayed ACK.
    stream.set_nodelay(true)?;
    let peer = Addr::tcp(stream.peer_addr()?).to_string();
    let (rd, wr) = stream.into_split();
    Ok(conn_of(
        ReadHalf::Tcp(rd),
        WriteHalf::Tcp(wr),
        peer,
        max_frame,
    ))
}

/// The send buffer asked for a local socket. A Unix socket's default (the
/// `net.core.wmem_default` sysctl, ~208 KiB) holds a fifth of a 1 MiB
/// frame, and each refill costs both sides a wake-up: cold 1 MiB streaming
/// reads through dfuse ran 30% slower than over TCP, whose buffers grow.
/// The kernel grants at most `net.core.wmem_max` (doubled).
const LOCAL_SNDBUF: usize = 4 << 20;
/// A granted send buffer below this keeps a client on TCP.
const LOCAL_SNDBUF_MIN: usize = 2 << 20;

/// Asks for [`LOCAL_SNDBUF`]; the send buffer granted.
fn grow_sndbuf(stream: &UnixStream) -> usize {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::SndBuf};
    if let Err(e) = setsockopt(stream, SndBuf, &LOCAL_SNDBUF) {
        debug!(error = %e, "local socket keeps its default send buffer");
    }
    getsockopt(stream, SndBuf).unwrap_or(0)
}

fn unix_conn(stream: UnixStream, peer: String, max_frame: u32) -> Conn<TcpReader, TcpWriter> {
    let (rd, wr) = stream.into_split();
    conn_of(ReadHalf::Unix(rd), WriteHalf::Unix(wr), peer, max_frame)
}

fn conn_of(
    rd: ReadHalf,
    wr: WriteHalf,
    peer: String,
    max_frame: u32,
) -> Conn<TcpReader, TcpWriter> {
    Conn {
        reader: TcpReader {
            rd,
            buf: BytesMut::new(),
            max_frame,
        },
        writer: TcpWriter { wr },
        peer,
    }
}

/// Dials the abstract Unix socket of `host:port`; `None` when nobody
/// listens there (another node, or a server without it), or when the node
/// grants its sockets too small a send buffer (`net.core.wmem_max`): then
/// TCP, whose buffers grow, streams large frames faster.
async fn dial_local(host: &str, port: u16) -> Option<UnixStream> {
    let name = local_name(host, port).ok()?;
    // Connecting to a local socket does not wait on a network, but a full
    // backlog would block: off the runtime's threads.
    let s = tokio::task::spawn_blocking(move || {
        let s = std::os::unix::net::UnixStream::connect_addr(&name)?;
        s.set_nonblocking(true)?;
        Ok::<_, io::Error>(s)
    })
    .await
    .ok()?
    .ok()?;
    let s = UnixStream::from_std(s).ok()?;
    let granted = grow_sndbuf(&s);
    if granted < LOCAL_SNDBUF_MIN {
        debug!(granted, "local socket's send buffer too small: TCP instead");
        return None;
    }
    Some(s)
}

impl FrameRead for TcpReader {
    async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            match frame::split_frame(&mut self.buf, self.max_frame)? {
                Decoded::Frame(f) => return Ok(Some(f)),
                Decoded::Need(n) => {
                    // Once the header is checked, `n` is the rest of the
                    // frame (bounded by max_frame): reserve it whole so a
                    // large bulk lands in one allocation.
                    self.buf.reserve(n.max(READ_CHUNK));
                    if self.rd.read_buf(&mut self.buf).await? == 0 {
                        if self.buf.is_empty() {
                            return Ok(None);
                        }
                        return Err(FrameError::Truncated {
                            have: self.buf.len(),
                            need: self.buf.len() + n,
                        }
                        .into());
                    }
                }
            }
        }
    }
}

impl FrameWrite for TcpWriter {
    fn try_write(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &self.wr {
            WriteHalf::Tcp(w) => w.try_write_vectored(bufs),
            WriteHalf::Unix(w) => w.try_write_vectored(bufs),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match &self.wr {
            WriteHalf::Tcp(w) => w.writable().await,
            WriteHalf::Unix(w) => w.writable().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.wr {
            WriteHalf::Tcp(w) => w.shutdown().await,
            WriteHalf::Unix(w) => w.shutdown().await,
        }
    }
}

impl Accept for TcpAcceptor {
    type Reader = TcpReader;
    type Writer = TcpWriter;

    async fn accept(&mut self, max_frame: u32) -> io::Result<Conn<TcpReader, TcpWriter>> {
        let local = async {
            match &self.local {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.listener.accept() => tcp_conn(r?.0, max_frame),
            r = local => {
                let (stream, _) = r?;
                grow_sndbuf(&stream);
                // The socket has no address of its own: name the peer by
                // its process and a count, so connections stay apart in
                // logs and handlers.
                let n = LOCAL_CONNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let pid = stream.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
                Ok(unix_conn(stream, format!("unix:pid{pid}#{n}"), max_frame))
            }
        }
    }
}

impl Transport for Tcp {
    type Reader = TcpReader;
    type Writer = TcpWriter;
    type Acceptor = TcpAcceptor;

    async fn connect(&self, addr: &Addr, max_frame: u32) -> io::Result<Conn<TcpReader, TcpWriter>> {
        if let Some(s) = dial_local(addr.host(), addr.port()).await {
            return Ok(unix_conn(s, format!("unix:{addr}"), max_frame));
        }
        let stream = TcpStream::connect((addr.host(), addr.port())).await?;
        tcp_conn(stream, max_frame)
    }

    async fn bind(&self, addr: &Addr) -> io::Result<(TcpAcceptor, Addr)> {
        let sa = tokio::net::lookup_host((addr.host(), addr.port()))
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "host resolves to no address")
            })?;
        let socket = if sa.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // A restarted engine must get its port back while the previous
        // instance's connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(sa)?;
        let listener = socket.listen(1024)?;
        let local = Addr::tcp(listener.local_addr()?);
        // Named after the address as asked (the host as clients spell it)
        // with the port actually bound.
        let unix = local_name(addr.host(), local.port()).and_then(|name| {
            let l = std::os::unix::net::UnixListener::bind_addr(&name)?;
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        });
        let unix = match unix {
            Ok(l) => Some(l),
            Err(e) => {
                debug!(addr = %local, error = %e, "no local socket beside the TCP port");
                None
            }
        };
        Ok((
            TcpAcceptor {
                listener,
                local: unix,
            },
            local,
        ))
    }
}
