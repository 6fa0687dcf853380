//! `daos_server.yml`: parsed with DAOS's key names, checked before anything starts.
//!
//! Parsing rejects unknown keys (serde names the key and its place); [`ServerConfig::validate`]
//! rejects values that parse but cannot work, naming the key and the fix. Defaults live
//! in the `default_*` functions of this module and nowhere else.

use std::collections::HashSet;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use proto::names::with_port;
use serde::{Deserialize, Deserializer, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Management service replicas (`host[:port]`). `mgmt_svc_replicas` is the newer spelling.
    #[serde(default)]
    pub access_points: Option<Vec<String>>,
    #[serde(default)]
    pub mgmt_svc_replicas: Option<Vec<String>>,
    #[serde(default = "default_provider")]
    pub provider: String,
    #[serde(default = "default_socket_dir")]
    pub socket_dir: PathBuf,
    #[serde(default)]
    pub transport_config: TransportConfig,
    #[serde(default)]
    pub control_log_file: Option<PathBuf>,
    #[serde(default = "default_log_mask")]
    pub control_log_mask: String,
    /// Where the management service keeps its raft log and snapshots.
    #[serde(default)]
    pub control_metadata: Option<ControlMetadata>,
    /// Fault domain of this server, e.g. `/rack1/host3`.
    #[serde(default)]
    pub fault_path: Option<String>,
    /// Data-plane RPC timeout (seconds) handed to clients.
    #[serde(default = "default_crt_timeout")]
    pub crt_timeout: u32,
    #[serde(default)]
    pub engines: Vec<EngineConfig>,
    /// DAOS keys about hugepages and device binding: accepted so existing files load,
    /// and ignored with a warning (this stack uses no SPDK).
    #[serde(default)]
    pub nr_hugepages: Option<i64>,
    #[serde(default)]
    pub disable_hugepages: Option<bool>,
    #[serde(default)]
    pub disable_vfio: Option<bool>,
    #[serde(default)]
    pub enable_vmd: Option<bool>,
    #[serde(default)]
    pub disable_vmd: Option<bool>,
    #[serde(default)]
    pub system_ram_reserved: Option<u64>,
}

/// TLS settings of the management channel.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    #[serde(default)]
    pub allow_insecure: bool,
    #[serde(default)]
    pub client_cert_dir: Option<PathBuf>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlMetadata {
    pub path: PathBuf,
    #[serde(default)]
    pub device: Option<String>,
}

/// One engine (one rank).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub targets: u32,
    #[serde(default)]
    pub nr_xs_helpers: u32,
    #[serde(default)]
    pub first_core: u32,
    #[serde(default = "default_fabric_iface")]
    pub fabric_iface: String,
    pub fabric_iface_port: u16,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub pinned_numa_node: Option<u32>,
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    #[serde(default = "default_log_mask")]
    pub log_mask: String,
    /// Extra `KEY=VALUE` environment for the engine process.
    #[serde(default)]
    pub env_vars: Vec<String>,
    pub storage: Vec<Tier>,
}

/// A storage tier. The first is the SCM (metadata) tier; the rest are bulk (bdev) tiers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "class", rename_all = "lowercase", deny_unknown_fields)]
pub enum Tier {
    /// A tmpfs of `scm_size` mounted at `scm_mount` by `dmg storage format`.
    Ram {
        scm_mount: PathBuf,
        #[serde(deserialize_with = "gib_size")]
        scm_size: u64,
        #[serde(default)]
        scm_hugepages_disabled: Option<bool>,
    },
    /// Persistent memory: `scm_list` devices, mounted (fsdax) at `scm_mount` by the admin.
    Dcpm {
        scm_mount: PathBuf,
        #[serde(default)]
        scm_list: Vec<String>,
    },
    /// Bulk tier emulated by files of `bdev_size` each, created by `dmg storage format`.
    File {
        bdev_list: Vec<PathBuf>,
        #[serde(deserialize_with = "gib_size")]
        bdev_size: u64,
        #[serde(default)]
        bdev_roles: Vec<String>,
    },
    /// Bulk tier on block devices (`/dev/nvme0n1`, ...), opened directly.
    Nvme {
        bdev_list: Vec<PathBuf>,
        #[serde(default)]
        bdev_roles: Vec<String>,
    },
}

