#!/usr/bin/env bash
# Runs every test of the workspace against real processes. Needs root (the
# integration tests mount tmpfs SCM tiers) and installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: run as root (the tests mount tmpfs and start daemons)" >&2
    exit 1
fi

need_pkgs=()
for p in gcc:gcc openssl:openssl mount:mount fusermount3:fuse3 mount.fuse3:fuse3 make:make git:git sqlite3:sqlite3 tar:tar; do
    command -v "${p%%:*}" >/dev/null 2>&1 || need_pkgs+=("${p##*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo not found: install Rust (rustup)" >&2; exit 1; }

jobs=${CARGO_BUILD_JOBS:-2}
# The integration tests run the binaries, so build them first.
cargo build -j"$jobs" --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test -j"$jobs" --workspace 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The conformance harness (xfstests/, docs/conformance.md) against a fresh tmpfs: fails the run
# on any failure not listed in xfstests/expected/tmpfs.txt. Building its pinned pjdfstest needs
# libacl's headers. Its "SUITE: N passed, M failed, K skipped" lines join the summary below.
dpkg -s libacl1-dev >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libacl1-dev
}
# Short mount paths: pjdfstest binds UNIX sockets deep inside them, and a
# socket path must fit in 107 bytes.
xfs_mnt=$(mktemp -d /tmp/xf.XXXX)
trap 'umount "$xfs_mnt" 2>/dev/null; rmdir "$xfs_mnt" 2>/dev/null; rm -f "$log"' EXIT
mount -t tmpfs -o size=4g,mode=1777 xfstests "$xfs_mnt"
set +e
cargo run -j"$jobs" -q -p xfstests -- run --mount "$xfs_mnt" --target tmpfs 2>&1 | tee -a "$log"
xrc=${PIPESTATUS[0]}
set -e
[ "$rc" -ne 0 ] || rc=$xrc
# And against a live dfuse mount: the README's local system (debug build, its own
# port and directories), failing on any failure not in xfstests/expected/dfuse.txt.
dfuse_dir=$(mktemp -d)
# The permission tests run as a second user, who must reach the mount point.
chmod 755 "$dfuse_dir"
dfuse_mnt=$(mktemp -d /tmp/xd.XXXX)
export DAOS_PROFILE=debug DAOS_PORT=10591 DAOS_MOUNT=$dfuse_mnt DAOS_AGENT_DIR=$dfuse_dir/agent
trap 'scripts/local-system.sh wipe "$dfuse_dir/sys" >/dev/null 2>&1; rmdir "$dfuse_mnt" 2>/dev/null; rm -rf "$dfuse_dir"; umount "$xfs_mnt" 2>/dev/null; rmdir "$xfs_mnt" 2>/dev/null; rm -f "$log"' EXIT
set +e
scripts/local-system.sh start "$dfuse_dir/sys" > "$dfuse_dir/local-system.log" 2>&1
src=$?
mountpoint -q "$DAOS_MOUNT" || src=1
if [ "$src" -ne 0 ]; then
    tail -30 "$dfuse_dir/local-system.log"
    echo "scripts/test.sh: the local system for the dfuse run did not come up" >&2
    drc=1
else
    # The crash tests kill dfuse uncleanly (kill -9 by its recorded pid) and mount again.
    cargo run -j"$jobs" -q -p xfstests -- run --mount "$DAOS_MOUNT" --target dfuse \
        --kill-cmd "kill -9 \$(cat '$dfuse_dir/sys/dfuse.pid')" \
        --remount-cmd "'$PWD/scripts/local-system.sh' remount '$dfuse_dir/sys'" 2>&1 | tee -a "$log"
    drc=${PIPESTATUS[0]}
fi
set -e
[ "$rc" -ne 0 ] || rc=$drc
# One total over every test binary and harness suite, so the run's last line counts them all.
# A harness run's expected failures (listed, with reasons) count as skipped.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     /^(pjdfstest|fsx|fsstress|generic): [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$/ { p += $2; f += $4; i += $6 }
     /^xfstests: .* unexpected failures, [0-9]+ expected, / { n = $0; sub(/.*failures, /, "", n); sub(/ expected.*/, "", n); f -= n; i += n }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$rc"
