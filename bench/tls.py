#!/usr/bin/env python3
"""The cost of TLS on a step's overhead, as a ratio against plain text, in one run.

A chain of N `true` steps (default 40) runs on a real `weir server` with one real
`weir-worker`, both on loopback, in two modes interleaved round by round so they share the
machine's noise:
  plain  `weir server` without TLS, the worker on http://
  mtls   `weir server --tls-cert --tls-key --client-ca`, the worker on https:// with its own
         client certificate, the CLI with --ca (what docs/tls.md recommends)
A fresh server, data folder and worker per round; the time is from `weir start` to the end of
`weir status RUN --watch`, divided by N: the per-step overhead (scheduling, lease, reports,
log upload, each a gRPC call over the transport). Certificates are made with openssl.

Prints the median per-step time of each mode, the ratio mtls / plain, and the 1-minute load
average before and after (this 2-core machine is shared).

Usage: cargo build --release -p weir-cli -p weir-worker
       python3 bench/tls.py [--rounds 5] [--steps 40] [--bin target/release]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time


def sh(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def certs(d):
    ca = lambda *a: os.path.join(d, *a)
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
       "-keyout", ca("ca.key"), "-out", ca("ca.pem"), "-subj", "/CN=bench CA",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in [("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("worker", "extendedKeyUsage=clientAuth")]:
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", ca(name + ".key"), "-out", ca(name + ".csr"), "-subj", "/CN=" + name)
        with open(ca(name + ".ext"), "w") as f:
            f.write(ext + "\n")
        sh("openssl", "x509", "-req", "-in", ca(name + ".csr"), "-CA", ca("ca.pem"), "-CAkey", ca("ca.key"),
           "-CAcreateserial", "-days", "2", "-out", ca(name + ".pem"), "-extfile", ca(name + ".ext"))
        os.chmod(ca(name + ".key"), 0o600)


def pipeline(d, n):
    os.makedirs(d, exist_ok=True)
    lines = ["name: chain", "steps:"]
    for i in range(n):
        lines.append(f"  s{i}:")
        lines.append("    run: \"true\"")
        if i:
            lines.append(f"    needs: [s{i - 1}]")
    with open(os.path.join(d, "pipeline.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def one(mode, a, pki, pipe, tmp):
    weir, worker_bin = os.path.join(a.bin, "weir"), os.path.join(a.bin, "weir-worker")
    p = lambda n: os.path.join(pki, n)
    data = tempfile.mkdtemp(dir=tmp)
    tls = ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--client-ca", p("ca.pem")]
    server = subprocess.Popen([weir, "server", "--listen", "127.0.0.1:0", "--data-dir", data]
                              + (tls if mode == "mtls" else []),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = server.stdout.readline().split()[-1]
    conn = ["--server", url] + (["--ca", p("ca.pem")] if mode == "mtls" else [])
    wtls = ["--ca", p("ca.pem"), "--tls-cert", p("worker.pem"), "--tls-key", p("worker.key")]
    worker = subprocess.Popen([worker_bin, "--engine", url, "--name", "w", "--capacity", "1", "--docker", "off",
                               "--gpus", "none", "--work-dir", os.path.join(data, "work")]
                              + (wtls if mode == "mtls" else []),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run([weir, "submit", pipe] + conn, check=True, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        run = subprocess.run([weir, "start", "chain"] + conn, check=True, capture_output=True,
                             text=True).stdout.split()[0]
        subprocess.run([weir, "status", run, "--watch"] + conn, check=True, stdout=subprocess.DEVNULL)
        return (time.perf_counter() - t0) / a.steps
    finally:
        for proc in (worker, server):
            proc.terminate()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--bin", default="target/release")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        pki = os.path.join(tmp, "pki")
        os.makedirs(pki)
        certs(pki)
        pipe = os.path.join(tmp, "chain")
        pipeline(pipe, a.steps)
        times = {"plain": [], "mtls": []}
        for r in range(a.rounds):
            for mode in (["plain", "mtls"] if r % 2 == 0 else ["mtls", "plain"]):
                times[mode].append(one(mode, a, pki, pipe, tmp))
    load1 = os.getloadavg()[0]
    med = {m: statistics.median(v) for m, v in times.items()}
    for m in ("plain", "mtls"):
        print(f"{m:6} {med[m] * 1000:8.1f} ms/step  (rounds: {', '.join(f'{t * 1000:.1f}' for t in times[m])})")
    print(f"ratio mtls/plain: {med['mtls'] / med['plain']:.3f}")
    print(f"load average (1 min): {load0:.2f} before, {load1:.2f} after")


if __name__ == "__main__":
    main()
