//! Engine supervision: start each configured engine as a child process, take its
//! join over dRPC, notice when it ends, stop it when asked.
//!
//! An engine's liveness is its NotifyReady connection: the engine holds it open for
//! its whole life, so the connection's end is the engine's end, whether it is our
//! child or an engine adopted after a server restart (engines outlive a killed
//! server and join the new one). The pid file in `socket_dir` lets a restarted
//! server recognise a live engine instead of starting a second one.
//!
//! Starts and stops of one engine are serialised by its `op` lock. The member
//! state written when an engine leaves names the incarnation that left, so it can
//! never overwrite a later join; a stop waits for that write before returning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;
use proto::drpc::{method, module, ConnInfo, DrpcClient, Handler, HandlerError};
use proto::srv::*;
use proto::{DaosError, Der};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{EngineConfig, ServerConfig};
use crate::error::{io, Result};
use crate::ms::state::{MemberState, MsCmd, MsResp};
use crate::storage::{read_superblock, Superblock, NVME_CONF};
use crate::Server;

#[derive(Debug, Default)]
pub struct InstState {
    pub pid: Option<i32>,
    /// True when `pid` is our child (reaped by its wait task).
    pub child: bool,
    /// The NotifyReady connection while the engine is joined.
    pub conn: Option<u64>,
    pub rank: Option<u32>,
    pub incarnation: u64,
    pub drpc_sock: Option<PathBuf>,
    pub stop_requested: bool,
    /// Why the last process ended, for errors about it.
    pub last_exit: Option<String>,
    /// The member-state write for the last departure.
    pub gone: Option<JoinHandle<()>>,
}

pub struct EngineInst {
    pub idx: u32,
    pub cfg: EngineConfig,
    pub st: Mutex<InstState>,
    /// Woken on join and on exit.
    pub changed: Notify,
    /// Serialises start and stop of this engine.
    op: tokio::sync::Mutex<()>,
}

impl EngineInst {
    pub fn new(idx: u32, cfg: EngineConfig) -> Self {
        EngineInst {
            idx,
            cfg,
            st: Mutex::new(InstState::default()),
            changed: Notify::new(),
            op: tokio::sync::Mutex::new(()),
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, InstState> {
        match self.st.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn scm_mount(&self) -> PathBuf {
        self.cfg
            .scm_mount()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The engine's superblock; `Ok(None)` when it is not formatted. Blocks briefly
    /// (a small file on the SCM mount).
    pub async fn superblock(&self) -> Result<Option<Superblock>> {
        let m = self.scm_mount();
        tokio::task::spawn_blocking(move || read_superblock(&m))
            .await
            .map_err(|e| io("reading superblock", e))?
    }

    pub fn joined(&self) -> bool {
        self.state().conn.is_some()
    }

    fn pid_file(&self, socket_dir: &Path) -> PathBuf {
        socket_dir.join(format!("daos_engine_{}.pid", self.idx))
    }

    /// Calls the engine over its dRPC socket.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: i32,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        let sock = self.state().drpc_sock.clone().ok_or_else(|| {
            DaosError::new(Der::UNREACH, format!("engine {} is not running", self.idx))
        })?;
        let mut c = DrpcClient::connect(&sock).await?.with_timeout(timeout);
        Ok(c.call(module::MGMT, method, req).await?)
    }
}

/// The arguments daos_server gives an engine, as DAOS does.
fn engine_command(
    bin: &Path,
    cfg: &ServerConfig,
    idx: u32,
    e: &EngineConfig,
) -> tokio::process::Command {
    let scm = e.scm_mount().map(Path::to_path_buf).unwrap_or_default();
    let mut c = tokio::process::Command::new(bin);
    c.arg("-t").arg(e.targets.to_string());
    c.arg("-x").arg(e.nr_xs_helpers.to_string());
    c.arg("-g").arg(&cfg.name);
    c.arg("-d").arg(&cfg.socket_dir);
    c.arg("-s").arg(&scm);
    c.arg("-n").arg(scm.join(NVME_CONF));
    c.arg("-I").arg(idx.to_string());
    c.arg("-f").arg(e.first_core.to_string());
    c.env("D_PROVIDER", e.provider.as_deref().unwrap_or(&cfg.provider))
        .env("D_INTERFACE", &e.fabric_iface)
        .env("D_PORT", e.fabric_iface_port.to_string())
        .env("D_LOG_MASK", &e.log_mask)
        .env("CRT_TIMEOUT", cfg.crt_timeout.to_string());
    if let Some(f) = &e.log_file {
        c.env("D_LOG_FILE", f);
    }
    // With certificates, engines believe only credentials signed by a key in
    // client_cert_dir (the agents' *.pub keys); insecure, they take them as given.
    if !cfg.transport_config.allow_insecure {
        if let Some(d) = &cfg.transport_config.client_cert_dir {
            c.env("DAOS_AGENT_KEY_DIR", d);
        }
    }
    for kv in &e.env_vars {
        if let Some((k, v)) = kv.split_once('=') {
            c.env(k, v);
        }
    }
    c.stdin(std::process::Stdio::null());
    // Its own process group: a terminal's ^C reaches the server, which stops engines in order.
    c.process_group(0);
    c
}

/// True when `pid` is a running daos_engine (procfs: memory, never blocks on disk).
fn is_engine_pid(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "daos_engine")
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

impl Server {
    fn inst(&self, idx: usize) -> Result<Arc<EngineInst>> {
        self.engines
            .get(idx)
            .cloned()
            .ok_or_else(|| DaosError::new(Der::NONEXIST, format!("no engine {idx}")))
    }

