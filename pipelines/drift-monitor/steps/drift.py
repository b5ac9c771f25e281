"""Drift: population stability index (PSI) and the two-sample Kolmogorov-Smirnov statistic
of each feature column, between the reference data and the new data.

- Columns: those both files have, minus --target. A cell that is empty, not a number or not
  finite is left out of its column (raw data is dirty; preprocessing drops such rows later).
- PSI: --bins bins cut at the reference's quantiles (equal-frequency; repeated cut points,
  as a discrete column gives, merge), sum over bins of (cur - ref) * ln(cur / ref) with the
  proportions floored at EPSILON so an empty bin counts as a large shift, not an infinity.
- KS: the largest distance between the two empirical distribution functions, in [0, 1].
- Overall: `psi` and `ks` are the largest of any feature (the alarm is about the worst
  column); `psi_mean` the mean; `drifted` is 1 when `psi` > --threshold, else 0.

Writes OUT/metrics.json (numbers only: psi, ks, psi_mean, drifted, rows_reference,
rows_current, psi_COLUMN and ks_COLUMN for each column) and OUT/report.json (per column: the
cut points and both proportions per bin).

Usage: python3 steps/drift.py --reference ref.csv --data new.csv --out "$WEIR_OUTPUTS"
       python3 steps/drift.py --self-test     (checks the statistics on known inputs)
"""
import argparse
import bisect
import csv
import json
import math
import os
import sys

EPSILON = 1e-4


