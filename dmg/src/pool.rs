//! `dmg pool create|list|query|destroy|get-prop|set-prop`.
//!
//! A command becomes a [`Job`] first: every flag is checked and every file or
//! user-database lookup done before the first request, so a bad argument never
//! half-runs and its error reaches `-j` as JSON. Renderers are pure functions of
//! the responses.

use std::path::Path;

use proto::mgmt::{
    PoolCreateReq, PoolCreateResp, PoolDestroyReq, PoolGetPropReq, PoolGetPropResp, PoolInfo,
    PoolListReq, PoolListResp, PoolProperty, PoolQueryReq, PoolSetPropReq, TierUsage,
};
use proto::units::{format_bytes, format_ranks};
use proto::{DaosError, Der};
use serde_json::{json, Value};

use crate::cli::{PoolCommand, PoolCreateArgs};
use crate::control::{CallTimeout, Client};
use crate::error::Error;
use crate::output::Outcome;
use crate::system::title_case;
use crate::table::{entity, Table};
use crate::Context;

/// The tier ratio DAOS uses when `--tier-ratio` is not given: 6% SCM, 94% NVMe.
const DEFAULT_TIER_RATIO: [f64; 2] = [6.0, 94.0];

/// Properties the server fixes at pool creation (its `set-prop` refuses them too;
/// checked here so the error comes before anything is sent).
const CREATE_ONLY_PROPS: [&str; 4] = ["perf_domain", "ec_pda", "rp_pda", "data_thresh"];

/// A pool command with its arguments checked and its request built.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Create {
        req: PoolCreateReq,
        /// Lines printed before the request is sent, as DAOS does.
        announce: String,
    },
    List {
        verbose: bool,
    },
    Query(PoolQueryReq),
    Destroy(PoolDestroyReq),
    GetProp(PoolGetPropReq),
    SetProp(PoolSetPropReq),
}

impl Job {
    pub fn prepare(cmd: PoolCommand) -> Result<Self, Error> {
        Ok(match cmd {
            PoolCommand::Create(args) => {
                let (req, announce) = create_request(*args)?;
                Job::Create { req, announce }
            }
            PoolCommand::List { verbose } => Job::List { verbose },
            PoolCommand::Query { pool } => Job::Query(PoolQueryReq { id: pool }),
            PoolCommand::Destroy {
                pool,
                force,
                recursive,
            } => Job::Destroy(PoolDestroyReq {
                id: pool,
                force,
                recursive,
            }),
            PoolCommand::GetProp { pool, names } => Job::GetProp(PoolGetPropReq {
                id: pool,
                names: names
                    .as_deref()
                    .map(|n| {
                        n.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            PoolCommand::SetProp {
                pool,
                props,
                properties,
            } => {
                let text = match (props, properties) {
                    (Some(p), None) | (None, Some(p)) => p,
                    (Some(_), Some(_)) => {
                        return Err(Error::Usage(
                            "pool set-prop: give the properties once, positionally or with -P"
                                .into(),
                        ))
                    }
                    (None, None) => {
                        return Err(Error::Usage(
                            "pool set-prop: no properties given: dmg pool set-prop POOL \
                             name:value[,name:value...]"
                                .into(),
                        ))
                    }
                };
                let properties = parse_properties(&text)?;
                if let Some(p) = properties
                    .iter()
                    .find(|p| CREATE_ONLY_PROPS.contains(&p.name.as_str()))
                {
                    return Err(Error::Usage(format!(
                        "pool set-prop: {:?} can only be set when the pool is created",
                        p.name
                    )));
                }
                Job::SetProp(PoolSetPropReq {
                    id: pool,
                    properties,
                })
            }
        })
    }

    /// What to print before sending, if anything.
    pub fn announce(&self) -> Option<&str> {
        match self {
            Job::Create { announce, .. } => Some(announce),
            _ => None,
        }
    }

    pub async fn run(self, ctx: &Context) -> Result<Outcome, Error> {
        let client = &ctx.client;
        match self {
            Job::Create { req, .. } => {
                let resp = client
                    .call_ms(CallTimeout::Long, move |mut c: Client| {
                        let req = req.clone();
                        async move { c.pool_create(req).await }
                    })
                    .await
                    .map_err(|e| Error::daos("pool create failed", e))?;
                Ok(render_create(&resp))
            }
            Job::List { verbose } => {
                let resp = client
                    .call_ms(CallTimeout::Short, |mut c: Client| async move {
                        c.pool_list(PoolListReq {}).await
                    })
                    .await
                    .map_err(|e| Error::daos("pool list failed", e))?;
                Ok(render_list(&resp, verbose))
            }
            Job::Query(req) => {
                let resp = client
                    .call_ms(CallTimeout::Short, move |mut c: Client| {
                        let req = req.clone();
                        async move { c.pool_query(req).await }
                    })
                    .await
                    .map_err(|e| Error::daos("pool query failed", e))?;
                let info = resp.info.ok_or_else(|| {
                    Error::daos(
                        "pool query failed",
                        DaosError::new(Der::PROTO, "the server's answer holds no pool info"),
                    )
                })?;
                Ok(render_query(&info))
            }
            Job::Destroy(req) => {
                let id = req.id.clone();
                client
                    .call_ms(CallTimeout::Long, move |mut c: Client| {
                        let req = req.clone();
                        async move { c.pool_destroy(req).await }
                    })
                    .await
                    .map_err(|e| Error::daos("pool destroy failed", e))?;
                Ok(Outcome::ok(
                    "Pool-destroy command succeeded\n".into(),
                    json!({ "pool": id }),
                ))
            }
            Job::GetProp(req) => {
                let id = req.id.clone();
                let resp = client
                    .call_ms(CallTimeout::Short, move |mut c: Client| {
                        let req = req.clone();
                        async move { c.pool_get_prop(req).await }
                    })
                    .await
                    .map_err(|e| Error::daos("pool get-prop failed", e))?;
                Ok(render_get_prop(&id, &resp))
            }
            Job::SetProp(req) => {
                let json = json!({
                    "pool": req.id,
                    "properties": req.properties.iter()
                        .map(|p| json!({"name": p.name, "value": p.value}))
                        .collect::<Vec<_>>(),
                });
                client
                    .call_ms(CallTimeout::Short, move |mut c: Client| {
                        let req = req.clone();
                        async move { c.pool_set_prop(req).await }
                    })
                    .await
                    .map_err(|e| Error::daos("pool set-prop failed", e))?;
                Ok(Outcome::ok("pool set-prop succeeded\n".into(), json))
            }
        }
    }
}

/// Parses `name:value[,name:value...]`.
pub fn parse_properties(s: &str) -> Result<Vec<PoolProperty>, Error> {
    let mut out: Vec<PoolProperty> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || Error::Usage(format!("invalid property {item:?}: expected name:value"));
        let (name, value) = item.split_once(':').ok_or_else(bad)?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(bad());
        }
        if out.iter().any(|p| p.name == name) {
            return Err(Error::Usage(format!("property {name:?} given twice")));
        }
        out.push(PoolProperty {
            name: name.into(),
            value: value.into(),
        });
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "invalid properties {s:?}: expected name:value[,name:value...]"
        )));
    }
    Ok(out)
}

