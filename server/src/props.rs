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
    pub read_only: bool,
    kind: Kind,
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
        read_only: false,
        kind: Kind::Choice(&["disabled", "timed", "lazy"]),
    },
    PropDef {
        name: "checkpoint_freq",
        desc: "Checkpoint frequency",
        default: "5",
        read_only: false,
        kind: Kind::Num {
            min: 1,
            max: 1_000_000,
        },
    },
    PropDef {
        name: "checkpoint_thresh",
        desc: "Checkpoint threshold",
        default: "50",
        read_only: false,
        kind: Kind::Num { min: 10, max: 75 },
    },
    PropDef {
        name: "data_thresh",
        desc: "Data bdev threshold size",
        default: "4096",
        read_only: false,
        kind: Kind::Size {
            min: 0,
            max: 1 << 20,
        },
    },
    PropDef {
        name: "ec_cell_sz",
        desc: "EC cell size",
        default: "65536",
        read_only: false,
        kind: Kind::Size {
            min: 1 << 10,
            max: 1 << 30,
        },
    },
    PropDef {
        name: "ec_pda",
        desc: "EC performance domain affinity level",
        default: "1",
        read_only: false,
        kind: Kind::Num {
            min: 1,
            max: u32::MAX as u64,
        },
    },
    PropDef {
        name: "global_version",
        desc: "Global Version",
        default: "3",
        read_only: true,
        kind: Kind::Fixed,
    },
    PropDef {
        name: "label",
        desc: "Pool label",
        default: "",
        read_only: false,
        kind: Kind::Label,
    },
    PropDef {
        name: "perf_domain",
        desc: "Pool performance domain",
        default: "root",
        read_only: false,
        kind: Kind::Choice(&["root", "group"]),
    },
    PropDef {
        name: "reclaim",
        desc: "Reclaim strategy",
        default: "lazy",
        read_only: false,
        kind: Kind::Choice(&["disabled", "lazy", "time"]),
    },
    PropDef {
        name: "rp_pda",
        desc: "Performance domain affinity level of RP",
        default: "3",
        read_only: false,
        kind: Kind::Num {
            min: 1,
            max: u32::MAX as u64,
        },
    },
    PropDef {
        name: "scrub",
        desc: "Checksum scrubbing mode",
        default: "off",
        read_only: false,
        kind: Kind::Choice(&["off", "lazy", "timed"]),
    },
    PropDef {
        name: "scrub_freq",
        desc: "Checksum scrubbing frequency",
        default: "604800",
        read_only: false,
        kind: Kind::Num {
            min: 1,
            max: u64::MAX,
        },
    },
    PropDef {
        name: "scrub_thresh",
        desc: "Checksum scrubbing threshold",
        default: "0",
        read_only: false,
        kind: Kind::Num {
            min: 0,
            max: u64::MAX,
        },
    },
    PropDef {
        name: "self_heal",
        desc: "Self-healing policy",
        default: "exclude,rebuild",
        read_only: false,
        kind: Kind::Choice(&["exclude", "rebuild", "exclude,rebuild", "none"]),
    },
    PropDef {
        name: "space_rb",
        desc: "Rebuild space ratio",
        default: "0",
        read_only: false,
        kind: Kind::Percent,
    },
    PropDef {
        name: "svc_list",
        desc: "Pool service replica list",
        default: "",
        read_only: true,
        kind: Kind::Fixed,
    },
    PropDef {
        name: "svc_rf",
        desc: "Pool service redundancy factor",
        default: "2",
        read_only: false,
        kind: Kind::Num { min: 0, max: 4 },
    },
    PropDef {
        name: "upgrade_status",
        desc: "Upgrade Status",
        default: "not started",
        read_only: true,
        kind: Kind::Fixed,
    },
];

pub fn def(name: &str) -> Option<&'static PropDef> {
    DEFS.iter().find(|d| d.name == name)
}

/// Checks a label as DAOS does: 1-127 of `[A-Za-z0-9_.:-]`, and not a UUID.
pub fn check_label(label: &str) -> Result<()> {
    if label.is_empty() || label.len() > 127 {
        return Err(inval(format!(
            "pool label {label:?} must be 1 to 127 characters"
        )));
    }
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
    {
        return Err(inval(format!(
            "pool label {label:?} may contain only letters, digits and _ . : -"
        )));
    }
    if uuid::Uuid::parse_str(label).is_ok() {
        return Err(inval(format!("pool label {label:?} must not be a UUID")));
    }
    Ok(())
}

/// Validates one `name:value` setting and returns its canonical value.
pub fn check(name: &str, value: &str) -> Result<String> {
    let d = def(name).ok_or_else(|| {
        inval(format!(
            "unknown pool property {name:?}; known: {}",
            DEFS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    if d.read_only {
        return Err(inval(format!("pool property {name:?} is read-only")));
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
pub fn check_all(props: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, v) in props {
        out.insert(n.clone(), check(n, v)?);
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
        assert_eq!(check("reclaim", "TIME").unwrap(), "time");
        assert_eq!(check("ec_cell_sz", "128KiB").unwrap(), "131072");
        assert_eq!(check("space_rb", "5%").unwrap(), "5");
        assert_eq!(
            check("self_heal", "exclude;rebuild").unwrap(),
            "exclude,rebuild"
        );
        assert!(check("reclaim", "sometimes").is_err());
        assert!(check("svc_list", "[0]")
            .unwrap_err()
            .msg
            .contains("read-only"));
        assert!(check("nope", "1").unwrap_err().msg.contains("unknown"));
        assert!(check("svc_rf", "9").is_err());
        assert!(check_label("tank").is_ok());
        assert!(check_label("a b").is_err());
        assert!(check_label("8a05bf3a-a088-4a77-bb9f-df989fce7cc8").is_err());
    }
}
