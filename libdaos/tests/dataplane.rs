//! The data plane end to end: a real system with two engines (two ranks, two
//! targets each), the agent, the `daos` CLI and libdaos objects, over real
//! sockets and files. Needs root (tmpfs SCM) and the workspace binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libdaos::{
    cond, Array, ArrayStat, Container, Daos, DaosOpts, Iod, ObjectClass, ObjectId, ObjectType,
    Pool, PoolFlags, Value,
};
use proto::Der;
use testkit::{wait_for, EngineSpec, System};

struct Setup {
    sys: System,
    agent: PathBuf,
}

fn two_engines() -> Setup {
    let spec = EngineSpec {
        targets: 2,
        scm_mib: 256,
        bdev_mib: 512,
    };
    let mut sys = System::new(&[spec, spec]);
    sys.format();
    let agent = sys.start_agent();
    sys.dmg_ok(&[
        "pool",
        "create",
        "tank",
        "--scm-size",
        "96MiB",
        "--nvme-size",
        "400MiB",
    ]);
    Setup { sys, agent }
}

impl Setup {
    fn daos(&self, args: &[&str]) -> Output {
        self.sys.daos(args)
    }

    fn daos_ok(&self, args: &[&str]) -> String {
        self.sys.daos_ok(args)
    }

    fn daos_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("-j");
        let out = self.daos_ok(&a);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"], 0, "{out}");
        v["response"].clone()
    }

    async fn client(&self) -> Daos {
        Daos::with_opts(DaosOpts {
            agent_dir: Some(self.agent.clone()),
            retry_for: Duration::from_secs(90),
            ..DaosOpts::default()
        })
        .await
        .unwrap()
    }

    fn engine_pid(&self, idx: usize) -> i32 {
        self.sys.engine_pid(idx).expect("engine running")
    }

    /// kill -9 of engine `idx`, then `dmg system start` brings it back.
    fn crash_and_restart(&self, idx: usize) {
        let pid = self.engine_pid(idx);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_for("engine to die", Duration::from_secs(10), || {
            self.sys.engine_pid(idx).is_none()
        });
        wait_for("engine to restart", Duration::from_secs(60), || {
            self.sys.dmg(&["system", "start"]);
            self.sys.engine_pid(idx).is_some_and(|p| p != pid)
        });
        self.sys.wait_joined(self.sys.engines.len());
    }
}

