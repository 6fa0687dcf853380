#!/usr/bin/env python3
"""Where a command's time goes on a FUSE mount, request by request.

    bench/fuse-ops.py --mount /mnt/dfuse -- tar xf src.tar -C /mnt/dfuse/t

Runs the command under `perf record` with the kernel's FUSE tracepoints
(fuse:fuse_request_send when the kernel queues a request, fuse_request_end
when the daemon's reply completes it; Linux 6.15 and later), keeps the
requests of the mount's connection, and prints per opcode: how many, their
latency (queued to answered, so the daemon's work, its engine round trips
and the wake-ups on both sides), and their share of the span from the
first request to the last answer (exact for a command that sends one
request at a time, like tar or rm; perf's own start and end are outside).
"Same CPU" is the share answered on the CPU that queued the request: a
reply from the other CPU wakes the caller across CPUs.

The time between one request's answer and the next one's sending is the
command's own work (and the kernel's around it), reported as "between".

Needs root (system-wide tracepoints) and perf (Debian: linux-perf).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

LINE = re.compile(
    r"\[(\d+)\]\s+([\d.]+):\s+fuse:fuse_request_(send|end): connection (\d+) req (\d+)"
    r"(?: opcode \d+ \((\w+)\))?"
)


def pct(v, q):
    return v[min(len(v) - 1, int(len(v) * q))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mount", required=True, help="the FUSE mount whose requests count")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given (after --)")
    try:
        conn = str(os.stat(a.mount).st_dev)
    except OSError as e:
        ap.error(f"--mount {a.mount}: {e}")

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = [
            "perf", "record", "-q", "-a", "-o", data,
            "-e", "fuse:fuse_request_send", "-e", "fuse:fuse_request_end", "--",
        ] + cmd
        t0 = time.monotonic()
        try:
            rc = subprocess.run(rec).returncode
        except FileNotFoundError:
            sys.exit("fuse-ops: perf not found (Debian: apt-get install linux-perf)")
        wall = time.monotonic() - t0
        if rc != 0:
            sys.exit(f"fuse-ops: the command (or perf) failed with status {rc}")
        out = subprocess.run(
            ["perf", "script", "-i", data], capture_output=True, text=True
        )
        if out.returncode != 0:
            sys.exit(f"fuse-ops: perf script: {out.stderr.strip()}")

    sent = {}
    lat, same = {}, {}
    between = []
    first_send = last_end = None
    for line in out.stdout.splitlines():
        m = LINE.search(line)
        if not m or m.group(4) != conn:
            continue
        cpu, t, kind, req, op = m.group(1), float(m.group(2)), m.group(3), m.group(5), m.group(6)
        if kind == "send":
            sent[req] = (t, op, cpu)
            if first_send is None:
                first_send = t
            if last_end is not None and t >= last_end:
                between.append(t - last_end)
        elif req in sent:
            t_send, op, cpu_send = sent.pop(req)
            lat.setdefault(op, []).append(t - t_send)
            same[op] = same.get(op, 0) + (cpu == cpu_send)
            last_end = t
    if not lat:
        sys.exit(f"fuse-ops: no requests of {a.mount} (connection {conn}) were traced")

    span = max(last_end - first_send, 1e-9)
    print(
        f"{' '.join(cmd)}: {wall:.2f} s under perf, {span:.2f} s from the first request "
        f"to the last answer, on {a.mount} (connection {conn})\n"
    )
    print("| request | count | p50 us | mean us | p90 us | total s | of span | same CPU |")
    print("|---|---|---|---|---|---|---|---|")
    rows = sorted(lat.items(), key=lambda kv: -sum(kv[1]))
    for op, v in rows:
        v.sort()
        total = sum(v)
        print(
            f"| {op.removeprefix('FUSE_')} | {len(v)} | {pct(v, 0.5) * 1e6:.0f} "
            f"| {statistics.mean(v) * 1e6:.0f} | {pct(v, 0.9) * 1e6:.0f} | {total:.2f} "
            f"| {100 * total / span:.0f}% | {100 * same[op] / len(v):.0f}% |"
        )
    if between:
        between.sort()
        total = sum(between)
        print(
            f"| (between) | {len(between)} | {pct(between, 0.5) * 1e6:.0f} "
            f"| {statistics.mean(between) * 1e6:.0f} | {pct(between, 0.9) * 1e6:.0f} "
            f"| {total:.2f} | {100 * total / span:.0f}% | |"
        )


if __name__ == "__main__":
    main()
