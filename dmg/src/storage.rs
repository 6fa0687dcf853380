//! `dmg storage scan|format|query usage`: requests sent to every host of the
//! host list, answers aggregated per host. Hosts with identical rows share one
//! row, as DAOS prints host sets. Renderers are pure functions of the answers.

use proto::mgmt::{
    BdevDevice, EngineStorage, StorageFormatReq, StorageFormatResp, StorageScanReq, StorageScanResp,
};
use proto::units::format_bytes;
use serde_json::{json, Value};

use crate::cli::{StorageCommand, StorageQueryCommand};
use crate::control::{CallTimeout, Client};
use crate::error::Error;
use crate::fanout::{count_failure, HostAnswers};
use crate::output::Outcome;
use crate::table::{group_rows, Table};
use crate::Context;

pub async fn run(cmd: StorageCommand, ctx: &Context) -> Result<Outcome, Error> {
    match cmd {
        StorageCommand::Scan { verbose } => {
            let answers = scan(ctx, false).await;
            Ok(render_scan(&answers, verbose))
        }
        StorageCommand::Query(StorageQueryCommand::Usage) => {
            let answers = scan(ctx, true).await;
            Ok(render_usage(&answers))
        }
        StorageCommand::Format { force } => {
            let results = ctx
                .client
                .call_each(CallTimeout::Long, move |mut c: Client| async move {
                    c.storage_format(StorageFormatReq { force }).await
                })
                .await;
            let answers = HostAnswers::new(results);
            let any_formatted = answers
                .ok
                .iter()
                .any(|(_, r)| r.results.iter().any(|e| !e.errored));
            // The format answer has no device counts; a scan afterwards supplies them.
            let scanned = if any_formatted {
                Some(scan(ctx, false).await)
            } else {
                None
            };
            Ok(render_format(&answers, scanned.as_ref()))
        }
    }
}

async fn scan(ctx: &Context, usage: bool) -> HostAnswers<StorageScanResp> {
    let results = ctx
        .client
        .call_each(CallTimeout::Short, move |mut c: Client| async move {
            c.storage_scan(StorageScanReq { usage }).await
        })
        .await;
    HostAnswers::new(results)
}

/// `17 GB (1 namespace)`, `0 B (0 controllers)`: a total and a count of things.
fn summary(bytes: u64, n: usize, one: &str, many: &str) -> String {
    let noun = if n == 1 { one } else { many };
    format!("{} ({n} {noun})", format_bytes(bytes))
}

fn bdevs(engines: &[EngineStorage]) -> impl Iterator<Item = &BdevDevice> {
    engines.iter().flat_map(|e| e.bdevs.iter())
}

/// Totals of a host's engines: (SCM total, SCM free, SCM count, NVMe total,
/// NVMe free, NVMe count).
fn totals(engines: &[EngineStorage]) -> (u64, u64, usize, u64, u64, usize) {
    let scm = engines.iter().filter_map(|e| e.scm.as_ref());
    let scm_total = scm.clone().map(|s| s.total).sum();
    let scm_free = scm.clone().map(|s| s.avail).sum();
    let nvme_total = bdevs(engines).map(|b| b.total).sum();
    let nvme_free = bdevs(engines).map(|b| b.avail).sum();
    (
        scm_total,
        scm_free,
        scm.count(),
        nvme_total,
        nvme_free,
        bdevs(engines).count(),
    )
}

fn engine_json(e: &EngineStorage) -> Value {
    json!({
        "instance_idx": e.instance_idx,
        "formatted": e.formatted,
        "running": e.running,
        "rank": e.rank,
        "scm": e.scm.as_ref().map(|s| json!({
            "class": s.class,
            "mount": s.mount,
            "total": s.total,
            "avail": s.avail,
            "devices": s.devices,
        })),
        "bdevs": e.bdevs.iter().map(|b| json!({
            "class": b.class,
            "path": b.path,
            "total": b.total,
            "avail": b.avail,
        })).collect::<Vec<_>>(),
    })
}

fn host_json(host: &str, r: &StorageScanResp) -> Value {
    let (scm_total, scm_free, _, nvme_total, nvme_free, _) = totals(&r.engines);
    json!({
        "host": host,
        "reported_host": r.host,
        "scm_total": scm_total,
        "scm_free": scm_free,
        "nvme_total": nvme_total,
        "nvme_free": nvme_free,
        "engines": r.engines.iter().map(engine_json).collect::<Vec<_>>(),
    })
}