def quantile(sorted_vals, q):
    pos = (len(sorted_vals) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def cuts(reference, bins):
    """Cut points at the reference's quantiles, each once."""
    ref = sorted(reference)
    out = []
    for i in range(1, bins):
        c = quantile(ref, i / bins)
        if not out or c > out[-1]:
            out.append(c)
    return out


def proportions(values, edges):
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    n = len(values)
    return [c / n for c in counts]


def psi(reference, current, bins=10):
    """PSI of `current` against `reference`, with its cut points and both proportions."""
    edges = cuts(reference, bins)
    r, c = proportions(reference, edges), proportions(current, edges)
    total = 0.0
    for pr, pc in zip(r, c):
        pr, pc = max(pr, EPSILON), max(pc, EPSILON)
        total += (pc - pr) * math.log(pc / pr)
    return total, edges, r, c


def ks(a, b):
    """The two-sample Kolmogorov-Smirnov statistic: sup |F_a(x) - F_b(x)|."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        x = min(a[i], b[j])
        while i < len(a) and a[i] == x:
            i += 1
        while j < len(b) and b[j] == x:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def read_columns(path):
    """Header and, per column, its finite numeric cells."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            cols = {h: [] for h in header}
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    continue
                for h, cell in zip(header, row):
                    try:
                        v = float(cell)
                    except ValueError:
                        continue
                    if math.isfinite(v):
                        cols[h].append(v)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        sys.exit("drift: error: cannot read %s: %s" % (path, e))
    if not header:
        sys.exit("drift: error: %s, line 1: no header row; expected a CSV with named columns" % path)
    return header, cols


def self_test():
    near = lambda a, b: abs(a - b) < 1e-9
    assert near(ks([1, 2, 3, 4], [3, 4, 5, 6]), 0.5)
    assert near(ks([1, 2, 3], [1, 2, 3]), 0.0)
    assert near(ks([1, 2], [10, 20]), 1.0)
    # Two bins cut at 2.5: reference 50/50, current 90/10.
    value, edges, r, c = psi([1, 2, 3, 4], [1] * 9 + [4], bins=2)
    assert edges == [2.5] and r == [0.5, 0.5] and near(c[0], 0.9), (edges, r, c)
    want = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert near(value, want), (value, want)
    assert near(psi(list(range(100)), list(range(100)))[0], 0.0)
    # Everything in one bin: empty bins are floored at EPSILON, so it is large but finite.
    value = psi(list(range(100)), [1000.0] * 50)[0]
    assert math.isfinite(value) and value > 5, value
    # A discrete column: repeated cut points merge.
    assert cuts([0, 0, 0, 0, 1, 1, 2, 3], 4) == [0.0, 0.5, 1.25]
    print("drift: self-test ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", help="the reference CSV (the model's training data)")
    p.add_argument("--data", default="", help="the CSV to check (empty: the one --trigger-files names)")
    p.add_argument("--trigger-files", default="", help="the run's new data, a path a line ($WEIR_TRIGGER_FILES)")
    p.add_argument("--target", default="target", help="the label column, left out")
    p.add_argument("--bins", type=int, default=10, help="PSI bins (at least 2)")
    p.add_argument("--threshold", type=float, default=0.2, help="drifted when psi exceeds this")
    p.add_argument("--out", default=os.environ.get("WEIR_OUTPUTS"), help="output folder")
    p.add_argument("--self-test", action="store_true", help="check the statistics on known inputs and exit")
    a = p.parse_args()
    if a.self_test:
        self_test()
        return
    if not a.reference or not a.out:
        sys.exit("drift: error: give --reference and --out (or set WEIR_OUTPUTS)")
    if a.bins < 2:
        sys.exit("drift: error: --bins must be at least 2, got %d" % a.bins)
    data = a.data.strip()
    if not data:
        files = [f for f in a.trigger_files.splitlines() if f.strip()]
        if len(files) != 1:
            sys.exit("drift: error: %s; give the file to check with -p data=PATH"
                     % ("the run brought no new file" if not files else
                        "the run brought %d files (%s)" % (len(files), ", ".join(files))))
        data = files[0]

    ref_header, ref = read_columns(a.reference)
    cur_header, cur = read_columns(data)
    features = [h for h in ref_header if h in cur and h != a.target]
    if not features:
        sys.exit("drift: error: %s, line 1: no feature column in common with the reference %s "
                 "(reference columns: %s; its: %s)" % (data, a.reference, ", ".join(ref_header), ", ".join(cur_header)))
    metrics, report = {}, {}
    for h in features:
        if len(ref[h]) < a.bins or not cur[h]:
            sys.exit("drift: error: column %r has %d numeric values in the reference and %d in %s; "
                     "need at least --bins (%d) and 1" % (h, len(ref[h]), len(cur[h]), data, a.bins))
        value, edges, r, c = psi(ref[h], cur[h], a.bins)
        metrics["psi_" + h] = round(value, 6)
        metrics["ks_" + h] = round(ks(ref[h], cur[h]), 6)
        report[h] = {"psi": value, "ks": metrics["ks_" + h], "cuts": edges, "reference": r, "current": c,
                     "rows_reference": len(ref[h]), "rows_current": len(cur[h])}
    worst = max(features, key=lambda h: metrics["psi_" + h])
    metrics["psi"] = metrics["psi_" + worst]
    metrics["ks"] = max(metrics["ks_" + h] for h in features)
    metrics["psi_mean"] = round(sum(metrics["psi_" + h] for h in features) / len(features), 6)
    metrics["drifted"] = 1 if metrics["psi"] > a.threshold else 0
    metrics["rows_reference"] = max(len(ref[h]) for h in features)
    metrics["rows_current"] = max(len(cur[h]) for h in features)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump({"reference": a.reference, "data": data, "threshold": a.threshold, "worst": worst,
                   "features": report}, f, indent=2, sort_keys=True)
    print("drift: %s against the reference: psi %.4f (worst: %s), ks %.4f -> %s (threshold %g)" % (
        data, metrics["psi"], worst, metrics["ks"], "DRIFTED" if metrics["drifted"] else "no drift", a.threshold))
    for h in features:
        print("drift:   %-16s psi %.4f  ks %.4f" % (h, metrics["psi_" + h], metrics["ks_" + h]))


if __name__ == "__main__":
    main()
