//! rdb: a replicated database (DAOS's src/rdb + src/rsvc): a state machine
//! replicated with raft (openraft) over a small set of replicas.
//!
//! An embedder supplies the state ([`Db`]: deterministic `apply` of commands) and
//! the way messages reach other replicas ([`Transport`]: opaque bytes to an
//! address, reply bytes back; the receiving side hands them to [`Rdb::handle`]).
//! The management service uses it over gRPC, the pool service over CaRT.
//!
//! Invariants:
//! - [`Rdb::write`] returns only once the command is committed by a majority and
//!   applied here; its log record was `fdatasync`ed on each replica that counted
//!   towards the majority before that replica acknowledged it (module `log`).
//! - [`Rdb::read`] first confirms leadership with a quorum and waits until
//!   everything committed before it is applied (a linearizable read), so a deposed
//!   leader never answers with stale state: it fails with `DER_NOTLEADER`, naming
//!   the leader when one is known (`...; leader: <addr>`).
//! - A replica's directory holds everything it acknowledged; reopening it after
//!   a crash restores the same state (snapshot, then the committed log after it).
//!
//! Dependency rule: depends on `proto` only (errors, durable file writes).

mod layout;
mod log;
mod network;
mod sm;
#[cfg(test)]
mod testdb;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftMetrics;
use openraft::{BasicNode, ChangeMembers, Config, Raft};
use proto::{DaosError, Der};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

pub use types::RdbTypes;

/// The replicated state. `apply` must be deterministic: the same commands in the
/// same order give the same state and responses on every replica (no clocks, no
/// randomness, no I/O: ids and times travel inside the command).
pub trait Db: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// A change to the state, as it sits in the log.
    type Cmd: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// The outcome of applying one command. `Default` is the response raft's own
    /// entries (the blank entry a new leader commits, membership changes) apply
    /// to; nobody waits for it.
    type Resp: Serialize + DeserializeOwned + Clone + Debug + Default + Send + Sync + 'static;

    /// Applies `cmd`. A command the state rejects should change nothing and say
    /// so in its response (see [`Db::resp_error`]).
    fn apply(&mut self, cmd: Self::Cmd) -> Self::Resp;

    /// The error a response stands for, if it is one: [`Rdb::write`] returns it
    /// as `Err`. By default no response is an error.
    fn resp_error(_resp: &Self::Resp) -> Option<DaosError> {
        None
    }
}

/// The three raft RPCs a replica sends to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// Why a message got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Not delivered: the replica is down, cut off or refused the connection.
    /// Raft backs off (500 ms) before sending to it again.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No reply within the timeout the call was given.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// Delivered, or maybe delivered, but the reply was lost or unusable (for
    /// example the receiving side failed in [`Rdb::handle`]).
    #[error("{0}")]
    Failed(String),
}

