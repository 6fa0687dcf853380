//! `daos_agent.yml`: parsed with DAOS's key names, checked before anything starts.
//!
//! Parsing rejects unknown keys (serde names the key and its line);
//! [`Config::validate`] rejects values that parse but cannot work, naming the key
//! and the fix. Every default lives in [`Config::default`] or in the `DEFAULT_*`
//! constants of this module and nowhere else; the accessors (`access_points()`,
//! `credential_key_path()`, ...) resolve the optional keys against them, so the
//! rest of the agent never sees an unresolved value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_norway::Value;
use tracing::level_filters::LevelFilter;

/// Where `daos_agent start` looks for its config when `-o` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/daos/daos_agent.yml";
/// The access point used when the config names none.
pub const DEFAULT_ACCESS_POINT: &str = "localhost";
/// The log mask used when neither `log_mask` nor `control_log_mask` is set.
pub const DEFAULT_LOG_MASK: &str = "INFO";
/// DAOS's default CA certificate of the management channel.
pub const DEFAULT_CA_CERT: &str = "/etc/daos/certs/daosCA.crt";
/// DAOS's default agent certificate.
pub const DEFAULT_CERT: &str = "/etc/daos/certs/agent.crt";
/// DAOS's default agent private key (for TLS, not for credentials).
pub const DEFAULT_TLS_KEY: &str = "/etc/daos/certs/agent.key";
/// File name of the credential signing key inside `runtime_dir` by default.
pub const DEFAULT_CRED_KEY_NAME: &str = "agent_cred.key";

/// The whole agent configuration, as `daos_agent.yml` spells it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The system name the agent serves; requests for another name are refused.
    pub name: String,
    /// Management servers to ask for attach info, `host[:port]`, tried in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_points: Option<Vec<String>>,
    /// Newer DAOS's name for the server list; accepted here with a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mgmt_svc_replicas: Option<Vec<String>>,
    /// Port of an access point that names none.
    pub port: u16,
    /// Holds `daos_sock` and, by default, the credential key.
    pub runtime_dir: PathBuf,
    /// Log destination; stderr when unset.
    pub log_file: Option<PathBuf>,
    /// Minimum level logged: DAOS's masks (`DEBUG`, `INFO`, `NOTICE`, `ERROR`, ...).
    pub log_mask: Option<String>,
    /// Accepted for DAOS compatibility; used when `log_mask` is unset.
    pub control_log_mask: Option<String>,
    /// TLS settings of the management channel.
    pub transport_config: TransportConfig,
    /// Minutes a fetched attach info stays valid; 0: it never expires.
    pub cache_expiration: u64,
    /// Ask the servers on every attach info request.
    pub disable_caching: bool,
    /// DAOS's credential cache settings: accepted, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_config: Option<CredentialConfig>,
    /// PKCS#8 PEM Ed25519 key that signs credentials; generated if missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_key: Option<PathBuf>,

    // DAOS keys about fabric interfaces, pool handle eviction and telemetry:
    // accepted so existing files load, ignored with a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fabric_ifaces: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_fabric_ifaces: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_fabric_ifaces: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_auto_evict: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_retain: Option<Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: proto::DEFAULT_SYS_NAME.to_string(),
            access_points: None,
            mgmt_svc_replicas: None,
            port: proto::DEFAULT_MGMT_PORT,
            runtime_dir: PathBuf::from(proto::DEFAULT_AGENT_RUNTIME_DIR),
            log_file: None,
            log_mask: None,
            control_log_mask: None,
            transport_config: TransportConfig::default(),
            cache_expiration: 0,
            disable_caching: false,
            credential_config: None,
            credential_key: None,
            fabric_ifaces: None,
            include_fabric_ifaces: None,
            exclude_fabric_ifaces: None,
            disable_auto_evict: None,
            telemetry_port: None,
            telemetry_enabled: None,
            telemetry_retain: None,
        }
    }
}

