//! Pool properties: DAOS's names, descriptions, defaults and value checks.
//!
//! Values are stored as the canonical string [`check`] returns, so what
//! `get-prop` prints is what was validated.

use std::collections::BTreeMap;

use proto::units::{format_bytes, parse_size};

use crate::error::{inval, Result};

pub struct PropDef {
    pub name: &'static str,
    pub desc: &'static str,
    pub default: &'static str,
    pub access: Access,
    kind: Kind,
}

/// Who may set a property.
#[derive(PartialEq, Eq)]
pub enum Access {
    /// `pool create -P` and `pool set-prop`.
    Any,
    /// Only at `pool create` (the layout depends on it).
    CreateOnly,
    /// Never: the system reports it.
    ReadOnly,
}

enum Kind {
    Label,
    Choice(&'static [&'static str]),
    Num { min: u64, max: u64 },
    Size { min: u64, max: u64 },
    Percent,
    Fixed,
}

pub const DEFS: &[PropDef] = &[
    PropDef {
        name: "checkpoint",
        desc: "Checkpoint mode",
        default: "timed",
        access: Access::Any,
        kind: Kind::Choice(&["disabled", "timed", "lazy"]),
    },
    PropDef {
        name: "checkpoint_freq",
        desc: "Checkpoint frequency",
        default: "5",
        access: Access::Any,
        kind: Kind::Num {
            min: 1,
            max: 1_000_000,
        },
    },
    PropDef {
        name: "checkpoint_thresh",
        desc: "Checkpoint threshold",
        default: "50",
        access: Access::Any,
        kind: Kind::Num { min: 10, max: 75 },
    },
    PropDef {
        name: "data_thresh",
        desc: "Data bdev threshold size",
        default: "4096",
        // The engines take it when they create their shards; DAOS can
        // change it later, here a change would not reach them.
        access: Access::CreateOnly,
        kind: Kind::Size {
            min: 0,
            max: 1 << 20,
        },
    },
    PropDef {
        name: "ec_cell_sz",
        desc: "EC cell size",
        default: "65536",
        access: Access::Any,
        kind: Kind::Size {
            min: 1 << 10,
            max: 1 << 30,
        },
    },
    PropDef {
        name: "ec_pda",
        desc: "EC performance domain affinity level",
        default: "1",
        access: Access::CreateOnly,
        kind: Kind::Num {
            min: 1,
            max: u32::MAX as u64,
        },
    },
    PropDef {
        name: "global_version",
        desc: "Global Version",
        default: "3",
        access: Access::ReadOnly,
        kind: Kind::Fixed,
    },
    PropDef {
        name: "label",
        desc: "Pool label",
        default: "",
        access: Access::Any,
        kind: Kind::Label,
    },
    PropDef {
        name: "perf_domain",
        desc: "Pool performance domain",
        default: "root",
        access: Access::CreateOnly,
        kind: Kind::Choice(&["root", "group"]),
    },
    PropDef {
        name: "reclaim",
        desc: "Reclaim strategy",
        default: "lazy",
        access: Access::Any,
        kind: Kind::Choice(&["disabled", "lazy", "time"]),
    },
    PropDef {
        name: "rp_pda",
        desc: "Performance domain affinity level of RP",
        default: "3",
        access: Access::CreateOnly,
        kind: Kind::Num {
            min: 1,
            max: u32::MAX as u64,
        },
    },
    PropDef {
        name: "scrub",
        desc: "Checksum scrubbing mode",
        default: "off",
        access: Access::Any,
        kind: Kind::Choice(&["off", "lazy", "timed"]),
    },
    PropDef {
        name: "scrub_freq",
        desc: "Checksum scrubbing frequency",
        default: "604800",
        access: Access::Any,
        kind: Kind::Num {
            min: 1,
            max: u64::MAX,
        },
    },
    PropDef {
        name: "scrub_thresh",
        desc: "Checksum scrubbing threshold",
        default: "0",
        access: Access::Any,
        kind: Kind::Num {
            min: 0,
            max: u64::MAX,
        },
    },
    PropDef {
        name: "self_heal",
        desc: "Self-healing policy",
        default: "exclude,rebuild",
        access: Access::Any,
        kind: Kind::Choice(&["exclude", "rebuild", "exclude,rebuild", "none"]),
    },
    PropDef {
        name: "space_rb",
        desc: "Rebuild space ratio",
        default: "0",
        access: Access::Any,
        kind: Kind::Percent,
    },
    PropDef {
        name: "svc_list",
        desc: "Pool service replica list",
        default: "",
        access: Access::ReadOnly,
        kind: Kind::Fixed,
    },
    PropDef {
        name: "svc_rf",
        desc: "Pool service redundancy factor",
        default: "2",
        access: Access::Any,
        kind: Kind::Num { min: 0, max: 4 },
    },
    PropDef {
        name: "upgrade_status",
        desc: "Upgrade Status",
        default: "not started",
        access: Access::ReadOnly,
        kind: Kind::Fixed,
    },
];

