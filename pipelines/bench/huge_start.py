#!/usr/bin/env python3
"""How much a huge StartRun slows everyone else: a `weir server` on loopback, a small run to
ask about, and then `weir start` of a 100,000-instance pipeline (ten steps with a 100 x 100
matrix each: the default limits) while a second client keeps asking `weir status` of the
small run. Reports the status latency with nothing else going on (the baseline, measured in
the same invocation) against the worst and median latency while the huge run is being
started, and their ratios. Before planning moved outside the engine's lock (issue 12, item
11), every call waited for the whole StartRun.

Usage: python3 pipelines/bench/huge_start.py [--weir target/debug/weir] [--rounds N]
Build first: `cargo build -p weir-cli` (or --release, and pass --weir target/release/weir).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def huge_yaml():
    values = ", ".join(str(i) for i in range(100))
    steps = "".join(f"  s{s}:\n    run: 'true'\n    matrix: {{a: [{values}], b: [{values}]}}\n" for s in range(10))
    return "name: huge\nsteps:\n" + steps


SMALL = "name: small\nsteps:\n  a: {run: 'true'}\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}")
    return time.perf_counter() - t, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", default=os.path.join(ROOT, "target", "debug", "weir"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("huge", huge_yaml()), ("small", SMALL)):
            os.makedirs(os.path.join(tmp, name))
            with open(os.path.join(tmp, name, "pipeline.yaml"), "w") as f:
                f.write(text)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [args.weir, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "data")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = [args.weir, "--server", url]
            for _ in range(100):
                if subprocess.run(client + ["pipelines"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            for name in ("huge", "small"):
                subprocess.run(client + ["submit", os.path.join(tmp, name)], check=True, capture_output=True)
            out = subprocess.run(client + ["start", "small"], check=True, capture_output=True, text=True).stdout
            small = next(w for w in out.split() if w.startswith("small-"))
            status = client + ["status", small]
            print("| round | status alone (median) | StartRun of 100,000 | status during it: median | worst | worst / alone |")
            print("|---|---:|---:|---:|---:|---:|")
            for r in range(1, args.rounds + 1):
                alone = statistics.median(timed(status)[0] for _ in range(20))
                during = []
                done = threading.Event()
                took = []

                def start():
                    took.append(timed(client + ["start", "huge"])[0])
                    done.set()

                t = threading.Thread(target=start)
                t.start()
                while not done.is_set():
                    during.append(timed(status)[0])
                t.join()
                worst = max(during)
                print(
                    f"| {r} | {alone * 1000:.0f} ms | {took[0]:.2f} s | "
                    f"{statistics.median(during) * 1000:.0f} ms | {worst * 1000:.0f} ms | {worst / alone:.1f} |"
                )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
