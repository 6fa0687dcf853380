//! The management service's replicated state: system membership and pools.
//!
//! Every change is a [`MsCmd`] applied in log order by [`SystemDb::apply`], which is
//! deterministic (no clocks, no randomness: ids and times arrive inside the command),
//! so every replica that applies the same log holds the same state.

use std::collections::BTreeMap;

use proto::{DaosError, Der};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Joined,
    Stopping,
    Stopped,
    Errored,
    Excluded,
    /// Its server restarted and the engine has not joined again yet.
    Unresponsive,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joined => "joined",
            MemberState::Stopping => "stopping",
            MemberState::Stopped => "stopped",
            MemberState::Errored => "errored",
            MemberState::Excluded => "excluded",
            MemberState::Unresponsive => "unresponsive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub rank: u32,
    pub uuid: String,
    /// Control address of the server that runs this engine.
    pub addr: String,
    pub fabric_uri: String,
    pub nctxs: u32,
    pub state: MemberState,
    pub info: String,
    pub fault_domain: String,
    pub incarnation: u64,
    pub instance_idx: u32,
    pub ntgts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolState {
    Creating,
    Ready,
    Destroying,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Creating => "Creating",
            PoolState::Ready => "Ready",
            PoolState::Destroying => "Destroying",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRec {
    pub uuid: String,
    pub label: String,
    pub state: PoolState,
    pub svc_reps: Vec<u32>,
    pub ranks: Vec<u32>,
    /// Targets per storage rank, as they were when the pool was created.
    pub tgts: BTreeMap<u32, u32>,
    pub scm_per_rank: u64,
    pub nvme_per_rank: u64,
    pub props: BTreeMap<String, String>,
    pub owner: String,
    pub group: String,
    pub acl: Vec<String>,
    pub map_version: u32,
}

/// A change to the state, as it sits in the raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MsCmd {
    /// An engine joins (or rejoins: same uuid keeps its rank).
    Join {
        uuid: String,
        addr: String,
        fabric_uri: String,
        nctxs: u32,
        incarnation: u64,
        instance_idx: u32,
        ntgts: u32,
        fault_domain: String,
    },
    /// Changes a member's state; with `incarnation`, only if the member is still
    /// that incarnation (a late "stopped" must not overwrite a newer join).
    SetMemberState {
        rank: u32,
        state: MemberState,
        info: String,
        incarnation: Option<u64>,
    },
    /// The server at `addr` restarted: its joined members are unresponsive until
    /// their engines join again.
    ServerRestarted {
        addr: String,
    },
    PoolAdd(PoolRec),
    PoolSetState {
        uuid: String,
        state: PoolState,
    },
    PoolSetProps {
        uuid: String,
        props: BTreeMap<String, String>,
    },
    PoolRemove {
        uuid: String,
    },
}

/// The outcome of applying one command. `Ok` is also what raft's own entries
/// (blank, membership) apply to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum MsResp {
    #[default]
    Ok,
    Rank(u32),
    Err {
        code: i32,
        msg: String,
    },
}

