//! Mutual TLS on the management channel: dmg with certificates from the system's
//! CA works; a client without TLS, with a certificate from another CA, or with a
//! certificate of another component (agent), is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use testkit::{bin, make_certs, EngineSpec, System};

#[test]
fn tls_admits_only_clients_of_the_ca() {
    let sys = System::with_tls(&[EngineSpec::default()]);
    sys.format();
    sys.dmg_ok(&["pool", "create", "tank", "--size", "1GiB"]);
    assert_eq!(sys.dmg_json(&["pool", "list"])["pools"][0]["label"], "tank");

    // An agent's certificate is from the same CA but may not administer.
    let agent_cfg = sys.path("agent_control.yml");
    let certs = sys.dir.path().join("certs");
    std::fs::write(
        &agent_cfg,
        format!(
            "port: {p}\nhostlist: [\"127.0.0.1:{p}\"]\ntransport_config:\n  allow_insecure: false\n  ca_cert: {c}/daosCA.crt\n  cert: {c}/agent.crt\n  key: {c}/agent.key\n",
            p = sys.port,
            c = certs.display()
        ),
    )
    .unwrap();
    let o = Command::new(bin("dmg"))
        .arg("-o")
        .arg(&agent_cfg)
        .args(["-j", "pool", "destroy", "tank"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], -1001, "{v}");
    assert_eq!(sys.dmg_json(&["pool", "list"])["pools"][0]["label"], "tank");

    // Insecure client against a TLS server.
    let o = Command::new(bin("dmg"))
        .args([
            "-i",
            "-l",
            &format!("127.0.0.1:{}", sys.port),
            "system",
            "query",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "insecure dmg got through: {o:?}");

    // A certificate signed by a different CA.
    let other = sys.path("other");
    make_certs(&other, "otherCA");
    let cfg = sys.path("other_control.yml");
    std::fs::write(
        &cfg,
        format!(
            "port: {p}\nhostlist: [\"127.0.0.1:{p}\"]\ntransport_config:\n  allow_insecure: false\n  ca_cert: {c}/certs/daosCA.crt\n  cert: {o}/admin.crt\n  key: {o}/admin.key\n",
            p = sys.port,
            c = sys.dir.path().display(),
            o = other.display()
        ),
    )
    .unwrap();
    let o = Command::new(bin("dmg"))
        .arg("-o")
        .arg(&cfg)
        .args(["system", "query"])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "foreign certificate got through: {o:?}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
