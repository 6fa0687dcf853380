//! Three (or four) replicas in one process over an in-memory transport: each
//! replica serves a channel of raft messages; the network can cut a replica off
//! in both directions. Proves commit with a majority, leader replacement,
//! catch-up of a restarted replica (by snapshot), linearizable reads refusing on a
//! deposed leader, and membership change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::{DaosError, Der};
use rdb::{Db, Rdb, RdbOpts, RpcKind, Transport, TransportError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Kv {
    map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum KvCmd {
    Put(String, String),
    /// Creates `key` only if it does not exist.
    Create(String, String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
enum KvResp {
    #[default]
    Ok,
    Err {
        code: i32,
        msg: String,
    },
}

impl Db for Kv {
    type Cmd = KvCmd;
    type Resp = KvResp;

    fn apply(&mut self, cmd: KvCmd) -> KvResp {
        match cmd {
            KvCmd::Put(k, v) => {
                self.map.insert(k, v);
                KvResp::Ok
            }
            KvCmd::Create(k, _) if self.map.contains_key(&k) => KvResp::Err {
                code: Der::EXIST.code(),
                msg: format!("{k} exists"),
            },
            KvCmd::Create(k, v) => {
                self.map.insert(k, v);
                KvResp::Ok
            }
        }
    }

    fn resp_error(resp: &KvResp) -> Option<DaosError> {
        match resp {
            KvResp::Err { code, msg } => Some(DaosError::new(
                Der::from_code(*code).unwrap_or(Der::MISC),
                msg.clone(),
            )),
            KvResp::Ok => None,
        }
    }
}

type Msg = (RpcKind, Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>);

/// The network: one inbox per listening address, and the set of addresses cut off.
#[derive(Default)]
struct Net {
    inboxes: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    cut: Mutex<HashSet<String>>,
}

impl Net {
    fn is_cut(&self, a: &str, b: &str) -> bool {
        let cut = self.cut.lock().unwrap();
        cut.contains(a) || cut.contains(b)
    }
}

struct MemTransport {
    from: String,
    net: Arc<Net>,
}

impl Transport for MemTransport {
    fn call(
        &self,
        addr: &str,
        rpc: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let (net, from, to) = (self.net.clone(), self.from.clone(), addr.to_string());
        async move {
            let unreachable = || TransportError::Unreachable(format!("{from} -> {to}: cut off"));
            if net.is_cut(&from, &to) {
                return Err(unreachable());
            }
            let inbox = net.inboxes.lock().unwrap().get(&to).cloned();
            let inbox = inbox.ok_or_else(|| TransportError::Unreachable(format!("{to}: down")))?;
            let (tx, rx) = oneshot::channel();
            inbox
                .send((rpc, payload, tx))
                .await
                .map_err(|_| TransportError::Unreachable(format!("{to}: down")))?;
            let reply = match tokio::time::timeout(timeout, rx).await {
                Err(_) => return Err(TransportError::Timeout(timeout)),
                Ok(Err(_)) => return Err(TransportError::Failed(format!("{to}: dropped"))),
                Ok(Ok(r)) => r.map_err(TransportError::Failed)?,
            };
            // A reply across a cut made meanwhile is lost too.
            if net.is_cut(&from, &to) {
                return Err(unreachable());
            }
            Ok(reply)
        }
    }
}

type Node = Rdb<Kv, MemTransport>;

struct Cluster {
    net: Arc<Net>,
    root: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Arc<Node>>,
}

fn opts() -> RdbOpts {
    let mut o = RdbOpts::new("test service");
    o.heartbeat_interval = Duration::from_millis(50);
    o.election_timeout_min = Duration::from_millis(300);
    o.election_timeout_max = Duration::from_millis(600);
    o.snapshot_after = 10;
    o.log_kept_after_snapshot = 0;
    o.leader_wait = Duration::from_secs(2);
    o
}

fn addr(id: u64) -> String {
    format!("node{id}")
}

impl Cluster {
    async fn new(n: u64) -> Cluster {
        let mut c = Cluster {
            net: Arc::new(Net::default()),
            root: tempfile::tempdir().unwrap(),
            addrs: (0..n).map(|i| (i, addr(i))).collect(),
            nodes: BTreeMap::new(),
        };
        for id in 0..n {
            c.start(id, opts()).await;
        }
        c
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("rdb{id}"))
    }

    async fn start(&mut self, id: u64, opts: RdbOpts) {
        let t = MemTransport {
            from: addr(id),
            net: self.net.clone(),
        };
        let node = Rdb::start(&self.dir(id), id, self.addrs.clone(), t, opts)
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::channel::<Msg>(64);
        let server = node.clone();
        tokio::spawn(async move {
            while let Some((rpc, payload, reply)) = rx.recv().await {
                let s = server.clone();
                tokio::spawn(async move {
                    let r = s.handle(rpc, &payload).await.map_err(|e| e.to_string());
                    let _ = reply.send(r);
                });
            }
        });
        self.net.inboxes.lock().unwrap().insert(addr(id), tx);
        self.nodes.insert(id, node);
    }

    /// Shuts a replica down and forgets it; its directory stays.
    async fn stop(&mut self, id: u64) {
        self.net.inboxes.lock().unwrap().remove(&addr(id));
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    fn cut(&self, id: u64) {
        self.net.cut.lock().unwrap().insert(addr(id));
    }

    fn heal(&self, id: u64) {
        self.net.cut.lock().unwrap().remove(&addr(id));
    }

    fn node(&self, id: u64) -> &Arc<Node> {
        &self.nodes[&id]
    }

    /// Waits until one of `among` leads with a quorum behind it; its id.
    async fn leader(&self, among: &[u64]) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            for id in among {
                if self.node(*id).wait_leader(Duration::ZERO).await.is_ok() {
                    return *id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among {among:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `f` on the leader among `among`, again on whoever leads next when
    /// leadership moves meanwhile (a loaded machine can miss a heartbeat);
    /// the id of the replica it succeeded on.
    async fn on_leader<T, F>(&self, among: &[u64], f: impl Fn(Arc<Node>) -> F) -> (u64, T)
    where
        F: std::future::Future<Output = Result<T, DaosError>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let l = self.leader(among).await;
            match f(self.node(l).clone()).await {
                Ok(v) => return (l, v),
                Err(e) if e.der == Der::NOTLEADER => {
                    assert!(tokio::time::Instant::now() < deadline, "{e}");
                }
                Err(e) => panic!("on leader {l}: {e}"),
            }
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// Waits until replica `id` has applied `key` = `val` locally.
async fn wait_applied(node: &Node, key: &str, val: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.read_local(|d| d.map.get(key).cloned()).as_deref() != Some(val) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica {} never applied {key}={val}",
            node.node_id()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(k: &str, v: &str) -> KvCmd {
    KvCmd::Put(k.into(), v.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_with_two_of_three_and_errors_change_nothing() {
    let c = Cluster::new(3).await;
    let l = c.leader(&[0, 1, 2]).await;
    let leader = c.node(l);
    assert_eq!(leader.leader().map(|(id, _)| id), Some(l));
    assert_eq!(leader.replicas(), c.addrs);
    leader.write(put("a", "1")).await.unwrap();

    // One follower cut off: the other two still commit.
    let f = (0..3).find(|i| *i != l).unwrap();
    c.cut(f);
    leader.write(put("b", "2")).await.unwrap();
    assert_eq!(
        leader
            .read(|d| d.map.get("b").cloned())
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leader.lagging_replicas(), vec![(f, addr(f))]);
    assert_eq!(c.node(f).read_local(|d| d.map.get("b").cloned()), None);

    // A command the state rejects is an error with its DER and changes nothing.
    let e = leader
        .write(KvCmd::Create("a".into(), "x".into()))
        .await
        .unwrap_err();
    assert_eq!(e.der, Der::EXIST, "{e}");
    assert_eq!(leader.read(|d| d.map["a"].clone()).await.unwrap(), "1");

    // A follower refuses reads and writes, naming the leader.
    let other = (0..3).find(|i| *i != l && *i != f).unwrap();
    let e = c.node(other).read(|d| d.map.len()).await.unwrap_err();
    assert_eq!(e.der, Der::NOTLEADER);
    assert!(e.msg.ends_with(&format!("leader: {}", addr(l))), "{e}");
    let e = c.node(other).write(put("c", "3")).await.unwrap_err();
    assert_eq!(e.der, Der::NOTLEADER, "{e}");

    // Healed, the follower catches up.
    c.heal(f);
    wait_applied(c.node(f), "b", "2").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_leader_is_replaced_and_refuses_linearizable_reads() {
    let c = Cluster::new(3).await;
    let old = c.leader(&[0, 1, 2]).await;
    c.node(old).write(put("k", "before")).await.unwrap();
    let mut status = c.node(old).subscribe();

    c.cut(old);
    let rest: Vec<u64> = (0..3).filter(|i| *i != old).collect();
    let new = c.leader(&rest).await;
    assert_ne!(new, old);
    c.node(new).write(put("k", "after")).await.unwrap();

    // The deposed leader still believes it leads, but cannot confirm it with a
    // quorum: no stale read, no write.
    let e = c.node(old).read(|d| d.map["k"].clone()).await.unwrap_err();
    assert_eq!(e.der, Der::NOTLEADER, "{e}");
    let e = c.node(old).write(put("k", "lost")).await.unwrap_err();
    assert_eq!(e.der, Der::NOTLEADER, "{e}");

    // Back on the network it follows the new leader and learns what it missed.
    c.heal(old);
    wait_applied(c.node(old), "k", "after").await;
    let e = c.node(old).read(|d| d.map.len()).await.unwrap_err();
    assert_eq!(e.der, Der::NOTLEADER);
    assert!(e.msg.contains(&format!("leader: {}", addr(new))), "{e}");
    tokio::time::timeout(Duration::from_secs(5), async {
        while status.borrow_and_update().leader != Some(new) {
            status.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert!(!c.node(old).status().is_leader);
    assert_eq!(
        c.node(new).read(|d| d.map["k"].clone()).await.unwrap(),
        "after"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_replica_catches_up_and_state_survives_restart() {
    let mut c = Cluster::new(3).await;
    let l = c.leader(&[0, 1, 2]).await;
    c.node(l).write(put("k0", "v")).await.unwrap();
    let f = (0..3).find(|i| *i != l).unwrap();
    wait_applied(c.node(f), "k0", "v").await;

    // Down while enough is written that the leader snapshots and purges its log:
    // the restarted replica must be sent the snapshot.
    c.stop(f).await;
    for i in 1..=30 {
        c.node(l).write(put(&format!("k{i}"), "v")).await.unwrap();
    }
    let snap = c.dir(l).join("snapshot.json");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !snap.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader never snapshotted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.start(f, opts()).await;
    wait_applied(c.node(f), "k30", "v").await;
    assert_eq!(c.node(f).read_local(|d| d.map.len()), 31);

    // Every replica stopped and reopened: what was acknowledged is still there.
    for id in 0..3 {
        c.stop(id).await;
    }
    for id in 0..3 {
        c.start(id, opts()).await;
    }
    let l = c.leader(&[0, 1, 2]).await;
    assert_eq!(c.node(l).read(|d| d.map.len()).await.unwrap(), 31);
    c.node(l).write(put("after-restart", "v")).await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_change_and_destroy_removes_state() {
    let mut c = Cluster::new(3).await;
    let (l, _) = c
        .on_leader(&[0, 1, 2], |n| async move { n.write(put("x", "1")).await })
        .await;

    // A fourth replica joins without bootstrapping a group of its own, and one
    // old follower leaves.
    let gone = (0..3).find(|i| *i != l).unwrap();
    c.addrs.insert(3, addr(3));
    let mut o = opts();
    o.bootstrap = false;
    c.start(3, o).await;
    let mut want = c.addrs.clone();
    want.remove(&gone);
    let (l, _) = c
        .on_leader(&[0, 1, 2], |n| {
            let want = want.clone();
            async move { n.change_replicas(want).await }
        })
        .await;
    assert_eq!(c.node(l).replicas(), want);
    wait_applied(c.node(3), "x", "1").await;
    let members: Vec<u64> = want.keys().copied().collect();
    let (l, _) = c
        .on_leader(&members, |n| async move { n.write(put("y", "2")).await })
        .await;
    wait_applied(c.node(3), "y", "2").await;

    // The removed replica's state goes, once it has stopped.
    let e = rdb::destroy(&c.dir(l)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
    assert!(c.dir(l).join("raft.log").exists());
    c.stop(gone).await;
    let dir = c.dir(gone);
    assert!(dir.join("raft.log").exists());
    Node::destroy(&dir).unwrap();
    assert!(!dir.exists());
    Node::destroy(&dir).unwrap();

    // Not a member of its own list, or a directory in use: clear errors.
    let t = MemTransport {
        from: addr(9),
        net: c.net.clone(),
    };
    let e = Node::start(&c.dir(9), 9, c.addrs.clone(), t, opts())
        .await
        .err()
        .unwrap();
    assert_eq!(e.der, Der::INVAL, "{e}");
    let t = MemTransport {
        from: addr(l),
        net: c.net.clone(),
    };
    let e = Node::start(&c.dir(l), l, c.addrs.clone(), t, opts())
        .await
        .err()
        .unwrap();
    assert_eq!(e.der, Der::BUSY, "{e}");
    c.shutdown().await;
}
