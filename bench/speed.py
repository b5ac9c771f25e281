#!/usr/bin/env python3
"""weir against a plain baseline and Luigi on the four workloads of issue 19, interleaved.

Workloads (each written fresh into a temporary folder by this script):
  W0  one no-op task
  W1  a chain of 100 `true` steps
  W2  fan-out 1 -> 200 -> 1 (`true` steps)
  W3  an ML-like pipeline: ingest, preprocess, train x4, validate, deploy, each a small
      Python program (standard library) passing files on

Contenders, in rotating order within each round so they share the machine's noise:
  base   W0: `python3 -c pass` (the floor of any Python orchestrator);
         W1, W2: the same steps run one after another by a shell script, each as
         `sh -c true` (a process per step, as weir's process runtime starts them);
         W3: the same Python programs run one after another, a process per stage
  weir   `weir run FILE --data-dir <fresh>` (embedded engine, store and worker)
  luigi  Luigi with a local scheduler and 2 workers, each task running the same command in a
         subprocess (`sh -c true` for W1 and W2) (for W0 a task whose run() does nothing); Luigi is installed from PyPI
         into a virtual environment by this script (bench/.venv, reused), unless --no-luigi

W0 runs three times in each round (a round of it is a fraction of a second, and its ratio is
the one most moved by what ran just before), and after each contender's run its folder is
removed and the filesystem synced, outside the timing: otherwise the next contender's first
fsync (weir's store) paid for committing the previous run's writes and removal. For every workload and contender the median wall
time over the rounds is printed, then the
ratios (Luigi / weir, weir / base), the CPU time (user + system of the whole process tree) per
step, peak RSS (the largest process of the tree: for weir the engine and worker together),
and the 1-minute load average before and after, because this 2-core machine is shared.

Beside W0-W3, the same invocation runs (each its own module, documented there):
  scale    bench/scale.py: the 1,000-step chain and the 1 -> 10,000 -> 1 fan-out of
           pipelines/bench/ through `weir run` against a shell running the same commands: CPU
           per step and its ratio, steps/s, peak RSS (engine + embedded worker)
  dist     bench/scale.py: the same two through `weir server` + a separate `weir-worker` on
           loopback, against the `weir run` figures of the same rounds; RSS of both summed;
           twice: the worker at its defaults (an attempt held ahead per slot), and `--ahead 0`
  restart  bench/restart.py (run with bench/.venv's Python for grpcio): `weir server` on a
           cached data folder of 10,000 finished and 100 unfinished runs (built once, in
           bench/.cache): time until it serves with the 100 resumed, and listing the newest 50
  floor    `cargo bench -p weir-engine --bench floor` (built on first use): what a step cannot
           avoid (its process, a durable transaction) and what one gRPC call between steps
           costs alone; with dist, the least server + worker can cost against `weir run`
Luigi and grpcio are installed from PyPI into bench/.venv by this script when missing.
Server and worker processes are stopped on any exit, Ctrl-C and SIGTERM included.

Usage: cargo build --release --bin weir --bin weir-worker
       python3 bench/speed.py [--weir target/release/weir] [--worker (beside --weir)]
                              [--only W0,W1,W2,W3,scale,dist,restart,floor] [--no-luigi]
                              [--rounds 5] [--scale-rounds 3] [--restart-rounds 3]
                              [--rebuild-fixture]
A quick run: python3 bench/speed.py --rounds 2 --scale-rounds 1 --restart-rounds 1
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import procs
import scale

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")

STAGE_PY = r'''
"""One stage of the W3 workload: python3 stage.py ROLE OUT_DIR [INPUTS...]"""
import json, math, os, random, sys

role, out = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
os.makedirs(out, exist_ok=True)
if role == "ingest":
    r = random.Random(7)
    with open(os.path.join(out, "data.csv"), "w") as f:
        for _ in range(2000):
            x = [r.random() for _ in range(4)]
            y = 3 * x[0] - 2 * x[1] + 0.5 * x[2] + r.gauss(0, 0.3)
            f.write(",".join(f"{v:.6f}" for v in x + [y]) + "\n")
elif role == "preprocess":
    rows = [list(map(float, l.split(","))) for l in open(args[0])]
    cols = list(zip(*rows))
    mu = [sum(c) / len(c) for c in cols]
    sd = [math.sqrt(sum((v - m) ** 2 for v in c) / len(c)) or 1 for c, m in zip(cols, mu)]
    with open(os.path.join(out, "clean.csv"), "w") as f:
        for r in rows:
            f.write(",".join(f"{(v - m) / s:.6f}" for v, m, s in zip(r[:-1], mu, sd)) + f",{r[-1]:.6f}\n")
elif role == "train":
    rows = [list(map(float, l.split(","))) for l in open(args[0])]
    l2 = [0.0, 0.1, 1.0, 10.0][int(args[1])]
    n = len(rows[0]) - 1
    a = [[sum(r[i] * r[j] for r in rows) + (l2 if i == j else 0) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * r[-1] for r in rows) for i in range(n)]
    for i in range(n):
        p = a[i][i]
        for j in range(i + 1, n):
            f = a[j][i] / p
            a[j] = [x - f * y for x, y in zip(a[j], a[i])]
            b[j] -= f * b[i]
    w = [0.0] * n
    for i in reversed(range(n)):
        w[i] = (b[i] - sum(a[i][j] * w[j] for j in range(i + 1, n))) / a[i][i]
    mean = sum(r[-1] for r in rows) / len(rows)
    rmse = math.sqrt(sum((sum(wi * xi for wi, xi in zip(w, r)) + mean - r[-1]) ** 2 for r in rows) / len(rows))
    json.dump({"l2": l2, "w": w, "rmse": rmse}, open(os.path.join(out, "model.json"), "w"))
elif role == "validate":
    best = min((json.load(open(p)) for p in args), key=lambda m: m["rmse"])
    json.dump(best, open(os.path.join(out, "best.json"), "w"))
elif role == "deploy":
    best = json.load(open(args[0]))
    json.dump({"deployed": True, "rmse": best["rmse"]}, open(os.path.join(out, "deployed.json"), "w"))
'''

W3_YAML = """name: w3
steps:
  ingest:
    run: python3 stage.py ingest "$WEIR_OUTPUTS"
    outputs: [data.csv]
  preprocess:
    needs: ingest
    run: python3 stage.py preprocess "$WEIR_OUTPUTS" "$WEIR_INPUTS/ingest/data.csv"
    outputs: [clean.csv]
  train:
    needs: preprocess
    matrix: {k: [0, 1, 2, 3]}
    run: python3 stage.py train "$WEIR_OUTPUTS" "$WEIR_INPUTS/preprocess/clean.csv" "{{ matrix.k }}"
    outputs: [model.json]
  validate:
    needs: train
    run: python3 stage.py validate "$WEIR_OUTPUTS" "$WEIR_INPUTS"/train/*/model.json
    outputs: [best.json]
  deploy:
    needs: validate
    run: python3 stage.py deploy "$WEIR_OUTPUTS" "$WEIR_INPUTS/validate/best.json"
    outputs: [deployed.json]
"""

LUIGI_PY = r'''
"""The workloads as Luigi tasks: python3 wl.py W OUT_DIR (runs Luigi in process)."""
import os, subprocess, sys
import luigi

W, OUT = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))

class Cmd(luigi.Task):
    name = luigi.Parameter()
    cmd = luigi.ListParameter(default=["sh", "-c", "true"])
    after = luigi.ListParameter(default=[])
    def requires(self):
        return [TASKS[d] for d in self.after]
    def output(self):
        return luigi.LocalTarget(os.path.join(OUT, "done", self.name))
    def run(self):
        subprocess.run(list(self.cmd), check=True, cwd=HERE)
        with self.output().open("w") as f:
            f.write("")

class Noop(luigi.Task):
    def output(self):
        return luigi.LocalTarget(os.path.join(OUT, "done", "noop"))
    def run(self):
        with self.output().open("w") as f:
            f.write("")

TASKS = {}
def add(name, cmd=("sh", "-c", "true"), deps=()):
    TASKS[name] = Cmd(name=name, cmd=list(cmd), after=list(deps))
    return TASKS[name]

if W == "W0":
    root = Noop()
elif W == "W1":
    prev = ()
    for i in range(100):
        add(f"s{i}", deps=prev)
        prev = (f"s{i}",)
    root = TASKS["s99"]
elif W == "W2":
    add("start")
    for i in range(200):
        add(f"w{i}", deps=("start",))
    root = add("end", deps=[f"w{i}" for i in range(200)])
else:
    o = lambda n: os.path.join(OUT, n)
    add("ingest", ["python3", "stage.py", "ingest", o("ingest")])
    add("preprocess", ["python3", "stage.py", "preprocess", o("preprocess"), o("ingest/data.csv")], ["ingest"])
    for k in range(4):
        add(f"train{k}", ["python3", "stage.py", "train", o(f"train{k}"), o("preprocess/clean.csv"), str(k)], ["preprocess"])
    add("validate", ["python3", "stage.py", "validate", o("validate")] + [o(f"train{k}/model.json") for k in range(4)],
        [f"train{k}" for k in range(4)])
    root = add("deploy", ["python3", "stage.py", "deploy", o("deploy"), o("validate/best.json")], ["validate"])

ok = luigi.build([root], local_scheduler=True, workers=2, log_level="ERROR")
sys.exit(0 if ok else 1)
'''

STEPS = {"W0": 1, "W1": 100, "W2": 202, "W3": 8}


def write_workloads(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "stage.py"), "w") as f:
        f.write(STAGE_PY)
    with open(os.path.join(d, "wl.py"), "w") as f:
        f.write(LUIGI_PY)
    with open(os.path.join(d, "W0.yaml"), "w") as f:
        f.write('name: w0\nsteps:\n  noop:\n    run: "true"\n')
    with open(os.path.join(d, "W1.yaml"), "w") as f:
        f.write("name: w1\nsteps:\n")
        for i in range(100):
            f.write(f'  s{i}:\n    run: "true"\n' + (f"    needs: s{i - 1}\n" if i else ""))
    with open(os.path.join(d, "W2.yaml"), "w") as f:
        f.write('name: w2\nsteps:\n  start:\n    run: "true"\n  work:\n    needs: start\n'
                f'    matrix: {{i: [{", ".join(str(i) for i in range(200))}]}}\n    run: "true"\n'
                '  end:\n    needs: work\n    run: "true"\n')
    with open(os.path.join(d, "W3.yaml"), "w") as f:
        f.write(W3_YAML)
    # The baselines: the same commands, one after another.
    with open(os.path.join(d, "W1.sh"), "w") as f:
        f.write("sh -c true\n" * 100)
    with open(os.path.join(d, "W2.sh"), "w") as f:
        f.write("sh -c true\n" * 202)
    with open(os.path.join(d, "W3.sh"), "w") as f:
        f.write('set -e\nO="$1"\n'
                'python3 stage.py ingest "$O/ingest"\n'
                'python3 stage.py preprocess "$O/preprocess" "$O/ingest/data.csv"\n'
                + "".join(f'python3 stage.py train "$O/train{k}" "$O/preprocess/clean.csv" {k}\n' for k in range(4))
                + 'python3 stage.py validate "$O/validate" "$O"/train*/model.json\n'
                'python3 stage.py deploy "$O/deploy" "$O/validate/best.json"\n')


