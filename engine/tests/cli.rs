//! daos_engine refuses bad arguments before it touches anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn engine(args: &[&str]) -> (bool, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let d = dir.path().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_daos_engine"))
        .args(["-d", &d, "-s", &d, "--port", "1"])
        .args(args)
        .env_remove("D_LOG_FILE")
        .output()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "a refused engine wrote {left:?}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_target_and_helper_counts_are_refused() {
    let (ok, err) = engine(&["-t", "0"]);
    assert!(
        !ok && err.contains("-t/--targets must be between 1 and 64, got 0"),
        "{err}"
    );
    let (ok, err) = engine(&["-t", "2", "-x", "3"]);
    assert!(
        !ok && err.contains("-x/--xshelpernr (3) must not exceed -t/--targets (2)"),
        "{err}"
    );
}