/// How raft messages reach another replica. Payloads are opaque bytes: the
/// receiving side passes them, with the kind, to that replica's [`Rdb::handle`]
/// and returns what it returns. Calls to one replica may run concurrently.
pub trait Transport: Send + Sync + 'static {
    /// Sends `payload` to the replica at `addr` and returns its reply; gives up
    /// after `timeout` with [`TransportError::Timeout`].
    fn call(
        &self,
        addr: &str,
        rpc: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Tuning and naming of one replicated database.
#[derive(Debug, Clone)]
pub struct RdbOpts {
    /// The service's name in logs and errors: "management service", "pool service".
    pub name: String,
    /// What a replica is, for a `DER_NOTLEADER` message: "this server is not the
    /// management service leader; leader: host:port".
    pub replica_noun: String,
    /// openraft's cluster name (shows in its own logs and metrics).
    pub cluster: String,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A snapshot is taken after this many entries have been applied since the last one.
    pub snapshot_after: u64,
    /// Applied entries kept in the log behind a snapshot, so that a replica a little
    /// behind catches up from the log rather than by a whole snapshot.
    pub log_kept_after_snapshot: u64,
    /// How long one snapshot chunk (up to 3 MiB) may take to reach a replica and
    /// be acknowledged; raise it for a large database on a slow network.
    pub install_snapshot_timeout: Duration,
    /// How long [`Rdb::read`] and [`Rdb::write`] wait for a leader to be elected
    /// before failing with `DER_NOTLEADER`.
    pub leader_wait: Duration,
    /// Whether a fresh replica initialises the group with the replicas it is
    /// given (every replica of a new group does). False for a replica about to be
    /// added to a running group by [`Rdb::change_replicas`]: it waits to hear from
    /// the leader instead, never standing for election on its own.
    pub bootstrap: bool,
}

impl RdbOpts {
    /// Defaults suited to a few replicas on one network, named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        RdbOpts {
            name: name.into(),
            replica_noun: "replica".into(),
            cluster: "rdb".into(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(800),
            election_timeout_max: Duration::from_millis(1600),
            snapshot_after: 500,
            log_kept_after_snapshot: 100,
            install_snapshot_timeout: Duration::from_millis(200),
            leader_wait: Duration::from_secs(5),
            bootstrap: true,
        }
    }
}

/// What a replica knows of its group's leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdbStatus {
    /// The raft term this replica is in.
    pub term: u64,
    /// The leader of that term, if known.
    pub leader: Option<u64>,
    /// This replica believes it leads (reads still confirm it with a quorum).
    pub is_leader: bool,
}