def command(who, w, d, out, a):
    if who == "base":
        if w == "W0":
            return [sys.executable, "-c", "pass"]
        return ["sh", os.path.join(d, f"{w}.sh"), out]
    if who == "weir":
        return [a.weir, "run", os.path.join(d, f"{w}.yaml"), "--data-dir", out]
    return [os.path.join(VENV, "bin", "python"), os.path.join(d, "wl.py"), w, out]


def timed(cmd, cwd):
    """Wall seconds, CPU seconds of the process tree, and peak RSS in KiB of its largest process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, RUST_LOG="error"))
    _, err = p.communicate()
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measured in a fresh process below.
    return took, cpu


def peak_rss(cmd, cwd):
    """Peak RSS (KiB) of the largest process cmd's tree waited for, measured in a fresh Python."""
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe] + cmd, cwd=cwd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def ensure_venv(luigi, grpc):
    """bench/.venv with Luigi (W0-W3) and grpcio (restart's gRPC client), installed from PyPI."""
    py = os.path.join(VENV, "bin", "python")
    want = (["luigi"] if luigi else []) + (["grpcio"] if grpc else [])
    missing = [m for m in want if not (os.path.exists(py) and subprocess.run(
        [py, "-c", f"import {'grpc' if m == 'grpcio' else m}"], capture_output=True).returncode == 0)]
    if not missing:
        return
    print(f"installing {', '.join(missing)} into bench/.venv from PyPI ...", file=sys.stderr)
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q"] + missing, check=True)


