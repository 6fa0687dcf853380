#!/usr/bin/env bash
# Brings up a single-node DAOS system on this machine: builds the binaries,
# writes configs with file-backed storage under DATA_DIR, starts daos_server
# (which starts two daos_engine ranks) and daos_agent, formats, creates pool
# "tank" over both ranks and POSIX container "posix" in it, and mounts that
# container with dfuse on DAOS_MOUNT (/mnt/daos).
#
#   scripts/local-system.sh [DATA_DIR]        start (default DATA_DIR: /var/lib/daos-local)
#   scripts/local-system.sh stop [DATA_DIR]   stop everything it started (data is kept)
#   scripts/local-system.sh wipe [DATA_DIR]   stop, unmount the SCM tmpfs, delete DATA_DIR
#   scripts/local-system.sh remount [DATA_DIR]  unmount the container (lazily if its dfuse
#                                             died) and mount it again; dfuse's pid: DATA_DIR/dfuse.pid
#
# The SCM tier is a tmpfs (class ram) and holds the engine's metadata and the
# management service (as DAOS does without control_metadata), so a reboot
# starts a fresh system: run this script again to format it.
#
# Environment: DAOS_PORT (10001), DAOS_ENGINES (2), DAOS_TARGETS (2 per engine),
# DAOS_SCM_GIB (2 per engine), DAOS_BDEV_GIB (16 per engine, sparse),
# DAOS_POOL_SIZE (8GiB), DAOS_MOUNT (/mnt/daos), DAOS_AGENT_DIR (/var/run/daos_agent),
# DAOS_PROFILE (release or debug).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

cmd=start
case "${1:-}" in start|stop|wipe|remount) cmd=$1; shift ;; esac
data=${1:-/var/lib/daos-local}
port=${DAOS_PORT:-10001}
profile=${DAOS_PROFILE:-release}
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile"

die() { echo "local-system: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() { # pidfile name
    if alive "$1"; then
        local pid; pid=$(cat "$1")
        kill -TERM "$pid"
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { echo "$2 did not stop; killing it"; kill -KILL "$pid"; }
        echo "stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}

mnt=${DAOS_MOUNT:-/mnt/daos}
# The agent's socket directory: DAOS's default, so clients (and dfuse run by
# mount(8) from fstab, which gets no environment) find it without settings.
agent_dir=${DAOS_AGENT_DIR:-/var/run/daos_agent}
[ -f "$data/dfuse.mnt" ] && mnt=$(cat "$data/dfuse.mnt")

dfuse_pid() { # the dfuse serving $mnt, found by its exact command line
    local p
    for p in /proc/[0-9]*; do
        if [ "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" = "$bin/dfuse --multi-user $mnt tank posix " ]; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    return 1
}

mount_dfuse() {
    mkdir -p "$mnt"
    # --multi-user: run as root, the mount serves every user as themselves.
    DAOS_AGENT_DRPC_DIR=$agent_dir D_LOG_FILE=$data/dfuse.log \
        "$bin/dfuse" --multi-user "$mnt" tank posix
    echo "$mnt" > "$data/dfuse.mnt"
    dfuse_pid > "$data/dfuse.pid" || rm -f "$data/dfuse.pid"
}

if [ "$cmd" = remount ]; then
    [ -f "$data/dfuse.mnt" ] || die "$data: no container was mounted from here"
    old=$(cat "$data/dfuse.pid" 2>/dev/null || true)
    # A live mount unmounts cleanly (dfuse stores what it holds, then exits);
    # a dead daemon's mount ("transport endpoint is not connected") only lazily.
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
    if [ -n "$old" ]; then
        for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$old" 2>/dev/null && die "dfuse (pid $old) did not exit after the unmount"
    fi
    mount_dfuse
    exit 0
fi

if [ "$cmd" = stop ] || [ "$cmd" = wipe ]; then
    if mountpoint -q "$mnt" 2>/dev/null; then
        # dfuse exits once its mount is gone.
        fusermount3 -u "$mnt" && echo "unmounted $mnt"
    elif awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; then
        # Its dfuse died: the mount is still listed but answers nothing.
        fusermount3 -u -z "$mnt" && echo "unmounted $mnt (its dfuse was gone)"
    fi
    rm -f "$data/dfuse.pid"
    stop_pid "$data/daos_agent.pid" daos_agent
    stop_pid "$data/daos_server.pid" "daos_server and its engines"
    if [ "$cmd" = wipe ]; then
        for m in "$data"/scm*; do
            if mountpoint -q "$m"; then umount "$m" && echo "unmounted $m"; fi
        done
        [ -f "$data/daos_server.yml" ] && rm -rf "$data" && echo "removed $data"
    fi
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root: the SCM tier is a tmpfs that daos_server mounts"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first"
if ! command -v gcc >/dev/null || ! command -v mountpoint >/dev/null || ! command -v fusermount3 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc util-linux fuse3
fi

echo "==> building ($profile)"
if [ "$profile" = release ]; then
    (cd "$repo" && cargo build -j2 --release --workspace --bins)
else
    (cd "$repo" && cargo build -j2 --workspace --bins)
fi

mkdir -p "$data"/sock "$agent_dir"
nengines=${DAOS_ENGINES:-2}
case "$nengines" in [1-9]) ;; *) die "DAOS_ENGINES=$nengines: use 1 to 9" ;; esac
# One engines[] entry per rank: its own SCM tmpfs, bulk file, port and log.
engines() {
    local i
    for i in $(seq 0 $((nengines - 1))); do
        cat <<ENG
- targets: ${DAOS_TARGETS:-2}
  nr_xs_helpers: 0
  fabric_iface: lo
  fabric_iface_port: $((port + 21415 + 2 * i))
  log_file: $data/daos_engine.$i.log
  log_mask: INFO
  storage:
  - class: ram
    scm_mount: $data/scm$i
    scm_size: ${DAOS_SCM_GIB:-2}
  - class: file
    bdev_list: [$data/bdev$i]
    bdev_size: ${DAOS_BDEV_GIB:-16}
ENG
    done
}
cat > "$data/daos_server.yml" <<YML
# Written by scripts/local-system.sh; see docs/config.md.
name: daos_server
port: $port
mgmt_svc_replicas: ["127.0.0.1:$port"]
provider: ofi+tcp
socket_dir: $data/sock
transport_config:
  allow_insecure: true
