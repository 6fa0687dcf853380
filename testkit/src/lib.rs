//! Integration-test harness: a real single-node system ([`System`]) or several
//! servers on loopback ([`Cluster`]) in a temp directory.
//!
//! [`System`] writes a `daos_server.yml` (tmpfs SCM mounts, file-backed bulk
//! devices, its own sockets and ports), starts `daos_server` and stops it by PID.
//! Dropping it stops every process it started (server, engines, agent: all by
//! recorded PID) and unmounts the tmpfs mounts, even when a test fails.
//! Binaries come from the cargo target directory; build them first
//! (`cargo build --workspace --bins`, as the test script does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    // target/debug/deps/<test> -> target/debug
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in ["daos_server", "daos_engine", "dmg", "daos_agent", "daos"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: run `cargo build --workspace --bins` before the tests",
            dir.join(b).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A TCP port nobody uses right now, below the kernel's ephemeral range
/// (32768 and up by default): a port the kernel handed out for `:0` may be
/// given to an outgoing connection before the server it was meant for binds
/// it. Each call of one process gets another port; processes start at
/// different places.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {LOW}..{}", LOW + SPAN);
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Waits until `f` holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A `daos_server.yml` for a server whose files live under `d`.
pub fn server_yaml(
    d: &Path,
    port: u16,
    replicas: &[String],
    transport: &str,
    engines: &[EngineSpec],
) -> String {
    let d = d.display();
    let reps: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
    let mut s = format!(
        "name: daos_server\nport: {port}\nmgmt_svc_replicas: [{reps}]\nsocket_dir: {d}/sock\n\
         {transport}control_log_file: {d}/server.log\ncontrol_log_mask: DEBUG\n\
         control_metadata:\n  path: {d}/meta\nengines:\n",
        reps = reps.join(", "),
    );
    for (i, e) in engines.iter().enumerate() {
        s += &format!(
            "- targets: {t}\n  fabric_iface: lo\n  fabric_iface_port: {fp}\n  log_file: {d}/engine{i}.log\n  log_mask: DEBUG\n  storage:\n\
             \x20 - class: ram\n    scm_mount: {d}/scm{i}\n    scm_size: {scm}MiB\n\
             \x20 - class: file\n    bdev_list: [{d}/bdev{i}]\n    bdev_size: {bd}MiB\n",
            t = e.targets,
            fp = free_port(),
            scm = e.scm_mib,
            bd = e.bdev_mib
        );
    }
    if engines.is_empty() {
        s = s.replace("engines:\n", "engines: []\n");
    }
    s
}

/// Starts `daos_server start -o config` (output beside the config) and waits for `port`.
pub fn spawn_server(config: &Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("stderr"))
        .unwrap();
    let child = Command::new(bin("daos_server"))
        .args(["start", "-o"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("daos_server to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

/// PID of engine `idx` of the server whose files are under `d`, if it is alive.
pub fn engine_pid_in(d: &Path, idx: usize) -> Option<i32> {
    let s = std::fs::read_to_string(d.join(format!("sock/daos_engine_{idx}.pid"))).ok()?;
    s.trim().parse().ok().filter(|p| pid_alive(*p))
}

/// Kills the `n` engines of the server under `d` (by their pid files) and
/// unmounts their SCM tmpfs. Never panics: it runs from `Drop`.
fn stop_engines(d: &Path, n: usize) {
    for i in 0..n {
        if let Some(pid) = engine_pid_in(d, i) {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            let end = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = nix::mount::umount2(&d.join(format!("scm{i}")), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Stops a server child: SIGTERM, then SIGKILL after 20 s. Never panics.
fn stop_child(mut c: Child) {
    kill(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Several servers on 127.0.0.1, each with its own engines, all of them
/// management service replicas. Dropping it stops everything it started.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    pub engines: Vec<EngineSpec>,
    servers: Vec<Option<Child>>,
}

impl Cluster {
    /// Writes the configs and starts `n` servers with `engines` each (not formatted).
    pub fn new(n: usize, engines: &[EngineSpec]) -> Cluster {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests mount tmpfs SCM tiers and must run as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("daos-cluster")
            .tempdir()
            .unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let reps: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let tc = "transport_config:\n  allow_insecure: true\n";
        for (k, port) in ports.iter().enumerate() {
            let d = dir.path().join(format!("s{k}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("daos_server.yml"),
                server_yaml(&d, *port, &reps, tc, engines),
            )
            .unwrap();
        }
        let mut c = Cluster {
            dir,
            ports,
            engines: engines.to_vec(),
            servers: (0..n).map(|_| None).collect(),
        };
        for k in 0..n {
            c.start(k);
        }
        c
    }

    /// The files of server `k`.
    pub fn server_dir(&self, k: usize) -> PathBuf {
        self.dir.path().join(format!("s{k}"))
    }

    pub fn addr(&self, k: usize) -> String {
        format!("127.0.0.1:{}", self.ports[k])
    }

    pub fn start(&mut self, k: usize) {
        let cfg = self.server_dir(k).join("daos_server.yml");
        self.servers[k] = Some(spawn_server(&cfg, self.ports[k]));
    }

    /// `kill -9` of server `k`; its engines stay up.
    pub fn kill9(&mut self, k: usize) {
        if let Some(mut c) = self.servers[k].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Runs dmg with `hosts` (e.g. "127.0.0.1:1,127.0.0.1:2") and `args`.
    pub fn dmg(&self, hosts: &str, args: &[&str]) -> Output {
        Command::new(bin("dmg"))
            .args(["-i", "-l", hosts])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs dmg with `-j` against `hosts`, requires success, returns `response`.
    pub fn dmg_json(&self, hosts: &str, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        let o = self.dmg(hosts, &a);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "dmg {args:?}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("dmg {args:?}: invalid JSON ({e}): {out}"));
        v["response"].clone()
    }

    /// All servers' addresses, comma separated.
    pub fn all(&self) -> String {
        (0..self.ports.len())
            .map(|k| self.addr(k))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until `n` ranks are joined, asking `hosts`.
    pub fn wait_joined(&self, hosts: &str, n: usize) {
        wait_for(
            &format!("{n} joined ranks"),
            Duration::from_secs(60),
            || {
                let o = self.dmg(hosts, &["-j", "system", "query"]);
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
                    return false;
                };
                v["response"]["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().filter(|x| x["state"] == "joined").count() == n)
            },
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.servers.iter_mut().filter_map(Option::take) {
            stop_child(c);
        }
        for k in 0..self.ports.len() {
            stop_engines(&self.server_dir(k), self.engines.len());
        }
    }
}

/// Engine shape for [`System::new`].
#[derive(Clone, Copy)]
pub struct EngineSpec {
    pub targets: u32,
    pub scm_mib: u64,
    pub bdev_mib: u64,
}

impl Default for EngineSpec {
    fn default() -> Self {
        EngineSpec {
            targets: 2,
            scm_mib: 512,
            bdev_mib: 1024,
        }
    }
}

/// Writes a CA and certificates signed by it into `dir` with openssl, as DAOS's
/// `gen_certificates.sh` lays them out: `daosCA.crt`, `server.{crt,key}` (name
/// `server`), `admin.{crt,key}`, `agent.{crt,key}`.
pub fn make_certs(dir: &Path, ca_name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (installed by scripts/test.sh)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let subj = format!("/CN={ca_name}");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &subj,
        "-keyout",
        "daosCA.key",
        "-out",
        "daosCA.crt",
    ]);
    for name in ["server", "admin", "agent"] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .unwrap();
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "daosCA.crt",
            "-CAkey",
            "daosCA.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
    }
}

/// A running single-node system.
pub struct System {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    pub engines: Vec<EngineSpec>,
    /// Certificates for mutual TLS; `None` runs insecure.
    pub certs: Option<PathBuf>,
    server: Option<Child>,
    agent: Option<Child>,
}

impl System {
    /// Writes the config for `engines` and starts daos_server (not yet formatted).
    pub fn new(engines: &[EngineSpec]) -> System {
        Self::build(engines, false)
    }

    /// Like [`System::new`], with mutual TLS on the management channel.
    pub fn with_tls(engines: &[EngineSpec]) -> System {
        Self::build(engines, true)
    }

    fn build(engines: &[EngineSpec], tls: bool) -> System {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests mount tmpfs SCM tiers and must run as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("daos-test")
            .tempdir()
            .unwrap();
        let port = free_port();
        let config = dir.path().join("daos_server.yml");
        let certs = tls.then(|| dir.path().join("certs"));
        if let Some(c) = &certs {
            make_certs(c, "daosCA");
        }
        let mut sys = System {
            dir,
            port,
            config,
            engines: engines.to_vec(),
            certs,
            server: None,
            agent: None,
        };
        std::fs::write(&sys.config, sys.config_text()).unwrap();
        sys.start_server();
        sys
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The `transport_config` section for a component using `cert`/`key` of `name`.
    pub fn transport(&self, name: &str) -> String {
        match &self.certs {
            None => "transport_config:\n  allow_insecure: true\n".into(),
            Some(c) => format!(
                "transport_config:\n  allow_insecure: false\n  ca_cert: {c}/daosCA.crt\n  cert: {c}/{name}.crt\n  key: {c}/{name}.key\n",
                c = c.display()
            ),
        }
    }

    /// The daos_server.yml this system runs with.
    pub fn config_text(&self) -> String {
        let reps = [format!("127.0.0.1:{}", self.port)];
        server_yaml(
            self.dir.path(),
            self.port,
            &reps,
            &self.transport("server"),
            &self.engines,
        )
    }

    /// Starts daos_server and waits for its port.
    pub fn start_server(&mut self) {
        self.server = Some(spawn_server(&self.config, self.port));
    }

    pub fn server_pid(&self) -> i32 {
        self.server.as_ref().expect("server running").id() as i32
    }

    /// `kill -9` of daos_server; engines stay up.
    pub fn kill9_server(&mut self) {
        let mut c = self.server.take().expect("server running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM to daos_server and wait for it; returns its exit status.
    pub fn stop_server(&mut self) -> std::process::ExitStatus {
        let mut c = self.server.take().expect("server running");
        kill(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
        c.wait().unwrap()
    }

    /// PID of engine `idx` from the server's pid file, if it is alive.
    pub fn engine_pid(&self, idx: usize) -> Option<i32> {
        engine_pid_in(self.dir.path(), idx)
    }

    /// Writes a daos_control.yml for this system and returns its path.
    pub fn control_config(&self) -> PathBuf {
        let p = self.path("daos_control.yml");
        std::fs::write(
            &p,
            format!(
                "name: daos_server\nport: {}\nhostlist: [\"127.0.0.1:{}\"]\n{}",
                self.port,
                self.port,
                self.transport("admin")
            ),
        )
        .unwrap();
        p
    }

    /// Runs dmg against this system with `args`.
    pub fn dmg(&self, args: &[&str]) -> Output {
        Command::new(bin("dmg"))
            .arg("-o")
            .arg(self.control_config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs dmg and requires success; returns stdout.
    pub fn dmg_ok(&self, args: &[&str]) -> String {
        let o = self.dmg(args);
        assert!(
            o.status.success(),
            "dmg {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs dmg with `-j` and returns the JSON envelope's `response`.
    pub fn dmg_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        let out = self.dmg_ok(&a);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("dmg {args:?}: invalid JSON ({e}): {out}"));
        assert_eq!(v["status"], 0, "{out}");
        v["response"].clone()
    }

    /// Formats storage and waits for every engine to join.
    pub fn format(&self) {
        self.dmg_ok(&["storage", "format"]);
        self.wait_joined(self.engines.len());
    }

    /// Waits until `n` ranks are joined.
    pub fn wait_joined(&self, n: usize) {
        wait_for(
            &format!("{n} joined ranks"),
            Duration::from_secs(30),
            || {
                let o = self.dmg(&["-j", "system", "query"]);
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
                    return false;
                };
                v["response"]["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().filter(|x| x["state"] == "joined").count() == n)
            },
        );
    }

    /// Starts daos_agent pointed at this system; returns its socket dir.
    pub fn start_agent(&mut self) -> PathBuf {
        let ap = format!("127.0.0.1:{}", self.port);
        self.start_agent_with(&[ap])
    }

    /// Starts daos_agent with `access_points`, config in this system's directory;
    /// returns its socket dir.
    pub fn start_agent_with(&mut self, access_points: &[String]) -> PathBuf {
        let rt = self.path("agent");
        std::fs::create_dir_all(&rt).unwrap();
        let cfg = self.path("daos_agent.yml");
        std::fs::write(
            &cfg,
            format!(
                "name: daos_server\naccess_points: {:?}\nruntime_dir: {}\nlog_file: {}\n{}",
                access_points,
                rt.display(),
                self.path("agent.log").display(),
                self.transport("agent")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.path("agent.stderr")).unwrap();
        let child = Command::new(bin("daos_agent"))
            .args(["start", "-o"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let sock = rt.join("daos_sock");
        wait_for("daos_agent socket", Duration::from_secs(20), || {
            sock.exists()
        });
        rt
    }

    /// Runs the `daos` CLI through this system's agent (see [`System::start_agent`]).
    pub fn daos(&self, args: &[&str]) -> Output {
        Command::new(bin("daos"))
            .args(args)
            .env("DAOS_AGENT_DRPC_DIR", self.path("agent"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `daos` and requires success; returns stdout.
    pub fn daos_ok(&self, args: &[&str]) -> String {
        let o = self.daos(args);
        assert!(
            o.status.success(),
            "daos {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Lines at ERROR level in a log file of this system.
    pub fn error_lines(&self, log: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(log))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(String::from)
            .collect()
    }
}

/// A formatted one-engine system (two targets) with its agent, pool `tank`
/// and POSIX container `fs` (64 KiB chunks): what the dfs and dfuse tests
/// start from. Returns the system and the agent's socket directory.
pub fn posix_system() -> (System, PathBuf) {
    let spec = EngineSpec {
        targets: 2,
        scm_mib: 256,
        bdev_mib: 512,
    };
    let mut sys = System::new(&[spec]);
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
    sys.daos_ok(&[
        "container",
        "create",
        "tank",
        "fs",
        "--type",
        "POSIX",
        "--chunk-size",
        "64KiB",
    ]);
    (sys, agent)
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        if let Some(s) = self.server.take() {
            stop_child(s);
        }
        stop_engines(self.dir.path(), self.engines.len());
    }
}
