#!/usr/bin/env python3
"""End-to-end benchmark: the pipelines/bench/ workloads through `weir run` (engine, store and
a worker with the process runtime in one process, over loopback gRPC) against a baseline of
the very same step commands run by a plain shell script, in the same invocation.

For each workload it prints wall times, the per-step overhead of weir over the baseline, steps
per second, and the peak RSS of the `weir` process (engine + worker + store, so an upper bound
for the engine alone). Build first: `cargo build --release -p weir-cli`.

Usage: python3 pipelines/bench/e2e.py [--weir target/release/weir] [--repeat N] [WORKLOAD...]
WORKLOAD is a file name under pipelines/bench/ without .yaml (default: chain-100 chain-1000
fanout-200 fanout-10000). The baseline runs the steps one after another, as a shell loop
would; weir runs independent steps `--workers` at a time (default: the number of cores).
"""

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT = ["chain-100", "chain-1000", "fanout-200", "fanout-10000"]


def plan(weir, path):
    out = subprocess.run([weir, "plan", "--json", path], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["steps"]


def shell_line(step):
    action = step["action"]
    if "run" in action:
        return "sh -c " + shlex.quote(action["run"])
    return " ".join(shlex.quote(a) for a in action["command"])


def baseline(steps, workdir):
    script = os.path.join(workdir, "baseline.sh")
    with open(script, "w") as f:
        f.write("set -e\n")
        for s in steps:
            f.write(shell_line(s) + "\n")
    start = time.perf_counter()
    subprocess.run(["sh", script], check=True, cwd=HERE)
    return time.perf_counter() - start


def weir_run(weir, path, workdir, workers):
    data = tempfile.mkdtemp(dir=workdir, prefix="data-")
    cmd = [weir, "run", path, "--data-dir", data]
    if workers:
        cmd += ["--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit("weir run %s failed (%d):\n%s\n%s" % (path, done.returncode, done.stdout[-2000:], done.stderr[-2000:]))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weir", default=os.path.join(ROOT, "target", "release", "weir"))
    p.add_argument("--repeat", type=int, default=1, help="runs per workload; the best is kept")
    p.add_argument("--workers", type=int, default=0, help="weir run --workers (default: cores)")
    p.add_argument("workloads", nargs="*", default=DEFAULT)
    a = p.parse_args()
    if not os.access(a.weir, os.X_OK):
        sys.exit("no weir binary at %s: run `cargo build --release -p weir-cli` first" % a.weir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as work:
        for name in a.workloads:
            path = os.path.join(HERE, name + ".yaml")
            steps = plan(a.weir, path)
            n = len(steps)
            base = min(baseline(steps, work) for _ in range(a.repeat))
            runs = [weir_run(a.weir, path, work, a.workers) for _ in range(a.repeat)]
            wall, cpu, rss = min(runs)
            overhead_ms = (wall - base) / n * 1000
            rows.append((name, n, base, wall, overhead_ms, n / wall, cpu, rss / 1024))
            print("%-13s %6d steps  shell %7.2fs  weir %7.2fs  overhead %6.2f ms/step  %7.0f steps/s  "
                  "cpu %6.2fs  peak rss %5.0f MiB" % rows[-1], flush=True)
    print()
    print("| workload | steps | shell loop | weir run | overhead per step | steps/s | weir CPU | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| %s | %d | %.2f s | %.2f s | %.2f ms | %.0f | %.2f s | %.0f MiB |" % r)


if __name__ == "__main__":
    main()