control_log_file: $data/daos_server.log
control_log_mask: INFO
engines:
$(engines)
YML
cat > "$data/daos_control.yml" <<YML
name: daos_server
port: $port
hostlist: ["127.0.0.1:$port"]
transport_config:
  allow_insecure: true
YML
cat > "$data/daos_agent.yml" <<YML
name: daos_server
access_points: ["127.0.0.1:$port"]
port: $port
runtime_dir: $agent_dir
log_file: $data/daos_agent.log
transport_config:
  allow_insecure: true
YML

dmg=("$bin/dmg" -o "$data/daos_control.yml")

if alive "$data/daos_server.pid"; then
    echo "==> daos_server already running (pid $(cat "$data/daos_server.pid"))"
else
    echo "==> starting daos_server"
    setsid "$bin/daos_server" start -o "$data/daos_server.yml" >>"$data/daos_server.stderr" 2>&1 < /dev/null &
    echo $! > "$data/daos_server.pid"
fi
for _ in $(seq 1 100); do "${dmg[@]}" storage scan >/dev/null 2>&1 && break; sleep 0.2; done
"${dmg[@]}" storage scan >/dev/null || die "daos_server did not come up; see $data/daos_server.log and $data/daos_server.stderr"

echo "==> formatting storage"
"${dmg[@]}" storage format

if alive "$data/daos_agent.pid"; then
    echo "==> daos_agent already running (pid $(cat "$data/daos_agent.pid"))"
else
    echo "==> starting daos_agent"
    rm -f "$agent_dir/daos_sock"   # a stale socket would pass the wait below
    setsid "$bin/daos_agent" start -o "$data/daos_agent.yml" >>"$data/daos_agent.stderr" 2>&1 < /dev/null &
    echo $! > "$data/daos_agent.pid"
fi
for _ in $(seq 1 100); do [ -S "$agent_dir/daos_sock" ] && break; sleep 0.1; done
[ -S "$agent_dir/daos_sock" ] || die "daos_agent did not come up; see $data/daos_agent.log"

if "${dmg[@]}" pool query tank >/dev/null 2>&1; then
    echo "==> pool tank exists"
else
    echo "==> creating pool tank"
    "${dmg[@]}" pool create tank --size "${DAOS_POOL_SIZE:-8GiB}"
fi
export DAOS_AGENT_DRPC_DIR=$agent_dir
if "$bin/daos" container query tank posix >/dev/null 2>&1; then
    echo "==> container posix exists"
else
    echo "==> creating POSIX container posix"
    "$bin/daos" container create tank posix --type POSIX
fi
if mountpoint -q "$mnt"; then
    echo "==> $mnt is already mounted"
else
    echo "==> mounting it on $mnt"
    mount_dfuse
fi
"${dmg[@]}" system query -v
"${dmg[@]}" pool list
df -h "$mnt"

cat <<TXT

The local DAOS system is up (data in $data), container posix mounted on $mnt.
Next:
  export PATH=$bin:\$PATH
  cp -a /etc $mnt/ && ls -l $mnt
  dmg -o $data/daos_control.yml pool query tank
  daos container create tank c1 --type POSIX && dfuse /mnt/c1 tank c1
  daos pool query tank
Logs: $data/daos_server.log, $data/daos_engine.N.log, $data/daos_agent.log, $data/dfuse.log
Stop: $repo/scripts/local-system.sh stop $data   (wipe: stop and delete everything)
TXT
