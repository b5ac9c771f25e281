"""Reference data: the data the production model was trained on, found through the registry
and lineage, fetched from the weir server with the weir CLI.

1. `weir lineage MODEL@ALIAS --json` walks from the model version the alias holds back
   through the steps that made it.
2. The training data is the first artifact of that walk made by a step from nothing made by
   a step: the ingested data (ml-retrain's `ingest/raw.csv`; for a model retrained on new
   data that is a byte copy of the file itself). A `.csv` is preferred when several are.
3. `weir artifacts get RUN STEP PATH` downloads it, checked against its digest, to
   OUT/reference.csv; OUT/reference.json says which model version, run, step and digest.

Usage: python3 steps/reference.py --model churn@production --out "$WEIR_OUTPUTS"
           [--weir weir] [--server URL] [--token-file FILE]
"""
import argparse
import json
import os
import subprocess
import sys


def weir(a, *args):
    cmd = [a.weir, *args]
    if a.server:
        cmd += ["--server", a.server]
    if a.token_file:
        cmd += ["--token-file", a.token_file]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e:
        sys.exit("reference: error: cannot run %s: %s; set the pipeline's `weir` param to the "
                 "weir CLI's path on the worker's host" % (a.weir, e))
    if done.returncode != 0:
        sys.exit("reference: error: `%s` failed (exit %d): %s" % (
            " ".join(["weir", *args]), done.returncode, done.stderr.strip()))
    return done.stdout


def training_data(walk):
    """The ingested data of a lineage walk: nodes made by a step whose links lead only to
    nodes no step made. None when there is none."""
    made = {n["digest"]: bool(n["run_id"]) for n in walk["nodes"]}
    found = [n for n in walk["nodes"]
             if n["run_id"] and not any(made.get(l, False) for l in n["links"])
             and n["digest"] != walk["digest"]]
    found.sort(key=lambda n: (not n["path"].endswith(".csv"), -n["depth"]))
    return found[0] if found else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="MODEL@ALIAS or MODEL@VERSION")
    p.add_argument("--out", default=os.environ.get("WEIR_OUTPUTS"), help="output folder")
    p.add_argument("--weir", default="weir", help="the weir CLI")
    p.add_argument("--server", default="", help="weir --server URL (empty: the CLI's default)")
    p.add_argument("--token-file", default="", help="weir --token-file FILE (empty: none)")
    a = p.parse_args()
    if not a.out:
        sys.exit("reference: error: no --out given and WEIR_OUTPUTS is not set")

    walk = json.loads(weir(a, "lineage", a.model, "--json"))
    if walk.get("truncated"):
        print("reference: warning: the lineage walk stopped early (%s)" % walk["truncated"], file=sys.stderr)
    data = training_data(walk)
    if data is None:
        sys.exit("reference: error: the lineage of %s (%s) reaches no data a step ingested; "
                 "`weir lineage %s` shows it" % (a.model, walk.get("model"), a.model))
    os.makedirs(a.out, exist_ok=True)
    target = os.path.join(a.out, "reference.csv")
    weir(a, "artifacts", "get", data["run_id"], data["step"], data["path"], "-o", target)
    info = {"model": a.model, "version": walk.get("model"), "run": data["run_id"], "step": data["step"],
            "path": data["path"], "digest": data["digest"], "size": data["size"]}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    print("reference: %s was trained on %s/%s %s (%d bytes, blake3 %s)" % (
        walk.get("model") or a.model, data["run_id"], data["step"], data["path"], data["size"], data["digest"][:12]))


if __name__ == "__main__":
    main()
