//! The management service (MS): system membership and pools, replicated with raft
//! (openraft) over the configured replicas.
//!
//! Writes go through [`Ms::write`], which returns only once the command is committed
//! by a majority and applied. Reads go through [`Ms::read`], which first confirms
//! leadership (a linearizable read), so a deposed leader never answers with stale
//! state. Non-leaders answer `DER_NOTLEADER` naming the leader.

mod network;
pub mod state;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft};
use proto::{DaosError, Der};

use state::{MsCmd, MsResp, SystemDb};
use store::{LogStore, StateMachine};

openraft::declare_raft_types!(
    /// Raft types of the management service.
    pub TypeConfig:
        D = MsCmd,
        R = MsResp,
);

/// A running management service replica.
pub struct Ms {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    node_id: u64,
    replicas: Vec<String>,
}

impl Ms {
    /// Starts replica `node_id` of `replicas` with its state in `dir`; the first start
    /// of a fresh replica initialises the group.
    pub async fn start(
        dir: &Path,
        node_id: u64,
        replicas: Vec<String>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Arc<Ms>, DaosError> {
        let ioerr = |e: std::io::Error| {
            DaosError::new(
                Der::IO,
                format!("management service state in {}: {e}", dir.display()),
            )
        };
        let d = dir.to_path_buf();
        let (log, sm) = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((LogStore::open(&d)?, StateMachine::open(&d)?))
        })
        .await
        .map_err(|e| DaosError::new(Der::MISC, format!("opening management service state: {e}")))?
        .map_err(ioerr)?;
        let config = Config {
            cluster_name: "daos_mgmt".into(),
            heartbeat_interval: 250,
            election_timeout_min: 800,
            election_timeout_max: 1600,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| DaosError::new(Der::INVAL, format!("raft config: {e}")))?,
        );
        let raft = Raft::new(node_id, config, network::Network::new(tls), log, sm.clone())
            .await
            .map_err(|e| DaosError::new(Der::MISC, format!("starting raft: {e}")))?;
        let ms = Arc::new(Ms {
            raft,
            sm,
            node_id,
            replicas,
        });
        let initialized = ms
            .raft
            .is_initialized()
            .await
            .map_err(|e| DaosError::new(Der::MISC, format!("raft: {e}")))?;
        if !initialized {
            let members: BTreeMap<u64, BasicNode> = ms
                .replicas
                .iter()
                .enumerate()
                .map(|(i, a)| (i as u64, BasicNode::new(a.clone())))
                .collect();
            tracing::info!(
                "management service: initialising raft group over {:?}",
                ms.replicas
            );
            if let Err(e) = ms.raft.initialize(members).await {
                // Another replica may have initialised the group first; that is fine.
                tracing::info!("management service: initialise: {e}");
            }
        }
        Ok(ms)
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// This replica's address.
    pub fn self_addr(&self) -> &str {
        self.replicas
            .get(self.node_id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// The leader's address, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader
            .and_then(|id| self.replicas.get(id as usize).cloned())
    }

    /// Replicas that lack committed entries, as the leader sees them (a replica
    /// that is down falls behind at once). Empty when this replica is not leader.
    pub fn lagging_replicas(&self) -> Vec<String> {
        let m = self.raft.metrics().borrow().clone();
        let committed = m.last_applied.map(|l| l.index);
        let Some(repl) = m.replication else {
            return Vec::new();
        };
        repl.iter()
            .filter(|(_, matched)| matched.map(|l| l.index) < committed)
            .filter_map(|(id, _)| self.replicas.get(*id as usize).cloned())
            .collect()
    }

    /// Waits (up to `timeout`) until some replica is known to lead; its address.
    pub async fn known_leader(&self, timeout: Duration) -> Option<String> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader_addr() {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    fn not_leader(&self) -> DaosError {
        match self.leader_addr() {
            Some(l) => DaosError::new(
                Der::NOTLEADER,
                format!("this server is not the management service leader; leader: {l}"),
            ),
            None => DaosError::new(
                Der::NOTLEADER,
                "the management service has no leader yet; retry shortly",
            ),
        }
    }

    /// Waits (up to `timeout`) until this replica leads and has applied everything
    /// it committed; fails with `DER_NOTLEADER` when another replica leads.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<(), DaosError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let known_other = self.leader_addr().is_some_and(|l| l != self.self_addr());
                    if known_other || tokio::time::Instant::now() >= deadline {
                        tracing::debug!("not leader: {e}");
                        return Err(self.not_leader());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// A linearizable read of the state.
    pub async fn read<T>(&self, f: impl FnOnce(&SystemDb) -> T) -> Result<T, DaosError> {
        self.wait_leader(Duration::from_secs(5)).await?;
        Ok(self.sm.read(f))
    }

    /// Commits `cmd` and returns its result; a rejected command changes nothing.
    pub async fn write(&self, cmd: MsCmd) -> Result<MsResp, DaosError> {
        self.wait_leader(Duration::from_secs(5)).await?;
        match self.raft.client_write(cmd).await {
            Ok(r) => match r.data {
                MsResp::Err { code, msg } => Err(DaosError::new(
                    Der::from_code(code).unwrap_or(Der::MISC),
                    msg,
                )),
                other => Ok(other),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(e) => Err(DaosError::new(
                Der::MISC,
                format!("management service write failed: {e}"),
            )),
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
