//! daos_control.yml: where the servers are and how to reach them.
//!
//! Defaults live here and only here: a file's missing keys take DAOS's defaults
//! (port 10001, hostlist [localhost], TLS with certificates under
//! /etc/daos/certs); running with no file at all is the insecure built-in
//! setup. Command-line flags (`-l`, `-i`) override the file after loading.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::hostlist;

/// Where dmg looks for its config when `-o` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/daos/daos_control.yml";

/// The contents of daos_control.yml, with DAOS's key names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The system name; dmg warns when the servers report another.
    pub name: String,
    /// The management port of hosts listed without one.
    pub port: u16,
    /// Servers to ask, `host[:port]`, ranges such as `node[1-4]` allowed.
    pub hostlist: Vec<String>,
    pub transport_config: TransportConfig,
}

/// How the connection to the servers is secured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Plain-text gRPC when true; otherwise mutual TLS with the files below.
    pub allow_insecure: bool,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            name: proto::DEFAULT_SYS_NAME.to_string(),
            port: proto::DEFAULT_MGMT_PORT,
            hostlist: vec!["localhost".to_string()],
            transport_config: TransportConfig::default(),
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            allow_insecure: false,
            ca_cert: PathBuf::from("/etc/daos/certs/daosCA.crt"),
            cert: PathBuf::from("/etc/daos/certs/admin.crt"),
            key: PathBuf::from("/etc/daos/certs/admin.key"),
        }
    }
}

impl ControlConfig {
    /// The setup used when no config file exists: localhost, insecure.
    pub fn builtin() -> Self {
        let mut cfg = ControlConfig::default();
        cfg.transport_config.allow_insecure = true;
        cfg
    }

    /// Parses YAML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        // A file with no keys (blank or comments only) takes every default.
        let blank = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        });
        if blank {
            return Ok(ControlConfig::default());
        }
        let cfg: ControlConfig = serde_norway::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        ControlConfig::parse(&text, path)
    }

    /// Loads `-o PATH`, else the default path if it exists, else the built-in setup.
    pub fn resolve(path: Option<&Path>) -> Result<Self, Error> {
        match path {
            Some(p) => ControlConfig::load(p),
            None => {
                let default = Path::new(DEFAULT_CONFIG_PATH);
                if default.exists() {
                    ControlConfig::load(default)
                } else {
                    Ok(ControlConfig::builtin())
                }
            }
        }
    }

    /// Checks what serde cannot; the message names the key and the fix.
    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: must not be empty (the system name, e.g. daos_server)".into());
        }
        if self.port == 0 {
            return Err("port: 0 is not a usable port (default 10001)".into());
        }
        if self.hostlist.is_empty() {
            return Err("hostlist: must name at least one server, e.g. [localhost]".into());
        }
        hostlist::resolve(&self.hostlist, self.port).map_err(|e| format!("hostlist: {e}"))?;
        if !self.transport_config.allow_insecure {
            let t = &self.transport_config;
            for (key, path) in [("ca_cert", &t.ca_cert), ("cert", &t.cert), ("key", &t.key)] {
                if path.as_os_str().is_empty() {
                    return Err(format!(
                        "transport_config.{key}: must name a file unless allow_insecure is true"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The servers to ask: `-l` when given, else `hostlist`, as `host:port`.
    pub fn addresses(&self, host_list: Option<&str>) -> Result<Vec<String>, Error> {
        match host_list {
            Some(list) => hostlist::resolve(&[list], self.port)
                .map_err(|e| Error::Usage(format!("-l/--host-list: {e}"))),
            None => hostlist::resolve(&self.hostlist, self.port)
                .map_err(|e| Error::Usage(format!("hostlist: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ControlConfig, Error> {
        ControlConfig::parse(text, Path::new("test.yml"))
    }

    #[test]
    fn parse_table() {
        struct Case {
            text: &'static str,
            ok: bool,
            mentions: &'static [&'static str],
        }
        let cases = [
            Case {
                text: "name: tank_sys\nport: 10002\nhostlist: [a, 'b:7']\n\
                       transport_config:\n  allow_insecure: true\n",
                ok: true,
                mentions: &[],
            },
            Case {
                text: "# nothing set\n---\n",
                ok: true,
                mentions: &[],
            },
            Case {
                text: "hostlst: [a]\n",
                ok: false,
                mentions: &["test.yml", "hostlst"],
            },
            Case {
                text: "transport_config:\n  allow_insecur: true\n",
                ok: false,
                mentions: &["allow_insecur"],
            },
            Case {
                text: "port: ten\n",
                ok: false,
                mentions: &["port", "ten"],
            },
            Case {
                text: "port: 0\n",
                ok: false,
                mentions: &["port: 0"],
            },
            Case {
                text: "hostlist: []\n",
                ok: false,
                mentions: &["hostlist"],
            },
            Case {
                text: "hostlist: ['a:x']\n",
                ok: false,
                mentions: &["hostlist", "\"x\""],
            },
            Case {
                text: "hostlist: a\n",
                ok: false,
                mentions: &["hostlist"],
            },
            Case {
                text: "transport_config:\n  allow_insecure: false\n  ca_cert: ''\n",
                ok: false,
                mentions: &["transport_config.ca_cert"],
            },
        ];
        for c in cases {
            match parse(c.text) {
                Ok(_) => assert!(c.ok, "{:?} parsed but should fail", c.text),
                Err(e) => {
                    assert!(!c.ok, "{:?}: {e}", c.text);
                    let msg = e.to_string();
                    for m in c.mentions {
                        assert!(msg.contains(m), "{:?}: {msg:?} lacks {m:?}", c.text);
                    }
                }
            }
        }
    }

    #[test]
    fn missing_keys_take_daos_defaults() {
        let cfg = parse("hostlist: [srv1]\n").unwrap();
        assert_eq!(cfg.port, 10001);
        assert_eq!(cfg.name, "daos_server");
        assert!(!cfg.transport_config.allow_insecure);
        assert_eq!(
            cfg.transport_config.ca_cert,
            Path::new("/etc/daos/certs/daosCA.crt")
        );
        assert_eq!(cfg.addresses(None).unwrap(), ["srv1:10001"]);
        assert!(ControlConfig::builtin().transport_config.allow_insecure);
    }

    #[test]
    fn host_list_flag_overrides_hostlist() {
        let cfg = parse("port: 10005\nhostlist: [srv1]\n").unwrap();
        assert_eq!(cfg.addresses(Some("a,b:1")).unwrap(), ["a:10005", "b:1"]);
        assert!(cfg.addresses(Some("a:bad")).is_err());
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/daos_control.yml");
        let cfg = ControlConfig::load(&path).unwrap();
        assert_eq!(cfg.name, "daos_server");
        assert!(!cfg.hostlist.is_empty());
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = ControlConfig::resolve(Some(Path::new("/nonexistent/dmg.yml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dmg.yml"), "{e}");
    }
}
