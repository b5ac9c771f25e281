"""Issue 19's scale and distributed figures: the 1,000-step chain and the 1 -> 10,000 -> 1
fan-out of pipelines/bench/, three ways, interleaved round by round (rotating order):

  shell  a shell script running the same commands one after another (`sh -c true` per step)
  run    `weir run FILE --data-dir <fresh>`: engine, store and embedded worker in one process
  dist   a fresh `weir server` (loopback, fresh data folder) and a separate `weir-worker`
         (`--capacity` = cores, as `weir run` defaults to), driven by `weir submit`, then
         `weir start` and `weir status RUN --watch`
         The worker is at its defaults: it holds an attempt ahead of each step slot (one held
         over 250 ms goes back to the engine; see `weir-worker --help`)
  dist-ahead0  the same with `weir-worker --ahead 0`: nothing held ahead (the default before
         attempts held too long were given back)

What is measured, per round:
  wall   shell, run: the whole process. dist: from `weir start` until `weir status --watch`
         returns (server and worker are already up, the pipeline submitted)
  CPU    user + system of the measured processes and every child they reaped (the steps):
         shell: `sh` and its steps; run: the `weir run` process; dist: the server and the
         worker from their start to their SIGTERM stop, startup and submit included; the CLI
         calls that drive them are not counted
  RSS    peak resident set: run: the `weir run` process (engine + embedded worker); dist: the
         server's peak plus the worker's peak (each from wait4)

Printed: medians of each, CPU per step, steps/s, the CPU ratios run/shell and dist/run, the
dist/run ratio of steps/s, against issue 19's goals.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import procs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOADS = {"chain-1000": 1000, "fanout-10000": 10002}


def _pipeline_dir(tmp, name):
    """The workload alone in a folder: `weir submit` uploads the file's folder as its bundle."""
    d = os.path.join(tmp, "pipe-" + name)
    if not os.path.isdir(d):
        os.makedirs(d)
        shutil.copy(os.path.join(ROOT, "pipelines", "bench", name + ".yaml"), os.path.join(d, "pipeline.yaml"))
        with open(os.path.join(d, "shell.sh"), "w") as f:
            f.write("set -e\n" + "sh -c true\n" * WORKLOADS[name])
    return d


def shell(name, tmp, a):
    d = _pipeline_dir(tmp, name)
    return procs.run_timed(["sh", os.path.join(d, "shell.sh")], cwd=d)


