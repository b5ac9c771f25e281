#!/usr/bin/env python3
"""Per-step cost of Prometheus metrics, on and off, in one invocation.

Each round starts a real `weir server` and a `weir-worker` (capacity 1) on loopback, submits
pipelines/bench/chain-100.yaml (100 `true` steps, one after another) and times
`weir start chain-100 --watch`. "on": the worker serves `--metrics` and a scraper reads both
`/metrics` endpoints every 100 ms (ten times as often as a usual 1 s..15 s scrape interval), so
the cost of rendering under load is in the number. "off": no worker listener and no scrapes.
The engine's own recording (counters and histograms updated as steps change state) has no
switch and is in both: its cost is a few atomic adds per step change (see BENCHMARKS.md).
Rounds alternate off/on to share the machine's noise; the ratio is of the medians.

Usage: python3 pipelines/bench/metrics.py [--bin target/debug] [--rounds N]
"""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(urls, stop, counts):
    while not stop.is_set():
        for u in urls:
            try:
                urllib.request.urlopen(u, timeout=5).read()
                counts[0] += 1
            except OSError:
                pass
        stop.wait(0.1)


def round_(bins, on):
    weir, worker = os.path.join(bins, "weir"), os.path.join(bins, "weir-worker")
    with tempfile.TemporaryDirectory() as tmp:
        port, mport = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, WEIR_SERVER=url, RUST_LOG="warn")
        server = subprocess.Popen([weir, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/d"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        args = [worker, "--engine", url, "--capacity", "1", "--docker", "off", "--gpus", "none",
                "--work-dir", f"{tmp}/w"]
        if on:
            args += ["--metrics", f"127.0.0.1:{mport}"]
        w = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        stop, counts, scraper = threading.Event(), [0], None
        try:
            for _ in range(100):
                if subprocess.run([weir, "submit", os.path.join(HERE, "chain-100.yaml")], env=env,
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            if on:
                urls = [f"{url}/metrics", f"http://127.0.0.1:{mport}/metrics"]
                scraper = threading.Thread(target=scrape, args=(urls, stop, counts))
                scraper.start()
            start = time.perf_counter()
            subprocess.run([weir, "start", "chain-100", "--watch"], env=env, check=True, capture_output=True)
            took = time.perf_counter() - start
        finally:
            stop.set()
            if scraper:
                scraper.join()
            w.terminate()
            server.terminate()
            w.wait()
            server.wait()
        return took / 100, counts[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    off, on, scrapes = [], [], 0
    for _ in range(a.rounds):
        off.append(round_(a.bin, False)[0])
        per, n = round_(a.bin, True)
        on.append(per)
        scrapes += n
    mo, mn = statistics.median(off), statistics.median(on)
    print(f"per step, metrics off: median {mo * 1000:.2f} ms  (rounds: {', '.join(f'{x * 1000:.2f}' for x in off)})")
    print(f"per step, metrics on:  median {mn * 1000:.2f} ms  (rounds: {', '.join(f'{x * 1000:.2f}' for x in on)})")
    print(f"scrapes during the 'on' rounds: {scrapes}")
    print(f"ratio on/off: {mn / mo:.3f}")


if __name__ == "__main__":
    main()