fn scan_json(answers: &HostAnswers<StorageScanResp>) -> Value {
    json!({
        "hosts": answers.ok.iter().map(|(h, r)| host_json(h, r)).collect::<Vec<_>>(),
        "host_errors": answers.errors_json(),
    })
}

/// Renders `storage scan`: SCM and NVMe totals per host, or with `verbose`
/// each engine's SCM mount and NVMe devices.
pub fn render_scan(answers: &HostAnswers<StorageScanResp>, verbose: bool) -> Outcome {
    let mut text = String::new();
    if verbose {
        for (host, r) in &answers.ok {
            text.push_str(&render_host_verbose(host, r));
        }
    } else if !answers.ok.is_empty() {
        let rows = answers
            .ok
            .iter()
            .map(|(host, r)| {
                let (scm, _, scm_n, nvme, _, nvme_n) = totals(&r.engines);
                (
                    host.clone(),
                    vec![
                        summary(scm, scm_n, "namespace", "namespaces"),
                        summary(nvme, nvme_n, "controller", "controllers"),
                    ],
                )
            })
            .collect();
        text.push_str(&hosts_table(&["Hosts", "SCM Total", "NVMe Total"], rows).render());
    }
    text.push_str(&answers.errors_text());
    Outcome::ok(text, scan_json(answers)).with_failure(answers.failure("storage scan failed"))
}

fn hosts_table(titles: &[&str], rows: Vec<(String, Vec<String>)>) -> Table {
    let mut t = Table::new(titles);
    for (hosts, mut cells) in group_rows(rows) {
        cells.insert(0, hosts);
        t.row(cells);
    }
    t
}

