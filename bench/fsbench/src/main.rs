//! fsbench: the file-system workloads `bench/fs.sh` runs against every target
//! (dfuse and its references), one JSON line per figure, and the report that
//! turns the lines of a run into medians and ratios.
//!
//! Every workload works in a directory of its own under `--dir` and removes
//! it; every timed phase stops at `--budget` seconds and reports the rate of
//! what it finished, so a slow target bounds the run instead of stalling it.
//! "Cold" phases drop the kernel's caches first (root only; the line says
//! whether it could).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "File-system workloads and the report of bench/fs.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where a figure belongs: the run's round and the target measured.
#[derive(clap::Args, Clone)]
struct Tag {
    /// The directory to work in (on the target)
    #[arg(long)]
    dir: PathBuf,
    /// The target's name in the output (dfuse, tmpfs, disk, bindfs, ...)
    #[arg(long)]
    target: String,
    /// The round number
    #[arg(long, default_value_t = 1)]
    round: u32,
    /// Seconds a timed phase may take before it stops and reports what it did
    #[arg(long, default_value_t = 60)]
    budget: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Small files in one directory: create (write SIZE bytes each), cold
    /// `ls -f`, cold stat of every file, unlink of every file
    Meta {
        #[command(flatten)]
        tag: Tag,
        #[arg(long, default_value_t = 10_000)]
        files: u64,
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
    /// A tree of about DIRS directories made by `mkdir -p`, removed by `rm -rf`
    Tree {
        #[command(flatten)]
        tag: Tag,
        #[arg(long, default_value_t = 5000)]
        dirs: u64,
    },
    /// `tar xf TARBALL` onto the target, then `rm -rf` of what it unpacked
    Tar {
        #[command(flatten)]
        tag: Tag,
        #[arg(long)]
        tarball: PathBuf,
    },
    /// One fio job (its arguments after `--`) in DIR/fsbench-fio, reported as WORKLOAD
    Fio {
        #[command(flatten)]
        tag: Tag,
        #[arg(long)]
        workload: String,
        /// read_iops, write_iops, read_mibs or write_mibs
        #[arg(long)]
        metric: String,
        /// Keep the job's files (for a read job after it)
        #[arg(long)]
        keep: bool,
        /// Drop the kernel's caches first
        #[arg(long)]
        cold: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Medians and ratios of a run's JSON lines, as a Markdown table
    Report {
        /// The JSON lines of the run
        file: PathBuf,
        /// The target compared with the references
        #[arg(long, default_value = "dfuse")]
        subject: String,
        /// The references, in column order
        #[arg(long, value_delimiter = ',', default_value = "tmpfs,disk,bindfs")]
        refs: Vec<String>,
    },
}

/// One figure.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Line {
    round: u32,
    target: String,
    workload: String,
    /// None: the workload could not run on this target (the note says why).
    value: Option<f64>,
    unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn emit(tag: &Tag, workload: &str, value: f64, unit: &str, note: Option<String>) -> Result<()> {
    let l = Line {
        round: tag.round,
        target: tag.target.clone(),
        workload: workload.to_string(),
        value: value.is_finite().then_some(value),
        unit: unit.to_string(),
        note,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&l)?)?;
    out.flush()?;
    Ok(())
}

/// Writes back dirty data and drops the page, dentry and inode caches.
/// Returns false when not allowed (not root).
fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", b"3").is_ok()
}

/// A rate over the ops done and a note if the budget cut the phase short.
fn rate(done: u64, want: u64, t: Duration) -> (f64, Option<String>) {
    let v = done as f64 / t.as_secs_f64().max(1e-9);
    let note = (done < want).then(|| format!("budget: {done} of {want} done"));
    (v, note)
}

fn cold_note(cold: bool, note: Option<String>) -> Option<String> {
    match (cold, note) {
        (true, n) => n,
        (false, None) => Some("caches not dropped (not root)".into()),
        (false, Some(n)) => Some(format!("{n}; caches not dropped (not root)")),
    }
}

