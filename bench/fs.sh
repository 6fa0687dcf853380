#!/usr/bin/env bash
# The file-system benchmark: dfuse on the local system against tmpfs (the
# memory limit), the local disk, and bindfs over tmpfs (a FUSE passthrough:
# the cost of FUSE itself), measured in one run and interleaved (for each
# workload: dfuse, tmpfs, disk, bindfs; then the next workload; all of it
# ROUNDS times), medians and ratios reported.
#
#   bench/fs.sh [DATA_DIR]      (root; default /var/tmp/daos-fsbench, on the local disk)
#
# Workloads (each bounded by BUDGET seconds a phase): 1 MiB streaming write of
# STREAM_MIB with fsync at the end and its cold read (fio); 4 KiB random read
# and write with O_DIRECT, 1 and 4 jobs (fio, FIO_SECONDS each); FILES files of
# 4 KiB created in one directory, cold `ls -f`, cold stat of each, unlink of
# each; a tree of about 5000 directories by `mkdir -p` and its `rm -rf`; the
# perl 5.36 source tarball (7,344 entries, Debian's orig tarball, fetched once
# with apt into bench/cache) unpacked by `tar xf`, and its `rm -rf`; then the
# object level without FUSE (libdaos's obj_bench: KV put/get, 1 MiB array
# write/read). Kernel caches are dropped before each cold phase.
#
# Output: JSON lines in bench/results/fs-DATE.jsonl, the Markdown table on
# stdout and in bench/results/fs-DATE.md. Environment: ROUNDS (3), BUDGET (60),
# STREAM_MIB (1024), FIO_SECONDS (5), FILES (10000), DAOS_PORT (10401).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-/var/tmp/daos-fsbench}
rounds=${ROUNDS:-3}
budget=${BUDGET:-60}
stream=${STREAM_MIB:-1024}
fsecs=${FIO_SECONDS:-5}
files=${FILES:-10000}
export DAOS_PORT=${DAOS_PORT:-10401}
export DAOS_MOUNT=$data/mnt-dfuse DAOS_AGENT_DIR=$data/agent
[ "$(id -u)" -eq 0 ] || { echo "bench/fs.sh: run as root (mounts, dropping caches)" >&2; exit 1; }
need=()
for p in fio:fio bindfs:bindfs xz:xz-utils tar:tar fusermount3:fuse3 dpkg-source:dpkg-dev; do
    command -v "${p%%:*}" >/dev/null || need+=("${p##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# The tarball: Debian's perl source, fetched once through apt (deb-src of the
# machine's own Debian release) and kept uncompressed, so tar measures the
# target, not xz.
cache=$repo/bench/cache
tarball=$cache/perl_5.36.0.orig.tar
if [ ! -f "$tarball" ]; then
    mkdir -p "$cache/apt/lists/partial"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    echo "deb-src http://deb.debian.org/debian $codename main" > "$cache/apt/sources.list"
    apt_src=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$cache/apt/lists")
    apt-get "${apt_src[@]}" -qq update
    (cd "$cache" && apt-get "${apt_src[@]}" -qq source --download-only perl=5.36.0-7+deb12u3 2>/dev/null ||
        apt-get "${apt_src[@]}" -qq source --download-only perl)
    xz -dc "$cache"/perl_5.36.0.orig.tar.xz > "$tarball.part"
    mv "$tarball.part" "$tarball"
fi

echo "==> building (release)" >&2
(cd "$repo" && cargo build -j2 --release --workspace --bins && cargo build -j2 --release -p libdaos --examples)
rel=${CARGO_TARGET_DIR:-$repo/target}/release
fsbench=$rel/fsbench

tmpfs=$data/mnt-tmpfs
disk=$data/disk
bsrc=$data/bindfs-src
bmnt=$data/mnt-bindfs
cleanup() {
    fusermount3 -u "$bmnt" 2>/dev/null || true
    umount "$bsrc" 2>/dev/null || true
    umount "$tmpfs" 2>/dev/null || true
    "$repo/scripts/local-system.sh" wipe "$data/sys" >/dev/null 2>&1 || true
    rm -rf "$disk" "$DAOS_AGENT_DIR"
    rmdir "$tmpfs" "$bsrc" "$bmnt" "$DAOS_MOUNT" "$data" 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$tmpfs" "$disk" "$bsrc" "$bmnt"
mount -t tmpfs -o size=$((stream + 2048))m fsbench-tmpfs "$tmpfs"
mount -t tmpfs -o size=$((stream + 2048))m fsbench-bsrc "$bsrc"
bindfs "$bsrc" "$bmnt"
"$repo/scripts/local-system.sh" start "$data/sys" >&2
export DAOS_AGENT_DRPC_DIR=$DAOS_AGENT_DIR PATH=$rel:$rel/examples:$PATH
daos container create tank bench >/dev/null 2>&1 || true

mkdir -p "$repo/bench/results"
stamp=$(date +%Y%m%d-%H%M%S)
out=$repo/bench/results/fs-$stamp.jsonl
targets=("dfuse:$DAOS_MOUNT" "tmpfs:$tmpfs" "disk:$disk" "bindfs:$bmnt")

each() { # runs fsbench SUBCOMMAND ARGS... on every target in turn
    local sub=$1; shift
    local t
    for t in "${targets[@]}"; do
        echo "    $sub ${*:1:2} on ${t%%:*}" >&2
        "$fsbench" "$sub" --target "${t%%:*}" --dir "${t#*:}" --round "$round" --budget "$budget" "$@" >> "$out"
    done
}

for round in $(seq 1 "$rounds"); do
    echo "==> round $round of $rounds" >&2
    # Streaming: the written file stays for the cold read, which removes it.
    each fio --workload stream_write_1m --metric write_mibs --keep -- --rw=write --bs=1m \
        --size="${stream}m" --end_fsync=1 --filename=stream.dat
    each fio --workload stream_read_1m_cold --metric read_mibs --cold -- --rw=read --bs=1m \
        --size="${stream}m" --filename=stream.dat
    for jobs in 1 4; do
        each fio --workload "rand_read_4k_j$jobs" --metric read_iops -- --rw=randread --bs=4k \
            --size=256m --direct=1 --numjobs="$jobs" --time_based --runtime="$fsecs" --ioengine=psync \
            --filename=shared.dat
        each fio --workload "rand_write_4k_j$jobs" --metric write_iops -- --rw=randwrite --bs=4k \
            --size=256m --direct=1 --numjobs="$jobs" --time_based --runtime="$fsecs" --ioengine=psync \
            --filename=shared.dat
    done
    each meta --files "$files"
    each tree
    each tar --tarball "$tarball"
    echo "    libdaos object level" >&2
    obj_bench tank bench --seconds "$fsecs" --array-mib 512 --tag "$round" --drop-caches |
        while read -r l; do
            # obj_bench's lines carry the round as "tag": one shape for the report.
            echo "$l" | sed -e "s/\"tag\":\"$round\"/\"round\":$round,\"target\":\"libdaos\"/"
        done >> "$out"
done

"$fsbench" report "$out" | tee "${out%.jsonl}.md"
echo "raw lines: $out" >&2