PARTS = ["W0", "W1", "W2", "W3", "scale", "dist", "restart", "floor"]


def options():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weir", default=os.path.join(ROOT, "target", "release", "weir"), help="the weir binary")
    p.add_argument("--worker", help="the weir-worker binary (default: beside --weir)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of W0-W3")
    p.add_argument("--scale-rounds", type=int, default=3, help="rounds of scale and dist")
    p.add_argument("--restart-rounds", type=int, default=3, help="restarts on a copy of the fixture")
    p.add_argument("--rebuild-fixture", action="store_true", help="build the cached restart fixture again")
    p.add_argument("--no-luigi", action="store_true")
    p.add_argument("--only", help="comma-separated parts: " + ",".join(PARTS) + " (default: all)")
    p.add_argument("workloads", nargs="*", help="W0-W3 only (the older form of --only)")
    a = p.parse_args()
    a.weir = os.path.abspath(a.weir)
    a.worker = os.path.abspath(a.worker or os.path.join(os.path.dirname(a.weir), "weir-worker"))
    parts = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else (a.workloads or PARTS)
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown part {', '.join(bad)}: expected some of {', '.join(PARTS)}")
    a.parts = [x for x in PARTS if x in parts]
    a.workloads = [x for x in a.parts if x.startswith("W")]
    procs.require(a.weir, "weir")
    if {"dist", "restart"} & set(a.parts):
        procs.require(a.worker, "weir-worker")
    return a