impl MsResp {
    fn err(der: Der, msg: String) -> Self {
        MsResp::Err {
            code: der.code(),
            msg,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemDb {
    pub members: BTreeMap<u32, Member>,
    pub next_rank: u32,
    pub pools: BTreeMap<String, PoolRec>,
    /// Rises with every applied change; clients use it to see that their view is stale.
    pub data_version: u64,
}

impl SystemDb {
    pub fn apply(&mut self, cmd: MsCmd) -> MsResp {
        let resp = self.apply_inner(cmd);
        if !matches!(resp, MsResp::Err { .. }) {
            self.data_version += 1;
        }
        resp
    }

    fn apply_inner(&mut self, cmd: MsCmd) -> MsResp {
        match cmd {
            MsCmd::Join {
                uuid,
                addr,
                fabric_uri,
                nctxs,
                incarnation,
                instance_idx,
                ntgts,
                fault_domain,
            } => {
                // Same engine (UUID), or the same engine slot reformatted (new UUID,
                // same server and index): it keeps its rank, so no ghost is left.
                let same = self
                    .members
                    .values()
                    .find(|m| m.uuid == uuid || (m.addr == addr && m.instance_idx == instance_idx));
                let rank = match same {
                    Some(m) => m.rank,
                    None => {
                        let r = self.next_rank;
                        self.next_rank += 1;
                        r
                    }
                };
                self.members.insert(
                    rank,
                    Member {
                        rank,
                        uuid,
                        addr,
                        fabric_uri,
                        nctxs,
                        state: MemberState::Joined,
                        info: String::new(),
                        fault_domain,
                        incarnation,
                        instance_idx,
                        ntgts,
                    },
                );
                MsResp::Rank(rank)
            }
            MsCmd::SetMemberState {
                rank,
                state,
                info,
                incarnation,
            } => match self.members.get_mut(&rank) {
                Some(m) if incarnation.is_some_and(|i| i != m.incarnation) => MsResp::Ok,
                Some(m) => {
                    m.state = state;
                    m.info = info;
                    MsResp::Ok
                }
                None => MsResp::err(Der::NONEXIST, format!("rank {rank} is not a member")),
            },
            MsCmd::ServerRestarted { addr } => {
                for m in self
                    .members
                    .values_mut()
                    .filter(|m| m.addr == addr && m.state == MemberState::Joined)
                {
                    m.state = MemberState::Unresponsive;
                    m.info = "server restarted; engine has not joined yet".into();
                }
                MsResp::Ok
            }
            MsCmd::PoolAdd(rec) => {
                if self.pools.contains_key(&rec.uuid) {
                    return MsResp::err(Der::EXIST, format!("pool {} already exists", rec.uuid));
                }
                if self.pools.values().any(|p| p.label == rec.label) {
                    return MsResp::err(
                        Der::EXIST,
                        format!("pool label {:?} is already in use", rec.label),
                    );
                }
                self.pools.insert(rec.uuid.clone(), rec);
                MsResp::Ok
            }
            MsCmd::PoolSetState { uuid, state } => match self.pools.get_mut(&uuid) {
                Some(p) => {
                    p.state = state;
                    MsResp::Ok
                }
                None => MsResp::err(Der::NONEXIST, format!("pool {uuid} does not exist")),
            },
            MsCmd::PoolSetProps { uuid, props } => {
                if let Some(label) = props.get("label") {
                    if self
                        .pools
                        .values()
                        .any(|p| &p.label == label && p.uuid != uuid)
                    {
                        return MsResp::err(
                            Der::EXIST,
                            format!("pool label {label:?} is already in use"),
                        );
                    }
                }
                match self.pools.get_mut(&uuid) {
                    Some(p) => {
                        if let Some(label) = props.get("label") {
                            p.label = label.clone();
                        }
                        p.props.extend(props);
                        p.map_version += 1;
                        MsResp::Ok
                    }
                    None => MsResp::err(Der::NONEXIST, format!("pool {uuid} does not exist")),
                }
            }
            MsCmd::PoolRemove { uuid } => match self.pools.remove(&uuid) {
                Some(_) => MsResp::Ok,
                None => MsResp::err(Der::NONEXIST, format!("pool {uuid} does not exist")),
            },
        }
    }

    /// Finds a pool by UUID or label.
    pub fn find_pool(&self, id: &str) -> Option<&PoolRec> {
        self.pools
            .get(id)
            .or_else(|| self.pools.values().find(|p| p.label == id))
    }
}

impl rdb::Db for SystemDb {
    type Cmd = MsCmd;
    type Resp = MsResp;

    fn apply(&mut self, cmd: MsCmd) -> MsResp {
        SystemDb::apply(self, cmd)
    }

    fn resp_error(resp: &MsResp) -> Option<DaosError> {
        match resp {
            MsResp::Err { code, msg } => Some(DaosError::new(
                Der::from_code(*code).unwrap_or(Der::MISC),
                msg.clone(),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(uuid: &str, idx: u32) -> MsCmd {
        MsCmd::Join {
            uuid: uuid.into(),
            addr: "a".into(),
            fabric_uri: "tcp://x".into(),
            nctxs: 1,
            incarnation: 1,
            instance_idx: idx,
            ntgts: 1,
            fault_domain: "/".into(),
        }
    }

    fn pool(uuid: &str, label: &str) -> PoolRec {
        PoolRec {
            uuid: uuid.into(),
            label: label.into(),
            state: PoolState::Creating,
            svc_reps: vec![0],
            ranks: vec![0],
            tgts: BTreeMap::new(),
            scm_per_rank: 1,
            nvme_per_rank: 0,
            props: BTreeMap::new(),
            owner: "root@".into(),
            group: "root@".into(),
            acl: vec![],
            map_version: 1,
        }
    }

    #[test]
    fn rejoin_keeps_rank() {
        let mut db = SystemDb::default();
        assert_eq!(db.apply(join("a", 0)), MsResp::Rank(0));
        assert_eq!(db.apply(join("b", 1)), MsResp::Rank(1));
        db.apply(MsCmd::SetMemberState {
            rank: 0,
            state: MemberState::Errored,
            info: "died".into(),
            incarnation: None,
        });
        assert_eq!(db.apply(join("a", 0)), MsResp::Rank(0));
        assert_eq!(db.members[&0].state, MemberState::Joined);
        // A stale state change for an older incarnation is ignored.
        db.apply(MsCmd::SetMemberState {
            rank: 0,
            state: MemberState::Stopped,
            info: "old".into(),
            incarnation: Some(0),
        });
        assert_eq!(db.members[&0].state, MemberState::Joined);
        // The same slot reformatted (new UUID) keeps its rank: no ghost member.
        assert_eq!(db.apply(join("a-reformatted", 0)), MsResp::Rank(0));
        assert_eq!(db.members.len(), 2);
        assert_eq!(db.members[&0].uuid, "a-reformatted");
        db.apply(MsCmd::ServerRestarted { addr: "a".into() });
        assert!(db
            .members
            .values()
            .all(|m| m.state == MemberState::Unresponsive));
    }

    #[test]
    fn labels_are_unique_and_errors_change_nothing() {
        let mut db = SystemDb::default();
        assert_eq!(db.apply(MsCmd::PoolAdd(pool("u1", "tank"))), MsResp::Ok);
        let v = db.data_version;
        let before = db.clone();
        assert!(
            matches!(db.apply(MsCmd::PoolAdd(pool("u2", "tank"))), MsResp::Err { code, .. } if code == Der::EXIST.code())
        );
        assert!(
            matches!(db.apply(MsCmd::PoolRemove { uuid: "nope".into() }), MsResp::Err { code, .. } if code == Der::NONEXIST.code())
        );
        assert_eq!(db, before);
        assert_eq!(db.data_version, v);
        assert_eq!(db.find_pool("tank").map(|p| p.uuid.as_str()), Some("u1"));
        assert_eq!(db.find_pool("u1").map(|p| p.label.as_str()), Some("tank"));
    }
}