impl Tier {
    pub fn class(&self) -> &'static str {
        match self {
            Tier::Ram { .. } => "ram",
            Tier::Dcpm { .. } => "dcpm",
            Tier::File { .. } => "file",
            Tier::Nvme { .. } => "nvme",
        }
    }

    pub fn scm_mount(&self) -> Option<&Path> {
        match self {
            Tier::Ram { scm_mount, .. } | Tier::Dcpm { scm_mount, .. } => Some(scm_mount),
            _ => None,
        }
    }

    pub fn bdev_list(&self) -> &[PathBuf] {
        match self {
            Tier::File { bdev_list, .. } | Tier::Nvme { bdev_list, .. } => bdev_list,
            _ => &[],
        }
    }
}

impl EngineConfig {
    /// The SCM tier (validated to be the first).
    pub fn scm(&self) -> Option<&Tier> {
        self.storage.first().filter(|t| t.scm_mount().is_some())
    }

    pub fn scm_mount(&self) -> Option<&Path> {
        self.scm().and_then(Tier::scm_mount)
    }

    pub fn bdev_tiers(&self) -> impl Iterator<Item = &Tier> {
        self.storage.iter().filter(|t| t.scm_mount().is_none())
    }
}

/// DAOS writes `scm_size: 16` meaning GiB; we also take a size string such as `512MiB`.
fn gib_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        N(u64),
        S(String),
    }
    match S::deserialize(d)? {
        S::N(n) => n
            .checked_mul(1 << 30)
            .ok_or_else(|| serde::de::Error::custom("size in GiB is too large")),
        S::S(s) => proto::units::parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn default_name() -> String {
    proto::DEFAULT_SYS_NAME.to_string()
}
fn default_port() -> u16 {
    proto::DEFAULT_MGMT_PORT
}
fn default_provider() -> String {
    "ofi+tcp".to_string()
}
fn default_socket_dir() -> PathBuf {
    PathBuf::from("/var/run/daos_server")
}
fn default_log_mask() -> String {
    "INFO".to_string()
}
fn default_fabric_iface() -> String {
    "lo".to_string()
}
fn default_crt_timeout() -> u32 {
    60
}

/// A config file that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {msg} (see docs/config.md for every key)")]
    Parse { path: String, msg: String },
    #[error("config {path}: {key}: {msg}")]
    Invalid {
        path: String,
        key: String,
        msg: String,
    },
}

