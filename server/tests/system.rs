//! End-to-end: real daos_server + daos_engine processes on loopback, driven through
//! the real dmg binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::{bin, wait_for, EngineSpec, System};

fn pool_labels(sys: &System) -> Vec<String> {
    let v = sys.dmg_json(&["pool", "list"]);
    v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn format_pool_lifecycle_and_errors() {
    let sys = System::new(&[EngineSpec::default()]);
    // Before format the system has no members, and a pool cannot be made.
    assert_eq!(
        sys.dmg_json(&["system", "query"])["members"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert!(!sys
        .dmg(&["pool", "create", "early", "--size", "1GiB"])
        .status
        .success());

    sys.format();
    let q = sys.dmg_json(&["system", "query"]);
    let m = &q["members"][0];
    assert_eq!(m["rank"], 0);
    assert_eq!(m["state"], "joined");
    assert!(m["fabric_uri"]
        .as_str()
        .unwrap()
        .starts_with("tcp://127.0.0.1:"));
    assert!(sys
        .dmg_ok(&["system", "leader-query"])
        .contains(&format!("127.0.0.1:{}", sys.port)));

    let out = sys.dmg_ok(&["pool", "create", "tank", "--size", "1GiB"]);
    assert!(out.contains("UUID"), "{out}");
    assert_eq!(pool_labels(&sys), vec!["tank"]);
    let q = sys.dmg_json(&["pool", "query", "tank"]);
    let info = &q;
    assert_eq!(info["total_targets"], 2);
    let scm = info["tier_stats"][0]["total"].as_u64().unwrap();
    let nvme = info["tier_stats"][1]["total"].as_u64().unwrap();
    assert!(scm > 0 && nvme > 0, "{q}");
    assert!(scm + nvme <= 1 << 30 && scm + nvme > 1000 << 20, "{q}");
    // The engine really reserved the space: a VOS file per target in the SCM mount.
    let uuid = info["uuid"].as_str().unwrap().to_string();
    for t in 0..2 {
        let f = sys.path(&format!("scm0/pools/{uuid}/vos-{t}"));
        assert!(f.metadata().unwrap().len() > 0, "{}", f.display());
    }

    // Duplicate label: DER_EXIST, nothing changes.
    let o = sys.dmg(&["pool", "create", "tank", "--size", "128MiB"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("DER_EXIST"));
    assert_eq!(pool_labels(&sys), vec!["tank"]);

    // Too large for the free space: DER_NOSPACE, nothing changes.
    let o = sys.dmg(&["-j", "pool", "create", "big", "--scm-size", "4GiB"]);
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], -1007, "{v}");
    assert_eq!(pool_labels(&sys), vec!["tank"]);

    // Properties.
    sys.dmg_ok(&["pool", "set-prop", "tank", "reclaim:disabled"]);
    let props = sys.dmg_json(&["pool", "get-prop", "tank"]);
    let reclaim = props
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "reclaim")
        .unwrap();
    assert_eq!(reclaim["value"], "disabled");
    let o = sys.dmg(&["pool", "set-prop", "tank", "reclaim:sometimes"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("DER_INVAL"),
        "{o:?}"
    );

    // Destroy, then destroy again: DER_NONEXIST.
    sys.dmg_ok(&["pool", "destroy", "tank"]);
    assert!(pool_labels(&sys).is_empty());
    assert!(!sys.path(&format!("scm0/pools/{uuid}")).exists());
    let o = sys.dmg(&["pool", "destroy", "tank"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("DER_NONEXIST"),
        "{o:?}"
    );

    // The freed space can be used again.
    sys.dmg_ok(&["pool", "create", "again", "--size", "1GiB"]);
    assert!(
        sys.error_lines("server.log").is_empty(),
        "{:?}",
        sys.error_lines("server.log")
    );
}

#[test]
fn server_kill9_keeps_state_and_readopts_engines() {
    let mut sys = System::new(&[
        EngineSpec::default(),
        EngineSpec {
            targets: 1,
            ..Default::default()
        },
    ]);
    sys.format();
    sys.dmg_ok(&["pool", "create", "p1", "--size", "2GiB"]);
    sys.dmg_ok(&[
        "pool",
        "create",
        "p2",
        "--scm-size",
        "64MiB",
        "--ranks",
        "1",
    ]);
    let before = sys.dmg_json(&["pool", "list"]);
    let members_before = sys.dmg_json(&["system", "query"]);
    let e0 = sys.engine_pid(0).unwrap();

    sys.kill9_server();
    sys.start_server();
    sys.wait_joined(2);
    // The engines were re-adopted, not restarted.
    assert_eq!(sys.engine_pid(0), Some(e0));
    assert_eq!(sys.dmg_json(&["pool", "list"])["pools"], before["pools"]);
    let after = sys.dmg_json(&["system", "query"]);
    for (a, b) in after["members"]
        .as_array()
        .unwrap()
        .iter()
        .zip(members_before["members"].as_array().unwrap())
    {
        assert_eq!((&a["rank"], &a["uuid"]), (&b["rank"], &b["uuid"]));
    }

    // A clean stop stops the engines too; a restart brings them back with the same ranks.
    assert!(sys.stop_server().success());
    wait_for("engines to exit", Duration::from_secs(10), || {
        sys.engine_pid(0).is_none() && sys.engine_pid(1).is_none()
    });
    sys.start_server();
    sys.wait_joined(2);
    assert_ne!(sys.engine_pid(0), Some(e0));
    assert_eq!(sys.dmg_json(&["pool", "list"])["pools"], before["pools"]);
}

#[test]
fn dead_engine_is_errored_and_restarts_on_system_start() {
    let sys = System::new(&[EngineSpec::default()]);
    sys.format();
    let pid = sys.engine_pid(0).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("rank 0 errored", Duration::from_secs(10), || {
        sys.dmg_json(&["system", "query"])["members"][0]["state"] == "errored"
    });
    sys.dmg_ok(&["system", "start"]);
    assert_eq!(
        sys.dmg_json(&["system", "query"])["members"][0]["state"],
        "joined"
    );
    assert_ne!(sys.engine_pid(0), Some(pid));

    sys.dmg_ok(&["system", "stop"]);
    assert_eq!(
        sys.dmg_json(&["system", "query"])["members"][0]["state"],
        "stopped"
    );
    assert!(sys.engine_pid(0).is_none());
    // A pool cannot be created on a stopped system.
    assert!(!sys
        .dmg(&["pool", "create", "x", "--size", "1GiB"])
        .status
        .success());
    sys.dmg_ok(&["system", "start"]);
    sys.dmg_ok(&["pool", "create", "x", "--size", "1GiB"]);
}

/// Runs `daos_server start` on a config with `text`; returns its output.
fn start_with(dir: &std::path::Path, text: &str) -> std::process::Output {
    let cfg = dir.join("bad.yml");
    std::fs::write(&cfg, text).unwrap();
    std::process::Command::new(bin("daos_server"))
        .args(["start", "-o"])
        .arg(&cfg)
        .output()
        .unwrap()
}

#[test]
fn bad_config_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = start_with(
        dir.path(),
        "port: 10001\nmgmt_svc_replicas: [localhost]\ntransport_config: {allow_insecure: true}\nengines:\n- targets: 0\n  fabric_iface_port: 1\n  storage: []\n",
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("engines[0].targets"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let o = start_with(dir.path(), "port: 10001\nfrobnicate: yes\n");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("frobnicate"));
}
