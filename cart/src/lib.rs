//! The data-plane RPC transport (CaRT) between libdaos and daos_engine, and
//! between engines: many requests in flight per connection, each a small
//! encoded header (a prost message the caller encodes; opaque here) plus raw
//! bulk bytes that are carried beside it and never re-encoded.
//!
//! - [`Client`]: calls one peer address over one connection at a time, with
//!   a per-call timeout ([`CartError::Timedout`], `DER_TIMEDOUT`), a bound on
//!   calls in flight, and a lazy reconnect after the connection breaks
//!   (calls in flight then fail with [`CartError::Unreach`], `DER_UNREACH`;
//!   retrying is the caller's decision). [`Clients`] caches one per address.
//! - [`bind`] and [`serve`]: run a [`Handler`] for each request as its own
//!   task under [`ServerLimits`]; a misbehaving peer loses its connection and
//!   nothing else.
//! - [`frame`]: the wire format, documented there.
//! - [`transport`]: the boundary a network provider implements; TCP is built
//!   in (`tcp://host:port`, over a local Unix socket between peers on one
//!   node), `ofi+<provider>://` URIs fail with
//!   [`CartError::NoProvider`] as no libfabric provider exists (the `ofi`
//!   feature is reserved for one).
//!
//! Invariant: memory is bounded under load by back-pressure (slots and
//! socket flow control), never by unbounded queues, and nothing a peer sends
//! can panic this crate.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use cart::{Addr, Bytes, Client, ClientOpts, Incoming, Reply, Request, ServerLimits};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = cart::bind(&Addr::parse("tcp://127.0.0.1:0")?).await?;
//! let addr = listener.local_addr().clone();
//! let stop = CancellationToken::new();
//! let echo = |req: Incoming| async move { Reply::ok(req.header, req.bulk) };
//! let server = tokio::spawn(cart::serve(listener, Arc::new(echo), ServerLimits::default(), stop.clone()));
//!
//! let client = Client::new(addr, ClientOpts::default());
//! let req = Request::new(7, Bytes::from_static(b"hdr"), Bytes::from(vec![0u8; 1 << 20]), Duration::from_secs(5));
//! let (header, bulk) = client.call(req).await?.into_result()?;
//! assert_eq!((&header[..], bulk.len()), (&b"hdr"[..], 1 << 20));
//!
//! stop.cancel();
//! server.await?;
//! # Ok(()) }
//! ```
//!
//! Dependency rule: depends on `proto` only (plus external crates).

mod addr;
mod client;
mod error;
pub mod frame;
mod server;
pub mod transport;

use std::time::Duration;

pub use addr::{Addr, Scheme};
pub use bytes::Bytes;
pub use client::{Client, ClientOpts, Clients};
pub use error::CartError;
pub use server::{bind, serve, Handler, Incoming, Listener, ServerLimits};

use proto::{DaosError, Der};

/// The default frame limit: 64 MiB of bulk plus room for the header.
pub const DEFAULT_MAX_FRAME: u32 = (64 << 20) + (64 << 10);

/// Upper clamp of the in-flight and connection limits, so a careless
/// configuration cannot ask for absurd semaphores.
const MAX_INFLIGHT_CAP: usize = 1 << 20;

/// A call to make.
#[derive(Debug, Clone)]
pub struct Request {
    pub opcode: u32,
    /// The encoded header (a prost message).
    pub header: Bytes,
    /// Raw bulk data, sent as is.
    pub bulk: Bytes,
    /// How long the whole call may take.
    pub timeout: Duration,
}

impl Request {
    pub fn new(opcode: u32, header: Bytes, bulk: Bytes, timeout: Duration) -> Request {
        Request {
            opcode,
            header,
            bulk,
            timeout,
        }
    }
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 0 for success, else a negative DER code.
    pub status: i32,
    /// On success the encoded reply header; on error a UTF-8 message.
    pub header: Bytes,
    pub bulk: Bytes,
}

impl Reply {
    /// A successful reply.
    pub fn ok(header: Bytes, bulk: Bytes) -> Reply {
        Reply {
            status: 0,
            header,
            bulk,
        }
    }

    /// A failed reply carrying `e`'s code and message.
    pub fn err(e: &DaosError) -> Reply {
        Reply {
            status: e.der.code(),
            header: Bytes::from(e.msg.clone().into_bytes()),
            bulk: Bytes::new(),
        }
    }

    /// The header and bulk of a successful reply, or the error it carries.
    /// A code this side does not know becomes `DER_MISC` with the raw code
    /// in the message.
    pub fn into_result(self) -> Result<(Bytes, Bytes), DaosError> {
        if self.status == 0 {
            return Ok((self.header, self.bulk));
        }
        let msg = String::from_utf8_lossy(&self.header).into_owned();
        Err(match Der::from_code(self.status) {
            Some(der) => DaosError::new(der, msg),
            None => DaosError::new(Der::MISC, format!("status {}: {msg}", self.status)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_results() {
        let ok = Reply::ok(Bytes::from_static(b"h"), Bytes::from_static(b"b"));
        assert_eq!(
            ok.into_result().unwrap(),
            (Bytes::from_static(b"h"), Bytes::from_static(b"b"))
        );
        let e = DaosError::new(Der::NONEXIST, "pool \"tank\": no such container");
        let r = Reply::err(&e);
        assert_eq!(r.status, -1005);
        assert_eq!(r.into_result().unwrap_err(), e);
        let odd = Reply {
            status: -77,
            header: Bytes::from_static(b"what"),
            bulk: Bytes::new(),
        };
        let e = odd.into_result().unwrap_err();
        assert_eq!(e.der, Der::MISC);
        assert_eq!(e.msg, "status -77: what");
    }

    #[test]
    fn errors_map_to_der() {
        let e = CartError::Timedout {
            addr: "tcp://127.0.0.1:1".into(),
            opcode: 0x10,
            timeout: Duration::from_millis(250),
        };
        assert_eq!(e.to_daos().der, Der::TIMEDOUT);
        assert_eq!(
            e.to_string(),
            "tcp://127.0.0.1:1: opcode 0x10: no reply within 250ms"
        );
        let e = CartError::Unreach {
            addr: "tcp://h:1".into(),
            reason: "connection closed by peer".into(),
        };
        assert_eq!(e.to_daos().der, Der::UNREACH);
        assert_eq!(
            CartError::Canceled { addr: "x".into() }.der(),
            Der::CANCELED
        );
        let ofi = Addr::parse("ofi+verbs://10.0.0.1:31416").unwrap();
        let e = transport::no_provider(&ofi);
        assert_eq!(e.der(), Der::NOSYS);
        assert!(e.to_string().contains("libfabric"), "{e}");
    }
}