/// Parses a tier ratio, `6,94` or `10` (meaning 10,90), into percentages that
/// add up to 100.
pub fn parse_tier_ratio(s: &str) -> Result<Vec<f64>, Error> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "invalid --tier-ratio {s:?}: {why} (expected SCM,NVMe percentages such as 6,94)"
        ))
    };
    let mut pcts = s
        .split(',')
        .map(|p| p.trim().trim_end_matches('%').parse::<f64>())
        .collect::<Result<Vec<f64>, _>>()
        .map_err(|_| bad("not a number"))?;
    if pcts.iter().any(|p| !(0.0..=100.0).contains(p)) {
        return Err(bad("each percentage must be between 0 and 100"));
    }
    match pcts.len() {
        1 => pcts.push(100.0 - pcts[0]),
        2 => {}
        _ => return Err(bad("at most two tiers")),
    }
    if (pcts.iter().sum::<f64>() - 100.0).abs() > 0.01 {
        return Err(bad("the percentages must add up to 100"));
    }
    if pcts[0] == 0.0 {
        return Err(bad("the SCM tier cannot be 0%"));
    }
    Ok(pcts)
}

/// Reads an ACL file: one ACE (`A::OWNER@:rw`) per line, `#` comments.
pub fn read_acl(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("reading ACL file {}: {e}", path.display())))?;
    parse_acl(&text).map_err(|e| Error::Usage(format!("ACL file {}: {e}", path.display())))
}

fn parse_acl(text: &str) -> Result<Vec<String>, String> {
    let mut aces = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ace = line.trim();
        if ace.is_empty() || ace.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = ace.split(':').collect();
        let valid = fields.len() == 4
            && !fields[0].is_empty()
            && fields[0].chars().all(|c| "AUL".contains(c))
            && fields[1].chars().all(|c| "GSFP".contains(c))
            && !fields[2].is_empty()
            && !fields[3].is_empty()
            && fields[3].chars().all(|c| "rwcdtTaAo".contains(c));
        if !valid {
            return Err(format!(
                "line {}: invalid ACE {ace:?}: expected TYPE:FLAGS:PRINCIPAL:PERMS such as A::OWNER@:rw",
                n + 1
            ));
        }
        aces.push(ace.to_string());
    }
    Ok(aces)
}

