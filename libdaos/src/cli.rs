//! The `daos` user CLI: pool and container commands with DAOS's names, flags
//! and output shapes; `-j` prints DAOS's JSON envelope
//! `{"response": ..., "error": ..., "status": ...}` instead of text.

use std::io::Write;

use clap::{Args, Parser, Subcommand};
use proto::{DaosError, Der};
use serde_json::{json, Value};

use crate::{ContInfo, Daos, DaosOpts, Error, PoolFlags};

#[derive(Parser, Debug)]
#[command(name = "daos", version = proto::VERSION, about = "DAOS user tool: pools and containers")]
pub struct Cli {
    /// Print DAOS's JSON envelope instead of text.
    #[arg(short = 'j', long = "json", global = true)]
    pub json: bool,
    /// The DAOS system to attach to.
    #[arg(long = "sys-name", global = true, env = "DAOS_SYSTEM", default_value = crate::DEFAULT_SYS)]
    pub sys: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Pool commands.
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Container commands.
    #[command(alias = "cont")]
    Container {
        #[command(subcommand)]
        cmd: ContCmd,
    },
    /// Prints the version.
    Version,
}

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Space, targets and service of a pool.
    Query { pool: String },
    /// The containers of a pool.
    #[command(name = "list-containers", alias = "list-cont", alias = "list-conts")]
    ListContainers { pool: String },
}

#[derive(Args, Debug)]
pub struct PoolCont {
    /// Pool label or UUID.
    pub pool: String,
    /// Container label or UUID.
    pub cont: String,
}

#[derive(Subcommand, Debug)]
pub enum ContCmd {
    /// Creates a container.
    Create {
        pool: String,
        /// The container's label.
        label: Option<String>,
        /// Container type (POSIX, HDF5, PYTHON, ...).
        #[arg(long = "type", default_value = "unknown")]
        ctype: String,
        /// Default object class.
        #[arg(long = "oclass")]
        oclass: Option<String>,
        /// Default chunk size (e.g. 1MiB).
        #[arg(long = "chunk-size")]
        chunk_size: Option<String>,
        /// Properties, `name:value,name:value`.
        #[arg(long = "properties")]
        properties: Option<String>,
    },
    /// The containers of a pool.
    #[command(alias = "ls")]
    List { pool: String },
    /// A container's information.
    Query(PoolCont),
    /// Destroys a container.
    Destroy {
        #[command(flatten)]
        pc: PoolCont,
        /// Destroy even if it is open.
        #[arg(short = 'f', long = "force")]
        force: bool,
    },
    /// Sets a user attribute.
    #[command(name = "set-attr")]
    SetAttr {
        #[command(flatten)]
        pc: PoolCont,
        name: String,
        value: String,
    },
    /// Prints a user attribute.
    #[command(name = "get-attr")]
    GetAttr {
        #[command(flatten)]
        pc: PoolCont,
        name: String,
    },
    /// Lists the user attributes.
    #[command(name = "list-attrs", alias = "list-attr")]
    ListAttrs {
        #[command(flatten)]
        pc: PoolCont,
        /// Print the values too.
        #[arg(short = 'V', long = "verbose")]
        verbose: bool,
    },
    /// Deletes a user attribute.
    #[command(name = "del-attr")]
    DelAttr {
        #[command(flatten)]
        pc: PoolCont,
        name: String,
    },
    /// Takes a snapshot.
    #[command(name = "create-snap")]
    CreateSnap {
        #[command(flatten)]
        pc: PoolCont,
        /// Snapshot name.
        #[arg(short = 's', long = "snap")]
        snap: Option<String>,
    },
    /// Lists the snapshots.
    #[command(name = "list-snaps", alias = "list-snap")]
    ListSnaps(PoolCont),
    /// Destroys a snapshot, by name or epoch.
    #[command(name = "destroy-snap")]
    DestroySnap {
        #[command(flatten)]
        pc: PoolCont,
        #[arg(short = 's', long = "snap")]
        snap: Option<String>,
        #[arg(short = 'e', long = "epc")]
        epc: Option<String>,
    },
    /// Prints properties.
    #[command(name = "get-prop")]
    GetProp {
        #[command(flatten)]
        pc: PoolCont,
        /// Only these properties (comma separated).
        #[arg(long = "properties")]
        properties: Option<String>,
    },
    /// Sets properties.
    #[command(name = "set-prop")]
    SetProp {
        #[command(flatten)]
        pc: PoolCont,
        /// `name:value,name:value`.
        #[arg(long = "properties")]
        properties: String,
    },
}

