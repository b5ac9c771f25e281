"""Preprocessing: clean the raw CSV and z-score normalise its features.

1. Drop rows with a wrong number of cells, an empty cell, a non-numeric cell,
   or a non-finite value ('NaN', 'inf').
2. Drop outliers with Tukey's "far out" fences: a row goes if any column
   (features and target) lies outside [Q1 - 3*IQR, Q3 + 3*IQR]. Quartiles are
   robust to the very outliers being removed, unlike a mean/std rule.
3. Z-score every feature column (population std); the target is left as is.

Writes features.csv (same header) and scaler.json (means, stds, rows in/out,
rows dropped by reason) into --out.

Usage: python3 steps/preprocess.py --in raw.csv --out "$WEIR_OUTPUTS" [--target target]
"""
import argparse
import csv
import json
import math
import os
import sys

IQR_K = 3.0


def quantile(sorted_vals, q):
    pos = (len(sorted_vals) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def parse(rows, width):
    dropped = {"malformed": 0, "missing": 0, "non_numeric": 0, "non_finite": 0}
    good = []
    for row in rows:
        if len(row) != width:
            dropped["malformed"] += 1
            continue
        vals, reason = [], None
        for cell in row:
            cell = cell.strip()
            if cell == "":
                reason = "missing"
                break
            try:
                v = float(cell)
            except ValueError:
                reason = "non_numeric"
                break
            if not math.isfinite(v):
                reason = "non_finite"
                break
            vals.append(v)
        if reason:
            dropped[reason] += 1
        else:
            good.append(vals)
    return good, dropped


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="inp", required=True, help="raw CSV with a header row")
    p.add_argument("--out", default=os.environ.get("WEIR_OUTPUTS"), help="output dir (default: $WEIR_OUTPUTS)")
    p.add_argument("--target", default="target", help="name of the target column")
    a = p.parse_args()
    if not a.out:
        sys.exit("preprocess: error: no --out given and WEIR_OUTPUTS is not set")

    try:
        with open(a.inp, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            raw = [r for r in reader if r]
    except OSError as e:
        sys.exit("preprocess: error: cannot read %s: %s" % (a.inp, e))
    if a.target not in header or len(header) < 2:
        sys.exit("preprocess: error: %s: header %r lacks target column %r or any feature"
                 % (a.inp, header, a.target))
    t_idx = header.index(a.target)
    feats = [i for i in range(len(header)) if i != t_idx]

    rows, dropped = parse(raw, len(header))
    fences = []
    for j in range(len(header)):
        col = sorted(r[j] for r in rows)
        if not col:
            break
        q1, q3 = quantile(col, 0.25), quantile(col, 0.75)
        fences.append((q1 - IQR_K * (q3 - q1), q3 + IQR_K * (q3 - q1)))
    kept = [r for r in rows if all(lo <= v <= hi for v, (lo, hi) in zip(r, fences))]
    dropped["outlier"] = len(rows) - len(kept)
    if len(kept) < 10:
        sys.exit("preprocess: error: only %d usable rows left of %d (dropped: %s)"
                 % (len(kept), len(raw), dropped))

    n = len(kept)
    means, stds = {}, {}
    for j in feats:
        m = sum(r[j] for r in kept) / n
        s = math.sqrt(sum((r[j] - m) ** 2 for r in kept) / n)
        if s == 0:
            sys.exit("preprocess: error: feature %r is constant after cleaning" % header[j])
        means[header[j]], stds[header[j]] = m, s

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "features.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in kept:
            w.writerow(["%.10g" % r[j] if j == t_idx else
                        "%.10g" % ((r[j] - means[header[j]]) / stds[header[j]])
                        for j in range(len(header))])
    scaler = {"features": [header[j] for j in feats], "target": a.target,
              "means": means, "stds": stds, "outlier_rule": "tukey_iqr_k%g" % IQR_K,
              "rows_in": len(raw), "rows_out": n, "dropped": dropped}
    with open(os.path.join(a.out, "scaler.json"), "w") as f:
        json.dump(scaler, f, indent=2, sort_keys=True)
    print("preprocess: %d rows in, %d out; dropped %s" % (
        len(raw), n, ", ".join("%s=%d" % kv for kv in sorted(dropped.items()))))
    print("preprocess: normalised %d features: %s" % (len(feats), ", ".join(scaler["features"])))


if __name__ == "__main__":
    main()