#[test]
fn containers_through_the_cli() {
    let s = two_engines();
    let out = s.daos_ok(&[
        "container",
        "create",
        "tank",
        "c1",
        "--type",
        "POSIX",
        "--oclass",
        "RP_2G1",
        "--chunk-size",
        "2MiB",
    ]);
    assert!(out.contains("Successfully created container"), "{out}");
    assert!(out.contains("Container Type : POSIX"), "{out}");
    let err = s.daos(&["container", "create", "tank", "c1", "--type", "POSIX"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("DER_EXIST"),
        "{err:?}"
    );
    s.daos_ok(&["container", "create", "tank", "c2"]);

    let list = s.daos_json(&["container", "list", "tank"]);
    let labels: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 2, "{list}");
    assert!(labels.contains(&"c1") && labels.contains(&"c2"));
    let text = s.daos_ok(&["pool", "list-containers", "tank"]);
    assert!(text.contains("c1") && text.contains("c2"), "{text}");

    let q = s.daos_json(&["container", "query", "tank", "c1"]);
    assert_eq!(q["container_type"], "POSIX");
    assert_eq!(q["object_class"], "RP_2G1");
    assert_eq!(q["chunk_size"], 2 << 20);

    s.daos_ok(&["container", "set-attr", "tank", "c1", "color", "blue"]);
    s.daos_ok(&["container", "set-attr", "tank", "c1", "shape", "round"]);
    let a = s.daos_json(&["container", "get-attr", "tank", "c1", "color"]);
    assert_eq!(a[0]["value"], "blue");
    let l = s.daos_json(&["container", "list-attrs", "tank", "c1"]);
    assert_eq!(l.as_array().unwrap().len(), 2);
    s.daos_ok(&["container", "del-attr", "tank", "c1", "color"]);
    let e = s.daos(&["container", "get-attr", "tank", "c1", "color"]);
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("DER_NONEXIST"),
        "{e:?}"
    );

    s.daos_ok(&["container", "create-snap", "tank", "c1", "--snap", "first"]);
    let snaps = s.daos_json(&["container", "list-snaps", "tank", "c1"]);
    assert_eq!(snaps[0]["name"], "first");
    s.daos_ok(&["container", "destroy-snap", "tank", "c1", "--snap", "first"]);
    assert_eq!(
        s.daos_json(&["container", "list-snaps", "tank", "c1"])
            .as_array()
            .unwrap()
            .len(),
        0
    );

    s.daos_ok(&[
        "container",
        "set-prop",
        "tank",
        "c1",
        "--properties",
        "label:renamed,rd_fac:1",
    ]);
    let props = s.daos_json(&["container", "get-prop", "tank", "renamed"]);
    let get = |n: &str| {
        props
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(get("label"), "renamed");
    assert_eq!(get("rd_fac"), "1");
    let bad = s.daos(&[
        "container",
        "set-prop",
        "tank",
        "renamed",
        "--properties",
        "bogus:1",
    ]);
    assert!(!bad.status.success());

    let pq = s.daos_json(&["pool", "query", "tank"]);
    assert_eq!(pq["total_targets"], 4, "{pq}");
    assert!(pq["tier_stats"][0]["total"].as_u64().unwrap() > 0);

    s.daos_ok(&["container", "destroy", "tank", "renamed"]);
    s.daos_ok(&["container", "destroy", "tank", "c2", "--force"]);
    assert_eq!(
        s.daos_json(&["container", "list", "tank"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let gone = s.daos(&["container", "query", "tank", "c2"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("DER_NONEXIST"));

    // Destroying the pool stops its service replicas and removes their state.
    s.sys.dmg_ok(&["pool", "destroy", "tank", "--force"]);
    let e = s.daos(&["pool", "query", "tank"]);
    assert!(!e.status.success());
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("DER_NONEXIST"),
        "{e:?}"
    );
    for i in 0..2 {
        let pools = std::fs::read_dir(s.sys.path(&format!("scm{i}/pools")))
            .unwrap()
            .count();
        assert_eq!(pools, 0, "engine {i} still holds pool files");
    }
}

fn class(name: &str) -> ObjectClass {
    ObjectClass::from_name(name).unwrap()
}

/// Pool `pool` connected read-write and its container `cont` opened.
async fn open_rw(daos: &Daos, pool: &str, cont: &str) -> (Pool, Container) {
    let pool = daos.pool_connect(pool, PoolFlags::ReadWrite).await.unwrap();
    let cont = pool.open_container(cont, true).await.unwrap();
    (pool, cont)
}

/// A new array of class `name` with `chunk`-byte chunks, and its id.
async fn new_array(cont: &Container, name: &str, chunk: u64) -> (ObjectId, Array) {
    let oid = cont
        .alloc_oid(ObjectType::ArrayByte, &class(name))
        .await
        .unwrap();
    (oid, cont.array(oid, chunk).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_across_two_engines() {
    let s = two_engines();
    s.daos_ok(&["container", "create", "tank", "c1", "--type", "POSIX"]);
    let daos = s.client().await;
    let (pool, cont) = open_rw(&daos, "tank", "c1").await;

    // SX: one shard per target, so both ranks hold some of it.
    let oid = cont
        .alloc_oid(ObjectType::KvHashed, &class("SX"))
        .await
        .unwrap();
    let kv = cont.kv(oid).unwrap();
    let layout = placement::layout(&pool.map(), oid).unwrap();
    let ranks: std::collections::BTreeSet<u32> =
        layout.groups.iter().flatten().map(|t| t.rank.0).collect();
    assert_eq!(ranks.len(), 2, "SX shards on both ranks: {layout:?}");
    for i in 0..200u32 {
        kv.put(format!("k{i}").as_bytes(), Bytes::from(format!("v{i}")))
            .await
            .unwrap();
    }
    for i in 0..200u32 {
        let v = kv.get(format!("k{i}").as_bytes()).await.unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()));
    }
    assert_eq!(kv.list().await.unwrap().len(), 200);
    // Per-shard requests go a message per rank (the rank's other targets
    // ride along): the size is the largest over every shard, and a punch
    // empties every shard.
    let (aoid, arr) = new_array(&cont, "SX", 4096).await;
    for chunk in 0..8u64 {
        arr.write(chunk * 4096 + chunk, Bytes::from(vec![chunk as u8 + 1]))
            .await
            .unwrap();
        assert_eq!(arr.size().await.unwrap(), chunk * 4096 + chunk + 1);
    }
    cont.object(aoid).unwrap().punch().await.unwrap();
    assert_eq!(arr.size().await.unwrap(), 0);
    assert!(arr.read(0, 8 * 4096).await.unwrap().iter().all(|b| *b == 0));
    assert!(cont
        .object(aoid)
        .unwrap()
        .list_dkeys()
        .await
        .unwrap()
        .is_empty());

    // Garbage to an engine's data-plane port costs only that connection.
    let members = s.sys.dmg_json(&["system", "query"]);
    let uri = members["members"][0]["fabric_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let hostport = uri.trim_start_matches("tcp://").to_string();
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &b"CaRT\x01\x00\x01\x00"[..],
        &[0xffu8; 64][..],
    ] {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(&hostport).unwrap();
        let _ = c.write_all(junk);
        drop(c);
    }
    assert_eq!(kv.get(b"k7").await.unwrap().as_deref(), Some(&b"v7"[..]));
    assert!(kv.get(b"missing").await.unwrap().is_none());
    let e = kv
        .insert(b"k1", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(e.der(), Der::EXIST);
    kv.remove(b"k1").await.unwrap();
    assert!(kv.get(b"k1").await.unwrap().is_none());
    assert_eq!(kv.remove(b"k1").await.unwrap_err().der(), Der::NONEXIST);

    // RP_3G1 on two ranks: three copies on three distinct targets.
    let oid = cont
        .alloc_oid(ObjectType::KvHashed, &class("RP_3G1"))
        .await
        .unwrap();
    let l = placement::layout(&pool.map(), oid).unwrap();
    let t: std::collections::BTreeSet<_> = l.groups[0].iter().collect();
    assert_eq!(t.len(), 3, "{l:?}");
    let kv3 = cont.kv(oid).unwrap();
    kv3.put(b"three", Bytes::from_static(b"copies"))
        .await
        .unwrap();
    assert_eq!(
        kv3.get(b"three").await.unwrap().as_deref(),
        Some(&b"copies"[..])
    );

    // RP_2G1: a copy on each rank; reads survive the loss of either.
    let oid = cont
        .alloc_oid(ObjectType::ArrayByte, &class("RP_2G1"))
        .await
        .unwrap();
    let arr = cont.array(oid, 1 << 20).unwrap();
    let layout = placement::layout(&pool.map(), oid).unwrap();
    let g: Vec<u32> = layout.groups[0].iter().map(|t| t.rank.0).collect();
    assert_eq!(g.len(), 2);
    assert_ne!(g[0], g[1], "replicas on both ranks");
    let data: Vec<u8> = (0..(3u32 << 20) + 12345).map(|i| (i % 251) as u8).collect();
    arr.write(0, Bytes::from(data.clone())).await.unwrap();
    assert_eq!(arr.size().await.unwrap(), data.len() as u64);
    assert_eq!(
        &arr.read(0, data.len() as u64).await.unwrap()[..],
        &data[..]
    );
    // Reads bounded by the size: whole, across the end, at the end.
    let n = data.len() as u64;
    assert_eq!(&arr.read_to_size(0, n).await.unwrap()[..], &data[..]);
    assert_eq!(&arr.read_to_size(0, n + 100).await.unwrap()[..], &data[..]);
    assert_eq!(
        &arr.read_to_size(n - 10, 4096).await.unwrap()[..],
        &data[data.len() - 10..]
    );
    assert!(arr.read_to_size(n, 10).await.unwrap().is_empty());
    // Sparse reads are zeros; truncation shrinks.
    arr.write(10 << 20, Bytes::from_static(b"end"))
        .await
        .unwrap();
    assert_eq!(arr.size().await.unwrap(), (10 << 20) + 3);
    let hole = arr.read(5 << 20, 4096).await.unwrap();
    assert!(hole.iter().all(|b| *b == 0));
    let hole = arr.read_to_size(5 << 20, 4096).await.unwrap();
    assert!(hole.len() == 4096 && hole.iter().all(|b| *b == 0));
    assert_eq!(
        &arr.read_to_size((10 << 20) + 1, 100).await.unwrap()[..],
        b"nd"
    );
    arr.set_size(1 << 20).await.unwrap();
    assert_eq!(arr.size().await.unwrap(), 1 << 20);
    arr.set_size(2 << 20).await.unwrap();
    assert_eq!(arr.size().await.unwrap(), 2 << 20);
    // Many arrays' sizes at once (more than one message's worth per rank):
    // written, replicated, never written.
    let mut arrays = vec![arr.clone()];
    for (i, n) in [1u64, 4096, (1 << 20) + 7, 3 << 20].into_iter().enumerate() {
        let oid = cont
            .alloc_oid(ObjectType::ArrayByte, &class("SX"))
            .await
            .unwrap();
        let a = cont.array(oid, 1 << 20).unwrap();
        a.write(n - 1, Bytes::from(vec![i as u8])).await.unwrap();
        arrays.push(a);
    }
    for lo in 0..(proto::opcode::obj::MAX_QUERY_KEYS as u64 + 100) {
        let oid = ObjectId::generate(9, lo, ObjectType::ArrayByte, &class("SX"));
        arrays.push(cont.array(oid, 1 << 20).unwrap());
    }
    let stats = Array::stats(&arrays).await.unwrap();
    let sizes: Vec<u64> = stats.iter().map(|s| s.size).collect();
    assert_eq!(sizes.len(), arrays.len());
    assert_eq!(sizes[..5], [2 << 20, 1, 4096, (1 << 20) + 7, 3 << 20]);
    assert!(stats[5..].iter().all(|s| *s == ArrayStat::default()));
    for (a, s) in arrays.iter().zip(&stats).take(5) {
        assert_eq!(a.size().await.unwrap(), s.size);
        assert_eq!(a.stat().await.unwrap(), *s);
    }
    // The newest change is an epoch, i.e. wall-clock nanoseconds, and moves
    // with every write or punch of the bytes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for s in &stats[..5] {
        assert!(
            s.max_epoch.abs_diff(now) < 600_000_000_000,
            "{s:?} vs {now}"
        );
    }
    arrays[2].write(0, Bytes::from_static(b"a")).await.unwrap();
    let after = arrays[2].stat().await.unwrap();
    assert_eq!(after.size, 4096);
    assert!(after.max_epoch > stats[2].max_epoch);
    arrays[2].punch(0, 1).await.unwrap();
    assert!(arrays[2].stat().await.unwrap().max_epoch > after.max_epoch);
    assert!(Array::stats(&[]).await.unwrap().is_empty());
    let tail = arr.read(1 << 20, 1 << 20).await.unwrap();
    assert!(
        tail.iter().all(|b| *b == 0),
        "truncated bytes read back as zeros"
    );
    let tail = arr.read_to_size(1 << 20, 4 << 20).await.unwrap();
    assert!(
        tail.len() == 1 << 20 && tail.iter().all(|b| *b == 0),
        "an extended tail reads as zeros up to the size"
    );

    // Kill the engine holding the first replica: reads go to the other one.
    let victim_rank = g[0];
    let idx = rank_index(&s, victim_rank);
    let pid = s.engine_pid(idx);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("engine to die", Duration::from_secs(10), || {
        s.sys.engine_pid(idx).is_none()
    });
    let r = arr.read(0, 1 << 20).await.unwrap();
    assert_eq!(&r[..], &data[..1 << 20]);
    s.crash_and_restart_after_kill(idx, pid);
    arr.write(0, Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(&arr.read(0, 5).await.unwrap()[..], b"again");

    // A transaction over two objects: all or nothing.
    let a = cont
        .object(
            cont.alloc_oid(ObjectType::MultiHashed, &class("S1"))
                .await
                .unwrap(),
        )
        .unwrap();
    let b = cont
        .object(
            cont.alloc_oid(ObjectType::MultiHashed, &class("RP_2G1"))
                .await
                .unwrap(),
        )
        .unwrap();
    let single = |v: &'static [u8]| {
        vec![Iod {
            akey: b"a".to_vec(),
            value: Value::Single(Bytes::from_static(v)),
        }]
    };
    let mut tx = cont.tx();
    tx.update(&a, b"d", single(b"one"), cond::DKEY_INSERT);
    tx.update(&b, b"d", single(b"two"), cond::DKEY_INSERT);
    tx.commit().await.unwrap();
    let get = |o: &libdaos::Object| {
        let o = o.clone();
        async move {
            let f = o
                .fetch(
                    b"d",
                    &[libdaos::FetchIod::Single {
                        akey: b"a".to_vec(),
                    }],
                    libdaos::EPOCH_LATEST,
                    0,
                )
                .await
                .unwrap();
            f[0].found.then(|| f[0].data.clone())
        }
    };
    assert_eq!(get(&a).await.as_deref(), Some(&b"one"[..]));
    assert_eq!(get(&b).await.as_deref(), Some(&b"two"[..]));
    // The second insert fails its condition, so the first update is not applied either.
    let c = cont
        .object(
            cont.alloc_oid(ObjectType::MultiHashed, &class("S1"))
                .await
                .unwrap(),
        )
        .unwrap();
    let mut tx = cont.tx();
    tx.update(&c, b"d", single(b"three"), cond::DKEY_INSERT);
    tx.update(&b, b"d", single(b"again"), cond::DKEY_INSERT);
    assert_eq!(tx.commit().await.unwrap_err().der(), Der::EXIST);
    assert_eq!(get(&c).await, None);
    assert_eq!(get(&b).await.as_deref(), Some(&b"two"[..]));

    cont.close().await.unwrap();
    pool.disconnect().await.unwrap();

    // A small pool fills up: DER_NOSPACE, and what was stored stays intact.
    s.sys.dmg_ok(&[
        "pool",
        "create",
        "small",
        "--scm-size",
        "80MiB",
        "--nvme-size",
        "80MiB",
    ]);
    s.daos_ok(&["container", "create", "small", "full"]);
    let (pool, cont) = open_rw(&daos, "small", "full").await;
    let (_, arr) = new_array(&cont, "S1", 1 << 20).await;
    let block = |i: u64| Bytes::from(vec![(i % 200) as u8 + 1; 1 << 20]);
    let mut written = 0u64;
    let err = loop {
        match arr.write(written << 20, block(written)).await {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 64, "a 20 MiB target took 64 MiB");
    };
    assert_eq!(err.der(), Der::NOSPACE, "{err}");
    assert!(written >= 8, "only {written} MiB fit");
    for i in 0..written {
        assert_eq!(
            arr.read(i << 20, 1 << 20).await.unwrap(),
            block(i),
            "MiB {i} after NOSPACE"
        );
    }
    assert_eq!(arr.size().await.unwrap(), written << 20);
    cont.close().await.unwrap();
    pool.disconnect().await.unwrap();

    // data_thresh (set at create): values under it stay in SCM, the bulk
    // tier sees none of them; it cannot be changed afterwards.
    s.sys
        .dmg_ok(&["pool", "destroy", "small", "--recursive", "--force"]);
    s.sys.dmg_ok(&[
        "pool",
        "create",
        "thresh",
        "--scm-size",
        "60MiB",
        "--nvme-size",
        "60MiB",
        "-P",
        "data_thresh:1MiB",
    ]);
    let free = |tier: usize| {
        let q = s.sys.dmg_json(&["pool", "query", "thresh"]);
        q["tier_stats"][tier]["free"].as_u64().unwrap()
    };
    let (scm0, nvme0) = (free(0), free(1));
    s.daos_ok(&["container", "create", "thresh", "c"]);
    let (pool, cont) = open_rw(&daos, "thresh", "c").await;
    let (_, arr) = new_array(&cont, "S1", 256 << 10).await;
    let data = Bytes::from(vec![7u8; 4 << 20]);
    arr.write(0, data.clone()).await.unwrap();
    assert_eq!(arr.read(0, 4 << 20).await.unwrap(), data);
    assert_eq!(
        free(1),
        nvme0,
        "values under data_thresh reached the bulk tier"
    );
    assert!(
        free(0) + (4 << 20) <= scm0,
        "SCM free {} of {scm0}",
        free(0)
    );
    let o = s
        .sys
        .dmg(&["pool", "set-prop", "thresh", "data_thresh:4KiB"]);
    assert!(!o.status.success());
    cont.close().await.unwrap();
    pool.disconnect().await.unwrap();

    for log in ["engine0.log", "engine1.log"] {
        let errs: Vec<String> = s
            .sys
            .error_lines(log)
            .into_iter()
            .filter(|l| !l.contains("flush failed"))
            .collect();
        assert!(errs.is_empty(), "{log}: {errs:?}");
    }
}

/// The engine index (in daos_server.yml) that has `rank`.
fn rank_index(s: &Setup, rank: u32) -> usize {
    let v = s.sys.dmg_json(&["system", "query"]);
    let m = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["rank"] == rank)
        .unwrap()
        .clone();
    m["instance_idx"].as_u64().unwrap() as usize
}

impl Setup {
    fn crash_and_restart_after_kill(&self, idx: usize, old: i32) {
        wait_for("engine to restart", Duration::from_secs(60), || {
            self.sys.dmg(&["system", "start"]);
            self.sys.engine_pid(idx).is_some_and(|p| p != old)
        });
        self.sys.wait_joined(self.sys.engines.len());
    }
}

/// Writes from many tasks while one engine is killed with -9 and restarted,
/// three times; afterwards every acknowledged write reads back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_engine_kill9() {
    let s = two_engines();
    s.daos_ok(&["container", "create", "tank", "c1"]);
    let daos = s.client().await;
    let (_pool, cont) = open_rw(&daos, "tank", "c1").await;
    let (_, arr) = new_array(&cont, "SX", 64 << 10).await;
    let kv = cont
        .kv(cont
            .alloc_oid(ObjectType::KvHashed, &class("RP_2G1"))
            .await
            .unwrap())
        .unwrap();

    // Block i of the array holds a pattern of (i, round); the latest
    // acknowledged round per block is what must read back.
    const BLOCK: usize = 48 << 10;
    const BLOCKS: u64 = 64;
    // Per block: (last acknowledged round, last attempted round). A write
    // that failed may or may not have landed, so either is acceptable.
    let acked: Arc<Mutex<BTreeMap<u64, (u32, u32)>>> = Arc::default();
    let kv_acked: Arc<Mutex<BTreeMap<u32, u32>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pattern = |blk: u64, round: u32| -> Vec<u8> {
        (0..BLOCK)
            .map(|j| (blk as usize * 31 + round as usize * 7 + j) as u8)
            .collect()
    };
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (arr, kv, acked, kv_acked, stop, failed) = (
            arr.clone(),
            kv.clone(),
            acked.clone(),
            kv_acked.clone(),
            stop.clone(),
            failed.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                for blk in (w..BLOCKS).step_by(4) {
                    let data = pattern(blk, round);
                    let r = arr.write(blk * BLOCK as u64, Bytes::from(data)).await;
                    let ok = r.is_ok();
                    if let Err(e) = r {
                        eprintln!("block {blk} round {round}: {e}");
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let mut g = acked.lock().unwrap();
                    let e = g.entry(blk).or_insert((0, 0));
                    e.1 = round;
                    if ok {
                        e.0 = round;
                    }
                }
                let key = (w as u32) * 1000 + round;
                if kv
                    .put(&key.to_be_bytes(), Bytes::from(key.to_le_bytes().to_vec()))
                    .await
                    .is_ok()
                {
                    kv_acked.lock().unwrap().insert(key, key);
                }
            }
        }));
    }
    let kills = std::env::var("DATAPLANE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for i in 0..kills {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idx = i % 2;
        let s2 = &s;
        tokio::task::block_in_place(|| s2.crash_and_restart(idx));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len() as u64,
        BLOCKS,
        "every block was written at least once"
    );
    // Writes wait out an engine's restart instead of failing.
    assert_eq!(
        failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "writes failed"
    );
    for (blk, (round, tried)) in acked {
        assert!(round > 0, "block {blk}: no write was ever acknowledged");
        let got = arr.read(blk * BLOCK as u64, BLOCK as u64).await.unwrap();
        // A write spanning two chunks is two updates: one that failed may
        // have landed in one chunk only. Every 4 KiB must hold the last
        // acknowledged round or a later attempted one, never anything older.
        let want: Vec<Vec<u8>> = (round..=tried).map(|r| pattern(blk, r)).collect();
        for off in (0..BLOCK).step_by(4096) {
            assert!(
                want.iter().any(|w| got[off..off + 4096] == w[off..off + 4096]),
                "block {blk} bytes {off}..: not round {round} (acknowledged) nor a later attempt up to {tried}"
            );
        }
    }
    let kv_acked = kv_acked.lock().unwrap().clone();
    assert!(kv_acked.len() > 10);
    for (k, v) in kv_acked {
        assert_eq!(
            kv.get(&k.to_be_bytes()).await.unwrap().as_deref(),
            Some(&v.to_le_bytes()[..]),
            "key {k}"
        );
    }
}