fn fresh_dir(base: &Path, name: &str) -> Result<PathBuf> {
    let d = base.join(name);
    if d.exists() {
        fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    }
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn meta(tag: &Tag, files: u64, size: usize) -> Result<()> {
    let budget = Duration::from_secs(tag.budget);
    let d = fresh_dir(&tag.dir, "fsbench-meta")?;
    let data = vec![0x5au8; size];
    let t = Instant::now();
    let mut made = 0;
    while made < files && t.elapsed() < budget {
        let p = d.join(format!("f{made:06}"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        f.write_all(&data)
            .with_context(|| format!("writing {}", p.display()))?;
        made += 1;
    }
    let (v, note) = rate(made, files, t.elapsed());
    emit(tag, "create_4k", v, "files/s", note)?;

    let cold = drop_caches();
    let t = Instant::now();
    let names: Vec<PathBuf> = fs::read_dir(&d)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    let (v, _) = rate(names.len() as u64, names.len() as u64, t.elapsed());
    emit(tag, "ls_f_cold", v, "entries/s", cold_note(cold, None))?;

    let cold = drop_caches();
    let (v, note) = each_within(&names, budget, |p| {
        fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
        Ok(())
    })?;
    emit(tag, "stat_cold", v, "ops/s", cold_note(cold, note))?;

    let (v, note) = each_within(&names, budget, |p| {
        fs::remove_file(p).with_context(|| format!("unlink {}", p.display()))
    })?;
    emit(tag, "unlink", v, "ops/s", note)?;
    fs::remove_dir_all(&d)?;
    Ok(())
}

/// Runs `op` on each path until the budget is spent; the rate and a note if
/// it stopped early.
fn each_within(
    paths: &[PathBuf],
    budget: Duration,
    mut op: impl FnMut(&Path) -> Result<()>,
) -> Result<(f64, Option<String>)> {
    let t = Instant::now();
    let mut n = 0;
    for p in paths {
        if t.elapsed() >= budget {
            break;
        }
        op(p)?;
        n += 1;
    }
    Ok(rate(n, paths.len() as u64, t.elapsed()))
}

/// Runs `cmd` in `dir` with a deadline; its wall time.
fn timed(mut cmd: Command, budget: Duration) -> Result<Duration> {
    let what = format!("{cmd:?}");
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("{what}: {st}");
            }
            return Ok(t.elapsed());
        }
        if t.elapsed() > budget {
            child.kill().ok();
            child.wait().ok();
            bail!("{what}: over the budget of {} s", budget.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn rm_rf(tag: &Tag, workload: &str, d: &Path) -> Result<()> {
    drop_caches();
    let mut rm = Command::new("rm");
    rm.arg("-rf").arg(d);
    let t = timed(rm, Duration::from_secs(tag.budget * 3))?;
    emit(tag, workload, t.as_secs_f64(), "s", None)
}

fn tree(tag: &Tag, dirs: u64) -> Result<()> {
    // Three levels of `fan` names: fan + fan² + fan³ directories.
    let mut fan = 1u64;
    while fan + fan * fan + fan * fan * fan < dirs {
        fan += 1;
    }
    let total = fan + fan * fan + fan * fan * fan;
    let d = fresh_dir(&tag.dir, "fsbench-tree")?;
    let mut leaves = Vec::with_capacity((fan * fan * fan) as usize);
    for a in 0..fan {
        for b in 0..fan {
            for c in 0..fan {
                leaves.push(format!("d{a:02}/d{b:02}/d{c:02}"));
            }
        }
    }
    let budget = Duration::from_secs(tag.budget);
    let t = Instant::now();
    for chunk in leaves.chunks(1000) {
        let mut mk = Command::new("mkdir");
        mk.arg("-p").args(chunk).current_dir(&d);
        timed(mk, budget.saturating_sub(t.elapsed()))?;
    }
    let (v, _) = rate(total, total, t.elapsed());
    emit(
        tag,
        "mkdir_p_tree",
        v,
        "dirs/s",
        Some(format!("{total} directories")),
    )?;
    rm_rf(tag, "rm_rf_tree", &d)
}

fn tar(tag: &Tag, tarball: &Path) -> Result<()> {
    // The tarball is read from the page cache every time: only the target's
    // side is measured.
    fs::read(tarball).with_context(|| format!("reading {}", tarball.display()))?;
    let d = fresh_dir(&tag.dir, "fsbench-tar")?;
    let mut x = Command::new("tar");
    x.arg("xf").arg(tarball).arg("-C").arg(&d);
    let t = timed(x, Duration::from_secs(tag.budget * 3))?;
    emit(tag, "tar_x", t.as_secs_f64(), "s", None)?;
    rm_rf(tag, "rm_rf_tar", &d)
}

fn fio(
    tag: &Tag,
    workload: &str,
    metric: &str,
    args: &[String],
    keep: bool,
    cold: bool,
) -> Result<()> {
    let d = tag.dir.join("fsbench-fio");
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let dropped = !cold || drop_caches();
    let out = Command::new("fio")
        .arg("--output-format=json")
        .arg("--group_reporting")
        .arg(format!("--name={workload}"))
        .arg(format!("--directory={}", d.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running fio (apt-get install fio)")?;
    if !keep {
        fs::remove_dir_all(&d).ok();
    }
    if !out.status.success() {
        // O_DIRECT, for one, is not on every target: say so, do not stop the run.
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().last().unwrap_or("fio failed").to_string();
        return emit(tag, workload, f64::NAN, unit_of(metric), Some(why));
    }
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).context("fio's JSON")?;
    let job = &j["jobs"][0];
    let v = match metric {
        "read_iops" => job["read"]["iops"].as_f64(),
        "write_iops" => job["write"]["iops"].as_f64(),
        "read_mibs" => job["read"]["bw_bytes"].as_f64().map(|b| b / 1048576.0),
        "write_mibs" => job["write"]["bw_bytes"].as_f64().map(|b| b / 1048576.0),
        m => bail!("unknown metric {m}"),
    };
    let v = v.context("fio's JSON has no such figure")?;
    emit(tag, workload, v, unit_of(metric), cold_note(dropped, None))
}

fn unit_of(metric: &str) -> &'static str {
    if metric.ends_with("iops") {
        "IOPS"
    } else {
        "MiB/s"
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn report(file: &Path, subject: &str, refs: &[String]) -> Result<()> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut lines = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(l)
            .with_context(|| format!("{} line {}: not a figure", file.display(), i + 1))?;
        lines.push(l);
    }
    // workload -> target -> values, in first-seen workload order.
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    let mut rounds = std::collections::BTreeSet::new();
    for l in &lines {
        if !order.contains(&l.workload) {
            order.push(l.workload.clone());
        }
        units.insert(l.workload.clone(), l.unit.clone());
        rounds.insert(l.round);
        by.entry((l.workload.clone(), l.target.clone()))
            .or_default()
            .push(l.value.unwrap_or(f64::NAN));
    }
    let med = |w: &str, t: &str| {
        by.get(&(w.to_string(), t.to_string()))
            .and_then(|v| median(v.clone()))
    };
    let mut head = format!("| workload | unit | {subject}");
    for r in refs {
        head.push_str(&format!(" | {r}"));
    }
    for r in refs {
        head.push_str(&format!(" | {subject}/{r}"));
    }
    println!("{head} |");
    println!("|{}", "---|".repeat(2 + 2 * refs.len() + 1));
    for w in &order {
        let Some(s) = med(w, subject) else { continue };
        let unit = units.get(w).map(String::as_str).unwrap_or("");
        let mut row = format!("| {w} | {unit} | {}", fmt(s));
        for r in refs {
            row.push_str(&format!(
                " | {}",
                med(w, r).map(fmt).unwrap_or_else(|| "-".into())
            ));
        }
        for r in refs {
            let ratio = med(w, r)
                .filter(|x| *x > 0.0)
                .map(|x| format!("{:.2}x", s / x))
                .unwrap_or_else(|| "-".into());
            row.push_str(&format!(" | {ratio}"));
        }
        println!("{row} |");
    }
    // Figures of other targets (the object level, libdaos) on their own.
    let others: Vec<&String> = order.iter().filter(|w| med(w, subject).is_none()).collect();
    if !others.is_empty() {
        println!();
        println!("| workload | target | unit | median |");
        println!("|---|---|---|---|");
        for w in others {
            for ((bw, t), v) in &by {
                if bw == w {
                    if let Some(m) = median(v.clone()) {
                        let unit = units.get(w).map(String::as_str).unwrap_or("");
                        println!("| {w} | {t} | {unit} | {} |", fmt(m));
                    }
                }
            }
        }
    }
    println!();
    println!(
        "Medians of {} rounds; units per second are better higher, seconds (s) lower. Ratios are {subject} over the reference.",
        rounds.len()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Meta { tag, files, size } => meta(tag, *files, *size),
        Cmd::Tree { tag, dirs } => tree(tag, *dirs),
        Cmd::Tar { tag, tarball } => tar(tag, tarball),
        Cmd::Fio {
            tag,
            workload,
            metric,
            args,
            keep,
            cold,
        } => fio(tag, workload, metric, args, *keep, *cold),
        Cmd::Report {
            file,
            subject,
            refs,
        } => report(file, subject, refs),
    };
    if let Err(e) = r {
        eprintln!("fsbench: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn budget_notes() {
        assert_eq!(rate(5, 5, Duration::from_secs(1)).1, None);
        assert!(rate(4, 5, Duration::from_secs(1)).1.is_some());
    }
}
