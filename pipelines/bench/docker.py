#!/usr/bin/env python3
"""Docker step overhead: a chain of N `runtime: docker` steps running `true` through `weir run`
(engine, store and worker in one process; containers through the Docker API) against
`docker run --rm IMAGE true` run N times one after another, on the same image, in the same
invocation.

Per-step figures exclude start-up on both sides: weir's is (T(chain of N) - T(chain of 1)) /
(N - 1), so engine start, submission and the first image check are not counted; docker's is
the mean of its N runs. The goal (issue 4) is weir's step within 1.15 times the plain
`docker run`. The image is `weir-test/busybox:1`, built by scripts/test-images.sh.
Build first: `cargo build --release -p weir-cli`.

Usage: python3 pipelines/bench/docker.py [--weir target/release/weir] [--steps N] [--repeat R]
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
IMAGE = "weir-test/busybox:1"


def chain(n):
    lines = ["name: docker-chain-%d" % n, "defaults:", "  runtime: docker", "  image: " + IMAGE,
             "steps:"]
    for i in range(n):
        lines.append("  s%d:" % i)
        if i:
            lines.append("    needs: [s%d]" % (i - 1))
        lines.append("    run: 'true'")
    return "\n".join(lines) + "\n"


def weir_chain(weir, n, workdir):
    path = os.path.join(workdir, "chain-%d.yaml" % n)
    with open(path, "w") as f:
        f.write(chain(n))
    data = tempfile.mkdtemp(dir=workdir, prefix="data-")
    start = time.perf_counter()
    subprocess.run([weir, "run", path, "--data-dir", data], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def docker_runs(n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.mean(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weir", default=os.path.join(ROOT, "target/release/weir"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "scripts/test-images.sh")], check=True)
    n = args.steps
    with tempfile.TemporaryDirectory() as workdir:
        # One warm-up of each, so neither side pays for a cold page cache.
        docker_runs(1)
        weir_chain(args.weir, 1, workdir)
        rows = []
        for r in range(args.repeat):
            base = docker_runs(n)
            one = weir_chain(args.weir, 1, workdir)
            many = weir_chain(args.weir, n, workdir)
            per_step = (many - one) / (n - 1)
            rows.append((base, per_step))
            print("round %d: docker run --rm %.1f ms/step, weir %.1f ms/step (chain of %d %.2f s, of 1 %.2f s), "
                  "ratio %.2f" % (r + 1, base * 1e3, per_step * 1e3, n, many, one, per_step / base), flush=True)
        ratios = [w / b for b, w in rows]
        print("median ratio weir/docker-run: %.2f (goal <= 1.15)" % statistics.median(ratios))


if __name__ == "__main__":
    sys.exit(main())
