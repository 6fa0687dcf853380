//! Runs the built dmg binary: argument errors, unreachable servers and JSON
//! output, without any server.

// Helpers outside #[test] fns are test code too: a failure should panic.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An insecure config pointing at a port nobody listens on.
fn config(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("daos_control.yml");
    std::fs::write(
        &path,
        "name: daos_server\nport: 1\nhostlist: ['127.0.0.1']\ntransport_config:\n  allow_insecure: true\n",
    )
    .unwrap();
    path
}

fn dmg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmg"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
}

#[test]
fn unreachable_host_fails_fast_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let start = Instant::now();
    let out = dmg(&[
        "-o",
        cfg.to_str().unwrap(),
        "-l",
        "127.0.0.1:1",
        "system",
        "query",
    ]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("ERROR: dmg: system query failed: "),
        "{err}"
    );
    assert!(lines[0].contains("127.0.0.1:1"), "{err}");
    assert!(lines[0].contains("DER_UNREACH(-1006)"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unreachable_host_json_reports_der_unreach() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    // -j after the subcommand, as scripts write it.
    let out = dmg(&[
        "-o",
        cfg.to_str().unwrap(),
        "-l",
        "127.0.0.1:1",
        "system",
        "query",
        "-j",
    ]);
    assert!(!out.status.success());
    let v = stdout_json(&out);
    assert_eq!(v["status"], -1006);
    assert_eq!(v["response"], Value::Null);
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1:1"));
}

#[test]
fn every_server_command_emits_json_when_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let cfg = cfg.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["system", "query", "-v"],
        &["system", "stop", "--force"],
        &["system", "start", "-r", "0-1"],
        &["system", "leader-query"],
        &["storage", "scan", "-v"],
        &["storage", "format"],
        &["storage", "query", "usage"],
        &["pool", "create", "tank", "-z", "1GB", "-u", "a", "-g", "b"],
        &["pool", "list", "-v"],
        &["pool", "query", "tank"],
        &["pool", "destroy", "tank", "-f"],
        &["pool", "get-prop", "tank", "label"],
        &["pool", "set-prop", "tank", "reclaim:lazy"],
        &["server-version"],
    ];
    for cmd in commands {
        let mut args = vec!["-o", cfg, "-j"];
        args.extend_from_slice(cmd);
        let out = dmg(&args);
        assert!(!out.status.success(), "{cmd:?}");
        let v = stdout_json(&out);
        assert_eq!(v["status"], -1006, "{cmd:?}: {v}");
        assert!(v["error"].is_string(), "{cmd:?}: {v}");
    }
}

#[test]
fn argument_errors_are_json_under_j() {
    let out = dmg(&["pool", "create", "tank", "-j"]);
    assert!(!out.status.success());
    let v = stdout_json(&out);
    assert_eq!(v["status"], -1003);
    assert!(v["error"].as_str().unwrap().contains("--size"));
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, "hostlist: [a]\ntransport_confg: {}\n").unwrap();
    let out = dmg(&["-o", path.to_str().unwrap(), "system", "query"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("ERROR: dmg: config "), "{err}");
    assert!(err.contains("transport_confg"), "{err}");

    let out = dmg(&["-o", "/nonexistent/daos_control.yml", "-j", "pool", "list"]);
    let v = stdout_json(&out);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/daos_control.yml"));
}

#[test]
fn version_works_offline() {
    let out = dmg(&["version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("dmg version "));
    let out = dmg(&["version", "-j"]);
    let v = stdout_json(&out);
    assert_eq!(v["status"], 0);
    assert!(v["response"]["version"].is_string());
}