/// The invoking user's and group's names, as pool owners.
fn invoking_owner() -> Result<(String, String), Error> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .ok_or_else(|| Error::Usage(format!("no user name for uid {uid}: pass --user")))?;
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .ok_or_else(|| Error::Usage(format!("no group name for gid {gid}: pass --group")))?;
    Ok((user.name, group.name))
}

/// Sets the request's sizes from `--size`/`--tier-ratio` (automatic) or
/// `--scm-size`/`--nvme-size` (manual), and returns the lines announcing them.
fn allocate(a: &PoolCreateArgs, req: &mut PoolCreateReq) -> Result<String, Error> {
    let usage = |msg: &str| Error::Usage(format!("pool create: {msg}"));
    if a.size.is_some() && (a.scm_size.is_some() || a.nvme_size.is_some()) {
        return Err(usage(
            "--size cannot be combined with --scm-size or --nvme-size",
        ));
    }
    match (a.size, a.scm_size) {
        (None, None) => Err(usage("either --size (-z) or --scm-size (-s) must be given")),
        (Some(total), _) => {
            if total == 0 {
                return Err(usage("--size must be more than 0"));
            }
            let pcts = match &a.tier_ratio {
                Some(r) => parse_tier_ratio(r)?,
                None => DEFAULT_TIER_RATIO.to_vec(),
            };
            req.total_bytes = total;
            req.tier_ratio = pcts.iter().map(|p| p / 100.0).collect();
            let shown: Vec<String> = pcts.iter().map(f64::to_string).collect();
            Ok(format!(
                "Creating DAOS pool with automatic storage allocation: {} total, {} tier ratio\n",
                format_bytes(total),
                shown.join(",")
            ))
        }
        (None, Some(scm)) => {
            if a.nranks.is_some() {
                return Err(usage("--nranks cannot be combined with --scm-size"));
            }
            if a.tier_ratio.is_some() {
                return Err(usage("--tier-ratio cannot be combined with --scm-size"));
            }
            if scm == 0 {
                return Err(usage("--scm-size must be more than 0"));
            }
            let nvme = a.nvme_size.unwrap_or(0);
            req.scm_bytes = scm;
            req.nvme_bytes = nvme;
            let mut text = String::new();
            if nvme == 0 {
                text.push_str("Creating DAOS pool without NVME storage\n");
            }
            let ratio = if nvme > 0 {
                scm as f64 / nvme as f64
            } else {
                1.0
            };
            text.push_str(&format!(
                "Creating DAOS pool with manual per-engine storage allocation: {} SCM, {} NVMe \
                 ({:.2}% ratio)\n",
                format_bytes(scm),
                format_bytes(nvme),
                ratio * 100.0
            ));
            Ok(text)
        }
    }
}

/// Builds the create request and the lines announcing it.
fn create_request(a: PoolCreateArgs) -> Result<(PoolCreateReq, String), Error> {
    let mut req = PoolCreateReq::default();
    let announce = allocate(&a, &mut req)?;
    let usage = |msg: &str| Error::Usage(format!("pool create: {msg}"));
    let mut properties = match &a.properties {
        Some(p) => parse_properties(p)?,
        None => Vec::new(),
    };
    let label_prop = properties
        .iter()
        .position(|p| p.name == "label")
        .map(|i| properties.remove(i).value);
    let label = match (a.label, a.label_flag, label_prop) {
        (Some(l), None, None) | (None, Some(l), None) | (None, None, Some(l)) => l,
        (Some(p), Some(f), None) if p == f => p,
        (None, None, None) => {
            return Err(usage(
                "a label is required: dmg pool create LABEL --size SIZE",
            ))
        }
        _ => return Err(usage("give the label once (LABEL, --label or -P label:)")),
    };
    proto::names::check_label(&label).map_err(Error::Usage)?;

    req.label = label;
    req.properties = properties;
    req.nranks = a.nranks.unwrap_or(0);
    req.ranks = a.ranks.map(|r| r.0).unwrap_or_default();
    if req.nranks > 0 && !req.ranks.is_empty() {
        return Err(usage("--nranks and --ranks cannot be combined"));
    }
    req.num_svc_reps = a.nsvc.unwrap_or(0);
    let (user, group) = match (a.user, a.group) {
        (Some(u), Some(g)) => (u, g),
        (u, g) => {
            let (du, dg) = invoking_owner()?;
            (u.unwrap_or(du), g.unwrap_or(dg))
        }
    };
    req.user = proto::names::principal(&user);
    req.user_group = proto::names::principal(&group);
    if req.user.is_empty() || req.user_group.is_empty() {
        return Err(usage("--user and --group must name a user and a group"));
    }
    if let Some(path) = &a.acl_file {
        req.acl = read_acl(path)?;
    }
    Ok((req, announce))
}