/// A running replica of a replicated database over `D`, talking through `T`.
pub struct Rdb<D: Db, T: Transport> {
    raft: Raft<RdbTypes<D>>,
    sm: sm::StateMachine<D>,
    node_id: u64,
    /// The replicas named at start; the membership in the log takes precedence.
    initial: BTreeMap<u64, String>,
    self_addr: String,
    opts: RdbOpts,
    transport: Arc<T>,
    status: watch::Receiver<RdbStatus>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<D: Db, T: Transport> Rdb<D, T> {
    /// Opens (or creates) the replica state in `dir` and starts replica `node_id`
    /// of `replicas` (node id -> address; ids are the embedder's: an index, a
    /// rank). The first start of a fresh group initialises it with `replicas` as
    /// members; that is idempotent, so every replica may do it. A replica with
    /// state already in `dir` keeps the membership its log holds.
    ///
    /// Errors: `DER_INVAL` when `node_id` is not in `replicas`, `DER_BUSY` when
    /// another replica (in this process or another) has `dir` open, `DER_IO` when
    /// the state cannot be read or is corrupt.
    pub async fn start(
        dir: &Path,
        node_id: u64,
        replicas: BTreeMap<u64, String>,
        transport: T,
        opts: RdbOpts,
    ) -> Result<Arc<Self>, DaosError> {
        let name = opts.name.clone();
        let self_addr = replicas.get(&node_id).cloned().ok_or_else(|| {
            DaosError::new(
                Der::INVAL,
                format!("{name}: replica {node_id} is not one of {replicas:?}"),
            )
        })?;
        let d = dir.to_path_buf();
        let (log, sm) = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((log::LogStore::open(&d)?, sm::StateMachine::open(&d)?))
        })
        .await
        .map_err(|e| DaosError::new(Der::MISC, format!("opening {name} state: {e}")))?
        .map_err(|e| {
            let der = if e.kind() == std::io::ErrorKind::ResourceBusy {
                Der::BUSY
            } else {
                Der::IO
            };
            DaosError::new(der, format!("{name} state in {}: {e}", dir.display()))
        })?;
        let config = Config {
            cluster_name: opts.cluster.clone(),
            heartbeat_interval: ms(opts.heartbeat_interval),
            election_timeout_min: ms(opts.election_timeout_min),
            election_timeout_max: ms(opts.election_timeout_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(opts.snapshot_after),
            max_in_snapshot_log_to_keep: opts.log_kept_after_snapshot,
            install_snapshot_timeout: ms(opts.install_snapshot_timeout),
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| DaosError::new(Der::INVAL, format!("{name}: raft config: {e}")))?,
        );
        let transport = Arc::new(transport);
        let net = network::Network::new(node_id, transport.clone());
        let raft = Raft::new(node_id, config, net, log, sm.clone())
            .await
            .map_err(|e| DaosError::new(Der::MISC, format!("{name}: starting raft: {e}")))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| DaosError::new(Der::MISC, format!("{name}: raft: {e}")))?;
        if !initialized && opts.bootstrap {
            let members: BTreeMap<u64, BasicNode> = replicas
                .iter()
                .map(|(id, a)| (*id, BasicNode::new(a.clone())))
                .collect();
            tracing::info!("{name}: initialising raft group over {replicas:?}");
            if let Err(e) = raft.initialize(members).await {
                // Another replica may have initialised the group first; that is fine.
                tracing::info!("{name}: initialise: {e}");
            }
        }
        let status = watch_status(&raft, node_id, &replicas, &name);
        Ok(Arc::new(Rdb {
            raft,
            sm,
            node_id,
            initial: replicas,
            self_addr,
            opts,
            transport,
            status,
        }))
    }

    /// The receiving side: the service that got a raft RPC for this replica hands
    /// it here and returns the reply bytes to the sender. Fails only when the
    /// payload does not decode (`DER_PROTO`); raft's own refusals travel inside
    /// the reply.
    pub async fn handle(&self, rpc: RpcKind, payload: &[u8]) -> Result<Vec<u8>, DaosError> {
        let name = &self.opts.name;
        let bad = |e: serde_json::Error| {
            DaosError::new(
                Der::PROTO,
                format!("{name}: {rpc:?} message does not decode: {e}"),
            )
        };
        let reply = match rpc {
            RpcKind::AppendEntries => {
                let req = serde_json::from_slice(payload).map_err(bad)?;
                serde_json::to_vec(&self.raft.append_entries(req).await)
            }
            RpcKind::Vote => {
                let req = serde_json::from_slice(payload).map_err(bad)?;
                serde_json::to_vec(&self.raft.vote(req).await)
            }
            RpcKind::InstallSnapshot => {
                let req = serde_json::from_slice(payload).map_err(bad)?;
                serde_json::to_vec(&self.raft.install_snapshot(req).await)
            }
        };
        reply.map_err(|e| DaosError::new(Der::MISC, format!("{name}: encoding {rpc:?} reply: {e}")))
    }

    /// Reads this replica's own applied state, without asking the leader: it may
    /// lag behind what the group committed. For diagnostics and for followers
    /// that knowingly serve possibly stale data; services answer with [`Rdb::read`].
    pub fn read_local<R>(&self, f: impl FnOnce(&D) -> R) -> R {
        self.sm.read(f)
    }

    /// A linearizable read of the state: `f` sees every write that completed
    /// before this call. Fails with `DER_NOTLEADER` on a replica that is not (or
    /// no longer) the leader.
    pub async fn read<R>(&self, f: impl FnOnce(&D) -> R) -> Result<R, DaosError> {
        self.wait_leader(self.opts.leader_wait).await?;
        Ok(self.sm.read(f))
    }

    /// Commits `cmd` and returns its response once applied here. A response that
    /// [`Db::resp_error`] calls an error comes back as `Err`. Fails with
    /// `DER_NOTLEADER` when this replica does not lead; dropping the future does
    /// not withdraw a command already proposed.
    pub async fn write(&self, cmd: D::Cmd) -> Result<D::Resp, DaosError> {
        self.wait_leader(self.opts.leader_wait).await?;
        match self.raft.client_write(cmd).await {
            Ok(r) => match D::resp_error(&r.data) {
                Some(e) => Err(e),
                None => Ok(r.data),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(RaftError::Fatal(f)) => Err(self.stopped(&f)),
            Err(e) => Err(DaosError::new(
                Der::MISC,
                format!("{} write failed: {e}", self.opts.name),
            )),
        }
    }

    /// Waits (up to `timeout`) until this replica leads, confirmed by a quorum,
    /// and has applied everything committed; fails with `DER_NOTLEADER` at once
    /// when another replica is known to lead, or when `timeout` passes.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<(), DaosError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::Fatal(f)) => return Err(self.stopped(&f)),
                Err(e) => {
                    let known_other = self.leader().is_some_and(|(id, _)| id != self.node_id);
                    if known_other || tokio::time::Instant::now() >= deadline {
                        tracing::debug!("{}: not leader: {e}", self.opts.name);
                        return Err(self.not_leader());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The leader (id, address) as this replica last heard, without asking anyone.
    pub fn leader(&self) -> Option<(u64, String)> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let id = m.current_leader?;
        self.addr_in(&m, id).map(|a| (id, a))
    }

    /// Waits (up to `timeout`) until some replica is known to lead.
    pub async fn known_leader(&self, timeout: Duration) -> Option<(u64, String)> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Replicas that lack committed entries, as the leader sees them (a replica
    /// that is down falls behind at once). Empty when this replica is not leader.
    pub fn lagging_replicas(&self) -> Vec<(u64, String)> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let committed = m.last_applied.map(|l| l.index);
        let Some(repl) = &m.replication else {
            return Vec::new();
        };
        repl.iter()
            .filter(|(_, matched)| matched.map(|l| l.index) < committed)
            .filter_map(|(id, _)| self.addr_in(&m, *id).map(|a| (*id, a)))
            .collect()
    }

    /// This replica's node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// This replica's address.
    pub fn self_addr(&self) -> &str {
        &self.self_addr
    }

    /// The voting replicas (id -> address) of the current membership.
    pub fn replicas(&self) -> BTreeMap<u64, String> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let mem = m.membership_config.membership();
        let voters: BTreeMap<u64, String> = mem
            .voter_ids()
            .filter_map(|id| self.addr_in(&m, id).map(|a| (id, a)))
            .collect();
        if voters.is_empty() {
            self.initial.clone()
        } else {
            voters
        }
    }

    /// Leadership as this replica knows it now.
    pub fn status(&self) -> RdbStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of [`Rdb::status`] (for example to step
    /// up as a service leader); it closes when the replica stops.
    pub fn subscribe(&self) -> watch::Receiver<RdbStatus> {
        self.status.clone()
    }

    /// The transport this replica sends with.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Makes `replicas` the group's voters: new ones are added as learners and
    /// caught up first, then one joint-consensus change installs the new set and
    /// drops the replicas not in it. Runs on the leader only (`DER_NOTLEADER`).
    pub async fn change_replicas(&self, replicas: BTreeMap<u64, String>) -> Result<(), DaosError> {
        if replicas.is_empty() {
            return Err(DaosError::new(
                Der::INVAL,
                format!("{}: a group needs at least one replica", self.opts.name),
            ));
        }
        self.wait_leader(self.opts.leader_wait).await?;
        let current = self.replicas();
        for (id, addr) in &replicas {
            if current.get(id) == Some(addr) {
                continue;
            }
            tracing::info!("{}: adding replica {id} ({addr})", self.opts.name);
            self.raft
                .add_learner(*id, BasicNode::new(addr.clone()), true)
                .await
                .map_err(|e| self.change_error(e))?;
        }
        let ids: BTreeSet<u64> = replicas.keys().copied().collect();
        if ids != current.keys().copied().collect::<BTreeSet<u64>>() {
            tracing::info!("{}: replicas become {replicas:?}", self.opts.name);
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(ids), false)
                .await
                .map_err(|e| self.change_error(e))?;
        }
        Ok(())
    }

    /// Stops this replica's raft node; its directory stays as it is. Call it
    /// before dropping the last handle and before reopening the directory.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("{}: raft shutdown: {e}", self.opts.name);
        }
    }

    /// Removes a stopped replica's files (pool destroy); see [`destroy`].
    pub fn destroy(dir: &Path) -> std::io::Result<()> {
        destroy(dir)
    }

    fn addr_in(&self, m: &RaftMetrics<u64, BasicNode>, id: u64) -> Option<String> {
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.initial.get(&id).cloned())
    }

    fn not_leader(&self) -> DaosError {
        let name = &self.opts.name;
        match self.leader().filter(|(id, _)| *id != self.node_id) {
            Some((_, l)) => DaosError::new(
                Der::NOTLEADER,
                format!(
                    "this {} is not the {name} leader; leader: {l}",
                    self.opts.replica_noun
                ),
            ),
            None => DaosError::new(
                Der::NOTLEADER,
                format!("the {name} has no leader yet; retry shortly"),
            ),
        }
    }

    fn stopped(&self, f: &impl std::fmt::Display) -> DaosError {
        DaosError::new(
            Der::SHUTDOWN,
            format!("{} replica stopped: {f}", self.opts.name),
        )
    }

    fn change_error(&self, e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> DaosError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => DaosError::new(
                Der::BUSY,
                format!("{}: changing replicas: {c}", self.opts.name),
            ),
            RaftError::Fatal(f) => self.stopped(&f),
        }
    }
}