impl ServerConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let cfg = Self::parse(&text, &p)?;
        cfg.validate(&p)?;
        Ok(cfg)
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            msg: e.to_string(),
        })
    }

    /// The replica list, whichever key spelled it.
    pub fn replicas(&self) -> &[String] {
        self.mgmt_svc_replicas
            .as_deref()
            .or(self.access_points.as_deref())
            .unwrap_or(&[])
    }

    /// Replica addresses with the default port filled in (entries are checked by
    /// [`ServerConfig::validate`]; one that does not parse is kept as written).
    pub fn replica_addrs(&self) -> Vec<String> {
        self.replicas()
            .iter()
            .map(|a| with_port(a, self.port).unwrap_or_else(|_| a.clone()))
            .collect()
    }

    /// Warnings for keys that are accepted but have no effect here.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let ignored = [
            ("nr_hugepages", self.nr_hugepages.is_some()),
            ("disable_hugepages", self.disable_hugepages.is_some()),
            ("disable_vfio", self.disable_vfio.is_some()),
            ("enable_vmd", self.enable_vmd.is_some()),
            ("disable_vmd", self.disable_vmd.is_some()),
            ("system_ram_reserved", self.system_ram_reserved.is_some()),
        ];
        for (k, set) in ignored {
            if set {
                w.push(format!(
                    "{k}: ignored (this stack drives storage without SPDK or hugepages)"
                ));
            }
        }
        if self.transport_config.client_cert_dir.is_some() && self.transport_config.allow_insecure {
            w.push("transport_config.client_cert_dir: ignored in insecure mode (engines take client credentials as given)".to_string());
        }
        if self
            .control_metadata
            .as_ref()
            .is_some_and(|m| m.device.is_some())
        {
            w.push(
                "control_metadata.device: ignored (path must already be on a mounted filesystem)"
                    .to_string(),
            );
        }
        for (i, e) in self.engines.iter().enumerate() {
            if e.pinned_numa_node.is_some() {
                w.push(format!(
                    "engines[{i}].pinned_numa_node: ignored (no NUMA pinning)"
                ));
            }
            for (j, t) in e.storage.iter().enumerate() {
                match t {
                    Tier::Ram { scm_hugepages_disabled: Some(_), .. } => {
                        w.push(format!("engines[{i}].storage[{j}].scm_hugepages_disabled: ignored (no hugepages)"))
                    }
                    Tier::File { bdev_roles, .. } | Tier::Nvme { bdev_roles, .. } if !bdev_roles.is_empty() => {
                        w.push(format!("engines[{i}].storage[{j}].bdev_roles: ignored (metadata lives in the SCM tier)"))
                    }
                    _ => {}
                }
            }
        }
        if self.access_points.is_some() && self.mgmt_svc_replicas.is_none() {
            w.push("access_points: deprecated spelling, use mgmt_svc_replicas".to_string());
        }
        w
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            msg,
        };
        proto::names::check_system_name(&self.name).map_err(|m| bad("name", m))?;
        if self.port == 0 {
            return Err(bad(
                "port",
                "must be a port number between 1 and 65535".into(),
            ));
        }
        if self.access_points.is_some() && self.mgmt_svc_replicas.is_some() {
            return Err(bad(
                "mgmt_svc_replicas",
                "set either mgmt_svc_replicas or access_points, not both".into(),
            ));
        }
        let reps = self.replicas();
        if reps.is_empty() {
            return Err(bad(
                "mgmt_svc_replicas",
                "needs at least one host[:port] (e.g. [localhost]) to run the management service"
                    .into(),
            ));
        }
        if reps.len().is_multiple_of(2) {
            return Err(bad(
                "mgmt_svc_replicas",
                format!(
                    "has {} entries; use an odd number (1, 3 or 5) so a majority exists",
                    reps.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for a in reps {
            let a = with_port(a, self.port).map_err(|e| bad("mgmt_svc_replicas", e))?;
            if !seen.insert(a.clone()) {
                return Err(bad("mgmt_svc_replicas", format!("{a} is listed twice")));
            }
        }
        if !self.socket_dir.is_absolute() {
            return Err(bad(
                "socket_dir",
                format!("{} must be an absolute path", self.socket_dir.display()),
            ));
        }
        if !self.provider.starts_with("ofi+") && self.provider != "tcp" {
            return Err(bad(
                "provider",
                format!("{:?} is not supported: use ofi+tcp", self.provider),
            ));
        }
        if proto::log_mask_level(&self.control_log_mask).is_none() {
            return Err(bad(
                "control_log_mask",
                format!(
                    "{:?} is not a log level; use one of {}",
                    self.control_log_mask,
                    proto::LOG_MASKS.join(", ")
                ),
            ));
        }
        let t = &self.transport_config;
        if !t.allow_insecure {
            for (k, v) in [("ca_cert", &t.ca_cert), ("cert", &t.cert), ("key", &t.key)] {
                if v.is_none() {
                    return Err(bad(
                        &format!("transport_config.{k}"),
                        "required unless allow_insecure is true".into(),
                    ));
                }
            }
        }
        if let Some(m) = &self.control_metadata {
            if !m.path.is_absolute() {
                return Err(bad(
                    "control_metadata.path",
                    format!("{} must be an absolute path", m.path.display()),
                ));
            }
        }
        let mut ports = HashSet::new();
        let mut paths = HashSet::new();
        for (i, e) in self.engines.iter().enumerate() {
            let key = |k: &str| format!("engines[{i}].{k}");
            if e.targets == 0 || e.targets > 64 {
                return Err(bad(
                    &key("targets"),
                    format!("{} is out of range: use 1 to 64", e.targets),
                ));
            }
            if e.nr_xs_helpers > e.targets {
                return Err(bad(
                    &key("nr_xs_helpers"),
                    format!("{} exceeds targets ({})", e.nr_xs_helpers, e.targets),
                ));
            }
            if e.fabric_iface_port == 0 || !ports.insert(e.fabric_iface_port) {
                return Err(bad(
                    &key("fabric_iface_port"),
                    format!(
                        "{} must be nonzero and unique per engine",
                        e.fabric_iface_port
                    ),
                ));
            }
            if e.fabric_iface.is_empty() {
                return Err(bad(
                    &key("fabric_iface"),
                    "must name a network interface, e.g. lo or eth0".into(),
                ));
            }
            if proto::log_mask_level(&e.log_mask).is_none() {
                return Err(bad(
                    &key("log_mask"),
                    format!(
                        "{:?} is not a log level; use one of {}",
                        e.log_mask,
                        proto::LOG_MASKS.join(", ")
                    ),
                ));
            }
            for v in &e.env_vars {
                if !v.contains('=') {
                    return Err(bad(&key("env_vars"), format!("{v:?} is not KEY=VALUE")));
                }
            }
            if e.storage.is_empty() || e.scm().is_none() {
                return Err(bad(
                    &key("storage"),
                    "the first tier must be class ram or dcpm (the SCM tier)".into(),
                ));
            }
            for (j, tier) in e.storage.iter().enumerate() {
                let tkey = |k: &str| format!("engines[{i}].storage[{j}].{k}");
                if j > 0 && tier.scm_mount().is_some() {
                    return Err(bad(
                        &tkey("class"),
                        "only the first tier may be ram or dcpm".into(),
                    ));
                }
                match tier {
                    Tier::Ram {
                        scm_mount,
                        scm_size,
                        ..
                    } => {
                        if *scm_size < (64 << 20) {
                            return Err(bad(
                                &tkey("scm_size"),
                                "must be at least 64 MiB (a number means GiB)".into(),
                            ));
                        }
                        check_abs(scm_mount, &tkey("scm_mount"), origin)?;
                    }
                    Tier::Dcpm {
                        scm_mount,
                        scm_list,
                    } => {
                        check_abs(scm_mount, &tkey("scm_mount"), origin)?;
                        if scm_list.is_empty() {
                            return Err(bad(
                                &tkey("scm_list"),
                                "list the pmem devices, e.g. [/dev/pmem0]".into(),
                            ));
                        }
                    }
                    Tier::File {
                        bdev_list,
                        bdev_size,
                        ..
                    } => {
                        if *bdev_size < (64 << 20) {
                            return Err(bad(
                                &tkey("bdev_size"),
                                "must be at least 64 MiB (a number means GiB)".into(),
                            ));
                        }
                        if bdev_list.is_empty() {
                            return Err(bad(
                                &tkey("bdev_list"),
                                "list at least one file path".into(),
                            ));
                        }
                    }
                    Tier::Nvme { bdev_list, .. } => {
                        if bdev_list.is_empty() {
                            return Err(bad(
                                &tkey("bdev_list"),
                                "list at least one block device, e.g. [/dev/nvme0n1]".into(),
                            ));
                        }
                    }
                }
                if let Some(m) = tier.scm_mount() {
                    if !paths.insert(m.to_path_buf()) {
                        return Err(bad(
                            &tkey("scm_mount"),
                            format!("{} is used by another engine", m.display()),
                        ));
                    }
                }
                for b in tier.bdev_list() {
                    check_abs(b, &tkey("bdev_list"), origin)?;
                    if !paths.insert(b.clone()) {
                        return Err(bad(
                            &tkey("bdev_list"),
                            format!("{} is used twice", b.display()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_abs(p: &Path, key: &str, origin: &str) -> Result<(), ConfigError> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            path: origin.into(),
            key: key.into(),
            msg: format!("{} must be an absolute path", p.display()),
        })
    }
}

/// True when `addr` (`host:port`) resolves to an address of this host with
/// `port`. Resolves names and binds test sockets: call it off the runtime.
pub fn is_local_addr(addr: &str, port: u16) -> bool {
    let Ok(resolved) = addr.to_socket_addrs() else {
        return false;
    };
    resolved
        .into_iter()
        .any(|sa| sa.port() == port && std::net::TcpListener::bind((sa.ip(), 0)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: daos_server
port: 10001
mgmt_svc_replicas: ["127.0.0.1:10001"]
provider: ofi+tcp
socket_dir: /tmp/daos_sock
transport_config:
  allow_insecure: true
control_log_mask: INFO
engines:
- targets: 4
  nr_xs_helpers: 0
  fabric_iface: lo
  fabric_iface_port: 31416
  log_mask: INFO
  storage:
  - class: ram
    scm_mount: /mnt/daos0
    scm_size: 4
  - class: file
    bdev_list: [/tmp/daos-bdev0]
    bdev_size: 512MiB
"#;

    fn check(text: &str) -> Result<ServerConfig, String> {
        let c = ServerConfig::parse(text, "t.yml").map_err(|e| e.to_string())?;
        c.validate("t.yml").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn good_file() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.engines[0].targets, 4);
        assert_eq!(c.engines[0].scm_mount(), Some(Path::new("/mnt/daos0")));
        assert_eq!(
            c.engines[0].storage[0],
            Tier::Ram {
                scm_mount: "/mnt/daos0".into(),
                scm_size: 4 << 30,
                scm_hugepages_disabled: None
            }
        );
        assert_eq!(
            c.engines[0].storage[1],
            Tier::File {
                bdev_list: vec!["/tmp/daos-bdev0".into()],
                bdev_size: 512 << 20,
                bdev_roles: vec![]
            }
        );
        assert_eq!(c.replica_addrs(), vec!["127.0.0.1:10001"]);
    }

    #[test]
    fn access_points_is_accepted_with_a_warning() {
        let c = check(&GOOD.replace(
            "mgmt_svc_replicas: [\"127.0.0.1:10001\"]",
            "access_points: [localhost]",
        ))
        .unwrap();
        assert_eq!(c.replica_addrs(), vec!["localhost:10001"]);
        assert!(c.warnings().iter().any(|w| w.contains("access_points")));
    }

    #[test]
    fn bad_files_name_the_key() {
        let table: &[(&str, &str, &str)] = &[
            (
                "unknown top key",
                "port: 10001\n",
                "bogus: 1\nport: 10001\n",
            ),
            (
                "unknown tier key",
                "bdev_size: 512MiB",
                "bdev_size: 512MiB\n    bdev_colour: red",
            ),
            ("bad class", "class: file", "class: floppy"),
            ("zero targets", "targets: 4", "targets: 0"),
            ("helpers > targets", "nr_xs_helpers: 0", "nr_xs_helpers: 9"),
            (
                "no replicas",
                "mgmt_svc_replicas: [\"127.0.0.1:10001\"]",
                "mgmt_svc_replicas: []",
            ),
            (
                "even replicas",
                "mgmt_svc_replicas: [\"127.0.0.1:10001\"]",
                "mgmt_svc_replicas: [a, b]",
            ),
            (
                "both spellings",
                "port: 10001\n",
                "port: 10001\naccess_points: [x]\n",
            ),
            (
                "insecure off without certs",
                "allow_insecure: true",
                "allow_insecure: false",
            ),
            (
                "bad log mask",
                "control_log_mask: INFO",
                "control_log_mask: LOUD",
            ),
            (
                "relative scm",
                "scm_mount: /mnt/daos0",
                "scm_mount: mnt/daos0",
            ),
            ("tiny scm", "scm_size: 4", "scm_size: 1MiB"),
            ("bad size", "bdev_size: 512MiB", "bdev_size: lots"),
            ("port type", "port: 10001", "port: ten"),
            (
                "bdev first",
                "  - class: ram\n    scm_mount: /mnt/daos0\n    scm_size: 4\n",
                "",
            ),
        ];
        let want_key = [
            "bogus",
            "bdev_colour",
            "floppy",
            "targets",
            "nr_xs_helpers",
            "mgmt_svc_replicas",
            "mgmt_svc_replicas",
            "mgmt_svc_replicas",
            "transport_config.ca_cert",
            "control_log_mask",
            "scm_mount",
            "scm_size",
            "lots",
            "port",
            "storage",
        ];
        for ((what, from, to), key) in table.iter().zip(want_key) {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{what}: replacement did not apply");
            let err = check(&text).expect_err(what);
            assert!(
                err.contains(key),
                "{what}: error {err:?} does not name {key}"
            );
        }
    }

    #[test]
    fn example_file_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/daos_server.yml");
        let c = ServerConfig::load(&p).unwrap();
        assert!(!c.engines.is_empty());
    }

    #[test]
    fn host_port() {
        assert!(
            is_local_addr("[::1]:10001", 10001) || std::net::TcpListener::bind("[::1]:0").is_err()
        );
        assert!(is_local_addr("127.0.0.1:10001", 10001));
        assert!(!is_local_addr("127.0.0.1:10001", 10002));
    }
}
