//! dRPC: request/response calls between processes of one node over a Unix stream
//! socket.
//!
//! Framing: each message is a little-endian `u32` length followed by that many
//! bytes of an encoded [`Call`] or [`Response`]. A length above [`MAX_FRAME`] or a
//! frame that does not decode ends the connection: a peer that sends garbage is
//! cut off, and the listener keeps serving everyone else. One connection carries
//! one call at a time; the response echoes the call's sequence number.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::der::{DaosError, Der};
pub use crate::drpc_pb::{Call, Response, Status};

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;

/// Handler modules, numbered as DAOS numbers them.
pub mod module {
    pub const SEC_AGENT: i32 = 1;
    pub const MGMT: i32 = 2;
    pub const SRV: i32 = 3;
}

/// Methods inside the modules.
pub mod method {
    /// SEC_AGENT: ask the agent for a signed credential (`auth.GetCredResp`).
    pub const REQUEST_CREDS: i32 = 101;
    /// MGMT, served by the agent: `mgmt.GetAttachInfoReq` -> `mgmt.GetAttachInfoResp`.
    pub const GET_ATTACH_INFO: i32 = 206;
    /// MGMT, served by the engine: reserve a pool's shards.
    pub const POOL_CREATE: i32 = 207;
    /// MGMT, served by the engine: free a pool's shards.
    pub const POOL_DESTROY: i32 = 208;
    /// MGMT, served by the engine: tier totals and reservations.
    pub const STORAGE_QUERY: i32 = 214;
    /// MGMT, served by the engine: one pool's per-target space.
    pub const POOL_QUERY: i32 = 215;
    /// MGMT, served by the agent: where a pool's service runs (`PoolFindReq`).
    pub const POOL_FIND: i32 = 216;
    /// MGMT, served by the engine: stop taking work, about to be terminated.
    pub const PREP_SHUTDOWN: i32 = 220;
    /// SRV, served by daos_server: an engine is ready and joins the system.
    pub const NOTIFY_READY: i32 = 301;
}

/// What can go wrong on a dRPC connection.
#[derive(Debug, thiserror::Error)]
pub enum DrpcError {
    #[error("dRPC socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("dRPC I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("dRPC frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("dRPC message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("dRPC peer closed the connection")]
    Closed,
    #[error("dRPC call timed out after {0:?}")]
    Timeout(Duration),
    #[error("dRPC call failed with status {0:?}")]
    Status(Status),
    #[error("dRPC response sequence {got} does not match call {want}")]
    Sequence { want: i64, got: i64 },
}

impl From<DrpcError> for DaosError {
    fn from(e: DrpcError) -> Self {
        let der = match &e {
            DrpcError::Connect { .. } | DrpcError::Closed => Der::UNREACH,
            DrpcError::Timeout(_) => Der::TIMEDOUT,
            DrpcError::Status(Status::UnknownMethod | Status::UnknownModule) => Der::NOSYS,
            DrpcError::Decode(_) | DrpcError::TooLarge(_) | DrpcError::Sequence { .. } => {
                Der::PROTO
            }
            _ => Der::IO,
        };
        DaosError::new(der, e.to_string())
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &impl Message,
) -> Result<(), DrpcError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME {
        return Err(DrpcError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    msg.encode(&mut buf)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most [`MAX_FRAME`] bytes. `Ok(None)` means the peer
/// closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin, M: Message + Default>(
    r: &mut R,
) -> Result<Option<M>, DrpcError> {
    read_frame_limited(r, MAX_FRAME, None).await
}

/// Reads one frame of at most `max` bytes; once its length has arrived, the rest
/// must arrive within `body_timeout`, so a peer cannot hold a buffer forever.
pub async fn read_frame_limited<R: AsyncRead + Unpin, M: Message + Default>(
    r: &mut R,
    max: usize,
    body_timeout: Option<Duration>,
) -> Result<Option<M>, DrpcError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(DrpcError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    let read = r.read_exact(&mut body);
    let res = match body_timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .map_err(|_| DrpcError::Timeout(t))?,
        None => read.await,
    };
    res.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DrpcError::Closed
        } else {
            DrpcError::Io(e)
        }
    })?;
    Ok(Some(M::decode(body.as_slice())?))
}

/// A client connection: one call at a time. After a failure that leaves the
/// stream in an unknown state (I/O error, timeout with a reply possibly still on
/// the way, a reply out of sequence), the next call connects afresh.
pub struct DrpcClient {
    path: std::path::PathBuf,
    stream: Option<UnixStream>,
    seq: i64,
    timeout: Duration,
}

async fn open(path: &Path) -> Result<UnixStream, DrpcError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| DrpcError::Connect {
            path: path.display().to_string(),
            source,
        })
}

