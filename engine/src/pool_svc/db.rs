//! The pool service's replicated state (DAOS's pool and container metadata in
//! rdb): pool identity, map, properties and ACL, pool handles, and the
//! container table with container properties, attributes, snapshots and open
//! handles.
//!
//! Invariant: `apply` is deterministic, so every replica that applies the same
//! commands holds the same state. Wall-clock values (creation times) come inside
//! the commands, never from the replica applying them.

use std::collections::BTreeMap;

use proto::{DaosError, Der};
use serde::{Deserialize, Serialize};

/// Object ids (lo part) below this are never handed out by `AllocOids`: they
/// are for objects at fixed ids (dfs's superblock and root).
pub const RESERVED_OIDS: u64 = 1024;

/// Container properties: DAOS's names, their defaults, and their checks.
pub const CONT_PROPS: &[(&str, &str)] = &[
    ("layout_type", "unknown"),
    ("layout_version", "1"),
    ("oclass", "UNKNOWN"),
    ("dir_oclass", "UNKNOWN"),
    ("file_oclass", "UNKNOWN"),
    ("chunk_size", "1048576"),
    ("rd_fac", "0"),
    ("rd_lvl", "node"),
    ("cksum", "off"),
    ("cksum_size", "32768"),
    ("srv_cksum", "off"),
    ("status", "HEALTHY"),
    ("owner", ""),
    ("group", ""),
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContRec {
    pub uuid: String,
    pub label: String,
    pub props: BTreeMap<String, String>,
    pub attrs: BTreeMap<String, Vec<u8>>,
    /// Snapshot epoch -> name.
    pub snaps: BTreeMap<u64, (String, u64)>,
    /// Open handles: handle uuid -> read-write.
    pub handles: BTreeMap<String, bool>,
    pub create_time: u64,
    /// The next object id (lo part) not yet handed out.
    pub next_oid: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolDb {
    /// False until the MS's create has been applied.
    pub init: bool,
    pub uuid: String,
    pub label: String,
    /// The pool map, as `proto::pool::PoolMap` encoded with prost.
    pub map: Vec<u8>,
    pub map_version: u32,
    pub svc_ranks: Vec<u32>,
    pub owner: String,
    pub group: String,
    pub acl: Vec<String>,
    pub props: BTreeMap<String, String>,
    /// Pool handle -> (user principal, read-write).
    pub handles: BTreeMap<String, (String, bool)>,
    pub conts: BTreeMap<String, ContRec>,
}

/// A change to the pool service state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PoolCmd {
    /// The pool as the management service created it; applied once.
    Init {
        uuid: String,
        label: String,
        map: Vec<u8>,
        map_version: u32,
        svc_ranks: Vec<u32>,
        owner: String,
        group: String,
        acl: Vec<String>,
        props: BTreeMap<String, String>,
    },
    Connect {
        hdl: String,
        user: String,
        rw: bool,
    },
    Disconnect {
        hdl: String,
    },
    ContCreate {
        uuid: String,
        label: String,
        props: BTreeMap<String, String>,
        time: u64,
    },
    ContDestroy {
        uuid: String,
        force: bool,
    },
    ContOpen {
        uuid: String,
        coh: String,
        rw: bool,
    },
    ContClose {
        uuid: String,
        coh: String,
    },
    ContSetProps {
        uuid: String,
        props: BTreeMap<String, String>,
    },
    ContSetAttrs {
        uuid: String,
        attrs: BTreeMap<String, Vec<u8>>,
    },
    ContDelAttrs {
        uuid: String,
        names: Vec<String>,
    },
    SnapCreate {
        uuid: String,
        epoch: u64,
        name: String,
        time: u64,
    },
    SnapDestroy {
        uuid: String,
        epoch: u64,
    },
    AllocOids {
        uuid: String,
        count: u64,
    },
}

/// The result of a command: `Err` changed nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum PoolResp {
    #[default]
    Ok,
    /// The first of the object ids an `AllocOids` reserved.
    Oids(u64),
    Err {
        code: i32,
        msg: String,
    },
}

fn err(der: Der, msg: impl Into<String>) -> PoolResp {
    PoolResp::Err {
        code: der.code(),
        msg: msg.into(),
    }
}

impl PoolResp {
    pub fn into_result(self) -> Result<(), DaosError> {
        match self {
            PoolResp::Ok | PoolResp::Oids(_) => Ok(()),
            PoolResp::Err { code, msg } => Err(DaosError::new(
                Der::from_code(code).unwrap_or(Der::MISC),
                msg,
            )),
        }
    }
}

impl PoolDb {
    /// Finds a container by UUID or label.
    pub fn cont(&self, id: &str) -> Option<&ContRec> {
        self.conts
            .get(id)
            .or_else(|| self.conts.values().find(|c| c.label == id))
    }

