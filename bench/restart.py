#!/usr/bin/env python3
"""Issue 19's restart figures: `weir server` on a data folder holding 10,000 finished runs and
100 unfinished ones. Run by bench/speed.py (`--only restart`) with bench/.venv's Python, which
has grpcio; it can be run alone the same way:

    bench/.venv/bin/python bench/restart.py --weir BIN --worker BIN [--rounds 3] [--rebuild]

The fixture is built once and cached in bench/.cache/restart-10000-100/data (with a stamp
naming the weir version that built it; --rebuild makes it again): a server and a worker on
loopback; 10,000 runs of a one-step no-op pipeline started through gRPC StartRun (64 in flight)
and run to their end; then 100 runs of a pipeline whose step sleeps 120 s; once all 100 are
listed unfinished and the worker has had 2 s to lease, the server is killed with SIGKILL, then
the worker is stopped. Each round restarts a server on a fresh copy of that folder, so every
round sees the same crash.

What is timed (each round, interleaved with the same on an empty data folder as the baseline):
  serving   from spawning `weir server --data-dir COPY --listen 127.0.0.1:0` until its first
            ListRuns (page of 50) over gRPC answers: process start, opening the store, the
            recovery of unfinished runs (which the server finishes before it binds its port),
            binding, a new HTTP/2 connection and the call. Checked after it: the server's log
            says it resumed 100 runs, and ListRuns filtered on queued + running lists 100.
  list-50   on a warm channel, the median of 20 ListRuns calls for the newest 50 runs (after 3
            warm-up calls): the RPC alone, as the client sees it, Python's encoding included.
  cli-50    the median of 20 `weir runs --limit 50 --server URL` processes minus the median of
            20 `weir --version` processes (the process floor): connecting, the RPC, printing.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

import procs
from scale import cli, log_tails, start_server, start_worker

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "restart-10000-100")
FINISHED, UNFINISHED = 10_000, 100
QUEUED, RUNNING = 1, 2


# Protocol buffers by hand: the few fields of weir.v1 this needs (client.proto, common.proto).
def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, wire, payload):
    return _varint(num << 3 | wire) + payload


def _string(num, s):
    b = s.encode() if isinstance(s, str) else s
    return _field(num, 2, _varint(len(b)) + b)


def _fields(buf):
    """(number, value) of each field: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unexpected wire type {wire} in a weir.v1 message")
        yield num, val


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


class Client:
    """ListRuns and StartRun of weir.v1.WeirClient on one channel, messages as raw bytes."""

    def __init__(self, url):
        self.channel = grpc.insecure_channel(url.split("://", 1)[-1])
        path = "/weir.v1.WeirClient/"
        self._list = self.channel.unary_unary(path + "ListRuns")
        self.start = self.channel.unary_unary(path + "StartRun")

    def list_runs(self, page_size, states=(), token="", timeout=10):
        req = _field(3, 0, _varint(page_size))
        if states:
            packed = b"".join(_varint(s) for s in states)
            req += _field(2, 2, _varint(len(packed)) + packed)
        if token:
            req += _string(4, token)
        runs, next_token = [], ""
        for num, val in _fields(self._list(req, timeout=timeout)):
            if num == 1:
                run = dict(_fields(val))
                runs.append((run.get(1, b"").decode(), run.get(4, 0)))
            elif num == 2:
                next_token = val.decode()
        return runs, next_token

    def count(self, states):
        n, token = 0, ""
        while True:
            runs, token = self.list_runs(500, states, token)
            n += len(runs)
            if not token:
                return n

    def close(self):
        self.channel.close()


def start_runs(client, name, n, window=64):
    req = _string(1, name)
    pending = []
    for _ in range(n):
        pending.append(client.start.future(req, timeout=60))
        if len(pending) >= window:
            pending.pop(0).result()
    for f in pending:
        f.result()


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"error: building the restart fixture: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