/// Renders `pool create`: tier ratios and sizes from the per-rank tier bytes
/// times the number of storage ranks.
pub fn render_create(resp: &PoolCreateResp) -> Outcome {
    let nranks = resp.tgt_ranks.len() as u64;
    let per_rank: u64 = resp.tier_bytes.iter().sum();
    let ratios: Vec<String> = resp
        .tier_bytes
        .iter()
        .map(|b| {
            let r = if per_rank == 0 {
                0.0
            } else {
                *b as f64 / per_rank as f64
            };
            format!("{:.2}%", r * 100.0)
        })
        .collect();
    let title = format!("Pool created with {} storage tier ratio", ratios.join(","));
    let mut attrs = vec![
        ("UUID".to_string(), resp.uuid.clone()),
        ("Service Leader".to_string(), resp.leader.to_string()),
        ("Service Ranks".to_string(), format_ranks(&resp.svc_reps)),
        ("Storage Ranks".to_string(), format_ranks(&resp.tgt_ranks)),
        (
            "Total Size".to_string(),
            format_bytes(per_rank.saturating_mul(nranks)),
        ),
    ];
    for (i, b) in resp.tier_bytes.iter().enumerate() {
        let media = if i == 0 { "SCM" } else { "NVMe" };
        attrs.push((
            format!("Storage tier {i} ({media})"),
            format!(
                "{} ({} / rank)",
                format_bytes(b.saturating_mul(nranks)),
                format_bytes(*b)
            ),
        ));
    }
    let json = json!({
        "uuid": resp.uuid,
        "svc_ldr": resp.leader,
        "svc_reps": resp.svc_reps,
        "tgt_ranks": resp.tgt_ranks,
        "tier_bytes": resp.tier_bytes,
    });
    Outcome::ok(entity(&title, &attrs), json)
}

/// `(max - min) / mean` of the targets' free space, in percent.
pub fn imbalance(t: &TierUsage) -> u64 {
    if t.mean == 0 {
        return 0;
    }
    (t.max.saturating_sub(t.min) as u128 * 100 / t.mean as u128) as u64
}

/// Used space in percent of the total, 0 for an empty tier.
fn used_pct(total: u64, free: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (total.saturating_sub(free) as u128 * 100 / total as u128) as u64
}

/// The column name of a tier: its media type, or DAOS's by position.
fn tier_name(i: usize, t: &TierUsage) -> String {
    match (t.media_type.as_str(), i) {
        ("", 0) => "SCM".into(),
        ("", 1) => "NVME".into(),
        ("", _) => format!("TIER{i}"),
        (m, _) => m.to_uppercase(),
    }
}

fn pool_name(p: &PoolInfo) -> &str {
    if p.label.is_empty() {
        &p.uuid
    } else {
        &p.label
    }
}

/// A pool as JSON, for `pool list` and `pool query`.
pub fn pool_json(p: &PoolInfo) -> Value {
    let mut v = json!({
        "uuid": p.uuid,
        "label": p.label,
        "state": p.state,
        "svc_reps": p.svc_reps,
        "leader": p.leader,
        "ranks": p.ranks,
        "total_targets": p.total_targets,
        "active_targets": p.total_targets.saturating_sub(p.disabled_targets),
        "disabled_targets": p.disabled_targets,
        "total_engines": p.total_engines,
        "version": p.version,
        "owner": p.owner,
        "owner_group": p.owner_group,
        "tier_stats": p.tier_stats.iter().map(|t| json!({
            "total": t.total,
            "free": t.free,
            "min": t.min,
            "max": t.max,
            "mean": t.mean,
            "media_type": t.media_type,
        })).collect::<Vec<_>>(),
        "usage": p.tier_stats.iter().enumerate().map(|(i, t)| json!({
            "tier_name": tier_name(i, t),
            "size": t.total,
            "free": t.free,
            "imbalance": imbalance(t),
        })).collect::<Vec<_>>(),
    });
    if !p.query_error.is_empty() {
        v["query_error_msg"] = Value::String(p.query_error.clone());
    }
    v
}