def main():
    a = options()
    procs.install()
    need_venv = (a.workloads and not a.no_luigi) or "restart" in a.parts
    if need_venv:
        ensure_venv(luigi=bool(a.workloads) and not a.no_luigi, grpc="restart" in a.parts)
    load0 = os.getloadavg()[0]
    print(f"weir: {a.weir} ({subprocess.run([a.weir, '--version'], capture_output=True, text=True).stdout.strip()}); "
          f"parts: {','.join(a.parts)}; {os.cpu_count()} cores; load average (1 min) {load0:.2f} at start",
          flush=True)
    if a.workloads:
        workloads(a)
    med = None
    if {"scale", "dist"} & set(a.parts):
        res = scale.measure(a, a.parts, a.scale_rounds)
        med = scale.report(res, a.scale_rounds)
        sys.stdout.flush()
    if "restart" in a.parts:
        cmd = [os.path.join(VENV, "bin", "python"), os.path.join(HERE, "restart.py"), "--weir", a.weir,
               "--worker", a.worker, "--rounds", str(a.restart_rounds)] + (["--rebuild"] if a.rebuild_fixture else [])
        if procs.run_child_script(cmd) != 0:
            sys.exit("error: the restart part failed (above)")
    if "floor" in a.parts:
        call = floor()
        if med is not None and "dist" in a.parts:
            scale.split_floor(med, call)
    print(f"\nload average (1 min): {load0:.2f} at start, {os.getloadavg()[0]:.2f} at the end")