def version(weir):
    return subprocess.run([weir, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def kill_under(folder):
    """SIGKILLs the processes whose working folder is under `folder`: sleeper steps the stopped
    worker may have left in their own sessions."""
    folder = os.path.realpath(folder) + os.sep
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (os.readlink(f"/proc/{pid}/cwd") + os.sep).startswith(folder):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def build_fixture(a):
    """Makes CACHE/data: FINISHED finished runs, UNFINISHED unfinished ones, server killed -9."""
    shutil.rmtree(CACHE, ignore_errors=True)
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    for old in os.listdir(os.path.dirname(CACHE)):
        if old.startswith("building-"):  # what an interrupted build left
            shutil.rmtree(os.path.join(os.path.dirname(CACHE), old), ignore_errors=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(CACHE), prefix="building-")
    t0 = time.perf_counter()
    for name, run in (("noop", "true"), ("sleeper", "exec sleep 120")):
        os.makedirs(os.path.join(tmp, "pipe", name))
        with open(os.path.join(tmp, "pipe", name, "pipeline.yaml"), "w") as f:
            f.write(f'name: {name}\nsteps:\n  only:\n    run: "{run}"\n')
    with open(os.path.join(tmp, "server.log"), "w") as slog, open(os.path.join(tmp, "worker.log"), "w") as wlog:
        server, url = start_server(a.weir, os.path.join(tmp, "data"), slog)
        worker = start_worker(a.worker, url, os.path.join(tmp, "work"), 4, wlog)
        client = Client(url)
        try:
            for name in ("noop", "sleeper"):
                cli(a.weir, "submit", os.path.join(tmp, "pipe", name, "pipeline.yaml"), "--server", url)
            print(f"restart fixture: starting {FINISHED:,} no-op runs ...", file=sys.stderr)
            start_runs(client, "noop", FINISHED)
            wait_until(f"{FINISHED:,} no-op runs finishing", lambda: not client.list_runs(1, (QUEUED, RUNNING))[0],
                       1800)
            start_runs(client, "sleeper", UNFINISHED)
            wait_until(f"{UNFINISHED} sleeper runs listed unfinished",
                       lambda: client.count((QUEUED, RUNNING)) == UNFINISHED, 60)
            time.sleep(2)  # the worker leases some: the restart sees held attempts too
        except BaseException:
            log_tails(slog.name, wlog.name)
            raise
        finally:
            client.close()
            procs.stop(server, signal.SIGKILL)
            procs.stop(worker, grace=5)
    kill_under(os.path.join(tmp, "work"))
    shutil.rmtree(os.path.join(tmp, "work"), ignore_errors=True)
    with open(os.path.join(tmp, "stamp.json"), "w") as f:
        json.dump({"finished": FINISHED, "unfinished": UNFINISHED, "weir": version(a.weir),
                   "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "seconds": round(time.perf_counter() - t0, 1)}, f)
    os.rename(tmp, CACHE)
    print(f"restart fixture built in {time.perf_counter() - t0:.0f} s: {CACHE}", file=sys.stderr)


def fixture(a):
    stamp = os.path.join(CACHE, "stamp.json")
    if a.rebuild or not os.path.exists(stamp):
        build_fixture(a)
    with open(stamp) as f:
        meta = json.load(f)
    if meta["weir"] != version(a.weir):
        print(f"note: the restart fixture was built by {meta['weir']}, this is {version(a.weir)} "
              "(--rebuild makes it again)", file=sys.stderr)
    return meta


def median_wall(cmd, n=20):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def one(a, source, tmp):
    """One restart on a copy of `source` (None: an empty folder). Returns the figures."""
    data = tempfile.mkdtemp(dir=tmp, prefix="data-")
    if source:
        shutil.rmtree(data)
        shutil.copytree(source, data)
    log_path = os.path.join(tmp, "server.log")
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        server, url = start_server(a.weir, data, log)
        client = Client(url)
        try:
            while True:
                try:
                    client.list_runs(50, timeout=5)
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE or time.perf_counter() - t0 > 30:
                        raise
            serving = time.perf_counter() - t0
            unfinished = client.count((QUEUED, RUNNING))
            for _ in range(3):
                client.list_runs(50)
            calls = []
            for _ in range(20):
                t = time.perf_counter()
                runs, _ = client.list_runs(50)
                calls.append(time.perf_counter() - t)
            listed = len(runs)
            cli_50 = median_wall([a.weir, "runs", "--limit", "50", "--server", url]) - median_wall([a.weir, "--version"])
        finally:
            client.close()
            procs.stop(server)
    with open(log_path) as f:
        m = [re.search(r"resumed\W+(\d+)", line) for line in f if "resumed unfinished runs" in line]
    resumed = int(m[-1].group(1)) if m and m[-1] else 0
    shutil.rmtree(data, ignore_errors=True)
    return {"serving": serving, "list_50": statistics.median(calls), "cli_50": cli_50, "listed": listed,
            "unfinished": unfinished, "resumed": resumed}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weir", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rebuild", action="store_true", help="build the cached fixture again")
    a = p.parse_args()
    procs.install()
    procs.require(a.weir, "weir")
    procs.require(a.worker, "weir-worker")
    meta = fixture(a)
    res = {"full": [], "empty": []}
    with tempfile.TemporaryDirectory(prefix="weir-restart-") as tmp:
        for r in range(a.rounds):
            for kind in (["full", "empty"] if r % 2 == 0 else ["empty", "full"]):
                res[kind].append(one(a, os.path.join(CACHE, "data") if kind == "full" else None, tmp))
            print(f"restart round {r + 1}/{a.rounds} done", file=sys.stderr)
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in res.items()}
    full, empty = med["full"], med["empty"]
    print(f"\nrestart ({a.rounds} rounds, medians; fixture: {meta['finished']:,} finished + {meta['unfinished']} "
          f"unfinished runs, built {meta['built']} by {meta['weir']})\n")
    print("| data folder | start to first ListRuns answer | resumed (log) | listed unfinished | list newest 50 (RPC) "
          "| `weir runs --limit 50` minus process floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, label in (("empty", "empty (baseline)"), ("full", "10,000 + 100")):
        m = med[k]
        print(f"| {label} | {m['serving'] * 1000:.0f} ms | {m['resumed']:.0f} | {m['unfinished']:.0f} "
              f"| {m['list_50'] * 1000:.2f} ms | {m['cli_50'] * 1000:.1f} ms |")
    ok_serve = full["serving"] < 1 and full["resumed"] == UNFINISHED and full["unfinished"] == UNFINISHED
    print(f"\ngoals (issue 19):\n- serving and resumed in {full['serving']:.3f} s, {full['serving'] / empty['serving']:.2f}x "
          f"an empty folder's (goal < 1 s, all {UNFINISHED} resumed): {'met' if ok_serve else '**missed**'}")
    print(f"- newest 50 listed in {full['list_50'] * 1000:.2f} ms over gRPC ({full['listed']:.0f} runs a page) "
          f"(goal < 10 ms): {'met' if full['list_50'] < 0.010 else '**missed**'}")


if __name__ == "__main__":
    main()