/// Removes a stopped replica's files from `dir` (the log, the snapshot, the
/// lock file and their temporaries), and `dir` itself when that leaves it empty.
/// A missing `dir` is not an error. Fails (`ResourceBusy`) while a replica
/// still has `dir` open. Blocks.
pub fn destroy(dir: &Path) -> std::io::Result<()> {
    use layout::{LOCK_FILE, LOG_FILE, SNAP_FILE};
    if !dir.exists() {
        return Ok(());
    }
    // Held until the files are gone: no replica opens the directory meanwhile.
    let _lock = log::lock_dir(dir)?;
    for name in [LOG_FILE, SNAP_FILE, LOCK_FILE]
        .into_iter()
        .flat_map(|n| [n.to_string(), format!("{n}.tmp")])
    {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    proto::durable::fsync_dir(dir)?;
    match std::fs::remove_dir(dir) {
        Ok(()) => match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => proto::durable::fsync_dir(p),
            _ => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(e) => Err(e),
    }
}

/// Follows raft's metrics into an [`RdbStatus`] channel, logging leader changes.
/// Ends when the raft node stops.
fn watch_status<D: Db>(
    raft: &Raft<RdbTypes<D>>,
    node_id: u64,
    replicas: &BTreeMap<u64, String>,
    name: &str,
) -> watch::Receiver<RdbStatus> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(RdbStatus::default());
    let (name, replicas) = (name.to_string(), replicas.clone());
    tokio::spawn(async move {
        loop {
            let s = {
                let m = metrics.borrow_and_update();
                RdbStatus {
                    term: m.current_term,
                    leader: m.current_leader,
                    is_leader: m.current_leader == Some(node_id),
                }
            };
            let changed_leader = tx.borrow().leader != s.leader;
            if changed_leader {
                match s.leader {
                    Some(l) if l == node_id => {
                        tracing::info!("{name}: this replica ({l}) leads, term {}", s.term)
                    }
                    Some(l) => tracing::info!(
                        "{name}: replica {l} ({}) leads, term {}",
                        replicas.get(&l).map(String::as_str).unwrap_or("?"),
                        s.term
                    ),
                    None => tracing::info!("{name}: no leader in term {}", s.term),
                }
            }
            tx.send_if_modified(|cur| {
                let modified = *cur != s;
                *cur = s;
                modified
            });
            if metrics.changed().await.is_err() {
                break;
            }
        }
    });
    rx
}
