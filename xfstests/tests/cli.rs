//! End to end: the binary against a tmpfs it mounts (root only; skipped otherwise), checking
//! the summary lines, the JSON report and the exit status the CI step relies on.
// Test helpers outside #[test] functions: a failed setup should panic the test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use nix::mount::{mount, umount, MsFlags};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new() -> Option<Tmpfs> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root to mount a tmpfs");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("xfstests-test"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=512m,mode=1777"),
        )
        .unwrap();
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount(self.dir.path());
    }
}

fn xfstests(args: &[&str], mount: &Path, state: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xfstests"))
        .arg("run")
        .arg("--mount")
        .arg(mount)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn run_prints_summaries_writes_the_report_and_leaves_the_mount_clean() {
    let Some(fs) = Tmpfs::new() else { return };
    let state = tempfile::tempdir().unwrap();
    let (code, out) = xfstests(
        &[
            "--target",
            "tmpfs",
            "--suite",
            "fsx,generic",
            "--filter",
            "fsx/write_read_truncate",
            "--filter",
            "generic/unlink_while_open",
            "--filter",
            "generic/perm_other_user_read",
            "--fsx-ops",
            "2000",
            "--seed",
            "9",
        ],
        fs.path(),
        state.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\nfsx: 1 passed, 0 failed, 0 skipped\n"),
        "{out}"
    );
    assert!(
        out.contains("\ngeneric: 2 passed, 0 failed, 0 skipped\n"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("report-tmpfs.json")).unwrap())
            .unwrap();
    assert_eq!(report["seed"], 9);
    assert_eq!(
        report["suites"][0]["tests"][0]["id"],
        "fsx/write_read_truncate"
    );
    assert_eq!(report["suites"][0]["tests"][0]["outcome"], "pass");
    assert!(report["comparison"]["new_failures"]
        .as_array()
        .unwrap()
        .is_empty());
    // The run's scratch directory is gone.
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

#[test]
fn listed_failures_that_pass_fail_a_strict_run_and_bad_lists_are_refused() {
    let Some(fs) = Tmpfs::new() else { return };
    let state = tempfile::tempdir().unwrap();
    let list = state.path().join("list.txt");
    std::fs::write(
        &list,
        "generic/statfs_fields_are_consistent  pretend it fails\n",
    )
    .unwrap();
    let args = |extra: &'static str| {
        let mut v = vec![
            "--expected",
            list.to_str().unwrap(),
            "--suite",
            "generic",
            "--filter",
            "statfs_fields",
        ];
        if !extra.is_empty() {
            v.push(extra);
        }
        v
    };
    let (code, out) = xfstests(&args(""), fs.path(), state.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("NEWLY PASSING generic/statfs_fields_are_consistent"),
        "{out}"
    );
    let (code, out) = xfstests(&args("--strict"), fs.path(), state.path());
    assert_eq!(code, 1, "{out}");
    std::fs::write(&list, "generic/statfs_fields_are_consistent\n").unwrap();
    let (code, out) = xfstests(&args(""), fs.path(), state.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("has no reason"), "{out}");
}

#[test]
fn every_target_list_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected");
    for t in ["tmpfs", "bindfs", "dfuse"] {
        xfstests::expected::Expected::load(&dir.join(format!("{t}.txt"))).unwrap();
    }
}