    /// Starts engine `idx` unless one runs already (then waits for it to join).
    pub async fn start_engine(self: &Arc<Self>, idx: usize) -> Result<()> {
        let inst = self.inst(idx)?;
        let _op = inst.op.lock().await;
        if inst.superblock().await?.is_none() {
            return Err(DaosError::new(
                Der::UNINIT,
                format!("engine {idx} storage is not formatted: run dmg storage format"),
            ));
        }
        if inst.joined() {
            return Ok(());
        }
        let pid_file = inst.pid_file(&self.cfg.socket_dir);
        let recorded = tokio::fs::read_to_string(&pid_file)
            .await
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = recorded.filter(|p| is_engine_pid(*p)) {
            tracing::info!(
                engine = idx,
                pid,
                "engine already running; waiting for it to join"
            );
            {
                let mut st = inst.state();
                st.pid = Some(pid);
                st.child = false;
            }
            if self
                .wait_joined(&inst, Duration::from_secs(10))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tracing::warn!(
                engine = idx,
                pid,
                "running engine did not join; restarting it"
            );
            if is_engine_pid(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut cmd = engine_command(&self.engine_bin, &self.cfg, inst.idx, &inst.cfg);
        let mut child = cmd.spawn().map_err(|e| {
            io(
                format!("starting engine {idx} ({})", self.engine_bin.display()),
                e,
            )
        })?;
        let pid = child.id().map(|p| p as i32);
        {
            let mut st = inst.state();
            st.pid = pid;
            st.child = true;
            st.stop_requested = false;
            st.last_exit = None;
        }
        if let Some(pid) = pid {
            if let Err(e) = tokio::fs::write(&pid_file, pid.to_string()).await {
                tracing::warn!("writing {}: {e}", pid_file.display());
            }
        }
        tracing::info!(engine = idx, pid = ?pid, "engine started");
        let inst2 = inst.clone();
        tokio::spawn(async move {
            let why = match child.wait().await {
                Ok(s) => format!("engine process exited: {s}"),
                Err(e) => format!("waiting for engine process: {e}"),
            };
            {
                let mut st = inst2.state();
                if st.pid == pid {
                    st.pid = None;
                    tracing::info!(engine = inst2.idx, "{why}");
                    st.last_exit = Some(why);
                }
            }
            inst2.changed.notify_waiters();
        });
        self.wait_joined(&inst, Duration::from_secs(60)).await
    }

    async fn wait_joined(&self, inst: &EngineInst, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = inst.changed.notified();
            {
                let st = inst.state();
                if st.conn.is_some() {
                    return Ok(());
                }
                if st.pid.is_none() {
                    let why = st
                        .last_exit
                        .clone()
                        .unwrap_or_else(|| "engine is not running".into());
                    let log = inst
                        .cfg
                        .log_file
                        .as_ref()
                        .map(|p| format!("; see {}", p.display()))
                        .unwrap_or_default();
                    return Err(DaosError::new(
                        Der::MISC,
                        format!("engine {} did not join: {why}{log}", inst.idx),
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(DaosError::new(
                    Der::TIMEDOUT,
                    format!("engine {} did not join within {timeout:?}", inst.idx),
                ));
            }
        }
    }

    /// Stops engine `idx`: PrepShutdown and SIGTERM (SIGKILL if it lingers, or at
    /// once with `force`); returns after its member state is recorded.
    pub async fn stop_engine(&self, idx: usize, force: bool) -> Result<()> {
        let inst = self.inst(idx)?;
        let _op = inst.op.lock().await;
        let pid = {
            let mut st = inst.state();
            st.stop_requested = true;
            st.pid
        };
        if let Some(pid) = pid.filter(|p| is_engine_pid(*p)) {
            if !force {
                let _ = inst
                    .call::<_, PrepShutdownResp>(
                        method::PREP_SHUTDOWN,
                        &PrepShutdownReq {},
                        Duration::from_secs(5),
                    )
                    .await;
            }
            let _ = kill(
                Pid::from_raw(pid),
                if force {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                },
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while is_engine_pid(pid) {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(engine = idx, pid, "engine ignored SIGTERM; killing it");
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        {
            let mut st = inst.state();
            if st.pid == pid {
                st.pid = None;
            }
        }
        let _ = tokio::fs::remove_file(inst.pid_file(&self.cfg.socket_dir)).await;
        // The join connection closes with the process; wait for it and for the
        // member state it records.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while inst.joined() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gone = inst.state().gone.take();
        if let Some(h) = gone {
            let _ = h.await;
        }
        Ok(())
    }

    /// An engine's join connection ended: record the rank as stopped or errored.
    async fn engine_gone(
        self: Arc<Self>,
        inst: Arc<EngineInst>,
        rank: Option<u32>,
        incarnation: u64,
    ) {
        let (state, info) = {
            let st = inst.state();
            if st.stop_requested {
                (MemberState::Stopped, "stopped by request".to_string())
            } else {
                (
                    MemberState::Errored,
                    st.last_exit
                        .clone()
                        .unwrap_or_else(|| "engine exited unexpectedly".into()),
                )
            }
        };
        if state == MemberState::Errored {
            tracing::error!(engine = inst.idx, rank = ?rank, "engine died: {info}; `dmg system start` restarts it");
        }
        if let Some(rank) = rank {
            let cmd = MsCmd::SetMemberState {
                rank,
                state,
                info,
                incarnation: Some(incarnation),
            };
            if let Err(e) = self.ms_write(cmd).await {
                tracing::warn!(rank, "recording engine state: {e}");
            }
        }
    }

    /// After a join: remove shards of pools the management service does not know
    /// (left by a destroy that could not reach this engine).
    async fn cleanup_orphans(self: Arc<Self>, inst: Arc<EngineInst>) {
        let Ok(ms) = self.ms() else { return };
        let resp: StorageQueryResp = match inst
            .call(
                method::STORAGE_QUERY,
                &StorageQueryReq {},
                Duration::from_secs(10),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(engine = inst.idx, "storage query after join: {e}");
                return;
            }
        };
        for p in resp.pools {
            let known = ms.read(|db| db.pools.contains_key(&p.pool_uuid)).await;
            if matches!(known, Ok(false)) {
                tracing::info!(engine = inst.idx, pool = %p.pool_uuid, "destroying orphaned pool shard");
                let req = PoolDestroyShardReq {
                    pool_uuid: p.pool_uuid.clone(),
                };
                let r: Result<PoolDestroyShardResp> = inst
                    .call(method::POOL_DESTROY, &req, Duration::from_secs(30))
                    .await;
                if let Err(e) = r {
                    tracing::warn!(pool = %p.pool_uuid, "orphan cleanup: {e}");
                }
            }
        }
    }
}

/// Serves the server's dRPC socket: engines join here.
pub struct SrvHandler {
    pub server: Arc<Server>,
}

impl SrvHandler {
    async fn notify_ready(&self, conn: ConnInfo, req: NotifyReadyReq) -> NotifyReadyResp {
        let s = &self.server;
        let fail = |der: Der, msg: String| {
            tracing::warn!("refusing engine join: {msg}");
            NotifyReadyResp {
                status: der.code(),
                rank: 0,
            }
        };
        let Some(inst) = s.engines.get(req.instance_idx as usize).cloned() else {
            return fail(
                Der::INVAL,
                format!("instance {} is not configured", req.instance_idx),
            );
        };
        let sb = match inst.superblock().await {
            Ok(Some(sb)) => sb,
            Ok(None) => return fail(Der::UNINIT, format!("engine {} is not formatted", inst.idx)),
            Err(e) => return fail(e.der, e.msg),
        };
        if sb.system != s.cfg.name || sb.instance_idx != inst.idx {
            return fail(
                Der::INVAL,
                format!(
                    "engine {} storage was formatted for system {:?} engine {}, not {:?} engine {}: reformat it",
                    inst.idx, sb.system, sb.instance_idx, s.cfg.name, inst.idx
                ),
            );
        }
        let cmd = MsCmd::Join {
            uuid: sb.uuid,
            addr: s.self_addr.clone(),
            fabric_uri: req.uri.clone(),
            nctxs: req.nctxs,
            incarnation: req.incarnation,
            instance_idx: req.instance_idx,
            ntgts: req.ntgts,
            fault_domain: s
                .cfg
                .fault_path
                .clone()
                .unwrap_or_else(|| format!("/{}", s.host)),
        };
        let rank = match s.ms_write(cmd).await {
            Ok(MsResp::Rank(r)) => r,
            Ok(other) => return fail(Der::PROTO, format!("unexpected join result {other:?}")),
            Err(e) => return fail(e.der, e.msg),
        };
        {
            let mut st = inst.state();
            st.conn = Some(conn.id);
            st.rank = Some(rank);
            st.incarnation = req.incarnation;
            // The kernel's word for who is calling, not the message's.
            if let Some(pid) = conn.peer.pid {
                if st.pid != Some(pid) {
                    st.pid = Some(pid);
                    st.child = false;
                }
            }
            st.drpc_sock = Some(PathBuf::from(&req.drpc_listener_sock));
        }
        inst.changed.notify_waiters();
        tracing::info!(engine = inst.idx, rank, uri = %req.uri, pid = ?conn.peer.pid, "engine joined");
        tokio::spawn(s.clone().cleanup_orphans(inst));
        NotifyReadyResp { status: 0, rank }
    }
}

impl Handler for SrvHandler {
    async fn handle(
        &self,
        conn: ConnInfo,
        module: i32,
        method: i32,
        body: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, HandlerError> {
        if module != module::SRV {
            return Err(HandlerError::UnknownModule);
        }
        if method != method::NOTIFY_READY {
            return Err(HandlerError::UnknownMethod);
        }
        if !conn.peer.is_self_or_root() {
            tracing::warn!(
                peer_uid = conn.peer.uid,
                "refusing NotifyReady from another user"
            );
            return Err(HandlerError::Failure);
        }
        let req = NotifyReadyReq::decode(body.as_slice())?;
        Ok(self.notify_ready(conn, req).await.encode_to_vec())
    }

    fn closed(&self, conn: ConnInfo) {
        for inst in &self.server.engines {
            let (rank, incarnation) = {
                let mut st = inst.state();
                if st.conn != Some(conn.id) {
                    continue;
                }
                st.conn = None;
                st.drpc_sock = None;
                // An adopted engine has no wait task to clear its pid.
                if !st.child && st.pid.is_some_and(|p| !is_engine_pid(p)) {
                    st.pid = None;
                }
                (st.rank, st.incarnation)
            };
            inst.changed.notify_waiters();
            tracing::info!(engine = inst.idx, rank = ?rank, "engine left");
            let h = tokio::spawn(
                self.server
                    .clone()
                    .engine_gone(inst.clone(), rank, incarnation),
            );
            inst.state().gone = Some(h);
        }
    }
}
