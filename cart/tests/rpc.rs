//! End-to-end tests of the transport: a real server, real clients (over the
//! local Unix socket a client on the server's node uses, and over TCP), and
//! raw sockets that misbehave.

// Test helpers outside #[test] functions; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cart::{
    Addr, Bytes, CartError, Client, ClientOpts, Clients, Handler, Incoming, Reply, Request,
    ServerLimits,
};
use proto::{DaosError, Der};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Echoes header and bulk back after a random pause of up to 20 ms.
const ECHO: u32 = 1;
/// Sleeps for the milliseconds in its header (u64 LE), then answers.
const SLOW: u32 = 2;
/// Waits for the test to open the gate; counts how many wait at once.
const GATED: u32 = 3;
/// Answers with the caller's peer URI.
const PEER: u32 = 4;
/// Answers with the milliseconds left to its deadline (u64 LE).
const DEADLINE: u32 = 5;
/// Panics.
const PANIC: u32 = 6;

struct TestHandler {
    started_slow: AtomicUsize,
    in_gate: AtomicUsize,
    max_in_gate: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Default for TestHandler {
    fn default() -> Self {
        TestHandler {
            started_slow: AtomicUsize::new(0),
            in_gate: AtomicUsize::new(0),
            max_in_gate: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Handler for TestHandler {
    async fn handle(&self, req: Incoming) -> Reply {
        match req.opcode {
            ECHO => {
                let ms = rand::thread_rng().gen_range(0..20);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Reply::ok(req.header, req.bulk)
            }
            SLOW => {
                self.started_slow.fetch_add(1, Ordering::SeqCst);
                let ms = u64::from_le_bytes(req.header[..8].try_into().unwrap());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Reply::ok(Bytes::from_static(b"slept"), Bytes::new())
            }
            GATED => {
                let now = self.in_gate.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_gate.fetch_max(now, Ordering::SeqCst);
                self.gate.acquire().await.unwrap().forget();
                self.in_gate.fetch_sub(1, Ordering::SeqCst);
                Reply::ok(Bytes::new(), Bytes::new())
            }
            PEER => Reply::ok(Bytes::from(req.peer.into_bytes()), Bytes::new()),
            DEADLINE => {
                let left = req.deadline - tokio::time::Instant::now();
                let ms = left.as_millis() as u64;
                Reply::ok(Bytes::copy_from_slice(&ms.to_le_bytes()), Bytes::new())
            }
            PANIC => panic!("test handler panics on purpose"),
            op => Reply::err(&DaosError::new(
                Der::NOSYS,
                format!("opcode {op:#x} is not served here"),
            )),
        }
    }
}

struct Server {
    addr: Addr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn shut(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

async fn start<H: Handler>(h: Arc<H>, limits: ServerLimits, at: &str) -> Server {
    let l = cart::bind(&Addr::parse(at).unwrap()).await.unwrap();
    let addr = l.local_addr().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(cart::serve(l, h, limits, stop.clone()));
    Server { addr, stop, task }
}

fn req(opcode: u32, header: impl Into<Bytes>) -> Request {
    Request::new(opcode, header.into(), Bytes::new(), Duration::from_secs(30))
}

fn slow(ms: u64, timeout: Duration) -> Request {
    Request::new(
        SLOW,
        Bytes::copy_from_slice(&ms.to_le_bytes()),
        Bytes::new(),
        timeout,
    )
}

async fn peer_of(c: &Client) -> String {
    let r = c.call(req(PEER, Bytes::new())).await.unwrap();
    String::from_utf8(r.into_result().unwrap().0.to_vec()).unwrap()
}

/// Polls `cond` every 10 ms for up to 30 s.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_out_of_order() {
    let srv = start(
        Arc::new(TestHandler::default()),
        ServerLimits::default(),
        "tcp://127.0.0.1:0",
    )
    .await;
    // The address as bound: the server's local Unix socket.
    let local = Client::new(srv.addr.clone(), ClientOpts::default());
    assert!(peer_of(&local).await.starts_with("unix:"));
    thousand_calls(&local).await;
    // Another spelling of it names no local socket: TCP.
    let other = Addr::parse(&format!("tcp://localhost:{}", srv.addr.port())).unwrap();
    let tcp = Client::new(other, ClientOpts::default());
    assert!(
        peer_of(&tcp).await.starts_with("tcp://"),
        "{}",
        peer_of(&tcp).await
    );
    thousand_calls(&tcp).await;
    srv.shut().await;
}

/// A thousand echo calls at once, of every size up to 5 MiB, each answered
/// with its own payloads.
async fn thousand_calls(client: &Client) {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let mut rng = rand::thread_rng();
        let hlen = match i % 10 {
            0 => 0,
            _ => rng.gen_range(1..300),
        };
        let blen = match i % 50 {
            0 | 1 => 0,
            7 => rng.gen_range((2 << 20)..(5 << 20)),
            _ => rng.gen_range(1..(64 << 10)),
        };
        let mut header = vec![0u8; hlen];
        rng.fill(&mut header[..]);
        if hlen >= 4 {
            header[..4].copy_from_slice(&i.to_le_bytes());
        }
        let mut bulk = vec![0u8; blen];
        rng.fill(&mut bulk[..]);
        let (header, bulk) = (Bytes::from(header), Bytes::from(bulk));
        let c = client.clone();
        calls.spawn(async move {
            let r = c
                .call(Request::new(
                    ECHO,
                    header.clone(),
                    bulk.clone(),
                    Duration::from_secs(120),
                ))
                .await
                .unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert_eq!(r.status, 0, "call {i}");
            assert_eq!(r.header, header, "call {i}: header of another call");
            assert_eq!(r.bulk, bulk, "call {i}: bulk of another call");
            i
        });
    }
    let mut done = vec![false; 1000];
    while let Some(r) = calls.join_next().await {
        done[r.unwrap() as usize] = true;
    }
    assert!(done.iter().all(|d| *d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_the_call_and_keeps_the_connection() {
    let h = Arc::new(TestHandler::default());
    let srv = start(h.clone(), ServerLimits::default(), "tcp://127.0.0.1:0").await;
    let client = Client::new(srv.addr.clone(), ClientOpts::default());
    let before = peer_of(&client).await;

    let e = client
        .call(slow(3_000, Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(e, CartError::Timedout { opcode: SLOW, .. }), "{e}");
    assert_eq!(e.to_daos().der, Der::TIMEDOUT);
    assert!(e.to_string().contains(&srv.addr.to_string()), "{e}");
    // The server got it, and runs it to completion regardless.
    wait_for("the slow call to reach the handler", || {
        h.started_slow.load(Ordering::SeqCst) == 1
    })
    .await;

    // Same connection (same client port), still answering.
    assert_eq!(peer_of(&client).await, before);
    // The server is told how long the caller waits.
    let r = client
        .call(Request::new(
            DEADLINE,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    let left = u64::from_le_bytes(r.header[..8].try_into().unwrap());
    assert!(left > 0 && left <= 5_000, "{left} ms left");
    srv.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_restarts() {
    let limits = ServerLimits {
        shutdown_grace: Duration::from_millis(100),
        ..ServerLimits::default()
    };
    let h1 = Arc::new(TestHandler::default());
    let srv = start(h1.clone(), limits.clone(), "tcp://127.0.0.1:0").await;
    let addr = srv.addr.clone();
    let client = Client::new(addr.clone(), ClientOpts::default());
    let first = peer_of(&client).await;

    // A call in flight when the server goes away.
    let c = client.clone();
    let inflight = tokio::spawn(async move { c.call(slow(60_000, Duration::from_secs(90))).await });
    wait_for("the slow call to start", || {
        h1.started_slow.load(Ordering::SeqCst) == 1
    })
    .await;
    srv.shut().await;
    let e = inflight.await.unwrap().unwrap_err();
    assert!(matches!(e, CartError::Unreach { .. }), "{e}");
    assert_eq!(e.to_daos().der, Der::UNREACH);

    // Nobody listening: the next call fails fast, unreachable.
    let e = client.call(req(PEER, Bytes::new())).await.unwrap_err();
    assert!(matches!(e, CartError::Unreach { .. }), "{e}");

    // Same port, new server: the same client reconnects by itself.
    let srv2 = start(Arc::new(TestHandler::default()), limits, &addr.to_string()).await;
    assert_eq!(srv2.addr, addr);
    let second = peer_of(&client).await;
    assert_ne!(first, second, "a new connection was expected");
    srv2.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limits_calls_in_flight() {
    let h = Arc::new(TestHandler::default());
    let srv = start(h.clone(), ServerLimits::default(), "tcp://127.0.0.1:0").await;
    let client = Client::new(
        srv.addr.clone(),
        ClientOpts {
            max_inflight: 4,
            ..ClientOpts::default()
        },
    );
    gated_calls(&client, &h, 4).await;
    srv.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_limits_requests_per_connection() {
    let h = Arc::new(TestHandler::default());
    let limits = ServerLimits {
        max_inflight_per_conn: 2,
        ..ServerLimits::default()
    };
    let srv = start(h.clone(), limits, "tcp://127.0.0.1:0").await;
    let client = Client::new(srv.addr.clone(), ClientOpts::default());
    gated_calls(&client, &h, 2).await;
    srv.shut().await;
}

/// Sends 20 gated calls; checks that exactly `limit` reach the handler
/// before the gate opens, then that all complete.
async fn gated_calls(client: &Client, h: &Arc<TestHandler>, limit: usize) {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = client.clone();
        calls.spawn(async move { c.call(req(GATED, Bytes::new())).await });
    }
    wait_for("the handler to fill up", || {
        h.in_gate.load(Ordering::SeqCst) >= limit
    })
    .await;
    // Give any request beyond the limit a chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.max_in_gate.load(Ordering::SeqCst), limit);
    h.gate.add_permits(20);
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.unwrap().unwrap().status, 0);
    }
    assert_eq!(h.max_in_gate.load(Ordering::SeqCst), limit);
}

/// Collects log output of the current thread's subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn frame_head(kind_reply: bool, opcode: u32, header_len: u32, bulk_len: u32) -> [u8; 40] {
    let h = if kind_reply {
        cart::frame::FrameHeader::reply(opcode, 1, 0, header_len, bulk_len)
    } else {
        cart::frame::FrameHeader::request(opcode, 1, 1000, header_len, bulk_len)
    };
    h.encode()
}

/// Sends `bytes` on a raw socket (then half-closes if asked) and checks the
/// server closes the connection. Returns the socket's own URI.
async fn misbehave(addr: &Addr, bytes: Vec<u8>, half_close: bool) -> String {
    let mut s = TcpStream::connect((addr.host(), addr.port()))
        .await
        .unwrap();
    let me = Addr::tcp(s.local_addr().unwrap()).to_string();
    s.write_all(&bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut sink = Vec::new();
    // EOF or a reset: either way the server closed it.
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "server kept the connection of {me} open");
    me
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_drops_only_that_connection() {
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let limits = ServerLimits {
        max_frame: 1 << 20,
        ..ServerLimits::default()
    };
    let srv = start(
        Arc::new(TestHandler::default()),
        limits,
        "tcp://127.0.0.1:0",
    )
    .await;
    let client = Client::new(srv.addr.clone(), ClientOpts::default());
    let good_peer = peer_of(&client).await;

    // A well-behaved client keeps calling while the others misbehave.
    let c = client.clone();
    let good = tokio::spawn(async move {
        for i in 0..100u32 {
            let r = c
                .call(Request::new(
                    ECHO,
                    Bytes::copy_from_slice(&i.to_le_bytes()),
                    Bytes::from(vec![i as u8; 1000]),
                    Duration::from_secs(30),
                ))
                .await
                .unwrap();
            assert_eq!(&r.header[..], &i.to_le_bytes());
        }
    });

    let mut random = vec![0u8; 4096];
    rand::thread_rng().fill(&mut random[..]);
    random[0] = 0xff;
    let mut truncated = frame_head(false, ECHO, 100, 0).to_vec();
    truncated.extend_from_slice(&[1; 10]);
    let oversize = frame_head(false, ECHO, 0, 1 << 20).to_vec();
    let mut bad_crc = frame_head(false, ECHO, 0, 0);
    bad_crc[12] ^= 0x40;
    let reply_kind = frame_head(true, ECHO, 0, 0).to_vec();
    let cases = [
        ("random bytes", random, false, "bad magic"),
        ("truncated frame", truncated, true, "truncated"),
        ("oversize length", oversize, false, "exceeds the limit"),
        ("bad crc", bad_crc.to_vec(), false, "CRC"),
        ("reply to a server", reply_kind, false, "reply frame"),
    ];
    for (what, bytes, half_close, problem) in cases {
        let me = misbehave(&srv.addr, bytes, half_close).await;
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(&me))
            .unwrap_or_else(|| panic!("{what}: no log line names {me}:\n{text}"));
        assert!(line.contains("WARN"), "{what}: {line}");
        assert!(line.contains(problem), "{what}: {line}");
    }

    good.await.unwrap();
    // The good connection was never dropped.
    assert_eq!(peer_of(&client).await, good_peer);
    // Unknown opcodes are the handler's to answer.
    let e = client
        .call(req(0xdead, Bytes::new()))
        .await
        .unwrap()
        .into_result()
        .unwrap_err();
    assert_eq!(e.der, Der::NOSYS);
    assert!(e.msg.contains("0xdead"), "{}", e.msg);
    srv.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_an_error_reply() {
    let srv = start(
        Arc::new(TestHandler::default()),
        ServerLimits::default(),
        "tcp://127.0.0.1:0",
    )
    .await;
    let client = Client::new(srv.addr.clone(), ClientOpts::default());
    let before = peer_of(&client).await;
    let e = client
        .call(req(PANIC, Bytes::new()))
        .await
        .unwrap()
        .into_result()
        .unwrap_err();
    assert_eq!(e.der, Der::MISC);
    assert_eq!(peer_of(&client).await, before);
    srv.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_are_refused() {
    let srv = start(
        Arc::new(TestHandler::default()),
        ServerLimits {
            max_frame: 4096,
            ..ServerLimits::default()
        },
        "tcp://127.0.0.1:0",
    )
    .await;
    // Refused by the client itself: nothing is sent.
    let small = Client::new(
        srv.addr.clone(),
        ClientOpts {
            max_frame: 1024,
            ..ClientOpts::default()
        },
    );
    let e = small
        .call(Request::new(
            ECHO,
            Bytes::new(),
            Bytes::from(vec![0; 2000]),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, CartError::TooBig { .. }), "{e}");
    assert_eq!(e.to_daos().der, Der::OVERFLOW);
    // Refused by the server: it drops the connection; the client reconnects.
    let big = Client::new(srv.addr.clone(), ClientOpts::default());
    let e = big
        .call(Request::new(
            ECHO,
            Bytes::new(),
            Bytes::from(vec![0; 8000]),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, CartError::Unreach { .. }), "{e}");
    peer_of(&big).await;
    srv.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_cancels_calls() {
    let srv = start(
        Arc::new(TestHandler::default()),
        ServerLimits::default(),
        "tcp://127.0.0.1:0",
    )
    .await;
    let client = Client::new(srv.addr.clone(), ClientOpts::default());
    peer_of(&client).await;
    let c = client.clone();
    let inflight = tokio::spawn(async move { c.call(slow(60_000, Duration::from_secs(90))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.close().await;
    let e = inflight.await.unwrap().unwrap_err();
    assert!(matches!(e, CartError::Canceled { .. }), "{e}");
    assert_eq!(e.to_daos().der, Der::CANCELED);
    let e = client.call(req(PEER, Bytes::new())).await.unwrap_err();
    assert!(matches!(e, CartError::Canceled { .. }), "{e}");
    srv.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cache_and_ofi_uris() {
    let srv = start(
        Arc::new(TestHandler::default()),
        ServerLimits::default(),
        "tcp://127.0.0.1:0",
    )
    .await;
    let clients = Clients::new(ClientOpts::default());
    let uri = srv.addr.to_string();
    let a = clients.get(&uri).unwrap();
    let b = clients.get(&uri).unwrap();
    assert_eq!(clients.len(), 1);
    // Clones of one client share its connection.
    assert_eq!(peer_of(&a).await, peer_of(&b).await);
    assert!(matches!(
        clients.get("udp://1.2.3.4:5"),
        Err(CartError::Addr { .. })
    ));

    for uri in ["ofi+tcp://127.0.0.1:20000", "ofi+verbs://10.0.0.1:31416"] {
        let c = clients.get(uri).unwrap();
        let e = c.call(req(PEER, Bytes::new())).await.unwrap_err();
        assert!(matches!(e, CartError::NoProvider { .. }), "{e}");
        assert!(e.to_string().contains("libfabric"), "{e}");
        assert!(e.to_string().contains(uri), "{e}");
        let e = cart::bind(&Addr::parse(uri).unwrap()).await.err().unwrap();
        assert!(matches!(e, CartError::NoProvider { .. }), "{e}");
    }
    assert!(clients.remove(&uri).is_some());
    assert_eq!(clients.len(), 2);
    srv.shut().await;
}