/// TLS settings of the management channel (`transport_config`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Talk plain HTTP/2 to the servers. DAOS's default is false (TLS).
    pub allow_insecure: bool,
    /// CA that signed the servers' certificates; DAOS's path when unset.
    pub ca_cert: Option<PathBuf>,
    /// The agent's certificate; DAOS's path when unset.
    pub cert: Option<PathBuf>,
    /// The agent certificate's private key; DAOS's path when unset.
    pub key: Option<PathBuf>,
}

impl TransportConfig {
    /// The CA certificate path, defaulted.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca_cert
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_CERT))
    }

    /// The agent certificate path, defaulted.
    pub fn cert_path(&self) -> PathBuf {
        self.cert
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CERT))
    }

    /// The agent TLS key path, defaulted.
    pub fn key_path(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_TLS_KEY))
    }
}

/// DAOS's `credential_config` block: accepted so existing files load.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_expiration: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_user_map: Option<Value>,
}

/// A management server address, `host:port` (an IPv6 host in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint(String);

impl AccessPoint {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address
    /// ([`proto::names::with_port`]); `default_port` fills a missing port. The
    /// error says what is wrong with `s`.
    pub fn parse(s: &str, default_port: u16) -> Result<AccessPoint, String> {
        proto::names::with_port(s, default_port).map(AccessPoint)
    }

    /// The gRPC endpoint URI: `https://` with TLS, `http://` without.
    pub fn uri(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.0)
    }
}

impl fmt::Display for AccessPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a fetched attach info may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Every request asks the servers.
    Disabled,
    /// Fetched once and served until the agent stops (`cache_expiration: 0`).
    Forever,
    /// Refreshed on the first request after this long.
    For(Duration),
}

/// What went wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {msg}")]
    Parse { origin: String, msg: String },
    #[error("config {origin}: {key}: {msg}")]
    Invalid {
        origin: String,
        key: String,
        msg: String,
    },
}