impl DrpcClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, DrpcError> {
        let stream = open(path).await?;
        Ok(DrpcClient {
            path: path.to_path_buf(),
            stream: Some(stream),
            seq: 0,
            timeout: Duration::from_secs(60),
        })
    }

    /// The socket this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the time one call may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes one call and decodes its response body as `Resp`.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &mut self,
        module: i32,
        method: i32,
        req: &Req,
    ) -> Result<Resp, DrpcError> {
        let body = self.call_raw(module, method, req.encode_to_vec()).await?;
        Ok(Resp::decode(body.as_slice())?)
    }

    /// Makes one call with an encoded request; returns the encoded response.
    pub async fn call_raw(
        &mut self,
        module: i32,
        method: i32,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, DrpcError> {
        let r = self.exchange(module, method, body).await;
        if matches!(&r, Err(e) if !matches!(e, DrpcError::Status(_))) {
            self.stream = None;
        }
        r
    }

    async fn exchange(
        &mut self,
        module: i32,
        method: i32,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, DrpcError> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => open(&self.path).await?,
        };
        self.seq += 1;
        let want = self.seq;
        let call = Call {
            module,
            method,
            sequence: want,
            body,
        };
        let timeout = self.timeout;
        let resp: Response = tokio::time::timeout(timeout, async {
            write_frame(&mut stream, &call).await?;
            read_frame::<_, Response>(&mut stream)
                .await?
                .ok_or(DrpcError::Closed)
        })
        .await
        .map_err(|_| DrpcError::Timeout(timeout))??;
        if resp.sequence != want {
            return Err(DrpcError::Sequence {
                want,
                got: resp.sequence,
            });
        }
        self.stream = Some(stream);
        let status = Status::try_from(resp.status).unwrap_or(Status::Failure);
        if status != Status::Success {
            return Err(DrpcError::Status(status));
        }
        Ok(resp.body)
    }

    /// Waits until the peer closes the connection (or sends something, which a
    /// client does not expect and treats as the end too).
    pub async fn closed(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b).await;
        }
        self.stream = None;
    }
}

/// Who is on the other end of a connection, from the kernel (SO_PEERCRED), not
/// from anything the peer said.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCred {
    /// True for this process's own user and for root: who may manage a daemon.
    pub fn is_self_or_root(&self) -> bool {
        self.uid == 0 || self.uid == nix::unistd::geteuid().as_raw()
    }
}

/// One accepted connection, as a handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Unique per listener for its lifetime.
    pub id: u64,
    pub peer: PeerCred,
}

/// The failure a handler reports for one call.
#[derive(Debug)]
pub enum HandlerError {
    UnknownModule,
    UnknownMethod,
    /// The request body did not decode.
    BadPayload(prost::DecodeError),
    /// The call was refused or failed before a response message existed
    /// (e.g. a caller without permission).
    Failure,
}

impl From<prost::DecodeError> for HandlerError {
    fn from(e: prost::DecodeError) -> Self {
        HandlerError::BadPayload(e)
    }
}

/// Serves the calls of a dRPC listener.
pub trait Handler: Send + Sync + 'static {
    /// Handles one call and returns the encoded response body. Application
    /// failures go in the response message's own `status` field.
    fn handle(
        &self,
        conn: ConnInfo,
        module: i32,
        method: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, HandlerError>> + Send;

    /// Called once when a connection ends, whatever the reason.
    fn closed(&self, _conn: ConnInfo) {}
}

/// Binds a listener at `path`, replacing a stale socket file left by a dead process.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// What one listener tolerates from its peers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest call frame accepted.
    pub max_frame: usize,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_conns: usize,
    /// How long the body of a frame may take once its length arrived.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: MAX_FRAME,
            max_conns: 256,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts connections until `shutdown` completes, serving each on its own task,
/// with the default [`Limits`].
pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, handler, shutdown, Limits::default()).await
}

/// Accepts connections until `shutdown` completes, serving each on its own task.
pub async fn serve_with<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_conns));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("dRPC accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let peer = match stream.peer_cred() {
            Ok(c) => PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!("dRPC peer credentials unavailable, dropping connection: {e}");
                continue;
            }
        };
        let conn = ConnInfo {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            peer,
        };
        let h = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_conn(stream, conn, &*h, limits).await {
                tracing::warn!(conn = conn.id, pid = ?conn.peer.pid, "dRPC connection dropped: {e}");
            }
            h.closed(conn);
            drop(permit);
        });
    }
}