/// Renders `pool list`, DAOS's columns; `verbose` adds UUIDs, service
/// replicas and per-tier columns. Pools whose usage could not be queried are
/// listed below the table with the reason.
pub fn render_list(resp: &PoolListResp, verbose: bool) -> Outcome {
    let json = json!({
        "pools": resp.pools.iter().map(pool_json).collect::<Vec<_>>(),
        "data_version": resp.data_version,
    });
    if resp.pools.is_empty() {
        return Outcome::ok("no pools in system\n".into(), json);
    }
    let (good, failed): (Vec<&PoolInfo>, Vec<&PoolInfo>) =
        resp.pools.iter().partition(|p| p.query_error.is_empty());
    let disabled = |p: &PoolInfo| format!("{}/{}", p.disabled_targets, p.total_targets);
    let mut text = if verbose {
        let mut tiers: Vec<String> = Vec::new();
        for p in &good {
            for (i, t) in p.tier_stats.iter().enumerate() {
                let name = tier_name(i, t);
                if !tiers.contains(&name) {
                    tiers.push(name);
                }
            }
        }
        let mut titles: Vec<String> = ["Label", "UUID", "State", "SvcReps"]
            .map(String::from)
            .to_vec();
        for t in &tiers {
            titles.extend([
                format!("{t} Size"),
                format!("{t} Used"),
                format!("{t} Imbalance"),
            ]);
        }
        titles.push("Disabled".into());
        let mut table = Table::new(&titles);
        for p in &good {
            let label = if p.label.is_empty() { "-" } else { &p.label };
            let svc = if p.svc_reps.is_empty() {
                "N/A".to_string()
            } else {
                format_ranks(&p.svc_reps)
            };
            let mut row = vec![label.to_string(), p.uuid.clone(), title_case(&p.state), svc];
            for name in &tiers {
                let tier = p
                    .tier_stats
                    .iter()
                    .enumerate()
                    .find(|(i, t)| tier_name(*i, t) == *name);
                match tier {
                    Some((_, t)) => row.extend([
                        format_bytes(t.total),
                        format_bytes(t.total.saturating_sub(t.free)),
                        format!("{}%", imbalance(t)),
                    ]),
                    None => row.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
                }
            }
            row.push(disabled(p));
            table.row(row);
        }
        table.render()
    } else {
        let mut table = Table::new(&["Pool", "Size", "State", "Used", "Imbalance", "Disabled"]);
        for p in &good {
            let total: u64 = p.tier_stats.iter().map(|t| t.total).sum();
            let free: u64 = p.tier_stats.iter().map(|t| t.free).sum();
            let imb = p.tier_stats.iter().map(imbalance).max().unwrap_or(0);
            table.row(vec![
                pool_name(p).to_string(),
                format_bytes(total),
                title_case(&p.state),
                format!("{}%", used_pct(total, free)),
                format!("{imb}%"),
                disabled(p),
            ]);
        }
        table.render()
    };
    for p in failed {
        text.push_str(&format!(
            "Query on pool {:?} unsuccessful, error: {}\n",
            pool_name(p),
            p.query_error
        ));
    }
    Outcome::ok(text, json)
}

/// Renders `pool query` as DAOS does (and as `daos pool query` does).
pub fn render_query(p: &PoolInfo) -> Outcome {
    let mut text = format!(
        "Pool {}, ntarget={}, disabled={}, leader={}, version={}, state={}\n",
        p.uuid,
        p.total_targets,
        p.disabled_targets,
        p.leader,
        p.version,
        title_case(&p.state)
    );
    if p.query_error.is_empty() {
        text.push_str("Pool space info:\n");
        text.push_str(&format!(
            "- Target count:{}\n",
            p.total_targets.saturating_sub(p.disabled_targets)
        ));
        for (i, t) in p.tier_stats.iter().enumerate() {
            let media = match (t.media_type.as_str(), i) {
                ("", 0) => "SCM",
                ("", 1) => "NVMe",
                ("", _) => "unknown",
                (m, _) => m,
            };
            text.push_str(&format!(
                "- Storage tier {i} ({media}):\n  Total size: {}\n  Free: {}, min:{}, max:{}, mean:{}\n",
                format_bytes(t.total),
                format_bytes(t.free),
                format_bytes(t.min),
                format_bytes(t.max),
                format_bytes(t.mean)
            ));
        }
    } else {
        text.push_str(&format!("Pool space info unavailable: {}\n", p.query_error));
    }
    Outcome::ok(text, pool_json(p))
}

