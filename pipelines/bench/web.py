#!/usr/bin/env python3
"""The web UI's server time and liveness, on a real `weir server` (issue 14's benchmarks).

1. Runs page with many stored runs: a data folder holding N finished runs (default 10,000,
   five steps each) is made by running one real run with `weir run`, exporting the store,
   cloning that run N times with later start times, and importing the clones into a fresh
   folder (`weir store import`). Then `weir server` on it, and GET over loopback of:
     - /static/style.css        the baseline: the same HTTP path with no page to build
     - /runs                    the newest 50 runs
     - /runs?page=<token>       the 50 after the first 20 pages (a deep page)
     - /runs?pipeline=none      a filter that matches nothing: every run is scanned
   Medians and worst of R rounds, and each as a ratio to the baseline.
2. Live latency: `weir server` and `weir-worker`; a browser-like client holds /events open
   while K one-step runs run. Each step writes the time right before it exits; the latency is
   from then to the `succeeded` event arriving on the stream (worker report, engine commit,
   broadcast and SSE together).

    cargo build -p weir-cli -p weir-worker          # or --release and --weir target/release/weir
    python3 pipelines/bench/web.py                  # --runs 10000 --rounds 20 --live 10
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {limit}s")

def get(port, path):
    """One GET over a fresh connection; (seconds, status, body)."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    took = time.perf_counter() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return took, status, body.decode("utf-8", "replace")

def make_store(weir, work, n):
    src = os.path.join(work, "src")
    pipeline = os.path.join(work, "pipeline.yaml")
    with open(pipeline, "w") as f:
        f.write("name: nightly\nsteps:\n" + "".join(
            f"  s{i}:\n    run: echo step {i}\n" + (f"    needs: [s{i-1}]\n" if i else "") for i in range(5)))
    subprocess.run([weir, "run", pipeline, "--data-dir", src], check=True, capture_output=True)
    dump = subprocess.run([weir, "store", "export", "--data-dir", src], check=True, capture_output=True).stdout
    lines = [json.loads(l) for l in dump.decode().splitlines() if l]
    run = next(l for l in lines if l["tree"] == "runs")
    rid = run["value"]["id"]; rhex = rid.encode().hex()
    out_path = os.path.join(work, "many.jsonl")
    with open(out_path, "w") as out:
        for l in lines:
            if not l["key"].startswith(rhex):
                out.write(json.dumps(l) + "\n")
        for i in range(n):
            nid = f"{rid}-{i:05d}"; nhex = nid.encode().hex()
            for l in lines:
                if not l["key"].startswith(rhex):
                    continue
                c = json.loads(json.dumps(l))
                c["key"] = nhex + l["key"][len(rhex):]
                if l["tree"] == "runs":
                    c["value"]["id"] = nid
                    c["value"]["created_at"] = run["value"]["created_at"] + i * 1000
                    if c["value"].get("finished_at"):
                        c["value"]["finished_at"] = c["value"]["created_at"] + 500
                out.write(json.dumps(c) + "\n")
    dst = os.path.join(work, "many")
    subprocess.run([weir, "store", "import", "--data-dir", dst, out_path], check=True, capture_output=True)
    return dst

def pages(weir, data, rounds):
    port = free_port()
    server = subprocess.Popen([weir, "server", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        get(port, "/runs")  # warm: the store's pages in memory, as on a server in use
        token = ""
        for _ in range(20):
            _, _, body = get(port, "/runs?page=" + urllib.parse.quote(token))
            marker = 'href="/runs?pipeline=&amp;state=&amp;trigger=&amp;page='
            older = [p for p in body.split(marker)[1:] if True]
            if not older:
                break
            token = urllib.parse.unquote(older[-1].split('"')[0])
        cases = [("baseline: /static/style.css", "/static/style.css"), ("/runs (newest 50)", "/runs"),
                 ("/runs deep page (after 20 pages)", "/runs?page=" + urllib.parse.quote(token)),
                 ("/runs?pipeline=none (scans all)", "/runs?pipeline=none")]
        times = {name: [] for name, _ in cases}
        for _ in range(rounds):  # interleaved, so load on the machine hits every case alike
            for name, path in cases:
                took, status, body = get(port, path)
                assert status == 200, (path, status, body[:300])
                times[name].append(took)
        base = statistics.median(times[cases[0][0]])
        print(f"\n| request | median | worst | median / baseline |\n|---|---:|---:|---:|")
        for name, _ in cases:
            t = times[name]
            print(f"| {name} | {statistics.median(t)*1000:.1f} ms | {max(t)*1000:.1f} ms | {statistics.median(t)/base:.1f} |")
    finally:
        server.terminate(); server.wait()

def live(weir, worker, work, k):
    port = free_port()
    data = os.path.join(work, "live")
    server = subprocess.Popen([weir, "server", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wk = None
    try:
        wait_port(port)
        wk = subprocess.Popen([worker, "--engine", f"http://127.0.0.1:{port}", "--work-dir", os.path.join(work, "wk")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stamp = os.path.join(work, "stamp")
        folder = os.path.join(work, "one"); os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "pipeline.yaml"), "w") as f:
            f.write(f"name: one\nsteps:\n  only:\n    run: python3 -c 'import time; print(time.time())' > {stamp}.$WEIR_RUN_ID\n")
        url = f"http://127.0.0.1:{port}"
        subprocess.run([weir, "submit", folder, "--server", url], check=True, capture_output=True)
        seen = {}
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        def reader():
            buf = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                now = time.time()
                buf += chunk
                for line in buf.split(b"\n")[:-1]:
                    if line.startswith(b"data:"):
                        ev = json.loads(line[5:])
                        if ev.get("state") == "succeeded":
                            seen[ev["run"]] = now
                buf = buf.split(b"\n")[-1]
        threading.Thread(target=reader, daemon=True).start()
        lat = []
        for _ in range(k):
            out = subprocess.run([weir, "start", "one", "--server", url], check=True, capture_output=True, text=True)
            rid = next(w for w in (out.stdout + out.stderr).split() if w.startswith("one-"))
            end = time.time() + 30
            while rid not in seen and time.time() < end:
                time.sleep(0.01)
            with open(f"{stamp}.{rid}") as f:
                exited = float(f.read())
            lat.append(seen[rid] - exited)
        print(f"\n| step exit → `succeeded` on /events | median | worst | runs |\n|---|---:|---:|---:|")
        print(f"| latency | {statistics.median(lat)*1000:.0f} ms | {max(lat)*1000:.0f} ms | {k} |")
    finally:
        if wk: wk.terminate(); wk.wait()
        server.terminate(); server.wait()

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default=os.path.join(ROOT, "target/debug/weir"))
    ap.add_argument("--worker", default=None)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--live", type=int, default=10)
    a = ap.parse_args()
    worker = a.worker or os.path.join(os.path.dirname(a.weir), "weir-worker")
    work = tempfile.mkdtemp(prefix="weir-web-bench-")
    try:
        t0 = time.time()
        data = make_store(a.weir, work, a.runs)
        print(f"made a store of {a.runs} runs in {time.time()-t0:.0f}s ({a.weir})")
        pages(a.weir, data, a.rounds)
        live(a.weir, worker, work, a.live)
    finally:
        shutil.rmtree(work, ignore_errors=True)

main()