def weir_run(name, tmp, a):
    d = _pipeline_dir(tmp, name)
    data = tempfile.mkdtemp(dir=tmp, prefix="run-")
    try:
        return procs.run_timed([a.weir, "run", os.path.join(d, "pipeline.yaml"), "--data-dir", data], cwd=d,
                               env=dict(os.environ, RUST_LOG="error"))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def start_server(weir, data, log):
    """A `weir server` on a free loopback port; returns (process, url) once it listens."""
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # the server's own default: info
    server = procs.start([weir, "server", "--listen", "127.0.0.1:0", "--data-dir", data],
                         stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = server.stdout.readline()
    if "listening on" not in line:
        procs.stop(server)
        sys.exit(f"error: weir server did not start (first line: {line.strip()!r}); its log: {log.name}")
    return server, line.split()[-1]


def start_worker(worker_bin, url, work, capacity, log, ahead=None):
    held = [] if ahead is None else ["--ahead", str(ahead)]
    return procs.start([worker_bin, "--engine", url, "--name", "bench", "--capacity", str(capacity), *held,
                        "--docker", "off", "--gpus", "none", "--work-dir", work, "--grace", "1"],
                       stdout=subprocess.DEVNULL, stderr=log)


def cli(weir, *args, quiet=False, timeout=1800):
    """Runs a weir client command; its stdout (None when quiet: a watch prints a line a step)."""
    try:
        done = subprocess.run([weir, *args], stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.exit(f"error: weir {' '.join(args)} did not end within {timeout} s")
    if done.returncode != 0:
        sys.exit(f"error: weir {' '.join(args)} failed ({done.returncode}):\n{(done.stdout or '')[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def dist(name, tmp, a, ahead=None):
    d = _pipeline_dir(tmp, name)
    data = tempfile.mkdtemp(dir=tmp, prefix="dist-")
    with open(os.path.join(data, "server.log"), "w") as slog, open(os.path.join(data, "worker.log"), "w") as wlog:
        server, url = start_server(a.weir, os.path.join(data, "data"), slog)
        worker = start_worker(a.worker, url, os.path.join(data, "work"), os.cpu_count() or 1, wlog, ahead)
        try:
            cli(a.weir, "submit", os.path.join(d, "pipeline.yaml"), "--server", url)
            t0 = time.perf_counter()
            run = cli(a.weir, "start", name, "--server", url).split()[0]
            cli(a.weir, "status", run, "--watch", "--server", url, quiet=True)
            wall = time.perf_counter() - t0
        except SystemExit:
            log_tails(slog.name, wlog.name)
            raise
        finally:
            wru = procs.stop(worker)
            sru = procs.stop(server)
    shutil.rmtree(data, ignore_errors=True)
    return wall, procs.cpu(wru) + procs.cpu(sru), wru.ru_maxrss + sru.ru_maxrss


def log_tails(*paths, lines=20):
    """Prints the end of each log to stderr: the temporary folder holding them goes on exit."""
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            continue
        print(f"--- last lines of {os.path.basename(path)}:\n" + "".join(tail), file=sys.stderr)


def dist_ahead0(name, tmp, a):
    return dist(name, tmp, a, ahead=0)


HOW = {"shell": shell, "run": weir_run, "dist": dist, "dist-ahead0": dist_ahead0}
WHO = list(HOW)


def measure(a, parts, rounds):
    """parts: a subset of {"scale", "dist"}. Returns {(workload, who): [(wall, cpu, rss_kib)]}."""
    who = ["shell", "run"] + (["dist", "dist-ahead0"] if "dist" in parts else [])
    res = {(w, c): [] for w in WORKLOADS for c in who}
    with tempfile.TemporaryDirectory(prefix="weir-scale-") as tmp:
        for r in range(rounds):
            for w in WORKLOADS:
                for c in who[r % len(who):] + who[:r % len(who)]:
                    res[(w, c)].append(HOW[c](w, tmp, a))
            print(f"scale round {r + 1}/{rounds} done", file=sys.stderr)
    return res


def _goal(ok):
    return "met" if ok else "**missed**"


def report(res, rounds):
    who = sorted({c for _, c in res}, key=WHO.index)
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in res.items()}
    print(f"\nscale ({rounds} rounds, medians; CPU = user+sys of the measured processes and the steps they reaped)\n")
    print("| workload | steps | how | wall | steps/s | CPU/step | CPU / shell's | peak RSS |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for w, n in WORKLOADS.items():
        for c in who:
            wall, cpu, rss = med[(w, c)]
            ratio = cpu / med[(w, "shell")][1]
            print(f"| {w} | {n} | {c} | {wall:.2f} s | {n / wall:,.0f} | {cpu / n * 1000:.2f} ms | {ratio:.2f}x "
                  f"| {rss / 1024:.0f} MB |")
    print("\ngoals (issue 19):")
    for w, n in WORKLOADS.items():
        run = med[(w, "run")]
        cr = run[1] / med[(w, "shell")][1]
        print(f"- {w}: `weir run` CPU/step {cr:.2f}x the shell's (goal <= 2x): {_goal(cr <= 2)}")
        if w.startswith("fanout"):
            print(f"- {w}: `weir run` {n / run[0]:,.0f} steps/s (goal >= 1,200): {_goal(n / run[0] >= 1200)}; "
                  f"peak RSS {run[2] / 1024:.0f} MB (goal <= 100 MB): {_goal(run[2] <= 100 * 1024)}")
        for c, how in (("dist", "server + worker"), ("dist-ahead0", "server + worker --ahead 0")):
            if c not in who:
                continue
            dd = med[(w, c)]
            cpu_r, wall_r = dd[1] / run[1], dd[0] / run[0]
            # The goal is for the worker at its defaults; `--ahead 0` is shown for comparison.
            verdict = (f"(goal: both within 1.25x): {_goal(cpu_r <= 1.25 and wall_r <= 1.25)}" if c == "dist"
                       else "(for comparison, not a goal: the default before holding ahead)")
            print(f"- {w}: {how} CPU/step {cpu_r:.2f}x `weir run`'s, wall {wall_r:.2f}x its "
                  f"({n / dd[0]:,.0f} steps/s) {verdict}; peak RSS server + worker {dd[2] / 1024:.0f} MB")
            if c == "dist":
                # "The same figures within 1.25x" read against the goals' own figures rather
                # than `weir run`'s: CPU/step at most 2.5x the shell's, the fan-out at >= 960 steps/s.
                sh = dd[1] / med[(w, "shell")][1]
                rate = f", {n / dd[0]:,.0f} steps/s (>= 960)" if w.startswith("fanout") else ""
                ok = sh <= 2.5 and (not w.startswith("fanout") or n / dd[0] >= 960)
                print(f"  against the goals' figures x 1.25 instead: CPU/step {sh:.2f}x the shell's (<= 2.5x)"
                      f"{rate}: {_goal(ok)}")
    return med


def split_floor(med, call_ms):
    """Prints the least `dist` can cost on the chain against `weir run`: `weir run`'s CPU a step
    plus one gRPC call between steps (`call_ms`, from the floor bench of the same invocation),
    beside what dist measured. The chain only: there each call comes after a step, with both
    processes idle while it ran; in the fan-out, calls overlap the other slot's running step."""
    w, n = "chain-1000", WORKLOADS["chain-1000"]
    if (w, "dist") not in med:
        return
    run, dd = med[(w, "run")][1] / n * 1000, med[(w, "dist")][1] / n * 1000
    print(f"\nthe split's floor on {w}: `weir run`'s CPU/step + one gRPC call between steps, measured alone by "
          f"the floor bench: {run:.3f} + {call_ms:.3f} ms = {(run + call_ms) / run:.2f}x `weir run`'s; server + "
          f"worker measured {dd / run:.2f}x ({dd:.3f} ms, {dd - run - call_ms:+.3f} ms against the floor)")