/// What a command answers, in both renderings.
struct Out {
    text: String,
    json: Value,
}

fn inval(msg: impl Into<String>) -> Error {
    Error::Daos(DaosError::new(Der::INVAL, msg))
}

/// Parses `name:value,name:value`.
pub fn parse_props(s: &str) -> Result<Vec<(String, String)>, Error> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (n, v) = p
                .split_once(':')
                .ok_or_else(|| inval(format!("property {p:?}: expected name:value")))?;
            Ok((n.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Checks and normalises container properties given on the command line.
fn check_props(props: Vec<(String, String)>) -> Result<Vec<(String, String)>, Error> {
    props
        .into_iter()
        .map(|(n, v)| {
            let v = match n.as_str() {
                "label" => {
                    proto::names::check_label(&v).map_err(|e| inval(format!("label: {e}")))?;
                    v
                }
                "oclass" | "dir_oclass" | "file_oclass" => placement::ObjectClass::from_name(&v)
                    .map_err(|e| Error::Daos(e.to_daos()))?
                    .name(),
                "chunk_size" | "cksum_size" => proto::units::parse_size(&v)
                    .map_err(|e| inval(format!("{n}: {e}")))?
                    .to_string(),
                "rd_fac" => match v.parse::<u32>() {
                    Ok(f) if f <= 4 => f.to_string(),
                    _ => return Err(inval(format!("rd_fac {v:?}: expected 0 to 4"))),
                },
                "rd_lvl" => match v.as_str() {
                    "node" | "rank" => v,
                    _ => return Err(inval(format!("rd_lvl {v:?}: expected node or rank"))),
                },
                "cksum" => match v.as_str() {
                    "off" | "adler32" | "crc16" | "crc32" | "crc64" | "sha1" | "sha256" | "sha512" => v,
                    _ => return Err(inval(format!("cksum {v:?}: expected off, crc32, crc64, sha256, ..."))),
                },
                "srv_cksum" => match v.as_str() {
                    "on" | "off" => v,
                    _ => return Err(inval(format!("srv_cksum {v:?}: expected on or off"))),
                },
                "layout_type" => v,
                _ => {
                    return Err(inval(format!(
                        "unknown container property {n:?} (label, oclass, chunk_size, rd_fac, rd_lvl, cksum, cksum_size, srv_cksum)"
                    )))
                }
            };
            Ok((n, v))
        })
        .collect()
}

fn conts_out(conts: &[ContInfo]) -> Out {
    let mut text = String::new();
    let w = conts.iter().map(|c| c.uuid.len()).max().unwrap_or(4).max(4);
    text.push_str(&format!("{:<w$} Label\n{:<w$} -----\n", "UUID", "----"));
    for c in conts {
        text.push_str(&format!("{:<w$} {}\n", c.uuid, c.label));
    }
    let json = Value::Array(
        conts
            .iter()
            .map(|c| json!({"uuid": c.uuid, "label": c.label}))
            .collect(),
    );
    Out { text, json }
}

fn prop<'a>(c: &'a ContInfo, name: &str) -> &'a str {
    c.props
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
        .unwrap_or("")
}

fn cont_query_out(pool_uuid: &str, c: &ContInfo) -> Out {
    let chunk = prop(c, "chunk_size")
        .parse::<u64>()
        .map(proto::units::format_bytes)
        .unwrap_or_default();
    let text = format!(
        "  Container UUID             : {}\n  Container Label            : {}\n  Container Type             : {}\n  Pool UUID                  : {}\n  Number of open handles     : {}\n  Number of snapshots        : {}\n  Latest Persistent Snapshot : {:#x}\n  Container redundancy factor: {}\n  Object Class               : {}\n  Chunk Size                 : {}\n",
        c.uuid,
        c.label,
        prop(c, "layout_type"),
        pool_uuid,
        c.open_handles,
        c.num_snapshots,
        c.latest_snapshot,
        prop(c, "rd_fac"),
        prop(c, "oclass"),
        chunk,
    );
    let json = json!({
        "container_uuid": c.uuid,
        "container_label": c.label,
        "container_type": prop(c, "layout_type"),
        "pool_uuid": pool_uuid,
        "num_handles": c.open_handles,
        "num_snapshots": c.num_snapshots,
        "latest_snapshot": c.latest_snapshot,
        "redundancy_factor": prop(c, "rd_fac").parse::<u32>().unwrap_or(0),
        "object_class": prop(c, "oclass"),
        "chunk_size": prop(c, "chunk_size").parse::<u64>().unwrap_or(0),
        "create_time": c.create_time,
    });
    Out { text, json }
}