    /// Fails unless no container but `uuid` carries `label`.
    fn label_free(&self, label: &str, uuid: &str) -> Result<(), PoolResp> {
        if self
            .conts
            .values()
            .any(|c| c.label == label && c.uuid != uuid)
        {
            return Err(err(
                Der::EXIST,
                format!("a container labelled {label:?} already exists"),
            ));
        }
        Ok(())
    }

    fn cont_mut(&mut self, uuid: &str) -> Result<&mut ContRec, PoolResp> {
        self.conts
            .get_mut(uuid)
            .ok_or_else(|| err(Der::NONEXIST, format!("container {uuid} does not exist")))
    }

    pub fn apply(&mut self, cmd: PoolCmd) -> PoolResp {
        match self.apply_inner(cmd) {
            Ok(r) => r,
            Err(e) => e,
        }
    }

    fn apply_inner(&mut self, cmd: PoolCmd) -> Result<PoolResp, PoolResp> {
        if !self.init && !matches!(cmd, PoolCmd::Init { .. }) {
            return Err(err(Der::AGAIN, "the pool service is not initialised yet"));
        }
        match cmd {
            PoolCmd::Init {
                uuid,
                label,
                map,
                map_version,
                svc_ranks,
                owner,
                group,
                acl,
                props,
            } => {
                if self.init {
                    // Every replica proposes the same Init; the first one wins.
                    return Ok(PoolResp::Ok);
                }
                *self = PoolDb {
                    init: true,
                    uuid,
                    label,
                    map,
                    map_version,
                    svc_ranks,
                    owner,
                    group,
                    acl,
                    props,
                    ..PoolDb::default()
                };
            }
            PoolCmd::Connect { hdl, user, rw } => {
                self.handles.insert(hdl, (user, rw));
            }
            PoolCmd::Disconnect { hdl } => {
                self.handles.remove(&hdl);
                for c in self.conts.values_mut() {
                    c.handles.retain(|h, _| !h.starts_with(&hdl));
                }
            }
            PoolCmd::ContCreate {
                uuid,
                label,
                props,
                time,
            } => {
                if self.conts.contains_key(&uuid) {
                    return Err(err(Der::EXIST, format!("container {uuid} already exists")));
                }
                if !label.is_empty() {
                    self.label_free(&label, &uuid)?;
                }
                self.conts.insert(
                    uuid.clone(),
                    ContRec {
                        uuid,
                        label,
                        props,
                        create_time: time,
                        next_oid: RESERVED_OIDS,
                        ..ContRec::default()
                    },
                );
            }
            PoolCmd::ContDestroy { uuid, force } => {
                let c = self.cont_mut(&uuid)?;
                if !c.handles.is_empty() && !force {
                    return Err(err(
                        Der::BUSY,
                        format!(
                            "container {uuid} has {} open handle(s); use --force",
                            c.handles.len()
                        ),
                    ));
                }
                self.conts.remove(&uuid);
            }
            PoolCmd::ContOpen { uuid, coh, rw } => {
                self.cont_mut(&uuid)?.handles.insert(coh, rw);
            }
            PoolCmd::ContClose { uuid, coh } => {
                self.cont_mut(&uuid)?.handles.remove(&coh);
            }
            PoolCmd::ContSetProps { uuid, props } => {
                if let Some(l) = props.get("label") {
                    self.label_free(l, &uuid)?;
                }
                let c = self.cont_mut(&uuid)?;
                for (k, v) in props {
                    if k == "label" {
                        c.label = v;
                    } else {
                        c.props.insert(k, v);
                    }
                }
            }
            PoolCmd::ContSetAttrs { uuid, attrs } => {
                self.cont_mut(&uuid)?.attrs.extend(attrs);
            }
            PoolCmd::ContDelAttrs { uuid, names } => {
                let c = self.cont_mut(&uuid)?;
                if let Some(n) = names.iter().find(|n| !c.attrs.contains_key(*n)) {
                    return Err(err(
                        Der::NONEXIST,
                        format!("container {uuid} has no attribute {n:?}"),
                    ));
                }
                for n in names {
                    c.attrs.remove(&n);
                }
            }
            PoolCmd::SnapCreate {
                uuid,
                epoch,
                name,
                time,
            } => {
                let c = self.cont_mut(&uuid)?;
                if !name.is_empty() && c.snaps.values().any(|(n, _)| *n == name) {
                    return Err(err(
                        Der::EXIST,
                        format!("container {uuid} already has a snapshot named {name:?}"),
                    ));
                }
                c.snaps.insert(epoch, (name, time));
            }
            PoolCmd::SnapDestroy { uuid, epoch } => {
                if self.cont_mut(&uuid)?.snaps.remove(&epoch).is_none() {
                    return Err(err(
                        Der::NONEXIST,
                        format!("container {uuid} has no snapshot at epoch {epoch}"),
                    ));
                }
            }
            PoolCmd::AllocOids { uuid, count } => {
                let c = self.cont_mut(&uuid)?;
                let start = c.next_oid;
                c.next_oid = start.checked_add(count).ok_or_else(|| {
                    err(
                        Der::OVERFLOW,
                        format!("container {uuid}: object ids exhausted"),
                    )
                })?;
                return Ok(PoolResp::Oids(start));
            }
        }
        Ok(PoolResp::Ok)
    }
}

