//! Several daos_server processes on loopback forming one system: the management
//! service is a raft group over all of them, engines on any server join through
//! the leader, and the leader reaches every engine through its server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::{engine_pid_in, wait_for, Cluster, EngineSpec};

fn leader(c: &Cluster, hosts: &str) -> Option<String> {
    let o = c.dmg(hosts, &["-j", "system", "leader-query"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["response"]["current_leader"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

#[test]
fn three_replicas_elect_and_fail_over() {
    let mut c = Cluster::new(3, &[]);
    let all = c.all();
    let mut first = None;
    wait_for("a leader", Duration::from_secs(30), || {
        first = leader(&c, &all);
        first.is_some()
    });
    let first = first.unwrap();
    for k in 0..3 {
        assert_eq!(
            leader(&c, &c.addr(k)).as_deref(),
            Some(first.as_str()),
            "replica {k} disagrees"
        );
    }

    let idx = (0..3).find(|k| c.addr(*k) == first).unwrap();
    c.kill9(idx);
    let survivors = (0..3)
        .filter(|k| *k != idx)
        .map(|k| c.addr(k))
        .collect::<Vec<_>>()
        .join(",");
    let mut second = None;
    wait_for(
        "a new leader among the survivors",
        Duration::from_secs(30),
        || {
            second = leader(&c, &survivors).filter(|l| *l != first);
            second.is_some()
        },
    );
    // The survivors answer management calls through the new leader.
    c.dmg_json(&survivors, &["system", "query"]);

    // The killed replica comes back as a follower of the new leader.
    c.start(idx);
    let second = second.unwrap();
    wait_for(
        "the restarted replica to follow",
        Duration::from_secs(30),
        || leader(&c, &c.addr(idx)).as_deref() == Some(second.as_str()),
    );
}

#[test]
fn engines_on_every_server_form_one_system() {
    let spec = EngineSpec {
        targets: 1,
        scm_mib: 256,
        bdev_mib: 1024,
    };
    let mut c = Cluster::new(3, &[spec]);
    let all = c.all();
    c.dmg_json(&all, &["storage", "format"]);
    c.wait_joined(&all, 3);
    let members = c.dmg_json(&all, &["system", "query"]);
    let mut addrs: Vec<String> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["addr"].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    let mut want: Vec<String> = (0..3).map(|k| c.addr(k)).collect();
    want.sort();
    assert_eq!(addrs, want, "one rank per server");

    // A pool spans the three servers' engines, whichever server leads.
    c.dmg_json(&all, &["pool", "create", "tank", "--size", "1GiB"]);
    let q = c.dmg_json(&all, &["pool", "query", "tank"]);
    assert_eq!(q["total_targets"], 3, "{q}");
    assert_eq!(q["state"], "Ready", "{q}");
    let uuid = q["uuid"].as_str().unwrap().to_string();
    for k in 0..3 {
        assert!(
            c.server_dir(k)
                .join(format!("scm0/pools/{uuid}/vos-0"))
                .exists(),
            "no shard on server {k}"
        );
    }

    // Stop and start reach every server's engine.
    let stopped = c.dmg_json(&all, &["system", "stop"]);
    assert_eq!(stopped["results"].as_array().unwrap().len(), 3, "{stopped}");
    for k in 0..3 {
        wait_for("engine to stop", Duration::from_secs(20), || {
            engine_pid_in(&c.server_dir(k), 0).is_none()
        });
    }
    c.dmg_json(&all, &["system", "start"]);
    c.wait_joined(&all, 3);

    // kill -9 of the leader: the others elect a new one; its engine keeps
    // running and is re-adopted when the server comes back.
    let l = leader(&c, &all).unwrap();
    let idx = (0..3).find(|k| c.addr(*k) == l).unwrap();
    let pid = engine_pid_in(&c.server_dir(idx), 0).unwrap();
    c.kill9(idx);
    let survivors = (0..3)
        .filter(|k| *k != idx)
        .map(|k| c.addr(k))
        .collect::<Vec<_>>()
        .join(",");
    wait_for("a new leader", Duration::from_secs(30), || {
        leader(&c, &survivors).is_some_and(|n| n != l)
    });
    let list = c.dmg_json(&survivors, &["pool", "list"]);
    assert_eq!(list["pools"][0]["uuid"], uuid.as_str(), "{list}");
    c.start(idx);
    // Ready again once every rank answers for its shard.
    wait_for("pool ready on all ranks", Duration::from_secs(30), || {
        c.dmg_json(&all, &["pool", "query", "tank"])["state"] == "Ready"
    });
    assert_eq!(
        engine_pid_in(&c.server_dir(idx), 0),
        Some(pid),
        "engine re-adopted, not restarted"
    );

    c.dmg_json(&all, &["pool", "destroy", "tank"]);
    for k in 0..3 {
        assert!(
            !c.server_dir(k).join(format!("scm0/pools/{uuid}")).exists(),
            "shard left on server {k}"
        );
    }
}
