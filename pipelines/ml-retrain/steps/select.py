"""Validation: pick the best of the trained candidates by holdout RMSE.

Walks $WEIR_INPUTS recursively and takes every folder holding both metrics.json
and model.json as one candidate (the naming of matrix-instance folders does not
matter). The candidate with the lowest rmse wins; ties go to the folder name
that sorts first, so the choice is deterministic.

Writes best.json (the chosen model, its metrics, where it came from, and a
leaderboard of all candidates) and metrics.json (numbers only: rmse and r2 of
the best, and the candidate count), which the pipeline's gate reads, and the
best candidate's explain.json (its permutation importances) when it has one.

Usage: python3 steps/select.py --out "$WEIR_OUTPUTS" [--inputs "$WEIR_INPUTS"]
"""
import argparse
import json
import math
import os
import shutil
import sys


def fail(msg):
    sys.exit("select: error: " + msg)


def load(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(folder, "model.json")) as f:
        model = json.load(f)
    rmse = metrics.get("rmse") if isinstance(metrics, dict) else None
    if not isinstance(rmse, (int, float)) or isinstance(rmse, bool) or not math.isfinite(rmse):
        raise ValueError("metrics.json has no finite numeric 'rmse'")
    return metrics, model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("WEIR_OUTPUTS"), help="output dir (default: $WEIR_OUTPUTS)")
    p.add_argument("--inputs", default=os.environ.get("WEIR_INPUTS"), help="dir to search (default: $WEIR_INPUTS)")
    a = p.parse_args()
    if not a.out:
        fail("no --out given and WEIR_OUTPUTS is not set")
    if not a.inputs or not os.path.isdir(a.inputs):
        fail("inputs dir %r does not exist (pass --inputs or set WEIR_INPUTS)" % a.inputs)

    candidates = []
    for folder, dirs, files in os.walk(a.inputs):
        dirs.sort()
        if "metrics.json" in files and "model.json" in files:
            source = os.path.relpath(folder, a.inputs)
            try:
                metrics, model = load(folder)
            except (OSError, ValueError) as e:
                fail("bad candidate in %s: %s" % (source, e))
            candidates.append({"source": source, "metrics": metrics, "model": model})
    if not candidates:
        fail("no candidates: no folder under %s holds both metrics.json and model.json" % a.inputs)

    candidates.sort(key=lambda c: (c["metrics"]["rmse"], c["source"]))
    best = candidates[0]
    leaderboard = [{"rank": i + 1, "source": c["source"], "features": c["model"].get("features"),
                    "l2": c["model"].get("l2"), "rmse": c["metrics"]["rmse"],
                    "r2": c["metrics"].get("r2")} for i, c in enumerate(candidates)]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "best.json"), "w") as f:
        json.dump({"source": best["source"], "model": best["model"], "metrics": best["metrics"],
                   "leaderboard": leaderboard}, f, indent=2)
    summary = {"rmse": best["metrics"]["rmse"], "candidates": len(candidates)}
    if isinstance(best["metrics"].get("r2"), (int, float)):
        summary["r2"] = best["metrics"]["r2"]
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    explain = os.path.join(a.inputs, best["source"], "explain.json")
    if os.path.exists(explain):
        shutil.copyfile(explain, os.path.join(a.out, "explain.json"))

    for row in leaderboard:
        print("select: #%d %-45s rmse=%.4f" % (row["rank"], row["source"], row["rmse"]))
    print("select: best of %d is %s (rmse=%.4f)" % (len(candidates), best["source"], summary["rmse"]))


if __name__ == "__main__":
    main()