impl ConfigError {
    /// The offending key, for a value that parsed but does not work.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Reads and parses a config file. Call [`Config::validate`] after applying
    /// command-line overrides.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text; `origin` names it in errors. An empty document is the
    /// default config.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            msg: e.to_string(),
        })
    }

    /// Parses and validates YAML text.
    pub fn parse_and_validate(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg = Self::parse(text, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// The server list as written, whichever key spelled it.
    fn access_point_strings(&self) -> Vec<String> {
        self.access_points
            .clone()
            .or_else(|| self.mgmt_svc_replicas.clone())
            .unwrap_or_else(|| vec![DEFAULT_ACCESS_POINT.to_string()])
    }

    /// The servers to ask for attach info, in order, ports filled in. Entries
    /// that do not parse are left out; [`Config::validate`] rejects them.
    pub fn access_points(&self) -> Vec<AccessPoint> {
        self.access_point_strings()
            .iter()
            .filter_map(|s| AccessPoint::parse(s, self.port).ok())
            .collect()
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join(proto::AGENT_SOCK_NAME)
    }

    /// The credential signing key's path.
    pub fn credential_key_path(&self) -> PathBuf {
        self.credential_key
            .clone()
            .unwrap_or_else(|| self.runtime_dir.join(DEFAULT_CRED_KEY_NAME))
    }

    /// The public key's path: the signing key's, with extension `.pub`.
    pub fn credential_pub_path(&self) -> PathBuf {
        self.credential_key_path().with_extension("pub")
    }

    /// The effective log mask.
    pub fn log_mask(&self) -> &str {
        self.log_mask
            .as_deref()
            .or(self.control_log_mask.as_deref())
            .unwrap_or(DEFAULT_LOG_MASK)
    }

    /// The level the log mask names ([`proto::log_mask_level`]; INFO if it names
    /// none, which validation rejects).
    pub fn log_level(&self) -> LevelFilter {
        proto::log_mask_level(self.log_mask())
            .and_then(|l| l.parse().ok())
            .unwrap_or(LevelFilter::INFO)
    }

    /// How attach info is cached.
    pub fn cache_policy(&self) -> CachePolicy {
        if self.disable_caching {
            CachePolicy::Disabled
        } else if self.cache_expiration == 0 {
            CachePolicy::Forever
        } else {
            match self.cache_expiration.checked_mul(60) {
                Some(s) => CachePolicy::For(Duration::from_secs(s)),
                None => CachePolicy::Forever,
            }
        }
    }

    /// Warnings for keys that are accepted but renamed or without effect here.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.mgmt_svc_replicas.is_some() && self.access_points.is_none() {
            w.push(
                "mgmt_svc_replicas: read as access_points, the agent's name for the server list"
                    .to_string(),
            );
        }
        let ignored = [
            ("fabric_ifaces", self.fabric_ifaces.is_some()),
            (
                "include_fabric_ifaces",
                self.include_fabric_ifaces.is_some(),
            ),
            (
                "exclude_fabric_ifaces",
                self.exclude_fabric_ifaces.is_some(),
            ),
            ("disable_auto_evict", self.disable_auto_evict.is_some()),
            ("telemetry_port", self.telemetry_port.is_some()),
            ("telemetry_enabled", self.telemetry_enabled.is_some()),
            ("telemetry_retain", self.telemetry_retain.is_some()),
            ("credential_config", self.credential_config.is_some()),
        ];
        for (k, set) in ignored {
            if set {
                w.push(format!(
                    "{k}: accepted for DAOS compatibility and ignored by this agent"
                ));
            }
        }
        w
    }

    /// Checks values that parse but cannot work. Touches no file: missing TLS
    /// files are reported when the agent starts.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            msg,
        };
        proto::names::check_system_name(&self.name)
            .map_err(|m| bad("name", format!("{m} (the servers' `name`)")))?;
        if self.port == 0 {
            return Err(bad(
                "port",
                "0 is not a port: use the servers' port, 1-65535 (default 10001)".into(),
            ));
        }
        if self.access_points.is_some() && self.mgmt_svc_replicas.is_some() {
            return Err(bad(
                "mgmt_svc_replicas",
                "set either access_points or mgmt_svc_replicas, not both".into(),
            ));
        }
        let key = if self.access_points.is_none() && self.mgmt_svc_replicas.is_some() {
            "mgmt_svc_replicas"
        } else {
            "access_points"
        };
        let aps = self.access_point_strings();
        if aps.is_empty() {
            return Err(bad(
                key,
                "is empty: list at least one server as host[:port], e.g. [localhost]".into(),
            ));
        }
        for a in &aps {
            if let Err(e) = AccessPoint::parse(a, self.port) {
                return Err(bad(
                    key,
                    format!("{e}: list servers as host[:port] (e.g. server1, 10.0.0.1:10001, [::1]:10001)"),
                ));
            }
        }
        if !self.runtime_dir.is_absolute() {
            return Err(bad(
                "runtime_dir",
                format!(
                    "{} must be an absolute path (default {})",
                    self.runtime_dir.display(),
                    proto::DEFAULT_AGENT_RUNTIME_DIR
                ),
            ));
        }
        for (k, v) in [
            ("log_mask", &self.log_mask),
            ("control_log_mask", &self.control_log_mask),
        ] {
            if let Some(m) = v {
                if proto::log_mask_level(m).is_none() {
                    return Err(bad(
                        k,
                        format!(
                            "{m:?} is not a log mask; use one of {}",
                            proto::LOG_MASKS.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(f) = &self.log_file {
            if f.as_os_str().is_empty() {
                return Err(bad(
                    "log_file",
                    "is empty: name a file or remove the key to log to stderr".into(),
                ));
            }
        }
        if self.cache_expiration.checked_mul(60).is_none() {
            return Err(bad(
                "cache_expiration",
                format!(
                    "{} minutes is out of range; use 0 for never-expiring attach info",
                    self.cache_expiration
                ),
            ));
        }
        let t = &self.transport_config;
        for (k, v) in [("ca_cert", &t.ca_cert), ("cert", &t.cert), ("key", &t.key)] {
            if let Some(p) = v {
                if p.as_os_str().is_empty() {
                    return Err(bad(
                        &format!("transport_config.{k}"),
                        "is empty: name a PEM file, or remove the key to use DAOS's default path"
                            .into(),
                    ));
                }
            }
        }
        if let Some(k) = &self.credential_key {
            if !k.is_absolute() {
                return Err(bad(
                    "credential_key",
                    format!("{} must be an absolute path", k.display()),
                ));
            }
            if k.extension().is_some_and(|e| e == "pub") {
                return Err(bad(
                    "credential_key",
                    format!("{} ends in .pub, where the public key is written; name the private key file", k.display()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/daos_agent.yml");

    #[test]
    fn example_config_parses_and_validates() {
        let c = Config::parse_and_validate(EXAMPLE, "examples/daos_agent.yml").unwrap();
        assert_eq!(c.name, "daos_server");
        assert!(c.transport_config.allow_insecure);
        assert!(!c.access_points().is_empty());
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn defaults() {
        let c = Config::parse_and_validate("", "empty").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            c.access_points(),
            vec![AccessPoint("localhost:10001".into())]
        );
        assert_eq!(c.socket_path(), Path::new("/var/run/daos_agent/daos_sock"));
        assert_eq!(
            c.credential_key_path(),
            Path::new("/var/run/daos_agent/agent_cred.key")
        );
        assert_eq!(
            c.credential_pub_path(),
            Path::new("/var/run/daos_agent/agent_cred.pub")
        );
        assert_eq!(c.cache_policy(), CachePolicy::Forever);
        assert_eq!(c.log_level(), LevelFilter::INFO);
        assert!(!c.transport_config.allow_insecure);
        assert_eq!(
            c.transport_config.ca_cert_path(),
            Path::new(DEFAULT_CA_CERT)
        );
    }

    /// Each good file parses and validates.
    #[test]
    fn good_configs() {
        let cases: &[(&str, &str)] = &[
            ("name only", "name: tank_sys\n"),
            ("access points with ports", "access_points: ['a:1', '[::1]:2', 'b', '::1', '10.0.0.1']\n"),
            ("renamed server list", "mgmt_svc_replicas: [server1]\n"),
            ("transport", "transport_config:\n  allow_insecure: false\n  ca_cert: /c/ca.crt\n  cert: /c/a.crt\n  key: /c/a.key\n"),
            ("cache", "cache_expiration: 30\ndisable_caching: false\n"),
            ("log masks", "log_mask: debug\ncontrol_log_mask: ERROR\nlog_file: /tmp/agent.log\n"),
            ("daos mask list", "log_mask: INFO,MGMT=DEBUG\n"),
            ("credential", "credential_key: /etc/daos/agent_cred.key\ncredential_config:\n  cache_expiration: 1m\n"),
            ("ignored daos keys", "fabric_ifaces: []\ndisable_auto_evict: true\ntelemetry_port: 9192\n"),
        ];
        for (what, text) in cases {
            if let Err(e) = Config::parse_and_validate(text, what) {
                panic!("{what}: {e}");
            }
        }
    }

    /// Each bad file fails, naming the key.
    #[test]
    fn bad_configs() {
        let cases: &[(&str, &str, &str)] = &[
            ("typo", "acess_points: [a]\n", "acess_points"),
            (
                "unknown transport key",
                "transport_config:\n  allow_insecur: true\n",
                "allow_insecur",
            ),
            ("wrong type", "port: many\n", "port"),
            ("zero port", "port: 0\n", "port"),
            ("empty name", "name: ''\n", "name"),
            ("name with space", "name: 'a b'\n", "name"),
            ("empty servers", "access_points: []\n", "access_points"),
            (
                "bad server",
                "access_points: ['a:b:c:d']\n",
                "access_points",
            ),
            (
                "bad port in server",
                "access_points: ['a:99999']\n",
                "access_points",
            ),
            (
                "url not host",
                "access_points: ['http://a:1']\n",
                "access_points",
            ),
            (
                "both spellings",
                "access_points: [a]\nmgmt_svc_replicas: [a]\n",
                "mgmt_svc_replicas",
            ),
            (
                "bad renamed list",
                "mgmt_svc_replicas: ['']\n",
                "mgmt_svc_replicas",
            ),
            ("relative runtime dir", "runtime_dir: run\n", "runtime_dir"),
            ("bad mask", "log_mask: LOUD\n", "log_mask"),
            (
                "bad control mask",
                "control_log_mask: LOUD\n",
                "control_log_mask",
            ),
            ("empty log file", "log_file: ''\n", "log_file"),
            (
                "huge expiration",
                "cache_expiration: 18446744073709551615\n",
                "cache_expiration",
            ),
            (
                "empty ca",
                "transport_config:\n  ca_cert: ''\n",
                "transport_config.ca_cert",
            ),
            (
                "relative key",
                "credential_key: key.pem\n",
                "credential_key",
            ),
            (
                "key named .pub",
                "credential_key: /x/agent.pub\n",
                "credential_key",
            ),
            (
                "unknown credential key",
                "credential_config:\n  colour: red\n",
                "colour",
            ),
        ];
        for (what, text, key) in cases {
            match Config::parse_and_validate(text, what) {
                Ok(_) => panic!("{what}: accepted {text:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(key), "{what}: {msg:?} does not name {key}");
                    if let Some(k) = e.key() {
                        assert_eq!(k, *key, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn renamed_and_ignored_keys_warn() {
        let c =
            Config::parse_and_validate("mgmt_svc_replicas: ['s1:10002']\ntelemetry_port: 1\n", "t")
                .unwrap();
        assert_eq!(c.access_points(), vec![AccessPoint("s1:10002".into())]);
        let w = c.warnings();
        assert!(
            w.iter().any(|w| w.starts_with("mgmt_svc_replicas")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.starts_with("telemetry_port")), "{w:?}");
    }

    #[test]
    fn access_point_forms() {
        let p = |s| AccessPoint::parse(s, 7);
        assert_eq!(p("h").unwrap().to_string(), "h:7");
        assert_eq!(p("h:8").unwrap().to_string(), "h:8");
        assert_eq!(p("[::1]").unwrap().to_string(), "[::1]:7");
        assert_eq!(p("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert_eq!(p("fe80::2").unwrap().to_string(), "[fe80::2]:7");
        assert_eq!(p("h:8").unwrap().uri(true), "https://h:8");
        assert_eq!(p("h:8").unwrap().uri(false), "http://h:8");
        for bad in [
            "", ":1", "h:", "h:0", "h:x", "[::1", "[x]:1", "[::1]1", "a b", "a:b:c", "a/b",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cache_policies_and_levels() {
        let mut c = Config {
            cache_expiration: 2,
            ..Config::default()
        };
        assert_eq!(c.cache_policy(), CachePolicy::For(Duration::from_secs(120)));
        c.disable_caching = true;
        assert_eq!(c.cache_policy(), CachePolicy::Disabled);
        let level = |m: &str| {
            Config {
                log_mask: Some(m.into()),
                ..Config::default()
            }
            .log_level()
        };
        assert_eq!(level("notice"), LevelFilter::WARN);
        assert_eq!(level("DISABLED"), LevelFilter::OFF);
        assert_eq!(level("DBUG,MGMT=ERR"), LevelFilter::DEBUG);
        let c = Config {
            control_log_mask: Some("ERR".into()),
            ..Config::default()
        };
        assert_eq!(c.log_level(), LevelFilter::ERROR);
        let c = Config {
            log_mask: Some("debug".into()),
            ..c
        };
        assert_eq!(c.log_level(), LevelFilter::DEBUG);
    }
}