async fn attach(sys: &str) -> Result<Daos, Error> {
    Daos::with_opts(DaosOpts {
        sys: sys.to_string(),
        ..DaosOpts::default()
    })
    .await
}

async fn run_cmd(cli: &Cli) -> Result<Out, Error> {
    match &cli.cmd {
        Cmd::Version => Ok(Out {
            text: format!("daos version {}\n", proto::VERSION),
            json: json!({"version": proto::VERSION}),
        }),
        Cmd::Pool { cmd } => {
            let daos = attach(&cli.sys).await?;
            pool_cmd(&daos, cmd).await
        }
        Cmd::Container { cmd } => {
            let daos = attach(&cli.sys).await?;
            cont_cmd(&daos, cmd).await
        }
    }
}

async fn pool_cmd(daos: &Daos, cmd: &PoolCmd) -> Result<Out, Error> {
    match cmd {
        PoolCmd::Query { pool } => {
            let p = daos.pool_connect(pool, PoolFlags::ReadOnly).await?;
            let q = p.query().await?;
            let _ = p.disconnect().await;
            let fmt = proto::units::format_bytes;
            let tier = |name: &str, idx: u32, t: &crate::TierSpace| {
                format!(
                        "- Storage tier {idx} ({name}):\n  Total size: {}\n  Free: {}, min:{}, max:{}, mean:{}\n",
                        fmt(t.total),
                        fmt(t.free),
                        fmt(t.min),
                        fmt(t.max),
                        fmt(t.mean)
                    )
            };
            let mut text = format!(
                    "Pool {}, ntarget={}, disabled={}, leader={}, version={}, state=Ready\nPool space info:\n- Target count:{}\n",
                    q.uuid, q.total_targets, q.disabled_targets, q.leader, q.map_version, q.active_targets
                );
            text.push_str(&tier("SCM", 0, &q.scm));
            if q.nvme.total > 0 {
                text.push_str(&tier("NVMe", 1, &q.nvme));
            }
            let t = |t: &crate::TierSpace, media: &str| json!({"total": t.total, "free": t.free, "min": t.min, "max": t.max, "mean": t.mean, "media_type": media});
            let json = json!({
                "uuid": q.uuid,
                "label": q.label,
                "total_targets": q.total_targets,
                "active_targets": q.active_targets,
                "disabled_targets": q.disabled_targets,
                "leader": q.leader,
                "version": q.map_version,
                "svc_reps": q.svc_ranks,
                "state": "Ready",
                "tier_stats": [t(&q.scm, "scm"), t(&q.nvme, "nvme")],
                "num_containers": q.num_conts,
            });
            Ok(Out { text, json })
        }
        PoolCmd::ListContainers { pool } => {
            let p = daos.pool_connect(pool, PoolFlags::ReadOnly).await?;
            let conts = p.list_containers().await?;
            let _ = p.disconnect().await;
            Ok(conts_out(&conts))
        }
    }
}

