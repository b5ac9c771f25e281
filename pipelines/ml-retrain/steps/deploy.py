"""Deployment: turn the validated best model into a deployable artefact.

Reads best.json (written by select.py) and writes into --out:
  model.json     the model alone, as the registry stores it
  metrics.json   the selected model's metrics (validate's metrics.json, next to best.json),
                 so the registry's promotion gate can compare it with the current champion
  manifest.json  model name, run id, sha256 of model.json, UTC creation time,
                 the model's metrics and where it came from
  explain.json   the selected model's explanation (validate's, next to best.json), kept
                 by the registry with the version; its promotion gate reads explain.*

The model name comes from $MODEL_NAME, else $WEIR_PARAM_MODEL_NAME, else --name;
the run id from $RUN_ID, else $WEIR_RUN_ID, else "local".

Usage: python3 steps/deploy.py --model best.json --out "$WEIR_OUTPUTS"
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys


def fail(msg):
    sys.exit("deploy: error: " + msg)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="best.json to deploy (default: $WEIR_INPUTS/validate/best.json)")
    p.add_argument("--out", default=os.environ.get("WEIR_OUTPUTS"), help="output dir (default: $WEIR_OUTPUTS)")
    p.add_argument("--name", default="model", help="model name if neither MODEL_NAME nor WEIR_PARAM_MODEL_NAME is set")
    a = p.parse_args()
    if not a.out:
        fail("no --out given and WEIR_OUTPUTS is not set")
    path = a.model
    if path is None:
        if not os.environ.get("WEIR_INPUTS"):
            fail("no --model given and WEIR_INPUTS is not set")
        path = os.path.join(os.environ["WEIR_INPUTS"], "validate", "best.json")

    try:
        with open(path) as f:
            best = json.load(f)
    except (OSError, ValueError) as e:
        fail("cannot read %s: %s" % (path, e))
    if not isinstance(best, dict) or not isinstance(best.get("model"), dict):
        fail("%s has no 'model' object; was it written by select.py?" % path)

    name = os.environ.get("MODEL_NAME") or os.environ.get("WEIR_PARAM_MODEL_NAME") or a.name
    run_id = os.environ.get("RUN_ID") or os.environ.get("WEIR_RUN_ID") or "local"

    os.makedirs(a.out, exist_ok=True)
    model_bytes = (json.dumps(best["model"], indent=2, sort_keys=True) + "\n").encode()
    with open(os.path.join(a.out, "model.json"), "wb") as f:
        f.write(model_bytes)
    manifest = {
        "model_name": name,
        "run_id": run_id,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": best.get("source"),
        "metrics": best.get("metrics", {}),
    }
    metrics = best.get("metrics", {})
    beside = os.path.join(os.path.dirname(path), "metrics.json")
    if os.path.exists(beside):
        try:
            with open(beside) as f:
                metrics = json.load(f)
        except (OSError, ValueError) as e:
            fail("cannot read %s: %s" % (beside, e))
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rmse"), (int, float)):
        fail("no numeric 'rmse' in %s or in %s's metrics" % (beside, path))
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    explain = os.path.join(os.path.dirname(path), "explain.json")
    if os.path.exists(explain):
        shutil.copyfile(explain, os.path.join(a.out, "explain.json"))
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print("deploy: %s (run %s) from %s" % (name, run_id, manifest["source"]))
    print("deploy: model.json sha256=%s" % manifest["sha256"])


if __name__ == "__main__":
    main()
