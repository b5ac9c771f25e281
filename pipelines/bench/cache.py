#!/usr/bin/env python3
"""Step-cache benchmark: the example pipeline (pipelines/ml-retrain) through `weir run`, cold
and then warm, in the same data folder and the same invocation.

Each round uses a fresh data folder and times three runs of the example with the same params:
  cold      the first run: nothing cached, all 8 step instances run;
  warm      the second run: ingest, preprocess and the 4 train instances come from the cache,
            validate and deploy (no `cache:`) run;
  no-cache  a third run with --no-cache: everything runs again (the baseline a warm run is
            compared with, measured after the warm one so disk caches are as warm for both).
It prints each time and the ratios warm/cold and warm/no-cache; the ratios are the figures to
compare across machines. Build first: `cargo build --release -p weir-cli`.

Usage: python3 pipelines/bench/cache.py [--weir target/release/weir] [--rounds N] [-p NAME=VALUE...]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def timed(cmd, cwd):
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took, done.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default=os.path.join(ROOT, "target/release/weir"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-p", dest="params", action="append", default=["rows=20000"], metavar="NAME=VALUE")
    args = ap.parse_args()
    args.weir = os.path.abspath(args.weir)
    if not os.path.exists(args.weir):
        sys.exit(f"{args.weir} does not exist: run `cargo build --release -p weir-cli` first")
    pipeline = os.path.join(ROOT, "pipelines/ml-retrain")
    params = [a for p in args.params for a in ("-p", p)]
    print(f"workload: pipelines/ml-retrain {' '.join(args.params)}, {args.rounds} rounds")
    print(f"{'round':>5} {'cold':>8} {'warm':>8} {'no-cache':>9} {'warm/cold':>10} {'warm/no-cache':>14} cached")
    ratios = []
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as data:
            base = [args.weir, "run", pipeline, "--data-dir", data, *params]
            cold, _ = timed(base, data)
            warm, out = timed(base, data)
            fresh, _ = timed(base + ["--no-cache"], data)
        cached = sum(1 for line in out.splitlines() if " cached " in f" {line} ")
        ratios.append((warm / cold, warm / fresh))
        print(f"{n:>5} {cold:>7.2f}s {warm:>7.2f}s {fresh:>8.2f}s {warm / cold:>10.2f} {warm / fresh:>14.2f} {cached}")
    print(
        f"median warm/cold {statistics.median(r[0] for r in ratios):.2f}, "
        f"warm/no-cache {statistics.median(r[1] for r in ratios):.2f}"
    )


if __name__ == "__main__":
    main()