/// The README's promise: the libdaos example program writes an array and KV
/// pairs across both engines, an engine is killed with -9 in the middle and
/// restarted, the program finishes and reads everything back, and a second
/// run checks it all again.
#[test]
fn example_program_survives_engine_kill9() {
    let s = two_engines();
    s.daos_ok(&["container", "create", "tank", "io", "--type", "POSIX"]);
    let example = testkit::bin_dir().join("examples/daos_io");
    assert!(
        example.exists(),
        "{} missing: cargo test builds it",
        example.display()
    );
    let run = |extra: &[&str]| {
        Command::new(&example)
            .args(["tank", "io", "--array-mib", "192", "--kv", "20000"])
            .args(extra)
            .env("DAOS_AGENT_DRPC_DIR", &s.agent)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = run(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    s.crash_and_restart(1);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "daos_io failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("array: verified 192 MiB"), "{text}");
    assert!(text.contains("kv: verified 20000 pairs"), "{text}");
    let again = run(&["--verify-only"]).wait_with_output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The pool service is a raft group: with three service ranks, killing the
/// leader's engine leaves a majority that elects another, and container
/// operations go on; the old leader catches up when it is back.
#[test]
fn pool_service_survives_its_leader() {
    let spec = EngineSpec {
        targets: 1,
        scm_mib: 128,
        bdev_mib: 256,
    };
    let mut sys = System::new(&[spec, spec, spec]);
    sys.format();
    let agent = sys.start_agent();
    let created = sys.dmg_json(&[
        "pool",
        "create",
        "tank",
        "--scm-size",
        "60MiB",
        "--nvme-size",
        "120MiB",
    ]);
    let svc: Vec<u64> = created["svc_reps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    assert_eq!(svc.len(), 3, "{created}");
    let s = Setup { sys, agent };
    s.daos_ok(&["container", "create", "tank", "before"]);
    // The leader is the replica that answered; ask the pool query which it is.
    let q = s.daos_json(&["pool", "query", "tank"]);
    let leader = q["leader"].as_u64().unwrap() as u32;
    let idx = rank_index(&s, leader);
    let pid = s.engine_pid(idx);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("leader engine to die", Duration::from_secs(10), || {
        s.sys.engine_pid(idx).is_none()
    });
    s.daos_ok(&["container", "create", "tank", "during"]);
    let q = s.daos_json(&["pool", "query", "tank"]);
    assert_ne!(
        q["leader"].as_u64().unwrap() as u32,
        leader,
        "a new leader: {q}"
    );
    s.crash_and_restart_after_kill(idx, pid);
    let list = s.daos_json(&["container", "list", "tank"]);
    let labels: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"before") && labels.contains(&"during"),
        "{labels:?}"
    );
}
