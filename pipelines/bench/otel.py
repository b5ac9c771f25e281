#!/usr/bin/env python3
"""Per-step cost of OpenTelemetry traces, on and off, in one invocation.

Each round starts a real `weir server` and a `weir-worker` (capacity 1) on loopback, submits
pipelines/bench/chain-100.yaml (100 `true` steps, one after another) and times
`weir start chain-100 --watch`. "off": no --otlp-endpoint (no exporter, no span built).
"on": both processes export to a real OTLP/gRPC receiver (the otlp_sink example of the tests
crate, which counts the spans it gets). "unreachable": both point at a port where nothing
listens, so every export fails (the cost of a collector that is down). Rounds rotate the
modes to share the machine's noise; the ratios are of the medians.

"without" (only with --without DIR): the binaries in DIR, built from a commit without the
tracing code at all (the parent of the merge that added it, see BENCHMARKS.md), run as "off".
"off" against "without" is what the tracing code costs when it is not used.

Usage: cargo build -p weir-cli -p weir-worker && cargo build -p weir-tests --example otlp_sink
       python3 pipelines/bench/otel.py [--bin target/debug] [--rounds N] [--without DIR]
"""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def round_(bins, mode, without=None):
    if mode == "without":
        bins, mode = without, "off"
    weir, worker = os.path.join(bins, "weir"), os.path.join(bins, "weir-worker")
    sink, endpoint = None, None
    if mode == "on":
        sink = subprocess.Popen([os.path.join(bins, "examples", "otlp_sink")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        endpoint = sink.stdout.readline().split()[-1]
    elif mode == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, WEIR_SERVER=url, RUST_LOG="error")
        env.pop("WEIR_OTLP_ENDPOINT", None)
        otlp = ["--otlp-endpoint", endpoint] if endpoint else []
        server = subprocess.Popen([weir, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/d"] + otlp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        w = subprocess.Popen([worker, "--engine", url, "--capacity", "1", "--docker", "off", "--gpus", "none",
                              "--work-dir", f"{tmp}/w"] + otlp,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            for _ in range(100):
                if subprocess.run([weir, "submit", os.path.join(HERE, "chain-100.yaml")], env=env,
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            start = time.perf_counter()
            subprocess.run([weir, "start", "chain-100", "--watch"], env=env, check=True, capture_output=True)
            took = time.perf_counter() - start
        finally:
            w.terminate()
            server.terminate()
            w.wait()
            server.wait()
    spans = None
    if sink:
        out, _ = sink.communicate("")
        spans = int(out.split()[-1])
    return took / 100, spans


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--without", help="a folder with weir and weir-worker built without the tracing code")
    p.add_argument("--modes", help="comma-separated subset of off,on,unreachable,without")
    a = p.parse_args()
    p_modes = a.modes.split(",") if a.modes else ["off", "on", "unreachable"] + (["without"] if a.without else [])
    modes = p_modes
    per = {m: [] for m in modes}
    spans = []
    for _ in range(a.rounds):
        for m in modes:
            took, n = round_(a.bin, m, a.without)
            per[m].append(took)
            if n is not None:
                spans.append(n)
    med = {m: statistics.median(v) for m, v in per.items()}
    for m in modes:
        print(f"per step, traces {m:<11}: median {med[m] * 1000:.2f} ms  "
              f"(rounds: {', '.join(f'{x * 1000:.2f}' for x in per[m])})")
    print(f"spans received per 'on' round: {spans}")
    if "on" in med:
        print(f"ratio on/off: {med['on'] / med['off']:.3f}")
    if "unreachable" in med:
        print(f"ratio unreachable/off: {med['unreachable'] / med['off']:.3f}")
    if "without" in med:
        print(f"ratio off/without: {med['off'] / med['without']:.3f}")


if __name__ == "__main__":
    main()