pub fn def(name: &str) -> Option<&'static PropDef> {
    DEFS.iter().find(|d| d.name == name)
}

/// Checks a label as DAOS does (see [`proto::names::check_label`]).
pub fn check_label(label: &str) -> Result<()> {
    proto::names::check_label(label).map_err(inval)
}

/// Validates one `name:value` setting and returns its canonical value.
pub fn check(name: &str, value: &str, creating: bool) -> Result<String> {
    let d = def(name).ok_or_else(|| {
        inval(format!(
            "unknown pool property {name:?}; known: {}",
            DEFS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    match d.access {
        Access::ReadOnly => return Err(inval(format!("pool property {name:?} is read-only"))),
        Access::CreateOnly if !creating => {
            return Err(inval(format!(
                "pool property {name:?} can only be set at pool create"
            )))
        }
        _ => {}
    }
    let v = value.trim();
    match &d.kind {
        Kind::Label => {
            check_label(v)?;
            Ok(v.to_string())
        }
        Kind::Choice(c) => {
            let lv = v.to_ascii_lowercase().replace(';', ",");
            if c.contains(&lv.as_str()) {
                Ok(lv)
            } else {
                Err(inval(format!(
                    "pool property {name}: {v:?} is not one of {}",
                    c.join(", ")
                )))
            }
        }
        Kind::Num { min, max } => match v.parse::<u64>() {
            Ok(n) if (*min..=*max).contains(&n) => Ok(n.to_string()),
            _ => Err(inval(format!(
                "pool property {name}: {v:?} is not a number in {min}..={max}"
            ))),
        },
        Kind::Size { min, max } => match parse_size(v) {
            Ok(n) if (*min..=*max).contains(&n) => Ok(n.to_string()),
            Ok(n) => Err(inval(format!(
                "pool property {name}: {} is outside {}..={}",
                format_bytes(n),
                format_bytes(*min),
                format_bytes(*max)
            ))),
            Err(e) => Err(inval(format!("pool property {name}: {e}"))),
        },
        Kind::Percent => match v.trim_end_matches('%').parse::<u64>() {
            Ok(n) if n <= 100 => Ok(n.to_string()),
            _ => Err(inval(format!(
                "pool property {name}: {v:?} is not a percentage 0-100"
            ))),
        },
        Kind::Fixed => Err(inval(format!("pool property {name:?} is read-only"))),
    }
}

/// Parses a list of `name:value` settings.
pub fn check_all(props: &[(String, String)], creating: bool) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, v) in props {
        out.insert(n.clone(), check(n, v, creating)?);
    }
    Ok(out)
}

/// The value to show for a property: stored, derived, or the default.
pub fn display(d: &PropDef, stored: &BTreeMap<String, String>, label: &str, svc: &[u32]) -> String {
    let raw = match d.name {
        "label" => label.to_string(),
        "svc_list" => proto::units::format_ranks(svc),
        _ => stored
            .get(d.name)
            .cloned()
            .unwrap_or_else(|| d.default.to_string()),
    };
    match d.kind {
        Kind::Size { .. } => raw.parse::<u64>().map(format_bytes).unwrap_or(raw),
        Kind::Percent => format!("{raw}%"),
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert_eq!(check("reclaim", "TIME", false).unwrap(), "time");
        assert_eq!(check("ec_cell_sz", "128KiB", false).unwrap(), "131072");
        assert_eq!(check("space_rb", "5%", false).unwrap(), "5");
        assert_eq!(
            check("self_heal", "exclude;rebuild", false).unwrap(),
            "exclude,rebuild"
        );
        assert!(check("reclaim", "sometimes", false).is_err());
        assert!(check("svc_list", "[0]", false)
            .unwrap_err()
            .msg
            .contains("read-only"));
        assert!(check("nope", "1", false)
            .unwrap_err()
            .msg
            .contains("unknown"));
        assert!(check("svc_rf", "9", false).is_err());
        assert!(check("ec_pda", "2", false)
            .unwrap_err()
            .msg
            .contains("pool create"));
        assert_eq!(check("ec_pda", "2", true).unwrap(), "2");
        assert_eq!(check("data_thresh", "8KiB", true).unwrap(), "8192");
        assert!(check("data_thresh", "8KiB", false).is_err());
        assert!(check_label("tank").is_ok());
        assert!(check_label("a b").is_err());
        assert!(check_label("8a05bf3a-a088-4a77-bb9f-df989fce7cc8").is_err());
    }
}
