//! Runs the real `daos_agent` binary in a tempdir and talks to it through
//! libdaos, as a client process would.
//!
//! Every agent started here is stopped by its PID: by the test, or by the
//! [`AgentProc`] guard's drop when a test fails half way.

// Test helpers outside #[test] functions panic on setup failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libdaos::agent::AgentClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message as _;
use proto::auth_pb::AuthSys;
use proto::Der;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_daos_agent");

/// A port on 127.0.0.1 nobody listens on (it was free a moment ago).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One running `daos_agent start`, killed on drop if still running.
struct AgentProc {
    child: Child,
    dir: tempfile::TempDir,
}

impl AgentProc {
    /// Starts an agent with a config in a fresh tempdir; `extra` is appended to it.
    fn start(extra: &str) -> AgentProc {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "name: daos_server\n\
             access_points: ['127.0.0.1:{port}']\n\
             runtime_dir: {run}\n\
             log_file: {log}\n\
             log_mask: DEBUG\n\
             transport_config:\n  allow_insecure: true\n{extra}",
            port = dead_port(),
            run = dir.path().join("run").display(),
            log = dir.path().join("agent.log").display(),
        );
        std::fs::write(dir.path().join("daos_agent.yml"), cfg).unwrap();
        let child = Command::new(BIN)
            .args(["start", "-o"])
            .arg(dir.path().join("daos_agent.yml"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
            .spawn()
            .unwrap();
        let mut a = AgentProc { child, dir };
        a.wait_ready();
        a
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn sock(&self) -> PathBuf {
        self.run_dir().join("daos_sock")
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// The log file, then whatever went to stderr (fatal errors before logging starts).
    fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("agent.log"), read("stderr.txt"))
    }

    /// Waits until the socket accepts connections.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("daos_agent exited early ({st}); log:\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(self.sock()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "daos_agent socket {} never appeared; log:\n{}",
            self.sock().display(),
            self.log()
        );
    }

    /// Waits for the agent to exit, up to `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_with_limit(&mut self.child, limit)
    }

    /// Fails on ERROR lines in the log other than those containing one of `expected`.
    fn assert_no_unexpected_errors(&self, expected: &[&str]) {
        let log = self.log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .filter(|l| !expected.iter().any(|e| l.contains(e)))
            .collect();
        assert!(
            bad.is_empty(),
            "unexpected ERROR lines in the agent log:\n{}",
            bad.join("\n")
        );
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_with_limit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn credential_is_signed_and_names_this_process() {
    let a = AgentProc::start("");
    let mut c = AgentClient::connect(Some(&a.run_dir())).await.unwrap();
    let cred = c.request_credential().await.unwrap();

    let pem = std::fs::read_to_string(a.run_dir().join("agent_cred.pub")).unwrap();
    let key = proto::auth::verifying_key_from_pem(&pem).unwrap();
    let sys = proto::auth::verify(&cred, &key).unwrap();
    assert_eq!(sys.uid, nix::unistd::getuid().as_raw());
    assert_eq!(sys.gid, nix::unistd::getgid().as_raw());
    assert_eq!(sys.pid, std::process::id());
    assert!(
        sys.user.ends_with('@') && sys.group.ends_with('@'),
        "{sys:?}"
    );
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(sys.machinename, host.to_string_lossy());
    assert!(sys.stamp > 0);

    // Claiming another uid breaks the signature.
    let mut forged = cred.clone();
    let token = forged.token.as_mut().unwrap();
    let mut t = AuthSys::decode(token.data.as_slice()).unwrap();
    t.uid = t.uid.wrapping_add(1);
    token.data = t.encode_to_vec();
    assert_eq!(
        proto::auth::verify(&forged, &key).unwrap_err().der,
        Der::NO_PERM
    );

    // Files: the signing key private, the socket open to every local user.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&a.run_dir().join("agent_cred.key")), 0o600);
    assert_eq!(mode(&a.sock()), 0o666);
    assert_eq!(mode(&a.run_dir()), 0o755);

    // The same connection serves several calls.
    let again = c.request_credential().await.unwrap();
    assert_eq!(proto::auth::verify(&again, &key).unwrap().uid, sys.uid);
    a.assert_no_unexpected_errors(&[]);
}

#[tokio::test]
async fn attach_info_without_servers_is_unreach_quickly() {
    let a = AgentProc::start("");
    let mut c = AgentClient::connect(Some(&a.run_dir())).await.unwrap();
    let t0 = Instant::now();
    let e = c.get_attach_info("daos_server").await.unwrap_err();
    assert_eq!(e.der(), Der::UNREACH, "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    // Still unreachable on the next call: nothing bad was cached.
    assert_eq!(c.get_attach_info("").await.unwrap_err().der(), Der::UNREACH);

    // Another system's name is refused outright.
    let e = c.get_attach_info("other_sys").await.unwrap_err();
    assert_eq!(e.der(), Der::INVAL, "{e}");

    // The CLI view of the same agent.
    let cfg = a.dir.path().join("daos_agent.yml");
    let (st, _, err) = run_to_end(&["dump-attachinfo", "-o", cfg.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("DER_UNREACH"), "{err}");
    a.assert_no_unexpected_errors(&["attach info for system"]);
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_kill_the_agent() {
    let a = AgentProc::start("");
    let mut good = AgentClient::connect(Some(&a.run_dir())).await.unwrap();
    good.request_credential().await.unwrap();

    let mut b = [0u8; 1];
    // A frame that does not decode as a call.
    let mut raw = tokio::net::UnixStream::connect(a.sock()).await.unwrap();
    raw.write_all(&5u32.to_le_bytes()).await.unwrap();
    raw.write_all(&[0xff; 5]).await.unwrap();
    assert_eq!(
        raw.read(&mut b).await.unwrap(),
        0,
        "agent should close a garbage connection"
    );
    // A length prefix far over the limit.
    let mut raw = tokio::net::UnixStream::connect(a.sock()).await.unwrap();
    raw.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    assert_eq!(raw.read(&mut b).await.unwrap(), 0);
    // A truncated frame, then hang up.
    let mut raw = tokio::net::UnixStream::connect(a.sock()).await.unwrap();
    raw.write_all(&100u32.to_le_bytes()).await.unwrap();
    raw.write_all(&[1, 2, 3]).await.unwrap();
    drop(raw);

    // Existing and new clients are still served.
    good.request_credential().await.unwrap();
    let mut fresh = AgentClient::connect(Some(&a.run_dir())).await.unwrap();
    fresh.request_credential().await.unwrap();
    a.assert_no_unexpected_errors(&[]);
}

#[tokio::test]
async fn sigterm_exits_zero_and_removes_the_socket() {
    let mut a = AgentProc::start("");
    AgentClient::connect(Some(&a.run_dir()))
        .await
        .unwrap()
        .request_credential()
        .await
        .unwrap();
    kill(a.pid(), Signal::SIGTERM).unwrap();
    let st = a.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "exit status {st}; log:\n{}", a.log());
    assert!(!a.sock().exists(), "socket left behind");
    // The key survives for the next start.
    assert!(a.run_dir().join("agent_cred.key").exists());
    assert!(a.log().contains("shutting down"), "{}", a.log());
    a.assert_no_unexpected_errors(&[]);
}

#[tokio::test]
async fn second_agent_on_the_same_socket_refuses_to_start() {
    let a = AgentProc::start("");
    let mut second = Command::new(BIN)
        .args(["start", "-o"])
        .arg(a.dir.path().join("daos_agent.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_with_limit(&mut second, Duration::from_secs(15));
    assert!(!st.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("already listening"), "{err}");
    // The first agent still answers.
    AgentClient::connect(Some(&a.run_dir()))
        .await
        .unwrap()
        .request_credential()
        .await
        .unwrap();
}

/// Runs `daos_agent ARGS` to completion (with a time limit); returns status and stderr.
fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_with_limit(&mut child, Duration::from_secs(15));
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (st, out, err)
}

#[test]
fn bad_config_exits_nonzero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    for (text, key) in [
        (format!("runtime_dir: {}\nport: 0\n", run.display()), "port"),
        (
            format!("runtime_dir: {}\nacess_points: [a]\n", run.display()),
            "acess_points",
        ),
        (
            format!("runtime_dir: {}\nlog_mask: LOUD\n", run.display()),
            "log_mask",
        ),
        (
            format!(
                "runtime_dir: {}\ntransport_config:\n  ca_cert: /nonexistent/ca.crt\n",
                run.display()
            ),
            "transport_config.ca_cert",
        ),
    ] {
        let path = dir.path().join("bad.yml");
        std::fs::write(&path, &text).unwrap();
        let (st, _, err) = run_to_end(&["start", "-o", path.to_str().unwrap()]);
        assert!(!st.success(), "{text:?} was accepted");
        assert!(
            err.contains(key),
            "{text:?}: stderr {err:?} does not name {key}"
        );
        assert!(!run.join("daos_sock").exists());
    }
    // No agent running there: dump-attachinfo says so.
    let path = dir.path().join("ok.yml");
    std::fs::write(&path, format!("runtime_dir: {}\n", run.display())).unwrap();
    let (st, _, err) = run_to_end(&["dump-attachinfo", "-o", path.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        err.contains("not reachable") && err.contains("is it running?"),
        "{err}"
    );

    let (st, _, err) = run_to_end(&["start", "-o", "/nonexistent/daos_agent.yml"]);
    assert!(!st.success());
    assert!(err.contains("/nonexistent/daos_agent.yml"), "{err}");
}

#[test]
fn version_and_help() {
    let (st, out, _) = run_to_end(&["version"]);
    assert!(st.success());
    assert_eq!(out.trim(), format!("daos_agent version {}", proto::VERSION));
    let (st, out, _) = run_to_end(&["-j", "version"]);
    assert!(st.success());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], proto::VERSION);
    let (st, out, _) = run_to_end(&["--help"]);
    assert!(st.success());
    assert!(
        out.contains("start") && out.contains("--config-path"),
        "{out}"
    );
}
