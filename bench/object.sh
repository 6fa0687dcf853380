#!/usr/bin/env bash
# Object-level benchmark of the data plane, beside the machine's raw figures
# for the same work, measured interleaved in the same run (round 1: ours, raw;
# round 2: ours, raw; ...), medians reported.
#
#   bench/object.sh [DATA_DIR]       (default /tmp/daos-bench; root)
#
# It brings up a local system (scripts/local-system.sh, two engines, file
# bulk devices under DATA_DIR), creates container "bench" in pool "tank",
# runs libdaos's obj_bench (KV put/get at queue depth 1 and 64, 1 MiB array
# write/read) and fio on the engines' own tiers (the SCM tmpfs, where the
# write-ahead log lives, and the filesystem holding the bulk files), then
# wipes the system. Output: JSON lines in bench/results/object-DATE.jsonl and
# a Markdown table on stdout. Environment: ROUNDS (3), SECONDS_PER (5),
# ARRAY_MIB (512), DAOS_PORT (10301).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-/tmp/daos-bench}
rounds=${ROUNDS:-3}
secs=${SECONDS_PER:-5}
mib=${ARRAY_MIB:-512}
export DAOS_PORT=${DAOS_PORT:-10301}
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root" >&2; exit 1; }
command -v fio >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio; }

cleanup() { "$repo/scripts/local-system.sh" wipe "$data" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$repo/scripts/local-system.sh" start "$data"
(cd "$repo" && cargo build -j2 --release -p libdaos --examples)
rel=${CARGO_TARGET_DIR:-$repo/target}/release
export DAOS_AGENT_DRPC_DIR=$data/agent PATH=$rel:$rel/examples:$PATH
daos container create tank bench >/dev/null 2>&1 || true

mkdir -p "$repo/bench/results"
out=$repo/bench/results/object-$(date +%Y%m%d-%H%M%S).jsonl
scratch_scm=$data/scm0/bench-raw
scratch_bulk=$data/bench-raw
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

fio_json() { # name unit field fio-args...
    local name=$1 unit=$2 field=$3; shift 3
    local v
    v=$(fio --output-format=json --name=raw "$@" | python3 -c "
import json,sys
j=json.load(sys.stdin)['jobs'][0]
f='$field'
if f=='write_iops': print(j['write']['iops'])
elif f=='read_iops': print(j['read']['iops'])
elif f=='write_mibs': print(j['write']['bw_bytes']/1048576)
elif f=='read_mibs': print(j['read']['bw_bytes']/1048576)
")
    echo "{\"tag\":\"$round\",\"workload\":\"$name\",\"value\":$v,\"unit\":\"$unit\"}"
}

for round in $(seq 1 "$rounds"); do
    echo "==> round $round: libdaos" >&2
    obj_bench tank bench --seconds "$secs" --array-mib "$mib" --tag "$round" --drop-caches >> "$out"
    echo "==> round $round: raw tiers" >&2
    mkdir -p "$scratch_scm" "$scratch_bulk"
    # What a KV put costs the engine at least: a small durable log append on the SCM tier.
    fio_json raw_scm_append_4k_sync ops/s write_iops --directory="$scratch_scm" --rw=write --bs=4k \
        --size=64m --fdatasync=1 --runtime="$secs" --time_based >> "$out"
    # What an array's bulk data costs: 1 MiB writes and cold reads of a file on the bulk tier's filesystem.
    fio_json raw_bulk_write_1m MiB/s write_mibs --directory="$scratch_bulk" --rw=write --bs=1m \
        --size="${mib}m" --end_fsync=1 >> "$out"
    drop_caches
    fio_json raw_bulk_read_1m MiB/s read_mibs --directory="$scratch_bulk" --rw=read --bs=1m \
        --size="${mib}m" >> "$out"
    rm -rf "$scratch_scm" "$scratch_bulk"
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["workload"], []).append(r)
med = {w: statistics.median(x["value"] for x in v) for w, v in by.items()}
ref = {"kv_put_qd1": "raw_scm_append_4k_sync", "kv_put_qd64": "raw_scm_append_4k_sync",
       "array_write_1m": "raw_bulk_write_1m", "array_read_1m": "raw_bulk_read_1m"}
print("| workload | median | unit | p50 µs | p99 µs | raw reference | raw median | ratio |")
print("|---|---|---|---|---|---|---|---|")
for w, v in by.items():
    if w.startswith("raw_"):
        continue
    p50 = statistics.median(x.get("p50_us", 0) for x in v)
    p99 = statistics.median(x.get("p99_us", 0) for x in v)
    r = ref.get(w)
    rv = med.get(r) if r else None
    ratio = f"{med[w] / rv:.2f}x" if rv else "-"
    print(f"| {w} | {med[w]:.0f} | {v[0]['unit']} | {p50:.0f} | {p99:.0f} | {r or '-'} | {rv:.0f} | {ratio} |" if rv else
          f"| {w} | {med[w]:.0f} | {v[0]['unit']} | {p50:.0f} | {p99:.0f} | - | - | - |")
for w, v in by.items():
    if w.startswith("raw_"):
        print(f"| {w} | {med[w]:.0f} | {v[0]['unit']} | - | - | - | - | - |")
print(f"\n{len(set(r['tag'] for r in rows))} rounds; raw lines: {sys.argv[1]}")
PY
