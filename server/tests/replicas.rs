//! The management service as a raft group of three daos_server processes on
//! loopback: a leader is elected, `kill -9` of the leader elects another from the
//! two left, and the killed server rejoins as a follower when restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{bin, free_port, wait_for};

struct Replica {
    port: u16,
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self) {
        let log = std::fs::File::create(self.config.with_extension("stderr")).unwrap();
        let child = Command::new(bin("daos_server"))
            .args(["start", "-o"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for("daos_server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn leader(hosts: &str) -> Option<String> {
    let o = Command::new(bin("dmg"))
        .args(["-i", "-l", hosts, "-j", "system", "leader-query"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["response"]["current_leader"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

#[test]
fn three_replicas_elect_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let reps: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let mut replicas: Vec<Replica> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let d = dir.path().join(format!("s{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let config = d.join("daos_server.yml");
            std::fs::write(
                &config,
                format!(
                    "port: {port}\nmgmt_svc_replicas: [{}]\nsocket_dir: {d}/sock\ntransport_config:\n  allow_insecure: true\n\
                     control_log_file: {d}/server.log\ncontrol_log_mask: DEBUG\ncontrol_metadata:\n  path: {d}/meta\nengines: []\n",
                    reps.join(", "),
                    d = d.display()
                ),
            )
            .unwrap();
            Replica { port: *port, config, child: None }
        })
        .collect();
    for r in &mut replicas {
        r.start();
    }
    let all = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut first = None;
    wait_for("a leader", Duration::from_secs(30), || {
        first = leader(&all);
        first.is_some()
    });
    let first = first.unwrap();
    // Every replica agrees on it.
    for p in &ports {
        assert_eq!(
            leader(&format!("127.0.0.1:{p}")).as_deref(),
            Some(first.as_str())
        );
    }

    let idx = ports
        .iter()
        .position(|p| first.ends_with(&format!(":{p}")))
        .unwrap();
    replicas[idx].kill9();
    let survivors = ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != idx)
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut second = None;
    wait_for(
        "a new leader among the survivors",
        Duration::from_secs(30),
        || {
            second = leader(&survivors).filter(|l| *l != first);
            second.is_some()
        },
    );
    // The survivors answer management calls through the new leader.
    let o = Command::new(bin("dmg"))
        .args(["-i", "-l", &survivors, "-j", "system", "query"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");

    // The killed replica comes back as a follower of the new leader.
    replicas[idx].start();
    let second = second.unwrap();
    wait_for(
        "the restarted replica to follow",
        Duration::from_secs(30),
        || leader(&format!("127.0.0.1:{}", ports[idx])).as_deref() == Some(second.as_str()),
    );
}
