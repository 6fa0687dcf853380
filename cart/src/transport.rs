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

use std::future::Future;
use std::io::{self, IoSlice};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::addr::{Addr, Scheme};
use crate::error::CartError;
use crate::frame::{self, Decoded, Frame, FrameError};

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
    fn write_frame(&mut self, frame: &Frame) -> impl Future<Output = io::Result<()>> + Send;

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

/// The receiving half of a TCP connection. Frames are read into one
/// `BytesMut` and split off it, so payloads are never copied.
pub struct TcpReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    max_frame: u32,
}

/// The sending half of a TCP connection.
pub struct TcpWriter {
    wr: OwnedWriteHalf,
}

/// A TCP listener.
pub struct TcpAcceptor {
    listener: TcpListener,
}

fn tcp_conn(stream: TcpStream, max_frame: u32) -> io::Result<Conn<TcpReader, TcpWriter>> {
    // Requests and replies are written whole; Nagle would only hold a small
    // frame back waiting for the peer's delayed ACK.
    stream.set_nodelay(true)?;
    let peer = Addr::tcp(stream.peer_addr()?).to_string();
    let (rd, wr) = stream.into_split();
    Ok(Conn {
        reader: TcpReader {
            rd,
            buf: BytesMut::new(),
            max_frame,
        },
        writer: TcpWriter { wr },
        peer,
    })
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
    async fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        if frame.head.header_len as usize != frame.header.len()
            || frame.head.bulk_len as usize != frame.bulk.len()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame lengths do not match its payloads",
            ));
        }
        let head = frame.head.encode();
        // Vectored writes straight from the caller's buffers: the payloads
        // are never joined or copied.
        let mut parts = Buf::chain(
            Buf::chain(&head[..], frame.header.clone()),
            frame.bulk.clone(),
        );
        self.wr.write_all_buf(&mut parts).await
    }

    fn try_write(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.wr.try_write_vectored(bufs)
    }

    async fn writable(&self) -> io::Result<()> {
        self.wr.writable().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.wr.shutdown().await
    }
}

impl Accept for TcpAcceptor {
    type Reader = TcpReader;
    type Writer = TcpWriter;

    async fn accept(&mut self, max_frame: u32) -> io::Result<Conn<TcpReader, TcpWriter>> {
        let (stream, _) = self.listener.accept().await?;
        tcp_conn(stream, max_frame)
    }
}

impl Transport for Tcp {
    type Reader = TcpReader;
    type Writer = TcpWriter;
    type Acceptor = TcpAcceptor;

    async fn connect(&self, addr: &Addr, max_frame: u32) -> io::Result<Conn<TcpReader, TcpWriter>> {
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
        Ok((TcpAcceptor { listener }, local))
    }
}