/// What a user may do on a pool, from DAOS ACE permission letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
}

/// Evaluates a DAOS ACL (`A::OWNER@:rw`, `A:G:GROUP@:r`, `A::name@:rw`,
/// `A:G:name@:r`, `A::EVERYONE@:r`) for a user as DAOS does: the owner entry or
/// a named-user entry wins outright; otherwise the union of every matching group
/// entry; otherwise EVERYONE@.
pub fn acl_perms(
    acl: &[String],
    owner: &str,
    owner_group: &str,
    user: &str,
    groups: &[String],
) -> Perms {
    let mut group_perms: Option<Perms> = None;
    let mut everyone: Option<Perms> = None;
    for ace in acl {
        let parts: Vec<&str> = ace.split(':').collect();
        let [access, flags, who, perms] = parts.as_slice() else {
            continue;
        };
        if !access.contains('A') {
            continue;
        }
        let p = Perms {
            read: perms.contains('r'),
            write: perms.contains('w'),
        };
        let is_group = flags.contains('G');
        match (*who, is_group) {
            ("OWNER@", false) if user == owner => return p,
            ("EVERYONE@", _) => everyone = Some(p),
            ("GROUP@", true) if groups.iter().any(|g| g == owner_group) => {
                let g = group_perms.get_or_insert_with(Perms::default);
                g.read |= p.read;
                g.write |= p.write;
            }
            (name, false) if name == user => return p,
            (name, true) if groups.iter().any(|g| g == name) => {
                let g = group_perms.get_or_insert_with(Perms::default);
                g.read |= p.read;
                g.write |= p.write;
            }
            _ => {}
        }
    }
    group_perms.or(everyone).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> PoolCmd {
        PoolCmd::Init {
            uuid: "u".into(),
            label: "tank".into(),
            map: vec![],
            map_version: 1,
            svc_ranks: vec![0],
            owner: "alice@".into(),
            group: "staff@".into(),
            acl: vec!["A::OWNER@:rw".into(), "A:G:GROUP@:r".into()],
            props: BTreeMap::new(),
        }
    }

    #[test]
    fn commands_need_init_and_init_is_once() {
        let mut db = PoolDb::default();
        let c = PoolCmd::Connect {
            hdl: "h".into(),
            user: "alice@".into(),
            rw: true,
        };
        assert!(matches!(db.apply(c.clone()), PoolResp::Err { .. }));
        assert_eq!(db.apply(init()), PoolResp::Ok);
        let before = db.clone();
        assert_eq!(db.apply(init()), PoolResp::Ok);
        assert_eq!(db, before);
        assert_eq!(db.apply(c), PoolResp::Ok);
    }

    #[test]
    fn containers() {
        let mut db = PoolDb::default();
        db.apply(init());
        let create = |u: &str, l: &str| PoolCmd::ContCreate {
            uuid: u.into(),
            label: l.into(),
            props: BTreeMap::new(),
            time: 5,
        };
        assert_eq!(db.apply(create("c1", "one")), PoolResp::Ok);
        assert!(
            matches!(db.apply(create("c2", "one")), PoolResp::Err { code, .. } if code == Der::EXIST.code())
        );
        assert_eq!(db.cont("one").map(|c| c.uuid.as_str()), Some("c1"));
        db.apply(PoolCmd::ContOpen {
            uuid: "c1".into(),
            coh: "h".into(),
            rw: true,
        });
        let d = PoolCmd::ContDestroy {
            uuid: "c1".into(),
            force: false,
        };
        assert!(matches!(db.apply(d), PoolResp::Err { code, .. } if code == Der::BUSY.code()));
        let d = PoolCmd::ContDestroy {
            uuid: "c1".into(),
            force: true,
        };
        assert_eq!(db.apply(d), PoolResp::Ok);
        assert!(db.cont("one").is_none());
    }

    #[test]
    fn acl() {
        let acl: Vec<String> = vec!["A::OWNER@:rw".into(), "A:G:GROUP@:r".into()];
        let p = acl_perms(&acl, "alice@", "staff@", "alice@", &[]);
        assert!(p.read && p.write);
        let p = acl_perms(&acl, "alice@", "staff@", "bob@", &["staff@".into()]);
        assert!(p.read && !p.write);
        let p = acl_perms(&acl, "alice@", "staff@", "eve@", &["users@".into()]);
        assert!(!p.read && !p.write);
        let acl: Vec<String> = vec!["A::EVERYONE@:r".into(), "A::bob@:rw".into()];
        assert!(acl_perms(&acl, "alice@", "staff@", "bob@", &[]).write);
        assert!(acl_perms(&acl, "alice@", "staff@", "eve@", &[]).read);
    }
}