async fn cont_cmd(daos: &Daos, cmd: &ContCmd) -> Result<Out, Error> {
    let rw = PoolFlags::ReadWrite;
    match cmd {
        ContCmd::Create {
            pool,
            label,
            ctype,
            oclass,
            chunk_size,
            properties,
        } => {
            let mut props = match properties {
                Some(p) => parse_props(p)?,
                None => vec![],
            };
            let layout = match ctype.to_ascii_uppercase().as_str() {
                "POSIX" => "POSIX",
                "HDF5" => "HDF5",
                "PYTHON" => "PYTHON",
                "SPARK" => "SPARK",
                "DATABASE" => "DATABASE",
                "ROOT" => "ROOT",
                "UNKNOWN" => "unknown",
                other => {
                    return Err(inval(format!(
                        "--type {other:?}: expected POSIX, HDF5, PYTHON, SPARK, DATABASE or ROOT"
                    )))
                }
            };
            props.push(("layout_type".into(), layout.into()));
            if let Some(l) = label {
                props.retain(|(n, _)| n != "label");
                props.push(("label".into(), l.clone()));
            }
            if let Some(c) = oclass {
                props.push(("oclass".into(), c.clone()));
            }
            if let Some(c) = chunk_size {
                props.push(("chunk_size".into(), c.clone()));
            }
            let props = check_props(props)?;
            let p = daos.pool_connect(pool, rw).await?;
            let uuid = p.create_container(props.clone()).await?;
            let _ = p.disconnect().await;
            let label = props
                .iter()
                .find(|(n, _)| n == "label")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            Ok(Out {
                text: format!(
                    "Successfully created container {uuid}\n  Container UUID : {uuid}\n  Container Label: {label}\n  Container Type : {layout}\n"
                ),
                json: json!({"container_uuid": uuid, "container_label": label, "container_type": layout}),
            })
        }
        ContCmd::List { pool } => {
            let p = daos.pool_connect(pool, PoolFlags::ReadOnly).await?;
            let conts = p.list_containers().await?;
            let _ = p.disconnect().await;
            Ok(conts_out(&conts))
        }
        ContCmd::Destroy { pc, force } => {
            let p = daos.pool_connect(&pc.pool, rw).await?;
            p.destroy_container(&pc.cont, *force).await?;
            let _ = p.disconnect().await;
            Ok(Out {
                text: format!("Successfully destroyed container {}\n", pc.cont),
                json: Value::Null,
            })
        }
        other => {
            let pc = match other {
                ContCmd::Query(pc) | ContCmd::ListSnaps(pc) => pc,
                ContCmd::SetAttr { pc, .. }
                | ContCmd::GetAttr { pc, .. }
                | ContCmd::ListAttrs { pc, .. }
                | ContCmd::DelAttr { pc, .. }
                | ContCmd::CreateSnap { pc, .. }
                | ContCmd::DestroySnap { pc, .. }
                | ContCmd::GetProp { pc, .. }
                | ContCmd::SetProp { pc, .. } => pc,
                ContCmd::Create { .. } | ContCmd::List { .. } | ContCmd::Destroy { .. } => {
                    return Err(inval("handled above"))
                }
            };
            let p = daos.pool_connect(&pc.pool, rw).await?;
            let c = p.open_container(&pc.cont, true).await?;
            let r = cont_handle_cmd(&c, other).await;
            let _ = c.close().await;
            let _ = p.disconnect().await;
            r
        }
    }
}