fn render_host_verbose(host: &str, r: &StorageScanResp) -> String {
    let rule = "-".repeat(host.chars().count());
    let mut out = format!("{rule}\n{host}\n{rule}\n");
    if r.engines.is_empty() {
        out.push_str("No engines configured\n\n");
        return out;
    }
    let rank = |e: &EngineStorage| {
        if e.rank < 0 {
            "-".to_string()
        } else {
            e.rank.to_string()
        }
    };
    let mut scm = Table::new(&["Engine", "Rank", "Formatted", "SCM Mount", "Class", "Size"]);
    for e in &r.engines {
        let (mount, class, size) = match &e.scm {
            Some(s) => (s.mount.clone(), s.class.clone(), format_bytes(s.total)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let formatted = if e.formatted { "yes" } else { "no" };
        scm.row(vec![
            e.instance_idx.to_string(),
            rank(e),
            formatted.into(),
            mount,
            class,
            size,
        ]);
    }
    out.push_str(&scm.render());
    out.push('\n');
    if bdevs(&r.engines).next().is_none() {
        out.push_str("No NVMe devices found\n\n");
        return out;
    }
    let mut nvme = Table::new(&["Engine", "NVMe Path", "Class", "Size"]);
    for e in &r.engines {
        for b in &e.bdevs {
            nvme.row(vec![
                e.instance_idx.to_string(),
                b.path.clone(),
                b.class.clone(),
                format_bytes(b.total),
            ]);
        }
    }
    out.push_str(&nvme.render());
    out.push('\n');
    out
}

/// Used space as DAOS prints it: `68 %`, or `N/A` when there is no space.
pub fn percent_used(total: u64, free: u64) -> String {
    if total == 0 {
        return "N/A".into();
    }
    let used = total.saturating_sub(free) as u128;
    format!("{} %", used * 100 / total as u128)
}

/// Renders `storage query usage`: total, free and used space per host.
pub fn render_usage(answers: &HostAnswers<StorageScanResp>) -> Outcome {
    let mut text = String::new();
    if !answers.ok.is_empty() {
        let rows = answers
            .ok
            .iter()
            .map(|(host, r)| {
                let (scm, scm_free, _, nvme, nvme_free, _) = totals(&r.engines);
                (
                    host.clone(),
                    vec![
                        format_bytes(scm),
                        format_bytes(scm_free),
                        percent_used(scm, scm_free),
                        format_bytes(nvme),
                        format_bytes(nvme_free),
                        percent_used(nvme, nvme_free),
                    ],
                )
            })
            .collect();
        let titles = [
            "Hosts",
            "SCM-Total",
            "SCM-Free",
            "SCM-Used",
            "NVMe-Total",
            "NVMe-Free",
            "NVMe-Used",
        ];
        text.push_str(&hosts_table(&titles, rows).render());
    }
    text.push_str(&answers.errors_text());
    Outcome::ok(text, scan_json(answers)).with_failure(answers.failure("storage query failed"))
}

/// Renders `storage format`: a summary of the hosts whose engines formatted,
/// then the hosts and engines that failed. `scanned` (a scan after the format)
/// supplies device counts.
pub fn render_format(
    answers: &HostAnswers<StorageFormatResp>,
    scanned: Option<&HostAnswers<StorageScanResp>>,
) -> Outcome {
    let scan_of =
        |host: &str| scanned.and_then(|s| s.ok.iter().find(|(h, _)| h == host).map(|(_, r)| r));
    let mut rows = Vec::new();
    let mut engine_errors = Vec::new();
    let mut hosts_json = Vec::new();
    for (host, r) in &answers.ok {
        let ok: Vec<u32> = r
            .results
            .iter()
            .filter(|e| !e.errored)
            .map(|e| e.instance_idx)
            .collect();
        for e in r.results.iter().filter(|e| e.errored) {
            engine_errors.push((
                host.clone(),
                vec![format!("engine {}: {}", e.instance_idx, e.info)],
            ));
        }
        let nvme = scan_of(host).map(|s| {
            s.engines
                .iter()
                .filter(|e| ok.contains(&e.instance_idx))
                .map(|e| e.bdevs.len())
                .sum::<usize>()
        });
        hosts_json.push(json!({
            "host": host,
            "results": r.results.iter().map(|e| json!({
                "instance_idx": e.instance_idx,
                "errored": e.errored,
                "info": e.info,
            })).collect::<Vec<_>>(),
            "scm_devices": ok.len(),
            "nvme_devices": nvme,
        }));
        if !ok.is_empty() {
            let nvme = nvme.map_or_else(|| "N/A".to_string(), |n| n.to_string());
            rows.push((host.clone(), vec![ok.len().to_string(), nvme]));
        }
    }
    let mut text = String::new();
    if !rows.is_empty() {
        text.push_str("Format Summary:\n");
        let t = hosts_table(&["Hosts", "SCM Devices", "NVMe Devices"], rows);
        text.push_str(&t.render_indented("  "));
    }
    text.push_str(&answers.errors_text());
    if !engine_errors.is_empty() {
        text.push_str("Engine errors:\n");
        text.push_str(
            &hosts_table(&["Hosts", "Error"], engine_errors.clone()).render_indented("  "),
        );
    }
    let json = json!({
        "hosts": hosts_json,
        "host_errors": answers.errors_json(),
    });
    let failure = answers
        .failure("storage format failed")
        .or_else(|| count_failure("storage format failed", engine_errors.len(), "engine"));
    Outcome::ok(text, json).with_failure(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::HostResult;
    use crate::output::Envelope;
    use proto::mgmt::{EngineFormatResult, ScmMount};
    use proto::{DaosError, Der};

    fn engine(idx: u32, scm: u64, bdev_sizes: &[u64]) -> EngineStorage {
        EngineStorage {
            instance_idx: idx,
            formatted: true,
            running: true,
            rank: idx as i64,
            scm: Some(ScmMount {
                class: "ram".into(),
                mount: format!("/mnt/daos{idx}"),
                total: scm,
                avail: scm / 2,
                devices: vec![],
            }),
            bdevs: bdev_sizes
                .iter()
                .enumerate()
                .map(|(i, s)| BdevDevice {
                    class: "file".into(),
                    path: format!("/tmp/bdev{idx}.{i}"),
                    total: *s,
                    avail: *s / 4,
                })
                .collect(),
        }
    }

    fn scan_answers() -> HostAnswers<StorageScanResp> {
        let resp = |engines| StorageScanResp {
            host: "h".into(),
            engines,
        };
        HostAnswers::new(vec![
            HostResult {
                addr: "h1:10001".into(),
                result: Ok(resp(vec![engine(0, 17_000_000_000, &[550_000_000_000; 2])])),
            },
            HostResult {
                addr: "h2:10001".into(),
                result: Ok(resp(vec![engine(0, 17_000_000_000, &[550_000_000_000; 2])])),
            },
            HostResult {
                addr: "h3:10001".into(),
                result: Ok(resp(vec![engine(0, 8_000_000_000, &[])])),
            },
        ])
    }

    fn valid(o: Outcome) -> Value {
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert!(v["response"].is_object(), "{v}");
        v
    }

    #[test]
    fn scan_table_groups_identical_hosts() {
        let o = render_scan(&scan_answers(), false);
        let expected = [
            "Hosts SCM Total            NVMe Total",
            "----- ---------            ----------",
            "h1,h2 17 GB (1 namespace)  1.1 TB (2 controllers)",
            "h3    8.0 GB (1 namespace) 0 B (0 controllers)",
        ];
        assert_eq!(o.text.lines().collect::<Vec<_>>(), expected);
        assert!(o.failure.is_none());
        let v = valid(o);
        assert_eq!(
            v["response"]["hosts"][0]["nvme_total"],
            1_100_000_000_000u64
        );
    }

    #[test]
    fn scan_verbose_lists_devices() {
        let o = render_scan(&scan_answers(), true);
        assert!(o.text.starts_with("--\nh1\n--\n"), "{}", o.text);
        assert!(o.text.contains("/mnt/daos0"), "{}", o.text);
        assert!(o.text.contains("/tmp/bdev0.1 file  550 GB"), "{}", o.text);
        assert!(o.text.contains("No NVMe devices found"), "{}", o.text);
        valid(o);
    }

    #[test]
    fn scan_reports_failed_hosts() {
        let answers = HostAnswers::new(vec![HostResult::<StorageScanResp> {
            addr: "h1:10001".into(),
            result: Err(DaosError::new(Der::UNREACH, "h1:10001: refused")),
        }]);
        let o = render_scan(&answers, false);
        assert!(o.text.starts_with("Errors:\n"), "{}", o.text);
        assert!(o.failure.is_some());
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert_eq!(v["status"], -1006);
        assert_eq!(v["response"]["host_errors"][0]["host"], "h1");
    }

    #[test]
    fn usage_percentages() {
        assert_eq!(percent_used(0, 0), "N/A");
        assert_eq!(percent_used(100, 32), "68 %");
        assert_eq!(percent_used(u64::MAX, 0), "100 %");
        let o = render_usage(&scan_answers());
        let lines: Vec<&str> = o.text.lines().collect();
        assert_eq!(
            lines[0],
            "Hosts SCM-Total SCM-Free SCM-Used NVMe-Total NVMe-Free NVMe-Used"
        );
        assert_eq!(
            lines[2],
            "h1,h2 17 GB     8.5 GB   50 %     1.1 TB     275 GB    75 %"
        );
        assert!(lines[3].ends_with("N/A"), "{}", lines[3]);
        valid(o);
    }

    #[test]
    fn format_summary_and_errors() {
        let fmt = |results| StorageFormatResp {
            host: "h".into(),
            results,
        };
        let ok = |idx| EngineFormatResult {
            instance_idx: idx,
            errored: false,
            info: String::new(),
        };
        let answers = HostAnswers::new(vec![
            HostResult {
                addr: "h1:10001".into(),
                result: Ok(fmt(vec![ok(0)])),
            },
            HostResult {
                addr: "h2:10001".into(),
                result: Ok(fmt(vec![EngineFormatResult {
                    instance_idx: 0,
                    errored: true,
                    info: "already formatted; use --force".into(),
                }])),
            },
        ]);
        let scanned = scan_answers();
        let o = render_format(&answers, Some(&scanned));
        assert!(
            o.text.starts_with(
                "Format Summary:\n  Hosts SCM Devices NVMe Devices\n  ----- ----------- ------------\n  h1    1           2\n"
            ),
            "{}",
            o.text
        );
        assert!(
            o.text.contains("h2    engine 0: already formatted"),
            "{}",
            o.text
        );
        assert!(o
            .failure
            .as_ref()
            .unwrap()
            .to_string()
            .contains("1 engine failed"));
        let v: Value = serde_json::from_str(&Envelope::new(&Ok(o)).render()).unwrap();
        assert_eq!(v["response"]["hosts"][0]["nvme_devices"], 2);
        assert_eq!(v["status"], -1025);

        let o = render_format(&answers, None);
        assert!(o.text.contains("  h1    1           N/A\n"), "{}", o.text);
    }
}