async fn serve_conn<H: Handler>(
    mut stream: UnixStream,
    conn: ConnInfo,
    h: &H,
    limits: Limits,
) -> Result<(), DrpcError> {
    while let Some(call) =
        read_frame_limited::<_, Call>(&mut stream, limits.max_frame, Some(limits.body_timeout))
            .await?
    {
        let (status, body) = match h.handle(conn, call.module, call.method, call.body).await {
            Ok(body) => (Status::Success, body),
            Err(HandlerError::UnknownModule) => (Status::UnknownModule, Vec::new()),
            Err(HandlerError::UnknownMethod) => (Status::UnknownMethod, Vec::new()),
            Err(HandlerError::Failure) => (Status::Failure, Vec::new()),
            Err(HandlerError::BadPayload(e)) => {
                tracing::warn!(
                    conn = conn.id,
                    "dRPC payload for {}/{} does not decode: {e}",
                    call.module,
                    call.method
                );
                (Status::FailedUnmarshalPayload, Vec::new())
            }
        };
        let resp = Response {
            sequence: call.sequence,
            status: status as i32,
            body,
        };
        write_frame(&mut stream, &resp).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srv::{PoolDestroyShardReq, PoolDestroyShardResp};

    struct Echo;
    impl Handler for Echo {
        async fn handle(
            &self,
            _c: ConnInfo,
            module: i32,
            method: i32,
            body: Vec<u8>,
        ) -> Result<Vec<u8>, HandlerError> {
            if module != module::MGMT {
                return Err(HandlerError::UnknownModule);
            }
            if method != method::POOL_DESTROY {
                return Err(HandlerError::UnknownMethod);
            }
            let req = PoolDestroyShardReq::decode(body.as_slice())?;
            if req.pool_uuid == "slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(PoolDestroyShardResp {
                status: 0,
                info: req.pool_uuid,
            }
            .encode_to_vec())
        }
    }

    #[tokio::test]
    async fn call_round_trip_and_bad_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = bind(&path).unwrap();
        tokio::spawn(serve(l, Arc::new(Echo), std::future::pending()));

        let mut c = DrpcClient::connect(&path).await.unwrap();
        let r: PoolDestroyShardResp = c
            .call(
                module::MGMT,
                method::POOL_DESTROY,
                &PoolDestroyShardReq {
                    pool_uuid: "abc".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(r.info, "abc");
        let e = c
            .call::<_, PoolDestroyShardResp>(module::SRV, 1, &PoolDestroyShardReq::default())
            .await;
        assert!(matches!(e, Err(DrpcError::Status(Status::UnknownModule))));
        let e = c
            .call::<_, PoolDestroyShardResp>(module::MGMT, 1, &PoolDestroyShardReq::default())
            .await;
        assert!(matches!(e, Err(DrpcError::Status(Status::UnknownMethod))));

        // An oversize length prefix: the server drops that connection only.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let mut b = [0u8; 1];
        assert_eq!(raw.read(&mut b).await.unwrap(), 0);
        // Garbage that does not decode as a Call.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(&3u32.to_le_bytes()).await.unwrap();
        raw.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
        assert_eq!(raw.read(&mut b).await.unwrap(), 0);

        // The first client is unaffected.
        let r: PoolDestroyShardResp = c
            .call(
                module::MGMT,
                method::POOL_DESTROY,
                &PoolDestroyShardReq {
                    pool_uuid: "x".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(r.info, "x");
    }

    #[tokio::test]
    async fn timeout_then_fresh_connection_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = bind(&path).unwrap();
        let limits = Limits {
            max_frame: 64,
            max_conns: 4,
            body_timeout: Duration::from_millis(100),
        };
        tokio::spawn(serve_with(
            l,
            Arc::new(Echo),
            std::future::pending(),
            limits,
        ));

        let mut c = DrpcClient::connect(&path)
            .await
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        let slow = PoolDestroyShardReq {
            pool_uuid: "slow".into(),
        };
        let e = c
            .call::<_, PoolDestroyShardResp>(module::MGMT, method::POOL_DESTROY, &slow)
            .await;
        assert!(matches!(e, Err(DrpcError::Timeout(_))), "{e:?}");
        // The late reply to the slow call must not answer this one.
        let r: PoolDestroyShardResp = c
            .call(
                module::MGMT,
                method::POOL_DESTROY,
                &PoolDestroyShardReq {
                    pool_uuid: "next".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(r.info, "next");

        // A frame above the listener's limit ends that connection.
        let big = PoolDestroyShardReq {
            pool_uuid: "x".repeat(100),
        };
        assert!(c
            .call::<_, PoolDestroyShardResp>(module::MGMT, method::POOL_DESTROY, &big)
            .await
            .is_err());
        // A peer that sends a length and then stalls is cut off.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(&10u32.to_le_bytes()).await.unwrap();
        let mut b = [0u8; 1];
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(2), raw.read(&mut b))
                .await
                .unwrap()
                .unwrap(),
            0
        );
    }
}
