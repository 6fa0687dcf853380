//! Calls from this engine to other engines over cart (DTX, pool service
//! fan-out), addressed by rank through the pool's map.

use std::time::Duration;

use bytes::Bytes;
use proto::DaosError;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::rpc::{decode, enc};

/// How long a call between engines may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// One call to `rank` of `pool` with a bulk payload.
pub async fn call_bulk<Req: prost::Message, Resp: prost::Message + Default>(
    e: &Engine,
    pool: &str,
    rank: u32,
    opcode: u32,
    req: &Req,
    bulk: Bytes,
) -> Result<Resp> {
    let uri = e.rank_uri(pool, rank)?;
    let client = e
        .clients()
        .get(&uri)
        .map_err(|err| Error::Daos(err.to_daos()))?;
    let reply = client
        .call(cart::Request {
            opcode,
            header: enc(req),
            bulk,
            timeout: PEER_TIMEOUT,
        })
        .await
        .map_err(|err| {
            let d = err.to_daos();
            Error::Daos(DaosError::new(d.der, format!("rank {rank}: {}", d.msg)))
        })?;
    let (h, _) = reply.into_result()?;
    decode(h, "peer reply")
}

/// One call to `rank` of `pool`.
pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
    e: &Engine,
    pool: &str,
    rank: u32,
    opcode: u32,
    req: &Req,
) -> Result<Resp> {
    call_bulk(e, pool, rank, opcode, req, Bytes::new()).await
}
