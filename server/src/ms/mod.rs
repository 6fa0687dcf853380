//! The management service (MS): system membership and pools ([`SystemDb`]),
//! replicated with [`rdb`] over the configured replicas. A replica's node id is
//! its index in the `mgmt_svc_replicas` list; raft messages travel over the
//! `MgmtRaft` gRPC service ([`GrpcTransport`] sends, `crate::peer` receives and
//! hands them to [`rdb::Rdb::handle`]).
//!
//! Writes ([`Ms::write`]) return only once committed by a majority and applied.
//! Reads ([`Ms::read`]) first confirm leadership (a linearizable read), so a
//! deposed leader never answers with stale state. Non-leaders answer
//! `DER_NOTLEADER` naming the leader (`...; leader: host:port`), which dmg and
//! `Server::ms_write` follow.

mod network;
pub mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proto::DaosError;
use rdb::{Rdb, RdbOpts};

pub use network::GrpcTransport;
use state::SystemDb;

/// A running management service replica.
pub type Ms = Rdb<SystemDb, GrpcTransport>;

/// Starts replica `node_id` (an index into `replicas`) with its state in `dir`;
/// the first start of a fresh replica initialises the group.
pub async fn start(
    dir: &Path,
    node_id: usize,
    replicas: Vec<String>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Arc<Ms>, DaosError> {
    let replicas: BTreeMap<u64, String> = replicas
        .into_iter()
        .enumerate()
        .map(|(i, a)| (i as u64, a))
        .collect();
    let mut opts = RdbOpts::new("management service");
    opts.replica_noun = "server".into();
    opts.cluster = "daos_mgmt".into();
    Rdb::start(dir, node_id as u64, replicas, GrpcTransport::new(tls), opts).await
}