async fn cont_handle_cmd(c: &crate::Container, cmd: &ContCmd) -> Result<Out, Error> {
    let done = |text: String| Out {
        text,
        json: Value::Null,
    };
    match cmd {
        ContCmd::Query(_) => Ok(cont_query_out(c.pool().uuid(), &c.query().await?)),
        ContCmd::SetAttr { name, value, .. } => {
            c.set_attrs(vec![(name.clone(), value.clone().into_bytes())])
                .await?;
            Ok(done(String::new()))
        }
        ContCmd::GetAttr { name, .. } => {
            let a = c.get_attrs(std::slice::from_ref(name)).await?;
            let v = a
                .into_iter()
                .next()
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            Ok(Out {
                text: format!(
                    "Attributes for container {}:\nName  Value\n----  -----\n{name}  {v}\n",
                    c.label()
                ),
                json: json!([{"name": name, "value": v}]),
            })
        }
        ContCmd::ListAttrs { verbose, .. } => {
            let a = c.get_attrs(&[]).await?;
            let mut text = format!("Attributes for container {}:\n", c.label());
            if *verbose {
                text.push_str("Name  Value\n----  -----\n");
                for (n, v) in &a {
                    text.push_str(&format!("{n}  {}\n", String::from_utf8_lossy(v)));
                }
            } else {
                text.push_str("Name\n----\n");
                for (n, _) in &a {
                    text.push_str(&format!("{n}\n"));
                }
            }
            let json = Value::Array(
                a.iter()
                    .map(|(n, v)| json!({"name": n, "value": String::from_utf8_lossy(v)}))
                    .collect(),
            );
            Ok(Out { text, json })
        }
        ContCmd::DelAttr { name, .. } => {
            c.del_attrs(std::slice::from_ref(name)).await?;
            Ok(done(String::new()))
        }
        ContCmd::CreateSnap { snap, .. } => {
            let e = c.create_snap(snap.as_deref()).await?;
            Ok(Out {
                text: format!("snapshot/epoch {e:#x} has been created\n"),
                json: json!({"epoch": e, "name": snap}),
            })
        }
        ContCmd::ListSnaps(_) => {
            let s = c.list_snaps().await?;
            let mut text = String::from("Container's snapshots :\n");
            for x in &s {
                text.push_str(&format!("{:#x} {}\n", x.epoch, x.name));
            }
            let json = Value::Array(
                s.iter()
                    .map(|x| json!({"epoch": x.epoch, "name": x.name}))
                    .collect(),
            );
            Ok(Out { text, json })
        }
        ContCmd::DestroySnap { snap, epc, .. } => {
            let epoch = match epc {
                Some(e) => {
                    let t = e.trim_start_matches("0x");
                    let radix = if e.starts_with("0x") { 16 } else { 10 };
                    Some(
                        u64::from_str_radix(t, radix)
                            .map_err(|_| inval(format!("--epc {e:?}: not an epoch")))?,
                    )
                }
                None => None,
            };
            if epoch.is_none() && snap.is_none() {
                return Err(inval("destroy-snap needs --snap NAME or --epc EPOCH"));
            }
            c.destroy_snap(epoch, snap.as_deref()).await?;
            Ok(done(String::new()))
        }
        ContCmd::GetProp { properties, .. } => {
            let info = c.query().await?;
            let want: Option<Vec<String>> = properties
                .as_ref()
                .map(|p| p.split(',').map(|s| s.trim().to_string()).collect());
            let mut rows: Vec<(String, String)> = vec![("label".into(), info.label.clone())];
            rows.extend(info.props.iter().map(|p| (p.name.clone(), p.value.clone())));
            if let Some(w) = &want {
                rows.retain(|(n, _)| w.contains(n));
            }
            let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
            let mut text = format!(
                "Properties for container {}\n{:<w$} Value\n{:<w$} -----\n",
                info.label, "Name", "----"
            );
            for (n, v) in &rows {
                text.push_str(&format!("{n:<w$} {v}\n"));
            }
            let json = Value::Array(
                rows.iter()
                    .map(|(n, v)| json!({"name": n, "value": v}))
                    .collect(),
            );
            Ok(Out { text, json })
        }
        ContCmd::SetProp { properties, .. } => {
            let props = check_props(parse_props(properties)?)?;
            c.set_props(props).await?;
            Ok(done("Properties were successfully set\n".into()))
        }
        ContCmd::Create { .. } | ContCmd::List { .. } | ContCmd::Destroy { .. } => {
            Err(inval("not a container-handle command"))
        }
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let r = run_cmd(&cli).await;
    let mut out = std::io::stdout().lock();
    if cli.json {
        let env = match &r {
            Ok(o) => json!({"response": o.json, "error": null, "status": 0}),
            Err(e) => json!({"response": null, "error": e.to_string(), "status": e.der().code()}),
        };
        let text = serde_json::to_string_pretty(&env).unwrap_or_default();
        let _ = writeln!(out, "{text}");
        return i32::from(r.is_err());
    }
    match r {
        Ok(o) => {
            let _ = out.write_all(o.text.as_bytes());
            0
        }
        Err(e) => {
            eprintln!("ERROR: daos: {}", e.to_string().replace('\n', " "));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn props_parse_and_check() {
        let p = parse_props("label:c2,rd_fac:1,chunk_size:2MiB,oclass:rp_2g1").unwrap();
        let p = check_props(p).unwrap();
        assert_eq!(p[2], ("chunk_size".into(), (2u64 << 20).to_string()));
        assert_eq!(p[3].1, "RP_2G1");
        assert!(check_props(parse_props("bogus:1").unwrap()).is_err());
        assert!(parse_props("nocolon").is_err());
        assert!(check_props(parse_props("rd_fac:9").unwrap()).is_err());
    }

    #[test]
    fn create_parses_daos_syntax() {
        let c = Cli::try_parse_from([
            "daos",
            "container",
            "create",
            "tank",
            "c1",
            "--type",
            "POSIX",
            "-j",
        ])
        .unwrap();
        assert!(c.json);
        assert!(matches!(
            c.cmd,
            Cmd::Container {
                cmd: ContCmd::Create { .. }
            }
        ));
        let c = Cli::try_parse_from(["daos", "cont", "destroy", "tank", "c1", "--force"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Container {
                cmd: ContCmd::Destroy { force: true, .. }
            }
        ));
    }
}