/// Renders `pool get-prop`: `Description (name)` and value rows.
pub fn render_get_prop(id: &str, resp: &PoolGetPropResp) -> Outcome {
    let mut t = Table::new(&["Name", "Value"]);
    for p in &resp.properties {
        let name = if p.description.is_empty() {
            p.name.clone()
        } else {
            format!("{} ({})", p.description, p.name)
        };
        t.row(vec![name, p.value.clone()]);
    }
    let text = format!("Pool {id} properties:\n{}", t.render());
    let json = Value::Array(
        resp.properties
            .iter()
            .map(|p| json!({"name": p.name, "description": p.description, "value": p.value}))
            .collect(),
    );
    Outcome::ok(text, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::output::Envelope;
    use clap::Parser;
    use proto::mgmt::PoolPropertyInfo;

    fn prepare(args: &[&str]) -> Result<Job, Error> {
        let mut argv = vec!["dmg", "pool"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Pool(cmd) => Job::prepare(cmd),
            other => panic!("{other:?}"),
        }
    }

    fn create(args: &[&str]) -> Result<(PoolCreateReq, String), Error> {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-u", "alice", "-g", "staff@"]);
        match prepare(&full)? {
            Job::Create { req, announce } => Ok((req, announce)),
            other => panic!("{other:?}"),
        }
    }

    fn valid(o: Outcome) -> Value {
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert_eq!(v["status"], 0);
        assert!(v["response"].is_object() || v["response"].is_array(), "{v}");
        v
    }

    #[test]
    fn create_with_total_size() {
        let (req, announce) = create(&["tank", "-z", "8GiB"]).unwrap();
        assert_eq!(req.label, "tank");
        assert_eq!(req.total_bytes, 8 << 30);
        assert_eq!(req.tier_ratio, vec![0.06, 0.94]);
        assert_eq!(req.scm_bytes, 0);
        assert_eq!(req.user, "alice@");
        assert_eq!(req.user_group, "staff@");
        assert_eq!(
            announce,
            "Creating DAOS pool with automatic storage allocation: 8.6 GB total, 6,94 tier ratio\n"
        );
        let (req, announce) = create(&[
            "--label", "t2", "--size", "1T", "-t", "10", "-k", "2", "-v", "3",
        ])
        .unwrap();
        assert_eq!(req.label, "t2");
        assert_eq!(req.tier_ratio, vec![0.1, 0.9]);
        assert_eq!((req.nranks, req.num_svc_reps), (2, 3));
        assert!(announce.contains("10,90 tier ratio"), "{announce}");
    }

    #[test]
    fn create_with_manual_sizes() {
        let (req, announce) = create(&[
            "tank",
            "-s",
            "1GB",
            "-n",
            "10GB",
            "-r",
            "0-1",
            "-P",
            "reclaim:lazy",
        ])
        .unwrap();
        assert_eq!(
            (req.scm_bytes, req.nvme_bytes, req.total_bytes),
            (1_000_000_000, 10_000_000_000, 0)
        );
        assert_eq!(req.ranks, vec![0, 1]);
        assert_eq!(req.properties[0].name, "reclaim");
        assert!(
            announce.ends_with(
                "manual per-engine storage allocation: 1.0 GB SCM, 10 GB NVMe (10.00% ratio)\n"
            ),
            "{announce}"
        );
        let (_, announce) = create(&["tank", "-s", "1GB"]).unwrap();
        assert!(announce.starts_with("Creating DAOS pool without NVME storage\n"));
        assert!(announce.contains("(100.00% ratio)"));
    }

    #[test]
    fn create_rejects_bad_combinations() {
        let cases: &[(&[&str], &str)] = &[
            (&["tank"], "either --size"),
            (&["tank", "-z", "1G", "-s", "1G"], "cannot be combined"),
            (&["tank", "-z", "1G", "-n", "1G"], "cannot be combined"),
            (&["tank", "-n", "1G"], "either --size"),
            (&["tank", "-s", "1G", "-t", "6,94"], "--tier-ratio"),
            (&["tank", "-s", "1G", "-k", "2"], "--nranks"),
            (
                &["tank", "-z", "1G", "-k", "2", "-r", "1"],
                "--nranks and --ranks",
            ),
            (&["tank", "-z", "0"], "more than 0"),
            (&["tank", "-z", "1G", "-t", "50,60"], "add up to 100"),
            (&["tank", "-z", "1G", "-t", "x"], "not a number"),
            (&["-z", "1G"], "label is required"),
            (&["a", "--label", "b", "-z", "1G"], "label once"),
            (&["tank", "-z", "1G", "-P", "label:x"], "label once"),
            (&["bad/label", "-z", "1G"], "invalid pool label"),
            (
                &["12345678-1234-1234-1234-123456789abc", "-z", "1G"],
                "UUID",
            ),
            (
                &["tank", "-z", "1G", "-P", "reclaim"],
                "expected name:value",
            ),
        ];
        for (args, want) in cases {
            let e = create(args).unwrap_err();
            assert!(e.to_string().contains(want), "{args:?}: {e}");
            assert_eq!(e.der(), Der::INVAL);
        }
        let e = prepare(&["create", "tank", "-z", "1G", "-u", " ", "-g", "staff"]).unwrap_err();
        assert!(e.to_string().contains("--user and --group"), "{e}");
        // The label may come from -P alone.
        let (req, _) = create(&["-z", "1G", "-P", "label:fromprop"]).unwrap();
        assert_eq!(req.label, "fromprop");
        assert!(req.properties.is_empty());
    }

    #[test]
    fn create_defaults_owner_to_the_invoking_user() {
        let job = prepare(&["create", "tank", "-z", "1G"]).unwrap();
        let Job::Create { req, .. } = job else {
            panic!()
        };
        assert!(
            req.user.ends_with('@') && req.user.len() > 1,
            "{}",
            req.user
        );
        assert!(req.user_group.ends_with('@') && req.user_group.len() > 1);
    }

    #[test]
    fn acl_files() {
        assert!(parse_acl("A::bob@:rw # no trailing comments\n").is_err());
        let ok = parse_acl("# pool ACL\nA::OWNER@:rw\n\n  A:G:GROUP@:r  \n").unwrap();
        assert_eq!(ok, vec!["A::OWNER@:rw", "A:G:GROUP@:r"]);
        let e = parse_acl("A::OWNER@:rw\nbogus\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl.txt");
        std::fs::write(&path, "A::OWNER@:rw\n").unwrap();
        let p = path.to_str().unwrap();
        let (req, _) = create(&["tank", "-z", "1G", "-a", p]).unwrap();
        assert_eq!(req.acl, vec!["A::OWNER@:rw"]);
        let e = create(&["tank", "-z", "1G", "-a", "/nonexistent/acl"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/acl"), "{e}");
    }

    #[test]
    fn set_prop_and_get_prop_jobs() {
        let job = prepare(&["set-prop", "tank", "reclaim:lazy,label:new"]).unwrap();
        let Job::SetProp(req) = job else { panic!() };
        assert_eq!(req.properties.len(), 2);
        let job = prepare(&["set-prop", "tank", "--properties", "reclaim:time"]).unwrap();
        assert!(matches!(job, Job::SetProp(_)));
        assert!(prepare(&["set-prop", "tank"]).is_err());
        assert!(prepare(&["set-prop", "tank", "a:b", "-P", "c:d"]).is_err());
        for p in CREATE_ONLY_PROPS {
            let e = prepare(&["set-prop", "tank", &format!("{p}:1")]).unwrap_err();
            assert!(e.to_string().contains(p), "{e}");
        }
        let job = prepare(&["get-prop", "tank", "label, reclaim"]).unwrap();
        assert_eq!(
            job,
            Job::GetProp(PoolGetPropReq {
                id: "tank".into(),
                names: vec!["label".into(), "reclaim".into()]
            })
        );
    }

    #[test]
    fn create_output() {
        let resp = PoolCreateResp {
            uuid: "6f2e0e48-2d1c-4d4b-9f0e-2c1b0f7c7a11".into(),
            svc_reps: vec![0],
            tgt_ranks: vec![0],
            tier_bytes: vec![8 << 30, 0],
            leader: 0,
        };
        let o = render_create(&resp);
        assert_eq!(
            o.text,
            "Pool created with 100.00%,0.00% storage tier ratio\n\
             --------------------------------------------------\n  \
             UUID                 : 6f2e0e48-2d1c-4d4b-9f0e-2c1b0f7c7a11\n  \
             Service Leader       : 0\n  \
             Service Ranks        : [0]\n  \
             Storage Ranks        : [0]\n  \
             Total Size           : 8.6 GB\n  \
             Storage tier 0 (SCM) : 8.6 GB (8.6 GB / rank)\n  \
             Storage tier 1 (NVMe): 0 B (0 B / rank)\n"
        );
        let v = valid(o);
        assert_eq!(v["response"]["tier_bytes"][0], 8u64 << 30);

        let resp = PoolCreateResp {
            tgt_ranks: vec![0, 1, 2, 3],
            tier_bytes: vec![6_000_000_000, 94_000_000_000],
            ..resp
        };
        let o = render_create(&resp);
        assert!(o
            .text
            .starts_with("Pool created with 6.00%,94.00% storage tier ratio\n"));
        assert!(
            o.text.contains("Total Size           : 400 GB\n"),
            "{}",
            o.text
        );
        assert!(
            o.text
                .contains("Storage tier 1 (NVMe): 376 GB (94 GB / rank)\n"),
            "{}",
            o.text
        );
    }

    fn tier(total: u64, free: u64, min: u64, max: u64, media: &str) -> TierUsage {
        TierUsage {
            total,
            free,
            min,
            max,
            mean: (min + max) / 2,
            media_type: media.into(),
        }
    }

    fn pool(label: &str) -> PoolInfo {
        PoolInfo {
            uuid: "6f2e0e48-2d1c-4d4b-9f0e-2c1b0f7c7a11".into(),
            label: label.into(),
            state: "Ready".into(),
            svc_reps: vec![0, 1, 2],
            ranks: vec![0, 1, 2],
            total_targets: 16,
            disabled_targets: 0,
            leader: 1,
            version: 1,
            tier_stats: vec![
                tier(1_000_000_000, 750_000_000, 40_000_000, 60_000_000, "SCM"),
                tier(
                    100_000_000_000,
                    50_000_000_000,
                    3_000_000_000,
                    3_000_000_000,
                    "NVMe",
                ),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn list_output() {
        assert_eq!(imbalance(&tier(0, 0, 40, 60, "")), 40);
        let resp = PoolListResp {
            pools: vec![
                pool("tank"),
                PoolInfo {
                    query_error: "engine down".into(),
                    ..pool("")
                },
            ],
            data_version: 4,
        };
        let o = render_list(&resp, false);
        let lines: Vec<&str> = o.text.lines().collect();
        assert_eq!(lines[0], "Pool Size   State Used Imbalance Disabled");
        assert_eq!(lines[1], "---- ----   ----- ---- --------- --------");
        assert_eq!(lines[2], "tank 101 GB Ready 49%  40%       0/16");
        assert_eq!(
            lines[3],
            "Query on pool \"6f2e0e48-2d1c-4d4b-9f0e-2c1b0f7c7a11\" unsuccessful, error: engine down"
        );
        let v = valid(o);
        let p = &v["response"]["pools"][0];
        for key in [
            "uuid",
            "label",
            "state",
            "svc_reps",
            "total_targets",
            "disabled_targets",
        ] {
            assert!(!p[key].is_null(), "{key}");
        }
        assert_eq!(p["tier_stats"][1]["media_type"], "NVMe");
        assert_eq!(p["tier_stats"][0]["mean"], 50_000_000);
        assert_eq!(v["response"]["pools"][1]["query_error_msg"], "engine down");

        let o = render_list(&resp, true);
        let lines: Vec<&str> = o.text.lines().collect();
        assert!(
            lines[0].starts_with(
                "Label UUID                                 State SvcReps SCM Size SCM Used SCM Imbalance NVME Size NVME Used NVME Imbalance Disabled"
            ),
            "{}",
            o.text
        );
        assert!(lines[2].starts_with("tank  6f2e0e48"), "{}", o.text);
        assert!(lines[2].contains("[0-2]"), "{}", o.text);
        valid(o);

        let o = render_list(&PoolListResp::default(), false);
        assert_eq!(o.text, "no pools in system\n");
        valid(o);
    }

    #[test]
    fn query_output() {
        let o = render_query(&pool("tank"));
        assert_eq!(
            o.text,
            "Pool 6f2e0e48-2d1c-4d4b-9f0e-2c1b0f7c7a11, ntarget=16, disabled=0, leader=1, version=1, state=Ready\n\
             Pool space info:\n\
             - Target count:16\n\
             - Storage tier 0 (SCM):\n  \
             Total size: 1.0 GB\n  \
             Free: 750 MB, min:40 MB, max:60 MB, mean:50 MB\n\
             - Storage tier 1 (NVMe):\n  \
             Total size: 100 GB\n  \
             Free: 50 GB, min:3.0 GB, max:3.0 GB, mean:3.0 GB\n"
        );
        let v = valid(o);
        assert_eq!(v["response"]["active_targets"], 16);
        let o = render_query(&PoolInfo {
            query_error: "engine down".into(),
            ..pool("tank")
        });
        assert!(o
            .text
            .ends_with("Pool space info unavailable: engine down\n"));
    }

    #[test]
    fn get_prop_output() {
        let resp = PoolGetPropResp {
            properties: vec![
                PoolPropertyInfo {
                    name: "label".into(),
                    description: "Pool label".into(),
                    value: "tank".into(),
                },
                PoolPropertyInfo {
                    name: "reclaim".into(),
                    description: "Reclaim strategy".into(),
                    value: "lazy".into(),
                },
            ],
        };
        let o = render_get_prop("tank", &resp);
        assert_eq!(
            o.text,
            "Pool tank properties:\n\
             Name                       Value\n\
             ----                       -----\n\
             Pool label (label)         tank\n\
             Reclaim strategy (reclaim) lazy\n"
        );
        let v = valid(o);
        assert_eq!(v["response"][1]["description"], "Reclaim strategy");
        assert_eq!(v["response"][1]["value"], "lazy");
    }

    #[test]
    fn tier_ratios() {
        assert_eq!(parse_tier_ratio("6,94").unwrap(), vec![6.0, 94.0]);
        assert_eq!(parse_tier_ratio("100").unwrap(), vec![100.0, 0.0]);
        assert_eq!(parse_tier_ratio("2.5%,97.5%").unwrap(), vec![2.5, 97.5]);
        for bad in ["", "0,100", "101", "-1,101", "1,2,97", "50,40"] {
            assert!(parse_tier_ratio(bad).is_err(), "{bad}");
        }
    }
}
