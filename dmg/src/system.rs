//! `dmg system query|stop|start|leader-query`: requests to the management
//! service leader, and their renderings. Renderers are pure functions of the
//! response, so their text and JSON are tested without a server.

use std::collections::BTreeMap;

use proto::mgmt::{
    LeaderQueryReq, LeaderQueryResp, RankResult, SystemMember, SystemQueryReq, SystemQueryResp,
    SystemStartReq, SystemStopReq,
};
use proto::units::format_ranks;
use serde_json::{json, Value};
use tracing::warn;

use crate::cli::{RankList, SystemCommand};
use crate::control::{CallTimeout, Client};
use crate::error::Error;
use crate::fanout::count_failure;
use crate::output::Outcome;
use crate::table::Table;
use crate::Context;

pub async fn run(cmd: SystemCommand, ctx: &Context) -> Result<Outcome, Error> {
    let ranks_of = |r: Option<RankList>| r.map(|r| r.0).unwrap_or_default();
    match cmd {
        SystemCommand::Query { verbose, ranks } => {
            let ranks = ranks_of(ranks);
            let req = SystemQueryReq {
                ranks: ranks.clone(),
            };
            let resp = ctx
                .client
                .call_ms(CallTimeout::Short, move |mut c: Client| {
                    let req = req.clone();
                    async move { c.system_query(req).await }
                })
                .await
                .map_err(|e| Error::daos("system query failed", e))?;
            if !resp.sys_name.is_empty() && resp.sys_name != ctx.sys_name {
                warn!(
                    configured = %ctx.sys_name,
                    reported = %resp.sys_name,
                    "the servers report a different system name than daos_control.yml"
                );
            }
            Ok(render_query(&resp, &ranks, verbose))
        }
        SystemCommand::Stop { force, ranks } => {
            let req = SystemStopReq {
                ranks: ranks_of(ranks),
                force,
            };
            let resp = ctx
                .client
                .call_ms(CallTimeout::Long, move |mut c: Client| {
                    let req = req.clone();
                    async move { c.system_stop(req).await }
                })
                .await
                .map_err(|e| Error::daos("system stop failed", e))?;
            Ok(render_results(&resp.results, "system stop failed"))
        }
        SystemCommand::Start { ranks } => {
            let req = SystemStartReq {
                ranks: ranks_of(ranks),
            };
            let resp = ctx
                .client
                .call_ms(CallTimeout::Long, move |mut c: Client| {
                    let req = req.clone();
                    async move { c.system_start(req).await }
                })
                .await
                .map_err(|e| Error::daos("system start failed", e))?;
            Ok(render_results(&resp.results, "system start failed"))
        }
        SystemCommand::LeaderQuery => {
            let resp = ctx
                .client
                .call_ms(CallTimeout::Short, |mut c: Client| async move {
                    c.leader_query(LeaderQueryReq {}).await
                })
                .await
                .map_err(|e| Error::daos("leader query failed", e))?;
            Ok(render_leader(&resp))
        }
    }
}