def floor():
    """Runs the floor bench (`cargo bench -p weir-engine --bench floor`, built on first use),
    prints its table and returns what one gRPC call between steps costs, in CPU ms."""
    print("\nfloor (cargo bench -p weir-engine --bench floor -- 1000)", flush=True)
    try:
        done = subprocess.run(["cargo", "bench", "-q", "-p", "weir-engine", "--bench", "floor", "--", "1000"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        sys.exit("error: the floor part needs cargo on PATH (it builds and runs the floor bench); "
                 "leave it out with --only")
    print(done.stdout, end="")
    if done.returncode != 0:
        sys.exit(f"error: the floor bench failed ({done.returncode}; its errors are above)")
    for line in done.stdout.splitlines():
        if line.startswith("a grpc call between steps"):
            return float(line.split()[5])
    sys.exit("error: the floor bench printed no `a grpc call between steps` line")


# How many times W0 runs in each round (see `workloads`).
W0_REPEAT = 3


def workloads(a):
    who = ["base", "weir"] + ([] if a.no_luigi else ["luigi"])
    load0 = os.getloadavg()[0]
    wall = {(w, c): [] for w in a.workloads for c in who}
    cpu = {(w, c): [] for w in a.workloads for c in who}
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "wl")
        write_workloads(d)
        n = 0
        for r in range(a.rounds):
            for w in a.workloads:
                order = who[r % len(who):] + who[:r % len(who)]
                # W0 is a few hundred milliseconds a round and its ratio moves most from run to
                # run (a one-step run is mostly process start, sensitive to what ran before):
                # it runs W0_REPEAT times a round.
                for c in order * (W0_REPEAT if w == "W0" else 1):
                    n += 1
                    out = os.path.join(tmp, f"out{n}")
                    os.makedirs(out)
                    t, u = timed(command(c, w, d, out, a), d)
                    wall[(w, c)].append(t)
                    cpu[(w, c)].append(u)
                    shutil.rmtree(out, ignore_errors=True)
                    # Each contender starts from a clean slate: writing back what the last one
                    # wrote and removed is not the next one's cost (weir's first fsync would
                    # otherwise commit the filesystem's journal of the previous run's removal).
                    os.sync()
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        rss = {}
        for w in a.workloads:
            for c in who:
                n += 1
                out = os.path.join(tmp, f"out{n}")
                os.makedirs(out)
                rss[(w, c)] = peak_rss(command(c, w, d, out, a), d)
                shutil.rmtree(out, ignore_errors=True)
    load1 = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in wall.items()}
    print(f"load average (1 min): {load0:.2f} before, {load1:.2f} after; {a.rounds} rounds (W0 {W0_REPEAT} times "
          f"each), medians\n")
    head = "| workload | " + " | ".join(f"{c} wall" for c in who) + " | weir / base |" + (" Luigi / weir (above 1: weir faster) |" if "luigi" in who else "")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for w in a.workloads:
        row = f"| {w} | " + " | ".join(f"{med[(w, c)]:.3f} s" for c in who)
        row += f" | {med[(w, 'weir')] / med[(w, 'base')]:.2f}x |"
        if "luigi" in who:
            row += f" {med[(w, 'luigi')] / med[(w, 'weir')]:.2f}x |"
        print(row)
    print()
    print("| workload | steps | " + " | ".join(f"{c} CPU/step" for c in who) + " | weir CPU / base CPU | "
          + " | ".join(f"{c} peak RSS" for c in who) + " |")
    print("|---" * (3 + 2 * len(who)) + "|")
    for w in a.workloads:
        s = STEPS[w]
        c_med = {c: statistics.median(cpu[(w, c)]) for c in who}
        row = f"| {w} | {s} | " + " | ".join(f"{c_med[c] / s * 1000:.2f} ms" for c in who)
        row += f" | {c_med['weir'] / c_med['base']:.2f}x | " + " | ".join(f"{rss[(w, c)] / 1024:.0f} MB" for c in who) + " |"
        print(row)


if __name__ == "__main__":
    main()