/// A state as DAOS prints it: `joined` becomes `Joined`.
pub fn title_case(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn member_json(m: &SystemMember) -> Value {
    json!({
        "rank": m.rank,
        "uuid": m.uuid,
        "addr": m.addr,
        "fabric_uri": m.fabric_uri,
        "state": m.state,
        "info": m.info,
        "fault_domain": m.fault_domain,
        "incarnation": m.incarnation,
        "instance_idx": m.instance_idx,
    })
}

/// Renders `system query`: ranks grouped by state, or one row per member with
/// `verbose`. `requested` ranks missing from the answer show as `Unknown Rank`.
pub fn render_query(resp: &SystemQueryResp, requested: &[u32], verbose: bool) -> Outcome {
    let absent: Vec<u32> = requested
        .iter()
        .copied()
        .filter(|r| !resp.members.iter().any(|m| m.rank == *r))
        .collect();
    let json = json!({
        "members": resp.members.iter().map(member_json).collect::<Vec<_>>(),
        "sys_name": resp.sys_name,
        "data_version": resp.data_version,
        "absent_ranks": if absent.is_empty() { String::new() } else { format_ranks(&absent) },
    });
    let mut text = if resp.members.is_empty() {
        "No members in system\n".to_string()
    } else if verbose {
        let mut t = Table::new(&[
            "Rank",
            "UUID",
            "Control Address",
            "Fault Domain",
            "State",
            "Reason",
        ]);
        let mut members: Vec<&SystemMember> = resp.members.iter().collect();
        members.sort_by_key(|m| m.rank);
        for m in members {
            t.row(vec![
                m.rank.to_string(),
                m.uuid.clone(),
                m.addr.clone(),
                m.fault_domain.clone(),
                title_case(&m.state),
                m.info.clone(),
            ]);
        }
        t.render()
    } else {
        let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for m in &resp.members {
            groups.entry(title_case(&m.state)).or_default().push(m.rank);
        }
        let mut t = Table::new(&["Rank", "State"]);
        for (state, ranks) in groups {
            t.row(vec![format_ranks(&ranks), state]);
        }
        if !absent.is_empty() {
            t.row(vec![format_ranks(&absent), "Unknown Rank".into()]);
        }
        t.render()
    };
    if verbose && !absent.is_empty() {
        text.push_str(&format!("Unknown ranks: {}\n", format_ranks(&absent)));
    }
    Outcome::ok(text, json)
}

/// Renders `system stop|start`: ranks grouped by operation and result; the
/// command fails if any rank failed.
pub fn render_results(results: &[RankResult], what: &str) -> Outcome {
    let json = json!({
        "results": results.iter().map(|r| json!({
            "rank": r.rank,
            "action": r.action,
            "errored": r.errored,
            "msg": r.msg,
            "state": r.state,
            "addr": r.addr,
        })).collect::<Vec<_>>(),
    });
    if results.is_empty() {
        return Outcome::ok("No results returned\n".into(), json);
    }
    let mut groups: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for r in results {
        let result = match (r.errored, r.msg.is_empty()) {
            (false, _) => "OK".to_string(),
            (true, true) => "error".to_string(),
            (true, false) => r.msg.clone(),
        };
        groups
            .entry((r.action.clone(), result))
            .or_default()
            .push(r.rank);
    }
    let mut t = Table::new(&["Rank", "Operation", "Result"]);
    for ((action, result), ranks) in groups {
        t.row(vec![format_ranks(&ranks), action, result]);
    }
    let failed = results.iter().filter(|r| r.errored).count();
    Outcome::ok(t.render(), json).with_failure(count_failure(what, failed, "rank"))
}

/// Renders `system leader-query`.
pub fn render_leader(resp: &LeaderQueryResp) -> Outcome {
    let mut text = format!(
        "Current Leader: {}\n   Replica Set: {}\n",
        resp.current_leader,
        resp.replicas.join(", ")
    );
    if !resp.down_replicas.is_empty() {
        text.push_str(&format!(
            "Down Replicas: {}\n",
            resp.down_replicas.join(", ")
        ));
    }
    let json = json!({
        "current_leader": resp.current_leader,
        "replicas": resp.replicas,
        "down_replicas": resp.down_replicas,
    });
    Outcome::ok(text, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Envelope;

    fn member(rank: u32, state: &str) -> SystemMember {
        SystemMember {
            rank,
            uuid: format!("00000000-0000-0000-0000-00000000000{rank}"),
            addr: "127.0.0.1:10001".into(),
            state: state.into(),
            fault_domain: "/host1".into(),
            ..Default::default()
        }
    }

    fn envelope_ok(o: Outcome) -> Value {
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert!(v["response"].is_object(), "{v}");
        v
    }

    #[test]
    fn query_groups_ranks_by_state() {
        let resp = SystemQueryResp {
            members: vec![
                member(0, "joined"),
                member(1, "joined"),
                member(2, "stopped"),
            ],
            sys_name: "daos_server".into(),
            data_version: 3,
        };
        let o = render_query(&resp, &[], false);
        assert_eq!(
            o.text,
            "Rank  State\n----  -----\n[0-1] Joined\n[2]   Stopped\n"
        );
        let v = envelope_ok(o);
        assert_eq!(v["response"]["members"][2]["state"], "stopped");
        assert_eq!(v["status"], 0);

        let o = render_query(&resp, &[0, 7], false);
        assert!(o.text.contains("[7]   Unknown Rank"), "{}", o.text);
        assert_eq!(o.json["absent_ranks"], "[7]");
    }

    #[test]
    fn query_verbose_and_empty() {
        let resp = SystemQueryResp {
            members: vec![member(1, "joined"), member(0, "errored")],
            ..Default::default()
        };
        let o = render_query(&resp, &[], true);
        let lines: Vec<&str> = o.text.lines().collect();
        assert!(lines[0].starts_with("Rank UUID"), "{}", o.text);
        assert!(lines[0].contains("Control Address Fault Domain State   Reason"));
        assert!(lines[2].starts_with("0    00000000"), "{}", o.text);
        assert!(lines[2].contains("Errored"));
        envelope_ok(o);

        let o = render_query(&SystemQueryResp::default(), &[], false);
        assert_eq!(o.text, "No members in system\n");
        envelope_ok(o);
    }

    #[test]
    fn results_group_and_fail() {
        let r = |rank, errored, msg: &str| RankResult {
            rank,
            action: "stop".into(),
            errored,
            msg: msg.into(),
            ..Default::default()
        };
        let o = render_results(&[r(0, false, ""), r(1, false, "")], "system stop failed");
        assert_eq!(
            o.text,
            "Rank  Operation Result\n----  --------- ------\n[0-1] stop      OK\n"
        );
        assert!(o.failure.is_none());
        envelope_ok(o);

        let o = render_results(
            &[r(0, false, ""), r(1, true, "engine busy")],
            "system stop failed",
        );
        assert!(o.text.contains("[1]  stop      engine busy"), "{}", o.text);
        let f = o.failure.as_ref().unwrap();
        assert!(f.to_string().contains("1 rank failed"));
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert_eq!(v["status"], -1025);
        assert_eq!(v["response"]["results"][1]["errored"], true);

        let o = render_results(&[], "system start failed");
        assert_eq!(o.text, "No results returned\n");
        envelope_ok(o);
    }

    #[test]
    fn leader() {
        let resp = LeaderQueryResp {
            current_leader: "a:10001".into(),
            replicas: vec!["a:10001".into(), "b:10001".into()],
            down_replicas: vec!["b:10001".into()],
        };
        let o = render_leader(&resp);
        assert_eq!(
            o.text,
            "Current Leader: a:10001\n   Replica Set: a:10001, b:10001\nDown Replicas: b:10001\n"
        );
        let v = envelope_ok(o);
        assert_eq!(v["response"]["replicas"][1], "b:10001");
    }
}
